//! `reckon`: the Reckon node binary. Exit codes: 0 ok, 1 failure, 2 usage (clap).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Write a consortium: CA, node and client certificates, BLS keys, genesis, node configs.
    Init(node_cmds::InitArgs),
    /// Run a validator node until SIGTERM/SIGINT (then drain and exit 0).
    Node(node_cmds::NodeArgs),
    /// Print a node's status (height, round, peers, mempool, ledger digest) as JSON.
    Status(node_cmds::StatusArgs),
    /// Run the deterministic simulator: N seeds of a validator set under injected faults
    /// (drop, delay, duplicate, reorder, partitions, crash/restart, torn writes, Byzantine nodes),
    /// checking safety, conservation and liveness. Exits 1 on any invariant violation.
    Sim(engine::sim::cli::SimArgs),
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::LedgerDemo(args) => ledger_demo::run(args),
        Command::Init(args) => node_cmds::run_init(args),
        Command::Node(args) => node_cmds::run_node(args),
        Command::Status(args) => node_cmds::run_status(args),
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
