//! `mempool`: verified requests waiting to be proposed, bounded, deduplicated and fair.
//!
//! Architecture invariant: the mempool never blocks a producer. `insert` either succeeds or fails
//! at once with `Busy` / `Duplicate`; it never waits for a consumer.
//!
//! What "lock-free" means here, part by part:
//! - Lanes: one `crossbeam::queue::ArrayQueue` per institution: a bounded lock-free MPMC queue.
//! - Budgets (count and bytes): atomic compare-and-swap loops; lock-free.
//! - Dedup: a sharded mutex map (`dedup::DEDUP_SHARDS` shards), not lock-free; one map op per lock.
//! - Batch formation: one mutex around the consumer state (round-robin cursor, deficits, one
//!   carried-over item per lane). Producers never take it; the node has one consumer (the leader
//!   thread), so it is uncontended there.
//!
//! Fairness: `take_batch` runs deficit round robin by bytes across the institution lanes, so one
//! bank's flood gets the same byte share per round as any other bank with work queued.

mod batch;
mod dedup;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam::queue::ArrayQueue;
use thiserror::Error;

pub use dedup::DEDUP_SHARDS;

/// Identifies a request for dedup: ids are unique per institution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    pub institution: u32,
    pub request_id: u128,
}

/// One verified request. `payload` is whatever the node keeps (e.g. `Arc<[u8]>` of the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<T> {
    pub institution: u32,
    pub request_id: u128,
    pub digest: [u8; 32],
    /// Encoded size of the request; what the byte bounds and fairness count.
    pub bytes: u32,
    pub payload: T,
}

impl<T> Item<T> {
    pub fn key(&self) -> RequestKey {
        RequestKey {
            institution: self.institution,
            request_id: self.request_id,
        }
    }
}

/// Errors `insert` returns; `code()` is the stable string a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MempoolError {
    #[error("mempool is full (requests, bytes or this institution's lane); retry later")]
    Busy,
    #[error("request id already pending, proposed or recently committed")]
    Duplicate,
    #[error("institution {institution} has no lane (lanes are 0..{institutions})")]
    UnknownInstitution { institution: u32, institutions: u32 },
    #[error("request of {bytes} bytes exceeds the mempool's byte bound of {bytes_max}")]
    TooLarge { bytes: u32, bytes_max: u64 },
}

impl MempoolError {
    pub fn code(&self) -> &'static str {
        match self {
            MempoolError::Busy => "busy",
            MempoolError::Duplicate => "duplicate",
            MempoolError::UnknownInstitution { .. } => "unknown_institution",
            MempoolError::TooLarge { .. } => "too_large",
        }
    }
}

/// Bounds, all explicit. Institutions are numbered densely `0..institutions` at genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most pending requests over all lanes.
    pub requests_max: u32,
    /// Most pending encoded bytes over all lanes.
    pub bytes_max: u64,
    /// Capacity of one institution's lane (plus at most one item carried over by batch formation).
    pub per_institution_requests_max: u32,
    /// Number of lanes; institution ids must be below it.
    pub institutions: u32,
    /// Most taken-or-committed keys remembered for dedup (split evenly over `DEDUP_SHARDS`).
    pub recent_ids_max: u32,
    /// Deficit round robin quantum: bytes a lane may send per round.
    pub fairness_quantum_bytes: u32,
}

impl MempoolConfig {
    /// Defaults sized for a small consortium: 64 Ki requests / 256 MiB pending, 256 Ki recent ids.
    pub fn with_institutions(institutions: u32) -> MempoolConfig {
        MempoolConfig {
            requests_max: 64 * 1024,
            bytes_max: 256 << 20,
            per_institution_requests_max: 16 * 1024,
            institutions,
            recent_ids_max: 256 * 1024,
            fairness_quantum_bytes: 4096,
        }
    }

    fn validate(&self) {
        assert!(
            self.institutions > 0,
            "mempool needs at least one institution lane"
        );
        assert!(
            self.requests_max > 0 && self.bytes_max > 0,
            "mempool bounds must be positive"
        );
        assert!(
            self.per_institution_requests_max > 0,
            "lane capacity must be positive"
        );
        assert!(
            self.fairness_quantum_bytes > 0,
            "fairness quantum must be positive"
        );
    }
}

/// Counters for metrics; monotonic except `requests` / `bytes` (current occupancy).
#[derive(Debug, Default)]
pub struct MempoolStats {
    pub inserted: AtomicU64,
    pub duplicate: AtomicU64,
    pub busy: AtomicU64,
    pub taken: AtomicU64,
    pub discarded_committed: AtomicU64,
}

