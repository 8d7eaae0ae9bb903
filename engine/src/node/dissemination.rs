//! Dissemination: forms fair batches from the mempool, stores and broadcasts them, decodes peers'
//! batches for the verify stage (which checks every signature, then the digest the peer claimed,
//! before a batch counts as held and stores it), and serves batch fetches:
//! from memory, or, for a committed batch that left memory, by forwarding the fetch to execute,
//! which reads it from the block log.
//!
//! A fetch this node asks for waits out its `not_before` first and goes out only for the digests
//! still not held then. A leader proposes its own batch as soon as it broadcasts it, so the small
//! proposal usually overtakes the much larger batch on the way; fetching at once made the leader send
//! the batch a second time, behind the first on the same bulk link (see `BATCH_FETCH_GRACE`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use crate::consensus::{Digest, ValidatorIndex};
use crate::mempool::Item;
use crate::net::frame;

use super::batches::{Batch, BatchStore, Located};
use super::consensus_stage::{tell_consensus, ConsensusIn};
use super::execute::{LogFetch, LogRead};
use super::peers::{encode_fetch, Peers, PEER_KIND_BATCH, PEER_KIND_BATCH_FETCH};
use super::state::{RequestBytes, Shared};
use super::verify::PeerBatchJob;

/// Capacity of the queue into dissemination (peer batches, fetches).
pub const DISSEMINATION_QUEUE_MAX: usize = 1024;

/// How long a blocked hand-off to the verify stage waits before it checks the stop flag again.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How long a vote-blocking fetch (a proposal named batches not held yet) waits for the batches to
/// arrive on their own before it asks the proposer. A batch proposed by its own author is already
/// on its way: the author broadcasts it before it proposes. A fetch is for the rare batch that is
/// not coming (its author crashed or its link dropped it). 50 ms is a small part of the 1 s round
/// timeout; in the e2e benchmark every batch a proposal named early arrived within it (0 fetches
/// in 10 s, docs/modules/node.md).
pub const BATCH_FETCH_GRACE: Duration = Duration::from_millis(50);

/// Fetches waiting for their `not_before`, oldest first. Pure bookkeeping (no I/O), so the
/// dissemination loop and the tests share it.
#[derive(Default)]
pub struct DeferredFetches {
    queue: VecDeque<DeferredFetch>,
}

struct DeferredFetch {
    not_before: Instant,
    digests: Vec<Digest>,
    from: Option<ValidatorIndex>,
}

impl DeferredFetches {
    pub fn push(
        &mut self,
        not_before: Instant,
        digests: Vec<Digest>,
        from: Option<ValidatorIndex>,
    ) {
        // Kept in `not_before` order, so the front is always the next due (inserting from the
        // back: callers' times are almost always increasing).
        let at = self
            .queue
            .iter()
            .rposition(|f| f.not_before <= not_before)
            .map_or(0, |i| i + 1);
        self.queue.insert(
            at,
            DeferredFetch {
                not_before,
                digests,
                from,
            },
        );
    }

    /// When the next fetch is due, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|f| f.not_before)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Removes every fetch due at `now` and returns what to ask and of whom: only the digests
    /// `held` does not know by now; fetches left with none are dropped.
    pub fn take_due(
        &mut self,
        now: Instant,
        held: impl Fn(&Digest) -> bool,
    ) -> Vec<(Option<ValidatorIndex>, Vec<Digest>)> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|f| f.not_before <= now) {
            let fetch = self.queue.pop_front().expect("checked above");
            let missing: Vec<Digest> = fetch.digests.into_iter().filter(|d| !held(d)).collect();
            if !missing.is_empty() {
                out.push((fetch.from, missing));
            }
        }
        out
    }
}

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

/// A batch of this node's mempool items, in order. Each payload carries the digest ingress
/// computed for it, so execute does not hash these requests again.
fn local_batch(items: Vec<Item<RequestBytes>>) -> Batch {
    Batch {
        requests: items.into_iter().map(|item| item.payload).collect(),
    }
}

