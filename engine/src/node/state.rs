//! State shared between pipeline stages: who is waiting for which request, which request ids
//! committed recently (for idempotent retries), and the figures `Status` reports.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::crypto::EncodedRequest;
use crate::mempool::{Mempool, RequestKey};
use crate::net::FrameWriter;

use super::metrics::Metrics;

/// Most requests waiting for a reply on this node (submitted here, not yet committed). A submit
/// beyond it is answered `busy`.
pub const PENDING_REQUESTS_MAX: usize = 65_536;
/// Most committed request ids remembered for `request_replayed` answers. Older ids fall out of
/// the window; a replay of one of them is executed again and the ledger's own idempotent ids
/// answer it (`exists` result codes).
pub const COMMITTED_IDS_MAX: usize = 262_144;

/// The mempool payload: the request's wire bytes with the digest ingress computed.
pub type RequestBytes = EncodedRequest;

pub struct Waiter {
    pub digest: [u8; 32],
    pub writer: FrameWriter,
    /// When its connection thread read the request, and when it was verified and admitted (for
    /// `reckon_request_latency_seconds`).
    pub received: std::time::Instant,
    pub admitted: std::time::Instant,
}

/// What the ingress knows about a key before admitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    New,
    /// Committed at this height with this digest.
    Committed {
        height: u64,
        digest: [u8; 32],
    },
    Pending {
        digest: [u8; 32],
    },
}

#[derive(Default)]
struct CommittedIds {
    ids: HashMap<RequestKey, (u64, [u8; 32])>,
    order: VecDeque<RequestKey>,
}

/// Figures for `Status` and metrics, written by the stage that owns each.
#[derive(Default)]
pub struct Figures {
    pub height: AtomicU64,
    pub round: AtomicU64,
    /// (executed height, ledger digest), written together by execute.
    pub executed: Mutex<(u64, u128)>,
    pub peers_up: AtomicU64,
    pub executed_requests: AtomicU64,
}

pub struct Shared {
    pub mempool: Mempool<RequestBytes>,
    pub metrics: Metrics,
    pub figures: Figures,
    /// Set at shutdown: new submissions get `shutting_down`.
    pub draining: AtomicBool,
    pending: Mutex<HashMap<RequestKey, Waiter>>,
    committed: Mutex<CommittedIds>,
}

impl Shared {
    pub fn new(mempool: Mempool<RequestBytes>, metrics: Metrics) -> Shared {
        Shared {
            mempool,
            metrics,
            figures: Figures::default(),
            draining: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            committed: Mutex::new(CommittedIds::default()),
        }
    }

    pub fn key_state(&self, key: RequestKey) -> KeyState {
        let committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((height, digest)) = committed.ids.get(&key) {
            return KeyState::Committed {
                height: *height,
                digest: *digest,
            };
        }
        drop(committed);
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get(&key) {
            Some(w) => KeyState::Pending { digest: w.digest },
            None => KeyState::New,
        }
    }

    /// Registers a waiter; false when the table is full or the key is already waiting.
    pub fn wait_for(&self, key: RequestKey, waiter: Waiter) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= PENDING_REQUESTS_MAX || pending.contains_key(&key) {
            return false;
        }
        pending.insert(key, waiter);
        true
    }

    pub fn take_waiter(&self, key: &RequestKey) -> Option<Waiter> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(key)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Records a committed key (first commit wins: a duplicate keeps its original height).
    pub fn record_committed(&self, key: RequestKey, height: u64, digest: [u8; 32]) {
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if committed.ids.contains_key(&key) {
            return;
        }
        while committed.order.len() >= COMMITTED_IDS_MAX {
            let Some(old) = committed.order.pop_front() else {
                break;
            };
            committed.ids.remove(&old);
        }
        committed.ids.insert(key, (height, digest));
        committed.order.push_back(key);
        assert_eq!(committed.ids.len(), committed.order.len());
    }

    pub fn set_executed(&self, height: u64, digest: u128) {
        let mut executed = self
            .figures
            .executed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        assert!(height >= executed.0, "execution never goes back");
        *executed = (height, digest);
        self.figures.height.store(height, Ordering::Release);
    }

    /// (executed height, ledger digest at that height).
    pub fn executed(&self) -> (u64, u128) {
        *self
            .figures
            .executed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
