//! The inproc target against the real ledger: replay determinism, zero unexpected rejections,
//! exact rejection codes where a trace intends them, conservation, matched statements.

use engine::types::ResultCode;
use loadgen::driver::{self, RunConfig, Schedule};
use loadgen::engine_map::{engine_institution, MapConfig};
use loadgen::inproc::{InprocConfig, InprocTarget};
use loadgen::op::{AccountKind, Op, OpKind, TraceEvent};
use loadgen::progress::Progress;
use loadgen::target::{Outcome, Rejection};
use loadgen::trace::{self, TraceFormat, TraceReader};
use loadgen::workload::{JointLoanConfig, TransfersConfig, Workload};

const FLOOR: u128 = 1_000_000; // 10,000.00
const WARNING: u128 = 2_000_000_000; // 20,000,000.00: above a typical balance, so warnings occur

fn joint_loan_config() -> JointLoanConfig {
    JointLoanConfig {
        seed: 11,
        loans: 150,
        reserve_floor: FLOOR as u64,
        ..JointLoanConfig::default()
    }
}

fn joint_loan(events: usize) -> Vec<TraceEvent> {
    let w = Workload::joint_loan(joint_loan_config()).expect("valid");
    w.take(events).collect()
}

fn target(sign: bool) -> InprocTarget {
    InprocTarget::new(InprocConfig {
        map: MapConfig {
            ledger: 1,
            reserve_floor: FLOOR,
            reserve_warning: WARNING,
            ..MapConfig::default()
        },
        sign,
        ..InprocConfig::default()
    })
    .expect("config")
}

/// Applies `events` in batches of `batch` directly (no driver); returns the target and the
/// rejections summed over all batches.
fn apply(events: &[TraceEvent], batch: usize, sign: bool) -> (InprocTarget, Vec<Rejection>) {
    let mut t = target(sign);
    let mut all: Vec<Rejection> = Vec::new();
    for chunk in events.chunks(batch) {
        match t.execute(chunk).expect("execute") {
            Outcome::Executed { rejections, .. } => {
                for r in rejections {
                    match all.iter_mut().find(|a| a.code == r.code) {
                        Some(a) => a.events += r.events,
                        None => all.push(r),
                    }
                }
            }
            Outcome::Failed { reason } => panic!("failed: {reason}"),
        }
    }
    (t, all)
}

fn statements_all_matched(t: &InprocTarget, institutions: u16) -> usize {
    let mut posted = 0;
    for i in 0..institutions {
        let report = t
            .ledger()
            .reconciliation_report(engine_institution(i), 0, 0);
        for r in &report {
            assert!(r.matched(), "statement mismatched: {r:?}");
        }
        posted += report.len();
    }
    posted
}

