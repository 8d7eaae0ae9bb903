//! Trace files: round trips, digest equality across forms, errors with line numbers.

use std::io::Write;
use std::path::Path;

use loadgen::commands;
use loadgen::op::{AccountKind, Op, TraceEvent};
use loadgen::trace::{self, binary, csv, EventDigest, TraceError, TraceFormat, TraceReader};
use loadgen::workload::{JointLoanConfig, TransfersConfig, Workload};
use proptest::prelude::*;

fn sample_events() -> Vec<TraceEvent> {
    let config = JointLoanConfig {
        seed: 9,
        loans: 200,
        ..Default::default()
    };
    let mut events: Vec<_> = Workload::joint_loan(config)
        .expect("valid")
        .take(5_000)
        .collect();
    let transfers = TransfersConfig {
        accounts: 20,
        ..Default::default()
    };
    events.extend(Workload::transfers(transfers).expect("valid").take(100));
    events
}

fn write_text(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
}

#[test]
fn csv_to_events_to_binary_to_events_is_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = sample_events();
    let csv_path = dir.path().join("t.csv");
    let r = commands::record(
        events.iter().copied(),
        events.len() as u64,
        &csv_path,
        TraceFormat::Csv,
    )
    .expect("record csv");
    assert_eq!(r.events, events.len() as u64);
    let from_csv = trace::read_all(&csv_path).expect("read csv");
    assert_eq!(from_csv, events);

    let bin_path = dir.path().join("t.bin");
    let c = trace::convert(&csv_path, &bin_path, TraceFormat::Bin, false).expect("convert");
    assert_eq!(c.events, events.len() as u64);
    let bytes = std::fs::read(&bin_path).expect("read");
    assert_eq!(
        bytes.len(),
        binary::HEADER_BYTES + events.len() * binary::RECORD_BYTES
    );
    assert_eq!(&bytes[..8], b"RKNTRACE");
    let from_bin = trace::read_all(&bin_path).expect("read bin");
    assert_eq!(from_bin, events);

    // And back: the CSV written from binary is byte-identical to the first.
    let csv2 = dir.path().join("t2.csv");
    trace::convert(&bin_path, &csv2, TraceFormat::Csv, false).expect("convert back");
    assert_eq!(
        std::fs::read(&csv_path).expect("a"),
        std::fs::read(&csv2).expect("b")
    );
    assert_eq!(r.digest, c.digest);
    assert_eq!(r.digest, EventDigest::of(&events));
}

#[test]
fn record_then_digest_matches_the_generator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jl.bin");
    let config = JointLoanConfig {
        seed: 3,
        loans: 100,
        ..Default::default()
    };
    let r = commands::record(
        Workload::joint_loan(config.clone()).expect("ok"),
        3_000,
        &path,
        TraceFormat::Bin,
    )
    .expect("record");
    let regenerated: Vec<_> = Workload::joint_loan(config)
        .expect("ok")
        .take(3_000)
        .collect();
    let (count, digest, skipped) = commands::digest_file(&path, false).expect("digest");
    assert_eq!((count, skipped), (3_000, 0));
    assert_eq!(digest, EventDigest::of(&regenerated));
    assert_eq!(digest, r.digest);
}

const GOOD_LINE: &str = "100,0,top_up,,5,,,,,700,,,,,";

