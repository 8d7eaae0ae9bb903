//! Dedup of request keys: a sharded map behind `DEDUP_SHARDS` mutexes.
//!
//! This part is NOT lock-free: crossbeam 0.8 has no concurrent hash set. Each operation hashes the
//! key to one shard and holds that shard's mutex for one hash-map operation (plus, for keys leaving
//! the pool, one push onto the shard's bounded "recent" FIFO). Two producers contend only when their
//! keys land on the same shard.
//!
//! Key lifecycle:
//!
//! ```text
//! insert: absent -> Pending            take: Pending -> Taken (handed out)
//!                                            PendingCommitted -> Committed (discarded)
//! mark_committed: Pending -> PendingCommitted, Taken -> Committed, absent -> Committed
//! requeue: Taken -> Pending             undo of a refused insert: Pending -> absent
//! ```
//!
//! `Taken` and `Committed` keys sit in the shard's recent FIFO, bounded by `recent_max`; when it is
//! full the oldest such key is forgotten, and a resubmission of it is caught by the ledger's own
//! idempotent request ids instead.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::{MempoolError, RequestKey};

/// Number of dedup shards (a power of two).
pub const DEDUP_SHARDS: usize = 64;
const _: () = assert!(DEDUP_SHARDS.is_power_of_two());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    Pending,
    PendingCommitted,
    Taken,
    Committed,
}

#[derive(Debug)]
struct Shard {
    states: HashMap<RequestKey, KeyState>,
    recent: VecDeque<RequestKey>,
    recent_max: usize,
}

impl Shard {
    fn push_recent(&mut self, key: RequestKey) {
        debug_assert!(matches!(
            self.states.get(&key),
            Some(KeyState::Taken | KeyState::Committed)
        ));
        if self.recent.len() == self.recent_max {
            if let Some(oldest) = self.recent.pop_front() {
                // A requeued key may still be pending: only forget keys that left the pool.
                if matches!(
                    self.states.get(&oldest),
                    Some(KeyState::Taken | KeyState::Committed)
                ) {
                    self.states.remove(&oldest);
                }
            }
        }
        self.recent.push_back(key);
        assert!(self.recent.len() <= self.recent_max);
    }
}

#[derive(Debug)]
pub(super) struct Dedup {
    shards: Box<[Mutex<Shard>]>,
}

impl Dedup {
    pub(super) fn new(recent_ids_max: u32) -> Dedup {
        let recent_max = (recent_ids_max as usize / DEDUP_SHARDS).max(1);
        let shards = (0..DEDUP_SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    states: HashMap::new(),
                    recent: VecDeque::with_capacity(recent_max),
                    recent_max,
                })
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Dedup { shards }
    }

    fn shard(&self, key: &RequestKey) -> MutexGuard<'_, Shard> {
        let folded = (key.request_id as u64)
            ^ ((key.request_id >> 64) as u64)
            ^ (u64::from(key.institution) << 32 | u64::from(key.institution));
        let index = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % DEDUP_SHARDS;
        // A panic while holding a shard lock cannot leave a half-written entry (single map op).
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn insert_pending(&self, key: RequestKey) -> Result<(), MempoolError> {
        let mut shard = self.shard(&key);
        if shard.states.contains_key(&key) {
            return Err(MempoolError::Duplicate);
        }
        shard.states.insert(key, KeyState::Pending);
        Ok(())
    }

    /// Undo of `insert_pending` for an insert that was refused after all.
    pub(super) fn remove_pending(&self, key: RequestKey) {
        let mut shard = self.shard(&key);
        match shard.states.get(&key).copied() {
            Some(KeyState::Pending) => {
                shard.states.remove(&key);
            }
            Some(KeyState::PendingCommitted) => {
                shard.states.insert(key, KeyState::Committed);
                shard.push_recent(key);
            }
            other => debug_assert!(false, "remove_pending of a key in state {other:?}"),
        }
    }

    /// Called for every item popped from a lane: true if it may be handed out, false if it was
    /// committed meanwhile (by another leader's block) and must be discarded.
    pub(super) fn take(&self, key: RequestKey) -> bool {
        let mut shard = self.shard(&key);
        let state = shard.states.get(&key).copied();
        let (next, hand_out) = match state {
            Some(KeyState::Pending) => (KeyState::Taken, true),
            Some(KeyState::PendingCommitted) => (KeyState::Committed, false),
            other => {
                // An item in a lane always has a pending key; anything else is a mempool bug.
                panic!("mempool: popped item {key:?} whose key is {other:?}")
            }
        };
        shard.states.insert(key, next);
        shard.push_recent(key);
        hand_out
    }

    pub(super) fn mark_committed(&self, key: RequestKey) {
        let mut shard = self.shard(&key);
        match shard.states.get(&key).copied() {
            Some(KeyState::Pending) => {
                shard.states.insert(key, KeyState::PendingCommitted);
            }
            Some(KeyState::Taken) => {
                shard.states.insert(key, KeyState::Committed);
            }
            None => {
                shard.states.insert(key, KeyState::Committed);
                shard.push_recent(key);
            }
            Some(KeyState::PendingCommitted | KeyState::Committed) => {}
        }
    }

    /// Taken -> Pending, for a request whose proposal failed. False if it is committed (or was
    /// never taken), in which case it must not re-enter the pool.
    pub(super) fn requeue(&self, key: RequestKey) -> bool {
        let mut shard = self.shard(&key);
        if shard.states.get(&key) == Some(&KeyState::Taken) {
            shard.states.insert(key, KeyState::Pending);
            return true;
        }
        false
    }

    /// Undo of `requeue` when the pool had no room: the key goes back to Taken.
    pub(super) fn unrequeue(&self, key: RequestKey) {
        let mut shard = self.shard(&key);
        let state = shard.states.get(&key).copied();
        match state {
            Some(KeyState::Pending) => {
                shard.states.insert(key, KeyState::Taken);
            }
            Some(KeyState::PendingCommitted) => {
                shard.states.insert(key, KeyState::Committed);
            }
            other => debug_assert!(false, "unrequeue of a key in state {other:?}"),
        }
    }

    /// Total keys tracked (pending + recent); bounded by pool size + shards * recent_max.
    pub(super) fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.states.len()).unwrap_or(0))
            .sum()
    }
}
