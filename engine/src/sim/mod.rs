//! `sim`: a deterministic simulator. N full nodes (consensus core + state machine + store) run over a
//! simulated network and clock: one event queue ordered by (simulated ms, sequence number), one
//! seeded ChaCha8 PRNG, `BTreeMap`s only, no threads, no real clock. Faults (drop, duplicate, delay,
//! reorder, partitions, crash/restart, torn writes, Byzantine nodes) are injected during a fault phase;
//! afterwards the network heals and probe requests must commit within a bounded number of rounds.
//! Invariants (`invariants.rs`) are checked on every commit and recovery. Every failure replays from
//! its seed. Architecture invariant: never touches a socket, clock or file (wall time is read only to
//! report simulated seconds per wall second, outside the simulated world).

mod byzantine;
pub mod cli;
pub mod faults;
pub mod invariants;
pub mod ledger_machine;
mod network;
mod node;
mod runner;
pub mod state_machine;
pub mod store;

#[cfg(test)]
mod tests;

pub use faults::FaultSet;
pub use invariants::{Checker, Violation, LIVENESS_ROUNDS_MAX};
pub use ledger_machine::LedgerMachine;
pub use state_machine::StateMachine;
pub use store::{MemStore, NodeStore, RecoveredStore};

/// One simulated run's configuration. `SimConfig::new(seed, nodes, faults)` gives the defaults.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub faults: FaultSet,
    /// Faults are injected in [0, fault_phase_ms); then everything heals.
    pub fault_phase_ms: u64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub round_timeout_ms: u64,
    /// Idle pacing of every node (`consensus::Config::min_idle_block_interval_ms`): at most half
    /// of `round_timeout_ms`; the default keeps the node's ratio (200 ms of 1 s) at a quarter.
    pub min_idle_block_interval_ms: u64,
    /// Leader election of every node (`consensus::LeaderElection`; the node's default).
    pub leader_election: crate::consensus::LeaderElection,
    /// A client batch arrives at a random honest node this often during the fault phase.
    pub client_batch_interval_ms: u64,
    /// Probe batches submitted after healing; each must commit on every honest node.
    pub probes: u32,
    /// Hard stop for one seed (simulated ms after healing).
    pub after_heal_ms_max: u64,
    /// Committed blocks each node keeps in memory for block sync
    /// (`consensus::Config::committed_window`); requests from below it are served from the
    /// node's log. Small windows make the simulator exercise that path.
    pub committed_window: usize,
    /// Test-only: every node uses a quorum of f+1 (breaks safety on purpose; negative tests).
    pub(crate) testing_quorum_too_small: bool,
    /// Test-only: the log's sync is a no-op that claims success (a lying fsync; negative tests).
    pub(crate) testing_lying_sync: bool,
    /// Test-only: one partition with these sides for the whole fault phase (instead of random ones).
    pub(crate) testing_partition: Option<Vec<bool>>,
}

/// Largest validator set the simulator runs.
pub const SIM_NODES_MAX: usize = 31;

impl SimConfig {
    pub fn new(seed: u64, nodes: usize, faults: FaultSet) -> Self {
        assert!(
            (1..=SIM_NODES_MAX).contains(&nodes),
            "1..={SIM_NODES_MAX} nodes"
        );
        SimConfig {
            seed,
            nodes,
            faults,
            fault_phase_ms: 2_500,
            latency_ms_min: 2,
            latency_ms_max: 25,
            round_timeout_ms: 200,
            min_idle_block_interval_ms: 50,
            leader_election: crate::consensus::LeaderElection::default(),
            client_batch_interval_ms: 40,
            probes: 3,
            after_heal_ms_max: 120_000,
            committed_window: crate::consensus::COMMITTED_WINDOW_MAX,
            testing_quorum_too_small: false,
            testing_lying_sync: false,
            testing_partition: None,
        }
    }

    /// The exact command that replays this seed.
    pub fn replay_command(&self) -> String {
        let window = if self.committed_window == crate::consensus::COMMITTED_WINDOW_MAX {
            String::new()
        } else {
            format!(" --committed-window {}", self.committed_window)
        };
        format!(
            "cargo run -p reckon-engine --bin reckon -- sim --seed {} --nodes {} --faults {}{window}",
            self.seed, self.nodes, self.faults
        )
    }
}

