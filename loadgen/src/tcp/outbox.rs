//! The requests a TCP run sends, in apply order: each loadgen batch is mapped (`engine_map`),
//! numbered and signed, either when the scheduler sends it or before the run (`presign`).
//!
//! Architecture invariant: sans-I/O and deterministic. Request ids are given in apply order (the
//! order the mapping produces requests), counting up from an id the caller picks, whatever order
//! the scheduler later sends them in. So a presigned request is byte-identical to the one the
//! live path produces for the same batch (`loadgen/tests/presign.rs`), and the ids of a run have
//! no duplicate and no gap whether its requests were presigned, signed live, or both.
//!
//! Presigning is sound only for requests whose bytes do not depend on replies. The mapping's
//! bodies depend on earlier events alone (ids, accounts, amounts), except statements: the
//! scheduler fixes a statement's period at send time from commit timestamps, and its figures come
//! from books that refusals undo. So a stream with a statement is refused
//! (`OutboxError::PresignStatement`); `transfers` (accounts, then transfers) is presignable.

use std::collections::VecDeque;
use std::time::Instant;

use rayon::prelude::*;
use thiserror::Error;

use crate::driver::EventSource;
use crate::engine_map::{EngineRequest, MapError, Mapper};
use crate::op::{Op, TraceEvent};
use crate::signing::{Keyring, SigningError};
use crate::target::BATCH_EVENTS_MAX;
use crate::trace::TraceError;

/// Most requests one presign prepares.
pub const PRESIGN_REQUESTS_MAX: usize = 1 << 24;
/// Most request-body bytes the presigned requests hold (each signed payload is its body plus
/// the 36-byte header and the 48-byte signature): presigning stops at the batch that reaches it.
/// 2 GiB: a 30 s batched run at 300,000 transfers/s holds about 1.15 GB of bodies.
pub const PRESIGN_BODY_BYTES_MAX: usize = 2 << 30;

#[derive(Debug, Error)]
pub enum OutboxError {
    #[error("mapping: {0}")]
    Map(#[from] MapError),
    #[error("signing: {0}")]
    Sign(#[from] SigningError),
    #[error("presign: reading the stream: {0}")]
    Source(#[from] TraceError),
    #[error(
        "presign: event {index} of the stream is a statement, whose period is fixed from replies \
         at send time; only streams without statements (the transfers workload) can be presigned"
    )]
    PresignStatement { index: u64 },
    #[error("presign: {0} requests asked, at most {PRESIGN_REQUESTS_MAX}")]
    PresignTooMany(usize),
    #[error("presign: batch of {0} events outside 1..={BATCH_EVENTS_MAX}")]
    PresignBatch(usize),
    #[error(
        "presigned batch {index} is not the batch submitted (presign after the setup phase, with \
         the run's batch size and event limit, and hand the driver the stream presign returns)"
    )]
    PresignMismatch { index: u64 },
}

/// What to presign: the run's own batching, so the batches are exactly the driver's.
#[derive(Clone, Copy, Debug)]
pub struct PresignConfig {
    /// Requests to prepare: whole batches until at least this many, or the stream's end.
    pub requests: usize,
    /// The run's `RunConfig::batch_events`.
    pub batch_events: usize,
    /// The run's `RunConfig::events_max`, counted from the stream handed to `presign`.
    pub events_max: Option<u64>,
}

/// What presigning did (untimed: before the driver starts).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PresignReport {
    pub requests_asked: u64,
    pub requests: u64,
    pub batches: u64,
    pub events: u64,
    pub body_bytes: u64,
    /// Threads that signed (rayon's global pool).
    pub threads: usize,
    /// Generating and mapping the events, one thread.
    pub map_s: f64,
    pub sign_s: f64,
    /// Stopped at `PRESIGN_BODY_BYTES_MAX` before `requests_asked`.
    pub capped: bool,
    /// Requests an earlier presign prepared that its run did not reach, dropped first
    /// (`Outbox::discard_presigned`).
    pub requests_discarded: u64,
}

