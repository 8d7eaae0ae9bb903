//! Probes beside a timed run, each a thread that takes one sample after another and keeps them:
//!
//! - **The disk** (`Prober::disk`): writes 4 KiB and `fdatasync`s it every 10 ms in the
//!   cluster's directory (the filesystem the nodes' block logs and consensus journals sync to)
//!   and keeps each sync's latency. Every node syncs before it votes and before it answers, so a
//!   second in which this probe's sync stalls is a second in which all the nodes' syncs stall at
//!   once (they share the disk); the report names those seconds beside the latency percentiles
//!   (docs/CAPACITY.md, session 12).
//! - **The host** (`Prober::hiccup`, the idea of jHiccup): sleeps 5 ms at a time, unpinned, and
//!   keeps how much later than asked each sleep ended. A second with a hiccup over 50 ms is
//!   one in which a thread ready to run waited that long for a core: the host paused (steal, a
//!   VM exit, reclaim) or the machine was saturated. A pause of about 0.2 s of the whole host is
//!   what the batched target absorbs (docs/CAPACITY.md, session 17), so the report names those
//!   seconds beside the latency percentiles too.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes written per disk probe sync.
const WRITE_BYTES: usize = 4096;
/// Pause between disk probe syncs.
const DISK_INTERVAL: Duration = Duration::from_millis(10);
/// The disk probe rewrites this many blocks in turn, so its file stays small.
const BLOCKS: u64 = 256;
/// A disk probe sync slower than this marks its second as a disk stall.
pub const DISK_STALL_MS: f64 = 20.0;
/// How long each hiccup probe sleep asks for.
pub const HICCUP_INTERVAL: Duration = Duration::from_millis(5);
/// A hiccup longer than this marks its second as a host stall.
pub const HICCUP_STALL_MS: f64 = 50.0;

/// One sample: when it started (seconds since the probe started) and its value (ms).
pub type Sample = (f64, f64);

/// What a probe saw over a phase.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// A sample over this marks its second as a stall.
    pub stall_ms: f64,
    /// Seconds of the phase (counted from the probe's start) with a sample over `stall_ms`.
    pub stall_seconds: Vec<u32>,
}

impl ProbeSummary {
    /// The report's figures: percentiles, maximum and the seconds with a `what` (a sync, a
    /// hiccup) over the stall threshold.
    pub fn figures(&self, what: &str) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; seconds with a {what} over {} ms: {:?}",
            self.p50_ms, self.p99_ms, self.max_ms, self.stall_ms, self.stall_seconds
        )
    }

    /// The JSON figures, the sample count under `count_key`.
    pub fn json(&self, count_key: &str) -> serde_json::Value {
        let mut json = serde_json::json!({
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
            "stall_ms": self.stall_ms, "stall_seconds": self.stall_seconds,
        });
        json[count_key] = self.samples.into();
        json
    }
}

/// Percentiles, maximum and the seconds with a sample over `stall_ms`; None when there are no
/// samples.
pub fn summarize(samples: &[Sample], stall_ms: f64) -> Option<ProbeSummary> {
    if samples.is_empty() {
        return None;
    }
    let mut values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    values.sort_by(f64::total_cmp);
    let rank = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    let mut stall_seconds: Vec<u32> = samples
        .iter()
        .filter(|s| s.1 > stall_ms)
        .map(|s| s.0 as u32)
        .collect();
    stall_seconds.dedup();
    Some(ProbeSummary {
        samples: values.len(),
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: values[values.len() - 1],
        stall_ms,
        stall_seconds,
    })
}

/// Runs a probe until `finish` (or until dropped, on an error path).
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
    stall_ms: f64,
    /// A file the probe writes, removed when it ends.
    file: Option<PathBuf>,
}

impl Prober {
    /// Starts the disk probe in `dir`; None when its file cannot be created there (the run goes
    /// on without it).
    pub fn disk(dir: &Path) -> Option<Prober> {
        let path = dir.join("fsync-probe.dat");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .ok()?;
        let block = [0x5au8; WRITE_BYTES];
        let mut i = 0u64;
        let sync = move || {
            let at = Instant::now();
            let offset = (i % BLOCKS) * WRITE_BYTES as u64;
            file.write_all_at(&block, offset).ok()?;
            file.sync_data().ok()?;
            let ms = at.elapsed().as_secs_f64() * 1e3;
            i += 1;
            std::thread::sleep(DISK_INTERVAL);
            Some(ms)
        };
        Prober::spawn("fsync-probe", sync, DISK_STALL_MS, Some(path))
    }

