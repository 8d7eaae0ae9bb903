//! `storage`: the append-only, segmented, checksummed block log, its recovery, ledger snapshots and
//! atomic small-file writes.
//!
//! Architecture invariant: a block whose append was acknowledged (its [`Ticket`] fired, or
//! [`BlockStore::sync`] returned past it) is never silently dropped. Recovery only truncates the last
//! group-commit batch of the tail segment; anything else that fails its checksum refuses to open.
//! See docs/modules/storage.md for the on-disk format and the recovery rules.

mod audit;
mod config;
mod crypt;
mod direct;
mod error;
mod frame;
mod journal;
mod log;
mod mem;
mod recovery;
mod scan;
mod segment;
mod snapshot;
mod ticket;
mod writer;

use std::borrow::Cow;

pub use audit::{LogFault, LogReader, StoredRecord, WalkError, WalkSummary};
pub use config::{Cipher, EncryptionConfig, LogConfig, WriteBackend};
pub use crypt::{load_key_file, KEY_BYTES};
pub use error::StorageError;
pub use frame::{block_hash, BlockHash, FRAME_HEADER_BYTES};
pub use journal::{Journal, Opened as JournalOpened, JOURNAL_RECORD_BYTES_MAX};
pub use log::{BlockLog, BlockView};
pub use mem::{MemBlockStore, MEM_STORE_BYTES_MAX_DEFAULT};
pub use recovery::{DroppedTail, RecoveryReport};
pub use segment::SEGMENT_HEADER_BYTES;
pub use snapshot::{
    write_file_atomic, write_file_atomic_paced, write_file_atomic_parts, Snapshot, SnapshotStore,
    ATOMIC_WRITE_SYNC_BYTES, SNAPSHOTS_KEPT,
};
pub use ticket::Ticket;
pub use writer::WritePath;

/// What the rest of the node (and the deterministic simulator) needs from a block store.
///
/// Durability contract: `append` only queues a block; it is durable (survives a crash) once
/// `durable_height()` reaches its height, which `sync()` waits for. Consensus must not act on a
/// block (vote, reply to clients) before it is durable.
pub trait BlockStore {
    /// Appends the block at `height`, which must be `last height + 1` (any height if empty), whose
    /// parent hash must equal the last block's hash. Returns the new block's hash.
    fn append(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload: &[u8],
    ) -> Result<BlockHash, StorageError>;
    /// Waits until every appended block is durable; returns the durable height (None if empty).
    fn sync(&mut self) -> Result<Option<u64>, StorageError>;
    /// Highest durable height, if any.
    fn durable_height(&self) -> Option<u64>;
    /// The payload (plaintext) of a durable block.
    fn read(&self, height: u64) -> Result<Cow<'_, [u8]>, StorageError>;
    /// Height and hash of the last appended block (durable or not).
    fn last(&self) -> Option<(u64, BlockHash)>;
    /// The lowest height in the store.
    fn first_height(&self) -> Option<u64>;
}