impl PresignReport {
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "PRESIGN (untimed)\n  requests {} (asked {}), batches {}, events {}, body bytes {}\n  \
             mapped in {:.2} s, signed in {:.2} s on {} threads ({:.0} signatures/s)\n",
            self.requests,
            self.requests_asked,
            self.batches,
            self.events,
            self.body_bytes,
            self.map_s,
            self.sign_s,
            self.threads,
            self.requests as f64 / self.sign_s.max(1e-9)
        );
        if self.capped {
            s += &format!("  stopped at the {PRESIGN_BODY_BYTES_MAX}-byte body bound\n");
        }
        if self.requests_discarded > 0 {
            s += &format!(
                "  dropped first: {} presigned requests the previous run did not reach\n",
                self.requests_discarded
            );
        }
        s
    }
}

/// One engine request with its id; `signed` holds its wire payload once presigned.
pub struct Numbered {
    pub request: EngineRequest,
    pub request_id: u128,
    pub signed: Option<Vec<u8>>,
}

/// One loadgen batch prepared before the run: its events (to check the driver submits exactly
/// them) and its signed requests in apply order.
struct PresignedBatch {
    events: Vec<TraceEvent>,
    requests: Vec<Numbered>,
}

pub struct Outbox {
    mapper: Mapper,
    keyring: Keyring,
    /// The id of the next request mapped.
    request_id_next: u128,
    presigned: VecDeque<PresignedBatch>,
    /// Presigned batches handed out so far.
    presigned_taken: u64,
    presigned_requests_left: u64,
}

/// Signs `numbered` (its body moves into the signature) and returns the wire payload.
fn sign(keyring: &Keyring, numbered: &mut Numbered) -> Result<Vec<u8>, SigningError> {
    let r = &mut numbered.request;
    let body = std::mem::take(&mut r.body);
    let signed = keyring.sign_loaded(numbered.request_id, r.requester, r.operation, body)?;
    Ok(signed.encode())
}

impl Outbox {
    pub fn new(mapper: Mapper, keyring: Keyring, request_id_first: u128) -> Outbox {
        Outbox {
            mapper,
            keyring,
            request_id_next: request_id_first,
            presigned: VecDeque::new(),
            presigned_taken: 0,
            presigned_requests_left: 0,
        }
    }

    /// The mapping, for `settle` (replies) only: what it maps goes through `next_batch`.
    pub fn mapper_mut(&mut self) -> &mut Mapper {
        &mut self.mapper
    }

    /// Presigned requests not handed out yet (the run ended before it reached them).
    pub fn presigned_requests_left(&self) -> u64 {
        self.presigned_requests_left
    }

    /// Drops the presigned requests not handed out (a run ended before it reached them) and
    /// returns how many. None of them was sent, so the mapping undoes what they booked as if the
    /// ledger had refused every event (`Mapper::settle`, as for a failed request); their ids
    /// stay used (a gap, never a duplicate). Their events may then be mapped again, as new
    /// requests: the stream a duration-bound run leaves still holds them, less the batch the
    /// driver read ahead and dropped at the deadline, which is why they cannot be kept.
    pub fn discard_presigned(&mut self) -> Result<u64, OutboxError> {
        let dropped = self.presigned_requests_left;
        // Newest first: each undo sees the mapping as it was right after that request.
        while let Some(batch) = self.presigned.pop_back() {
            for numbered in batch.requests.iter().rev() {
                let request = &numbered.request;
                self.mapper
                    .settle(request, &super::sched::all_refused(request))?;
            }
        }
        self.presigned_requests_left = 0;
        Ok(dropped)
    }

    fn number(&mut self, requests: Vec<EngineRequest>) -> Vec<Numbered> {
        requests
            .into_iter()
            .map(|request| {
                let request_id = self.request_id_next;
                self.request_id_next += 1;
                Numbered {
                    request,
                    request_id,
                    signed: None,
                }
            })
            .collect()
    }

    /// The requests of the next batch, in apply order: the presigned ones while any are left
    /// (`batch` must then be the next presigned batch), else mapped and numbered now, unsigned.
    pub fn next_batch(&mut self, batch: &[TraceEvent]) -> Result<Vec<Numbered>, OutboxError> {
        if let Some(front) = self.presigned.front() {
            if front.events != batch {
                return Err(OutboxError::PresignMismatch {
                    index: self.presigned_taken,
                });
            }
            let front = self.presigned.pop_front().expect("front exists");
            self.presigned_taken += 1;
            let count = front.requests.len() as u64;
            assert!(count <= self.presigned_requests_left);
            self.presigned_requests_left -= count;
            return Ok(front.requests);
        }
        assert_eq!(self.presigned_requests_left, 0);
        let requests = self.mapper.requests(batch)?;
        Ok(self.number(requests))
    }

