//! Verify: client requests in batches (closed by size or deadline) checked with `BatchVerifier`
//! on the layout's verify pool. Invalid → `Rejected` with the precise code; valid creates go to
//! the mempool (the submitter waits for the commit), valid queries to execute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::crypto::{BatchVerifier, DigestedRef, VerifyCode};
use crate::mempool::{Item, MempoolError, RequestKey};

use super::ingress::{reject, VerifyJob};
use super::protocol::{RejectCode, Rejected};
use super::state::{Shared, Waiter};

/// Capacity of the queue from verify to execute for queries.
pub const QUERY_QUEUE_MAX: usize = 1024;

pub struct Verify {
    pub input: Receiver<VerifyJob>,
    pub queries: Sender<VerifyJob>,
    pub shared: Arc<Shared>,
    pub verifier: BatchVerifier,
    pub pool: Arc<rayon::ThreadPool>,
    pub batch_requests_max: usize,
    pub batch_deadline: Duration,
    pub stop: Arc<AtomicBool>,
}

impl Verify {
    pub fn run(self) {
        assert!(self.batch_requests_max > 0);
        let mut jobs: Vec<VerifyJob> = Vec::with_capacity(self.batch_requests_max);
        while !self.stop.load(Ordering::Acquire) {
            match self.input.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => jobs.push(job),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let deadline = Instant::now() + self.batch_deadline;
            while jobs.len() < self.batch_requests_max {
                let wait = deadline.saturating_duration_since(Instant::now());
                match self.input.recv_timeout(wait) {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.verify_batch(std::mem::take(&mut jobs));
        }
    }

    fn verify_batch(&self, jobs: Vec<VerifyJob>) {
        let started = Instant::now();
        // Creates carry the digest ingress computed; the verifier computes (and keeps) a query's.
        let requests: Vec<DigestedRef<'_>> = jobs.iter().map(VerifyJob::digested).collect();
        let codes = self.pool.install(|| self.verifier.verify(&requests));
        assert_eq!(codes.len(), jobs.len());
        self.shared
            .metrics
            .verify_batch_requests
            .observe(jobs.len() as f64);
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
            } else {
                self.admit(job);
            }
        }
        self.shared
            .metrics
            .stage_latency_s
            .with_label_values(&["verify"])
            .observe(started.elapsed().as_secs_f64());
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
    /// ingress computed and the signature was checked against; nothing is hashed here).
    fn admit(&self, job: VerifyJob) {
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
            admitted: Instant::now(),
        };
        if !self.shared.wait_for(key, waiter) {
            let rejected = Rejected::new(
                pair,
                RejectCode::DuplicatePending,
                "already waiting, or too many waiting",
            );
            return reject(&self.shared, &job.writer, rejected);
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
        }
    }
}
