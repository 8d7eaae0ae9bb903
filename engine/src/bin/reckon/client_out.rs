//! Output of the client subcommands: result-code names, the text and JSON renderings of a commit,
//! account, transfer, reserve-position and reconciliation records, and the error type.

use std::net::SocketAddr;
use std::time::Duration;

use engine::client::ClientError;
use engine::codec::decode_results;
use engine::node::protocol::{Outcome, RejectCode};
use engine::types::{
    account_flags as af, transfer_flags as tf, Account, Reconciliation, ReservePosition,
    ResultCode, Transfer, POSITION_BELOW_WARNING, RECONCILIATION_DIGEST_DIFFERS,
};
use serde_json::{json, Value};

/// Why a client subcommand failed. Every variant exits 1 with its message.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("client file {path}: {source}")]
    ClientFile {
        path: std::path::PathBuf,
        source: ClientError,
    },
    #[error("no node reachable (tried {tried}): {last}")]
    Unreachable { tried: String, last: ClientError },
    #[error("the node refused the request: {} ({}): {}", .code.name(), *.code as u32, .message)]
    Refused { code: RejectCode, message: String },
    #[error("no answer from {node} within {timeout:?}; the request may still commit: re-run the same command to retry it safely (an identical request commits at most once)")]
    Timeout { node: SocketAddr, timeout: Duration },
    #[error("{node}: {source}")]
    Node {
        node: SocketAddr,
        source: ClientError,
    },
    #[error("the node's reply does not decode: {0}")]
    Reply(String),
    #[error("{rejected} of {events} events rejected by the ledger (committed at height {height})")]
    EventsRejected {
        rejected: usize,
        events: usize,
        height: u64,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
}

