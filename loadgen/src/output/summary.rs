//! `summary.json` and the plain SUMMARY block printed at the end of a run.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::driver::RunResult;
use crate::recorder::{IntervalStats, Totals};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u64,
}

impl Percentiles {
    /// Percentiles in milliseconds of a nanosecond histogram.
    pub fn of_ns(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            p99_99: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
            mean: h.mean() / 1e6,
            count: h.len(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub target: String,
    pub elapsed_s: f64,
    pub send_window_s: f64,
    /// Events sent per second of the send window (the offered load).
    pub offered_events_per_s: f64,
    /// Events committed per second of the whole run.
    pub committed_events_per_s: f64,
    pub requests_per_s: f64,
    pub requests_unfinished: u64,
    pub totals: Totals,
    /// Coordinated-omission corrected (from the intended send time), milliseconds.
    pub latency_ms: Percentiles,
    /// Naive (from the actual send time), milliseconds. Hides stalls; for comparison only.
    pub latency_ms_uncorrected: Percentiles,
    /// The target's own counters (tcp: requests sent, presigned, signed live, engine codes...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_stats: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub loadgen_version: String,
    pub started_at_unix_s: f64,
    /// The command's configuration: workload, schedule, batch, target.
    pub config: serde_json::Value,
    pub results: Results,
    pub timeline: Vec<IntervalStats>,
}

fn per_s(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / ns as f64
    }
}

impl Summary {
    pub fn from_run(run: &RunResult, config: serde_json::Value) -> Summary {
        let t = &run.recorder.totals;
        let started = run
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Summary {
            loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_unix_s: started.as_secs_f64(),
            config,
            results: Results {
                target: run.target_name.clone(),
                elapsed_s: run.elapsed_ns as f64 / 1e9,
                send_window_s: run.send_window_ns as f64 / 1e9,
                offered_events_per_s: per_s(t.events_sent, run.send_window_ns),
                committed_events_per_s: per_s(t.events_committed, run.elapsed_ns),
                requests_per_s: per_s(t.requests_done, run.elapsed_ns),
                requests_unfinished: run.requests_unfinished,
                totals: t.clone(),
                latency_ms: Percentiles::of_ns(&run.recorder.corrected),
                latency_ms_uncorrected: Percentiles::of_ns(&run.recorder.uncorrected),
                target_stats: run.target_stats.clone(),
            },
            timeline: run.recorder.intervals.clone(),
        }
    }

    /// The plain SUMMARY block: config, then results; comparable by eye across runs.
    pub fn render_text(&self) -> String {
        let r = &self.results;
        let t = &r.totals;
        let mut s = String::new();
        let _ = writeln!(s, "-----------------------------------------");
        let _ = writeln!(s, " SUMMARY (loadgen {})", self.loadgen_version);
        let _ = writeln!(s, "-----------------------------------------");
        let _ = writeln!(s, " + CONFIG:");
        if let Some(obj) = self.config.as_object() {
            for (k, v) in obj {
                let _ = writeln!(s, " {k}: {v}");
            }
        }
        let _ = writeln!(s, " target: {}", r.target);
        let _ = writeln!(s, "\n + RESULTS:");
        let _ = writeln!(
            s,
            " elapsed: {:.3} s (sending {:.3} s)",
            r.elapsed_s, r.send_window_s
        );
        let _ = writeln!(s, " offered rate: {:.0} events/s", r.offered_events_per_s);
        let _ = writeln!(
            s,
            " committed rate: {:.0} events/s ({:.0} requests/s)",
            r.committed_events_per_s, r.requests_per_s
        );
        let _ = writeln!(
            s,
            " events: {} sent, {} committed, {} rejected",
            t.events_sent, t.events_committed, t.events_rejected
        );
        let _ = writeln!(
            s,
            " requests: {} sent, {} done, {} failed, {} unfinished",
            t.requests_sent, t.requests_done, t.requests_failed, r.requests_unfinished
        );
        for (code, n) in &t.rejections_by_code {
            let _ = writeln!(s, " rejected with code {code}: {n} events");
        }
        for (reason, n) in &t.failures_by_reason {
            let _ = writeln!(s, " failed ({reason}): {n} requests");
        }
        write_latency(&mut s, "latency (CO-corrected)", &r.latency_ms);
        write_latency(&mut s, "latency (uncorrected) ", &r.latency_ms_uncorrected);
        let _ = writeln!(s, "-----------------------------------------");
        s
    }
}

fn write_latency(s: &mut String, label: &str, p: &Percentiles) {
    let _ = writeln!(
        s,
        " {label} ms: p50 {:.3} | p90 {:.3} | p99 {:.3} | p99.9 {:.3} | p99.99 {:.3} | max {:.3}",
        p.p50, p.p90, p.p99, p.p99_9, p.p99_99, p.max
    );
}
