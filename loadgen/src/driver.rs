//! Drives a `Target`: open loop at a fixed rate, closed loop with K in flight, or replay at
//! the recorded pace. Single-threaded: one loop submits what is due and polls completions.
//!
//! Coordinated-omission correction (as wrk2): in open loop and replay, request i has an
//! intended send time from the schedule alone. Its latency is measured from that intended
//! time, not from when it was actually sent, so a stall that delays sending is charged to
//! every request it delayed. The naive (send-time) latency is kept too, for comparison.

use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::op::TraceEvent;
use crate::progress::{Progress, ProgressLine, PROGRESS_REFRESH};
use crate::recorder::Recorder;
use crate::target::{Completion, Outcome, Target, TargetError, Ticket, BATCH_EVENTS_MAX};
use crate::trace::TraceError;

/// Longest single wait in `poll`, so intervals and the progress line stay on time.
pub const POLL_WAIT_MAX: Duration = Duration::from_millis(5);
/// Most requests sent back to back before completions are polled again: a backlog (after a
/// stall) is sent in bursts, so completions of the first are not held behind the last.
pub const SEND_BURST_MAX: usize = 32;
/// Shorter waits for the next send time spin instead of sleeping.
pub const SLEEP_WAIT_MIN: Duration = Duration::from_micros(200);
/// Most requests in flight, whatever the target allows.
pub const IN_FLIGHT_MAX: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum DriverError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("target completed unknown ticket {0}")]
    UnknownTicket(Ticket),
    #[error("bad run config: {0}")]
    Config(String),
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Schedule {
    /// Fixed rate in events per second; requests are `batch` events apart in time.
    Open { events_per_s: f64 },
    /// As fast as completions allow, with at most `in_flight` requests outstanding.
    Closed { in_flight: usize },
    /// The trace's own timestamps divided by `speedup`; a request is due at its last event.
    Replay { speedup: f64 },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunConfig {
    pub schedule: Schedule,
    /// Events per request, 1..=BATCH_EVENTS_MAX.
    pub batch_events: usize,
    /// Stop sending after this long (None: until the source ends or `events_max`).
    #[serde(rename = "duration_s", serialize_with = "serialize_opt_secs")]
    pub duration: Option<Duration>,
    pub events_max: Option<u64>,
    #[serde(rename = "interval_s", serialize_with = "serialize_secs")]
    pub interval: Duration,
    /// After sending stops, how long to wait for requests still in flight.
    #[serde(rename = "drain_timeout_s", serialize_with = "serialize_secs")]
    pub drain_timeout: Duration,
}

/// Durations appear in summary.json as seconds.
fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn serialize_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl RunConfig {
    pub fn validate(&self) -> Result<(), DriverError> {
        let bad = |m: &str| Err(DriverError::Config(m.to_string()));
        if !(1..=BATCH_EVENTS_MAX).contains(&self.batch_events) {
            return bad("batch must be 1..=8190 events");
        }
        match self.schedule {
            Schedule::Open { events_per_s }
                if !(events_per_s > 0.0 && events_per_s.is_finite()) =>
            {
                bad("rate must be > 0")
            }
            Schedule::Closed { in_flight } if !(1..=IN_FLIGHT_MAX).contains(&in_flight) => {
                bad("in-flight must be 1..=1048576")
            }
            Schedule::Replay { speedup } if !(speedup > 0.0 && speedup.is_finite()) => {
                bad("speedup must be > 0")
            }
            _ if self.interval.is_zero() => bad("interval must be > 0"),
            _ => Ok(()),
        }
    }
}

/// What a run produced: the recorder plus timing.
pub struct RunResult {
    pub recorder: Recorder,
    pub started_at: SystemTime,
    /// From the first intended send to the last completion (or the drain deadline).
    pub elapsed_ns: u64,
    /// From the first intended send to the last send.
    pub send_window_ns: u64,
    pub requests_unfinished: u64,
    pub target_name: String,
    /// The target's own counters at the end of the run (`Target::stats_json`).
    pub target_stats: Option<serde_json::Value>,
    /// The batch the driver had read ahead but not submitted when sending stopped (empty when
    /// the source ended). A caller that runs again on the same stream puts it back in front, so
    /// no event is skipped (and presigned batches stay aligned with the stream).
    pub unsent_batch: Vec<TraceEvent>,
}

#[derive(Clone, Copy)]
struct Pending {
    ticket: Ticket,
    intended_ns: u64,
    sent_ns: u64,
}

/// Requests in flight: a slab; a ticket is `generation << 32 | slot`, so a stale or foreign
/// ticket is detected.
struct InFlight {
    slots: Vec<Option<Pending>>,
    free: Vec<u32>,
    generation: u32,
}

impl InFlight {
    fn new(capacity: usize) -> InFlight {
        InFlight {
            slots: vec![None; capacity],
            free: (0..capacity as u32).rev().collect(),
            generation: 0,
        }
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    fn insert(&mut self, intended_ns: u64, sent_ns: u64) -> Ticket {
        let slot = self.free.pop().expect("caller checked is_full");
        assert!(
            self.slots[slot as usize].is_none(),
            "free slot {slot} is in use"
        );
        self.generation = self.generation.wrapping_add(1);
        let ticket = (u64::from(self.generation) << 32) | u64::from(slot);
        self.slots[slot as usize] = Some(Pending {
            ticket,
            intended_ns,
            sent_ns,
        });
        ticket
    }

    fn remove(&mut self, ticket: Ticket) -> Option<Pending> {
        let slot = (ticket & u64::from(u32::MAX)) as usize;
        match self.slots.get(slot).copied().flatten() {
            Some(p) if p.ticket == ticket => {
                self.slots[slot] = None;
                self.free.push(slot as u32);
                Some(p)
            }
            _ => None,
        }
    }
}

pub type EventSource<'a> = Box<dyn Iterator<Item = Result<TraceEvent, TraceError>> + 'a>;

struct Driver<'a> {
    source: EventSource<'a>,
    target: &'a mut dyn Target,
    config: RunConfig,
    recorder: Recorder,
    in_flight: InFlight,
    /// The next request, read ahead so its intended time is known.
    batch: Vec<TraceEvent>,
    batch_intended_ns: u64,
    requests_scheduled: u64,
    events_taken: u64,
    trace_first_ns: Option<u64>,
    source_done: bool,
    start: Instant,
    last_sent_ns: u64,
    completions: Vec<Completion>,
}

/// Runs the schedule against `target` until the duration, the event limit or the source ends.
pub fn run(
    source: EventSource<'_>,
    target: &mut dyn Target,
    config: RunConfig,
    progress: &Progress,
) -> Result<RunResult, DriverError> {
    config.validate()?;
    let capacity = match config.schedule {
        Schedule::Closed { in_flight } => in_flight.min(target.in_flight_max()),
        _ => target.in_flight_max().min(IN_FLIGHT_MAX),
    };
    if capacity == 0 {
        return Err(DriverError::Config(
            "target allows no request in flight".into(),
        ));
    }
    let target_name = target.name().to_string();
    let mut d = Driver {
        source,
        target,
        recorder: Recorder::new(config.interval.as_nanos() as u64),
        in_flight: InFlight::new(capacity),
        batch: Vec::with_capacity(config.batch_events),
        batch_intended_ns: 0,
        requests_scheduled: 0,
        events_taken: 0,
        trace_first_ns: None,
        source_done: false,
        start: Instant::now(),
        last_sent_ns: 0,
        completions: Vec::with_capacity(capacity.min(1 << 16)),
        config,
    };
    let started_at = SystemTime::now();
    d.start = Instant::now();
    d.main_loop(progress)?;
    let elapsed_ns = d.now_ns();
    d.recorder.finish(elapsed_ns);
    progress.finish();
    let target_stats = d.target.stats_json();
    let unsent_batch = std::mem::take(&mut d.batch);
    Ok(RunResult {
        unsent_batch,
        requests_unfinished: d.in_flight.len() as u64,
        recorder: d.recorder,
        started_at,
        elapsed_ns,
        send_window_ns: d.last_sent_ns,
        target_name,
        target_stats,
    })
}

impl Driver<'_> {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn main_loop(&mut self, progress: &Progress) -> Result<(), DriverError> {
        let deadline_ns = self.config.duration.map(|d| d.as_nanos() as u64);
        let mut drain_deadline_ns: Option<u64> = None;
        let mut next_progress_ns = 0;
        let mut last_progress = (0u64, 0u64);
        self.read_batch()?;
        loop {
            let now = self.now_ns();
            if drain_deadline_ns.is_none() && self.sending_over(now, deadline_ns) {
                self.source_done = true;
                drain_deadline_ns = Some(now + self.config.drain_timeout.as_nanos() as u64);
            }
            if let Some(drain) = drain_deadline_ns {
                if self.in_flight.len() == 0 || now >= drain {
                    return Ok(());
                }
            }
            self.send_due(now, deadline_ns)?;
            self.poll(now)?;
            let now = self.now_ns();
            self.recorder.tick(now);
            if now >= next_progress_ns {
                last_progress = self.show_progress(progress, now, last_progress);
                next_progress_ns = now + PROGRESS_REFRESH.as_nanos() as u64;
            }
        }
    }

    /// Submits every request that is due (all that fit, in closed loop).
    /// Sending ends with the source or at the deadline. On a schedule (open loop, replay),
    /// every request intended before the deadline is still sent, however late: dropping the
    /// late ones would hide exactly the delay the CO correction is there to measure.
    fn sending_over(&self, now: u64, deadline_ns: Option<u64>) -> bool {
        let Some(deadline) = deadline_ns else {
            return self.source_done;
        };
        let next_ns = match self.config.schedule {
            Schedule::Closed { .. } => now,
            _ => self.batch_intended_ns,
        };
        self.source_done || next_ns >= deadline
    }

    /// Sends at most `SEND_BURST_MAX` requests, so completions are polled between bursts.
    fn send_due(&mut self, mut now: u64, deadline_ns: Option<u64>) -> Result<(), DriverError> {
        for _ in 0..SEND_BURST_MAX {
            if self.source_done || self.in_flight.is_full() {
                return Ok(());
            }
            let closed = matches!(self.config.schedule, Schedule::Closed { .. });
            let intended = if closed { now } else { self.batch_intended_ns };
            if intended > now || deadline_ns.is_some_and(|d| intended >= d) {
                return Ok(());
            }
            self.recorder.tick(now);
            assert!(intended <= now, "never sent before its intended time");
            let ticket = self.in_flight.insert(intended, now);
            self.target.submit(ticket, &self.batch)?;
            self.recorder.on_sent(self.batch.len() as u32);
            self.requests_scheduled += 1;
            self.last_sent_ns = now;
            self.read_batch()?;
            now = self.now_ns();
        }
        Ok(())
    }

    fn poll(&mut self, now: u64) -> Result<(), DriverError> {
        let wait = if self.source_done || self.in_flight.is_full() {
            POLL_WAIT_MAX
        } else {
            match self.config.schedule {
                Schedule::Closed { .. } => Duration::ZERO,
                _ => Duration::from_nanos(self.batch_intended_ns.saturating_sub(now))
                    .min(POLL_WAIT_MAX),
            }
        };
        if self.in_flight.len() == 0 && !wait.is_zero() {
            // Nothing can complete: wait for the next send time. Sleeping overshoots by tens
            // of microseconds, so short waits spin (the overshoot would count as latency).
            if wait >= SLEEP_WAIT_MIN {
                std::thread::sleep(wait - SLEEP_WAIT_MIN / 2);
            }
            return Ok(());
        }
        self.completions.clear();
        self.target.poll(&mut self.completions, wait)?;
        let done_ns = self.now_ns();
        // Close intervals first, so completions land in the interval they happened in.
        self.recorder.tick(done_ns);
        for c in self.completions.drain(..) {
            let p = self
                .in_flight
                .remove(c.ticket)
                .ok_or(DriverError::UnknownTicket(c.ticket))?;
            self.recorder
                .on_complete(p.intended_ns, p.sent_ns, done_ns, &c.outcome);
        }
        Ok(())
    }

    /// Reads the next request's events and computes its intended send time.
    fn read_batch(&mut self) -> Result<(), DriverError> {
        self.batch.clear();
        let limit = self.config.events_max.unwrap_or(u64::MAX);
        while self.batch.len() < self.config.batch_events && self.events_taken < limit {
            match self.source.next() {
                Some(event) => self.batch.push(event?),
                None => break,
            }
            self.events_taken += 1;
        }
        assert!(self.batch.len() <= self.config.batch_events);
        if self.batch.is_empty() {
            self.source_done = true;
            return Ok(());
        }
        self.batch_intended_ns = match self.config.schedule {
            Schedule::Open { events_per_s } => {
                let request_gap_ns = self.config.batch_events as f64 * 1e9 / events_per_s;
                (self.requests_scheduled as f64 * request_gap_ns) as u64
            }
            Schedule::Closed { .. } => 0,
            Schedule::Replay { speedup } => {
                let last = self.batch[self.batch.len() - 1].timestamp_ns;
                let first = *self
                    .trace_first_ns
                    .get_or_insert(self.batch[0].timestamp_ns);
                (last.saturating_sub(first) as f64 / speedup) as u64
            }
        };
        Ok(())
    }

    fn show_progress(&self, progress: &Progress, now: u64, last: (u64, u64)) -> (u64, u64) {
        let t = &self.recorder.totals;
        let dt_s = (now - last.0) as f64 / 1e9;
        let rate = if dt_s > 0.0 {
            (t.events_committed - last.1) as f64 / dt_s
        } else {
            0.0
        };
        progress.update(&ProgressLine {
            events_per_s: rate,
            in_flight: self.in_flight.len(),
            events_committed: t.events_committed,
            errors: t.requests_failed + t.events_rejected,
            p99_ms: self.recorder.p99_ms(),
        });
        (now, t.events_committed)
    }
}

/// Outcome for the summary: whether a completion committed everything.
pub fn fully_committed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Executed { rejections, .. } if rejections.is_empty())
}
