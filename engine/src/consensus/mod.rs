//! `consensus`: chained HotStuff with the two-chain commit rule of Jolteon / DiemBFT v4, as a sans-I/O
//! state machine. Events go in (`Core::handle(now_ms, Event)`), ordered actions come out (`Action`).
//!
//! Architecture invariant: this module never touches a socket, a clock or a file. Local time arrives
//! with every event; the shell executes the returned actions in order (persist before send).
//! See docs/modules/consensus.md.

pub mod audit;
mod block_tree;
mod core;
pub mod crypto_iface;
pub mod leader;
pub mod messages;
mod pacemaker;
mod payload;
mod proposal;
pub mod safety;
mod sync;
mod timeouts;
pub mod validator_crypto;
mod votes;
pub mod wire;

#[cfg(test)]
mod tests;

pub use self::core::{Core, Recovered};
pub use block_tree::{genesis_block, genesis_qc};
pub use crypto_iface::{timeout_message, vote_message, QuorumCrypto, Sig, SignerBitmap, SIG_BYTES};
pub use leader::LeaderElection;
pub use messages::{
    Block, CommittedBlock, Message, Proposal, QuorumCert, SyncRequest, SyncResponse, Timeout,
    TimeoutCert, TimeoutMsg, Vote,
};
pub use safety::SafetyState;
pub use sync::sync_response_from_log;

use thiserror::Error;

/// A 32-byte BLAKE3 hash (blocks).
pub type Hash = [u8; 32];
/// A 32-byte batch digest (payload entries); dissemination resolves it to batch contents.
pub type Digest = [u8; 32];
pub type Round = u64;
/// Position of a validator in the genesis validator set.
pub type ValidatorIndex = u16;
pub type ChainId = u64;

/// Largest validator set (size of the signer bitmap).
pub const VALIDATORS_MAX: usize = 256;
/// Most batch digests one block may carry.
pub const BLOCK_DIGESTS_MAX: usize = 64;
/// Most local batch digests waiting to be proposed.
pub const LOCAL_BATCHES_PENDING_MAX: usize = 4096;
/// Most batch digests the core remembers as held locally.
pub const BATCHES_AVAILABLE_MAX: usize = 16_384;
/// Most uncommitted blocks (plus the committed tip) held in the block tree.
pub const BLOCKS_IN_MEMORY_MAX: usize = 1024;
/// Most recent committed blocks kept in memory to serve sync requests (`Config::committed_window`
/// defaults to it and may not exceed it). A laggard further behind is served from the block log
/// (`Action::ServeSyncFromLog`), so the window bounds memory, not how far behind a node may fall.
/// A block in the window takes ~0.4 KiB plus 32 bytes per batch digest: at most ~40 MiB
/// (estimated from the record sizes, not measured).
pub const COMMITTED_WINDOW_MAX: usize = 16_384;
/// Most blocks in one sync response.
pub const SYNC_BLOCKS_MAX: usize = 32;
/// How far ahead of the current round votes and timeouts are accepted (and buffered).
pub const ROUNDS_AHEAD_MAX: u64 = 16;
/// Rounds of proposal history kept for equivocation detection.
pub const EQUIVOCATION_ROUNDS_KEPT: u64 = 64;
/// Upper bound of the round timer after exponential backoff.
pub const ROUND_TIMEOUT_MS_MAX: u64 = 60_000;
/// Backoff doubles the timer at most this many times (then `ROUND_TIMEOUT_MS_MAX` caps it).
pub const TIMEOUT_BACKOFF_EXPONENT_MAX: u32 = 6;
/// Default maximum clock drift: a block timestamp may be at most this far ahead of local time.
pub const TIMESTAMP_DRIFT_MS_MAX: u64 = 2_000;
/// A sync request without a response is retried after this long.
pub const SYNC_RETRY_MS: u64 = 500;
/// Default idle pacing: a leader with nothing to order waits this long before an empty block.
pub const MIN_IDLE_BLOCK_INTERVAL_MS_DEFAULT: u64 = 200;
/// Default round timer while the validator the round waits on is reported unreachable
/// (`Event::PeerReachable`): a round led by a node that is down ends this soon, not after the
/// full (and doubling) round timer.
pub const UNREACHABLE_LEADER_TIMEOUT_MS_DEFAULT: u64 = 100;

