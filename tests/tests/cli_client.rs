//! The human client subcommands (`account`, `transfer`, `loan`, `reconcile`) run as processes
//! against a real 4-node cluster, then `reckon audit` on a stopped node's data directory: clean,
//! and after one flipped byte, a checksum fault with exit code 3.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use engine::node::init::{lead_funding_account, reserve_account, settlement_account};
use reckon_tests::{wait_until, Cluster};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_reckon-under-test");
const LEAD: u32 = 1;
const PARTNER: u32 = 2;
const SAVINGS: &str = "500001";
const BORROWER: &str = "500002";
const LOAN: &str = "700001";

struct Cli<'a> {
    cluster: &'a Cluster,
}

impl Cli<'_> {
    fn client_file(&self, institution: u32) -> PathBuf {
        self.cluster
            .out()
            .join(format!("clients/institution-{institution}.toml"))
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.cluster.bin)
            .args(args)
            .output()
            .expect("run reckon")
    }

    /// `reckon <args> --client <institution's file> [--json]`.
    fn as_inst(&self, institution: u32, args: &[&str], json: bool) -> Output {
        let file = self.client_file(institution);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--client", file.to_str().expect("utf-8 path")]);
        if json {
            all.push("--json");
        }
        self.run(&all)
    }

    /// Runs with `--json`, expects exit 0 and returns the JSON object.
    fn ok_json(&self, institution: u32, args: &[&str]) -> Value {
        let output = self.as_inst(institution, args, true);
        assert!(
            output.status.success(),
            "{args:?} failed:\n{}",
            text(&output)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{}", text(&output)))
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn started() -> Cluster {
    let mut cluster = Cluster::init(Path::new(BIN), 4);
    // Snapshots every 25 blocks on node 0, so the audit compares re-execution with some.
    cluster.edit_config(
        0,
        "snapshot_every_blocks = 10000",
        "snapshot_every_blocks = 25",
    );
    cluster.start_all();
    let up = wait_until(Duration::from_secs(30), || {
        let heights: Vec<u64> = (0..4).filter_map(|i| cluster.height(i)).collect();
        (heights.len() == 4 && heights.iter().all(|h| *h >= 2)).then_some(())
    });
    assert!(up.is_some(), "cluster did not start:\n{}", cluster.log(0));
    cluster
}

fn committed_ok(v: &Value) -> u64 {
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    let events = v["events"].as_array().expect("events");
    assert!(events.iter().all(|e| e["result"] == "ok"), "{v}");
    v["height"].as_u64().expect("height")
}

#[test]
fn client_subcommands_against_a_cluster_then_audit_its_data() {
    let mut cluster = started();
    let cli = Cli { cluster: &cluster };
    let settlement = settlement_account(LEAD).to_string();

    // An account with a no-overdraft rule, funded by a transfer, visible in `account show`.
    let created = cli.ok_json(
        LEAD,
        &[
            "account",
            "create",
            "--id",
            SAVINGS,
            "--code",
            "20",
            "--flags",
            "debits-must-not-exceed-credits",
        ],
    );
    assert!(committed_ok(&created) >= 1);
    let transfer = [
        "transfer",
        "--from",
        &settlement,
        "--to",
        SAVINGS,
        "--amount",
        "1000",
        "--id",
        "600001",
    ];
    committed_ok(&cli.ok_json(LEAD, &transfer));
    let shown = cli.ok_json(LEAD, &["account", "show", "--id", SAVINGS]);
    let account = &shown["accounts"][0];
    assert_eq!(account["balance"], 1000, "{shown}");
    assert_eq!(account["flags"], "debits-must-not-exceed-credits");
    let human = cli.as_inst(LEAD, &["account", "show", "--id", SAVINGS], false);
    assert!(human.status.success(), "{}", text(&human));
    assert!(text(&human).contains("balance 1000"), "{}", text(&human));
    let history = cli.ok_json(LEAD, &["account", "history", "--id", SAVINGS]);
    assert_eq!(history["transfers"][0]["id"], 600001, "{history}");
    assert_eq!(history["transfers"][0]["direction"], "credit");
    let booked_at = history["transfers"][0]["timestamp_ns"]
        .as_u64()
        .expect("timestamp");

    // The same command again is an idempotent retry.
    let again = cli.as_inst(LEAD, &transfer, false);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already committed at height"),
        "{}",
        text(&again)
    );

    // Overdraft: rejected with its code, non-zero exit, and the balance is unchanged.
    let overdraft = cli.as_inst(
        LEAD,
        &[
            "transfer",
            "--from",
            SAVINGS,
            "--to",
            &settlement,
            "--amount",
            "5000",
        ],
        false,
    );
    assert_eq!(overdraft.status.code(), Some(1), "{}", text(&overdraft));
    let t = text(&overdraft);
    assert!(t.contains("REJECTED: exceeds_credits (54)"), "{t}");
    assert!(t.contains("1 of 1 events rejected"), "{t}");
    let overdraft_json = cli.as_inst(
        LEAD,
        &[
            "transfer",
            "--from",
            SAVINGS,
            "--to",
            &settlement,
            "--amount",
            "5001",
        ],
        true,
    );
    assert_eq!(overdraft_json.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&overdraft_json.stdout).expect("JSON");
    assert_eq!(
        (v["ok"].clone(), v["events"][0]["code"].clone()),
        (Value::Bool(false), 54.into())
    );
    let shown = cli.ok_json(LEAD, &["account", "show", "--id", SAVINGS]);
    assert_eq!(shown["accounts"][0]["balance"], 1000);

    // Clear errors: an unknown account, an unreachable node, a bad key file.
    let unknown = cli.as_inst(LEAD, &["account", "show", "--id", "999"], false);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("unknown account 999"),
        "{}",
        text(&unknown)
    );
    let unreachable = cli.as_inst(
        LEAD,
        &["account", "show", "--id", SAVINGS, "--node", "127.0.0.1:1"],
        false,
    );
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        text(&unreachable).contains("no node reachable (tried 127.0.0.1:1)"),
        "{}",
        text(&unreachable)
    );
    let bad_key = cluster.dir.path().join("bad.bls");
    std::fs::write(&bad_key, b"not a key").expect("write");
    let bad_file = cluster.dir.path().join("bad-client.toml");
    let original = std::fs::read_to_string(cli.client_file(LEAD)).expect("client file");
    let key_line = original
        .lines()
        .find(|l| l.starts_with("bls_key"))
        .expect("bls_key line");
    let rewritten = original
        .replace(
            key_line,
            &format!("bls_key = {:?}", bad_key.display().to_string()),
        )
        .replace("\"../tls/", &format!("\"{}/tls/", cluster.out().display()));
    std::fs::write(&bad_file, rewritten).expect("write");
    let bad = cli.run(&[
        "account",
        "show",
        "--id",
        SAVINGS,
        "--client",
        bad_file.to_str().expect("utf-8"),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("bad.bls"), "{}", text(&bad));

    // A joint loan: the lead's borrower account, the partner's reserve top-up, the loan (created
    // by the partner), a disbursement and a repayment by the lead, then the partner's report.
    committed_ok(&cli.ok_json(
        LEAD,
        &["account", "create", "--id", BORROWER, "--code", "20"],
    ));
    let (partner_settlement, partner_reserve) = (
        settlement_account(PARTNER).to_string(),
        reserve_account(PARTNER).to_string(),
    );
    committed_ok(&cli.ok_json(
        PARTNER,
        &[
            "transfer",
            "--top-up",
            "--from",
            &partner_settlement,
            "--to",
            &partner_reserve,
            "--amount",
            "50000000",
        ],
    ));
    let loan = cli.ok_json(
        PARTNER,
        &[
            "loan",
            "create",
            "--id",
            LOAN,
            "--borrower",
            BORROWER,
            "--lead",
            "1",
            "--principal-max",
            "1000000",
        ],
    );
    committed_ok(&loan);
    committed_ok(&cli.ok_json(
        LEAD,
        &["loan", "disburse", "--loan", LOAN, "--amount", "100000"],
    ));
    committed_ok(&cli.ok_json(
        LEAD,
        &[
            "loan",
            "repay",
            "--loan",
            LOAN,
            "--principal",
            "50000",
            "--interest",
            "1000",
        ],
    ));
    let borrower = cli.ok_json(LEAD, &["account", "show", "--id", BORROWER]);
    assert_eq!(
        borrower["accounts"][0]["balance"],
        100000 - 51000,
        "{borrower}"
    );
    let funding = cli.ok_json(
        LEAD,
        &[
            "account",
            "show",
            "--id",
            &lead_funding_account(LEAD).to_string(),
        ],
    );
    assert_eq!(funding["accounts"][0]["debits_posted"], 20000, "{funding}");

    // Statements for the savings account: one that agrees with the ledger, one that does not.
    let (start, end) = (booked_at.to_string(), (booked_at + 1).to_string());
    let matched = cli.ok_json(
        LEAD,
        &[
            "statement",
            "--account",
            SAVINGS,
            "--period-start-ns",
            &start,
            "--period-end-ns",
            &end,
            "--credits",
            "1000",
            "--ids",
            "600001",
        ],
    );
    committed_ok(&matched);
    assert_eq!(matched["reconciliation"]["matched"], true, "{matched}");
    let (start, end) = ((booked_at - 10).to_string(), (booked_at + 10).to_string());
    let wrong = cli.as_inst(
        LEAD,
        &[
            "statement",
            "--account",
            SAVINGS,
            "--period-start-ns",
            &start,
            "--period-end-ns",
            &end,
            "--credits",
            "999",
            "--ids",
            "600001",
        ],
        false,
    );
    assert!(wrong.status.success(), "{}", text(&wrong));
    assert!(text(&wrong).contains("MISMATCHED"), "{}", text(&wrong));
    assert!(text(&wrong).contains("credits -1"), "{}", text(&wrong));
    let lead_report = cli.ok_json(LEAD, &["reconcile"]);
    assert_eq!(
        (
            lead_report["statements"].clone(),
            lead_report["mismatched"].clone()
        ),
        (2.into(), 1.into()),
        "{lead_report}"
    );

    let report = cli.ok_json(PARTNER, &["reconcile"]);
    let position = &report["reserve_positions"][0];
    assert_eq!(
        position["account_id"],
        reserve_account(PARTNER) as u64,
        "{report}"
    );
    assert_eq!(position["loans"], 1, "{report}");
    assert_eq!(
        position["committed"], 40000,
        "80% of the 50,000 outstanding: {report}"
    );
    let human = cli.as_inst(PARTNER, &["reconcile"], false);
    assert!(human.status.success(), "{}", text(&human));
    let t = text(&human);
    assert!(t.contains("reserve positions of institution 2"), "{t}");
    assert!(t.contains("reconciliation report of institution 2"), "{t}");

    // Audit node 0's data after a clean stop: OK and the digest every node agreed on.
    let digest = wait_until(Duration::from_secs(20), || {
        let d: Vec<String> = (0..4)
            .filter_map(|i| {
                cluster.status(i)?["ledger_digest"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        (d.len() == 4 && d.iter().all(|x| *x == d[0])).then(|| d[0].clone())
    })
    .expect("nodes agree");
    for i in 0..4 {
        cluster.terminate(i, Duration::from_secs(20));
    }
    let config = cluster.out().join("node-0.toml");
    let config = config.to_str().expect("utf-8");
    let audit = Command::new(&cluster.bin)
        .args(["audit", "--config", config, "--json"])
        .output()
        .expect("run audit");
    assert!(audit.status.success(), "{}", text(&audit));
    let v: Value = serde_json::from_slice(&audit.stdout).expect("audit JSON");
    assert_eq!(
        v["report"]["ledger_digest"].as_str(),
        Some(digest.as_str()),
        "{v}"
    );
    let blocks = v["report"]["blocks"].as_u64().expect("blocks");
    assert_eq!(v["report"]["qcs_verified"].as_u64(), Some(blocks));
    assert!(v["report"]["requests"].as_u64() >= Some(9), "{v}");
    if blocks >= 25 {
        assert!(
            !v["report"]["snapshots_matched"]
                .as_array()
                .expect("list")
                .is_empty(),
            "{v}"
        );
    }
    let data = cluster.out().join("data/node-0");
    let human = Command::new(&cluster.bin)
        .args(["audit", "--data", data.to_str().expect("utf-8")])
        .output()
        .expect("run audit");
    assert!(human.status.success(), "{}", text(&human));
    assert!(
        text(&human).contains("OK: every checksum"),
        "{}",
        text(&human)
    );

    // One flipped byte inside the first record: exit 3 naming segment, offset and height.
    let segment = data.join("log/0000000000.seg");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    bytes[4096 + 120] ^= 0x10;
    std::fs::write(&segment, bytes).expect("write segment");
    let faulty = Command::new(&cluster.bin)
        .args(["audit", "--data", data.to_str().expect("utf-8")])
        .output()
        .expect("run audit");
    assert_eq!(faulty.status.code(), Some(3), "{}", text(&faulty));
    let t = text(&faulty);
    assert!(t.contains("segment 0"), "{t}");
    assert!(t.contains("offset 4096 (height 1)"), "{t}");
    assert!(t.contains("checksum mismatch"), "{t}");
    cluster.kill9(0);
}
