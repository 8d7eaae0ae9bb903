//! Where a pipeline thread's wall time went over a stretch of work: on a core, waiting for one
//! (runnable but not running), or neither: blocked, or running but charged to no task (the
//! kernel's run time excludes interrupt time and, in a VM, time the host took the vCPU). A slow block on a shared machine is either more work, a
//! thread that did not get its core, or a thread that waited on something; the slow block log
//! says which from these figures.
//!
//! Sources (Linux): `/proc/thread-self/schedstat` (nanoseconds on a core, nanoseconds runnable on
//! a run queue, timeslices), kept open and re-read from offset 0, and `getrusage(RUSAGE_THREAD)`
//! (system CPU, minor faults, voluntary and involuntary context switches). Each sample is
//! two system calls. Where a source is missing (another OS, a restricted `/proc`) its figures are
//! absent and nothing else changes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// One reading of the calling thread's counters.
#[derive(Clone, Copy, Debug)]
pub struct UsageSample {
    at: Instant,
    sched: Option<SchedStat>,
    rusage: Option<Rusage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SchedStat {
    on_cpu_ns: u64,
    runnable_wait_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rusage {
    system_us: u64,
    minor_faults: u64,
    voluntary_switches: u64,
    involuntary_switches: u64,
}

/// Where the wall time between two samples went (milliseconds), and what happened in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsageSpan {
    pub wall_ms: f64,
    /// On a core (schedstat).
    pub on_cpu_ms: Option<f64>,
    /// Runnable, waiting for a core (schedstat).
    pub runnable_wait_ms: Option<f64>,
    /// Of the CPU time, in the kernel (rusage).
    pub system_ms: Option<f64>,
    pub minor_faults: Option<u64>,
    pub voluntary_switches: Option<u64>,
    pub involuntary_switches: Option<u64>,
}

impl UsageSpan {
    /// Wall time neither on a core nor waiting for one: blocked (I/O, a lock, a page), or taken
    /// by interrupts or the hypervisor (a thread spinning 30 ms shows 3-4 ms of it on this
    /// machine's vCPUs).
    pub fn blocked_or_stolen_ms(&self) -> Option<f64> {
        Some((self.wall_ms - self.on_cpu_ms? - self.runnable_wait_ms?).max(0.0))
    }
}

/// The calling thread's usage counters. Create it on the thread it measures.
pub struct ThreadUsage {
    enabled: bool,
    schedstat: Option<File>,
}

impl ThreadUsage {
    pub fn for_current_thread() -> ThreadUsage {
        ThreadUsage {
            enabled: true,
            schedstat: File::open("/proc/thread-self/schedstat").ok(),
        }
    }

    /// Samples hold only the time (no system call): for a thread whose figures nobody reads.
    pub fn disabled() -> ThreadUsage {
        ThreadUsage {
            enabled: false,
            schedstat: None,
        }
    }

    pub fn sample(&self) -> UsageSample {
        UsageSample {
            at: Instant::now(),
            sched: self.schedstat.as_ref().and_then(read_schedstat),
            rusage: if self.enabled { rusage_thread() } else { None },
        }
    }
}

impl UsageSample {
    pub fn at(&self) -> Instant {
        self.at
    }

    /// What happened from `self` to `later` (both from the same thread).
    pub fn span_to(&self, later: &UsageSample) -> UsageSpan {
        let ms_ns = |ns: u64| ns as f64 / 1e6;
        let ms_us = |us: u64| us as f64 / 1e3;
        let sched = self.sched.zip(later.sched);
        let rusage = self.rusage.zip(later.rusage);
        UsageSpan {
            wall_ms: later.at.saturating_duration_since(self.at).as_secs_f64() * 1e3,
            on_cpu_ms: sched.map(|(a, b)| ms_ns(b.on_cpu_ns.saturating_sub(a.on_cpu_ns))),
            runnable_wait_ms: sched
                .map(|(a, b)| ms_ns(b.runnable_wait_ns.saturating_sub(a.runnable_wait_ns))),
            system_ms: rusage.map(|(a, b)| ms_us(b.system_us.saturating_sub(a.system_us))),
            minor_faults: rusage.map(|(a, b)| b.minor_faults.saturating_sub(a.minor_faults)),
            voluntary_switches: rusage
                .map(|(a, b)| b.voluntary_switches.saturating_sub(a.voluntary_switches)),
            involuntary_switches: rusage.map(|(a, b)| {
                b.involuntary_switches
                    .saturating_sub(a.involuntary_switches)
            }),
        }
    }
}

fn read_schedstat(file: &File) -> Option<SchedStat> {
    let mut buf = [0u8; 96];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_schedstat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// `/proc/<pid>/task/<tid>/schedstat`: `on_cpu_ns runnable_wait_ns timeslices`.
fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    let on_cpu_ns = fields.next()?.ok()?;
    let runnable_wait_ns = fields.next()?.ok()?;
    Some(SchedStat {
        on_cpu_ns,
        runnable_wait_ns,
    })
}

#[cfg(target_os = "linux")]
fn rusage_thread() -> Option<Rusage> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points to one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0, so the kernel filled it in (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
    Some(Rusage {
        system_us: us(usage.ru_stime),
        minor_faults: usage.ru_minflt as u64,
        voluntary_switches: usage.ru_nvcsw as u64,
        involuntary_switches: usage.ru_nivcsw as u64,
    })
}

#[cfg(not(target_os = "linux"))]
fn rusage_thread() -> Option<Rusage> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_schedstat("1234567 89012 34\n"),
            Some(SchedStat {
                on_cpu_ns: 1_234_567,
                runnable_wait_ns: 89_012
            })
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("a b c"), None);
    }

    #[test]
    fn busy_work_shows_as_cpu_and_sleep_as_blocked() {
        let usage = ThreadUsage::for_current_thread();
        let before = usage.sample();
        let spin_until = Instant::now() + std::time::Duration::from_millis(30);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let spun = usage.sample();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let slept = usage.sample();
        let off = ThreadUsage::disabled();
        let (a, b) = (off.sample(), off.sample());
        assert_eq!(a.span_to(&b).on_cpu_ms, None);
        assert_eq!(a.span_to(&b).system_ms, None);

        let busy = before.span_to(&spun);
        let idle = spun.span_to(&slept);
        assert!(busy.wall_ms >= 30.0 && idle.wall_ms >= 30.0);
        if cfg!(target_os = "linux") {
            // Spinning is mostly on a core or waiting for one (in a VM the host may take some of
            // it); sleeping is neither.
            let (cpu, wait) = (busy.on_cpu_ms.unwrap(), busy.runnable_wait_ms.unwrap());
            assert!(cpu + wait >= busy.wall_ms * 0.5, "{busy:?}");
            assert!(busy.voluntary_switches.unwrap() == 0, "{busy:?}");
            assert!(idle.blocked_or_stolen_ms().unwrap() >= 25.0, "{idle:?}");
            assert!(idle.on_cpu_ms.unwrap() < 5.0, "{idle:?}");
            assert!(idle.voluntary_switches.unwrap() >= 1, "{idle:?}");
        }
    }
}
