//! One simulated node (core + ledger + store + held batches) and the shell that executes the core's
//! actions in order against the simulated network, disk and state machine.

use std::collections::BTreeSet;
use std::rc::Rc;

use rand::Rng;

use super::faults::{CRASH_DOWN_MS_MAX, TORN_CRASH_PER_MILLE};
use super::ledger_machine::LedgerMachine;
use super::network::{NetMsg, SimEvent};
use super::runner::Sim;
use super::state_machine::StateMachine;
use super::store::{MemStore, NodeStore, TornWrite};
use crate::consensus::validator_crypto::ValidatorCrypto;
use crate::consensus::{
    genesis_block, genesis_qc, sync_response_from_log, Action, CommittedBlock, Config, Core,
    Digest, Event, Message, Recipient, Recovered, ValidatorIndex, COMMITTED_WINDOW_MAX,
};

/// Chain id of every simulated cluster.
pub const SIM_CHAIN_ID: u64 = 0x5157;

pub struct SimNode {
    /// The validator this node runs as (a Byzantine validator's twin shares its identity).
    pub identity: usize,
    /// Identities this node exchanges messages with (None: everyone). Twins split the peers.
    pub reach: Option<Vec<bool>>,
    pub core: Option<Core<ValidatorCrypto>>,
    pub store: MemStore,
    pub ledger: LedgerMachine,
    /// Batches this node holds in full (volatile: lost on crash, like a mempool).
    pub held: BTreeSet<Digest>,
    pub byzantine: bool,
    /// The armed round timer and idle-pacing propose timer: (token, round).
    pub timer: Option<(u64, u64)>,
    pub propose_timer: Option<(u64, u64)>,
    pub timer_token: u64,
    /// This node's clock runs ahead of simulated time by this much (bounded by the drift limit).
    pub clock_skew_ms: u64,
    pub executed_height: u64,
    /// What this node's core was last told of each identity (`Event::PeerReachable`): true = down.
    pub told_down: Vec<bool>,
}

impl SimNode {
    pub fn new(
        identity: usize,
        byzantine: bool,
        clock_skew_ms: u64,
        reach: Option<Vec<bool>>,
    ) -> Self {
        SimNode {
            identity,
            reach,
            core: None,
            store: MemStore::default(),
            ledger: LedgerMachine::default(),
            held: BTreeSet::new(),
            byzantine,
            timer: None,
            propose_timer: None,
            timer_token: 0,
            clock_skew_ms,
            executed_height: 0,
            told_down: Vec::new(),
        }
    }
}

impl SimNode {
    pub fn reaches(&self, identity: usize) -> bool {
        self.reach.as_ref().is_none_or(|mask| mask[identity])
    }
}

impl Sim {
    /// Feed one event to a node's core and execute the resulting actions (no-op if crashed).
    pub fn feed(&mut self, node: usize, event: Event) {
        let now = self.now_ms + self.nodes[node].clock_skew_ms;
        let Some(core) = self.nodes[node].core.as_mut() else {
            return;
        };
        let actions = core.handle(now, event);
        self.execute(node, actions);
    }

    /// The simulated failure detector, what the node's links report (`Event::PeerReachable`): each
    /// running honest node learns which identities it cannot reach, because no node of that
    /// identity is running or a partition cuts it off. Run after every event; tells only changes.
    /// The Byzantine twins are told nothing: they keep the adversary the tests were written for.
    pub fn refresh_detectors(&mut self) {
        let n = self.cfg.nodes;
        let alive: Vec<bool> = (0..n)
            .map(|id| {
                self.nodes
                    .iter()
                    .any(|k| k.identity == id && k.core.is_some())
            })
            .collect();
        for k in 0..self.nodes.len() {
            if self.nodes[k].core.is_none() || self.nodes[k].byzantine {
                continue;
            }
            let me = self.nodes[k].identity;
            self.nodes[k].told_down.resize(n, false);
            for id in (0..n).filter(|id| *id != me) {
                let down = !alive[id] || !self.links.can_talk(me, id);
                if self.nodes[k].told_down[id] == down {
                    continue;
                }
                self.nodes[k].told_down[id] = down;
                let validator = id as ValidatorIndex;
                self.feed(
                    k,
                    Event::PeerReachable {
                        validator,
                        reachable: !down,
                    },
                );
            }
        }
    }

