//! Crash test: a child process (this test binary, re-invoked in child mode) appends blocks with up
//! to 16 in flight and prints each acknowledged height and hash; the parent SIGKILLs it at a random
//! moment, reopens the log and checks that every acknowledged block is present and intact.

mod storage_common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::storage::{BlockLog, WriteBackend};
use rand::{Rng, SeedableRng};
use storage_common::*;

const CHILD_DIR_ENV: &str = "RECKON_STORAGE_CRASH_CHILD_DIR";
const CHILD_BACKEND_ENV: &str = "RECKON_STORAGE_CRASH_CHILD_PWRITE";
const ITERATIONS: u64 = 24;
const IN_FLIGHT_MAX: usize = 16;
const TOTAL_BUDGET: Duration = Duration::from_secs(40);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Child mode: runs only when the parent sets CHILD_DIR_ENV; otherwise a no-op test.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let backend = if std::env::var(CHILD_BACKEND_ENV).is_ok() {
        WriteBackend::Pwrite
    } else {
        WriteBackend::Auto
    };
    let mut log = BlockLog::open(std::path::Path::new(&dir), config(backend)).expect("child open");
    let run = std::process::id() as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(run);
    let (mut height, mut parent) = log.last().map_or((1, [0; 32]), |(h, hash)| (h + 1, hash));
    let mut in_flight = VecDeque::new();
    let stdout = std::io::stdout();
    loop {
        let len = rng.gen_range(100..40_000);
        let ticket = log
            .append(height, &parent, &payload(height, run, len))
            .expect("append");
        parent = ticket.hash();
        height += 1;
        in_flight.push_back(ticket);
        while let Some(front) = in_flight.front() {
            if in_flight.len() < IN_FLIGHT_MAX && !front.is_durable() {
                break;
            }
            front.wait().expect("durable");
            let mut out = stdout.lock();
            writeln!(out, "ACK {} {}", front.height(), hex(&front.hash())).expect("print");
            out.flush().expect("flush");
            in_flight.pop_front();
        }
    }
}

fn run_child(dir: &std::path::Path, pwrite: bool, kill_after: Duration) -> Vec<(u64, String)> {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "--exact",
        "crash_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR_ENV, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if pwrite {
        cmd.env(CHILD_BACKEND_ENV, "1");
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            if parts.next() == Some("ACK") {
                let h: u64 = parts.next().and_then(|h| h.parse().ok()).expect("height");
                acks.push((h, parts.next().expect("hash").to_string()));
            }
        }
        acks
    });
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    reader.join().expect("reader")
}

#[test]
fn every_acknowledged_block_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    let started = Instant::now();
    let (mut total_acks, mut truncations, mut iterations) = (0usize, 0usize, 0u64);
    let mut all_acks: std::collections::BTreeMap<u64, String> = Default::default();
    while iterations < ITERATIONS && started.elapsed() < TOTAL_BUDGET {
        let kill_after = Duration::from_millis(rng.gen_range(100..600));
        let acks = run_child(dir.path(), iterations % 2 == 1, kill_after);
        total_acks += acks.len();
        for (h, hash) in &acks {
            all_acks.insert(*h, hash.clone());
        }
        let log =
            BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("reopen after SIGKILL");
        truncations += log.recovery_report().dropped.is_some() as usize;
        let last = log.last().map_or(0, |l| l.0);
        for (h, hash) in &all_acks {
            assert!(
                *h <= last,
                "iteration {iterations}: acknowledged height {h} lost (last {last})"
            );
            assert_eq!(
                &hex(&log.hash_of(*h).expect("hash")),
                hash,
                "height {h} changed"
            );
            log.read_verified(*h).expect("checksum ok");
        }
        iterations += 1;
    }
    eprintln!(
        "crash test: {iterations} kills, {total_acks} acks checked, {truncations} torn tails"
    );
    assert!(iterations >= 10, "ran only {iterations} iterations");
    assert!(
        total_acks > 100,
        "children acknowledged too little: {total_acks}"
    );
}
