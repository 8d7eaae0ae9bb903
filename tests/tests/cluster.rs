//! A real 4-node cluster on 127.0.0.1: requests of several kinds commit, every node agrees on the
//! ledger digest, and bad requests get precise errors while the node keeps serving.

use std::path::Path;
use std::time::Duration;

use engine::client::{Client, ClientError, ClientFile, ClientTls};
use engine::codec::decode_results;
use engine::crypto::KeyPair;
use engine::net::{frame, tls, NetErrorCode};
use engine::node::init::{
    lead_funding_account, reserve_account, settlement_account, GENESIS_LEDGER,
};
use engine::node::protocol::{NodeFrame, RejectCode, KIND_SUBMIT};
use engine::types::{Account, Disbursement, Loan, Transfer, EVENT_BYTES};
use reckon_tests::{wait_until, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_reckon-under-test");
const YUAN: u128 = 100;
const LEAD: u32 = 1;
const PARTNER: u32 = 2;
const BORROWER: u128 = 90_001;
const LOAN: u128 = 70_001;

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, institution: u32) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        institution,
        ledger: GENESIS_LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

fn all_ok(reply: &[u8]) {
    let results = decode_results(reply).expect("results decode");
    assert!(results.iter().all(|r| r.code.is_ok()), "{results:?}");
}

fn started(nodes: usize) -> Cluster {
    let mut cluster = Cluster::init(Path::new(BIN), nodes);
    cluster.start_all();
    let heights = wait_until(Duration::from_secs(30), || {
        let h: Vec<u64> = (0..nodes).filter_map(|i| cluster.height(i)).collect();
        (h.len() == nodes && h.iter().all(|h| *h >= 2)).then_some(h)
    });
    assert!(
        heights.is_some(),
        "cluster did not start committing:\n{}",
        cluster.log(0)
    );
    cluster
}

/// Waits until every node is at or past `height` and all report one ledger digest.
fn agreed_digest(cluster: &Cluster, height: u64) -> String {
    let agreed = wait_until(Duration::from_secs(30), || {
        let statuses: Vec<serde_json::Value> = (0..cluster.nodes)
            .filter_map(|i| cluster.status(i))
            .collect();
        if statuses.len() != cluster.nodes {
            return None;
        }
        let digests: Vec<&str> = statuses
            .iter()
            .filter_map(|s| s["ledger_digest"].as_str())
            .collect();
        let reached = statuses
            .iter()
            .all(|s| s["height"].as_u64().unwrap_or(0) >= height);
        (reached && digests.len() == cluster.nodes && digests.iter().all(|d| *d == digests[0]))
            .then(|| digests[0].to_string())
    });
    agreed.expect("nodes agree on the ledger digest")
}

