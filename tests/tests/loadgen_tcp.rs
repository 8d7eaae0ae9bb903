//! loadgen's TCP target against a real 4-node cluster: a short closed-loop transfers run
//! commits, nothing is rejected or fails, and every node ends on the same ledger digest.

use std::path::Path;
use std::time::Duration;

use loadgen::driver::{self, RunConfig, Schedule};
use loadgen::progress::Progress;
use loadgen::tcp::{TcpConfig, TcpTarget};
use loadgen::workload::{TransfersConfig, Workload};
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
