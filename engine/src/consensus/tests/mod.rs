//! Unit tests of the core (cluster behaviour here, single rules in `rules.rs`): a tiny in-test router delivers messages instantly (FIFO); each test
//! asserts one rule, with real validator (Ed25519) signatures.

use std::collections::VecDeque;
use std::rc::Rc;

use super::block_tree::{genesis_block, genesis_qc};
use super::validator_crypto::{ValidatorCrypto, VerifyCache};
use super::*;

mod chain;
mod leaders;
mod pacing;
mod rules;
mod sync;
mod unreachable;

pub(super) const CHAIN: ChainId = 7;

/// Cores for single-rule tests: no idle pacing, so a leader proposes as soon as it can.
pub(super) fn cores(n: usize) -> Vec<Core<ValidatorCrypto>> {
    cores_with(n, |cfg| cfg.min_idle_block_interval_ms = 0)
}

pub(super) fn cores_with(n: usize, adjust: impl Fn(&mut Config)) -> Vec<Core<ValidatorCrypto>> {
    let (secrets, publics) = ValidatorCrypto::committee(42, n);
    let cache = VerifyCache::shared();
    secrets
        .into_iter()
        .enumerate()
        .map(|(i, sk)| {
            let crypto = ValidatorCrypto::new(Some(sk), Rc::clone(&publics), Rc::clone(&cache));
            let mut cfg = Config::new(CHAIN, n, i as ValidatorIndex);
            adjust(&mut cfg);
            Core::new(cfg, crypto, None)
        })
        .collect()
}

pub(super) struct Router {
    cores: Vec<Core<ValidatorCrypto>>,
    queue: VecDeque<(ValidatorIndex, ValidatorIndex, Message)>,
    commits: Vec<Vec<CommittedBlock>>,
    rejects: Vec<(usize, RejectReason)>,
    pub(super) now_ms: u64,
    /// Drop every message to or from these nodes.
    down: Vec<ValidatorIndex>,
    /// What each node's disk holds: safety state and blocks persisted before voting.
    durable_safety: Vec<SafetyState>,
    durable_blocks: Vec<Vec<Block>>,
    /// Armed idle-pacing timers (node, round, duration); they fire when no message is in flight.
    propose_timers: VecDeque<(usize, Round, u64)>,
    pub(super) propose_timers_fired: usize,
    /// Sync requests answered from a node's log (`commits`): they came from below its window.
    pub(super) served_from_log: usize,
    /// Each node's armed round timer (round, duration), as its last `SetTimer` left it.
    pub(super) round_timers: Vec<Option<(Round, u64)>>,
}

