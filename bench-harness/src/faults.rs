//! The nodes' page faults during a timed phase: the minor faults of this process's child
//! processes (the cluster's nodes), from `/proc/<pid>/stat`, read at the phase's start and end.
//!
//! A node that hands freed memory back to the kernel faults it in again later, zeroed, and on a VM
//! that reports free pages to its host the host must back it again too. That cost does not show
//! as any one stage's time; it showed here as 3,400-5,600 faults a second on four nodes before the
//! allocator kept freed memory, and 1-4 after in 18 of 19 samples, 257 in the other
//! (docs/CAPACITY.md, session 18). So every e2e run reports it beside the steal and the probes.

use std::time::Instant;

/// `(ppid, minor faults)` from one `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so the fields are counted from the last `)`. None if malformed.
pub fn parse_stat(line: &str) -> Option<(u32, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp session tty_nr tpgid flags minflt(10).
    let ppid = fields.get(1)?.parse().ok()?;
    let minflt = fields.get(7)?.parse().ok()?;
    Some((ppid, minflt))
}

/// Summed minor faults of the processes whose parent is `parent` (None if `/proc` cannot be
/// listed).
fn children_minor_faults(parent: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may exit between the listing and the read: skipped.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((ppid, minflt)) = parse_stat(&stat) {
            if ppid == parent {
                total += minflt;
            }
        }
    }
    Some(total)
}

/// A reading at the phase's start.
pub struct FaultCounter {
    started: Instant,
    faults: Option<u64>,
}

/// The nodes' minor faults over a phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    pub faults: u64,
    pub per_s: f64,
}

impl FaultCounter {
    pub fn start() -> FaultCounter {
        FaultCounter {
            started: Instant::now(),
            faults: children_minor_faults(std::process::id()),
        }
    }

    /// The nodes' minor faults since `start` (None if `/proc` could not be read, or a node
    /// restarted and the sum went down).
    pub fn finish(self) -> Option<Faults> {
        let end = children_minor_faults(std::process::id())?;
        let faults = end.checked_sub(self.faults?)?;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        Some(Faults {
            faults,
            per_s: faults as f64 / seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    const CHILD: &str = "RECKON_FAULTS_TEST_CHILD";

    #[test]
    fn fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (reckon) S 4200 4242 4200 0 -1 4194560 1234567 0 12 0 900 100 0 0 20 0 \
                    31 0 123 456 789\n";
        assert_eq!(parse_stat(line), Some((4200, 1_234_567)));
        let odd = "7 (a) b (c) R 1 7 7 0 -1 0 99 0 0 0 0 0 0 0 20 0 1 0 5 6 7\n";
        assert_eq!(
            parse_stat(odd),
            Some((1, 99)),
            "a name with spaces and parentheses"
        );
        assert_eq!(parse_stat("7 (short) R 1 7"), None, "too few fields");
        assert_eq!(parse_stat("no parenthesis at all"), None);
    }

    /// This test binary runs itself as a child that fills 64 MiB of fresh memory, says so, and
    /// waits: the counter must see at least the 32 faults of 2 MiB huge
    /// pages (16,384 with 4 KiB pages).
    #[test]
    fn a_child_that_touches_fresh_memory_is_counted() {
        if std::env::var_os(CHILD).is_some() {
            let memory = vec![1u8; 64 << 20];
            std::hint::black_box(&memory);
            println!("touched");
            std::thread::sleep(std::time::Duration::from_secs(5));
            return;
        }
        let counter = FaultCounter::start();
        let name = "faults::tests::a_child_that_touches_fresh_memory_is_counted";
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the child");
        let stdout = child.stdout.take().expect("piped");
        let touched = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("touched"));
        let faults = counter.finish();
        let _ = child.kill();
        let _ = child.wait();
        assert!(touched, "the child ran");
        let faults = faults.expect("/proc readable");
        assert!(faults.faults >= 32, "{faults:?}");
        assert!(faults.per_s > 0.0);
    }
}
