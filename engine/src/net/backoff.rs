//! Exponential reconnect backoff with "equal jitter": the n-th delay is uniform in
//! `[d/2, d]` where `d = min(max, min_delay * 2^n)`. Sans-I/O: the caller sleeps.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// First reconnect delay (before jitter).
pub const PEER_BACKOFF_MS_MIN: u64 = 50;
/// Ceiling of the reconnect delay (before jitter): a peer that is down is retried at least this often.
pub const PEER_BACKOFF_MS_MAX: u64 = 5_000;
/// Doublings after which the delay stays at the ceiling (keeps the shift in range).
const BACKOFF_DOUBLINGS_MAX: u32 = 20;

#[derive(Debug)]
pub struct Backoff {
    ms_min: u64,
    ms_max: u64,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(ms_min: u64, ms_max: u64) -> Backoff {
        Backoff::with_rng(ms_min, ms_max, StdRng::from_entropy())
    }

    pub fn with_rng(ms_min: u64, ms_max: u64, rng: StdRng) -> Backoff {
        assert!(
            ms_min > 0 && ms_min <= ms_max,
            "backoff bounds must satisfy 0 < min <= max"
        );
        Backoff {
            ms_min,
            ms_max,
            attempt: 0,
            rng,
        }
    }

    /// The delay before the next attempt; grows until `ms_max`.
    pub fn next_delay(&mut self) -> Duration {
        let doublings = self.attempt.min(BACKOFF_DOUBLINGS_MAX);
        let ceiling = self
            .ms_min
            .saturating_mul(1u64 << doublings)
            .min(self.ms_max);
        self.attempt = self.attempt.saturating_add(1);
        let delay = ceiling / 2 + self.rng.gen_range(0..=ceiling - ceiling / 2);
        assert!(delay <= self.ms_max && delay >= ceiling / 2);
        Duration::from_millis(delay)
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a successful connection the next failure starts from `ms_min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_and_stay_bounded() {
        let mut backoff = Backoff::with_rng(50, 5_000, StdRng::seed_from_u64(7));
        let delays: Vec<u64> = (0..40)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        for (n, &delay) in delays.iter().enumerate() {
            let ceiling = (50u64 << n.min(20)).min(5_000);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "attempt {n}: {delay} ms"
            );
        }
        assert!(delays[39] >= 2_500, "the ceiling is reached");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(50));
        assert_eq!(backoff.attempts(), 1);
    }
}
