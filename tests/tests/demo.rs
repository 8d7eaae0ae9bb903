//! `reckon demo --duration 3 --out DIR`: a whole consortium started, driven and reported by one
//! command, with its histogram and plot written.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_reckon-under-test");

/// The number before "committed operations/s" on the throughput line.
fn throughput(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.starts_with("throughput:"))?;
    let figure = line
        .trim_start_matches("throughput:")
        .split_whitespace()
        .next()?;
    figure.parse().ok()
}

#[test]
fn demo_runs_a_consortium_and_reports() {
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let output = Command::new(BIN)
        .args(["demo", "--duration", "3", "--out"])
        .arg(out.path())
        .output()
        .expect("reckon demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(stdout.contains("reserve positions"), "{stdout}");
    assert!(stdout.contains("reconciliation results"), "{stdout}");
    assert!(stdout.contains("MATCHED"), "{stdout}");
    assert!(stdout.contains("ledger digest per node"), "{stdout}");
    let ops = throughput(&stdout).expect("a throughput line");
    assert!(ops > 0.0, "{stdout}");
    for file in ["latency.hgrm", "latency.png", "latency.svg", "summary.json"] {
        let len = std::fs::metadata(out.path().join(file)).map(|m| m.len());
        assert!(matches!(len, Ok(n) if n > 0), "{file}: {len:?}");
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("summary.json")).expect("summary"),
    )
    .expect("summary JSON");
    assert!(summary["operations_per_second"].as_f64().unwrap_or(0.0) > 0.0);
}
