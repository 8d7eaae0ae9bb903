//! The client subcommands for a person at a terminal: `account` and `transfer` here, `loan` and
//! `reconcile` in `client_loan.rs`.
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
use engine::node::init::GENESIS_LEDGER;
use engine::node::protocol::{Outcome, RejectCode};
use engine::types::{account_flags as af, query_flags as qf, Account, Operation, Query, Transfer};
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

/// A random 63-bit id (short enough to type back; never 0, which the ledger refuses).
pub fn new_id() -> u128 {
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
pub struct Session {
    pub json: bool,
    pub signer: Signer,
    client: Client,
    pub node: SocketAddr,
}

impl Session {
    pub fn open(common: &Common) -> Result<Session, CliError> {
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
    /// Submits a create request: Ok(Some(outcome)) when it committed now, Ok(None) when an
    /// identical request committed before (printed here).
    pub fn submit<R: Record>(
        &mut self,
        operation: Operation,
        name: &str,
        records: &[R],
    ) -> Result<Option<Outcome>, CliError> {
        let request = self.sign(operation, records)?;
        match self.client.submit(&request) {
            Ok(outcome) => Ok(Some(outcome)),
            Err(ClientError::Rejected(r)) if r.code == RejectCode::RequestReplayed => {
                out::print_replayed(self.json, name, r.height, r.request_id);
                Ok(None)
            }
            Err(e) => Err(self.node_error(e)),
        }
    }

    pub fn create<R: Record>(
        &mut self,
        operation: Operation,
        name: &str,
        records: &[R],
        labels: &[(String, Value)],
    ) -> Result<(), CliError> {
        match self.submit(operation, name, records)? {
            Some(outcome) => out::print_commit(self.json, name, self.node, &outcome, labels),
            None => Ok(()),
        }
    }

    /// Runs a query and decodes its records.
    pub fn query<R: Record>(
        &mut self,
        request: SignedRequest,
    ) -> Result<(Outcome, Vec<R>), CliError> {
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
