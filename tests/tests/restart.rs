//! Crash and restart with real processes: kill -9 one node under load (the others keep
//! committing; the restarted node catches up and agrees), one node hung under load (SIGSTOP: the
//! others flag it and keep committing; continued, it agrees), two of four down (no commits, no
//! divergence; recovery when they return), and SIGTERM drains and exits 0.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::client::ClientError;
use engine::node::init::{lead_funding_account, settlement_account, GENESIS_LEDGER};
use engine::types::Transfer;
use reckon_tests::{wait_until, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_reckon-under-test");
const LEAD: u32 = 1;
/// Requests the background load submits at most (bounds the load thread).
const LOAD_REQUESTS_MAX: u128 = 2_000;

fn started() -> Cluster {
    started_with(|_| {})
}

/// A 4-node cluster whose config files `adjust` edits before any node starts.
fn started_with(adjust: impl Fn(&Cluster)) -> Cluster {
    let mut cluster = Cluster::init(Path::new(BIN), 4);
    adjust(&cluster);
    cluster.start_all();
    let ok = wait_until(Duration::from_secs(30), || {
        (0..4)
            .all(|i| cluster.height(i).is_some_and(|h| h >= 2))
            .then_some(())
    });
    assert!(ok.is_some(), "cluster did not start:\n{}", cluster.log(0));
    cluster
}

/// Submits transfers one after another to node `node` until `stop` (bounded); counts commits.
fn load(
    cluster: &Cluster,
    node: usize,
    first_id: u128,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Result<(), String>> {
    let mut client = cluster.client(node, LEAD);
    client.timeout = Duration::from_secs(10);
    let signer = cluster.signer(LEAD);
    std::thread::spawn(move || {
        for id in first_id..first_id + LOAD_REQUESTS_MAX {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let t = Transfer {
                id,
                debit_account_id: settlement_account(LEAD),
                credit_account_id: lead_funding_account(LEAD),
                amount: 1,
                institution: LEAD,
                ledger: GENESIS_LEDGER,
                code: 1,
                ..Transfer::default()
            };
            let request = signer.create_transfers(id, &[t]).expect("sign");
            match client.submit(&request) {
                Ok(_) => {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                Err(ClientError::Timeout(_)) => {}
                Err(error) => return Err(format!("load request {id}: {error}")),
            }
        }
        Ok(())
    })
}

/// Starts the background load on node 0 (`load`) and waits until 5 of its requests committed.
fn under_load(
    cluster: &Cluster,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    std::thread::JoinHandle<Result<(), String>>,
) {
    let (stop, committed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let loader = load(cluster, 0, 1_000, stop.clone(), committed.clone());
    let started = wait_until(Duration::from_secs(30), || {
        (committed.load(Ordering::Relaxed) >= 5).then_some(())
    });
    assert!(started.is_some(), "the load committed 5 requests in 30 s");
    (stop, committed, loader)
}

fn agree(cluster: &Cluster, nodes: &[usize], height: u64) -> bool {
    wait_until(Duration::from_secs(60), || {
        let statuses: Vec<serde_json::Value> =
            nodes.iter().filter_map(|i| cluster.status(*i)).collect();
        let digests: Vec<&str> = statuses
            .iter()
            .filter_map(|s| s["ledger_digest"].as_str())
            .collect();
        let reached = statuses
            .iter()
            .all(|s| s["height"].as_u64().unwrap_or(0) >= height);
        (statuses.len() == nodes.len() && reached && digests.iter().all(|d| *d == digests[0]))
            .then_some(())
    })
    .is_some()
}

/// Committed blocks each node keeps in memory to serve block sync in the kill -9 test: far fewer
/// than the blocks the others commit while node 3 is down, so the restarted node is served from
/// their block logs first (`Action::ServeSyncFromLog`), then from their windows.
const SMALL_COMMITTED_WINDOW: usize = 8;

#[test]
fn kill9_one_node_under_load_then_restart_catches_up_and_agrees() {
    let mut cluster = started_with(|cluster| {
        for i in 0..4 {
            cluster.edit_config(
                i,
                "committed_window_blocks = 16384",
                &format!("committed_window_blocks = {SMALL_COMMITTED_WINDOW}"),
            );
        }
    });
    let (stop, committed, loader) = under_load(&cluster);
    cluster.kill9(3);
    let before = committed.load(Ordering::Relaxed);
    let height = cluster.height(0).expect("node 0 up");
    // The survivors' links see node 3's connections close: their failure detector flags it, and
    // the rounds it would lead end on the short timer (consensus.unreachable_leader_timeout_ms).
    let flagged = wait_until(Duration::from_secs(10), || {
        let status = cluster.status(0)?;
        let unreachable = status.get("peers_unreachable")?.as_array()?;
        unreachable
            .iter()
            .any(|v| v.as_u64() == Some(3))
            .then_some(())
    });
    assert!(
        flagged.is_some(),
        "node 0 flags the killed node 3 unreachable; status {:?}",
        cluster.status(0)
    );
    // Reputation leaders (consensus/leader.rs) stop choosing the dead node after a timeout or
    // two, so the other three keep committing at full rate. Under round-robin leaders every fourth
    // round spent a 1 s round timer and this client's requests committed about once per cycle
    // (fewer than 10 in 30 s on a loaded machine), so 20 in 30 s tells the two apart.
    let progressed = wait_until(Duration::from_secs(30), || {
        (committed.load(Ordering::Relaxed) >= before + 20).then_some(())
    });
    if progressed.is_none() {
        // Tell a stalled cluster from a load thread that stopped (its error is in the join).
        let statuses: Vec<Option<serde_json::Value>> = (0..3).map(|i| cluster.status(i)).collect();
        let load_finished = loader.is_finished();
        let load_outcome = load_finished.then(|| loader.join());
        panic!(
            "3 of 4 nodes keep committing at full rate: {} in 30 s (node 0 was at height {height}; \
             load thread finished: {load_finished}, outcome {load_outcome:?}); statuses of nodes \
             0-2: {statuses:?}\nnode 0's log:\n{}",
            committed.load(Ordering::Relaxed) - before,
            cluster.log(0)
        );
    }
    assert!(cluster.height(0).expect("up") > height + SMALL_COMMITTED_WINDOW as u64);
    cluster.start(3);
    stop.store(true, Ordering::Release);
    let outcome = loader.join().expect("load thread");
    assert_eq!(outcome, Ok(()), "load saw an error");
    let target = cluster.height(0).expect("up");
    assert!(
        agree(&cluster, &[0, 1, 2, 3], target),
        "node 3 catches up and agrees:\n{}",
        cluster.log(3)
    );
    let reachable_again = wait_until(Duration::from_secs(10), || {
        let status = cluster.status(0)?;
        (status.get("peers_unreachable")? == &serde_json::json!([])).then_some(())
    });
    assert!(
        reachable_again.is_some(),
        "node 3 is reachable again from node 0 once it is back; status {:?}",
        cluster.status(0)
    );
    let from_logs: u64 = (0..3)
        .map(|i| {
            metric(
                &cluster.metrics(i),
                "reckon_sync_blocks_served_from_log_total",
            )
        })
        .sum();
    assert!(
        from_logs > 0,
        "node 3 was further behind than every window, so its peers served it from their logs; \
         heights {:?}",
        (0..4).map(|i| cluster.height(i)).collect::<Vec<_>>()
    );
    // The batches it fetched for those committed blocks were stored on their certified digests,
    // not verified again signature by signature.
    let certified = metric(&cluster.metrics(3), "reckon_batches_certified_total");
    assert!(
        certified > 0,
        "node 3 fetched the batches of the blocks it missed as certified; its log:\n{}",
        cluster.log(3)
    );
}

/// The validators node `i` reports unreachable (`peers_unreachable` in its status).
fn unreachable_from(cluster: &Cluster, i: usize) -> Option<Vec<u64>> {
    let status = cluster.status(i)?;
    let list = status.get("peers_unreachable")?.as_array()?;
    list.iter().map(|v| v.as_u64()).collect()
}

#[test]
fn hung_node_under_load_is_flagged_the_others_keep_committing_and_it_rejoins() {
    let cluster = started();
    let (stop, committed, loader) = under_load(&cluster);
    // A hung host: its connections stay open and its kernel keeps accepting bytes, so no write to
    // it fails for seconds. Only its silence (no heartbeat while the others are heard) shows it.
    cluster.signal(3, libc::SIGSTOP);
    let before = committed.load(Ordering::Relaxed);
    // The status and the metrics both say so (the metric follows within the consensus stage's
    // next look at its peers).
    let flagged = wait_until(Duration::from_secs(5), || {
        let text = cluster.metrics(0);
        (unreachable_from(&cluster, 0)? == [3]
            && peer_metric(&text, "reckon_peer_unreachable", 3) == Some(1))
        .then_some(text)
    });
    let progressed = flagged.as_ref().and_then(|_| {
        wait_until(Duration::from_secs(30), || {
            (committed.load(Ordering::Relaxed) >= before + 20).then_some(())
        })
    });
    cluster.signal(3, libc::SIGCONT);
    assert!(
        flagged.is_some(),
        "node 0 flags the hung node 3 within 5 s; status {:?}\nnode 0's log:\n{}",
        cluster.status(0),
        cluster.log(0)
    );
    assert!(
        progressed.is_some(),
        "3 of 4 nodes keep committing while node 3 hangs: {} in 30 s",
        committed.load(Ordering::Relaxed) - before
    );
    // The other peers are not flagged, and every link stays connected (a hung host's kernel still
    // holds its connections).
    let metrics_while_hung = flagged.unwrap_or_default();
    for (name, peer, value) in [
        ("reckon_peer_unreachable", 1, 0),
        ("reckon_peer_connected", 1, 1),
        ("reckon_peer_connected", 3, 1),
    ] {
        assert_eq!(
            peer_metric(&metrics_while_hung, name, peer),
            Some(value),
            "{name} of peer {peer} at node 0 while node 3 hangs:\n{metrics_while_hung}"
        );
    }
    stop.store(true, Ordering::Release);
    assert_eq!(
        loader.join().expect("load thread"),
        Ok(()),
        "load saw an error"
    );
    let target = cluster.height(0).expect("up");
    assert!(
        agree(&cluster, &[0, 1, 2, 3], target),
        "node 3, continued, catches up and agrees:\n{}",
        cluster.log(3)
    );
    let cleared = wait_until(Duration::from_secs(10), || {
        let text = cluster.metrics(0);
        (unreachable_from(&cluster, 0)?.is_empty()
            && peer_metric(&text, "reckon_peer_unreachable", 3) == Some(0))
        .then_some(())
    });
    assert!(
        cleared.is_some(),
        "node 3 is reachable again from node 0; status {:?}\n{}",
        cluster.status(0),
        cluster.metrics(0)
    );
}

/// The value of a per-peer series (`name{node="...",peer="P"} value`) in Prometheus text.
fn peer_metric(text: &str, name: &str, peer: u32) -> Option<u64> {
    let label = format!("peer=\"{peer}\"");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .find(|line| line.contains(&label))
        .and_then(|line| line.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The value of a counter in a node's Prometheus text (`name{node="..."} value`; 0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .find_map(|line| line.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn two_of_four_down_stops_commits_without_divergence_and_recovers() {
    let mut cluster = started();
    cluster.kill9(2);
    cluster.kill9(3);
    std::thread::sleep(Duration::from_millis(500));
    let stalled = cluster.height(0).expect("node 0 up");
    let mut client = cluster.client(0, LEAD);
    client.timeout = Duration::from_secs(3);
    let t = Transfer {
        id: 5,
        debit_account_id: settlement_account(LEAD),
        credit_account_id: lead_funding_account(LEAD),
        amount: 1,
        institution: LEAD,
        ledger: GENESIS_LEDGER,
        code: 1,
        ..Transfer::default()
    };
    let request = cluster
        .signer(LEAD)
        .create_transfers(5, &[t])
        .expect("sign");
    assert!(
        matches!(client.submit(&request), Err(ClientError::Timeout(_))),
        "no quorum, no commit"
    );
    let now = cluster.height(0).expect("up");
    assert!(
        now <= stalled + 1,
        "height moved from {stalled} to {now} without a quorum"
    );
    // Without a quorum only round timers move node 0; operators see each one.
    let metrics = cluster.metrics(0);
    let timeouts: u64 = metrics
        .lines()
        .find(|line| line.starts_with("reckon_round_timeouts_total"))
        .and_then(|line| line.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    assert!(timeouts >= 1, "no round timeout counted:\n{metrics}");
    cluster.start(2);
    cluster.start(3);
    client.timeout = Duration::from_secs(60);
    // The pending request commits once the quorum is back (the reply comes on the same connection).
    let key = (LEAD, 5u128);
    match client.wait_for(key).expect("reply after recovery") {
        engine::node::protocol::NodeFrame::Committed(o) => assert!(o.height > stalled),
        other => panic!("expected a commit, got {other:?}"),
    }
    let target = cluster.height(0).expect("up");
    assert!(
        agree(&cluster, &[0, 1, 2, 3], target),
        "all four agree after recovery"
    );
}

#[test]
fn sigterm_drains_and_exits_zero_and_restart_resumes_from_a_snapshot() {
    let mut cluster = Cluster::init(Path::new(BIN), 4);
    for i in 0..4 {
        cluster.edit_config(
            i,
            "snapshot_every_blocks = 10000",
            "snapshot_every_blocks = 20",
        );
    }
    cluster.start_all();
    let signer = cluster.signer(LEAD);
    let t = Transfer {
        id: 77,
        debit_account_id: settlement_account(LEAD),
        credit_account_id: lead_funding_account(LEAD),
        amount: 3,
        institution: LEAD,
        ledger: GENESIS_LEDGER,
        code: 1,
        ..Transfer::default()
    };
    let early = signer.create_transfers(77, &[t]).expect("sign");
    let committed = cluster.client(1, LEAD).submit(&early).expect("commits");
    let ok = wait_until(Duration::from_secs(30), || {
        (0..4)
            .all(|i| {
                cluster
                    .height(i)
                    .is_some_and(|h| h >= committed.height + 45)
            })
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "cluster did not reach height 45:\n{}",
        cluster.log(0)
    );
    let height = cluster.height(1).expect("up");
    let status = cluster
        .terminate(1, Duration::from_secs(20))
        .expect("exits within 20 s");
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        cluster.log(1)
    );
    assert!(cluster.log(1).contains("node stopped cleanly"));
    cluster.start(1);
    let resumed = wait_until(Duration::from_secs(30), || {
        cluster.height(1).filter(|h| *h > height)
    });
    assert!(
        resumed.is_some(),
        "node 1 resumes past {height}:\n{}",
        cluster.log(1)
    );
    let log = cluster.log(1);
    let restored = log
        .lines()
        .rfind(|l| l.contains("ledger restored"))
        .unwrap_or("");
    let snapshot_height: u64 = restored
        .split("snapshot_height=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        snapshot_height >= 20,
        "the restart loaded a snapshot: {restored}"
    );
    let target = cluster.height(0).expect("up");
    assert!(
        agree(&cluster, &[0, 1, 2, 3], target),
        "all agree after a snapshot restart"
    );
    // A retry of a request committed before the snapshot is still recognised after the restart.
    match cluster.client(1, LEAD).submit(&early) {
        Err(ClientError::Rejected(r)) => {
            assert_eq!(
                r.code,
                engine::node::protocol::RejectCode::RequestReplayed,
                "{r:?}"
            );
            assert_eq!(r.height, committed.height);
        }
        other => panic!("expected request_replayed, got {other:?}"),
    }
}