impl Router {
    /// A cluster with the default config (idle pacing on).
    fn new(n: usize) -> Self {
        Router::with(n, |_| {})
    }
    /// A cluster whose configs `adjust` changes (idle pacing on unless it turns it off).
    fn with(n: usize, adjust: impl Fn(&mut Config)) -> Self {
        Router {
            cores: cores_with(n, adjust),
            queue: VecDeque::new(),
            commits: vec![Vec::new(); n],
            rejects: vec![],
            now_ms: 1_000,
            down: vec![],
            durable_safety: vec![SafetyState::default(); n],
            durable_blocks: vec![Vec::new(); n],
            propose_timers: VecDeque::new(),
            propose_timers_fired: 0,
            served_from_log: 0,
            round_timers: vec![None; n],
        }
    }
    fn apply(&mut self, node: usize, actions: Vec<Action>) {
        let n = self.cores.len();
        for action in actions {
            match action {
                Action::Send {
                    to: Recipient::One(to),
                    msg,
                } => self.queue.push_back((node as ValidatorIndex, to, msg)),
                Action::Send {
                    to: Recipient::Others,
                    msg,
                } => {
                    for to in (0..n).filter(|t| *t != node) {
                        self.queue.push_back((
                            node as ValidatorIndex,
                            to as ValidatorIndex,
                            msg.clone(),
                        ));
                    }
                }
                Action::Commit(blocks) => self.commits[node].extend(blocks),
                Action::ServeSyncFromLog {
                    to, from_height, ..
                } => {
                    // This node's "log" is everything it committed, height h at index h - 1.
                    let log = &self.commits[node];
                    let response = sync_response_from_log(from_height, |height| {
                        log.get(height as usize - 1).cloned()
                    });
                    self.served_from_log += 1;
                    let msg = Message::SyncResponse(response);
                    self.queue.push_back((node as ValidatorIndex, to, msg));
                }
                Action::PersistSafety(state) => self.durable_safety[node] = state,
                Action::PersistBlock(block) => self.durable_blocks[node].push(block),
                Action::Rejected { reason, .. } => self.rejects.push((node, reason)),
                Action::SetTimer { round, duration_ms } => {
                    self.round_timers[node] = Some((round, duration_ms))
                }
                Action::SetProposeTimer { round, duration_ms } => {
                    self.propose_timers.retain(|(n, _, _)| *n != node);
                    self.propose_timers.push_back((node, round, duration_ms));
                }
                _ => {}
            }
        }
    }
    /// Replace `node` by a fresh core built only from what it persisted, then start it.
    fn restart(&mut self, node: usize) {
        let (secrets, publics) = ValidatorCrypto::committee(42, self.cores.len());
        let crypto =
            ValidatorCrypto::new(Some(secrets[node].clone()), publics, VerifyCache::shared());
        let genesis = CommittedBlock {
            height: 0,
            block: genesis_block(),
            qc: genesis_qc(),
        };
        let log = &self.commits[node];
        let tip = log.last().cloned().unwrap_or(genesis);
        let recovered = Recovered {
            safety: self.durable_safety[node],
            tip,
            history: log[..log.len().saturating_sub(1)].to_vec(),
            blocks: self.durable_blocks[node].clone(),
        };
        let cfg = Config::new(CHAIN, self.cores.len(), node as ValidatorIndex);
        self.cores[node] = Core::new(cfg, crypto, Some(recovered));
        self.event(node, Event::Start);
    }

    fn event(&mut self, node: usize, event: Event) {
        self.now_ms += 1;
        let actions = self.cores[node].handle(self.now_ms, event);
        self.apply(node, actions);
    }
    fn start(&mut self) {
        for i in 0..self.cores.len() {
            self.event(i, Event::Start);
        }
    }
    fn run(&mut self, steps_max: usize) {
        for _ in 0..steps_max {
            let Some((from, to, msg)) = self.queue.pop_front() else {
                // Nothing in flight: time passes until the next idle leader's wait is over.
                let Some((node, round, duration_ms)) = self.propose_timers.pop_front() else {
                    return;
                };
                self.now_ms += duration_ms;
                self.propose_timers_fired += 1;
                self.event(node, Event::ProposeTimer { round });
                continue;
            };
            if self.down.contains(&from) || self.down.contains(&to) {
                continue;
            }
            let msg = Message::decode(&msg.encode()).expect("round trip");
            self.event(to as usize, Event::Message { from, msg });
        }
    }
    /// Deliver messages until none is in flight, without letting any propose timer fire.
    fn run_messages(&mut self, steps_max: usize) {
        for _ in 0..steps_max {
            if self.queue.is_empty() {
                break;
            }
            self.run(1); // a message is in flight, so no timer fires
        }
    }
    /// True when nothing is in flight and no idle leader waits: only a round timer can move the
    /// cluster.
    fn stalled(&self) -> bool {
        self.queue.is_empty() && self.propose_timers.is_empty()
    }
    /// Leaders currently waiting on an idle-pacing timer.
    fn idle_leaders(&self) -> usize {
        self.propose_timers.len()
    }
    /// Starts the cluster with validator 3 down and runs the others in short bursts (they commit
    /// without timeouts: validator 3 never leads); returns how many blocks they committed.
    fn leave_validator_3_behind(&mut self) -> usize {
        self.down = vec![3];
        self.start();
        for _ in 0..10 {
            self.run(200);
            self.timeout_all();
        }
        assert_eq!(self.commits[3].len(), 0);
        let ahead = self.commits[0].len();
        assert!(ahead >= 5, "three nodes progress: {ahead}");
        ahead
    }
    /// Everyone up: drops what is in flight, then rounds of timeouts and messages.
    fn rejoin(&mut self, rounds: usize) {
        self.down.clear();
        self.queue.clear();
        for _ in 0..rounds {
            self.timeout_all();
            self.run(3_000);
        }
    }
    fn assert_no_invalid_sync(&self) {
        assert!(self
            .rejects
            .iter()
            .all(|(_, reason)| !matches!(reason, RejectReason::SyncInvalid(_))));
    }
    fn timeout_all(&mut self) {
        for i in 0..self.cores.len() {
            let round = self.cores[i].round();
            self.event(i, Event::Timer { round });
        }
    }
}

