//! The voting and locking rules (Jolteon / DiemBFT v4 two-chain) and the persistent safety state.
//!
//! The state is persisted (`Action::PersistSafety`) before any vote or timeout leaves the node: a
//! restarted node can never sign twice in a round or vote against its lock. A proposal may leave
//! before its `proposed_round` is durable; a restarted node never proposes in its recovery round
//! or the next (`Core::new`).

use super::messages::{Block, TimeoutCert};
use super::wire::{DecodeError, Reader, Writer};
use super::RejectReason;
use super::Round;

/// Everything a validator must remember across crashes to stay safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SafetyState {
    /// Highest round this node voted in. Never votes again at or below it.
    pub voted_round: Round,
    /// Highest round this node signed a timeout for. Never votes at or below it.
    pub timeout_round: Round,
    /// The lock ("preferred round"): the highest `justify.round` of any certified block seen. A vote
    /// requires `block.justify.round >= locked_round`, so the node only extends the locked branch.
    pub locked_round: Round,
    /// Highest round this node proposed in (a restarted leader never proposes twice in a round).
    pub proposed_round: Round,
}

impl SafetyState {
    pub const ENCODED_BYTES: usize = 1 + 4 * 8;
    const VERSION: u8 = 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(Self::VERSION);
        w.u64(self.voted_round);
        w.u64(self.timeout_round);
        w.u64(self.locked_round);
        w.u64(self.proposed_round);
        assert_eq!(w.bytes.len(), Self::ENCODED_BYTES);
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != Self::VERSION {
            return Err(DecodeError::UnknownTag(version));
        }
        let state = SafetyState {
            voted_round: r.u64()?,
            timeout_round: r.u64()?,
            locked_round: r.u64()?,
            proposed_round: r.u64()?,
        };
        r.finish()?;
        Ok(state)
    }

    /// The voting rule. `tc` is the certificate that justified entering `block.round` when the block
    /// does not directly extend the previous round's QC.
    pub fn check_vote(&self, block: &Block, tc: Option<&TimeoutCert>) -> Result<(), RejectReason> {
        if block.round <= self.voted_round {
            return Err(RejectReason::AlreadyVoted { round: block.round });
        }
        if block.round <= self.timeout_round {
            return Err(RejectReason::AlreadyTimedOut { round: block.round });
        }
        if block.justify.round < self.locked_round {
            return Err(RejectReason::DoesNotExtendLock {
                qc_round: block.justify.round,
                locked_round: self.locked_round,
            });
        }
        if block.justify.round + 1 == block.round {
            return Ok(());
        }
        match tc {
            Some(tc)
                if tc.round + 1 == block.round && block.justify.round >= tc.max_high_qc_round() =>
            {
                Ok(())
            }
            _ => Err(RejectReason::NotSafeToExtend {
                round: block.round,
                qc_round: block.justify.round,
            }),
        }
    }

    /// Record a vote; returns the state to persist before the vote is sent.
    pub fn record_vote(&mut self, round: Round) -> SafetyState {
        assert!(
            round > self.voted_round && round > self.timeout_round,
            "vote rule violated at record time"
        );
        self.voted_round = round;
        *self
    }

    /// Record a timeout for `round`; the node will not vote in that round afterwards.
    pub fn record_timeout(&mut self, round: Round) -> SafetyState {
        assert!(round >= self.timeout_round, "timeout rounds never go back");
        self.timeout_round = round;
        *self
    }

    /// Record a proposal for `round`; returns the state to persist before the proposal is sent.
    pub fn record_proposal(&mut self, round: Round) -> SafetyState {
        assert!(round > self.proposed_round, "one proposal per round");
        self.proposed_round = round;
        *self
    }

    /// Raise the lock to `round` (the justify round of a newly certified block). Returns true if raised.
    pub fn raise_lock(&mut self, round: Round) -> bool {
        if round > self.locked_round {
            self.locked_round = round;
            return true;
        }
        false
    }
}