/// The outcome of one seed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    /// Highest round reached by an honest node.
    pub rounds: u64,
    /// Highest height committed by any honest node.
    pub commits: u64,
    /// Batches in those blocks (a block orders every batch its leader holds, so one block may
    /// commit dozens: this, not `commits`, is the work done).
    pub batches_committed: u64,
    pub violations: Vec<String>,
    pub sim_ms: u64,
    pub wall_ms: f64,
    pub messages: u64,
    pub rejects: u64,
    /// Rejections by reason (first word of the typed reason), for diagnosis.
    pub reject_reasons: std::collections::BTreeMap<String, u64>,
    pub equivocations: u64,
    /// Timeout messages broadcast by honest nodes (each round timer that fired, rebroadcasts too).
    pub timeouts: u64,
    pub crashes: u64,
    pub torn_crashes: u64,
    /// Sync requests from below a node's committed window that it answered from its log.
    pub syncs_served_from_log: u64,
    pub replay: String,
    /// On failure: each node's final round, commit height, high QC, safety state and timer.
    pub node_states: Vec<String>,
}

impl SimReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Totals over many seeds (what `reckon sim --seeds N` prints).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SimSummary {
    pub nodes: usize,
    pub faults: String,
    pub seeds: u64,
    pub rounds: u64,
    pub commits: u64,
    pub batches_committed: u64,
    pub violations: u64,
    pub failed_seeds: Vec<u64>,
    pub sim_s: f64,
    pub wall_s: f64,
    pub sim_s_per_wall_s: f64,
    pub rejects: u64,
    pub equivocations: u64,
    pub crashes: u64,
    pub torn_crashes: u64,
    pub syncs_served_from_log: u64,
}

impl SimSummary {
    /// One JSON object: `{"bench":"sim","seeds":N,"violations":0,"commits":C,...}`.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("summary serialises");
        value["bench"] = serde_json::Value::from("sim");
        value.to_string()
    }

    /// A plain SUMMARY block, comparable by eye between runs.
    pub fn to_text(&self) -> String {
        format!(
            "SUMMARY sim\n  nodes: {}  faults: {}  seeds: {}\n  rounds: {}  commits: {}  batches committed: {}\n  \
             violations: {}  failed seeds: {:?}\n  rejects: {}  equivocations: {}  crashes: {} (torn {})\n  \
             syncs served from a log: {}\n  simulated s: {:.1}  wall s: {:.2}  simulated s per wall s: {:.1}",
            self.nodes,
            self.faults,
            self.seeds,
            self.rounds,
            self.commits,
            self.batches_committed,
            self.violations,
            self.failed_seeds,
            self.rejects,
            self.equivocations,
            self.crashes,
            self.torn_crashes,
            self.syncs_served_from_log,
            self.sim_s,
            self.wall_s,
            self.sim_s_per_wall_s
        )
    }
}

/// Run one seed to completion. On a violation, prints the seed and the replay command to stderr.
pub fn run_seed(cfg: &SimConfig) -> SimReport {
    let started = std::time::Instant::now();
    let mut report = runner::Sim::new(cfg.clone()).run();
    report.wall_ms = started.elapsed().as_secs_f64() * 1e3;
    if !report.ok() {
        eprintln!(
            "sim: seed {} FAILED: {}",
            cfg.seed,
            report.violations.join("; ")
        );
        eprintln!("sim: replay with: {}", report.replay);
        for line in &report.node_states {
            eprintln!("sim:   {line}");
        }
    }
    report
}

/// Run `cfg` once per seed (the seed field is replaced) and total the results.
pub fn run_many(cfg: &SimConfig, seeds: impl IntoIterator<Item = u64>) -> SimSummary {
    let mut summary = SimSummary {
        nodes: cfg.nodes,
        faults: cfg.faults.to_string(),
        ..Default::default()
    };
    for seed in seeds {
        let report = run_seed(&SimConfig {
            seed,
            ..cfg.clone()
        });
        summary.seeds += 1;
        summary.rounds += report.rounds;
        summary.commits += report.commits;
        summary.batches_committed += report.batches_committed;
        summary.violations += report.violations.len() as u64;
        if !report.ok() {
            summary.failed_seeds.push(seed);
        }
        summary.sim_s += report.sim_ms as f64 / 1e3;
        summary.wall_s += report.wall_ms / 1e3;
        summary.rejects += report.rejects;
        summary.equivocations += report.equivocations;
        summary.crashes += report.crashes;
        summary.torn_crashes += report.torn_crashes;
        summary.syncs_served_from_log += report.syncs_served_from_log;
    }
    summary.sim_s_per_wall_s = if summary.wall_s > 0.0 {
        summary.sim_s / summary.wall_s
    } else {
        0.0
    };
    summary
}
