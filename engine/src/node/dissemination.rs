//! Dissemination: forms fair batches from the mempool, stores and broadcasts them, verifies and
//! stores peers' batches (every signature, before they count as held), and serves batch fetches:
//! from memory, or, for a committed batch that left memory, by forwarding the fetch to execute,
//! which reads it from the block log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::consensus::{Digest, ValidatorIndex};
use crate::crypto::{BatchVerifier, DigestedRef, VerifyCode};
use crate::mempool::Item;
use crate::net::frame;

use super::batches::{Batch, BatchStore, Located};
use super::consensus_stage::ConsensusIn;
use super::execute::LogFetch;
use super::peers::{encode_fetch, Peers, PEER_KIND_BATCH, PEER_KIND_BATCH_FETCH};
use super::state::{RequestBytes, Shared};

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

/// Most queued peer batches verified in one verifier call.
const PEER_BATCHES_VERIFIED_TOGETHER_MAX: usize = 64;

/// A batch of this node's mempool items, in order. Each payload carries the digest ingress
/// computed for it, so execute does not hash these requests again.
fn local_batch(items: Vec<Item<RequestBytes>>) -> Batch {
    Batch {
        requests: items.into_iter().map(|item| item.payload).collect(),
    }
}

/// Every request of a peer's batch must decode; the views borrow the batch (nothing is copied)
/// and reach each request's digest cell, which the verifier fills.
fn decode_requests(batch: &Batch) -> Result<Vec<DigestedRef<'_>>, String> {
    batch
        .requests
        .iter()
        .enumerate()
        .map(|(index, request)| {
            request
                .digested()
                .map_err(|e| format!("request {index}: {e}"))
        })
        .collect()
}

/// Each batch's verdict: every request decodes and verifies, or the first that does not. The
/// requests are decoded as views into the batches and verified in one verifier call, which
/// leaves each request's signing digest in the batch (execute reuses it).
fn verify_peer_batches(
    verifier: &BatchVerifier,
    batches: &[(ValidatorIndex, Digest, Batch)],
) -> Vec<Result<(), String>> {
    let decoded: Vec<Result<Vec<DigestedRef<'_>>, String>> = batches
        .iter()
        .map(|(.., batch)| decode_requests(batch))
        .collect();
    let all: Vec<DigestedRef<'_>> = decoded.iter().flatten().flatten().copied().collect();
    let codes = if all.is_empty() {
        Vec::new()
    } else {
        verifier.verify(&all)
    };
    let counts: Vec<usize> = decoded
        .iter()
        .map(|requests| requests.as_ref().map_or(0, Vec::len))
        .collect();
    decoded
        .iter()
        .zip(first_bad(&counts, &codes))
        .map(|(requests, bad)| match (requests, bad) {
            (Err(reason), _) => Err(reason.clone()),
            (Ok(_), Some((index, code))) => {
                Err(format!("request {index} does not verify: {code:?}"))
            }
            (Ok(_), None) => Ok(()),
        })
        .collect()
}