fn assert_prefix_consistent(commits: &[Vec<CommittedBlock>]) {
    for a in commits {
        for b in commits {
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.height, y.height);
                assert_eq!(x.block, y.block, "fork at height {}", x.height);
            }
        }
    }
}

#[test]
fn happy_path_commits_consecutive_heights_on_all_nodes() {
    let mut r = Router::new(4);
    r.start();
    r.run(2_000);
    for (i, c) in r.commits.iter().enumerate() {
        assert!(c.len() >= 10, "node {i} committed {}", c.len());
        for (k, block) in c.iter().enumerate() {
            assert_eq!(block.height, k as u64 + 1);
            assert_eq!(block.qc.block_hash, block.block.hash());
        }
    }
    assert_prefix_consistent(&r.commits);
    assert!(r.rejects.is_empty(), "{:?}", r.rejects);
}

#[test]
fn safety_state_is_persisted_before_every_vote_and_timeout() {
    let mut core = cores(4).remove(1);
    let mut actions = core.handle(10, Event::Start);
    actions.extend(core.handle(20_000, Event::Timer { round: 1 }));
    let proposal = {
        let mut leader = cores(4).remove(1);
        leader.handle(10, Event::Start)
    };
    assert!(proposal.is_empty() || matches!(proposal[0], Action::SetTimer { .. }));
    let mut persisted = false;
    for action in &actions {
        match action {
            Action::PersistSafety(_) => persisted = true,
            Action::Send {
                msg: Message::Timeout(_) | Message::Vote(_),
                ..
            } => assert!(persisted, "send before persist"),
            _ => {}
        }
    }
    assert!(persisted);
}

#[test]
fn leader_proposal_persists_then_sends_and_replica_votes_after_persist() {
    let mut all = cores(4);
    let leader_actions = all[1].handle(10, Event::Start);
    let position =
        |pred: &dyn Fn(&Action) -> bool| leader_actions.iter().position(pred).expect("present");
    let persist = position(&|a| matches!(a, Action::PersistSafety(s) if s.proposed_round == 1));
    let send = position(&|a| {
        matches!(
            a,
            Action::Send {
                msg: Message::Proposal(_),
                ..
            }
        )
    });
    assert!(persist < send);
    let Action::Send { msg, .. } = &leader_actions[send] else {
        unreachable!()
    };
    let actions = all[3].handle(
        11,
        Event::Message {
            from: 1,
            msg: msg.clone(),
        },
    );
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety(s) if s.voted_round == 1));
    let vote = actions.iter().position(|a| {
        matches!(
            a,
            Action::Send {
                to: Recipient::One(2),
                msg: Message::Vote(_)
            }
        )
    });
    assert!(persist.expect("persisted") < vote.expect("voted to leader of round 2"));
}

pub(super) fn first_proposal(actions: &[Action]) -> Proposal {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send {
                msg: Message::Proposal(p),
                ..
            } => Some(p.clone()),
            _ => None,
        })
        .expect("a proposal")
}

pub(super) fn rejected(actions: &[Action]) -> Vec<RejectReason> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Rejected { reason, .. } = a {
                Some(reason.clone())
            } else {
                None
            }
        })
        .collect()
}

/// Run a 4-node cluster to a few commits and return it with a real QC of round >= 2.
pub(super) fn warmed_router() -> Router {
    let mut r = Router::new(4);
    r.start();
    r.run(120);
    assert!(r.cores[0].high_qc().round >= 2);
    r
}

