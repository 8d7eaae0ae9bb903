//! Back-pressure and duplicates with real processes: a node with tiny queues answers `busy`
//! instead of growing, commits everything it accepted, and keeps serving; a request sent twice
//! back to back commits once.

use std::path::Path;
use std::time::Duration;

use engine::node::init::{lead_funding_account, settlement_account, GENESIS_LEDGER};
use engine::node::protocol::{NodeFrame, RejectCode};
use engine::types::Transfer;
use reckon_tests::{wait_until, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_reckon-under-test");
const LEAD: u32 = 1;
const FLOOD: u128 = 400;

fn transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: settlement_account(LEAD),
        credit_account_id: lead_funding_account(LEAD),
        amount: 1,
        institution: LEAD,
        ledger: GENESIS_LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

#[test]
fn tiny_queues_answer_busy_commit_what_they_accept_and_keep_serving() {
    let mut cluster = Cluster::init(Path::new(BIN), 4);
    cluster.edit_config(0, "queue_requests_max = 8192", "queue_requests_max = 2");
    cluster.edit_config(0, "requests_max = 65536", "requests_max = 8");
    cluster.start_all();
    let up = wait_until(Duration::from_secs(30), || {
        (0..4)
            .all(|i| cluster.height(i).is_some_and(|h| h >= 2))
            .then_some(())
    });
    assert!(up.is_some(), "cluster did not start:\n{}", cluster.log(0));
    let signer = cluster.signer(LEAD);
    let mut client = cluster.client(0, LEAD);
    let requests: Vec<_> = (1..=FLOOD)
        .map(|id| signer.create_transfers(id, &[transfer(id)]).expect("sign"))
        .collect();
    for request in &requests {
        client.send(request).expect("send");
    }
    let (mut committed, mut busy) = (0u128, 0u128);
    while committed + busy < FLOOD {
        match client.recv(Duration::from_secs(30)).expect("recv") {
            Some(NodeFrame::Committed(_)) => committed += 1,
            Some(NodeFrame::Rejected(r)) if r.code == RejectCode::Busy => busy += 1,
            other => panic!("unexpected reply {other:?} after {committed} commits, {busy} busy"),
        }
    }
    assert!(busy > 0, "a flood into queues of 2 and 8 must see busy");
    assert!(committed > 0, "accepted requests commit");
    // Still serving: a retry of a refused request commits.
    let retry = client.submit(&requests[FLOOD as usize - 1]);
    assert!(
        retry.is_ok()
            || matches!(&retry, Err(engine::client::ClientError::Rejected(r)) if r.code == RejectCode::RequestReplayed),
        "{retry:?}"
    );
}

#[test]
fn a_request_sent_twice_back_to_back_commits_once() {
    let mut cluster = Cluster::init(Path::new(BIN), 4);
    cluster.start_all();
    let up = wait_until(Duration::from_secs(30), || {
        (0..4)
            .all(|i| cluster.height(i).is_some_and(|h| h >= 2))
            .then_some(())
    });
    assert!(up.is_some(), "cluster did not start:\n{}", cluster.log(0));
    let signer = cluster.signer(LEAD);
    let mut client = cluster.client(0, LEAD);
    let request = signer.create_transfers(7, &[transfer(7)]).expect("sign");
    client.send(&request).expect("send");
    client.send(&request).expect("send again");
    let mut frames = Vec::new();
    while frames.len() < 2 {
        match client.recv(Duration::from_secs(30)).expect("recv") {
            Some(frame) => frames.push(frame),
            None => panic!("no reply within 30 s: {frames:?}"),
        }
    }
    let commits = frames
        .iter()
        .filter(|f| matches!(f, NodeFrame::Committed(_)))
        .count();
    let second = frames.iter().find_map(|f| match f {
        NodeFrame::Rejected(r) => Some(r.code),
        _ => None,
    });
    assert_eq!(commits, 1, "{frames:?}");
    assert!(
        matches!(
            second,
            Some(RejectCode::DuplicatePending) | Some(RejectCode::RequestReplayed)
        ),
        "{frames:?}"
    );
}
