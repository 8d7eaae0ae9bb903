//! Verify: one window (closed by size or deadline) gathers the client requests ingress decoded
//! and the peers' batches dissemination decoded, and checks all their signatures in one
//! `BatchVerifier` call on the layout's verify pool: one call per window is what makes a check
//! cheap (its Miller loops and final exponentiation are shared by every signature in it). A window
//! waits up to the deadline for client requests; once it holds a peer batch it waits at most the
//! shorter `peer_batch_wait` (a leader may be about to propose that batch, and this node's vote
//! needs it), so peers' batches cut at about the same time share one window.
//! Client requests: invalid → `Rejected` with the precise code; valid creates go to the mempool
//! (the submitter waits for the commit), valid queries to execute. Peer batches: a batch whose
//! requests all verify and whose digest is the one its peer claimed is stored and announced to
//! consensus; a batch with one bad request or another digest is refused whole (the others in the
//! window are unaffected).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Select, Sender, TrySendError};
use rayon::prelude::*;

use crate::consensus::{Digest, ValidatorIndex};
use crate::crypto::{BatchVerifier, DigestedRef, VerifyCode, VERIFY_BATCH_REQUESTS_MAX};
use crate::mempool::{Item, MempoolError, RequestKey};

use super::batches::{Batch, BatchStore};
use super::consensus_stage::{tell_consensus, ConsensusIn};
use super::dissemination::DisseminationIn;
use super::ingress::{reject, VerifyJob};
use super::protocol::{RejectCode, Rejected};
use super::state::{Shared, Waiter};

/// Capacity of the queue from verify to execute for queries.
pub const QUERY_QUEUE_MAX: usize = 1024;

/// Capacity of the queue of decoded peer batches from dissemination (it blocks when full, which
/// holds back the peer connection: nothing is dropped).
pub const PEER_BATCH_QUEUE_MAX: usize = 256;

/// How long the verify loop waits for its first item before it checks the stop flag again.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// A peer's batch that decoded and is not held yet: its requests wait for a verify window.
pub struct PeerBatchJob {
    pub from: ValidatorIndex,
    pub digest: Digest,
    pub batch: Batch,
}

pub struct Verify {
    pub input: Receiver<VerifyJob>,
    pub peer_batches: Receiver<PeerBatchJob>,
    pub queries: Sender<VerifyJob>,
    pub consensus: Sender<ConsensusIn>,
    /// Woken after a window admitted requests (dissemination cuts batches only when told).
    pub dissemination: Sender<DisseminationIn>,
    pub store: Arc<BatchStore>,
    pub shared: Arc<Shared>,
    pub verifier: BatchVerifier,
    pub pool: Arc<rayon::ThreadPool>,
    pub batch_requests_max: usize,
    pub batch_deadline: Duration,
    /// How long a window that holds a peer batch waits for more (`verify.peer_batch_wait_us`).
    pub peer_batch_wait: Duration,
    pub stop: Arc<AtomicBool>,
}

/// One verify window: client jobs and peer batches, and how many requests they hold.
#[derive(Default)]
struct Window {
    jobs: Vec<VerifyJob>,
    peer: Vec<PeerBatchJob>,
    requests: usize,
}

enum Received {
    Client(VerifyJob),
    Peer(PeerBatchJob),
    Nothing,
    Closed,
}

impl Verify {
    pub fn run(self) {
        assert!(self.batch_requests_max > 0);
        // A peer batch that would have overflowed the previous window opens the next one.
        let mut carried: Option<PeerBatchJob> = None;
        while !self.stop.load(Ordering::Acquire) {
            let mut window = Window::default();
            let first = match carried.take() {
                Some(batch) => Received::Peer(batch),
                None => self.receive(IDLE_POLL),
            };
            match first {
                Received::Closed => return,
                Received::Nothing => continue,
                item => self.add(&mut window, item, &mut carried),
            }
            let opened = Instant::now();
            let mut first_peer = (!window.peer.is_empty()).then_some(opened);
            while window.requests < self.batch_requests_max && carried.is_none() {
                let until = window_closes(
                    opened,
                    first_peer,
                    self.batch_deadline,
                    self.peer_batch_wait,
                );
                match self.receive(until.saturating_duration_since(Instant::now())) {
                    Received::Nothing | Received::Closed => break,
                    item => self.add(&mut window, item, &mut carried),
                }
                if first_peer.is_none() && !window.peer.is_empty() {
                    first_peer = Some(Instant::now());
                }
            }
            self.verify_window(window);
        }
    }

