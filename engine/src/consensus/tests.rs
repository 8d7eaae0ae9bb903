//! Unit tests of the core: a tiny in-test router delivers messages instantly (FIFO); each test
//! asserts one rule, with real BLS signatures.

use std::collections::VecDeque;
use std::rc::Rc;

use super::block_tree::genesis_block;
use super::bls::{BlsCrypto, VerifyCache};
use super::*;

const CHAIN: ChainId = 7;

fn cores(n: usize) -> Vec<Core<BlsCrypto>> {
    let (secrets, publics) = BlsCrypto::committee(42, n);
    let cache = VerifyCache::shared();
    secrets
        .into_iter()
        .enumerate()
        .map(|(i, sk)| {
            let crypto = BlsCrypto::new(Some(sk), Rc::clone(&publics), Rc::clone(&cache));
            Core::new(Config::new(CHAIN, n, i as ValidatorIndex), crypto, None)
        })
        .collect()
}

struct Router {
    cores: Vec<Core<BlsCrypto>>,
    queue: VecDeque<(ValidatorIndex, ValidatorIndex, Message)>,
    commits: Vec<Vec<CommittedBlock>>,
    rejects: Vec<(usize, RejectReason)>,
    now_ms: u64,
    /// Drop every message to or from these nodes.
    down: Vec<ValidatorIndex>,
}

impl Router {
    fn new(n: usize) -> Self {
        Router {
            cores: cores(n),
            queue: VecDeque::new(),
            commits: vec![Vec::new(); n],
            rejects: vec![],
            now_ms: 1_000,
            down: vec![],
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
                Action::Rejected { reason, .. } => self.rejects.push((node, reason)),
                _ => {}
            }
        }
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
                return;
            };
            if self.down.contains(&from) || self.down.contains(&to) {
                continue;
            }
            let msg = Message::decode(&msg.encode()).expect("round trip");
            self.event(to as usize, Event::Message { from, msg });
        }
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

fn first_proposal(actions: &[Action]) -> Proposal {
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

fn rejected(actions: &[Action]) -> Vec<RejectReason> {
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

#[test]
fn rejects_wrong_leader_sender_mismatch_and_non_member() {
    let mut all = cores(4);
    let p = first_proposal(&all[1].handle(10, Event::Start));
    let got = rejected(&all[2].handle(
        11,
        Event::Message {
            from: 3,
            msg: Message::Proposal(p.clone()),
        },
    ));
    assert_eq!(got, vec![RejectReason::SenderMismatch]);
    let mut wrong = p.clone();
    wrong.block.author = 3;
    let got = rejected(&all[2].handle(
        11,
        Event::Message {
            from: 3,
            msg: Message::Proposal(wrong),
        },
    ));
    assert_eq!(
        got,
        vec![RejectReason::WrongLeader {
            round: 1,
            author: 3,
            leader: 1
        }]
    );
    let got = rejected(&all[2].handle(
        11,
        Event::Message {
            from: 9,
            msg: Message::Proposal(p),
        },
    ));
    assert_eq!(got, vec![RejectReason::NonMember(9)]);
}

#[test]
fn rejects_and_reports_equivocating_proposals() {
    let mut all = cores(4);
    let p = first_proposal(&all[1].handle(10, Event::Start));
    let mut twin = p.clone();
    twin.block.timestamp_ms += 1;
    let first = all[2].handle(
        11,
        Event::Message {
            from: 1,
            msg: Message::Proposal(p.clone()),
        },
    );
    assert!(rejected(&first).is_empty());
    let second = all[2].handle(
        12,
        Event::Message {
            from: 1,
            msg: Message::Proposal(twin.clone()),
        },
    );
    assert_eq!(
        rejected(&second),
        vec![RejectReason::Equivocation {
            author: 1,
            round: 1
        }]
    );
    assert!(second.iter().any(
        |a| matches!(a, Action::Equivocation { author: 1, round: 1, first, second }
        if *first == p.block.hash() && *second == twin.block.hash())
    ));
    assert!(
        !second.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::Vote(_),
                ..
            }
        )),
        "no second vote"
    );
}

#[test]
fn rejects_timestamps_outside_bounds() {
    let mut all = cores(4);
    let p = first_proposal(&all[1].handle(10, Event::Start));
    let mut future = p.clone();
    future.block.timestamp_ms = 11 + TIMESTAMP_DRIFT_MS_MAX + 1;
    let got = rejected(&all[2].handle(
        11,
        Event::Message {
            from: 1,
            msg: Message::Proposal(future),
        },
    ));
    assert!(
        matches!(got[..], [RejectReason::TimestampOutOfBounds { .. }]),
        "{got:?}"
    );
    let mut past = p;
    past.block.timestamp_ms = genesis_block().timestamp_ms; // not after the parent
    let got = rejected(&all[3].handle(
        11,
        Event::Message {
            from: 1,
            msg: Message::Proposal(past),
        },
    ));
    assert!(
        matches!(got[..], [RejectReason::TimestampOutOfBounds { .. }]),
        "{got:?}"
    );
}