fn csv_with(lines: &[&str]) -> String {
    let mut s = format!("{}\n", csv::HEADER);
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn first_error(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    write_text(&path, text);
    match trace::read_all(&path) {
        Err(e) => e.to_string(),
        Ok(events) => panic!("expected an error, read {} events", events.len()),
    }
}

#[test]
fn malformed_csv_lines_report_their_line_number() {
    assert_eq!(
        parse_one(GOOD_LINE),
        Op::TopUp {
            reserve_account: 5,
            amount: 700
        }
    );
    let cases = [
        (
            "100,0,top_up,,5,,,,,x7,,,,,",
            "line 3: amount: 'x7' is not an unsigned integer",
        ),
        ("100,0,fly,,5,,,,,7,,,,,", "line 3: unknown op 'fly'"),
        (
            "100,0,top_up,,5,,,,,7",
            "line 3: expected 15 fields, found 10",
        ),
        (
            "100,0,top_up,,,,,,,7,,,,,",
            "line 3: top_up: reserve is required",
        ),
        (
            "100,0,top_up,9,5,,,,,7,,,,,",
            "line 3: top_up: account must be empty, found '9'",
        ),
        (
            "100,70000,top_up,,5,,,,,7,,,,,",
            "line 3: institution: '70000' is not an integer 0..=65535",
        ),
        (
            "1,0,create_account,1,,,,,,,,,,vault,",
            "line 3: account_kind: 'vault' is not reserve|borrower|operating",
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(first_error(&csv_with(&[GOOD_LINE, bad])), expected);
    }
    // Comments and blank lines count as lines.
    let text = format!("# a comment\n{}\n\n{GOOD_LINE}\nnot,a,line\n", csv::HEADER);
    assert_eq!(first_error(&text), "line 5: expected 15 fields, found 3");
    assert_eq!(
        first_error("ts,op\n1,2\n"),
        format!("line 1: expected the header line '{}'", csv::HEADER)
    );
}

fn parse_one(line: &str) -> Op {
    csv::parse_line(line).expect("valid line").op
}

#[test]
fn skip_bad_lines_skips_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.csv");
    write_text(
        &path,
        &csv_with(&[
            GOOD_LINE,
            "garbage",
            GOOD_LINE,
            "1,0,repay,,,,,,,,,,,,",
            GOOD_LINE,
        ]),
    );
    let mut reader = TraceReader::open(&path, true).expect("open");
    let events: Vec<_> = reader
        .by_ref()
        .collect::<Result<_, _>>()
        .expect("bad lines skipped");
    assert_eq!(events.len(), 3);
    assert_eq!(reader.skipped(), 2);
    let (count, _, skipped) = commands::digest_file(&path, true).expect("digest");
    assert_eq!((count, skipped), (3, 2));
}

#[test]
fn malformed_binary_traces_are_refused_with_the_record_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = sample_events()[..10].to_vec();
    let path = dir.path().join("t.bin");
    commands::record(events.iter().copied(), 10, &path, TraceFormat::Bin).expect("record");
    let good = std::fs::read(&path).expect("read");

    let mut bad_op = good.clone();
    bad_op[binary::HEADER_BYTES + 3 * binary::RECORD_BYTES + 50] = 99;
    let truncated = good[..good.len() - 10].to_vec();
    let mut bad_version = good.clone();
    bad_version[8] = 7;
    for (bytes, expected) in [
        (bad_op.clone(), "record 3: unknown op code 99"),
        (truncated, "record 9: truncated"),
        (bad_version, "bad binary trace header: version 7"),
    ] {
        let p = dir.path().join("bad.bin");
        std::fs::write(&p, &bytes).expect("write");
        let err = trace::read_all(&p).expect_err("must fail").to_string();
        assert!(
            err.starts_with(expected),
            "{err} should start with {expected}"
        );
    }
    let p = dir.path().join("skip.bin");
    std::fs::write(&p, &bad_op).expect("write");
    let (count, _, skipped) = commands::digest_file(&p, true).expect("skips the bad record");
    assert_eq!((count, skipped), (9, 1));
}

#[test]
fn missing_file_is_an_open_error_with_the_path() {
    let err = TraceReader::open(Path::new("/nonexistent/x.csv"), false)
        .err()
        .expect("fails");
    assert!(matches!(err, TraceError::Open { .. }));
    assert!(err.to_string().starts_with("/nonexistent/x.csv: "));
}

fn arb_op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(AccountKind::Reserve),
        Just(AccountKind::Borrower),
        Just(AccountKind::Operating)
    ];
    prop_oneof![
        (any::<u64>(), kind).prop_map(|(account, kind)| Op::CreateAccount { account, kind }),
        (any::<[u64; 5]>(), 0u16..=10_000).prop_map(|(v, bps)| Op::CreateLoan {
            loan: v[0],
            borrower: v[1],
            lead_reserve: v[2],
            partner_reserve: v[3],
            limit: v[4],
            partner_share_bps: bps
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(r, a)| Op::TopUp {
            reserve_account: r,
            amount: a
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(loan, amount)| Op::Disburse { loan, amount }),
        any::<[u64; 3]>().prop_map(|v| Op::Repay {
            loan: v[0],
            principal: v[1],
            interest: v[2]
        }),
        any::<[u64; 3]>().prop_map(|v| Op::Statement {
            account: v[0],
            period_start_ns: v[1],
            period_end_ns: v[2]
        }),
        any::<[u64; 3]>().prop_map(|v| Op::Transfer {
            debit: v[0],
            credit: v[1],
            amount: v[2]
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_event_round_trips_through_both_forms(ts in any::<u64>(), inst in any::<u16>(), op in arb_op()) {
        let event = TraceEvent { timestamp_ns: ts, institution: inst, op };
        let record = binary::encode_record(&event);
        prop_assert_eq!(binary::decode_record(&record).expect("decodes"), event);
        let mut line = String::new();
        csv::format_line(&event, &mut line);
        prop_assert_eq!(csv::parse_line(line.trim_end()).expect("parses"), event);
    }
}
