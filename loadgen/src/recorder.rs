//! Latency and throughput recording: whole-run HDR histograms (CO-corrected and naive),
//! one interval histogram per interval (for the `.hlog`) and a per-interval timeline.

use std::collections::BTreeMap;

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::target::Outcome;

/// Highest latency recorded exactly: one hour in nanoseconds; longer ones saturate to it.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
pub const LATENCY_SIGFIG: u8 = 3;
/// Intervals kept: a day of 1-second intervals. Past that, intervals stop being logged.
pub const INTERVALS_MAX: usize = 86_400;
/// Distinct failure reasons kept in the summary; the rest are counted under "other".
pub const FAILURE_REASONS_MAX: usize = 16;

pub fn new_latency_histogram() -> Histogram<u64> {
    // Bounds are constants in range, so creation cannot fail.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGFIG).expect("constant bounds")
}

/// One interval of the timeline. Latencies are CO-corrected, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalStats {
    pub start_s: f64,
    pub duration_s: f64,
    pub requests_sent: u64,
    pub events_sent: u64,
    pub requests_done: u64,
    pub events_committed: u64,
    pub events_rejected: u64,
    pub requests_failed: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

/// Whole-run counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub requests_sent: u64,
    pub events_sent: u64,
    pub requests_done: u64,
    pub events_committed: u64,
    pub events_rejected: u64,
    pub requests_failed: u64,
    pub rejections_by_code: BTreeMap<u32, u64>,
    pub failures_by_reason: BTreeMap<String, u64>,
}

/// An interval histogram, serialized (V2 + deflate) so a long run keeps little memory.
pub struct LoggedInterval {
    pub start_ns: u64,
    pub duration_ns: u64,
    pub encoded: Vec<u8>,
}

pub struct Recorder {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    interval_hist: Histogram<u64>,
    interval_ns: u64,
    interval_start_ns: u64,
    current: IntervalStats,
    pub intervals: Vec<IntervalStats>,
    pub logged: Vec<LoggedInterval>,
    pub totals: Totals,
    serializer: V2DeflateSerializer,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Recorder {
    pub fn new(interval_ns: u64) -> Recorder {
        assert!(interval_ns > 0, "interval must be positive");
        Recorder {
            corrected: new_latency_histogram(),
            uncorrected: new_latency_histogram(),
            interval_hist: new_latency_histogram(),
            interval_ns,
            interval_start_ns: 0,
            current: IntervalStats::default(),
            intervals: Vec::new(),
            logged: Vec::new(),
            totals: Totals::default(),
            serializer: V2DeflateSerializer::new(),
        }
    }

    pub fn on_sent(&mut self, events: u32) {
        self.current.requests_sent += 1;
        self.current.events_sent += u64::from(events);
        self.totals.requests_sent += 1;
        self.totals.events_sent += u64::from(events);
    }

    /// Records one completion. Times are ns since the run's start: `intended_ns` is when the
    /// schedule said to send it, `sent_ns` when it was sent, `done_ns` when it completed.
    pub fn on_complete(&mut self, intended_ns: u64, sent_ns: u64, done_ns: u64, outcome: &Outcome) {
        assert!(intended_ns <= sent_ns, "sent before its intended time");
        assert!(sent_ns <= done_ns, "completed before sent");
        let corrected = (done_ns - intended_ns).max(1);
        let naive = (done_ns - sent_ns).max(1);
        self.corrected.saturating_record(corrected);
        self.uncorrected.saturating_record(naive);
        self.interval_hist.saturating_record(corrected);
        self.current.requests_done += 1;
        self.totals.requests_done += 1;
        match outcome {
            Outcome::Executed {
                events_committed,
                rejections,
            } => {
                self.current.events_committed += u64::from(*events_committed);
                self.totals.events_committed += u64::from(*events_committed);
                for r in rejections {
                    self.current.events_rejected += u64::from(r.events);
                    self.totals.events_rejected += u64::from(r.events);
                    *self.totals.rejections_by_code.entry(r.code).or_default() +=
                        u64::from(r.events);
                }
            }
            Outcome::Failed { reason } => {
                self.current.requests_failed += 1;
                self.totals.requests_failed += 1;
                let failures = &mut self.totals.failures_by_reason;
                let key = if failures.len() < FAILURE_REASONS_MAX || failures.contains_key(reason) {
                    reason.clone()
                } else {
                    "other".to_string()
                };
                *failures.entry(key).or_default() += 1;
            }
        }
    }

    /// Closes every interval that ended at or before `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        while now_ns >= self.interval_start_ns + self.interval_ns {
            self.close_interval(self.interval_ns);
        }
    }

    /// Closes the last, partial interval.
    pub fn finish(&mut self, end_ns: u64) {
        self.tick(end_ns);
        let rest = end_ns.saturating_sub(self.interval_start_ns);
        if self.current.requests_done > 0 || self.current.requests_sent > 0 {
            self.close_interval(rest.max(1));
        }
    }

    fn close_interval(&mut self, duration_ns: u64) {
        assert!(duration_ns > 0 && duration_ns <= self.interval_ns);
        assert_eq!(
            self.interval_hist.len(),
            self.current.requests_done,
            "one sample per completion"
        );
        let h = &self.interval_hist;
        self.current.start_s = self.interval_start_ns as f64 / 1e9;
        self.current.duration_s = duration_ns as f64 / 1e9;
        if !h.is_empty() {
            self.current.latency_ms_p50 = ms(h.value_at_quantile(0.5));
            self.current.latency_ms_p99 = ms(h.value_at_quantile(0.99));
            self.current.latency_ms_max = ms(h.max());
        }
        if self.intervals.len() < INTERVALS_MAX {
            let mut encoded = Vec::new();
            // Serializing into a Vec cannot fail for a histogram we built.
            if self.serializer.serialize(h, &mut encoded).is_ok() {
                let start_ns = self.interval_start_ns;
                self.logged.push(LoggedInterval {
                    start_ns,
                    duration_ns,
                    encoded,
                });
            }
            self.intervals.push(std::mem::take(&mut self.current));
        }
        self.current = IntervalStats::default();
        self.interval_hist.reset();
        self.interval_start_ns += duration_ns;
    }

    /// Current CO-corrected p99 in ms (progress line).
    pub fn p99_ms(&self) -> f64 {
        if self.corrected.is_empty() {
            0.0
        } else {
            ms(self.corrected.value_at_quantile(0.99))
        }
    }
}