/// For batches of `counts[i]` requests verified together (`codes` in order), each batch's first
/// failing request (index in the batch and its code), or None when all verify.
fn first_bad(counts: &[usize], codes: &[VerifyCode]) -> Vec<Option<(usize, VerifyCode)>> {
    assert_eq!(counts.iter().sum::<usize>(), codes.len());
    let mut at = 0;
    counts
        .iter()
        .map(|count| {
            let batch = &codes[at..at + count];
            at += count;
            batch
                .iter()
                .position(|c| *c != VerifyCode::Ok)
                .map(|index| (index, batch[index]))
        })
        .collect()
}

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
    /// Fetches of committed batches that left memory, to execute (which owns the log).
    pub log_fetches: Sender<LogFetch>,
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
                    // Peer batches already queued are verified together: one verifier call
                    // groups their signatures by signer, which is what makes a batch cheap.
                    let mut peer_batches = vec![(from, payload)];
                    let mut others = Vec::new();
                    while peer_batches.len() < PEER_BATCHES_VERIFIED_TOGETHER_MAX {
                        match self.input.try_recv() {
                            Ok(DisseminationIn::PeerBatch { from, payload }) => {
                                peer_batches.push((from, payload))
                            }
                            Ok(other) => others.push(other),
                            Err(_) => break,
                        }
                    }
                    self.on_peer_batches(peer_batches);
                    for message in others {
                        self.on_other(message);
                    }
                }
                Ok(other) => self.on_other(other),
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

    fn on_other(&self, message: DisseminationIn) {
        match message {
            DisseminationIn::PeerBatch { from, payload } => {
                self.on_peer_batches(vec![(from, payload)])
            }
            DisseminationIn::PeerFetch { from, digests } => self.on_peer_fetch(from, &digests),
            DisseminationIn::Fetch { digests, from } => {
                let payload = encode_fetch(&digests);
                match from {
                    Some(peer) if peer != self.peers.me => {
                        self.peers.send(peer, PEER_KIND_BATCH_FETCH, &payload)
                    }
                    _ => self.peers.broadcast(PEER_KIND_BATCH_FETCH, &payload),
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
        let batch = local_batch(items);
        let digest = batch.digest();
        self.peers
            .broadcast_encoded(PEER_KIND_BATCH, self.batch_frame(&batch, &digest));
        self.store.insert(digest, Arc::new(batch));
        self.consensus
            .send(ConsensusIn::LocalBatchReady(digest))
            .is_ok()
    }

    /// Decodes peers' batches, verifies every request of the new ones in one verifier call,
    /// stores the batches whose requests all verify and tells consensus; a batch with one bad
    /// request is dropped whole (the others are unaffected).
    fn on_peer_batches(&self, payloads: Vec<(ValidatorIndex, Vec<u8>)>) {
        let mut held = Vec::new();
        let mut new = Vec::new();
        for (from, payload) in payloads {
            match Batch::decode_peer(&payload, self.chain) {
                // Held in memory, or committed and in the log: nothing to verify or store.
                Ok((digest, _)) if self.store.contains(&digest) => held.push(digest),
                Ok((digest, batch)) => new.push((from, digest, batch)),
                Err(error) => tracing::warn!(from, %error, "peer batch refused"),
            }
        }
        let verdicts = self.verify_batches(&new);
        for ((from, digest, batch), verdict) in new.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => {
                    self.store.insert(digest, Arc::new(batch));
                    held.push(digest);
                }
                Err(reason) => tracing::warn!(from, reason, "peer batch refused"),
            }
        }
        for digest in held {
            let _ = self.consensus.send(ConsensusIn::BatchAvailable(digest));
        }
    }

    /// Each batch's verdict (`verify_peer_batches`), on the verify pool.
    fn verify_batches(
        &self,
        batches: &[(ValidatorIndex, Digest, Batch)],
    ) -> Vec<Result<(), String>> {
        self.pool
            .install(|| verify_peer_batches(&self.verifier, batches))
    }

    /// The batch as one encoded peer frame: the payload is written straight after the frame
    /// header (no separate payload buffer), then copied once into the `Arc` the peer links share.
    fn batch_frame(&self, batch: &Batch, digest: &Digest) -> Arc<[u8]> {
        let payload_len = batch.peer_encoded_len();
        let mut out = Vec::with_capacity(frame::FRAME_HEADER_BYTES + payload_len);
        out.extend_from_slice(&frame::encode_header(PEER_KIND_BATCH, payload_len));
        batch.encode_peer_into(self.chain, digest, &mut out);
        assert_eq!(out.len(), frame::FRAME_HEADER_BYTES + payload_len);
        out.into()
    }

    /// Serves a peer's fetch: from memory, or, for a committed batch that left memory, through
    /// execute, which reads the log between blocks. Never blocks: a full queue drops the fetch
    /// (the peer asks again every `BATCH_FETCH_RETRY_MS`); unknown digests are ignored.
    fn on_peer_fetch(&self, from: ValidatorIndex, digests: &[Digest]) {
        for digest in digests {
            match self.store.locate(digest) {
                Located::Memory(batch) => {
                    self.peers.send_encoded(
                        from,
                        PEER_KIND_BATCH,
                        self.batch_frame(&batch, digest),
                    );
                }
                Located::Log(height) => {
                    let fetch = LogFetch {
                        from,
                        digest: *digest,
                        height,
                    };
                    if let Err(TrySendError::Full(_)) = self.log_fetches.try_send(fetch) {
                        tracing::debug!(from, height, "log fetch queue full; fetch dropped");
                    }
                }
                Located::Unknown => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "tests_digest.rs"]
mod tests_digest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_verified_together_are_judged_one_by_one() {
        let ok = VerifyCode::Ok;
        let bad = VerifyCode::InvalidSignature;
        let codes = [ok, ok, ok, bad, ok, ok, bad];
        // Batches of 2, 3, 0 and 2 requests: the second and the last hold a bad request.
        let verdicts = first_bad(&[2, 3, 0, 2], &codes);
        assert_eq!(verdicts, vec![None, Some((1, bad)), None, Some((1, bad))]);
        assert_eq!(first_bad(&[], &[]), Vec::new());
    }
}
