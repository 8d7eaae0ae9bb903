//! `reckon loan create|disburse|repay` and `reckon reconcile` (see `client_cmds.rs` for the
//! session, request ids and exit codes).

use clap::{Args, Subcommand};
use engine::client::ClientError;
use engine::node::init::{lead_funding_account, reserve_account, GENESIS_LEDGER};
use engine::types::{
    Disbursement, Loan, Operation, Query, Reconciliation, Repayment, ReservePosition,
};
use serde_json::json;

use crate::client_cmds::{new_id, Common, Session};
use crate::client_out::{self as out, num, CliError};

#[derive(Subcommand)]
pub enum LoanCmd {
    /// Create a joint loan (by the partner bank, or the operator).
    Create(LoanCreate),
    /// Disburse on a loan (by the lead bank): split into a partner and a lead transfer.
    Disburse(LoanDisburse),
    /// Repay principal and interest on a loan (by the lead bank), split back.
    Repay(LoanRepay),
}

#[derive(Args)]
pub struct LoanCreate {
    #[command(flatten)]
    pub common: Common,
    /// Loan id (generated when absent).
    #[arg(long)]
    pub id: Option<u128>,
    /// The borrower's account (owned by the lead bank).
    #[arg(long)]
    pub borrower: u128,
    /// Lead bank's institution id.
    #[arg(long)]
    pub lead: u32,
    /// Partner bank's institution id (default: the client file's institution).
    #[arg(long)]
    pub partner: Option<u32>,
    /// Partner's registered reserve account (default: its `reckon init` reserve, id·1000+1).
    #[arg(long)]
    pub reserve: Option<u128>,
    /// Lead's funding account (default: its `reckon init` funding account, id·1000+2).
    #[arg(long)]
    pub funding: Option<u128>,
    /// Loan limit in minor units.
    #[arg(long)]
    pub principal_max: u128,
    /// The partner's share of every disbursement, in basis points (8000 = 80%).
    #[arg(long, default_value_t = 8_000)]
    pub share_bps: u16,
    #[arg(long, default_value_t = GENESIS_LEDGER)]
    pub ledger: u32,
}

#[derive(Args)]
pub struct LoanDisburse {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub loan: u128,
    #[arg(long)]
    pub amount: u128,
    /// Ids of the two transfers (generated when absent).
    #[arg(long)]
    pub partner_transfer_id: Option<u128>,
    #[arg(long)]
    pub lead_transfer_id: Option<u128>,
}

#[derive(Args)]
pub struct LoanRepay {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub loan: u128,
    #[arg(long)]
    pub principal: u128,
    #[arg(long, default_value_t = 0)]
    pub interest: u128,
    #[arg(long)]
    pub partner_transfer_id: Option<u128>,
    #[arg(long)]
    pub lead_transfer_id: Option<u128>,
}

#[derive(Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only statements whose period starts at or after this time (ns since the epoch).
    #[arg(long, default_value_t = 0)]
    pub since_ns: u64,
    /// Only statements whose period ends at or before this time (ns; 0: no bound).
    #[arg(long, default_value_t = 0)]
    pub until_ns: u64,
}

