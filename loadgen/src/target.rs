//! The boundary between loadgen and whatever receives the load.
//!
//! A `Target` takes requests (a batch of 1..=`BATCH_EVENTS_MAX` events; engine targets split it
//! into homogeneous engine requests, one signature each) tagged with a `Ticket`, and later reports a `Completion` per ticket. Submission
//! and completion are split so a TCP client with many requests in flight over many
//! connections and an in-process target that completes at once both fit: the driver never
//! waits on one request, it polls for whatever has completed.

use std::collections::VecDeque;
use std::time::Duration;

use thiserror::Error;

use crate::op::{OpKind, TraceEvent};

/// Most events in one request (the engine's message body holds 8,190 128-byte records).
pub const BATCH_EVENTS_MAX: usize = 8_190;

/// Identifies one request from `submit` to its `Completion`. Opaque to the target.
pub type Ticket = u64;

/// Events of a request that the ledger rejected, by stable result code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: u32,
    pub events: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request was ordered and executed: `events_committed` applied, the rest rejected.
    /// An empty `rejections` does not allocate.
    Executed {
        events_committed: u32,
        rejections: Vec<Rejection>,
    },
    /// The request got no result (timeout, connection lost, bad signature...).
    Failed { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub ticket: Ticket,
    pub outcome: Outcome,
}

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("target disconnected: {0}")]
    Disconnected(String),
    #[error("target i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("target: {0}")]
    Other(String),
}

pub trait Target {
    /// Short name for the summary (`null`, `stall`, `inproc`, `tcp`).
    fn name(&self) -> &str;

    /// Most requests this target can have in flight (connections x pipeline depth).
    /// The driver never exceeds it.
    fn in_flight_max(&self) -> usize;

    /// Sends one request of 1..=`BATCH_EVENTS_MAX` events. May block under backpressure; in
    /// open loop that delay is charged to the requests that wait (coordinated-omission
    /// correction), so blocking is honest, never hidden.
    fn submit(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError>;

    /// Appends completed requests to `out`. If none is ready, waits up to `timeout` for one.
    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), TargetError>;

    /// Target-specific lines printed after the SUMMARY (engine codes, ledger digest...).
    fn report(&self) -> Option<String> {
        None
    }

    /// Target-specific counters for summary.json (`results.target_stats`).
    fn stats_json(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Completes every request at once: measures the generator's own ceiling. It reads every
/// event (counts by kind) so the work of producing them cannot be optimised away.
pub struct NullTarget {
    in_flight_max: usize,
    ready: VecDeque<Completion>,
    events_by_kind: [u64; OpKind::COUNT],
    /// Reject every Nth request with `reject_code` (0 = never); exercises the rejection path.
    reject_every: u64,
    reject_code: u32,
    submitted: u64,
}

impl NullTarget {
    pub fn new(in_flight_max: usize) -> NullTarget {
        assert!(in_flight_max >= 1);
        NullTarget {
            in_flight_max,
            ready: VecDeque::with_capacity(in_flight_max),
            events_by_kind: [0; OpKind::COUNT],
            reject_every: 0,
            reject_code: 0,
            submitted: 0,
        }
    }

    pub fn with_rejections(mut self, every: u64, code: u32) -> NullTarget {
        self.reject_every = every;
        self.reject_code = code;
        self
    }

    pub fn events_by_kind(&self) -> [u64; OpKind::COUNT] {
        self.events_by_kind
    }
}

fn check_batch(batch: &[TraceEvent]) -> Result<u32, TargetError> {
    if batch.is_empty() || batch.len() > BATCH_EVENTS_MAX {
        return Err(TargetError::Other(format!(
            "batch of {} events outside 1..={BATCH_EVENTS_MAX}",
            batch.len()
        )));
    }
    Ok(batch.len() as u32)
}

impl Target for NullTarget {
    fn name(&self) -> &str {
        "null"
    }

    fn in_flight_max(&self) -> usize {
        self.in_flight_max
    }

    fn submit(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError> {
        let events = check_batch(batch)?;
        assert!(
            self.ready.len() < self.in_flight_max,
            "driver exceeded in_flight_max"
        );
        for e in batch {
            self.events_by_kind[e.op.kind().index()] += 1;
        }
        self.submitted += 1;
        let outcome = if self.reject_every > 0 && self.submitted.is_multiple_of(self.reject_every) {
            let rejections = vec![Rejection {
                code: self.reject_code,
                events,
            }];
            Outcome::Executed {
                events_committed: 0,
                rejections,
            }
        } else {
            Outcome::Executed {
                events_committed: events,
                rejections: Vec::new(),
            }
        };
        self.ready.push_back(Completion { ticket, outcome });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, _timeout: Duration) -> Result<(), TargetError> {
        out.extend(self.ready.drain(..));
        Ok(())
    }
}

/// A null target that blocks once, inside one `submit`, for `stall`: the classic
/// coordinated-omission trap (a GC pause, a full socket buffer, a view change).
pub struct StallTarget {
    inner: NullTarget,
    stall_at_request: u64,
    stall: Duration,
    submitted: u64,
}

impl StallTarget {
    pub fn new(in_flight_max: usize, stall_at_request: u64, stall: Duration) -> StallTarget {
        StallTarget {
            inner: NullTarget::new(in_flight_max),
            stall_at_request,
            stall,
            submitted: 0,
        }
    }
}

impl Target for StallTarget {
    fn name(&self) -> &str {
        "stall"
    }

    fn in_flight_max(&self) -> usize {
        self.inner.in_flight_max()
    }

    fn submit(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError> {
        self.submitted += 1;
        if self.submitted == self.stall_at_request {
            std::thread::sleep(self.stall);
        }
        self.inner.submit(ticket, batch)
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), TargetError> {
        self.inner.poll(out, timeout)
    }
}
