//! Dissemination: forms fair batches from the mempool, stores and broadcasts them, verifies and
//! stores peers' batches (every signature, before they count as held), and serves batch fetches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use crate::consensus::{Digest, ValidatorIndex};
use crate::crypto::{BatchVerifier, SignedRequest, VerifyCode};

use super::batches::{Batch, BatchStore};
use super::consensus_stage::ConsensusIn;
use super::peers::{encode_fetch, Peers, PEER_KIND_BATCH, PEER_KIND_BATCH_FETCH};
use super::state::Shared;

/// Capacity of the queue into dissemination (peer batches, fetches).
pub const DISSEMINATION_QUEUE_MAX: usize = 1024;

/// Request bytes one batch may carry so that its peer frame (44-byte header, 4 bytes per request)
/// fits in one net frame. A single maximal request always fits.
pub fn peer_batch_bytes_max(requests_max: u32) -> u64 {
    let overhead = 44 + 4 * requests_max as u64;
    let frame_max = crate::net::frame::FRAME_PAYLOAD_BYTES_MAX as u64;
    assert!(
        frame_max > overhead,
        "batch_requests_max is validated against BATCH_REQUESTS_MAX"
    );
    frame_max - overhead
}

// A batch of one maximal request (which `take_batch` always takes) fits in one peer frame.
const _: () = assert!(
    crate::crypto::REQUEST_WIRE_BYTES_MAX + 44 + 4
        <= crate::net::frame::FRAME_PAYLOAD_BYTES_MAX as usize
);

pub enum DisseminationIn {
    PeerBatch {
        from: ValidatorIndex,
        payload: Vec<u8>,
    },
    PeerFetch {
        from: ValidatorIndex,
        digests: Vec<Digest>,
    },
    /// Ask `from` (or every peer when None) for these batches.
    Fetch {
        digests: Vec<Digest>,
        from: Option<ValidatorIndex>,
    },
}

pub struct Dissemination {
    pub chain: u64,
    pub batch_requests_max: u32,
    pub batch_bytes_max: u64,
    pub batch_deadline: Duration,
    pub input: Receiver<DisseminationIn>,
    pub consensus: Sender<ConsensusIn>,
    pub store: Arc<BatchStore>,
    pub peers: Arc<Peers>,
    pub shared: Arc<Shared>,
    pub verifier: BatchVerifier,
    pub pool: Arc<rayon::ThreadPool>,
    pub stop: Arc<AtomicBool>,
}

impl Dissemination {
    pub fn run(self) {
        let mut next_batch = Instant::now() + self.batch_deadline;
        while !self.stop.load(Ordering::Acquire) {
            let wait = next_batch.saturating_duration_since(Instant::now());
            match self.input.recv_timeout(wait) {
                Ok(DisseminationIn::PeerBatch { from, payload }) => {
                    self.on_peer_batch(from, &payload)
                }
                Ok(DisseminationIn::PeerFetch { from, digests }) => {
                    self.on_peer_fetch(from, &digests)
                }
                Ok(DisseminationIn::Fetch { digests, from }) => {
                    let payload = encode_fetch(&digests);
                    match from {
                        Some(peer) if peer != self.peers.me => {
                            self.peers.send(peer, PEER_KIND_BATCH_FETCH, &payload)
                        }
                        _ => self.peers.broadcast(PEER_KIND_BATCH_FETCH, &payload),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_batch {
                next_batch = Instant::now() + self.batch_deadline;
                if !self.form_batch() {
                    return;
                }
            }
        }
    }

    /// Takes one fair batch from the mempool; false when consensus is gone.
    fn form_batch(&self) -> bool {
        let mempool = &self.shared.mempool;
        self.shared.metrics.mempool_depth.set(mempool.len() as i64);
        self.shared
            .metrics
            .mempool_bytes
            .set(mempool.bytes() as i64);
        if mempool.is_empty() {
            return true;
        }
        let bytes_max = self
            .batch_bytes_max
            .min(peer_batch_bytes_max(self.batch_requests_max));
        let items = mempool.take_batch(self.batch_requests_max, bytes_max);
        if items.is_empty() {
            return true;
        }
        let batch = Batch {
            requests: items.into_iter().map(|item| item.payload).collect(),
        };
        let digest = batch.digest();
        self.peers
            .broadcast(PEER_KIND_BATCH, &batch.encode_peer(self.chain, &digest));
        self.store.insert(digest, Arc::new(batch));
        self.consensus
            .send(ConsensusIn::LocalBatchReady(digest))
            .is_ok()
    }

    fn on_peer_batch(&self, from: ValidatorIndex, payload: &[u8]) {
        let (digest, batch) = match Batch::decode_peer(payload, self.chain) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(from, %error, "peer batch refused");
                return;
            }
        };
        if self.store.get(&digest).is_none() {
            if let Err(reason) = self.verify(&batch) {
                tracing::warn!(
                    from,
                    reason,
                    "peer batch refused: a request does not verify"
                );
                return;
            }
            self.store.insert(digest, Arc::new(batch));
        }
        let _ = self.consensus.send(ConsensusIn::BatchAvailable(digest));
    }

    /// Every request of a peer's batch must decode and verify.
    fn verify(&self, batch: &Batch) -> Result<(), String> {
        let mut requests = Vec::with_capacity(batch.requests.len());
        for (index, bytes) in batch.requests.iter().enumerate() {
            let request =
                SignedRequest::decode(bytes).map_err(|e| format!("request {index}: {e}"))?;
            requests.push(request);
        }
        let codes = self.pool.install(|| self.verifier.verify(&requests));
        match codes.iter().position(|c| *c != VerifyCode::Ok) {
            Some(index) => Err(format!("request {index}: {:?}", codes[index])),
            None => Ok(()),
        }
    }

    fn on_peer_fetch(&self, from: ValidatorIndex, digests: &[Digest]) {
        for digest in digests {
            if let Some(batch) = self.store.get(digest) {
                self.peers.send(
                    from,
                    PEER_KIND_BATCH,
                    &batch.encode_peer(self.chain, digest),
                );
            }
        }
    }
}