/// When to cut the next batch of this node's requests: at once when the mempool holds requests
/// and the last cut is at least `batch_deadline` old, else `batch_deadline` after the last cut.
/// So a request reaching an idle node leaves in a batch of its own without waiting, a burst
/// within one deadline leaves together in the next batch, and a node cuts at most one batch per
/// deadline. Pure bookkeeping (no clock of its own), so the tests drive it with made-up times.
#[derive(Debug)]
pub struct CutPacer {
    deadline: Duration,
    last_cut: Option<Instant>,
}

impl CutPacer {
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            last_cut: None,
        }
    }

    /// When the next batch is due, if any: None while the mempool holds nothing (`pending`
    /// false), so an idle loop waits for a wake-up rather than ticking.
    pub fn next_cut(&self, now: Instant, pending: bool) -> Option<Instant> {
        if !pending {
            return None;
        }
        Some(
            self.last_cut
                .map_or(now, |last| (last + self.deadline).max(now)),
        )
    }

    /// A batch was cut at `now` (whether or not it took anything).
    pub fn cut(&mut self, now: Instant) {
        self.last_cut = Some(now);
    }
}

pub enum DisseminationIn {
    PeerBatch {
        from: ValidatorIndex,
        payload: Vec<u8>,
    },
    /// A peer's fetch: each digest with the height of the block that ordered it when the peer
    /// knows it (a committed-batch fetch), so a batch neither in memory nor in the index of
    /// committed digests is still served from the log.
    PeerFetch {
        from: ValidatorIndex,
        wanted: Vec<(Digest, Option<u64>)>,
    },
    /// Ask `from` (or every peer when None) for those of these batches still not held at
    /// `not_before`.
    Fetch {
        digests: Vec<Digest>,
        from: Option<ValidatorIndex>,
        not_before: Instant,
    },
    /// The verify stage admitted requests into the mempool (sent with `try_send`: a full queue
    /// means this loop is busy and looks at the mempool after each message anyway).
    Admitted,
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
    pub log_fetches: Sender<LogRead>,
    pub peers: Arc<Peers>,
    pub shared: Arc<Shared>,
    /// Decoded peer batches, to be verified (blocking when full: nothing is dropped).
    pub verify: Sender<PeerBatchJob>,
    pub stop: Arc<AtomicBool>,
}

impl Dissemination {
    pub fn run(self) {
        let mut pacer = CutPacer::new(self.batch_deadline);
        let mut fetches = DeferredFetches::default();
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            // The mempool only grows by the verify stage's admissions, and verify wakes this loop
            // (`Admitted`) after each window that admitted any, so an idle node sleeps until a
            // message, a due fetch or the stop poll instead of ticking every deadline.
            let cut = pacer.next_cut(now, !self.shared.mempool.is_empty());
            if cut.is_some_and(|at| at <= now) {
                pacer.cut(now);
                if !self.form_batch() {
                    return;
                }
                continue;
            }
            let wake = [fetches.next_due(), cut, Some(now + STOP_POLL)]
                .into_iter()
                .flatten()
                .min()
                .expect("the stop poll is always there");
            match self.input.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(message) => {
                    if !self.on_message(message, &mut fetches) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for (from, digests) in fetches.take_due(Instant::now(), |d| self.store.contains(d)) {
                self.fetch(from, &digests);
            }
        }
    }

    /// False when the verify stage is gone (the node is stopping). This node's own fetches wait
    /// in `fetches` until they are due.
    fn on_message(&self, message: DisseminationIn, fetches: &mut DeferredFetches) -> bool {
        match message {
            DisseminationIn::PeerBatch { from, payload } => {
                return self.on_peer_batch(from, &payload)
            }
            DisseminationIn::PeerFetch { from, wanted } => self.on_peer_fetch(from, &wanted),
            DisseminationIn::Fetch {
                digests,
                from,
                not_before,
            } => fetches.push(not_before, digests, from),
            // Only a wake-up: the loop looks at the mempool after every message.
            DisseminationIn::Admitted => {}
        }
        true
    }