    /// The next client job or peer batch, whichever comes first, within `wait`.
    fn receive(&self, wait: Duration) -> Received {
        let mut select = Select::new();
        let client = select.recv(&self.input);
        let peer = select.recv(&self.peer_batches);
        let Ok(ready) = select.select_timeout(wait) else {
            return Received::Nothing;
        };
        match ready.index() {
            i if i == client => ready
                .recv(&self.input)
                .map_or(Received::Closed, Received::Client),
            i if i == peer => ready
                .recv(&self.peer_batches)
                .map_or(Received::Closed, Received::Peer),
            _ => unreachable!("two operations were registered"),
        }
    }

    /// Adds an item, unless it is a peer batch that would take the window past what one verifier
    /// call takes: that one is carried into the next window.
    fn add(&self, window: &mut Window, item: Received, carried: &mut Option<PeerBatchJob>) {
        match item {
            Received::Client(job) => {
                window.requests += 1;
                window.jobs.push(job);
            }
            Received::Peer(batch) => {
                let count = batch.batch.requests.len();
                if window.requests > 0 && window.requests + count > VERIFY_BATCH_REQUESTS_MAX {
                    *carried = Some(batch);
                    return;
                }
                window.requests += count;
                window.peer.push(batch);
            }
            Received::Nothing | Received::Closed => unreachable!("only items are added"),
        }
    }

    fn verify_window(&self, window: Window) {
        let started = Instant::now();
        let Window { jobs, peer, .. } = window;
        // A batch held meanwhile (a fetch answer) is not checked again; it is announced again,
        // which consensus ignores for a batch it knows. Every other copy is checked, even two
        // claiming one digest in this window: a claimed digest is only checked below, so the
        // first copy may be the forgery.
        let (held, fresh): (Vec<PeerBatchJob>, Vec<PeerBatchJob>) = peer
            .into_iter()
            .partition(|b| self.store.contains(&b.digest));
        // Fetched for committed blocks (catching up): the digest alone decides (`expect_certified`).
        let (certified, fresh): (Vec<PeerBatchJob>, Vec<PeerBatchJob>) = fresh
            .into_iter()
            .partition(|b| self.store.is_certified(&b.digest));
        let (codes, verdicts) = self.check(&jobs, &fresh);
        let requests = codes.len() + fresh.iter().map(|b| b.batch.requests.len()).sum::<usize>();
        self.shared
            .metrics
            .verify_batch_requests
            .observe(requests as f64);
        if self.settle_clients(jobs, codes) > 0 {
            // A full queue means dissemination is busy, and it looks at the mempool after every
            // message; a closed one means the node is stopping.
            let _ = self.dissemination.try_send(DisseminationIn::Admitted);
        }
        for (job, verdict) in fresh.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => {
                    self.store.insert(job.digest, Arc::new(job.batch));
                    tell_consensus(&self.consensus, &self.store, job.digest, false);
                }
                Err(reason) => tracing::warn!(from = job.from, reason, "peer batch refused"),
            }
        }
        for job in held {
            tell_consensus(&self.consensus, &self.store, job.digest, false);
        }
        self.store_certified(certified);
        self.shared
            .metrics
            .stage_latency_s
            .with_label_values(&["verify"])
            .observe(started.elapsed().as_secs_f64());
    }

    /// `check_together` on the verify pool (`run` already runs on one of its workers, so this
    /// starts on the calling thread).
    fn check(
        &self,
        jobs: &[VerifyJob],
        peer: &[PeerBatchJob],
    ) -> (Vec<VerifyCode>, Vec<Result<(), String>>) {
        let clients: Vec<DigestedRef<'_>> = jobs.iter().map(VerifyJob::digested).collect();
        let batches: Vec<(&Batch, &Digest)> =
            peer.iter().map(|job| (&job.batch, &job.digest)).collect();
        self.pool
            .install(|| check_together(&self.verifier, clients, &batches))
    }

    /// Stores the batches of committed blocks that hash to their certified digests, without a
    /// signature check (`BatchStore::expect_certified` says why that is sound); refuses the
    /// others (execute asks again).
    fn store_certified(&self, certified: Vec<PeerBatchJob>) {
        if certified.is_empty() {
            return;
        }
        let verdicts: Vec<bool> = self.pool.install(|| {
            certified
                .par_iter()
                .map(|job| job.batch.check_digest(&job.digest).is_ok())
                .collect()
        });
        for (job, matches) in certified.into_iter().zip(verdicts) {
            if matches {
                self.shared.metrics.batches_certified.inc();
                self.store.insert(job.digest, Arc::new(job.batch));
                tell_consensus(&self.consensus, &self.store, job.digest, false);
            } else {
                tracing::warn!(
                    from = job.from,
                    "peer batch refused: it does not hash to the committed digest it claims"
                );
            }
        }
    }

    /// Answers or forwards every client job; how many requests entered the mempool.
    fn settle_clients(&self, jobs: Vec<VerifyJob>, codes: Vec<VerifyCode>) -> usize {
        assert_eq!(codes.len(), jobs.len());
        let mut admitted = 0;
        for (job, code) in jobs.into_iter().zip(codes) {
            let request = job.request();
            let key = (request.institution(), request.request_id());
            if code != VerifyCode::Ok {
                let reject_code =
                    RejectCode::from_verify(code).unwrap_or(RejectCode::InvalidSignature);
                let message = format!("signature check failed: {code:?}");
                reject(
                    &self.shared,
                    &job.writer,
                    Rejected::new(key, reject_code, message),
                );
                continue;
            }
            if job.query {
                self.forward_query(job);
            } else if self.admit(job) {
                admitted += 1;
            }
        }
        admitted
    }

    fn forward_query(&self, job: VerifyJob) {
        let request = job.request();
        let key = (request.institution(), request.request_id());
        let writer = job.writer.clone();
        if let Err(error) = self.queries.try_send(job) {
            let code = match error {
                TrySendError::Full(_) => RejectCode::Busy,
                TrySendError::Disconnected(_) => RejectCode::ShuttingDown,
            };
            reject(
                &self.shared,
                &writer,
                Rejected::new(key, code, "query queue full or closed"),
            );
        }
    }

    /// Registers the submitter as waiting, then inserts into the mempool (the digest is the one
    /// ingress computed and the signature was checked against; nothing is hashed here). False
    /// when the request was answered with a rejection instead.
    fn admit(&self, job: VerifyJob) -> bool {
        let digested = job.digested();
        let request = digested.view();
        let key = RequestKey {
            institution: request.institution(),
            request_id: request.request_id(),
        };
        let pair = (key.institution, key.request_id);
        let digest = digested.digest();
        let waiter = Waiter {
            digest,
            writer: job.writer.clone(),
            received: job.received_at,
            admitted: Instant::now(),
        };
        if !self.shared.wait_for(key, waiter) {
            let rejected = Rejected::new(
                pair,
                RejectCode::DuplicatePending,
                "already waiting, or too many waiting",
            );
            reject(&self.shared, &job.writer, rejected);
            return false;
        }
        let item = Item {
            institution: key.institution,
            request_id: key.request_id,
            digest,
            bytes: job.encoded().len() as u32,
            payload: job.encoded().clone(),
        };
        if let Err(error) = self.shared.mempool.insert(item) {
            self.shared.take_waiter(&key);
            let code = match error {
                MempoolError::Busy | MempoolError::TooLarge { .. } => RejectCode::Busy,
                MempoolError::Duplicate => RejectCode::DuplicatePending,
                MempoolError::UnknownInstitution { .. } => RejectCode::UnknownInstitution,
            };
            reject(
                &self.shared,
                &job.writer,
                Rejected::new(pair, code, error.to_string()),
            );
            return false;
        }
        true
    }
}

