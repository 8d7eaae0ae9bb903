//! The durable watermark and the tickets that wait on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::error::StorageError;
use super::frame::BlockHash;

/// The durable watermark shared by the writer, the log and every ticket.
pub(crate) struct Durability {
    /// Durable height + 1 (0: nothing durable); read lock-free by `BlockLog::read`.
    durable_next: AtomicU64,
    /// Group commits (fdatasyncs) completed since open.
    group_commits: AtomicU64,
    failed: Mutex<Option<String>>,
    cond: Condvar,
}

impl Durability {
    pub(crate) fn new(durable_height: Option<u64>) -> Arc<Durability> {
        Arc::new(Durability {
            durable_next: AtomicU64::new(durable_height.map_or(0, |h| h + 1)),
            group_commits: AtomicU64::new(0),
            failed: Mutex::new(None),
            cond: Condvar::new(),
        })
    }

    pub(crate) fn durable_height(&self) -> Option<u64> {
        self.durable_next.load(Ordering::Acquire).checked_sub(1)
    }

    pub(crate) fn publish(&self, height: u64) {
        let guard = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.durable_next.swap(height + 1, Ordering::AcqRel);
        assert!(previous <= height, "durable height moves forward only");
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        self.cond.notify_all();
    }

    pub(crate) fn fail(&self, message: String) {
        tracing::error!(error = %message, "block log writer failed");
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        self.cond.notify_all();
    }

    pub(crate) fn group_commits(&self) -> u64 {
        self.group_commits.load(Ordering::Relaxed)
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Blocks until `height` is durable or the writer failed.
    pub(crate) fn wait(&self, height: u64) -> Result<(), StorageError> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.durable_next.load(Ordering::Acquire) > height {
                return Ok(());
            }
            if let Some(message) = failed.as_ref() {
                return Err(StorageError::WriterFailed(message.clone()));
            }
            failed = self.cond.wait(failed).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Fires once its block is durable (on disk after fdatasync).
#[derive(Clone)]
pub struct Ticket {
    pub(crate) height: u64,
    pub(crate) hash: BlockHash,
    pub(crate) durability: Arc<Durability>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("height", &self.height)
            .field("durable", &self.is_durable())
            .finish()
    }
}

impl Ticket {
    pub fn height(&self) -> u64 {
        self.height
    }
    pub fn hash(&self) -> BlockHash {
        self.hash
    }
    pub fn is_durable(&self) -> bool {
        self.durability
            .durable_height()
            .is_some_and(|h| h >= self.height)
    }
    /// Blocks until the block is durable; an error means the writer failed and it may not be.
    pub fn wait(&self) -> Result<(), StorageError> {
        self.durability.wait(self.height)
    }
}