/// Static configuration of one validator.
#[derive(Clone, Debug)]
pub struct Config {
    pub chain_id: ChainId,
    pub validator_count: usize,
    pub me: ValidatorIndex,
    /// Round timer before backoff.
    pub round_timeout_ms: u64,
    /// Cap of the round timer after backoff (at most `ROUND_TIMEOUT_MS_MAX`).
    pub round_timeout_ms_max: u64,
    pub timestamp_drift_ms_max: u64,
    /// Most batch digests this node puts in one block it proposes (1..=`BLOCK_DIGESTS_MAX`; blocks
    /// from others are checked against `BLOCK_DIGESTS_MAX`).
    pub block_digests_max: usize,
    /// Idle pacing: a leader with nothing to order (no batch to propose, no uncommitted non-empty
    /// block in its chain, no commit of one still to announce, no other validator's batch pending)
    /// waits this long (`Action::SetProposeTimer`) before proposing an empty block, or until a local
    /// batch arrives. 0 proposes at once (no pacing). At most half of `round_timeout_ms`, so the
    /// replicas' round timers outlast the wait plus two network hops.
    pub min_idle_block_interval_ms: u64,
    /// Who leads a round entered through a QC (`leader.rs`); the same on every validator.
    pub leader_election: LeaderElection,
    /// The round timer while the validator this replica waits on in the round (its leader, or
    /// the next leader its vote went to) is reported unreachable by the shell
    /// (`Event::PeerReachable`). 0: reports are ignored. At most `round_timeout_ms`. Only
    /// liveness depends on it: a timeout is always safe to send, and a TC still needs 2f+1.
    pub unreachable_leader_timeout_ms: u64,
    /// Committed blocks kept in memory to serve block sync (1..=`COMMITTED_WINDOW_MAX`); a request
    /// from below the window is served from the block log by the shell.
    pub committed_window: usize,
    /// Test-only fault injection: use a quorum of f+1 instead of 2f+1 (breaks quorum intersection).
    /// Exists so the simulator's negative tests can prove the fork checker fires. Never set in production.
    pub(crate) testing_quorum_too_small: bool,
}

impl Config {
    pub fn new(chain_id: ChainId, validator_count: usize, me: ValidatorIndex) -> Self {
        assert!((1..=VALIDATORS_MAX).contains(&validator_count));
        assert!((me as usize) < validator_count);
        Config {
            chain_id,
            validator_count,
            me,
            round_timeout_ms: 1_000,
            round_timeout_ms_max: ROUND_TIMEOUT_MS_MAX,
            timestamp_drift_ms_max: TIMESTAMP_DRIFT_MS_MAX,
            block_digests_max: BLOCK_DIGESTS_MAX,
            min_idle_block_interval_ms: MIN_IDLE_BLOCK_INTERVAL_MS_DEFAULT,
            leader_election: LeaderElection::default(),
            unreachable_leader_timeout_ms: UNREACHABLE_LEADER_TIMEOUT_MS_DEFAULT,
            committed_window: COMMITTED_WINDOW_MAX,
            testing_quorum_too_small: false,
        }
    }
    /// Checks the tunable bounds against each other; `Core::new` refuses a config that fails.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.round_timeout_ms == 0 || self.round_timeout_ms > self.round_timeout_ms_max {
            return Err("round_timeout_ms must be positive and at most round_timeout_ms_max");
        }
        if self.round_timeout_ms_max > ROUND_TIMEOUT_MS_MAX {
            return Err("round_timeout_ms_max above ROUND_TIMEOUT_MS_MAX");
        }
        if !(1..=BLOCK_DIGESTS_MAX).contains(&self.block_digests_max) {
            return Err("block_digests_max must be in 1..=BLOCK_DIGESTS_MAX");
        }
        if self.min_idle_block_interval_ms.saturating_mul(2) > self.round_timeout_ms {
            return Err("min_idle_block_interval_ms must be at most half of round_timeout_ms");
        }
        if !(1..=COMMITTED_WINDOW_MAX).contains(&self.committed_window) {
            return Err("committed_window must be in 1..=COMMITTED_WINDOW_MAX");
        }
        if self.unreachable_leader_timeout_ms > self.round_timeout_ms {
            return Err("unreachable_leader_timeout_ms must be at most round_timeout_ms");
        }
        Ok(())
    }
    /// f: the most faulty validators tolerated.
    pub fn faults_max(&self) -> usize {
        (self.validator_count - 1) / 3
    }
    /// Votes or timeouts that make a certificate: 2f+1 (n - f for any n).
    pub fn quorum(&self) -> usize {
        if self.testing_quorum_too_small {
            return self.faults_max() + 1;
        }
        self.validator_count - self.faults_max()
    }
    /// Round-robin leader over the genesis validator set: the leader of a round entered through a
    /// TC (and of every round under `LeaderElection::RoundRobin`). See `leader.rs`.
    pub fn round_robin_leader(&self, round: Round) -> ValidatorIndex {
        leader::round_robin(self.validator_count, round)
    }
}

/// An input to the core.
// Events are moved once into `handle`; boxing the message would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Event {
    /// First event after construction (fresh or recovered): arms the timer, proposes if leader.
    Start,
    /// A message from validator `from` over an authenticated channel.
    Message { from: ValidatorIndex, msg: Message },
    /// The timer set by `Action::SetTimer { round, .. }` fired.
    Timer { round: Round },
    /// The idle-pacing timer set by `Action::SetProposeTimer { round, .. }` fired.
    ProposeTimer { round: Round },
    /// A locally created batch (already disseminated by the mempool) is ready to be proposed.
    LocalBatchReady(Digest),
    /// A batch referenced by some proposal is now held in full.
    BatchAvailable(Digest),
    /// The shell's failure detector: validator `validator` is (`reachable: false`) down or cut
    /// off as far as this node can tell, or reachable again. A hint only: it shortens the round
    /// timer while the round waits on that validator (`Config::unreachable_leader_timeout_ms`),
    /// and changes nothing else, so a wrong report costs at most one early timeout a round.
    PeerReachable {
        validator: ValidatorIndex,
        reachable: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    One(ValidatorIndex),
    /// Every validator except this node (the core delivers to itself internally).
    Others,
}

