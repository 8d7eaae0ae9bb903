//! The simulation loop: builds the cluster and the fault schedule from the seed, pops events in
//! simulated-time order, and stops when every probe committed on every honest node, or on a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faults::{CRASHES_MAX, CRASH_DOWN_MS_MAX, PARTITIONS_MAX, PARTITION_MS_MAX};
use super::invariants::{Checker, Violation, LIVENESS_ROUNDS_MAX};
use super::ledger_machine::{make_batch, LedgerMachine};
use super::network::{EventQueue, Links, SimEvent};
use super::node::SimNode;
use super::state_machine::StateMachine;
use super::{SimConfig, SimReport};
use crate::consensus::validator_crypto::{ValidatorCrypto, VerifyCache};
use crate::consensus::{Digest, Round};
use crate::crypto::{ValidatorKey, ValidatorSet};

pub struct Probe {
    pub digest: Digest,
    pub submitted_round: Round,
    pub committed_on: BTreeSet<usize>,
}

pub struct Sim {
    pub cfg: SimConfig,
    pub rng: ChaCha8Rng,
    pub now_ms: u64,
    pub queue: EventQueue,
    pub links: Links,
    pub nodes: Vec<SimNode>,
    /// Batch contents by digest: the dissemination layer's content store.
    pub registry: BTreeMap<Digest, Vec<u8>>,
    pub checker: Checker,
    pub probes: Vec<Probe>,
    pub healed: bool,
    pub secrets: Vec<ValidatorKey>,
    pub publics: Rc<ValidatorSet>,
    pub cache: Rc<std::cell::RefCell<VerifyCache>>,
    pub report: SimReport,
    batches_made: u64,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let (secrets, publics) = ValidatorCrypto::committee(cfg.seed, cfg.nodes);
        let faults_max = (cfg.nodes - 1) / 3;
        let mut order: Vec<usize> = (0..cfg.nodes).collect();
        order.shuffle(&mut rng);
        let byzantine: BTreeSet<usize> = if cfg.faults.byzantine {
            order.into_iter().take(faults_max).collect()
        } else {
            BTreeSet::new()
        };
        let nodes = (0..cfg.nodes)
            .map(|i| SimNode::new(i, byzantine.contains(&i), rng.gen_range(0..=400), None))
            .collect();
        let nodes = add_twins(nodes, &byzantine, cfg.nodes, &mut rng);
        let links = Links {
            latency_ms_min: cfg.latency_ms_min,
            latency_ms_max: cfg.latency_ms_max,
            faulty: cfg.faults.network,
            partition: None,
            sent: 0,
            dropped: 0,
        };
        let supply = LedgerMachine::default().supply();
        let report = SimReport {
            seed: cfg.seed,
            nodes: cfg.nodes,
            replay: cfg.replay_command(),
            ..Default::default()
        };
        Sim {
            cfg,
            rng,
            now_ms: 0,
            queue: EventQueue::default(),
            links,
            nodes,
            registry: BTreeMap::new(),
            checker: Checker::new(supply),
            probes: Vec::new(),
            healed: false,
            secrets,
            publics,
            cache: VerifyCache::shared(),
            report,
            batches_made: 0,
        }
    }

    pub fn honest(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| !self.nodes[*i].byzantine)
    }

    fn schedule_faults(&mut self) {
        let phase = self.cfg.fault_phase_ms;
        if let Some(side_b) = self.cfg.testing_partition.clone() {
            self.queue.push(0, SimEvent::PartitionStart { side_b });
        } else if self.cfg.faults.partition {
            let count = self.rng.gen_range(1..=PARTITIONS_MAX) as u64;
            let slot = phase / count;
            for k in 0..count {
                let start = k * slot + self.rng.gen_range(0..slot / 2);
                let end = (start + self.rng.gen_range(100..=PARTITION_MS_MAX)).min((k + 1) * slot);
                let mut side_b: Vec<bool> = (0..self.cfg.nodes)
                    .map(|_| self.rng.gen_bool(0.5))
                    .collect();
                side_b[0] = false;
                let last = self.cfg.nodes - 1;
                side_b[last] = true;
                self.queue.push(start, SimEvent::PartitionStart { side_b });
                self.queue.push(end, SimEvent::PartitionEnd);
            }
        }
        if self.cfg.faults.crash {
            let honest: Vec<usize> = self.honest().collect();
            for _ in 0..self.rng.gen_range(1..=CRASHES_MAX) {
                let node = honest[self.rng.gen_range(0..honest.len())];
                let at = self.rng.gen_range(0..phase);
                self.queue.push(at, SimEvent::Crash { node });
                self.queue.push(
                    at + self.rng.gen_range(50..=CRASH_DOWN_MS_MAX),
                    SimEvent::Restart { node },
                );
            }
        }
        let mut at = 0;
        while at < phase {
            self.queue.push(at, SimEvent::ClientBatch);
            at += self.cfg.client_batch_interval_ms;
        }
        self.queue.push(phase, SimEvent::Heal);
    }

    pub fn run(mut self) -> SimReport {
        self.schedule_faults();
        for node in 0..self.nodes.len() {
            self.restart(node);
        }
        let stop_ms = self.cfg.fault_phase_ms + self.cfg.after_heal_ms_max;
        while let Some((at_ms, event)) = self.queue.pop() {
            assert!(at_ms >= self.now_ms, "simulated time never goes back");
            self.now_ms = at_ms;
            if at_ms > stop_ms {
                self.report_stalled_probes();
                break;
            }
            self.step(event);
            self.refresh_detectors();
            if self.finished() {
                break;
            }
        }
        self.finish_report()
    }

    fn step(&mut self, event: SimEvent) {
        match event {
            SimEvent::Deliver { from, to, msg } => self.deliver(from, to, msg),
            SimEvent::Timer { node, token } => self.fire_timer(node, token),
            SimEvent::ClientBatch => {
                let honest: Vec<usize> = self.honest().collect();
                let node = honest[self.rng.gen_range(0..honest.len())];
                self.submit_batch(node);
            }
            SimEvent::Crash { node } => self.crash(node, false),
            SimEvent::Restart { node } => self.restart(node),
            SimEvent::PartitionStart { side_b } => self.links.partition = Some(side_b),
            SimEvent::PartitionEnd => self.links.partition = None,
            SimEvent::Heal => self.heal(),
            SimEvent::Probe { index } => self.submit_probe(index),
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.links.faulty = false;
        self.links.partition = None;
        for node in 0..self.nodes.len() {
            if self.nodes[node].core.is_none() {
                self.restart(node);
            }
        }
        for index in 0..self.cfg.probes {
            self.queue.push(
                self.now_ms + 50 * index as u64 + 1,
                SimEvent::Probe { index },
            );
        }
    }

    /// Create a batch of ledger requests (create_transfers from random members, some refused);
    /// returns its digest (contents go to the registry).
    pub fn make_batch_pub(&mut self) -> Digest {
        self.batches_made += 1;
        // Every 16th batch re-uses an earlier batch's transfer ids: the ledger answers `exists`.
        let seq = if self.batches_made.is_multiple_of(16) {
            self.batches_made / 2
        } else {
            self.batches_made
        };
        let contents = make_batch(&mut self.rng, seq);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.batches_made.to_le_bytes());
        hasher.update(&contents);
        let digest = *hasher.finalize().as_bytes();
        self.registry.insert(digest, contents);
        digest
    }

    fn submit_probe(&mut self, _index: u32) {
        let honest: Vec<usize> = self.honest().collect();
        let node = honest[self.rng.gen_range(0..honest.len())];
        let digest = self.submit_batch(node);
        let submitted_round = self.max_honest_round();
        self.probes.push(Probe {
            digest,
            submitted_round,
            committed_on: BTreeSet::new(),
        });
    }

    pub fn max_honest_round(&self) -> Round {
        self.honest()
            .filter_map(|i| self.nodes[i].core.as_ref().map(|c| c.round()))
            .max()
            .unwrap_or(0)
    }

    fn finished(&mut self) -> bool {
        if !self.checker.violations.is_empty() {
            return true;
        }
        if !self.healed || self.probes.len() < self.cfg.probes as usize {
            return false;
        }
        let honest = self.honest().count();
        let round_now = self.max_honest_round();
        for (batch, probe) in self.probes.iter().enumerate() {
            if probe.committed_on.len() < honest
                && round_now > probe.submitted_round + LIVENESS_ROUNDS_MAX
            {
                let submitted_round = probe.submitted_round;
                self.checker.report(Violation::Liveness {
                    batch: batch as u64,
                    submitted_round,
                    round_now,
                });
                return true;
            }
        }
        self.probes.iter().all(|p| p.committed_on.len() == honest)
    }

    fn report_stalled_probes(&mut self) {
        let honest = self.honest().count();
        let round_now = self.max_honest_round();
        let stalled: Vec<(u64, Round)> = (self.probes.iter().enumerate())
            .filter(|(_, p)| p.committed_on.len() < honest)
            .map(|(i, p)| (i as u64, p.submitted_round))
            .collect();
        for (batch, submitted_round) in stalled {
            self.checker.report(Violation::Liveness {
                batch,
                submitted_round,
                round_now,
            });
        }
    }

    /// One line per node (for diagnosing a failed seed).
    pub fn describe_nodes(&self) -> Vec<String> {
        let describe = |(i, n): (usize, &super::node::SimNode)| {
            match &n.core {
            None => format!("node {i}: down"),
            Some(c) => format!(
                "node {i}{}: round {} committed {} high_qc {} safety {:?} timer {:?} blocks {} pending {}",
                if n.byzantine { " (byzantine)" } else { "" },
                c.round(),
                c.committed_height(),
                c.high_qc().round,
                c.safety(),
                n.timer,
                c.blocks_in_memory(),
                c.pending_local_batches()
            ),
        }
        };
        self.nodes.iter().enumerate().map(describe).collect()
    }

    fn finish_report(mut self) -> SimReport {
        if !self.checker.violations.is_empty() || self.cfg.after_heal_ms_max == 0 {
            self.report.node_states = self.describe_nodes();
        }
        self.report.rounds = self.max_honest_round();
        self.report.commits = self.checker.heights_committed();
        self.report.violations = self
            .checker
            .violations
            .iter()
            .map(|v| v.to_string())
            .collect();
        self.report.sim_ms = self.now_ms;
        self.report.messages = self.links.sent;
        self.report
    }
}

/// The Twins method: each Byzantine validator runs as two honest cores with the same key; the peers
/// are split at random between them (each twin reaches at least one peer).
fn add_twins(
    mut nodes: Vec<SimNode>,
    byzantine: &BTreeSet<usize>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<SimNode> {
    for &b in byzantine {
        let mut mask: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.5)).collect();
        let peers: Vec<usize> = (0..n).filter(|p| *p != b).collect();
        mask[peers[0]] = true;
        mask[peers[peers.len() - 1]] = false;
        let twin_mask: Vec<bool> = mask.iter().map(|m| !m).collect();
        nodes[b].reach = Some(mask);
        nodes.push(SimNode::new(
            b,
            true,
            rng.gen_range(0..=400),
            Some(twin_mask),
        ));
    }
    nodes
}
