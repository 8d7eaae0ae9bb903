//! Round state, round timers with bounded exponential backoff, and timeout certificates.
//!
//! Rounds advance on a QC for round r-1 (backoff resets) or a TC for round r-1 (backoff keeps
//! growing). Timeouts are verified individually on arrival; 2f+1 of them for one round form a TC.
//! Bound: timeouts are held only for rounds within `ROUNDS_AHEAD_MAX` of the current round.

use std::collections::BTreeMap;

use super::crypto_iface::SignerBitmap;
use super::messages::{Timeout, TimeoutCert};
use super::{Round, ValidatorIndex, ROUND_TIMEOUT_MS_MAX, TIMEOUT_BACKOFF_EXPONENT_MAX};

pub struct Pacemaker {
    pub round: Round,
    /// Consecutive rounds entered without a QC (drives the backoff).
    consecutive_timeouts: u32,
    timeouts: BTreeMap<Round, BTreeMap<ValidatorIndex, Timeout>>,
    pub last_tc: Option<TimeoutCert>,
    base_ms: u64,
    max_ms: u64,
}

impl Pacemaker {
    pub fn new(round: Round, base_ms: u64, max_ms: u64) -> Self {
        assert!(round >= 1 && base_ms >= 1 && base_ms <= max_ms && max_ms <= ROUND_TIMEOUT_MS_MAX);
        Pacemaker {
            round,
            consecutive_timeouts: 0,
            timeouts: BTreeMap::new(),
            last_tc: None,
            base_ms,
            max_ms,
        }
    }

    /// The current round's timer: base * 2^timeouts, capped at the configured maximum
    /// (itself at most `ROUND_TIMEOUT_MS_MAX`).
    pub fn timer_ms(&self) -> u64 {
        let exponent = self.consecutive_timeouts.min(TIMEOUT_BACKOFF_EXPONENT_MAX);
        let ms = self
            .base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.max_ms);
        assert!((1..=ROUND_TIMEOUT_MS_MAX).contains(&ms));
        ms
    }

    pub fn note_local_timeout(&mut self) {
        self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
    }

    /// Move to `round` if it is higher. Returns true when the round changed.
    pub fn advance(&mut self, round: Round, via_qc: bool) -> bool {
        if round <= self.round {
            return false;
        }
        self.round = round;
        if via_qc {
            self.consecutive_timeouts = 0;
        }
        self.timeouts = self.timeouts.split_off(&round);
        true
    }

    /// How many distinct validators timed out `round` so far.
    pub fn timeout_count(&self, round: Round) -> usize {
        self.timeouts.get(&round).map_or(0, |m| m.len())
    }

    /// Add a verified timeout; returns a TC when this one completes a quorum for its round.
    pub fn add_timeout(&mut self, timeout: Timeout, quorum: usize) -> Option<TimeoutCert> {
        let round = timeout.round;
        assert!(
            round >= self.round,
            "stale timeouts are filtered by the caller"
        );
        let by_author = self.timeouts.entry(round).or_default();
        if by_author.contains_key(&timeout.author) || by_author.len() >= quorum {
            return None;
        }
        by_author.insert(timeout.author, timeout);
        if by_author.len() < quorum {
            return None;
        }
        let mut signers = SignerBitmap::default();
        by_author.keys().for_each(|i| signers.insert(*i));
        let high_qc_rounds: Vec<Round> = by_author.values().map(|t| t.high_qc.round).collect();
        let signatures: Vec<_> = by_author.values().map(|t| t.signature).collect();
        assert_eq!(high_qc_rounds.len(), signers.count());
        assert_eq!(signatures.len(), signers.count());
        Some(TimeoutCert {
            round,
            signers,
            high_qc_rounds,
            signatures,
        })
    }
}
