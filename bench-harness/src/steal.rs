//! Hypervisor steal during a timed run: the share of CPU time the host gave to other guests while
//! this machine's vCPUs had work (`steal` in `/proc/stat`). On a shared VM, seconds with high steal
//! are the seconds with the worst latencies (docs/CAPACITY.md, session 7), so every e2e run reports
//! it beside its percentiles. A thread reads the aggregate `cpu` line once a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Cumulative ticks of the aggregate `cpu` line: all of them, and the stolen ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    pub total: u64,
    pub steal: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat` (user nice system idle iowait irq softirq
/// steal guest guest_nice). None when the line is missing or has fewer than eight counters.
pub fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 8 {
        return None;
    }
    // guest and guest_nice are already counted in user and nice.
    Some(CpuTicks {
        total: fields.iter().take(8).sum(),
        steal: fields[7],
    })
}

fn read() -> Option<CpuTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// What the sampler saw over the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steal {
    /// Stolen ticks / all ticks over the whole run.
    pub share: f64,
    /// The highest such share in any one interval between readings (about a second; the
    /// cut-short last one is left out, see `WORST_INTERVAL_S_MIN`).
    pub worst_second_share: f64,
}

/// One reading and when it was taken (seconds since the sampler started).
pub type Sample = (f64, CpuTicks);

/// Intervals shorter than this (the last one, cut by `finish`) count in the whole-run share but
/// not as a "worst second": a few ticks would make its share jump by whole percents.
const WORST_INTERVAL_S_MIN: f64 = 0.5;

/// Shares from consecutive readings (None with fewer than two, or no ticks between them).
pub fn summarize(samples: &[Sample]) -> Option<Steal> {
    let share = |a: &CpuTicks, b: &CpuTicks| {
        let total = b.total.saturating_sub(a.total);
        (total > 0).then(|| b.steal.saturating_sub(a.steal) as f64 / total as f64)
    };
    let whole = share(&samples.first()?.1, &samples.last()?.1)?;
    let worst = samples
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= WORST_INTERVAL_S_MIN)
        .filter_map(|w| share(&w[0].1, &w[1].1))
        .fold(0.0, f64::max);
    Some(Steal {
        share: whole,
        worst_second_share: worst,
    })
}

/// Samples `/proc/stat` every second until `finish` (or until dropped, on an error path).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let at = |ticks| (started.elapsed().as_secs_f64(), ticks);
            let mut samples: Vec<Sample> = read().map(at).into_iter().collect();
            while !flag.load(Ordering::Acquire) {
                // Short sleeps, so `finish` returns promptly; one reading per second.
                for _ in 0..10 {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                samples.extend(read().map(at));
            }
            samples
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; None where `/proc/stat` cannot be read.
    pub fn finish(mut self) -> Option<Steal> {
        self.stop.store(true, Ordering::Release);
        summarize(&self.handle.take()?.join().ok()?)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  7470125 219364 1801196 2221838 104652 0 55842 208255 0 0\n\
                        cpu0 3754958 110144 873869 1144633 44077 0 12507 99231 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn the_aggregate_line_is_parsed_and_guest_time_is_not_counted_twice() {
        let ticks = parse_proc_stat(STAT).expect("parses");
        assert_eq!(ticks.steal, 208_255);
        assert_eq!(
            ticks.total,
            7_470_125 + 219_364 + 1_801_196 + 2_221_838 + 104_652 + 55_842 + 208_255
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3\n"), None, "no aggregate line");
        assert_eq!(parse_proc_stat("cpu  1 2 3 4\n"), None, "too few counters");
        assert_eq!(parse_proc_stat("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn shares_cover_the_whole_run_and_its_worst_second() {
        let t = |at, total, steal| (at, CpuTicks { total, steal });
        // Second 1: 2 of 200 ticks stolen; second 2: 30 of 200; second 3: none of 200; then a
        // cut-short 0.1 s with 4 of 20 stolen (20 %), which is no "worst second".
        let samples = [
            t(0.0, 1000, 10),
            t(1.0, 1200, 12),
            t(2.0, 1400, 42),
            t(3.0, 1600, 42),
            t(3.1, 1620, 46),
        ];
        let steal = summarize(&samples).expect("four intervals");
        assert!((steal.share - 36.0 / 620.0).abs() < 1e-12);
        assert!((steal.worst_second_share - 0.15).abs() < 1e-12);
        assert_eq!(summarize(&samples[..1]), None, "one reading is no interval");
        assert_eq!(
            summarize(&[t(0.0, 5, 1), t(1.0, 5, 1)]),
            None,
            "no ticks passed"
        );
    }
}