#[test]
fn four_nodes_commit_requests_of_several_kinds_and_agree() {
    let cluster = started(4);
    let genesis_digest = cluster.status(0).expect("status")["ledger_digest"]
        .as_str()
        .map(String::from);
    let (lead, partner, operator) = (
        cluster.signer(LEAD),
        cluster.signer(PARTNER),
        cluster.signer(0),
    );
    let mut partner_client = cluster.client(0, PARTNER);
    let top_up = transfer(
        1,
        settlement_account(PARTNER),
        reserve_account(PARTNER),
        500_000 * YUAN,
        PARTNER,
    );
    let committed = partner_client
        .submit(&partner.top_up(1, &[top_up]).expect("sign"))
        .expect("top-up commits");
    all_ok(&committed.reply);
    assert!(committed.height >= 1);

    let mut lead_client = cluster.client(1, LEAD);
    let funds = transfer(
        2,
        settlement_account(LEAD),
        lead_funding_account(LEAD),
        1_000_000 * YUAN,
        LEAD,
    );
    all_ok(
        &lead_client
            .submit(&lead.create_transfers(1, &[funds]).expect("sign"))
            .expect("transfer")
            .reply,
    );

    // The operator connects with the client file `reckon init` wrote.
    let file =
        ClientFile::load(&cluster.out().join("clients/institution-0.toml")).expect("client file");
    assert_eq!(file.nodes.len(), 4);
    let mut operator_client = file.connect_any().expect("operator connects");
    let borrower = Account {
        id: BORROWER,
        institution: LEAD,
        ledger: GENESIS_LEDGER,
        code: 20,
        ..Account::default()
    };
    all_ok(
        &operator_client
            .submit(&operator.create_accounts(1, &[borrower]).expect("sign"))
            .expect("account")
            .reply,
    );
    let loan = Loan {
        id: LOAN,
        borrower_account_id: BORROWER,
        reserve_account_id: reserve_account(PARTNER),
        funding_account_id: lead_funding_account(LEAD),
        principal_max: 400_000 * YUAN,
        lead: LEAD,
        partner: PARTNER,
        ledger: GENESIS_LEDGER,
        partner_share_bps: 8_000,
        ..Loan::default()
    };
    all_ok(
        &operator_client
            .submit(&operator.create_loans(2, &[loan]).expect("sign"))
            .expect("loan")
            .reply,
    );
    let disbursement = Disbursement {
        partner_transfer_id: 3,
        lead_transfer_id: 4,
        loan_id: LOAN,
        amount: 100_000 * YUAN,
        ..Disbursement::default()
    };
    let last = lead_client
        .submit(&lead.disburse(2, &[disbursement]).expect("sign"))
        .expect("disburse");
    all_ok(&last.reply);

    let mut query_client = cluster.client(3, PARTNER);
    let positions = query_client
        .query(&partner.reserve_positions(99).expect("sign"))
        .expect("positions");
    assert_eq!(
        positions.reply.len(),
        EVENT_BYTES,
        "one reserve position record"
    );
    let digest = agreed_digest(&cluster, last.height);
    assert_ne!(
        Some(digest.clone()),
        genesis_digest,
        "the requests changed the ledger"
    );
    // The operator's command prints the same figures.
    let printed: serde_json::Value =
        serde_json::from_str(&cluster.status_cli(3)).expect("status JSON");
    assert_eq!(printed["ledger_digest"].as_str(), Some(digest.as_str()));
    assert_eq!(printed["node"].as_str(), Some("node-3"));
    let metrics = cluster.metrics(0);
    assert!(metrics.contains("reckon_height"), "{metrics}");
    assert!(
        metrics.contains("reckon_events_committed_total"),
        "{metrics}"
    );
    // Node 1 answered the lead bank's requests: each one's time from its frame to admission is
    // counted, and its ordering latency is split into inclusion and commit where node 1 voted
    // for the block carrying it. A node votes for most blocks, but not necessarily all: one
    // whose vote waited for a batch may see the quorum form from the other three first.
    let metrics = cluster.metrics(1);
    let count = |phase: &str| latency_count(&metrics, phase);
    assert!(count("ordering") >= 2, "{metrics}");
    assert_eq!(count("admission"), count("ordering"), "{metrics}");
    assert!(
        (1..=count("ordering")).contains(&count("inclusion")),
        "{metrics}"
    );
    assert_eq!(count("commit"), count("inclusion"), "{metrics}");
    // The ledger tables' fill: the genesis accounts and the transfers are counted, and each
    // table's capacity (before it doubles) is at least what it holds.
    let gauge = |name: &str, table: &str| -> u64 {
        let prefix = format!("reckon_{name}{{");
        let label = format!("table=\"{table}\"");
        metrics
            .lines()
            .filter(|line| line.starts_with(&prefix) && line.contains(&label))
            .find_map(|line| line.rsplit(' ').next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}{{table={table}}} missing:\n{metrics}"))
    };
    assert!(gauge("ledger_records", "transfers") >= 2, "{metrics}");
    assert!(gauge("ledger_records", "accounts") >= 1, "{metrics}");
    for table in ["accounts", "transfers"] {
        assert!(gauge("ledger_capacity", table) >= gauge("ledger_records", table));
    }
}

