//! `reckon demo` closing: partner statements, reserve positions, reconciliation results and the
//! nodes' ledger digests, queried from the cluster.

use std::time::{Duration, Instant};

use engine::client::{Client, Signer};
use engine::codec::decode_body;
use engine::ledger::statement_digest;
use engine::node::init::reserve_account;
use engine::types::{
    Query, Reconciliation, ReservePosition, Statement, Transfer, POSITION_BELOW_WARNING,
    REPLY_RECORDS_MAX,
};

use super::demo_cluster::{Consortium, BANKS, NODES};
use super::demo_load::{submit_ok, Shared, PARTNERS};

/// Longest wait for every node to report one ledger digest at one height.
const AGREE_TIMEOUT: Duration = Duration::from_secs(20);
/// The partner whose statement deliberately leaves out one transfer (shown as MISMATCHED).
const SLOPPY_PARTNER: u32 = 4;

pub fn name(institution: u32) -> &'static str {
    BANKS
        .get((institution as usize).wrapping_sub(1))
        .copied()
        .unwrap_or("operator")
}

pub fn yuan(amount: i128) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let magnitude = amount.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

fn query<R: engine::codec::Record>(
    client: &mut Client,
    request: Result<engine::crypto::SignedRequest, engine::client::ClientError>,
) -> Result<Vec<R>, String> {
    let request = request.map_err(|e| e.to_string())?;
    let outcome = client.query(&request).map_err(|e| format!("query: {e}"))?;
    decode_body::<R>(&outcome.reply).map_err(|e| format!("query reply: {e}"))
}