/// An output of the core; the shell executes actions strictly in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Durably store the safety state; must complete before any later `Send` whose message
    /// `needs_durable_state` (every message but a proposal).
    PersistSafety(SafetyState),
    /// Durably store an uncommitted block (emitted before voting for it); hand it back in
    /// `Recovered::blocks` after a restart. Blocks at or below the committed round may be pruned.
    PersistBlock(Block),
    Send {
        to: Recipient,
        msg: Message,
    },
    /// Blocks newly committed, in height order, consecutive, each with a QC certifying it.
    Commit(Vec<CommittedBlock>),
    /// Arm (replace) the round timer; fire `Event::Timer { round }` after `duration_ms`.
    SetTimer {
        round: Round,
        duration_ms: u64,
    },
    /// Arm (replace) the idle-pacing timer, a second timer independent of the round timer; fire
    /// `Event::ProposeTimer { round }` after `duration_ms`. Emitted only by an idle leader.
    SetProposeTimer {
        round: Round,
        duration_ms: u64,
    },
    /// Validator `to` asked for committed blocks from `from_height`, which left the committed
    /// window (it starts at `window_start`): send it, from the block log, a
    /// `Message::SyncResponse` of the committed blocks from `from_height` up (at most
    /// `SYNC_BLOCKS_MAX`, consecutive), with the QC certifying the last one. Every block in the
    /// log is committed and carries its QC, so no safety state is involved; the requester
    /// verifies the response like any other. Nothing to send when the log lacks `from_height`.
    ServeSyncFromLog {
        to: ValidatorIndex,
        from_height: u64,
        window_start: u64,
    },
    /// Ask `from` (the proposer) for batches this node lacks; answer with `Event::BatchAvailable`.
    FetchBatches {
        digests: Vec<Digest>,
        from: ValidatorIndex,
    },
    /// An input was rejected (for metrics and logs); state was not changed by it.
    Rejected {
        from: Option<ValidatorIndex>,
        reason: RejectReason,
    },
    /// Proof of leader misbehaviour: two different blocks from one leader in one round.
    Equivocation {
        author: ValidatorIndex,
        round: Round,
        first: Hash,
        second: Hash,
    },
}

/// Why an input was rejected. Stable, typed, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RejectReason {
    #[error("sender {0} is not a member of the validator set")]
    NonMember(ValidatorIndex),
    #[error("message author differs from the authenticated sender")]
    SenderMismatch,
    #[error("proposal for round {round} from {author}, leader is {leader}")]
    WrongLeader {
        round: Round,
        author: ValidatorIndex,
        leader: ValidatorIndex,
    },
    #[error("equivocating proposal from {author} in round {round}")]
    Equivocation {
        author: ValidatorIndex,
        round: Round,
    },
    #[error("QC has {signers} signers, quorum is {quorum}")]
    QcTooFewSigners { signers: usize, quorum: usize },
    #[error("QC signer bitmap names a non-member")]
    QcNonMemberSigner,
    #[error("QC signature invalid")]
    QcInvalidSignature,
    #[error("TC invalid: {0}")]
    TcInvalid(&'static str),
    #[error("vote signature invalid")]
    VoteInvalidSignature,
    #[error("timeout signature invalid")]
    TimeoutInvalidSignature,
    #[error("voter {voter} voted twice in round {round}")]
    DoubleVote { voter: ValidatorIndex, round: Round },
    #[error("already voted in round {round}")]
    AlreadyVoted { round: Round },
    #[error("already timed out round {round}")]
    AlreadyTimedOut { round: Round },
    #[error("block QC round {qc_round} below locked round {locked_round}")]
    DoesNotExtendLock {
        qc_round: Round,
        locked_round: Round,
    },
    #[error("round {round} does not follow QC round {qc_round} and no valid TC justifies it")]
    NotSafeToExtend { round: Round, qc_round: Round },
    #[error("timestamp {timestamp_ms} outside ({parent_ms}, {limit_ms}]")]
    TimestampOutOfBounds {
        timestamp_ms: u64,
        parent_ms: u64,
        limit_ms: u64,
    },
    #[error("block malformed: {0}")]
    BlockMalformed(&'static str),
    #[error("round {round} is stale (current {current})")]
    StaleRound { round: Round, current: Round },
    #[error("round {round} is too far ahead (current {current})")]
    FutureRound { round: Round, current: Round },
    #[error("parent block unknown; syncing")]
    MissingParent,
    #[error("vote for round {round} sent to a node that does not lead round {round}+1")]
    NotNextLeader { round: Round },
    #[error("sync response invalid: {0}")]
    SyncInvalid(&'static str),
    #[error("bounded buffer full: {0}")]
    BufferFull(&'static str),
}
