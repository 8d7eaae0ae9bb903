//! The client subcommands for a person at a terminal: `account`, `transfer`, `loan`, `reconcile`.
//!
//! Each loads the institution's client file (`clients/institution-<id>.toml` from `reckon init`),
//! connects to the first node that answers, signs one request, waits for its commit or answer and
//! prints the result (text, or one JSON object with `--json`). The request id is derived from the
//! operation and body, so re-running the same command is an idempotent retry (the node answers
//! `request_replayed` with the original height). Exit codes: 0 ok, 1 any failure (including a
//! rejected event), 2 usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use engine::client::{Client, ClientError, ClientFile, Signer};
use engine::codec::{decode_body, encode_body, Record};
use engine::crypto::SignedRequest;
use engine::node::init::{lead_funding_account, reserve_account, GENESIS_LEDGER};
use engine::node::protocol::{Outcome, RejectCode};
use engine::types::{
    account_flags as af, query_flags as qf, Account, Disbursement, Loan, Operation, Query,
    Reconciliation, Repayment, ReservePosition, Transfer,
};
use serde_json::{json, Value};

use crate::client_out::{self as out, num, CliError};

#[derive(Args)]
pub struct Common {
    /// The institution's client file (`clients/institution-<id>.toml` written by `reckon init`).
    #[arg(long)]
    pub client: PathBuf,
    /// Use this node's client address instead of the file's node list.
    #[arg(long)]
    pub node: Option<SocketAddr>,
    /// Seconds to wait for the commit or the answer.
    #[arg(long, default_value_t = 15)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AccountCmd {
    /// Create an account (owned by your institution; the operator may name another `--owner`).
    Create(AccountCreate),
    /// Show accounts and their balances (only accounts your institution owns are visible).
    Show(AccountShow),
    /// List an account's transfers, oldest first.
    History(AccountHistory),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AccountFlag {
    /// Refuse any transfer that would make posted debits exceed posted credits (no overdraft).
    DebitsMustNotExceedCredits,
    CreditsMustNotExceedDebits,
}

#[derive(Args)]
pub struct AccountCreate {
    #[command(flatten)]
    pub common: Common,
    /// Account id (generated when absent).
    #[arg(long)]
    pub id: Option<u128>,
    #[arg(long, default_value_t = GENESIS_LEDGER)]
    pub ledger: u32,
    /// Account code (the chart-of-accounts kind; must not be 0).
    #[arg(long, default_value_t = 1)]
    pub code: u16,
    /// Balance rules, comma separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub flags: Vec<AccountFlag>,
    /// Owning institution (default: the client file's institution).
    #[arg(long)]
    pub owner: Option<u32>,
    /// Free-form reference stored with the account.
    #[arg(long, default_value_t = 0)]
    pub user_data: u64,
}

#[derive(Args)]
pub struct AccountShow {
    #[command(flatten)]
    pub common: Common,
    /// Account id (repeat for several).
    #[arg(long = "id", required = true)]
    pub ids: Vec<u128>,
}

#[derive(Args)]
pub struct AccountHistory {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub id: u128,
    /// Most transfers to list.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Newest first (the newest `--limit`).
    #[arg(long)]
    pub newest_first: bool,
}

#[derive(Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub common: Common,
    /// Debit account (must be your institution's).
    #[arg(long)]
    pub from: u128,
    /// Credit account.
    #[arg(long)]
    pub to: u128,
    /// Amount in minor units (fen).
    #[arg(long)]
    pub amount: u128,
    /// Transfer id (generated when absent).
    #[arg(long)]
    pub id: Option<u128>,
    #[arg(long, default_value_t = GENESIS_LEDGER)]
    pub ledger: u32,
    #[arg(long, default_value_t = 1)]
    pub code: u16,
    /// A reserve top-up (`--to` must be your registered reserve account).
    #[arg(long)]
    pub top_up: bool,
}

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
    /// Only statements whose period starts at or before this time (ns; 0: no bound).
    #[arg(long, default_value_t = 0)]
    pub until_ns: u64,
}

