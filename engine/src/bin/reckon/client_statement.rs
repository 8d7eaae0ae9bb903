//! `reckon statement`: post a reconciliation statement for one of your accounts over a period;
//! the ledger compares it with its own figures and the command prints the verdict.

use std::path::PathBuf;

use clap::Args;
use engine::ledger::statement_digest;
use engine::types::{Operation, Query, Reconciliation, Statement};
use serde_json::json;

use crate::client_cmds::{new_id, Common, Session};
use crate::client_out::{self as out, num, CliError};

/// Most ids `--ids-file` may list (one statement's transfer count is a u64; this bounds memory).
const STATEMENT_IDS_MAX: usize = 1 << 24;

#[derive(Args)]
pub struct StatementArgs {
    #[command(flatten)]
    pub common: Common,
    /// Your account the statement covers.
    #[arg(long)]
    pub account: u128,
    /// Period start, inclusive, in ns since the Unix epoch (ledger timestamps).
    #[arg(long)]
    pub period_start_ns: u64,
    /// Period end, exclusive; it must have passed (the ledger refuses an open period).
    #[arg(long)]
    pub period_end_ns: u64,
    /// Your total of posted debits to the account in the period (minor units).
    #[arg(long, default_value_t = 0)]
    pub debits: u128,
    /// Your total of posted credits to the account in the period (minor units).
    #[arg(long, default_value_t = 0)]
    pub credits: u128,
    /// Ids of the transfers you booked in the period, comma separated (their count and digest
    /// are compared with the ledger's).
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<u128>,
    /// A file with one transfer id per line, instead of `--ids`.
    #[arg(long, conflicts_with = "ids")]
    pub ids_file: Option<PathBuf>,
}

fn read_ids(path: &PathBuf) -> Result<Vec<u128>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = line.parse::<u128>().map_err(|e| {
            CliError::Usage(format!("{} line {}: {line:?}: {e}", path.display(), n + 1))
        })?;
        if ids.len() == STATEMENT_IDS_MAX {
            return Err(CliError::Usage(format!(
                "{}: more than {STATEMENT_IDS_MAX} ids",
                path.display()
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

pub fn run_statement(a: StatementArgs) -> Result<(), CliError> {
    let ids = match &a.ids_file {
        Some(path) => read_ids(path)?,
        None => a.ids.clone(),
    };
    let mut s = Session::open(&a.common)?;
    let statement = Statement {
        account_id: a.account,
        debits_total: a.debits,
        credits_total: a.credits,
        ids_digest: statement_digest(&ids),
        period_start_ns: a.period_start_ns,
        period_end_ns: a.period_end_ns,
        transfer_count: ids.len() as u64,
        institution: s.signer.institution,
        ..Statement::default()
    };
    let name = "post_statements";
    let label = (
        format!(
            "statement for account {} [{}, {})",
            a.account, a.period_start_ns, a.period_end_ns
        ),
        json!([num(a.account)]),
    );
    let labels = [label];
    let Some(outcome) = s.submit(Operation::PostStatements, name, &[statement])? else {
        return Ok(());
    };
    let codes = out::event_codes(&outcome, 1)?;
    // The verdict: the report entry for this account and period.
    let mut verdict = None;
    if codes.iter().all(|c| c.is_ok()) {
        let query = Query {
            institution: s.signer.institution,
            timestamp_min: a.period_start_ns,
            timestamp_max: a.period_end_ns,
            ..Query::default()
        };
        let request = s
            .signer
            .reconciliation_report(new_id(), query)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let (_, report) = s.query::<Reconciliation>(request)?;
        verdict = report.into_iter().find(|r| {
            r.account_id == a.account
                && r.period_start_ns == a.period_start_ns
                && r.period_end_ns == a.period_end_ns
        });
    }
    if s.json {
        let mut value = out::commit_json(name, s.node, &outcome, &labels, &codes);
        value["reconciliation"] = verdict
            .as_ref()
            .map_or(serde_json::Value::Null, out::reconciliation_json);
        println!("{value}");
    } else {
        println!("{}", out::commit_text(s.node, &outcome, &labels, &codes));
        if let Some(r) = &verdict {
            println!("{}", out::reconciliation_text(r));
        }
    }
    out::check_events(&codes, outcome.height)
}