/// Run a 4-node cluster to a few commits and return it with a real QC of round >= 2.
fn warmed_router() -> Router {
    let mut r = Router::new(4);
    r.start();
    r.run(120);
    assert!(r.cores[0].high_qc().round >= 2);
    r
}

#[test]
fn rejects_qc_with_too_few_or_invalid_signatures() {
    let r = warmed_router();
    let good = r.cores[0].high_qc().clone();
    let mut few = good.clone();
    few.signers = SignerBitmap::default();
    few.signers.insert(0);
    assert_eq!(
        r.cores[1].verify_qc(&few),
        Err(RejectReason::QcTooFewSigners {
            signers: 1,
            quorum: 3
        })
    );
    let mut bad = good.clone();
    bad.signature = r.cores[1].crypto.sign(b"something else");
    assert_eq!(
        r.cores[1].verify_qc(&bad),
        Err(RejectReason::QcInvalidSignature)
    );
    let mut swapped = good.clone();
    swapped.round += 1;
    assert_eq!(
        r.cores[1].verify_qc(&swapped),
        Err(RejectReason::QcInvalidSignature)
    );
    assert_eq!(r.cores[1].verify_qc(&good), Ok(()));
}

#[test]
fn invalid_vote_signatures_are_found_and_dropped_and_qc_still_forms() {
    let mut all = cores(4);
    let p = first_proposal(&all[1].handle(10, Event::Start));
    let hash = p.block.hash();
    // Node 2 leads round 2 and collects the round-1 votes.
    let forged = Vote {
        block_hash: hash,
        round: 1,
        height: 1,
        voter: 3,
        signature: all[0].crypto.sign(b"garbage"),
    };
    let mut got = Vec::new();
    for (voter, vote) in [(3, Some(forged))]
        .into_iter()
        .chain([(0, None), (1, None), (2, None)])
    {
        let vote = vote.unwrap_or_else(|| {
            let msg = vote_message(CHAIN, &hash, 1, 1);
            Vote {
                block_hash: hash,
                round: 1,
                height: 1,
                voter,
                signature: all[voter as usize].crypto.sign(&msg),
            }
        });
        got.extend(all[2].handle(
            11,
            Event::Message {
                from: voter,
                msg: Message::Vote(vote),
            },
        ));
    }
    assert!(rejected(&got).contains(&RejectReason::VoteInvalidSignature));
    assert_eq!(
        all[2].high_qc().round,
        1,
        "QC formed from the three valid votes"
    );
    assert!(!all[2].high_qc().signers.contains(3));
}

#[test]
fn vote_deferred_until_batches_available_then_sent() {
    let mut all = cores(4);
    let digest = [9u8; 32];
    all[1].handle(5, Event::LocalBatchReady(digest));
    let p = first_proposal(&all[1].handle(10, Event::Start));
    assert_eq!(p.block.payload, vec![digest]);
    let actions = all[3].handle(
        11,
        Event::Message {
            from: 1,
            msg: Message::Proposal(p),
        },
    );
    assert!(actions.iter().any(
        |a| matches!(a, Action::FetchBatches { digests, from: 1 } if digests == &vec![digest])
    ));
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::Send {
            msg: Message::Vote(_),
            ..
        }
    )));
    let actions = all[3].handle(12, Event::BatchAvailable(digest));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send {
            msg: Message::Vote(_),
            ..
        }
    )));
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
    r.down = vec![3];
    r.start();
    for _ in 0..10 {
        r.run(2_000);
        r.timeout_all();
    }
    assert_eq!(r.commits[3].len(), 0);
    assert!(
        r.commits[0].len() >= 5,
        "three nodes progress: {}",
        r.commits[0].len()
    );
    r.down.clear();
    r.queue.clear();
    for _ in 0..3 {
        r.timeout_all();
        r.run(3_000);
    }
    assert!(
        r.commits[3].len() >= 5,
        "node 3 caught up: {}",
        r.commits[3].len()
    );
    assert!(r
        .rejects
        .iter()
        .all(|(_, reason)| !matches!(reason, RejectReason::SyncInvalid(_))));
    assert_prefix_consistent(&r.commits);
}

