//! Small, exact samplers: Zipf (CDF table), log-normal (Box-Muller), exponential gaps.
//!
//! rand_distr is not in the lock file; these are a few lines each and exact enough for load.

use rand::Rng;

/// Largest Zipf support: the CDF table is 8 bytes per item, so 2^24 items is 128 MiB.
pub const ZIPF_ITEMS_MAX: usize = 1 << 24;

/// Zipf over ranks `0..n` with P(rank k) ∝ 1/(k+1)^s. `s = 0` is uniform.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        assert!(
            (1..=ZIPF_ITEMS_MAX).contains(&n),
            "zipf support {n} outside 1..={ZIPF_ITEMS_MAX}"
        );
        assert!(
            s.is_finite() && s >= 0.0,
            "zipf exponent {s} must be finite and >= 0"
        );
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        // Guard the top against rounding: the last rank must be reachable with u < 1.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// A rank in `0..len()`; rank 0 is the hottest.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.gen();
        let rank = self.cdf.partition_point(|&c| c <= u);
        debug_assert!(rank < self.cdf.len());
        rank.min(self.cdf.len() - 1)
    }

    /// Probability of `rank` (tests).
    pub fn probability(&self, rank: usize) -> f64 {
        let below = if rank == 0 { 0.0 } else { self.cdf[rank - 1] };
        self.cdf[rank] - below
    }
}

/// Log-normal amounts in cents, clamped to `[min, max]`.
#[derive(Clone, Copy, Debug)]
pub struct LogNormal {
    /// ln of the median.
    mu: f64,
    sigma: f64,
    min: u64,
    max: u64,
}

impl LogNormal {
    pub fn new(median: u64, sigma: f64, min: u64, max: u64) -> LogNormal {
        assert!(median >= 1 && min >= 1 && min <= median && median <= max);
        assert!(sigma.is_finite() && sigma >= 0.0);
        LogNormal {
            mu: (median as f64).ln(),
            sigma,
            min,
            max,
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let z = standard_normal(rng);
        let x = (self.mu + self.sigma * z).exp();
        (x.round() as u64).clamp(self.min, self.max)
    }
}

/// Box-Muller: one standard normal from two uniforms.
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    // 1 - u is in (0, 1], so ln never sees 0.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Exponential gap with the given mean, in whole nanoseconds (at least 1, so time advances).
pub fn exponential_gap_ns(rng: &mut impl Rng, mean_ns: f64) -> u64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    ((-u.ln() * mean_ns) as u64).max(1)
}

/// Index chosen by integer weights.
pub fn weighted_index(rng: &mut impl Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    assert!(total > 0, "weights must not all be zero");
    let mut pick = rng.gen_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if pick < w {
            return i;
        }
        pick -= w;
    }
    unreachable!("pick < total")
}
