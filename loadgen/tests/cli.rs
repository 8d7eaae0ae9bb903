//! The binary: --help everywhere, exit codes 0/1/2, record -> digest -> replay end to end.

use std::process::{Command, Output};

fn loadgen(args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("spawn loadgen")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["record", "run", "replay", "convert", "digest", "report"] {
        let o = loadgen(&[sub, "--help"], dir.path());
        assert_eq!(o.status.code(), Some(0), "{sub} --help");
        assert!(stdout(&o).contains("Usage: loadgen"), "{sub}");
    }
    assert_eq!(loadgen(&["--help"], dir.path()).status.code(), Some(0));
}

#[test]
fn exit_codes_are_0_ok_1_failure_2_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    assert_eq!(loadgen(&["frobnicate"], p).status.code(), Some(2));
    assert_eq!(
        loadgen(&["record", "--events", "x", "--out", "t.csv"], p)
            .status
            .code(),
        Some(2)
    );
    let no_rate = loadgen(&["run", "--mode", "open", "--duration", "1"], p);
    assert_eq!(no_rate.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_rate.stderr).contains("--rate"));
    let endless = loadgen(&["run", "--target", "null"], p);
    assert_eq!(
        endless.status.code(),
        Some(2),
        "a synthetic run needs a bound"
    );
    // Presigning needs request bytes that do not depend on replies: tcp + transfers only.
    let tcp = [
        "run",
        "--target",
        "tcp",
        "--cluster",
        "c",
        "--duration",
        "1",
    ];
    let joint = loadgen(&[&tcp[..], &["--presign", "10"]].concat(), p);
    assert_eq!(joint.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&joint.stderr).contains("--workload transfers"));
    let null = [
        "run",
        "--target",
        "null",
        "--workload",
        "transfers",
        "--duration",
        "1",
    ];
    let not_tcp = loadgen(&[&null[..], &["--presign", "10"]].concat(), p);
    assert_eq!(not_tcp.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_tcp.stderr).contains("--target tcp"));
    let missing = loadgen(&["digest", "missing.csv"], p);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.csv"));
    std::fs::write(p.join("bad.csv"), "nonsense\n").expect("write");
    let bad = loadgen(&["digest", "bad.csv"], p);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1: "));
}

#[test]
fn record_convert_digest_replay_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let rec = loadgen(
        &[
            "record",
            "--events",
            "3000",
            "--loans",
            "100",
            "--sim-rate",
            "30000",
            "--out",
            "t.csv",
        ],
        p,
    );
    assert_eq!(
        rec.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let digest = stdout(&rec)
        .rsplit("digest ")
        .next()
        .expect("digest")
        .trim()
        .to_string();
    assert_eq!(digest.len(), 64);
    assert_eq!(
        loadgen(&["convert", "t.csv", "t.bin"], p).status.code(),
        Some(0)
    );
    let d = loadgen(&["digest", "t.bin"], p);
    assert!(
        stdout(&d).starts_with(&format!("{digest}  3000 events")),
        "{}",
        stdout(&d)
    );

    let replay = loadgen(
        &[
            "replay",
            "--trace",
            "t.bin",
            "--speedup",
            "4",
            "--batch",
            "10",
            "--out",
            "r1",
        ],
        p,
    );
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let text = stdout(&replay);
    assert!(
        text.contains("SUMMARY") && text.contains("3000 committed") && text.contains("p99.99"),
        "{text}"
    );
    let fast = loadgen(
        &["replay", "--trace", "t.csv", "--max-rate", "--out", "r2"],
        p,
    );
    assert_eq!(fast.status.code(), Some(0));
    let run = loadgen(
        &[
            "run",
            "--workload",
            "transfers",
            "--mode",
            "open",
            "--rate",
            "2000",
            "--duration",
            "0.3",
            "--out",
            "r3",
        ],
        p,
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = loadgen(&["report", "r1", "r2", "r3", "--out", "rep"], p);
    assert_eq!(
        report.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert_eq!(stdout(&report).lines().count(), 5);
    assert!(p.join("rep/latency-percentiles.png").is_file());
}

/// `run` and `replay` against `--target inproc`: every event committed, money conserved, the
/// same trace gives the same ledger digest; a warning below the floor is a usage error.
#[test]
fn inproc_target_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let record = [
        "record",
        "--events",
        "2000",
        "--loans",
        "50",
        "--reserve-floor",
        "100000",
        "--out",
        "jl.bin",
    ];
    assert_eq!(loadgen(&record, p).status.code(), Some(0));
    let digest_of = |out: &str| -> String {
        let replay = [
            "replay",
            "--trace",
            "jl.bin",
            "--max-rate",
            "--batch",
            "50",
            "--target",
            "inproc",
            "--map-reserve-floor",
            "100000",
            "--out",
            out,
        ];
        let o = loadgen(&replay, p);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = stdout(&o);
        assert!(text.contains("2000 committed, 0 rejected"), "{text}");
        assert!(
            text.contains("INPROC") && text.contains("credits_posted: true"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.contains("ledger digest"))
            .expect("digest line");
        line.split_whitespace()
            .nth(2)
            .expect("digest")
            .trim_end_matches(';')
            .to_string()
    };
    let first = digest_of("a");
    assert_eq!(first.len(), 32);
    assert_eq!(first, digest_of("b"));
    let run = [
        "run",
        "--workload",
        "transfers",
        "--accounts",
        "100",
        "--events",
        "3000",
        "--batch",
        "100",
        "--target",
        "inproc",
        "--no-sign",
        "--out",
        "c",
    ];
    let o = loadgen(&run, p);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout(&o).contains("3000 committed, 0 rejected"),
        "{}",
        stdout(&o)
    );
    let bad = [
        "run",
        "--events",
        "10",
        "--target",
        "inproc",
        "--map-reserve-floor",
        "10",
        "--map-reserve-warning",
        "5",
        "--out",
        "d",
    ];
    assert_eq!(loadgen(&bad, p).status.code(), Some(2));
}