/// `reckon_request_latency_seconds_count` for one phase (0 when the series is absent).
fn latency_count(metrics: &str, phase: &str) -> u64 {
    let label = format!("phase=\"{phase}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("reckon_request_latency_seconds_count{"))
        .find(|line| line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

fn expect_rejected(
    result: Result<engine::node::protocol::Outcome, ClientError>,
    code: RejectCode,
) -> engine::node::protocol::Rejected {
    match result {
        Err(ClientError::Rejected(rejected)) => {
            assert_eq!(rejected.code, code, "{rejected:?}");
            rejected
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_precise_errors_and_the_node_keeps_serving() {
    let cluster = started(4);
    let lead = cluster.signer(LEAD);
    let mut client = cluster.client(0, LEAD);
    let good = lead
        .create_transfers(
            10,
            &[transfer(
                10,
                settlement_account(LEAD),
                lead_funding_account(LEAD),
                5 * YUAN,
                LEAD,
            )],
        )
        .expect("sign");
    let committed = client.submit(&good).expect("commits");

    // A replay of a committed request: request_replayed with the original height.
    let replayed = expect_rejected(client.submit(&good), RejectCode::RequestReplayed);
    assert_eq!(replayed.height, committed.height);
    // The same id with another body: request_id_reused.
    let other = lead
        .create_transfers(
            10,
            &[transfer(
                11,
                settlement_account(LEAD),
                lead_funding_account(LEAD),
                6 * YUAN,
                LEAD,
            )],
        )
        .expect("sign");
    expect_rejected(client.submit(&other), RejectCode::RequestIdReused);
    // A bad signature: the request was changed after signing.
    let mut forged = lead
        .create_transfers(
            12,
            &[transfer(
                12,
                settlement_account(LEAD),
                lead_funding_account(LEAD),
                7 * YUAN,
                LEAD,
            )],
        )
        .expect("sign");
    forged.request.body[32] ^= 1;
    expect_rejected(client.submit(&forged), RejectCode::InvalidSignature);
    // Signed by another institution than the TLS identity.
    let partner = cluster.signer(PARTNER);
    let foreign = partner
        .top_up(
            13,
            &[transfer(
                13,
                settlement_account(PARTNER),
                reserve_account(PARTNER),
                YUAN,
                PARTNER,
            )],
        )
        .expect("sign");
    expect_rejected(client.submit(&foreign), RejectCode::IdentityMismatch);
    // A malformed frame: a submit whose payload is not a request; and an unknown frame kind.
    client.send_frame(KIND_SUBMIT, &[1, 2, 3]).expect("send");
    match client.recv(Duration::from_secs(10)).expect("reply") {
        Some(NodeFrame::Rejected(r)) => assert_eq!(r.code, RejectCode::MalformedRequest, "{r:?}"),
        other => panic!("expected malformed_request, got {other:?}"),
    }
    client.send_frame(0x42, &[]).expect("send");
    match client.recv(Duration::from_secs(10)).expect("reply") {
        Some(NodeFrame::Rejected(r)) => assert_eq!(r.code, RejectCode::MalformedFrame, "{r:?}"),
        other => panic!("expected malformed_frame, got {other:?}"),
    }
    // Signed for another chain.
    let other_chain = engine::client::Signer {
        institution: LEAD,
        chain_id: 2,
        key: engine::crypto::load_institution_key(&cluster.out().join("keys/institution-1.bls"))
            .expect("key"),
    };
    let wrong = other_chain
        .create_transfers(
            15,
            &[transfer(
                15,
                settlement_account(LEAD),
                lead_funding_account(LEAD),
                YUAN,
                LEAD,
            )],
        )
        .expect("sign");
    expect_rejected(client.submit(&wrong), RejectCode::WrongChainId);
    unknown_institution(&cluster);
    oversized_frame(&cluster);
    // The same node still serves: a new request commits on the first connection.
    let next = lead
        .create_transfers(
            14,
            &[transfer(
                14,
                settlement_account(LEAD),
                lead_funding_account(LEAD),
                8 * YUAN,
                LEAD,
            )],
        )
        .expect("sign");
    all_ok(&client.submit(&next).expect("still serving").reply);
}

/// A CA-issued certificate for institution 9, which the genesis does not know.
fn unknown_institution(cluster: &Cluster) {
    let out = cluster.out();
    let ca_pem = std::fs::read_to_string(out.join("tls/ca.pem")).expect("ca");
    let ca_key = std::fs::read_to_string(out.join("tls/ca.key")).expect("ca key");
    let ca = tls::ConsortiumCa::from_pem(&ca_pem, &ca_key).expect("reload ca");
    let cert = tls::issue_client_cert(&ca, 9).expect("cert");
    let client_tls = ClientTls::from_pem(&ca_pem, &cert.cert_pem, &cert.key_pem).expect("tls");
    let mut client = Client::connect(cluster.client_addr(0), &client_tls).expect("connect");
    let stranger = engine::client::Signer {
        institution: 9,
        chain_id: 1,
        key: KeyPair::generate(),
    };
    let request = stranger
        .create_transfers(1, &[transfer(1, 1, 2, 1, 9)])
        .expect("sign");
    expect_rejected(client.submit(&request), RejectCode::UnknownInstitution);
}

/// A frame header larger than the maximum: a net-level error on that connection only.
fn oversized_frame(cluster: &Cluster) {
    let mut client = cluster.client(0, LEAD);
    let mut header = vec![0u8; frame::FRAME_HEADER_BYTES];
    header[..4].copy_from_slice(&(frame::FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
    header[4] = frame::FRAME_VERSION;
    header[5] = KIND_SUBMIT;
    client.send_raw(&header).expect("send");
    match client.recv(Duration::from_secs(10)) {
        Err(ClientError::NetErrorFrame(e)) => {
            assert_eq!(e.code, NetErrorCode::FrameTooLarge, "{e:?}")
        }
        other => panic!("expected frame_too_large, got {other:?}"),
    }
}

/// Measurement, not a check: sequential submit latency and pipelined throughput of one client
/// against a 4-node loopback cluster. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_submit_latency_and_pipelined_throughput() {
    const SEQUENTIAL: u128 = 200;
    const PIPELINED: u128 = 2_000;
    let cluster = started(4);
    let lead = cluster.signer(LEAD);
    let mut client = cluster.client(0, LEAD);
    let make = |id: u128| {
        let t = transfer(
            id,
            settlement_account(LEAD),
            lead_funding_account(LEAD),
            1,
            LEAD,
        );
        lead.create_transfers(id, &[t]).expect("sign")
    };
    let mut latencies_us: Vec<u128> = Vec::new();
    for id in 1..=SEQUENTIAL {
        let request = make(id);
        let started = std::time::Instant::now();
        client.submit(&request).expect("commit");
        latencies_us.push(started.elapsed().as_micros());
    }
    latencies_us.sort_unstable();
    let pct = |p: usize| latencies_us[(latencies_us.len() * p / 100).min(latencies_us.len() - 1)];
    println!(
        "SUMMARY sequential submits={SEQUENTIAL} p50_us={} p90_us={} p99_us={} max_us={}",
        pct(50),
        pct(90),
        pct(99),
        pct(100)
    );
    let requests: Vec<_> = (SEQUENTIAL + 1..=SEQUENTIAL + PIPELINED)
        .map(make)
        .collect();
    let started = std::time::Instant::now();
    for request in &requests {
        client.send(request).expect("send");
    }
    let mut committed = 0;
    while committed < PIPELINED {
        match client.recv(Duration::from_secs(30)).expect("recv") {
            Some(NodeFrame::Committed(_)) => committed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "SUMMARY pipelined requests={PIPELINED} seconds={seconds:.2} requests_per_s={:.0}",
        PIPELINED as f64 / seconds
    );
}