/// The partner's reserve history as it booked it (paged, oldest first).
fn booked(client: &mut Client, signer: &Signer, shared: &Shared) -> Result<Vec<Transfer>, String> {
    let account = reserve_account(signer.institution);
    let mut all: Vec<Transfer> = Vec::new();
    let mut from = 0;
    loop {
        let q = Query {
            id: account,
            timestamp_min: from,
            ..Query::default()
        };
        let page: Vec<Transfer> = query(client, signer.get_account_transfers(shared.id(), q))?;
        let full = page.len() >= REPLY_RECORDS_MAX;
        from = page.last().map_or(from, |t| t.timestamp + 1);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// Each partner posts a statement for its reserve over [0, end); returns `end`.
pub fn post_statements(consortium: &Consortium, shared: &Shared) -> Result<u64, String> {
    let mut books = Vec::new();
    for (n, partner) in PARTNERS.iter().enumerate() {
        let file = consortium.client_file(*partner)?;
        let signer = file.signer().map_err(|e| e.to_string())?;
        let tls = file.tls().map_err(|e| e.to_string())?;
        let mut client =
            Client::connect(consortium.client_addr(n), &tls).map_err(|e| e.to_string())?;
        let history = booked(&mut client, &signer, shared)?;
        books.push((signer, client, history));
    }
    let end = books
        .iter()
        .filter_map(|b| b.2.last().map(|t| t.timestamp))
        .max()
        .unwrap_or(0)
        + 1;
    std::thread::sleep(Duration::from_millis(20));
    for (signer, mut client, mut history) in books {
        let account = reserve_account(signer.institution);
        if signer.institution == SLOPPY_PARTNER {
            history.pop(); // The deliberate mistake: one transfer missing from its books.
        }
        let sum = |debit: bool| -> u128 {
            history
                .iter()
                .filter(|t| (t.debit_account_id == account) == debit)
                .map(|t| t.amount)
                .sum()
        };
        let ids: Vec<u128> = history.iter().map(|t| t.id).collect();
        let statement = Statement {
            account_id: account,
            debits_total: sum(true),
            credits_total: sum(false),
            ids_digest: statement_digest(&ids),
            period_start_ns: 0,
            period_end_ns: end,
            transfer_count: ids.len() as u64,
            institution: signer.institution,
            ..Statement::default()
        };
        let request = signer
            .post_statements(shared.id(), &[statement])
            .map_err(|e| e.to_string())?;
        submit_ok(&mut client, &request, "statement")?;
    }
    Ok(end)
}

/// Reserve positions and reconciliation results as each partner sees them; returns the lines
/// for summary.json as (positions, reconciliations).
pub fn print_positions_and_reconciliation(
    consortium: &Consortium,
    shared: &Shared,
    end: u64,
) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), String> {
    println!("\nreserve positions (CNY), queried as each partner bank");
    println!(
        "{:<10} {:>18} {:>14} {:>14} {:>18} {:>18}  status",
        "partner", "balance", "floor", "warning", "committed", "undrawn"
    );
    let mut positions_json = Vec::new();
    let mut reconciliations = Vec::new();
    let mut lines = Vec::new();
    for (n, partner) in PARTNERS.iter().enumerate() {
        let file = consortium.client_file(*partner)?;
        let signer = file.signer().map_err(|e| e.to_string())?;
        let tls = file.tls().map_err(|e| e.to_string())?;
        let addr = consortium.client_addr((n + 1) % NODES);
        let mut client = Client::connect(addr, &tls).map_err(|e| e.to_string())?;
        let positions: Vec<ReservePosition> =
            query(&mut client, signer.reserve_positions(shared.id()))?;
        for p in positions {
            print_position(*partner, &p);
            positions_json.push(serde_json::json!({
                "bank": name(*partner), "account": p.account_id.to_string(),
                "balance_fen": p.balance.to_string(), "committed_fen": p.committed.to_string(),
                "undrawn_fen": p.undrawn.to_string(), "loans": p.loans_count,
            }));
        }
        let q = Query {
            institution: *partner,
            timestamp_min: 0,
            timestamp_max: end,
            ..Query::default()
        };
        let report: Vec<Reconciliation> =
            query(&mut client, signer.reconciliation_report(shared.id(), q))?;
        for r in report {
            lines.push(reconciliation_line(*partner, &r));
            reconciliations.push(serde_json::json!({
                "bank": name(*partner), "account": r.account_id.to_string(),
                "matched": r.matched(), "transfers": r.count_ledger, "count_diff": r.count_diff,
            }));
        }
    }
    println!("\nreconciliation results (statement over [0, {end}) ns)");
    for line in lines {
        println!("{line}");
    }
    Ok((positions_json, reconciliations))
}

fn print_position(partner: u32, p: &ReservePosition) {
    let status = if p.flags & POSITION_BELOW_WARNING != 0 {
        "BELOW WARNING"
    } else {
        "ok"
    };
    println!(
        "{:<10} {:>18} {:>14} {:>14} {:>18} {:>18}  {status}",
        name(partner),
        yuan(p.balance),
        yuan(p.floor as i128),
        yuan(p.warning as i128),
        yuan(p.committed as i128),
        yuan(p.undrawn as i128)
    );
}

fn reconciliation_line(partner: u32, r: &Reconciliation) -> String {
    if r.matched() {
        return format!(
            "{:<10} account {}: MATCHED ({} transfers, debits {}, credits {})",
            name(partner),
            r.account_id,
            r.count_ledger,
            yuan(r.debits_ledger as i128),
            yuan(r.credits_ledger as i128)
        );
    }
    format!(
        "{:<10} account {}: MISMATCHED (statement minus ledger: debits {}, credits {}, count {:+})",
        name(partner),
        r.account_id,
        yuan(r.debits_diff),
        yuan(r.credits_diff),
        r.count_diff
    )
}

/// Waits until all nodes report one height and ledger digest; prints and returns the digests.
pub fn agreed_digests(consortium: &Consortium) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + AGREE_TIMEOUT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let statuses: Vec<(u64, String)> = (0..NODES)
            .filter_map(|i| consortium.status(i))
            .filter_map(|s| {
                let height = s["height"].as_u64()?;
                Some((height, s["ledger_digest"].as_str()?.to_string()))
            })
            .collect();
        let agreed = statuses.len() == NODES && statuses.iter().all(|s| s.1 == statuses[0].1);
        last = statuses;
        if agreed {
            println!("\nledger digest per node (all equal)");
            for (i, (height, digest)) in last.iter().enumerate() {
                println!("node-{i}  height {height:>6}  {digest}");
            }
            return Ok(last.into_iter().map(|s| s.1).collect());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "nodes did not agree on one ledger digest within {AGREE_TIMEOUT:?}: {last:?}"
    ))
}