/// A random 63-bit id (short enough to type back; never 0, which the ledger refuses).
fn new_id() -> u128 {
    loop {
        let id = rand::random::<u64>() >> 1;
        if id != 0 {
            return id as u128;
        }
    }
}

/// The request id of (operation, body): an identical command is an idempotent retry.
fn request_id(operation: Operation, body: &[u8]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"reckon-cli.request-id.v1");
    hasher.update(&[operation as u8]);
    hasher.update(body);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    u128::from_le_bytes(bytes).max(1)
}

/// A signer and a connection to one node.
struct Session {
    json: bool,
    signer: Signer,
    client: Client,
    node: SocketAddr,
}

impl Session {
    fn open(common: &Common) -> Result<Session, CliError> {
        let file_err = |source| CliError::ClientFile {
            path: common.client.clone(),
            source,
        };
        let file = ClientFile::load(&common.client).map_err(file_err)?;
        let signer = file.signer().map_err(file_err)?;
        let tls = file.tls().map_err(file_err)?;
        let nodes = match common.node {
            Some(addr) => vec![addr],
            None => file.nodes.clone(),
        };
        let mut last = None;
        for addr in &nodes {
            match Client::connect(*addr, &tls) {
                Ok(mut client) => {
                    client.timeout = Duration::from_secs(common.timeout_s.max(1));
                    return Ok(Session {
                        json: common.json,
                        signer,
                        client,
                        node: *addr,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        let tried: Vec<String> = nodes.iter().map(|a| a.to_string()).collect();
        Err(CliError::Unreachable {
            tried: tried.join(", "),
            last: last.unwrap_or_else(|| ClientError::Tls("the client file lists no node".into())),
        })
    }

    fn sign<R: Record>(
        &self,
        operation: Operation,
        records: &[R],
    ) -> Result<SignedRequest, CliError> {
        let body = encode_body(records);
        let id = request_id(operation, &body);
        self.signer
            .sign(id, operation, body)
            .map_err(|e| CliError::Usage(format!("request does not encode: {e}")))
    }

    fn node_error(&self, error: ClientError) -> CliError {
        match error {
            ClientError::Rejected(r) => CliError::Refused {
                code: r.code,
                message: r.message,
            },
            ClientError::Timeout(timeout) => CliError::Timeout {
                node: self.node,
                timeout,
            },
            source => CliError::Node {
                node: self.node,
                source,
            },
        }
    }

    /// Submits a create request and prints its per-event results.
    fn create<R: Record>(
        &mut self,
        operation: Operation,
        name: &str,
        records: &[R],
        labels: &[(String, Value)],
    ) -> Result<(), CliError> {
        let request = self.sign(operation, records)?;
        match self.client.submit(&request) {
            Ok(outcome) => out::print_commit(self.json, name, self.node, &outcome, labels),
            Err(ClientError::Rejected(r)) if r.code == RejectCode::RequestReplayed => {
                out::print_replayed(self.json, name, r.height, r.request_id);
                Ok(())
            }
            Err(e) => Err(self.node_error(e)),
        }
    }

    /// Runs a query and decodes its records.
    fn query<R: Record>(&mut self, request: SignedRequest) -> Result<(Outcome, Vec<R>), CliError> {
        let outcome = self
            .client
            .query(&request)
            .map_err(|e| self.node_error(e))?;
        let records =
            decode_body::<R>(&outcome.reply).map_err(|e| CliError::Reply(e.to_string()))?;
        Ok((outcome, records))
    }
}

pub fn run_account(cmd: AccountCmd) -> Result<(), CliError> {
    match cmd {
        AccountCmd::Create(a) => {
            let mut s = Session::open(&a.common)?;
            let flags = a.flags.iter().fold(0u16, |f, flag| {
                f | match flag {
                    AccountFlag::DebitsMustNotExceedCredits => af::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    AccountFlag::CreditsMustNotExceedDebits => af::CREDITS_MUST_NOT_EXCEED_DEBITS,
                }
            });
            let account = Account {
                id: a.id.unwrap_or_else(new_id),
                institution: a.owner.unwrap_or(s.signer.institution),
                ledger: a.ledger,
                code: a.code,
                flags,
                user_data_64: a.user_data,
                ..Account::default()
            };
            let label = (format!("account {}", account.id), json!([num(account.id)]));
            s.create(
                Operation::CreateAccounts,
                "create_accounts",
                &[account],
                &[label],
            )
        }
        AccountCmd::Show(a) => {
            let mut s = Session::open(&a.common)?;
            let request = s
                .signer
                .lookup_accounts(new_id(), &a.ids)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let (outcome, accounts) = s.query::<Account>(request)?;
            let missing: Vec<u128> = a
                .ids
                .iter()
                .copied()
                .filter(|id| !accounts.iter().any(|acc| acc.id == *id))
                .collect();
            if s.json {
                let list: Vec<Value> = accounts.iter().map(out::account_json).collect();
                let missing_json: Vec<Value> = missing.iter().map(|id| num(*id)).collect();
                let value = json!({
                    "ok": missing.is_empty(),
                    "height": outcome.height,
                    "accounts": list,
                    "missing": missing_json,
                });
                println!("{value}");
            } else {
                for account in &accounts {
                    println!("{}", out::account_text(account));
                }
                println!("as of height {} via {}", outcome.height, s.node);
            }
            if missing.is_empty() {
                return Ok(());
            }
            let ids: Vec<String> = missing.iter().map(|id| id.to_string()).collect();
            Err(CliError::NotFound(format!(
                "unknown account {} (or not owned by institution {})",
                ids.join(", "),
                s.signer.institution
            )))
        }
        AccountCmd::History(a) => {
            let mut s = Session::open(&a.common)?;
            let query = Query {
                id: a.id,
                limit: a.limit,
                flags: if a.newest_first { qf::REVERSED } else { 0 },
                ..Query::default()
            };
            let request = s
                .signer
                .get_account_transfers(new_id(), query)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let (outcome, transfers) = s.query::<Transfer>(request)?;
            if s.json {
                let list: Vec<Value> = transfers
                    .iter()
                    .map(|t| out::transfer_json(t, a.id))
                    .collect();
                let value = json!({"ok": true, "height": outcome.height, "account_id": num(a.id), "transfers": list});
                println!("{value}");
            } else {
                println!(
                    "account {}: {} transfers (as of height {} via {})",
                    a.id,
                    transfers.len(),
                    outcome.height,
                    s.node
                );
                for t in &transfers {
                    println!("{}", out::transfer_text(t, a.id));
                }
            }
            Ok(())
        }
    }
}

pub fn run_transfer(a: TransferArgs) -> Result<(), CliError> {
    if a.amount == 0 {
        return Err(CliError::Usage("--amount must be greater than 0".into()));
    }
    let mut s = Session::open(&a.common)?;
    let transfer = Transfer {
        id: a.id.unwrap_or_else(new_id),
        debit_account_id: a.from,
        credit_account_id: a.to,
        amount: a.amount,
        institution: s.signer.institution,
        ledger: a.ledger,
        code: a.code,
        ..Transfer::default()
    };
    let (operation, name) = if a.top_up {
        (Operation::TopUp, "top_up")
    } else {
        (Operation::CreateTransfers, "create_transfers")
    };
    let label = (
        format!(
            "transfer {} ({} -> {}, amount {})",
            transfer.id, a.from, a.to, a.amount
        ),
        json!([num(transfer.id)]),
    );
    s.create(operation, name, &[transfer], &[label])
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
