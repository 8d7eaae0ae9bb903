//! Result files parse back: `.hgrm` matches the histogram, `.hlog` reads with hdrhistogram's
//! interval-log iterator, summary.json and the report round-trip.

use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use loadgen::driver::{self, RunConfig, Schedule};
use loadgen::output::{self, hgrm, Summary};
use loadgen::progress::Progress;
use loadgen::recorder::new_latency_histogram;
use loadgen::report;
use loadgen::target::StallTarget;
use loadgen::workload::{TransfersConfig, Workload};

fn skewed_histogram() -> Histogram<u64> {
    let mut h = new_latency_histogram();
    for i in 1..=10_000u64 {
        h.record(50_000 + i * 37).expect("in range");
    }
    h.record_n(250_000_000, 20).expect("in range");
    h
}

#[test]
fn hgrm_parses_back_to_the_histogram_values() {
    let h = skewed_histogram();
    let text = hgrm::render(&h, hgrm::NS_PER_MS);
    assert!(text.starts_with("       Value   Percentile TotalCount 1/(1-Percentile)\n\n"));
    let parsed = hgrm::parse(&text).expect("parses");
    assert_eq!(parsed.total_count, h.len());
    assert_eq!(
        (parsed.buckets, parsed.sub_buckets),
        (u64::from(h.buckets()), 2048)
    );
    assert!((parsed.max - h.max() as f64 / 1e6).abs() < 1e-3);
    assert!((parsed.mean - h.mean() / 1e6).abs() < 1e-3);
    assert!((parsed.stdev - h.stdev() / 1e6).abs() < 1e-3);
    // Every row is the histogram's value at that row's percentile (printed to 3 decimals).
    assert!(parsed.rows.len() > 30, "{} rows", parsed.rows.len());
    for row in &parsed.rows {
        let expected = h.value_at_quantile(row.percentile) as f64 / 1e6;
        let tolerance = (expected * 1e-3).max(1e-3);
        assert!(
            (row.value - expected).abs() <= tolerance,
            "{row:?} vs {expected}"
        );
    }
    let last = parsed.rows.last().expect("rows");
    assert_eq!((last.percentile, last.total_count), (1.0, h.len()));
    let counts: Vec<u64> = parsed.rows.iter().map(|r| r.total_count).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative counts");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = parsed.value_at(q).expect("row");
        assert!(
            (v - h.value_at_quantile(q) as f64 / 1e6).abs() < 1e-3 * v.max(1.0),
            "q {q}"
        );
    }
    // The last row has no 1/(1-p) column; the others do.
    let data_lines: Vec<&str> = text
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(data_lines[..data_lines.len() - 1]
        .iter()
        .all(|l| l.split_whitespace().count() == 4));
    assert_eq!(
        data_lines[data_lines.len() - 1].split_whitespace().count(),
        3
    );
    assert!(hgrm::parse("1.0 0.5 3\n").is_err(), "rows need the header");
}

fn stall_run(dir: &std::path::Path, stall_ms: u64) -> Summary {
    let source = Workload::transfers(TransfersConfig {
        accounts: 50,
        ..Default::default()
    })
    .expect("ok");
    let mut target = StallTarget::new(256, 150, Duration::from_millis(stall_ms));
    let config = RunConfig {
        schedule: Schedule::Open {
            events_per_s: 1_000.0,
        },
        batch_events: 1,
        duration: Some(Duration::from_millis(600)),
        events_max: None,
        interval: Duration::from_millis(100),
        drain_timeout: Duration::from_secs(1),
    };
    let run = driver::run(
        Box::new(source.map(Ok)),
        &mut target,
        config,
        &Progress::new(false),
    )
    .expect("run");
    output::write_results(dir, &run, serde_json::json!({ "stall_ms": stall_ms })).expect("write")
}

