//! `reckon`: the Reckon node binary. Exit codes: 0 ok, 1 failure, 2 usage (clap), 3 `audit` found
//! a fault.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "reckon/audit_cmd.rs"]
mod audit_cmd;
#[path = "reckon/client_cmds.rs"]
mod client_cmds;
#[path = "reckon/client_loan.rs"]
mod client_loan;
#[path = "reckon/client_out.rs"]
mod client_out;
#[path = "reckon/client_statement.rs"]
mod client_statement;
#[path = "reckon/demo.rs"]
mod demo;
#[path = "reckon/ledger_demo.rs"]
mod ledger_demo;
#[path = "reckon/node_cmds.rs"]
mod node_cmds;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reckon",
    version,
    about = "Reckon: a consortium ledger engine for joint-loan reserve funds"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a 4-node consortium on 127.0.0.1, drive a joint-loan workload through it for
    /// `--duration` seconds, and print throughput, latency percentiles, the partner banks' reserve
    /// positions, reconciliation results and every node's ledger digest (files in `--out`).
    Demo(demo::Args),
    /// Run an in-memory consortium (a lead bank, three partner banks, an operator) through
    /// reserves, loans, top-ups, disbursements, repayments and statements, and print the partner
    /// banks' reserve positions, the reconciliation report and a throughput figure.
    LedgerDemo(ledger_demo::Args),
    /// Write a consortium: CA, node and client certificates, validator (Ed25519) and institution
    /// (BLS) keys, genesis, node configs.
    Init(node_cmds::InitArgs),
    /// Run a validator node until SIGTERM/SIGINT (then drain and exit 0).
    Node(node_cmds::NodeArgs),
    /// Print a node's status (height, round, peers, mempool, ledger digest) as JSON.
    Status(node_cmds::StatusArgs),
    /// Run the deterministic simulator: N seeds of a validator set under injected faults
    /// (drop, delay, duplicate, reorder, partitions, crash/restart, torn writes, Byzantine nodes),
    /// checking safety, conservation and liveness. Exits 1 on any invariant violation.
    Sim(engine::sim::cli::SimArgs),
    /// Audit a node's data directory offline: every record checksum, the hash chain, every QC's
    /// validator signatures and every request signature against the genesis, and re-execution
    /// from genesis compared with the recorded ledger snapshots. Exit 0 clean, 3 on a fault.
    Audit(audit_cmd::AuditArgs),
    /// Create, show and list the history of accounts (as the institution of `--client`).
    #[command(subcommand)]
    Account(client_cmds::AccountCmd),
    /// Transfer between two accounts (or top up a reserve with `--top-up`).
    Transfer(client_cmds::TransferArgs),
    /// Joint loans: create, disburse, repay.
    #[command(subcommand)]
    Loan(client_loan::LoanCmd),
    /// Print your reserve positions and the reconciliation report of your statements.
    Reconcile(client_loan::ReconcileArgs),
    /// Post a reconciliation statement for one of your accounts over a closed period and print
    /// whether the ledger's figures match it.
    Statement(client_statement::StatementArgs),
}

fn client_outcome(result: Result<(), client_out::CliError>) -> Result<(), String> {
    result.map_err(|e| e.to_string())
}

fn main() {
    engine::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::LedgerDemo(args) => ledger_demo::run(args),
        Command::Init(args) => node_cmds::run_init(args),
        Command::Node(args) => node_cmds::run_node(args),
        Command::Status(args) => node_cmds::run_status(args),
        Command::Audit(args) => match audit_cmd::run(args) {
            Ok(code) => std::process::exit(code),
            Err(message) => Err(message),
        },
        Command::Account(cmd) => client_outcome(client_cmds::run_account(cmd)),
        Command::Transfer(args) => client_outcome(client_cmds::run_transfer(args)),
        Command::Loan(cmd) => client_outcome(client_loan::run_loan(cmd)),
        Command::Reconcile(args) => client_outcome(client_loan::run_reconcile(args)),
        Command::Statement(args) => client_outcome(client_statement::run_statement(args)),
        Command::Sim(args) => {
            if engine::sim::cli::run(&args) {
                Ok(())
            } else {
                Err("simulation found invariant violations (see the failing seeds above)".into())
            }
        }
    };
    if let Err(message) = outcome {
        eprintln!("reckon: {message}");
        std::process::exit(1);
    }
}
