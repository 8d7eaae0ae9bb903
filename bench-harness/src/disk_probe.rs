//! The disk beside the nodes during a timed run: a thread writes 4 KiB and `fdatasync`s it every
//! 10 ms in the cluster's directory (the filesystem the nodes' block logs and consensus journals
//! sync to) and keeps each sync's latency. Every node syncs before it votes and before it
//! answers, so a second in which this probe's sync stalls is a second in which all the nodes'
//! syncs stall at once (they share the disk); the report names those seconds beside the latency
//! percentiles (docs/CAPACITY.md, session 12).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes written per probe sync.
const WRITE_BYTES: usize = 4096;
/// Pause between probe syncs.
const INTERVAL: Duration = Duration::from_millis(10);
/// The probe rewrites this many blocks in turn, so its file stays small.
const BLOCKS: u64 = 256;
/// A probe sync slower than this marks its second as a disk stall.
pub const STALL_MS: f64 = 20.0;

/// One probe sync: when it started (seconds since the probe started) and how long it took (ms).
pub type Sample = (f64, f64);

/// What the probe saw over a phase.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskProbe {
    pub syncs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Seconds of the phase (counted from the probe's start) with a sync over `STALL_MS`.
    pub stall_seconds: Vec<u32>,
}

/// Percentiles, maximum and stall seconds of `samples`; None when there are none.
pub fn summarize(samples: &[Sample]) -> Option<DiskProbe> {
    if samples.is_empty() {
        return None;
    }
    let mut latencies: Vec<f64> = samples.iter().map(|s| s.1).collect();
    latencies.sort_by(f64::total_cmp);
    let rank = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let mut stall_seconds: Vec<u32> = samples
        .iter()
        .filter(|s| s.1 > STALL_MS)
        .map(|s| s.0 as u32)
        .collect();
    stall_seconds.dedup();
    Some(DiskProbe {
        syncs: latencies.len(),
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: latencies[latencies.len() - 1],
        stall_seconds,
    })
}

/// Runs the probe until `finish` (or until dropped, on an error path).
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
    path: PathBuf,
}

impl Prober {
    /// Starts probing in `dir`; None when the probe file cannot be created there (the run goes
    /// on without it).
    pub fn start(dir: &Path) -> Option<Prober> {
        let path = dir.join("fsync-probe.dat");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("fsync-probe".into())
            .spawn(move || probe(&file, &flag))
            .ok()?;
        Some(Prober {
            stop,
            handle: Some(handle),
            path,
        })
    }

    /// Stops probing and removes the probe file; None when no sync completed.
    pub fn finish(mut self) -> Option<DiskProbe> {
        self.stop.store(true, Ordering::Release);
        summarize(&self.handle.take()?.join().ok()?)
    }
}

fn probe(file: &File, stop: &AtomicBool) -> Vec<Sample> {
    let started = Instant::now();
    let block = [0x5au8; WRITE_BYTES];
    let mut samples = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let at = Instant::now();
        let offset = (i % BLOCKS) * WRITE_BYTES as u64;
        if file.write_all_at(&block, offset).is_err() || file.sync_data().is_err() {
            break;
        }
        let ms = at.elapsed().as_secs_f64() * 1e3;
        samples.push((at.duration_since(started).as_secs_f64(), ms));
        i += 1;
        std::thread::sleep(INTERVAL);
    }
    samples
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(&self.path);
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
        let p = summarize(&samples).expect("samples");
        assert_eq!(p.syncs, 100);
        assert_eq!(p.p50_ms, 1.0);
        assert_eq!(
            p.p99_ms, 45.0,
            "the 99th percentile of 100 is the second slowest"
        );
        assert_eq!(p.max_ms, 80.0);
        assert_eq!(p.stall_seconds, vec![3, 7], "one entry per second");
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn a_probe_syncs_a_real_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let prober = Prober::start(dir.path()).expect("probe starts");
        assert!(dir.path().join("fsync-probe.dat").exists());
        std::thread::sleep(Duration::from_millis(100));
        let p = prober.finish().expect("at least one sync in 100 ms");
        assert!(p.syncs >= 1);
        assert!(p.max_ms >= p.p50_ms && p.p50_ms > 0.0);
        assert!(!dir.path().join("fsync-probe.dat").exists(), "file removed");
    }
}