    /// Asks `from` (or every peer) for these batches now.
    fn fetch(&self, from: Option<ValidatorIndex>, digests: &[Digest]) {
        self.shared
            .metrics
            .batches_fetched
            .inc_by(digests.len() as u64);
        let payload = encode_fetch(digests);
        match from {
            Some(peer) if peer != self.peers.me => {
                self.peers.send(peer, PEER_KIND_BATCH_FETCH, &payload)
            }
            _ => self.peers.broadcast(PEER_KIND_BATCH_FETCH, &payload),
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
        tell_consensus(&self.consensus, &self.store, digest, true)
    }

    /// Decodes a peer's batch. One already held (in memory, or committed and in the log) is
    /// announced to consensus at once; a new one goes to the verify stage, which checks its
    /// signatures with the other requests of its window and then stores and announces it. False
    /// when the verify stage is gone.
    fn on_peer_batch(&self, from: ValidatorIndex, payload: &[u8]) -> bool {
        match Batch::decode_peer(payload, self.chain) {
            Ok((digest, _)) if self.store.contains(&digest) => {
                tell_consensus(&self.consensus, &self.store, digest, false)
            }
            Ok((digest, batch)) => {
                let mut job = PeerBatchJob {
                    from,
                    digest,
                    batch,
                };
                // Blocks while the verify stage is behind (back-pressure on the peer link), but
                // never past the stop flag.
                loop {
                    match self.verify.send_timeout(job, STOP_POLL) {
                        Ok(()) => return true,
                        Err(SendTimeoutError::Timeout(back)) => job = back,
                        Err(SendTimeoutError::Disconnected(_)) => return false,
                    }
                    if self.stop.load(Ordering::Acquire) {
                        return false;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(from, %error, "peer batch refused");
                true
            }
        }
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
    /// execute, which reads the log between blocks (`fetch_source`). Never blocks: a full queue
    /// drops the fetch (the peer asks again every `BATCH_FETCH_RETRY_MS`); digests found nowhere
    /// are ignored.
    fn on_peer_fetch(&self, from: ValidatorIndex, wanted: &[(Digest, Option<u64>)]) {
        for (digest, hint) in wanted {
            match fetch_source(self.store.locate(digest), *hint) {
                FetchSource::Memory(batch) => {
                    self.peers.send_encoded(
                        from,
                        PEER_KIND_BATCH,
                        self.batch_frame(&batch, digest),
                    );
                }
                FetchSource::Log(height) => {
                    let fetch = LogRead::Batch(LogFetch {
                        from,
                        digest: *digest,
                        height,
                    });
                    if let Err(TrySendError::Full(_)) = self.log_fetches.try_send(fetch) {
                        tracing::debug!(from, height, "log fetch queue full; fetch dropped");
                    }
                }
                FetchSource::Nowhere => {}
            }
        }
    }
}

/// Where a fetched batch is served from.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchSource {
    Memory(Arc<Batch>),
    /// The log's block at this height (execute checks the block orders the digest).
    Log(u64),
    Nowhere,
}

/// Memory first, then the height the index of committed digests gives, then the height the peer
/// named (a block older than the index's window: it is still in the log).
pub fn fetch_source(located: Located, hint: Option<u64>) -> FetchSource {
    match (located, hint) {
        (Located::Memory(batch), _) => FetchSource::Memory(batch),
        (Located::Log(height), _) => FetchSource::Log(height),
        (Located::Unknown, Some(height)) if height > 0 => FetchSource::Log(height),
        (Located::Unknown, _) => FetchSource::Nowhere,
    }
}

#[cfg(test)]
#[path = "tests_digest.rs"]
mod tests_digest;

#[cfg(test)]
mod tests_fetch {
    use super::*;

    #[test]
    fn a_fetch_is_served_from_memory_then_the_index_then_the_height_the_peer_names() {
        let batch = Arc::new(Batch {
            requests: vec![Arc::<[u8]>::from(vec![1u8; 40].into_boxed_slice()).into()],
        });
        let memory = Located::Memory(batch.clone());
        assert_eq!(
            fetch_source(memory.clone(), Some(9)),
            FetchSource::Memory(batch)
        );
        assert_eq!(fetch_source(Located::Log(7), Some(9)), FetchSource::Log(7));
        assert_eq!(fetch_source(Located::Log(7), None), FetchSource::Log(7));
        // Older than the index: the peer's height still finds it in the log.
        assert_eq!(fetch_source(Located::Unknown, Some(9)), FetchSource::Log(9));
        assert_eq!(fetch_source(Located::Unknown, None), FetchSource::Nowhere);
        assert_eq!(
            fetch_source(Located::Unknown, Some(0)),
            FetchSource::Nowhere
        );
    }

    fn d(byte: u8) -> Digest {
        [byte; 32]
    }

    #[test]
    fn an_idle_node_waits_for_requests_and_cuts_the_first_at_once() {
        let deadline = Duration::from_millis(1);
        let start = Instant::now();
        let mut pacer = CutPacer::new(deadline);
        // Nothing pending: no cut is ever due, however much time passes.
        assert_eq!(pacer.next_cut(start, false), None);
        assert_eq!(pacer.next_cut(start + Duration::from_secs(5), false), None);
        // The first request of a node that never cut leaves at once.
        assert_eq!(pacer.next_cut(start, true), Some(start));
        pacer.cut(start);
        // After a cut that emptied the mempool, idle again.
        assert_eq!(pacer.next_cut(start + deadline / 2, false), None);
    }

    #[test]
    fn cuts_are_at_least_a_deadline_apart_and_a_late_request_is_not_held_back() {
        let deadline = Duration::from_millis(5);
        let start = Instant::now();
        let mut pacer = CutPacer::new(deadline);
        pacer.cut(start);
        // A request admitted 1 ms after a cut waits for the deadline: requests admitted meanwhile
        // leave with it, in one batch.
        let soon = start + Duration::from_millis(1);
        assert_eq!(pacer.next_cut(soon, true), Some(start + deadline));
        // Exactly at the deadline it is due.
        assert_eq!(
            pacer.next_cut(start + deadline, true),
            Some(start + deadline)
        );
        // One admitted long after the last cut is due when it is seen, not in the past.
        let late = start + Duration::from_millis(40);
        assert_eq!(pacer.next_cut(late, true), Some(late));
        pacer.cut(late);
        assert_eq!(pacer.next_cut(late, true), Some(late + deadline));
    }

    #[test]
    fn a_deferred_fetch_goes_out_only_when_due_and_only_for_what_is_still_missing() {
        let start = Instant::now();
        let mut fetches = DeferredFetches::default();
        fetches.push(start + BATCH_FETCH_GRACE, vec![d(1), d(2)], Some(3));
        assert_eq!(fetches.next_due(), Some(start + BATCH_FETCH_GRACE));
        // Not due yet: nothing leaves, even for a digest nobody holds.
        assert!(fetches.take_due(start, |_| false).is_empty());
        assert_eq!(fetches.len(), 1);
        // Batch 1 arrived on its own during the grace; only batch 2 is asked for, of the proposer.
        let due = fetches.take_due(start + BATCH_FETCH_GRACE, |digest| *digest == d(1));
        assert_eq!(due, vec![(Some(3), vec![d(2)])]);
        assert!(fetches.is_empty());
        assert_eq!(fetches.next_due(), None);
    }

    #[test]
    fn a_fetch_whose_batches_all_arrived_is_dropped_and_later_ones_wait_their_turn() {
        let start = Instant::now();
        let mut fetches = DeferredFetches::default();
        fetches.push(start + Duration::from_millis(50), vec![d(1)], Some(0));
        fetches.push(start + Duration::from_millis(80), vec![d(2)], Some(1));
        // Pushed out of order (execute's fetches are due at once): still taken first.
        fetches.push(start, vec![d(3)], None);
        assert_eq!(fetches.next_due(), Some(start));
        assert_eq!(fetches.take_due(start, |_| false), vec![(None, vec![d(3)])]);
        let held = |digest: &Digest| *digest == d(1);
        assert!(fetches
            .take_due(start + Duration::from_millis(60), held)
            .is_empty());
        assert_eq!(fetches.len(), 1, "the 80 ms fetch is not due at 60 ms");
        assert_eq!(
            fetches.take_due(start + Duration::from_millis(80), held),
            vec![(Some(1), vec![d(2)])]
        );
    }
}
