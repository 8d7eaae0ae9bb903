//! How much of its block log a node reads for each peer: a token bucket per peer, in bytes.
//!
//! Execute serves peers' sync requests and fetches of committed batches from the block log,
//! between the blocks it applies. A peer catching up asks for a few MiB a second; a faulty or
//! Byzantine one could ask for old records without end and hold every honest node's execute
//! thread in log reads. So each peer gets `storage.peer_log_serve_mib_per_s`: a read from a peer
//! whose bucket is empty is refused (counted), and the peer asks again on its own retry timer
//! (`BATCH_FETCH_RETRY_MS`, `SYNC_RETRY_MS`). One peer's reads never use another's budget.
//!
//! The bucket holds at most `BURST_S` seconds of its rate and may go into debt by the one read
//! that emptied it (a record's size is known only once it is read), so a peer is served on
//! average at its rate, however large its records.

use std::time::Instant;

/// Seconds of its rate a peer's bucket holds when full.
pub const BURST_S: f64 = 0.25;

pub struct ServeBudget {
    /// Bytes a second per peer; None: unlimited.
    rate: Option<f64>,
    /// Per peer: tokens (bytes; negative while in debt) and when they were last topped up.
    buckets: Vec<(f64, Option<Instant>)>,
}

impl ServeBudget {
    /// `mib_per_s` per peer (0: unlimited) for `validators` peers, indexed by validator.
    pub fn new(mib_per_s: u64, validators: usize) -> ServeBudget {
        let rate = (mib_per_s > 0).then_some((mib_per_s << 20) as f64);
        let full = rate.map_or(0.0, |r| r * BURST_S);
        ServeBudget {
            rate,
            buckets: vec![(full, None); validators],
        }
    }

    /// Whether a read for `peer` may be served now (its bucket is not empty). A peer outside
    /// the validator set gets nothing.
    pub fn admit(&mut self, peer: usize, now: Instant) -> bool {
        let Some(rate) = self.rate else {
            return peer < self.buckets.len();
        };
        let Some((tokens, at)) = self.buckets.get_mut(peer) else {
            return false;
        };
        if let Some(then) = *at {
            let refill = now.saturating_duration_since(then).as_secs_f64() * rate;
            *tokens = (*tokens + refill).min(rate * BURST_S);
        }
        *at = Some(now);
        *tokens > 0.0
    }

    /// Charges `bytes` served to `peer` (after an `admit` that said yes).
    pub fn spend(&mut self, peer: usize, bytes: usize) {
        if self.rate.is_none() {
            return;
        }
        if let Some((tokens, _)) = self.buckets.get_mut(peer) {
            *tokens -= bytes as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_peer_is_served_its_rate_on_average_and_no_more() {
        let mut budget = ServeBudget::new(8, 4);
        let start = Instant::now();
        let mut served = 0;
        // Ten seconds of a peer asking for a 1 MiB record every millisecond.
        for ms in 0..10_000u64 {
            let now = start + Duration::from_millis(ms);
            if budget.admit(1, now) {
                budget.spend(1, MIB);
                served += MIB;
            }
        }
        let per_s = served as f64 / 10.0 / MIB as f64;
        // The rate, plus at most the initial burst (a quarter second) and one read of debt.
        assert!(
            (8.0..=8.0 + 0.25 * 8.0 / 10.0 + 0.1).contains(&per_s),
            "{per_s} MiB/s"
        );
    }

    #[test]
    fn one_peer_spending_its_budget_leaves_the_others_theirs() {
        let mut budget = ServeBudget::new(1, 4);
        let now = Instant::now();
        assert!(budget.admit(2, now));
        budget.spend(2, 64 * MIB); // one huge record: deep in debt
        assert!(!budget.admit(2, now + Duration::from_millis(500)));
        assert!(budget.admit(3, now), "validator 3 is untouched");
        // 64 MiB of debt at 1 MiB/s: about a minute.
        assert!(!budget.admit(2, now + Duration::from_secs(60)));
        assert!(budget.admit(2, now + Duration::from_secs(65)));
    }

    #[test]
    fn unlimited_serves_members_only() {
        let mut budget = ServeBudget::new(0, 4);
        let now = Instant::now();
        budget.spend(1, usize::MAX);
        assert!(budget.admit(1, now));
        assert!(!budget.admit(4, now), "not a validator");
        let mut limited = ServeBudget::new(1, 4);
        assert!(!limited.admit(7, now));
    }
}