#[test]
fn recorded_trace_replays_to_the_same_ledger_digest() {
    let events = joint_loan(6_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jl.bin");
    loadgen::commands::record(events.iter().copied(), 6_000, &path, TraceFormat::Bin)
        .expect("record");
    let replay = || {
        let mut t = target(true);
        let config = RunConfig {
            schedule: Schedule::Closed { in_flight: 8 },
            batch_events: 64,
            duration: None,
            events_max: None,
            interval: std::time::Duration::from_millis(100),
            drain_timeout: std::time::Duration::from_secs(5),
        };
        let reader = TraceReader::open(&path, false).expect("open");
        let run =
            driver::run(Box::new(reader), &mut t, config, &Progress::new(false)).expect("run");
        assert_eq!(run.recorder.totals.events_sent, 6_000);
        assert_eq!(run.recorder.totals.events_committed, 6_000);
        t.ledger().digest()
    };
    let first = replay();
    assert_eq!(first, replay(), "two replays, two digests");
    let (direct, rejections) = apply(&trace::read_all(&path).expect("read"), 64, false);
    assert!(rejections.is_empty());
    assert_eq!(first, direct.ledger().digest(), "replay != direct apply");
    assert_ne!(first, 0);
}

#[test]
fn joint_loan_on_the_real_ledger_has_no_unexpected_rejections() {
    let events = joint_loan(12_000);
    let (t, rejections) = apply(&events, 100, true);
    assert_eq!(rejections, vec![], "no loadgen event refused");
    // Engine codes: only the warning (a success) may appear, and it does with this threshold.
    let codes = &t.stats().codes;
    assert_eq!(
        codes.keys().copied().collect::<Vec<_>>(),
        vec![ResultCode::OkReserveBelowWarning as u32]
    );
    let totals = t.ledger().totals();
    assert_eq!(
        totals.debits_posted, totals.credits_posted,
        "money conserved"
    );
    assert_eq!(totals.debits_pending, 0);
    let statements = events
        .iter()
        .filter(|e| e.op.kind() == OpKind::Statement)
        .count();
    assert!(statements > 1_000);
    assert_eq!(
        statements_all_matched(&t, 4),
        statements,
        "every statement posted and matched"
    );
    // One signature per request, several events per request.
    assert_eq!(t.stats().signatures, t.stats().requests);
    assert!(t.stats().requests < events.len() as u64 / 2);
}

fn event(i: u16, op: Op) -> TraceEvent {
    TraceEvent {
        timestamp_ns: 0,
        institution: i,
        op,
    }
}

/// A hand-made trace that intends two refusals: a disbursement past the partner reserve's floor
/// and a repayment of a loan that does not exist. Everything else must apply, and the statement
/// of the reserve afterwards must still match (the refused legs were never booked).
#[test]
fn intended_refusals_are_counted_exactly() {
    let reserve = |account| Op::CreateAccount {
        account,
        kind: AccountKind::Reserve,
    };
    let events = vec![
        event(0, reserve(1)),
        event(1, reserve(2)),
        event(
            0,
            Op::CreateAccount {
                account: 3,
                kind: AccountKind::Borrower,
            },
        ),
        event(
            0,
            Op::CreateLoan {
                loan: 7,
                borrower: 3,
                lead_reserve: 1,
                partner_reserve: 2,
                limit: 100_000_000,
                partner_share_bps: 8_000,
            },
        ),
        event(
            0,
            Op::TopUp {
                reserve_account: 1,
                amount: 50_000_000,
            },
        ),
        event(
            1,
            Op::TopUp {
                reserve_account: 2,
                amount: 5_000_000,
            },
        ),
        // Partner part 4,000,000 of 5,000,000: leaves 1,000,000 = the floor, allowed.
        event(
            0,
            Op::Disburse {
                loan: 7,
                amount: 5_000_000,
            },
        ),
        // Any further partner draw breaches the floor.
        event(
            0,
            Op::Disburse {
                loan: 7,
                amount: 1_000_000,
            },
        ),
        event(
            0,
            Op::Repay {
                loan: 99,
                principal: 10_000,
                interest: 0,
            },
        ),
        event(
            0,
            Op::Repay {
                loan: 7,
                principal: 1_000_000,
                interest: 10_000,
            },
        ),
        event(
            1,
            Op::Statement {
                account: 2,
                period_start_ns: 0,
                period_end_ns: 1,
            },
        ),
    ];
    for batch in [1, 4, events.len()] {
        let (t, mut rejections) = apply(&events, batch, true);
        rejections.sort_by_key(|r| r.code);
        let expected = vec![
            Rejection {
                code: ResultCode::LoanNotFound as u32,
                events: 1,
            },
            Rejection {
                code: ResultCode::ReserveFloorBreached as u32,
                events: 1,
            },
        ];
        assert_eq!(rejections, expected, "batch {batch}");
        assert_eq!(statements_all_matched(&t, 2), 1, "batch {batch}");
        let totals = t.ledger().totals();
        assert_eq!(totals.debits_posted, totals.credits_posted);
        // The partner reserve ends at its floor plus what the repayment paid back.
        let positions = t.ledger().reserve_position(engine_institution(1));
        assert_eq!(positions.len(), 1);
        assert_eq!(positions[0].balance, (FLOOR + 800_000 + 8_000) as i128);
    }
}

#[test]
fn transfers_group_into_one_request_per_institution() {
    let config = TransfersConfig {
        accounts: 2_000,
        ..TransfersConfig::default()
    };
    let events: Vec<TraceEvent> = Workload::transfers(config)
        .expect("valid")
        .take(12_000)
        .collect();
    let (t, rejections) = apply(&events, 1_000, false);
    assert!(rejections.is_empty());
    assert!(t.stats().codes.is_empty());
    // 12 batches x 4 institutions, plus the settlement/setup splits of the first batches.
    assert!(
        t.stats().requests <= 12 * 4 + 8,
        "requests {}",
        t.stats().requests
    );
    let totals = t.ledger().totals();
    assert_eq!(totals.debits_posted, totals.credits_posted);
    assert_eq!(totals.transfers_count, 10_000);
}

/// Results come from the wire for a TCP target: malformed lists are errors, never panics.
#[test]
fn malformed_results_are_refused() {
    use engine::types::EventResult;
    use loadgen::engine_map::{record_results, MapError, Mapper};
    let events = joint_loan(40);
    let mut mapper = Mapper::new(MapConfig::default()).expect("config");
    let requests = mapper.requests(&events).expect("map");
    let r = &requests[0];
    let bad = |index| EventResult {
        index,
        code: ResultCode::Exists,
    };
    let past_end = [bad(r.events() as u32)];
    let repeated = [bad(0), bad(0)];
    for results in [&past_end[..], &repeated[..]] {
        assert!(matches!(
            mapper.settle(r, results),
            Err(MapError::BadResults { .. })
        ));
        let mut codes = vec![0u32; events.len()];
        assert!(record_results(r, results, &mut codes).is_err());
        assert!(codes.iter().all(|&c| c == 0));
    }
    let mut codes = vec![0u32; events.len()];
    record_results(r, &[bad(0)], &mut codes).expect("well-formed");
    assert_eq!(
        codes
            .iter()
            .filter(|&&c| c == ResultCode::Exists as u32)
            .count(),
        usize::from(r.sources[0] != loadgen::engine_map::SOURCE_DERIVED)
    );
}