    /// Starts the host hiccup probe; None when its thread cannot be started.
    pub fn hiccup() -> Option<Prober> {
        let sleep = || {
            let at = Instant::now();
            std::thread::sleep(HICCUP_INTERVAL);
            Some(at.elapsed().saturating_sub(HICCUP_INTERVAL).as_secs_f64() * 1e3)
        };
        Prober::spawn("hiccup-probe", sleep, HICCUP_STALL_MS, None)
    }

    /// Takes `sample()` after sample until stopped or until it returns None.
    fn spawn(
        name: &str,
        mut sample: impl FnMut() -> Option<f64> + Send + 'static,
        stall_ms: f64,
        file: Option<PathBuf>,
    ) -> Option<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let started = Instant::now();
                let mut samples = Vec::new();
                while !flag.load(Ordering::Acquire) {
                    let at = started.elapsed().as_secs_f64();
                    let Some(ms) = sample() else { break };
                    samples.push((at, ms));
                }
                samples
            })
            .ok()?;
        Some(Prober {
            stop,
            handle: Some(handle),
            stall_ms,
            file,
        })
    }

    /// Stops probing (removing the probe's file); None when no sample was taken.
    pub fn finish(mut self) -> Option<ProbeSummary> {
        self.stop.store(true, Ordering::Release);
        summarize(&self.handle.take()?.join().ok()?, self.stall_ms)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        if let Some(path) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_maximum_and_the_seconds_with_a_slow_sync() {
        // 100 syncs over 10 s: 1 ms each, except 45 ms at 3.5 s and 80 ms and 25 ms in second 7.
        let mut samples: Vec<Sample> = (0..100).map(|i| (i as f64 * 0.1, 1.0)).collect();
        samples[35].1 = 45.0;
        samples[71].1 = 80.0;
        samples[72].1 = 25.0;
        let p = summarize(&samples, DISK_STALL_MS).expect("samples");
        assert_eq!(p.samples, 100);
        assert_eq!(p.p50_ms, 1.0);
        assert_eq!(
            p.p99_ms, 45.0,
            "the 99th percentile of 100 is the second slowest"
        );
        assert_eq!(p.max_ms, 80.0);
        assert_eq!(p.stall_seconds, vec![3, 7], "one entry per second");
        assert_eq!(summarize(&[], DISK_STALL_MS), None);
    }

    #[test]
    fn a_probe_syncs_a_real_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let prober = Prober::disk(dir.path()).expect("probe starts");
        assert!(dir.path().join("fsync-probe.dat").exists());
        std::thread::sleep(Duration::from_millis(100));
        let p = prober.finish().expect("at least one sync in 100 ms");
        assert!(p.samples >= 1);
        assert!(p.max_ms >= p.p50_ms && p.p50_ms > 0.0);
        assert!(!dir.path().join("fsync-probe.dat").exists(), "file removed");
    }

    #[test]
    fn a_stall_is_a_sample_over_its_threshold() {
        let samples = [
            (0.2, 0.1),
            (1.5, HICCUP_STALL_MS + 0.01),
            (2.5, HICCUP_STALL_MS),
        ];
        let p = summarize(&samples, HICCUP_STALL_MS).expect("samples");
        assert_eq!(p.stall_seconds, vec![1]);
        assert_eq!(p.max_ms, HICCUP_STALL_MS + 0.01);
    }

    #[test]
    fn the_report_figures_and_json_name_the_threshold_and_the_stall_seconds() {
        let samples = [(0.5, 2.0), (3.2, 90.0)];
        let p = summarize(&samples, HICCUP_STALL_MS).expect("samples");
        assert_eq!(
            p.figures("hiccup"),
            "p50 90.00 ms, p99 90.00 ms, max 90.0 ms; seconds with a hiccup over 50 ms: [3]"
        );
        let json = p.json("samples");
        assert_eq!(json["samples"], 2);
        assert_eq!(json["stall_ms"], 50.0);
        assert_eq!(json["stall_seconds"], serde_json::json!([3]));
        assert_eq!(json["max_ms"], 90.0);
    }

    #[test]
    fn the_hiccup_probe_takes_one_sample_per_sleep() {
        let prober = Prober::hiccup().expect("probe starts");
        std::thread::sleep(Duration::from_millis(100));
        let p = prober.finish().expect("samples in 100 ms");
        // Each sample is one sleep of at least HICCUP_INTERVAL: at most 20 fit in 100 ms, plus
        // the one under way at the stop (a busy test machine fits fewer).
        assert!((1..=21).contains(&p.samples), "{p:?}");
        assert!(p.max_ms >= p.p99_ms && p.p99_ms >= p.p50_ms, "{p:?}");
    }
}