/// `ExceedsCredits` → `exceeds_credits`: the stable snake_case name of a result code.
pub fn code_name(code: ResultCode) -> String {
    let debug = format!("{code:?}");
    let mut out = String::with_capacity(debug.len() + 8);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON number when it fits in u64 (most amounts and ids), else a decimal string.
pub fn num(value: u128) -> Value {
    match u64::try_from(value) {
        Ok(v) => json!(v),
        Err(_) => json!(value.to_string()),
    }
}

fn signed(value: i128) -> Value {
    match i64::try_from(value) {
        Ok(v) => json!(v),
        Err(_) => json!(value.to_string()),
    }
}

/// The per-event results of a committed create request: (index, code) for every event (the
/// ledger lists only the events that are not plain `ok`).
pub fn event_codes(outcome: &Outcome, events: usize) -> Result<Vec<ResultCode>, CliError> {
    let listed = decode_results(&outcome.reply).map_err(|e| CliError::Reply(e.to_string()))?;
    let mut codes = vec![ResultCode::Ok; events];
    for result in listed {
        let slot = codes
            .get_mut(result.index as usize)
            .ok_or_else(|| CliError::Reply(format!("result for event {}", result.index)))?;
        *slot = result.code;
    }
    Ok(codes)
}

/// The JSON object of a committed create request.
pub fn commit_json(
    operation: &str,
    node: SocketAddr,
    outcome: &Outcome,
    labels: &[(String, Value)],
    codes: &[ResultCode],
) -> Value {
    let events: Vec<Value> = labels
        .iter()
        .zip(codes)
        .enumerate()
        .map(|(index, ((_, ids), code))| {
            json!({
                "index": index,
                "ids": ids,
                "code": *code as u32,
                "result": code_name(*code),
                "ok": code.is_ok(),
            })
        })
        .collect();
    json!({
        "ok": codes.iter().all(|c| c.is_ok()),
        "operation": operation,
        "height": outcome.height,
        "timestamp_ns": outcome.timestamp_ns,
        "node": node.to_string(),
        "request_id": format!("{:032x}", outcome.request_id),
        "events": events,
    })
}

/// The text lines of a committed create request: one per event, then the height.
pub fn commit_text(
    node: SocketAddr,
    outcome: &Outcome,
    labels: &[(String, Value)],
    codes: &[ResultCode],
) -> String {
    let mut lines = Vec::with_capacity(labels.len() + 1);
    for ((label, _), code) in labels.iter().zip(codes) {
        lines.push(match code {
            ResultCode::Ok => format!("{label}: ok"),
            c if c.is_ok() => format!("{label}: ok, {} ({})", code_name(*c), *c as u32),
            c => format!("{label}: REJECTED: {} ({})", code_name(*c), *c as u32),
        });
    }
    lines.push(format!(
        "committed at height {} via {node} (request {:032x})",
        outcome.height, outcome.request_id
    ));
    lines.join("\n")
}

/// An error (exit 1) when any event was rejected.
pub fn check_events(codes: &[ResultCode], height: u64) -> Result<(), CliError> {
    let rejected = codes.iter().filter(|c| !c.is_ok()).count();
    if rejected == 0 {
        return Ok(());
    }
    Err(CliError::EventsRejected {
        rejected,
        events: codes.len(),
        height,
    })
}

/// Prints a committed create request: one line per event, then the height (or one JSON object).
/// Returns an error (exit 1) when any event was rejected.
pub fn print_commit(
    json_out: bool,
    operation: &str,
    node: SocketAddr,
    outcome: &Outcome,
    labels: &[(String, Value)],
) -> Result<(), CliError> {
    let codes = event_codes(outcome, labels.len())?;
    if json_out {
        println!("{}", commit_json(operation, node, outcome, labels, &codes));
    } else {
        println!("{}", commit_text(node, outcome, labels, &codes));
    }
    check_events(&codes, outcome.height)
}

/// An identical request committed before (`request_replayed`): its results are not repeated.
pub fn print_replayed(json_out: bool, operation: &str, height: u64, request_id: u128) {
    if json_out {
        let out = json!({
            "ok": true,
            "replayed": true,
            "operation": operation,
            "height": height,
            "request_id": format!("{request_id:032x}"),
        });
        println!("{out}");
    } else {
        println!(
            "already committed at height {height}: this exact request was submitted before \
             (request {request_id:032x}); its results are not repeated"
        );
    }
}

fn flag_names(flags: u16, names: &[(u16, &str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

pub fn account_flag_names(flags: u16) -> String {
    flag_names(
        flags,
        &[
            (af::LINKED, "linked"),
            (
                af::DEBITS_MUST_NOT_EXCEED_CREDITS,
                "debits-must-not-exceed-credits",
            ),
            (
                af::CREDITS_MUST_NOT_EXCEED_DEBITS,
                "credits-must-not-exceed-debits",
            ),
            (af::CLOSED, "closed"),
        ],
    )
}

fn transfer_flag_names(flags: u16) -> String {
    flag_names(
        flags,
        &[
            (tf::LINKED, "linked"),
            (tf::PENDING, "pending"),
            (tf::POST_PENDING, "post-pending"),
            (tf::VOID_PENDING, "void-pending"),
            (tf::BALANCING_DEBIT, "balancing-debit"),
            (tf::BALANCING_CREDIT, "balancing-credit"),
            (tf::CLOSING_DEBIT, "closing-debit"),
            (tf::CLOSING_CREDIT, "closing-credit"),
        ],
    )
}

/// Posted credits minus posted debits.
pub fn balance(a: &Account) -> i128 {
    let credits = i128::try_from(a.credits_posted).unwrap_or(i128::MAX);
    let debits = i128::try_from(a.debits_posted).unwrap_or(i128::MAX);
    credits.saturating_sub(debits)
}

pub fn account_json(a: &Account) -> Value {
    json!({
        "id": num(a.id),
        "institution": a.institution,
        "ledger": a.ledger,
        "code": a.code,
        "flags": account_flag_names(a.flags),
        "debits_posted": num(a.debits_posted),
        "debits_pending": num(a.debits_pending),
        "credits_posted": num(a.credits_posted),
        "credits_pending": num(a.credits_pending),
        "balance": signed(balance(a)),
        "user_data_64": a.user_data_64,
        "timestamp_ns": a.timestamp,
    })
}

pub fn account_text(a: &Account) -> String {
    format!(
        "account {}  institution {}  ledger {}  code {}  flags {}\n  \
         balance {} (posted credits {} - posted debits {})\n  \
         pending: debits {}  credits {}",
        a.id,
        a.institution,
        a.ledger,
        a.code,
        account_flag_names(a.flags),
        balance(a),
        a.credits_posted,
        a.debits_posted,
        a.debits_pending,
        a.credits_pending
    )
}

pub fn transfer_json(t: &Transfer, account: u128) -> Value {
    json!({
        "id": num(t.id),
        "debit_account_id": num(t.debit_account_id),
        "credit_account_id": num(t.credit_account_id),
        "amount": num(t.amount),
        "direction": if t.debit_account_id == account { "debit" } else { "credit" },
        "institution": t.institution,
        "ledger": t.ledger,
        "code": t.code,
        "flags": transfer_flag_names(t.flags),
        "pending_id": num(t.pending_id),
        "timestamp_ns": t.timestamp,
    })
}

pub fn transfer_text(t: &Transfer, account: u128) -> String {
    let (sign, other) = if t.debit_account_id == account {
        ('-', t.credit_account_id)
    } else {
        ('+', t.debit_account_id)
    };
    format!(
        "{:>20}  {sign}{:<14} {} {:<12} code {:<4} flags {:<12} by institution {}  at {} ns",
        t.id,
        t.amount,
        if sign == '-' { "to  " } else { "from" },
        other,
        t.code,
        transfer_flag_names(t.flags),
        t.institution,
        t.timestamp
    )
}

pub fn position_json(p: &ReservePosition) -> Value {
    json!({
        "account_id": num(p.account_id),
        "institution": p.institution,
        "ledger": p.ledger,
        "balance": signed(p.balance),
        "floor": num(p.floor),
        "warning": num(p.warning),
        "committed": num(p.committed),
        "undrawn": num(p.undrawn),
        "loans": p.loans_count,
        "below_warning": p.flags & POSITION_BELOW_WARNING != 0,
    })
}

pub fn position_text(p: &ReservePosition) -> String {
    let status = if p.flags & POSITION_BELOW_WARNING != 0 {
        "BELOW WARNING"
    } else {
        "ok"
    };
    format!(
        "reserve {}  balance {}  floor {}  warning {}  committed {}  undrawn {}  loans {}  {status}",
        p.account_id, p.balance, p.floor, p.warning, p.committed, p.undrawn, p.loans_count
    )
}

pub fn reconciliation_json(r: &Reconciliation) -> Value {
    json!({
        "account_id": num(r.account_id),
        "period_start_ns": r.period_start_ns,
        "period_end_ns": r.period_end_ns,
        "matched": r.matched(),
        "ids_digest_differs": r.flags & RECONCILIATION_DIGEST_DIFFERS != 0,
        "debits_ledger": num(r.debits_ledger),
        "credits_ledger": num(r.credits_ledger),
        "debits_diff": signed(r.debits_diff),
        "credits_diff": signed(r.credits_diff),
        "count_ledger": r.count_ledger,
        "count_diff": r.count_diff,
        "posted_at_ns": r.timestamp,
    })
}

pub fn reconciliation_text(r: &Reconciliation) -> String {
    let verdict = if r.matched() { "MATCHED" } else { "MISMATCHED" };
    format!(
        "account {} [{}, {}) {verdict}: ledger debits {} credits {} transfers {}; \
         statement - ledger: debits {:+} credits {:+} transfers {:+}{}",
        r.account_id,
        r.period_start_ns,
        r.period_end_ns,
        r.debits_ledger,
        r.credits_ledger,
        r.count_ledger,
        r.debits_diff,
        r.credits_diff,
        r.count_diff,
        if r.flags & RECONCILIATION_DIGEST_DIFFERS != 0 {
            "; transfer id sets differ"
        } else {
            ""
        }
    )
}
