//! Idle pacing: an idle leader waits (`Action::SetProposeTimer`), a loaded one does not, and the
//! empty blocks that commit a payload block go out at once.

use super::*;

fn proposals(actions: &[Action]) -> Vec<Proposal> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                msg: Message::Proposal(p),
                ..
            } => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn propose_timers(actions: &[Action]) -> Vec<(Round, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetProposeTimer { round, duration_ms } => Some((*round, *duration_ms)),
            _ => None,
        })
        .collect()
}

/// Node 1 leads round 1 (default config: pacing on).
fn paced_leader() -> Core<validator_crypto::ValidatorCrypto> {
    cores_with(4, |_| {}).remove(1)
}

#[test]
fn idle_leader_waits_for_its_propose_timer_then_proposes_an_empty_block() {
    let mut leader = paced_leader();
    let idle = leader.config().min_idle_block_interval_ms;
    assert_eq!(idle, MIN_IDLE_BLOCK_INTERVAL_MS_DEFAULT);
    let actions = leader.handle(10, Event::Start);
    assert!(proposals(&actions).is_empty(), "idle: no block yet");
    assert_eq!(propose_timers(&actions), vec![(1, idle)]);
    assert_eq!(leader.safety().proposed_round, 0);
    // A stale or foreign round's timer does nothing.
    assert!(proposals(&leader.handle(20, Event::ProposeTimer { round: 2 })).is_empty());
    let actions = leader.handle(10 + idle, Event::ProposeTimer { round: 1 });
    let sent = proposals(&actions);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].block.payload.is_empty());
    assert_eq!(sent[0].block.round, 1);
    assert!(propose_timers(&actions).is_empty());
    let persisted = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety(s) if s.proposed_round == 1));
    let sent_at = actions.iter().position(|a| {
        matches!(
            a,
            Action::Send {
                msg: Message::Proposal(_),
                ..
            }
        )
    });
    assert!(persisted.expect("persisted") < sent_at.expect("sent"));
}

#[test]
fn idle_leader_proposes_at_once_when_a_local_batch_arrives() {
    let mut leader = paced_leader();
    assert!(proposals(&leader.handle(10, Event::Start)).is_empty());
    let actions = leader.handle(15, Event::LocalBatchReady([5; 32]));
    let sent = proposals(&actions);
    assert_eq!(sent.len(), 1, "no wait for the timer");
    assert_eq!(sent[0].block.payload, vec![[5; 32]]);
    // The timer of the round it already proposed in is then a no-op.
    let late = leader.handle(210, Event::ProposeTimer { round: 1 });
    assert!(proposals(&late).is_empty());
}

#[test]
fn loaded_leader_does_not_wait() {
    let mut leader = paced_leader();
    leader.handle(5, Event::LocalBatchReady([6; 32]));
    let actions = leader.handle(10, Event::Start);
    assert!(propose_timers(&actions).is_empty());
    assert_eq!(proposals(&actions)[0].block.payload, vec![[6; 32]]);
}

/// Another validator's batch this leader holds is proposed at once, in the round it arrived in
/// (`FOREIGN_BATCH_DELAY_ROUNDS` = 0): no idle wait, and no wait for a later round.
#[test]
fn a_leader_proposes_another_validators_held_batch_at_once() {
    let mut leader = paced_leader();
    leader.handle(5, Event::BatchAvailable([7; 32]));
    let actions = leader.handle(10, Event::Start);
    assert!(propose_timers(&actions).is_empty());
    let sent = proposals(&actions);
    assert_eq!(sent.len(), 1, "rounds keep turning");
    assert_eq!(
        sent[0].block.payload,
        vec![[7; 32]],
        "proposed in the round it arrived in"
    );
}

/// A batch another validator disseminated is proposed by the next leader that holds it, not only
/// when its owner leads.
#[test]
fn a_held_foreign_batch_is_proposed_by_the_next_leader() {
    let mut r = Router::new(4);
    // Validator 3 owns the batch; leaders of rounds 1 and 2 are validators 1 and 2.
    r.event(3, Event::LocalBatchReady([8; 32]));
    for node in [0, 1, 2] {
        r.event(node, Event::BatchAvailable([8; 32]));
    }
    r.start();
    r.run_messages(10_000);
    let first = r.commits[0]
        .iter()
        .find(|c| !c.block.payload.is_empty())
        .expect("the batch commits");
    assert_eq!(first.block.payload, vec![[8; 32]]);
    assert!(
        first.block.round < 3,
        "ordered in round {} by validator {}, before its owner (validator 3) leads",
        first.block.round,
        first.block.author
    );
    assert_ne!(first.block.author, 3);
    assert_prefix_consistent(&r.commits);
}

