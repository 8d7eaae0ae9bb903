//! `reckon sim`: run many seeds (or replay one) and print a SUMMARY block, or JSON.

use super::{run_many, FaultSet, SimConfig, SIM_NODES_MAX};
use crate::consensus::COMMITTED_WINDOW_MAX;

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Replay exactly this seed (the command a failure prints).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    pub seed: Option<u64>,
    /// How many seeds to run, starting at --first-seed.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Validators (3f+1 tolerates f faulty: 4 or 7 are the usual choices).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=SIM_NODES_MAX as u64))]
    pub nodes: u64,
    /// Faults to inject: `all`, `none`, or a comma list (see `FaultSet::parse`).
    #[arg(long, default_value = "all", value_parser = FaultSet::parse)]
    pub faults: FaultSet,
    /// Committed blocks each node keeps in memory for block sync; a laggard further behind is
    /// served from its peers' logs. Small values exercise that path.
    #[arg(long, default_value_t = COMMITTED_WINDOW_MAX as u64, value_parser = clap::value_parser!(u64).range(1..=COMMITTED_WINDOW_MAX as u64))]
    pub committed_window: u64,
    /// Print the summary as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// Runs the seeds and prints the summary. Returns false when any invariant was violated (the
/// failing seeds and their replay commands were printed to stderr as they failed).
pub fn run(args: &SimArgs) -> bool {
    let mut cfg = SimConfig::new(
        args.seed.unwrap_or(args.first_seed),
        args.nodes as usize,
        args.faults,
    );
    cfg.committed_window = args.committed_window as usize;
    let seeds = match args.seed {
        Some(seed) => seed..seed + 1,
        None => args.first_seed..args.first_seed.saturating_add(args.seeds),
    };
    let summary = run_many(&cfg, seeds);
    println!("{}", summary.to_text());
    if args.json {
        println!("{}", summary.to_json());
    }
    summary.violations == 0
}