#[test]
fn result_files_parse_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = stall_run(dir.path(), 100);
    for f in [
        "latency.hlog",
        "latency.hgrm",
        "latency-uncorrected.hgrm",
        "summary.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    for f in ["latency-percentiles", "timeline"] {
        for ext in ["svg", "png"] {
            let meta =
                std::fs::metadata(dir.path().join(format!("{f}.{ext}"))).expect("plot written");
            assert!(meta.len() > 5_000, "{f}.{ext} has content");
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("latency-percentiles.svg")).expect("svg");
    assert!(
        svg.contains("99.9%") && svg.contains("Latency (ms)"),
        "axis labels are rendered"
    );

    let log = std::fs::read(dir.path().join("latency.hlog")).expect("hlog");
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("#[StartTime: ") && text.contains("#[BaseTime: "));
    assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\""));
    let mut deserializer = Deserializer::new();
    let mut total: Histogram<u64> = new_latency_histogram();
    let mut intervals = 0;
    let mut last_start = None;
    for entry in IntervalLogIterator::new(&log) {
        match entry.expect("valid log entry") {
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
            LogEntry::Interval(i) => {
                let bytes = decode_base64(i.encoded_histogram());
                let h: Histogram<u64> = deserializer
                    .deserialize(&mut &bytes[..])
                    .expect("histogram");
                assert!(
                    last_start.is_none_or(|s| s < i.start_timestamp()),
                    "intervals in order"
                );
                last_start = Some(i.start_timestamp());
                assert!(
                    (i.max() - h.max() as f64 / 1e6).abs() < 1e-3 + h.max() as f64 / 1e9,
                    "max in ms"
                );
                total.add(&h).expect("same bounds");
                intervals += 1;
            }
        }
    }
    assert!(
        intervals >= 6,
        "one histogram per 100 ms interval: {intervals}"
    );
    assert_eq!(total.len(), summary.results.totals.requests_done);
    let stored =
        hgrm::parse(&std::fs::read_to_string(dir.path().join("latency.hgrm")).expect("hgrm"))
            .expect("parse");
    assert_eq!(stored.total_count, total.len());
    assert!((stored.max - total.max() as f64 / 1e6).abs() < 1e-3);

    let loaded = output::load_run(dir.path()).expect("load");
    // JSON floats may differ in the last digit; counts and structure are exact.
    assert_eq!(loaded.summary.results.totals, summary.results.totals);
    assert_eq!(loaded.summary.timeline.len(), summary.timeline.len());
    assert_eq!(loaded.summary.config, summary.config);
    assert!((loaded.summary.results.latency_ms.p99 - summary.results.latency_ms.p99).abs() < 1e-9);
    // The stall starts at ~149 ms and ends at ~249 ms: its slow completions belong to the
    // 200..300 ms interval, not to the interval the stalled request was sent in.
    assert!(
        summary.timeline[1].latency_ms_max < 50.0,
        "{:?}",
        summary.timeline[1]
    );
    assert!(summary.timeline[2].latency_ms_max >= 90.0);
    assert!(
        summary.results.latency_ms.p99 > 50.0 && summary.results.latency_ms_uncorrected.p99 < 20.0
    );
}

/// Minimal standard base64 decoder (the interval log's histogram encoding), test-only.
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn report_compares_runs() {
    let root = tempfile::tempdir().expect("tempdir");
    let a = root.path().join("stall-50");
    let b = root.path().join("stall-150");
    stall_run(&a, 50);
    stall_run(&b, 150);
    let out = root.path().join("report");
    let table = report::report(&[a.as_path(), b.as_path()], &out).expect("report");
    assert_eq!(table.lines().count(), 4, "header, rule, two runs:\n{table}");
    assert!(table.contains("| stall-50 |") && table.contains("| stall-150 |"));
    let svg = std::fs::read_to_string(out.join("latency-percentiles.svg")).expect("svg");
    assert!(
        svg.contains("stall-50") && svg.contains("stall-150"),
        "legend names both runs"
    );
    assert!(out.join("timeline.png").is_file() && out.join("report.md").is_file());
    let missing = root.path().join("nope");
    assert!(report::report(&[missing.as_path()], &out).is_err());
}

#[test]
fn default_result_directory_is_a_utc_timestamp() {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        output::default_out_dir(at),
        std::path::Path::new("loadgen-results/20231114T221320Z")
    );
    let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29T00:00:00Z
    assert_eq!(
        output::default_out_dir(leap),
        std::path::Path::new("loadgen-results/20000229T000000Z")
    );
}
