//! loadgen's TCP target against a real 4-node cluster: short closed-loop transfers and
//! joint-loan runs commit with nothing rejected or failed, every node ends on the same ledger
//! digest and every statement reconciles; a transfers run whose first requests were presigned
//! commits them and then signs live; a recorded joint-loan trace replayed over TCP leaves
//! every account with the balances the same trace leaves in the in-process ledger.

use std::path::Path;
use std::time::Duration;

use engine::codec::Record;
use engine::types::{Account, Query, Reconciliation, EVENT_BYTES};
use loadgen::commands;
use loadgen::driver::{self, EventSource, RunConfig, Schedule};
use loadgen::engine_map::{settlement_account, SETTLEMENT_ACCOUNT_BASE};
use loadgen::inproc::{InprocConfig, InprocTarget};
use loadgen::op::{Op, TraceEvent};
use loadgen::progress::Progress;
use loadgen::tcp::{PresignConfig, SendOrder, TcpConfig, TcpStats, TcpTarget};
use loadgen::trace::{TraceFormat, TraceReader};
use loadgen::workload::{JointLoanConfig, TransfersConfig, Workload};
use reckon_tests::{wait_until, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_reckon-under-test");

fn started(nodes: usize) -> Cluster {
    let mut cluster = Cluster::init(Path::new(BIN), nodes);
    cluster.start_all();
    let ready = wait_until(Duration::from_secs(30), || {
        let h: Vec<u64> = (0..nodes).filter_map(|i| cluster.height(i)).collect();
        (h.len() == nodes && h.iter().all(|h| *h >= 2)).then_some(())
    });
    assert!(
        ready.is_some(),
        "cluster did not start:\n{}",
        cluster.log(0)
    );
    cluster
}

/// Waits until all nodes report one ledger digest at one height.
fn agreed_digest(cluster: &Cluster) -> Option<String> {
    wait_until(Duration::from_secs(30), || {
        let statuses: Vec<serde_json::Value> = (0..cluster.nodes)
            .filter_map(|i| cluster.status(i))
            .collect();
        if statuses.len() != cluster.nodes {
            return None;
        }
        // Heights keep moving (an idle chain still commits empty blocks), but once the load has
        // stopped and every node has executed every committed request, the ledger digests are one.
        let first = &statuses[0];
        let same = statuses
            .iter()
            .all(|s| s["ledger_digest"] == first["ledger_digest"]);
        same.then(|| first["ledger_digest"].as_str().map(String::from))
            .flatten()
    })
}

#[test]
fn loadgen_tcp_run_commits_and_nodes_agree() {
    let cluster = started(4);
    let mut target = TcpTarget::connect(&TcpConfig {
        cluster: cluster.out(),
        connections: None,
        pipeline: 2,
        reply_timeout: Duration::from_secs(20),
        map: TcpConfig::map_default(),
        order: SendOrder::Exact,
    })
    .expect("tcp target connects");
    let workload = Workload::transfers(TransfersConfig {
        accounts: 200,
        ..TransfersConfig::default()
    })
    .expect("workload");
    let config = RunConfig {
        schedule: Schedule::Closed { in_flight: 16 },
        batch_events: 50,
        duration: Some(Duration::from_secs(3)),
        events_max: Some(2_000),
        interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(20),
    };
    let run = driver::run(
        Box::new(workload.map(Ok)),
        &mut target,
        config,
        &Progress::new(false),
    )
    .expect("run");
    drop(target);
    let t = &run.recorder.totals;
    assert!(t.events_committed > 0, "nothing committed: {t:?}");
    assert_eq!(t.events_rejected, 0, "unexpected rejections: {t:?}");
    assert_eq!(t.requests_failed, 0, "failed requests: {t:?}");
    assert_eq!(run.requests_unfinished, 0, "unfinished: {t:?}");
    let digest = agreed_digest(&cluster);
    assert!(digest.is_some(), "nodes do not agree on the ledger digest");
}

/// Setup phase, then 400 of the 600 transfer requests presigned, then a closed-loop run of all
/// 600 (one transfer each): the presigned ones commit, the last 200 are signed live.
#[test]
fn loadgen_tcp_presigned_transfers_commit_then_live_signing_resumes() {
    let cluster = started(4);
    let mut target = tcp_target(&cluster);
    let workload = Workload::transfers(TransfersConfig {
        accounts: 200,
        ..TransfersConfig::default()
    })
    .expect("workload");
    let (setup, rest) = target
        .setup(Box::new(workload.map(Ok)), Duration::from_secs(60))
        .expect("setup");
    assert_eq!(setup.events_committed, setup.events, "setup: {setup:?}");
    let config = RunConfig {
        schedule: Schedule::Closed { in_flight: 16 },
        batch_events: 1,
        duration: Some(Duration::from_secs(60)),
        events_max: Some(600),
        interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(30),
    };
    let presign = PresignConfig {
        requests: 400,
        batch_events: config.batch_events,
        events_max: config.events_max,
    };
    let (report, rest) = target.presign(rest, &presign).expect("presign");
    assert_eq!(report.requests, 400, "{report:?}");
    let run = driver::run(rest, &mut target, config, &Progress::new(false)).expect("run");
    let stats = target.stats().clone();
    assert_eq!(target.presigned_unsent(), 0);
    drop(target);
    assert_clean(&run, &stats);
    assert_eq!(run.recorder.totals.events_committed, 600);
    assert_eq!(stats.requests_presigned, 400, "{stats:?}");
    assert_eq!(stats.requests_signed_live, 200, "{stats:?}");
    assert!(stats.requests_signed_setup > 0, "{stats:?}");
    let json = run.target_stats.expect("tcp stats in the run result");
    assert_eq!(json["requests_presigned"], 400);
    assert_eq!(json["requests_signed_live"], 200);
    assert!(
        agreed_digest(&cluster).is_some(),
        "nodes do not agree on the ledger digest"
    );
}

fn tcp_target(cluster: &Cluster) -> TcpTarget {
    TcpTarget::connect(&TcpConfig {
        pipeline: 4,
        reply_timeout: Duration::from_secs(20),
        ..TcpConfig::new(cluster.out())
    })
    .expect("tcp target connects")
}

fn joint_loan() -> Workload {
    Workload::joint_loan(JointLoanConfig {
        seed: 7,
        reserves_per_institution: 2,
        loans: 40,
        ..JointLoanConfig::default()
    })
    .expect("workload")
}

/// Runs the setup prefix (no rejections, no failures), then `schedule` over the rest.
fn setup_and_run(
    target: &mut TcpTarget,
    source: EventSource<'_>,
    schedule: Schedule,
    events_max: u64,
) -> driver::RunResult {
    let (setup, rest) = target
        .setup(source, Duration::from_secs(60))
        .expect("setup");
    assert!(setup.events > 0, "no setup events: {setup:?}");
    assert_eq!(setup.events_committed, setup.events, "setup: {setup:?}");
    assert_eq!(setup.batches_failed, 0, "setup: {setup:?}");
    driver::run(
        rest,
        target,
        short_run(schedule, events_max),
        &Progress::new(false),
    )
    .expect("run")
}

/// At most 4 s or `events_max` events in requests of 20.
fn short_run(schedule: Schedule, events_max: u64) -> RunConfig {
    RunConfig {
        schedule,
        batch_events: 20,
        duration: Some(Duration::from_secs(4)),
        events_max: Some(events_max),
        interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(30),
    }
}

fn assert_clean(run: &driver::RunResult, stats: &TcpStats) {
    let t = &run.recorder.totals;
    assert!(t.events_committed > 0, "nothing committed: {t:?}");
    assert_eq!(
        t.events_rejected, 0,
        "unexpected rejections: {t:?} {stats:?}"
    );
    assert_eq!(t.requests_failed, 0, "failed requests: {t:?} {stats:?}");
    assert_eq!(run.requests_unfinished, 0, "unfinished: {t:?}");
}

/// Every statement of every bank on node 0, matched or not.
fn reconciliations(cluster: &Cluster) -> Vec<Reconciliation> {
    let mut out = Vec::new();
    for bank in 1..=4u32 {
        let mut client = cluster.client(0, bank);
        let signer = cluster.signer(bank);
        let query = Query {
            institution: bank,
            ..Query::default()
        };
        let request = signer
            .reconciliation_report(u128::from(bank) << 100, query)
            .expect("sign");
        let reply = client.query(&request).expect("reconciliation report").reply;
        for chunk in reply.chunks_exact(EVENT_BYTES) {
            let bytes: &[u8; EVENT_BYTES] = chunk.try_into().expect("record");
            out.push(Reconciliation::decode(bytes).expect("reconciliation record"));
        }
    }
    out
}

#[test]
fn loadgen_tcp_joint_loan_commits_and_nodes_agree() {
    let cluster = started(4);
    let mut target = tcp_target(&cluster);
    let run = setup_and_run(
        &mut target,
        Box::new(joint_loan().map(Ok)),
        Schedule::Closed { in_flight: 16 },
        1_500,
    );
    let stats = target.stats().clone();
    drop(target);
    assert_clean(&run, &stats);
    assert!(stats.statements > 0, "no statements: {stats:?}");
    let digest = agreed_digest(&cluster);
    assert!(digest.is_some(), "nodes do not agree on the ledger digest");
    // Statement periods come from commit timestamps: every statement reconciles as matched.
    let recs = reconciliations(&cluster);
    assert_eq!(recs.len() as u64, stats.statements, "statements posted");
    let mismatched = recs.iter().filter(|r| !r.matched()).count();
    assert_eq!(
        mismatched,
        0,
        "mismatched statements: {mismatched} of {}",
        recs.len()
    );
}

#[test]
fn loadgen_tcp_relaxed_order_never_waits_and_nodes_agree() {
    let cluster = started(4);
    let mut target = TcpTarget::connect(&TcpConfig {
        pipeline: 4,
        reply_timeout: Duration::from_secs(20),
        order: SendOrder::Relaxed,
        ..TcpConfig::new(cluster.out())
    })
    .expect("tcp target connects");
    let (setup, rest) = target
        .setup(Box::new(joint_loan().map(Ok)), Duration::from_secs(60))
        .expect("setup");
    // The setup phase is exact whatever the order: its events build on each other.
    assert_eq!(setup.events_committed, setup.events, "setup: {setup:?}");
    let waits_in_setup = target.stats().waits;
    let config = short_run(Schedule::Closed { in_flight: 16 }, 1_500);
    let run = driver::run(rest, &mut target, config, &Progress::new(false)).expect("run");
    let stats = target.stats().clone();
    drop(target);
    let t = &run.recorder.totals;
    // The cluster may order conflicting requests differently from the trace: rejections by code
    // are allowed here, lost or failed requests are not.
    assert!(t.events_committed > 0, "nothing committed: {t:?}");
    assert_eq!(t.requests_failed, 0, "failed requests: {t:?} {stats:?}");
    assert_eq!(run.requests_unfinished, 0, "unfinished: {t:?}");
    assert_eq!(
        stats.waits, waits_in_setup,
        "relaxed order waited: {stats:?}"
    );
    assert_eq!(stats.requests_committed, stats.requests_sent, "{stats:?}");
    assert!(
        agreed_digest(&cluster).is_some(),
        "nodes do not agree on the ledger digest"
    );
}

/// `(account id without the mapping's id base, debits_posted, credits_posted)` of `ids`.
type Balances = Vec<(u128, u128, u128)>;

fn cluster_balances(cluster: &Cluster, ids: &[u128], base: u128) -> Balances {
    let mut out = Vec::new();
    for bank in 1..=4u32 {
        let mut client = cluster.client(1, bank);
        let signer = cluster.signer(bank);
        let wanted: Vec<u128> = ids.iter().map(|id| rebase(*id, base)).collect();
        let request = signer
            .lookup_accounts((u128::from(bank) << 100) + 1, &wanted)
            .expect("sign");
        let reply = client.query(&request).expect("lookup accounts").reply;
        for chunk in reply.chunks_exact(EVENT_BYTES) {
            let bytes: &[u8; EVENT_BYTES] = chunk.try_into().expect("record");
            let a = Account::decode(bytes).expect("account record");
            out.push((unbase(a.id, base), a.debits_posted, a.credits_posted));
        }
    }
    out.sort();
    out
}

/// Settlement accounts (2^64 + n) carry no id base.
fn rebase(id: u128, base: u128) -> u128 {
    if id >= SETTLEMENT_ACCOUNT_BASE {
        id
    } else {
        id + base
    }
}

fn unbase(id: u128, base: u128) -> u128 {
    if id >= SETTLEMENT_ACCOUNT_BASE {
        id
    } else {
        id - base
    }
}

#[test]
fn loadgen_tcp_replays_a_recorded_trace_to_the_inproc_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("joint-loan.csv");
    let recorded = commands::record(joint_loan(), 700, &trace, TraceFormat::Csv).expect("record");
    assert_eq!(recorded.events, 700);
    let events: Vec<TraceEvent> = TraceReader::open(&trace, false)
        .expect("open trace")
        .collect::<Result<_, _>>()
        .expect("read trace");
    let mut ids: Vec<u128> = events
        .iter()
        .filter_map(|e| match e.op {
            Op::CreateAccount { account, .. } => Some(u128::from(account)),
            _ => None,
        })
        .chain((1..=4).map(settlement_account))
        .collect();
    ids.sort();

    // The same trace into the in-process ledger, through the same mapping.
    let mut inproc = InprocTarget::new(InprocConfig::default()).expect("inproc");
    let reader = TraceReader::open(&trace, false).expect("open trace");
    let config = RunConfig {
        schedule: Schedule::Closed { in_flight: 1 },
        batch_events: 20,
        duration: None,
        events_max: None,
        interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(5),
    };
    let run = driver::run(Box::new(reader), &mut inproc, config, &Progress::new(false))
        .expect("inproc replay");
    assert_eq!(run.recorder.totals.events_committed, 700);
    let mut expected: Balances = (1..=4u32)
        .flat_map(|bank| inproc.ledger().lookup_accounts(bank, &ids))
        .map(|a| (a.id, a.debits_posted, a.credits_posted))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), ids.len(), "inproc knows every account");
    assert!(expected.iter().any(|(_, d, _)| *d > 0), "money moved");

    // Replayed over TCP at the trace's own pace, sped up.
    let cluster = started(4);
    let mut target = tcp_target(&cluster);
    let reader = TraceReader::open(&trace, false).expect("open trace");
    let run = setup_and_run(
        &mut target,
        Box::new(reader),
        Schedule::Replay { speedup: 4.0 },
        u64::MAX,
    );
    let stats = target.stats().clone();
    drop(target);
    assert_clean(&run, &stats);
    assert!(agreed_digest(&cluster).is_some(), "nodes disagree");
    let base = TcpConfig::map_default().id_base;
    let got = cluster_balances(&cluster, &ids, base);
    assert_eq!(got, expected, "cluster balances differ from inproc");
}