pub struct Mempool<T> {
    config: MempoolConfig,
    lanes: Box<[ArrayQueue<Item<T>>]>,
    dedup: dedup::Dedup,
    requests: AtomicU32,
    bytes: AtomicU64,
    consumer: Mutex<batch::Consumer<T>>,
    stats: MempoolStats,
}

impl<T: Send> Mempool<T> {
    pub fn new(config: MempoolConfig) -> Mempool<T> {
        config.validate();
        let lane_capacity = config.per_institution_requests_max as usize;
        let lanes = (0..config.institutions)
            .map(|_| ArrayQueue::new(lane_capacity))
            .collect();
        let lane_count = config.institutions as usize;
        let consumer = batch::Consumer {
            cursor: 0,
            deficit: vec![0; lane_count],
            carry: (0..lane_count).map(|_| None).collect(),
        };
        Mempool {
            dedup: dedup::Dedup::new(config.recent_ids_max),
            config,
            lanes,
            requests: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            consumer: Mutex::new(consumer),
            stats: MempoolStats::default(),
        }
    }

    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    pub fn stats(&self) -> &MempoolStats {
        &self.stats
    }

    /// Pending requests (including items carried over inside batch formation).
    pub fn len(&self) -> u32 {
        self.requests.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pending encoded bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Keys the dedup set tracks (pending + recent window); for tests and metrics.
    pub fn dedup_tracked(&self) -> usize {
        self.dedup.tracked()
    }

    /// Adds a verified request. Never blocks: fails at once with `Busy` or `Duplicate`.
    pub fn insert(&self, item: Item<T>) -> Result<(), MempoolError> {
        self.check_item(&item)?;
        let key = item.key();
        if let Err(error) = self.dedup.insert_pending(key) {
            self.stats.duplicate.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        if let Err(item) = self.admit(item) {
            self.dedup.remove_pending(item.key());
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Err(MempoolError::Busy);
        }
        self.stats.inserted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check_item(&self, item: &Item<T>) -> Result<(), MempoolError> {
        if item.institution >= self.config.institutions {
            return Err(MempoolError::UnknownInstitution {
                institution: item.institution,
                institutions: self.config.institutions,
            });
        }
        if u64::from(item.bytes) > self.config.bytes_max {
            return Err(MempoolError::TooLarge {
                bytes: item.bytes,
                bytes_max: self.config.bytes_max,
            });
        }
        Ok(())
    }

    /// Reserves budget and pushes onto the item's lane; gives the item back if there is no room.
    fn admit(&self, item: Item<T>) -> Result<(), Item<T>> {
        if !self.reserve(item.bytes) {
            return Err(item);
        }
        let bytes = item.bytes;
        match self.lanes[item.institution as usize].push(item) {
            Ok(()) => Ok(()),
            Err(item) => {
                self.release(bytes);
                Err(item)
            }
        }
    }

    fn reserve(&self, bytes: u32) -> bool {
        let requests_max = self.config.requests_max;
        let count = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < requests_max).then_some(n + 1)
            });
        if count.is_err() {
            return false;
        }
        let bytes_max = self.config.bytes_max;
        let reserved = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                let after = b + u64::from(bytes);
                (after <= bytes_max).then_some(after)
            });
        if reserved.is_err() {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self, bytes: u32) {
        let requests_before = self.requests.fetch_sub(1, Ordering::AcqRel);
        let bytes_before = self.bytes.fetch_sub(u64::from(bytes), Ordering::AcqRel);
        assert!(requests_before >= 1, "mempool request count underflow");
        assert!(
            bytes_before >= u64::from(bytes),
            "mempool byte count underflow"
        );
    }

    /// Records committed request ids: pending copies are discarded when reached, and resubmissions
    /// get `Duplicate` while the key is within the recent window.
    pub fn mark_committed(&self, keys: &[RequestKey]) {
        for key in keys {
            self.dedup.mark_committed(*key);
        }
    }

    /// Returns taken items whose proposal failed to the pool (at the back of their lane). Items
    /// that are committed, forgotten, or do not fit are handed back to the caller.
    pub fn requeue(&self, items: Vec<Item<T>>) -> Vec<Item<T>> {
        let mut refused = Vec::new();
        for item in items {
            let key = item.key();
            if self.check_item(&item).is_err() || !self.dedup.requeue(key) {
                refused.push(item);
                continue;
            }
            if let Err(item) = self.admit(item) {
                self.dedup.unrequeue(key);
                refused.push(item);
            }
        }
        refused
    }
}
