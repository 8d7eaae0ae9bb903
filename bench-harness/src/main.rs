//! `bench-harness`: stage and end-to-end benchmarks. Each stage measures its own physical limit in
//! the same run and reports the ratio to it. `--json` makes the last stdout line one JSON object.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod consensus;
mod e2e;
mod faults;
mod ledger;
mod limits;
mod log;
mod probe;
mod steal;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench-harness",
    version,
    about = "Reckon benchmarks with same-run physical limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply N transfers to an in-memory ledger on one core.
    Ledger(ledger::Args),
    /// Append N blocks durably to the block log.
    Log(log::Args),
    /// Batched BLS signature verification against the single-core pairing limit.
    Verify(verify::Args),
    /// Consensus cores in-process with real signed votes, no network.
    Consensus(consensus::Args),
    /// A local cluster of real nodes driven by loadgen over TCP.
    E2e(e2e::Args),
    /// Print every physical limit of this machine that the benchmarks compare against.
    Limits(limits::Args),
}

fn main() {
    engine::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Ledger(args) => ledger::run(args),
        Command::Log(args) => log::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Consensus(args) => consensus::run(args),
        Command::Limits(args) => limits::run(args),
        Command::E2e(args) => e2e::run(args),
    };
    if let Err(message) = outcome {
        eprintln!("bench-harness: {message}");
        std::process::exit(1);
    }
}