    /// The wire payload of `numbered`: its presigned bytes, or signed now. Either way its
    /// `request.body` is left empty (moved into the signature).
    pub fn payload(&mut self, numbered: &mut Numbered) -> Result<Vec<u8>, OutboxError> {
        if let Some(bytes) = numbered.signed.take() {
            assert!(numbered.request.body.is_empty(), "presigned body moved");
            return Ok(bytes);
        }
        self.keyring.pair(numbered.request.requester)?;
        Ok(sign(&self.keyring, numbered)?)
    }

    /// Takes the first batches of `source` exactly as the driver would cut them (`config`), maps
    /// and numbers them, and signs them on every core, until at least `config.requests` requests,
    /// the stream's end, or `PRESIGN_BODY_BYTES_MAX`. Returns the stream to hand the driver: the
    /// taken events again, then the rest. Call it after any setup phase, before a run; called
    /// again before a later run, it first drops what the earlier presign left unsent
    /// (`discard_presigned`, counted in `PresignReport::requests_discarded`), so hand it the
    /// stream that run left. On error the outbox has mapped part of the stream and the run
    /// cannot go on.
    pub fn presign<'a>(
        &mut self,
        source: EventSource<'a>,
        config: &PresignConfig,
    ) -> Result<(PresignReport, EventSource<'a>), OutboxError> {
        if config.requests > PRESIGN_REQUESTS_MAX {
            return Err(OutboxError::PresignTooMany(config.requests));
        }
        if !(1..=BATCH_EVENTS_MAX).contains(&config.batch_events) {
            return Err(OutboxError::PresignBatch(config.batch_events));
        }
        let discarded = self.discard_presigned()?;
        let started = Instant::now();
        let (mut report, source) = self.presign_map(source, config)?;
        report.requests_discarded = discarded;
        report.map_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        self.presign_sign()?;
        report.sign_s = started.elapsed().as_secs_f64();
        report.threads = rayon::current_num_threads();
        let replay: Vec<TraceEvent> = self
            .presigned
            .iter()
            .flat_map(|b| b.events.iter().copied())
            .collect();
        assert_eq!(replay.len() as u64, report.events);
        Ok((report, Box::new(replay.into_iter().map(Ok).chain(source))))
    }

    /// Cuts, maps and numbers the batches to presign (the driver's `read_batch`, batch by batch).
    fn presign_map<'a>(
        &mut self,
        mut source: EventSource<'a>,
        config: &PresignConfig,
    ) -> Result<(PresignReport, EventSource<'a>), OutboxError> {
        let limit = config.events_max.unwrap_or(u64::MAX);
        let mut report = PresignReport {
            requests_asked: config.requests as u64,
            ..PresignReport::default()
        };
        while report.requests < config.requests as u64 && report.events < limit {
            if report.body_bytes >= PRESIGN_BODY_BYTES_MAX as u64 {
                report.capped = true;
                break;
            }
            let mut events = Vec::with_capacity(config.batch_events);
            while events.len() < config.batch_events && report.events < limit {
                let Some(event) = source.next() else {
                    break;
                };
                let event = event?;
                if matches!(event.op, Op::Statement { .. }) {
                    return Err(OutboxError::PresignStatement {
                        index: report.events,
                    });
                }
                events.push(event);
                report.events += 1;
            }
            if events.is_empty() {
                break;
            }
            let requests = self.mapper.requests(&events)?;
            report.body_bytes += requests.iter().map(|r| r.body.len() as u64).sum::<u64>();
            report.requests += requests.len() as u64;
            report.batches += 1;
            let requests = self.number(requests);
            self.presigned
                .push_back(PresignedBatch { events, requests });
        }
        self.presigned_requests_left = report.requests;
        Ok((report, source))
    }

    /// Signs every presigned request on rayon's pool (keys derived first, on this thread).
    fn presign_sign(&mut self) -> Result<(), OutboxError> {
        for batch in &self.presigned {
            for numbered in &batch.requests {
                self.keyring.pair(numbered.request.requester)?;
            }
        }
        let keyring = &self.keyring;
        self.presigned
            .par_iter_mut()
            .flat_map(|batch| batch.requests.par_iter_mut())
            .try_for_each(|numbered| -> Result<(), SigningError> {
                numbered.signed = Some(sign(keyring, numbered)?);
                Ok(())
            })?;
        Ok(())
    }
}