#[test]
fn block_digests_max_bounds_this_leaders_blocks() {
    let mut leader = cores_with(4, |cfg| cfg.block_digests_max = 2).remove(1);
    for k in 0..5u8 {
        leader.handle(5, Event::LocalBatchReady([k; 32]));
    }
    let sent = proposals(&leader.handle(10, Event::Start));
    assert_eq!(sent[0].block.payload, vec![[0; 32], [1; 32]]);
}

/// Pipelining under pacing: the payload block and the two empty blocks that commit it on every
/// replica (one to certify it, one to carry that QC) go out without any idle wait; then the
/// cluster idles.
#[test]
fn empty_blocks_that_commit_a_payload_block_go_out_without_waiting() {
    let mut r = Router::new(4);
    r.event(1, Event::LocalBatchReady([9; 32]));
    for node in [0, 2, 3] {
        r.event(node, Event::BatchAvailable([9; 32])); // disseminated to everyone
    }
    r.start();
    r.run_messages(10_000);
    assert_eq!(r.propose_timers_fired, 0);
    for (node, commits) in r.commits.iter().enumerate() {
        assert_eq!(
            commits.first().map(|c| c.block.payload.clone()),
            Some(vec![[9; 32]]),
            "node {node} committed the payload block without any idle wait"
        );
    }
    let rounds: Vec<Round> = r.cores.iter().map(|c| c.round()).collect();
    assert!(rounds.iter().all(|round| *round <= 4), "{rounds:?}");
    assert!(r.idle_leaders() >= 1, "then the next leader waits");
    // Idle: each further block waits for its leader's propose timer.
    r.run(2_000);
    assert!(r.propose_timers_fired >= 5);
    assert!(r.commits[0].len() >= 5);
    assert!(r.rejects.is_empty(), "{:?}", r.rejects);
    assert_prefix_consistent(&r.commits);
}

#[test]
fn config_keeps_round_timers_longer_than_the_idle_wait() {
    let mut cfg = Config::new(CHAIN, 4, 0);
    assert_eq!(cfg.validate(), Ok(()));
    assert!(cfg.min_idle_block_interval_ms * 2 <= cfg.round_timeout_ms);
    cfg.min_idle_block_interval_ms = cfg.round_timeout_ms / 2 + 1;
    assert!(cfg.validate().is_err());
    let mut cfg = Config::new(CHAIN, 4, 0);
    cfg.block_digests_max = BLOCK_DIGESTS_MAX + 1;
    assert!(cfg.validate().is_err());
    let mut cfg = Config::new(CHAIN, 4, 0);
    cfg.round_timeout_ms_max = cfg.round_timeout_ms - 1;
    assert!(cfg.validate().is_err());
}

#[test]
fn round_timer_backoff_is_capped_at_the_configured_maximum() {
    let mut core = cores_with(4, |cfg| cfg.round_timeout_ms_max = 3_000).remove(2);
    core.handle(0, Event::Start);
    let mut last = 0;
    for k in 0..10u64 {
        let round = core.round();
        let actions = core.handle(1_000 * (k + 1), Event::Timer { round });
        for a in actions {
            if let Action::SetTimer { duration_ms, .. } = a {
                last = duration_ms;
            }
        }
    }
    assert_eq!(last, 3_000);
}

/// A batch that arrives again after it committed (a late fetch answer, a peer's re-send) is held
/// but never queued for proposal again: it would be ordered, and executed, a second time.
#[test]
fn a_batch_announced_again_after_it_committed_is_not_proposed_again() {
    let mut r = Router::new(4);
    r.event(1, Event::LocalBatchReady([4; 32]));
    for node in [0, 2, 3] {
        r.event(node, Event::BatchAvailable([4; 32]));
    }
    r.start();
    r.run_messages(10_000);
    assert!(r
        .commits
        .iter()
        .all(|c| c.iter().any(|b| b.block.payload.contains(&[4; 32]))));
    // Every node hears of it again, as its own and as another's.
    for node in 0..4 {
        r.event(node, Event::BatchAvailable([4; 32]));
        r.event(node, Event::LocalBatchReady([4; 32]));
    }
    r.run(2_000);
    for (node, commits) in r.commits.iter().enumerate() {
        let times = commits
            .iter()
            .filter(|b| b.block.payload.contains(&[4; 32]))
            .count();
        assert_eq!(times, 1, "node {node} committed the batch {times} times");
    }
    assert!(
        r.propose_timers_fired >= 1,
        "and the cluster went idle again"
    );
    assert_prefix_consistent(&r.commits);
}