    /// Deliver a message from identity `from` to every node running as identity `to` that talks to it.
    pub fn deliver(&mut self, from: usize, to: usize, msg: NetMsg) {
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|k| self.nodes[*k].identity == to && self.nodes[*k].reaches(from))
            .collect();
        for node in targets {
            self.deliver_to_node(from, node, msg.clone());
        }
    }

    fn deliver_to_node(&mut self, from: usize, to: usize, msg: NetMsg) {
        if self.nodes[to].core.is_none() {
            return;
        }
        match msg {
            NetMsg::Consensus(bytes) => match Message::decode(&bytes) {
                Ok(msg) => self.feed(
                    to,
                    Event::Message {
                        from: from as ValidatorIndex,
                        msg,
                    },
                ),
                Err(_) => self.report.rejects += 1,
            },
            NetMsg::BatchPush(digest) | NetMsg::BatchReply(digest) => {
                if self.nodes[to].held.insert(digest) {
                    self.feed(to, Event::BatchAvailable(digest));
                }
            }
            NetMsg::BatchFetch(digest) => {
                if self.nodes[to].held.contains(&digest) && !self.nodes[to].byzantine {
                    self.net_send(self.nodes[to].identity, from, NetMsg::BatchReply(digest));
                }
            }
        }
    }

    pub fn net_send(&mut self, from: usize, to: usize, msg: NetMsg) {
        assert_ne!(from, to);
        for delay in self.links.delays(&mut self.rng, from, to) {
            self.queue.push(
                self.now_ms + delay,
                SimEvent::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    pub fn fire_timer(&mut self, node: usize, token: u64) {
        match (self.nodes[node].timer, self.nodes[node].propose_timer) {
            (Some((current, round)), _) if current == token => {
                self.nodes[node].timer = None;
                self.feed(node, Event::Timer { round });
            }
            (_, Some((current, round))) if current == token => {
                self.nodes[node].propose_timer = None;
                self.feed(node, Event::ProposeTimer { round });
            }
            _ => {}
        }
    }

    pub fn submit_batch(&mut self, node: usize) -> Digest {
        let digest = self.make_batch_pub();
        if self.nodes[node].core.is_none() {
            return digest; // the client's request hit a down node: lost, like a refused connection
        }
        self.nodes[node].held.insert(digest);
        for peer in (0..self.cfg.nodes).filter(|p| *p != node) {
            self.net_send(node, peer, NetMsg::BatchPush(digest));
        }
        self.feed(node, Event::LocalBatchReady(digest));
        digest
    }

    /// Whether the next durable write of this node is interrupted by a torn crash (honest nodes only).
    fn torn_roll(&mut self, node: usize) -> Option<f64> {
        let torn = self.cfg.faults.torn && !self.healed && !self.nodes[node].byzantine;
        if torn && self.rng.gen_range(0..1000) < TORN_CRASH_PER_MILLE {
            return Some(self.rng.gen_range(0.0..1.0));
        }
        None
    }

    fn execute(&mut self, node: usize, actions: Vec<Action>) {
        for action in actions {
            assert!(self.nodes[node].core.is_some(), "actions stop at a crash");
            match action {
                Action::PersistSafety(state) => {
                    if let Some(keep) = self.torn_roll(node) {
                        self.nodes[node].store.crash(Some(TornWrite::Safety {
                            state: &state,
                            keep,
                        }));
                        return self.crash(node, true);
                    }
                    self.nodes[node].store.put_safety(&state);
                }
                Action::PersistBlock(block) => {
                    if let Some(keep) = self.torn_roll(node) {
                        self.nodes[node].store.crash(Some(TornWrite::Block {
                            block: &block,
                            keep,
                        }));
                        return self.crash(node, true);
                    }
                    self.nodes[node].store.put_block(&block);
                }
                Action::Send { to, msg } => {
                    if matches!(msg, Message::Timeout(_)) && !self.nodes[node].byzantine {
                        self.report.timeouts += 1;
                    }
                    self.send_consensus(node, to, msg)
                }
                Action::Commit(blocks) => {
                    for block in &blocks {
                        self.nodes[node].store.append_block(block);
                    }
                    if let Some(keep) = self.torn_roll(node) {
                        self.nodes[node].store.crash(Some(TornWrite::Log { keep }));
                        return self.crash(node, true);
                    }
                    if !self.cfg.testing_lying_sync {
                        self.nodes[node].store.sync();
                    }
                    let committed_round = blocks.last().map_or(0, |b| b.block.round);
                    self.nodes[node].store.prune_blocks(committed_round);
                    blocks.iter().for_each(|b| self.apply_committed(node, b));
                }
                Action::SetTimer { round, duration_ms } => {
                    let token = self.arm_timer(node, duration_ms);
                    self.nodes[node].timer = Some((token, round));
                }
                Action::SetProposeTimer { round, duration_ms } => {
                    let token = self.arm_timer(node, duration_ms);
                    self.nodes[node].propose_timer = Some((token, round));
                }
                Action::ServeSyncFromLog {
                    to, from_height, ..
                } => {
                    let store = &self.nodes[node].store;
                    let response =
                        sync_response_from_log(from_height, |height| store.committed_block(height));
                    self.report.syncs_served_from_log += 1;
                    self.send_consensus(node, Recipient::One(to), Message::SyncResponse(response));
                }
                Action::FetchBatches { digests, from } => {
                    let identity = self.nodes[node].identity;
                    for digest in digests {
                        if from as usize != identity {
                            self.net_send(identity, from as usize, NetMsg::BatchFetch(digest));
                        }
                    }
                }
                Action::Rejected { reason, .. } => {
                    self.report.rejects += 1;
                    let name = format!("{reason:?}");
                    let name = name.split([' ', '(', '{']).next().unwrap_or("").to_string();
                    *self.report.reject_reasons.entry(name).or_default() += 1;
                }
                Action::Equivocation { .. } => self.report.equivocations += 1,
            }
        }
    }

    /// Schedule a timer event for `node`; returns its token (a later arm of the same slot wins).
    fn arm_timer(&mut self, node: usize, duration_ms: u64) -> u64 {
        self.nodes[node].timer_token += 1;
        let token = self.nodes[node].timer_token;
        self.queue
            .push(self.now_ms + duration_ms, SimEvent::Timer { node, token });
        token
    }

    fn send_consensus(&mut self, node: usize, to: Recipient, msg: Message) {
        let identity = self.nodes[node].identity;
        let targets: Vec<usize> = match to {
            Recipient::One(peer) => vec![peer as usize],
            Recipient::Others => (0..self.cfg.nodes).filter(|p| *p != identity).collect(),
        };
        let targets: Vec<usize> = targets
            .into_iter()
            .filter(|p| self.nodes[node].reaches(*p))
            .collect();
        for peer in targets {
            assert_ne!(peer, identity, "the core delivers to itself");
            let copies = if self.nodes[node].byzantine {
                self.byzantine_rewrite(node, peer, &msg)
            } else {
                vec![msg.clone()]
            };
            for copy in copies {
                self.net_send(identity, peer, NetMsg::Consensus(copy.encode()));
            }
        }
    }

    fn apply_committed(&mut self, node: usize, committed: &CommittedBlock) {
        let sim_node = &mut self.nodes[node];
        assert_eq!(
            committed.height,
            sim_node.executed_height + 1,
            "the core commits consecutive heights"
        );
        let batches: Vec<(Digest, &[u8])> = committed
            .block
            .payload
            .iter()
            .map(|d| {
                (
                    *d,
                    self.registry
                        .get(d)
                        .expect("a certified batch was held by an honest node")
                        .as_slice(),
                )
            })
            .collect();
        let state =
            sim_node
                .ledger
                .apply_block(committed.height, committed.block.timestamp_ms, &batches);
        sim_node.executed_height = committed.height;
        if sim_node.byzantine {
            return;
        }
        let (totals, supply) = (sim_node.ledger.totals(), sim_node.ledger.supply());
        if committed.height > self.checker.heights_committed() {
            self.report.batches_committed += committed.block.payload.len() as u64;
        }
        self.checker
            .on_commit(node, committed.height, committed.block.hash(), state);
        self.checker
            .check_money(node, committed.height, totals, supply);
        for probe in self
            .probes
            .iter_mut()
            .filter(|p| committed.block.payload.contains(&p.digest))
        {
            probe.committed_on.insert(node);
        }
    }

    /// Power loss: volatile state is gone; the store keeps only what was durable (plus a torn write,
    /// already applied to the store by the caller when `torn`).
    pub fn crash(&mut self, node: usize, torn: bool) {
        if self.nodes[node].core.is_none() || self.nodes[node].byzantine {
            return;
        }
        if !torn {
            self.nodes[node].store.crash(None);
        }
        self.report.crashes += 1;
        if torn {
            self.report.torn_crashes += 1;
            let at = self.now_ms + self.rng.gen_range(50..=CRASH_DOWN_MS_MAX);
            self.queue.push(at, SimEvent::Restart { node });
        }
        let sim_node = &mut self.nodes[node];
        sim_node.core = None;
        sim_node.timer = None;
        sim_node.propose_timer = None;
        sim_node.held.clear();
    }

    /// Start (or restart) a node from whatever its store holds, re-executing the recovered chain.
    pub fn restart(&mut self, node: usize) {
        if self.nodes[node].core.is_some() {
            return;
        }
        let recovered = self.nodes[node].store.recover();
        let mut ledger = LedgerMachine::default();
        let mut seen = Vec::with_capacity(recovered.blocks.len());
        for (k, c) in recovered.blocks.iter().enumerate() {
            assert_eq!(
                c.height,
                k as u64 + 1,
                "the log holds consecutive heights from 1"
            );
            let batches: Vec<(Digest, &[u8])> = c
                .block
                .payload
                .iter()
                .map(|d| (*d, self.registry[d].as_slice()))
                .collect();
            seen.push((
                c.height,
                c.block.hash(),
                ledger.apply_block(c.height, c.block.timestamp_ms, &batches),
            ));
        }
        if !self.nodes[node].byzantine {
            self.checker.on_recover(node, &seen);
        }
        let tip = recovered
            .blocks
            .last()
            .cloned()
            .unwrap_or_else(|| CommittedBlock {
                height: 0,
                block: genesis_block(),
                qc: genesis_qc(),
            });
        // Like the node (`node::recover`): nothing persisted at all is a first start.
        let first_start = recovered.safety.is_none() && recovered.blocks.is_empty();
        let safety = recovered.safety.unwrap_or_default();
        let identity = self.nodes[node].identity;
        let mut config = Config::new(SIM_CHAIN_ID, self.cfg.nodes, identity as ValidatorIndex);
        config.round_timeout_ms = self.cfg.round_timeout_ms;
        config.min_idle_block_interval_ms = self.cfg.min_idle_block_interval_ms;
        config.leader_election = self.cfg.leader_election;
        config.testing_quorum_too_small = self.cfg.testing_quorum_too_small;
        config.committed_window = self.cfg.committed_window;
        // The node's ratio: 100 ms of a 1 s round timer.
        config.unreachable_leader_timeout_ms = self.cfg.round_timeout_ms / 10;
        let crypto = ValidatorCrypto::new(
            Some(self.secrets[identity].clone()),
            Rc::clone(&self.publics),
            Rc::clone(&self.cache),
        );
        let sim_node = &mut self.nodes[node];
        sim_node.told_down.clear(); // a new core assumes every peer reachable
        sim_node.executed_height = tip.height;
        sim_node.ledger = ledger;
        let below_tip = recovered.blocks.len().saturating_sub(1);
        let history_from = below_tip.saturating_sub(COMMITTED_WINDOW_MAX - 1);
        let recovered = Recovered {
            safety,
            tip,
            history: recovered.blocks[history_from..below_tip].to_vec(),
            blocks: recovered.voted_blocks,
        };
        let recovered = (!first_start).then_some(recovered);
        sim_node.core = Some(Core::new(config, crypto, recovered));
        self.feed(node, Event::Start);
    }
}