#[test]
fn restart_from_recovered_state_refuses_to_vote_twice() {
    let mut all = cores(4);
    let p = first_proposal(&all[1].handle(10, Event::Start));
    let actions = all[2].handle(
        11,
        Event::Message {
            from: 1,
            msg: Message::Proposal(p.clone()),
        },
    );
    let Some(Action::PersistSafety(state)) = actions
        .iter()
        .find(|a| matches!(a, Action::PersistSafety(_)))
        .cloned()
    else {
        panic!("persisted")
    };
    let (secrets, publics) = BlsCrypto::committee(42, 4);
    let crypto = BlsCrypto::new(Some(secrets[2].clone()), publics, VerifyCache::shared());
    let tip = CommittedBlock {
        height: 0,
        block: genesis_block(),
        qc: block_tree::genesis_qc(),
    };
    let mut restarted = Core::new(
        Config::new(CHAIN, 4, 2),
        crypto,
        Some(Recovered { safety: state, tip }),
    );
    restarted.handle(12, Event::Start);
    let mut twin = p;
    twin.block.payload = vec![[1; 32]];
    let actions = restarted.handle(
        13,
        Event::Message {
            from: 1,
            msg: Message::Proposal(twin),
        },
    );
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::Vote(_),
                ..
            }
        )),
        "no double vote"
    );
}

#[test]
fn safety_rule_blocks_that_do_not_extend_the_lock() {
    let state = SafetyState {
        voted_round: 5,
        timeout_round: 5,
        locked_round: 4,
        proposed_round: 0,
    };
    let mut block = genesis_block();
    block.round = 7;
    block.justify.round = 3;
    assert_eq!(
        state.check_vote(&block, None),
        Err(RejectReason::DoesNotExtendLock {
            qc_round: 3,
            locked_round: 4
        })
    );
    block.justify.round = 5;
    assert_eq!(
        state.check_vote(&block, None),
        Err(RejectReason::NotSafeToExtend {
            round: 7,
            qc_round: 5
        })
    );
    let tc = TimeoutCert {
        round: 6,
        signers: SignerBitmap::default(),
        high_qc_rounds: vec![5, 4, 5],
        signature: [0; 48],
    };
    assert_eq!(state.check_vote(&block, Some(&tc)), Ok(()));
    let tc_higher = TimeoutCert {
        high_qc_rounds: vec![6, 4, 5],
        ..tc
    };
    assert!(
        state.check_vote(&block, Some(&tc_higher)).is_err(),
        "must extend the TC's highest QC"
    );
    block.round = 5;
    assert_eq!(
        state.check_vote(&block, None),
        Err(RejectReason::AlreadyVoted { round: 5 })
    );
}

#[test]
fn safety_state_encoding_round_trips_and_rejects_garbage() {
    let state = SafetyState {
        voted_round: 9,
        timeout_round: 8,
        locked_round: 7,
        proposed_round: 6,
    };
    assert_eq!(SafetyState::decode(&state.encode()), Ok(state));
    assert!(SafetyState::decode(&state.encode()[..10]).is_err());
    assert!(SafetyState::decode(&[]).is_err());
}

#[test]
fn messages_round_trip_through_the_canonical_encoding() {
    let mut r = Router::new(4);
    r.start();
    r.run(60);
    let qc = r.cores[0].high_qc().clone();
    let tc = TimeoutCert {
        round: 9,
        signers: qc.signers,
        high_qc_rounds: vec![1, 2, 3],
        signature: [3; 48],
    };
    let block = Block {
        author: 1,
        round: 5,
        height: 4,
        timestamp_ms: 77,
        justify: qc.clone(),
        payload: vec![[5; 32]; 3],
    };
    let messages = vec![
        Message::Proposal(Proposal {
            block: block.clone(),
            tc: Some(tc.clone()),
        }),
        Message::Vote(Vote {
            block_hash: [1; 32],
            round: 3,
            height: 2,
            voter: 1,
            signature: [2; 48],
        }),
        Message::Timeout(TimeoutMsg {
            timeout: Timeout {
                round: 4,
                author: 2,
                high_qc: qc.clone(),
                signature: [4; 48],
            },
            last_tc: Some(tc),
        }),
        Message::SyncRequest(SyncRequest { from_height: 17 }),
        Message::SyncResponse(SyncResponse {
            blocks: vec![block.clone(), block],
            last_qc: Some(qc),
        }),
    ];
    for m in messages {
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes), Ok(m.clone()));
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "truncated at {cut} must fail"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::decode(&longer).is_err());
    }
}

proptest::proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let _ = Message::decode(&bytes);
        let _ = CommittedBlock::decode(&bytes);
        let _ = SafetyState::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_messages(flip in 0usize..400, value in proptest::prelude::any::<u8>()) {
        let block = genesis_block();
        let mut bytes = Message::Proposal(Proposal { block, tc: None }).encode();
        let at = flip % bytes.len();
        bytes[at] = value;
        if let Ok(m) = Message::decode(&bytes) {
            proptest::prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }
}