/// When a window opened at `opened` closes: `deadline` after it opened, or, once it holds a peer
/// batch (the first arrived at `first_peer`), `peer_wait` after that batch if that is sooner.
fn window_closes(
    opened: Instant,
    first_peer: Option<Instant>,
    deadline: Duration,
    peer_wait: Duration,
) -> Instant {
    let client = opened + deadline;
    first_peer.map_or(client, |at| (at + peer_wait).min(client))
}

/// One verifier call over the client requests and every request of the peer batches: the client
/// codes, in order, and each batch's verdict (`judge_batches`, then the digest the peer claimed
/// for it). The batches' requests are decoded as views into the batches, and the verifier leaves
/// each one's signing digest in its batch (execute reuses it); so a batch whose signatures all
/// verified has its digest checked for 85 bytes of hashing per request.
pub(super) fn check_together(
    verifier: &BatchVerifier,
    clients: Vec<DigestedRef<'_>>,
    batches: &[(&Batch, &Digest)],
) -> (Vec<VerifyCode>, Vec<Result<(), String>>) {
    let client_count = clients.len();
    let decoded: Vec<Result<Vec<DigestedRef<'_>>, String>> = batches
        .iter()
        .map(|(batch, _)| decode_requests(batch))
        .collect();
    let mut requests = clients;
    requests.extend(decoded.iter().flatten().flatten().copied());
    // `Verify::add` keeps a window within one verifier call.
    assert!(requests.len() <= VERIFY_BATCH_REQUESTS_MAX);
    let mut codes = if requests.is_empty() {
        Vec::new()
    } else {
        verifier.verify(&requests)
    };
    assert_eq!(codes.len(), requests.len());
    let batch_codes = codes.split_off(client_count);
    let verdicts = judge_batches(&decoded, &batch_codes)
        .into_iter()
        .zip(batches)
        .map(|(verdict, (batch, claimed))| {
            verdict.and_then(|()| batch.check_digest(claimed).map_err(|e| e.to_string()))
        })
        .collect();
    (codes, verdicts)
}

