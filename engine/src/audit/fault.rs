//! `AuditFault`: the first thing the auditor found wrong, with where it is.

use std::path::PathBuf;

use crate::consensus::audit::AuditError as ChainError;
use crate::crypto::VerifyCode;
use crate::storage::LogFault;

/// Where a fault is: the record's height, segment and byte offset in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub height: u64,
    pub segment: u64,
    pub offset: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "height {} (segment {}, offset {})",
            self.height, self.segment, self.offset
        )
    }
}

/// The first thing found wrong in the data directory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditFault {
    #[error("storage fault: {0}")]
    Storage(LogFault),
    #[error("{at}: record does not decode: {reason}")]
    Record { at: Location, reason: String },
    #[error("{at}: batch {batch} does not match the digest the block orders")]
    BatchDigest { at: Location, batch: usize },
    #[error("{at}: consensus: {source}")]
    Chain { at: Location, source: ChainError },
    #[error("{at}: batch {batch} request {index} does not decode: {reason}")]
    RequestUndecodable {
        at: Location,
        batch: usize,
        index: usize,
        reason: String,
    },
    #[error("{at}: batch {batch} request {index} (institution {institution}, id {request_id}): request signature check failed: {code:?}")]
    RequestSignature {
        at: Location,
        batch: usize,
        index: usize,
        institution: u32,
        request_id: u128,
        code: VerifyCode,
    },
    #[error("height {height}: ledger digest mismatch: snapshot {} records {recorded}, re-execution gives {computed}", .snapshot.display())]
    LedgerDigest {
        height: u64,
        snapshot: PathBuf,
        recorded: String,
        computed: String,
    },
    #[error("height {height}: ledger state mismatch: snapshot {} has the re-executed digest but different state bytes", .snapshot.display())]
    LedgerState { height: u64, snapshot: PathBuf },
    #[error("snapshot {}: {reason}", .path.display())]
    Snapshot { path: PathBuf, reason: String },
    #[error("snapshot at height {height} but the log ends at height {last}: acknowledged blocks are missing")]
    SnapshotBeyondLog { height: u64, last: u64 },
    #[error("the log starts at height {first}: re-execution from genesis needs height 1")]
    LogStart { first: u64 },
}

impl AuditFault {
    /// A stable name per kind, for scripts (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            AuditFault::Storage(_) => "storage",
            AuditFault::Record { .. } => "record",
            AuditFault::BatchDigest { .. } => "batch_digest",
            AuditFault::Chain {
                source: ChainError::QcInvalid { .. },
                ..
            } => "qc_signature",
            AuditFault::Chain { .. } => "chain",
            AuditFault::RequestUndecodable { .. } => "request",
            AuditFault::RequestSignature { .. } => "request_signature",
            AuditFault::LedgerDigest { .. } => "ledger_digest",
            AuditFault::LedgerState { .. } => "ledger_state",
            AuditFault::Snapshot { .. } => "snapshot",
            AuditFault::SnapshotBeyondLog { .. } => "snapshot_beyond_log",
            AuditFault::LogStart { .. } => "log_start",
        }
    }

    /// The height the fault is at, when it has one.
    pub fn height(&self) -> Option<u64> {
        match self {
            AuditFault::Storage(f) => f.height,
            AuditFault::Record { at, .. }
            | AuditFault::BatchDigest { at, .. }
            | AuditFault::Chain { at, .. }
            | AuditFault::RequestUndecodable { at, .. }
            | AuditFault::RequestSignature { at, .. } => Some(at.height),
            AuditFault::LedgerDigest { height, .. }
            | AuditFault::LedgerState { height, .. }
            | AuditFault::SnapshotBeyondLog { height, .. } => Some(*height),
            AuditFault::Snapshot { .. } => None,
            AuditFault::LogStart { first } => Some(*first),
        }
    }

    /// (segment, offset) of the record, when the fault is in one.
    pub fn place(&self) -> Option<(u64, u64)> {
        match self {
            AuditFault::Storage(f) => Some((f.segment, f.offset)),
            AuditFault::Record { at, .. }
            | AuditFault::BatchDigest { at, .. }
            | AuditFault::Chain { at, .. }
            | AuditFault::RequestUndecodable { at, .. }
            | AuditFault::RequestSignature { at, .. } => Some((at.segment, at.offset)),
            _ => None,
        }
    }
}