pub fn run_loan(cmd: LoanCmd) -> Result<(), CliError> {
    match cmd {
        LoanCmd::Create(a) => {
            let mut s = Session::open(&a.common)?;
            let partner = a.partner.unwrap_or(s.signer.institution);
            let loan = Loan {
                id: a.id.unwrap_or_else(new_id),
                borrower_account_id: a.borrower,
                reserve_account_id: a.reserve.unwrap_or_else(|| reserve_account(partner)),
                funding_account_id: a.funding.unwrap_or_else(|| lead_funding_account(a.lead)),
                principal_max: a.principal_max,
                lead: a.lead,
                partner,
                ledger: a.ledger,
                partner_share_bps: a.share_bps,
                ..Loan::default()
            };
            let label = (
                format!(
                    "loan {} (lead {}, partner {} at {} bps, reserve {}, funding {}, borrower {})",
                    loan.id,
                    loan.lead,
                    partner,
                    loan.partner_share_bps,
                    loan.reserve_account_id,
                    loan.funding_account_id,
                    loan.borrower_account_id
                ),
                json!([num(loan.id)]),
            );
            s.create(Operation::CreateLoans, "create_loans", &[loan], &[label])
        }
        LoanCmd::Disburse(a) => {
            let mut s = Session::open(&a.common)?;
            let d = Disbursement {
                partner_transfer_id: a.partner_transfer_id.unwrap_or_else(new_id),
                lead_transfer_id: a.lead_transfer_id.unwrap_or_else(new_id),
                loan_id: a.loan,
                amount: a.amount,
                ..Disbursement::default()
            };
            let label = (
                format!(
                    "disbursement of {} on loan {} (partner transfer {}, lead transfer {})",
                    d.amount, d.loan_id, d.partner_transfer_id, d.lead_transfer_id
                ),
                json!([num(d.partner_transfer_id), num(d.lead_transfer_id)]),
            );
            s.create(Operation::Disburse, "disburse", &[d], &[label])
        }
        LoanCmd::Repay(a) => {
            let mut s = Session::open(&a.common)?;
            let r = Repayment {
                partner_transfer_id: a.partner_transfer_id.unwrap_or_else(new_id),
                lead_transfer_id: a.lead_transfer_id.unwrap_or_else(new_id),
                loan_id: a.loan,
                principal: a.principal,
                interest: a.interest,
                ..Repayment::default()
            };
            let label = (
                format!(
                    "repayment of {} principal + {} interest on loan {} (partner transfer {}, lead transfer {})",
                    r.principal, r.interest, r.loan_id, r.partner_transfer_id, r.lead_transfer_id
                ),
                json!([num(r.partner_transfer_id), num(r.lead_transfer_id)]),
            );
            s.create(Operation::Repay, "repay", &[r], &[label])
        }
    }
}

pub fn run_reconcile(a: ReconcileArgs) -> Result<(), CliError> {
    let mut s = Session::open(&a.common)?;
    let usage = |e: ClientError| CliError::Usage(e.to_string());
    let positions_request = s.signer.reserve_positions(new_id()).map_err(usage)?;
    let (outcome, positions) = s.query::<ReservePosition>(positions_request)?;
    let query = Query {
        institution: s.signer.institution,
        timestamp_min: a.since_ns,
        timestamp_max: a.until_ns,
        ..Query::default()
    };
    let report_request = s
        .signer
        .reconciliation_report(new_id(), query)
        .map_err(usage)?;
    let (report_outcome, report) = s.query::<Reconciliation>(report_request)?;
    let mismatched = report.iter().filter(|r| !r.matched()).count();
    if s.json {
        let value = json!({
            "ok": true,
            "institution": s.signer.institution,
            "height": report_outcome.height.max(outcome.height),
            "reserve_positions": positions.iter().map(out::position_json).collect::<Vec<_>>(),
            "reconciliation": report.iter().map(out::reconciliation_json).collect::<Vec<_>>(),
            "statements": report.len(),
            "mismatched": mismatched,
        });
        println!("{value}");
        return Ok(());
    }
    let institution = s.signer.institution;
    println!(
        "reserve positions of institution {institution} (height {} via {}):",
        outcome.height, s.node
    );
    if positions.is_empty() {
        println!("  (no registered reserve)");
    }
    for p in &positions {
        println!("  {}", out::position_text(p));
    }
    println!(
        "reconciliation report of institution {institution}: {} statements, {} matched, {mismatched} mismatched",
        report.len(),
        report.len() - mismatched
    );
    for r in &report {
        println!("  {}", out::reconciliation_text(r));
    }
    Ok(())
}