/// Every request of a peer's batch must decode; the views borrow the batch (nothing is copied)
/// and reach each request's digest cell, which the verifier fills (execute reuses it).
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

/// Each peer batch's verdict from the codes of its requests (in order, decoded batches only):
/// every request decodes and verifies, or the first that does not.
fn judge_batches(
    decoded: &[Result<Vec<DigestedRef<'_>>, String>],
    codes: &[VerifyCode],
) -> Vec<Result<(), String>> {
    let counts: Vec<usize> = decoded
        .iter()
        .map(|requests| requests.as_ref().map_or(0, Vec::len))
        .collect();
    decoded
        .iter()
        .zip(first_bad(&counts, codes))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Registry;
    use crate::mempool::{Mempool, MempoolConfig};
    use crate::node::metrics::Metrics;
    use crossbeam::channel::unbounded;

    /// A batch fetched for a committed block is stored on its digest alone (these requests are
    /// not even signed), and a copy that does not hash to the certified digest it claims is
    /// refused.
    #[test]
    fn certified_batches_are_stored_on_their_digest_without_a_signature_check() {
        let (_, input) = unbounded();
        let (_, peer_batches) = unbounded();
        let (queries, _) = unbounded();
        let (consensus, announced) = unbounded();
        let (dissemination, _) = unbounded();
        let metrics = Metrics::new("node-t").expect("metrics");
        let shared = Arc::new(Shared::new(
            Mempool::new(MempoolConfig::with_institutions(1)),
            metrics,
        ));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
        let verify = Verify {
            input,
            peer_batches,
            queries,
            consensus,
            dissemination,
            store: Arc::new(BatchStore::default()),
            shared: shared.clone(),
            verifier: BatchVerifier::new(Arc::new(Registry::new()), 1),
            pool: Arc::new(pool.expect("pool")),
            batch_requests_max: 64,
            batch_deadline: Duration::from_millis(1),
            peer_batch_wait: Duration::from_micros(500),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let batch = |byte: u8| Batch {
            requests: vec![vec![byte; 40].into()],
        };
        let (good, other) = (batch(1), batch(2));
        let forged = PeerBatchJob {
            from: 2,
            digest: other.digest(),
            batch: batch(3),
        };
        verify
            .store
            .expect_certified([good.digest(), other.digest()]);
        let jobs = vec![
            PeerBatchJob {
                from: 1,
                digest: good.digest(),
                batch: good.clone(),
            },
            forged,
        ];
        verify.store_certified(jobs);
        assert_eq!(verify.store.get(&good.digest()).as_deref(), Some(&good));
        assert!(
            !verify.store.contains(&other.digest()),
            "the forged copy is refused"
        );
        assert!(verify.store.is_certified(&other.digest()), "still awaited");
        assert_eq!(shared.metrics.batches_certified.get(), 1);
        assert!(matches!(
            announced.try_recv(),
            Ok(ConsensusIn::BatchAvailable(d)) if d == good.digest()
        ));
        assert!(announced.try_recv().is_err());
    }

    #[test]
    fn a_window_waits_the_deadline_for_clients_and_less_once_it_holds_a_peer_batch() {
        let opened = Instant::now();
        let ms = Duration::from_millis;
        // Client requests only: the deadline.
        assert_eq!(window_closes(opened, None, ms(2), ms(1)), opened + ms(2));
        // A peer batch 300 us in: it waits at most the peer wait from that batch.
        let at = opened + Duration::from_micros(300);
        assert_eq!(window_closes(opened, Some(at), ms(2), ms(1)), at + ms(1));
        // ... but never past the client deadline.
        let late = opened + Duration::from_micros(1_800);
        assert_eq!(
            window_closes(opened, Some(late), ms(2), ms(1)),
            opened + ms(2)
        );
        // A zero peer wait closes the window once the queue is drained.
        assert_eq!(window_closes(opened, Some(at), ms(2), ms(0)), at);
    }

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