#[test]
fn timeouts_form_tc_and_next_leader_proposes_with_it() {
    let mut r = Router::new(4);
    r.down = vec![1]; // leader of round 1 is down
    r.start();
    r.run(100);
    assert_eq!(r.cores[0].round(), 1);
    for _ in 0..4 {
        r.timeout_all();
        r.run(2_000);
    }
    assert!(r.cores[0].round() > 2, "TC advanced the round");
    assert!(
        r.commits[0].len() >= 3,
        "progress without node 1: {}",
        r.commits[0].len()
    );
    assert_prefix_consistent(&r.commits);
}

#[test]
fn lagging_node_syncs_verified_blocks_and_commits_the_same_chain() {
    let mut r = Router::new(4);
    // The laggard stays within the peers' committed window (`COMMITTED_WINDOW_MAX`).
    let ahead = r.leave_validator_3_behind();
    r.rejoin(3);
    assert!(
        r.commits[3].len() >= ahead,
        "node 3 caught up: {} of {ahead}",
        r.commits[3].len()
    );
    assert_eq!(r.served_from_log, 0, "all from the windows");
    r.assert_no_invalid_sync();
    assert_prefix_consistent(&r.commits);
}

/// Regression (found by the simulator, seed 10353): a certified but uncommitted block must survive
/// the restart of every honest voter, else a Byzantine node that holds the block and shows only its
/// QC (in its timeouts) stalls the chain forever: leaders must extend that QC but nobody has the block.
#[test]
fn certified_block_survives_restart_of_every_honest_voter() {
    let mut r = Router::new(4);
    r.start();
    r.run(150);
    r.queue.clear(); // freeze: a certified block above the committed tip exists
    let high_qc = r.cores[3].high_qc().clone();
    assert!(
        high_qc.round > r.cores[3].committed_height(),
        "an uncommitted certified block exists"
    );
    let committed_before = r.commits[0].len();
    // Node 3 keeps the block and shows only its QC; nodes 0..3 lose all volatile state.
    for node in 0..3 {
        r.restart(node);
    }
    r.queue.clear();
    r.down = vec![3];
    for node in 0..3 {
        assert!(
            r.cores[node].high_qc().round >= high_qc.round - 1,
            "recovered QC from persisted blocks"
        );
    }
    let timeout_from_3 = {
        let round = r.cores[3].round();
        let actions = r.cores[3].handle(r.now_ms, Event::Timer { round });
        actions.into_iter().find_map(|a| match a {
            Action::Send {
                msg: Message::Timeout(t),
                ..
            } => Some(t),
            _ => None,
        })
    };
    let timeout_from_3 = timeout_from_3.expect("node 3 times out, showing its high QC");
    for node in 0..3 {
        r.event(
            node,
            Event::Message {
                from: 3,
                msg: Message::Timeout(timeout_from_3.clone()),
            },
        );
    }
    for _ in 0..6 {
        r.timeout_all();
        r.run(2_000);
    }
    assert!(
        r.commits[0].len() > committed_before + 2,
        "progress without node 3: {} -> {}",
        committed_before,
        r.commits[0].len()
    );
    assert_prefix_consistent(&r.commits);
}

/// Architecture invariant, enforced: no socket, clock, file, thread or hash-ordered map in consensus.
#[test]
fn consensus_never_touches_a_socket_clock_or_file() {
    let sources = [
        include_str!("../audit.rs"),
        include_str!("../block_tree.rs"),
        include_str!("../core.rs"),
        include_str!("../crypto_iface.rs"),
        include_str!("../leader.rs"),
        include_str!("../messages.rs"),
        include_str!("../mod.rs"),
        include_str!("../pacemaker.rs"),
        include_str!("../payload.rs"),
        include_str!("../proposal.rs"),
        include_str!("../safety.rs"),
        include_str!("../sync.rs"),
        include_str!("../timeouts.rs"),
        include_str!("../validator_crypto.rs"),
        include_str!("../votes.rs"),
        include_str!("../wire.rs"),
    ];
    let forbidden = [
        "std::net",
        "std::fs",
        "std::time",
        "Instant",
        "SystemTime",
        "std::thread",
        "HashMap",
        "HashSet",
    ];
    for source in sources {
        for word in forbidden {
            assert!(!source.contains(word), "consensus must not use {word}");
        }
    }
}
