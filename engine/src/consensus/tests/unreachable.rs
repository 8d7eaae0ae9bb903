//! Rounds that wait on a validator the shell reports unreachable (`Event::PeerReachable`) end on
//! the short timer (`Config::unreachable_leader_timeout_ms`); the report changes timers only.

use super::*;
use crate::consensus::UNREACHABLE_LEADER_TIMEOUT_MS_DEFAULT as SHORT_MS;

fn report(r: &mut Router, about: ValidatorIndex, reachable: bool) {
    for node in (0..r.cores.len()).filter(|n| *n != about as usize) {
        r.event(
            node,
            Event::PeerReachable {
                validator: about,
                reachable,
            },
        );
    }
}

/// The armed round timer of `node`, checked to be for its current round.
fn armed_ms(r: &Router, node: usize) -> u64 {
    let (round, ms) = r.round_timers[node].expect("a round timer is always armed");
    assert_eq!(
        round,
        r.cores[node].round(),
        "node {node}: timer of another round"
    );
    ms
}

/// A cluster that committed with all four up, then lost `dead`.
fn lose(dead: ValidatorIndex) -> Router {
    let mut r = Router::new(4);
    r.start();
    r.run(3_000);
    assert!(r.commits[0].len() >= 10, "all four commit first");
    r.down = vec![dead];
    r
}

#[test]
fn every_stall_waiting_on_a_reported_dead_validator_ends_on_the_short_timer() {
    for dead in 0..4u16 {
        let mut r = lose(dead);
        report(&mut r, dead, false);
        let live: Vec<usize> = (0..4).filter(|n| *n != dead as usize).collect();
        let mut stalls = 0;
        loop {
            r.run(5_000);
            if !r.stalled() {
                break;
            }
            for node in &live {
                assert_eq!(
                    armed_ms(&r, *node),
                    SHORT_MS,
                    "validator {dead} down: node {node} waits the full timer at stall {stalls}"
                );
            }
            r.timeout_all();
            stalls += 1;
            assert!(
                stalls <= 3,
                "validator {dead}: still stalled after {stalls}"
            );
        }
        let before = r.commits[live[0]].len();
        r.run(20_000);
        assert!(r.commits[live[0]].len() >= before + 30, "validator {dead}");
        assert_prefix_consistent(&r.commits);
    }
}

#[test]
fn without_a_report_the_same_stall_waits_the_full_round_timer() {
    let mut seen_stall = false;
    for dead in 0..4u16 {
        let mut r = lose(dead);
        r.run(5_000);
        if !r.stalled() {
            continue; // the death did not touch the rounds in flight
        }
        seen_stall = true;
        for node in (0..4).filter(|n| *n != dead as usize) {
            assert!(armed_ms(&r, node) >= 1_000, "node {node}");
        }
    }
    assert!(seen_stall, "some death stalls the cluster");
}

#[test]
fn a_withdrawn_report_restores_the_full_timer() {
    let mut withdrawn = 0;
    for dead in 0..4u16 {
        let mut r = lose(dead);
        report(&mut r, dead, false);
        r.run(5_000);
        if !r.stalled() {
            continue;
        }
        let live: Vec<usize> = (0..4).filter(|n| *n != dead as usize).collect();
        assert!(live.iter().all(|n| armed_ms(&r, *n) == SHORT_MS));
        report(&mut r, dead, true);
        for node in live {
            assert!(
                armed_ms(&r, node) >= 1_000,
                "node {node}: back to the full timer"
            );
        }
        withdrawn += 1;
    }
    assert!(withdrawn > 0, "some death stalls the cluster");
}

#[test]
fn the_short_timer_fires_once_a_round_and_then_the_timer_backs_off() {
    // Two of four down: no TC can form, so rounds must not spin on short timers.
    let mut r = lose(3);
    r.down = vec![2, 3];
    report(&mut r, 2, false);
    report(&mut r, 3, false);
    r.run(5_000);
    assert!(r.stalled());
    let round = r.cores[0].round();
    let mut after = Vec::new();
    for _ in 0..3 {
        r.timeout_all();
        r.run(5_000);
        assert_eq!(r.cores[0].round(), round, "no quorum, no new round");
        after.push(armed_ms(&r, 0));
    }
    assert!(
        after.iter().all(|ms| *ms >= 1_000),
        "after its short timer, a round waits the full timer: {after:?}"
    );
    assert!(
        after.windows(2).all(|w| w[1] >= w[0]),
        "and backs off: {after:?}"
    );
}

#[test]
fn a_wrong_report_about_a_live_validator_costs_no_safety_and_little_progress() {
    let mut r = Router::new(4);
    r.start();
    r.run(3_000);
    // Node 0 alone believes the validator it is waiting on now is down: it then times out every
    // round it waits on that validator.
    let mut wrongly = None;
    while wrongly.is_none() {
        r.run(1);
        wrongly = r.cores[0].awaited_validator().filter(|v| *v != 0);
    }
    let wrongly = wrongly.expect("found above");
    let observer = (1..4)
        .find(|n| *n != wrongly as usize)
        .expect("a third node");
    let before = r.commits[observer].len();
    r.event(
        0,
        Event::PeerReachable {
            validator: wrongly,
            reachable: false,
        },
    );
    let mut early = 0;
    for _ in 0..5_000 {
        r.run(1);
        if armed_ms(&r, 0) == SHORT_MS {
            let round = r.cores[0].round();
            r.event(0, Event::Timer { round });
            early += 1;
        }
    }
    r.run(20_000);
    assert!(early > 0, "node 0 waited on validator {wrongly} again");
    assert!(
        r.commits[observer].len() >= before + 30,
        "the others commit: {} -> {}",
        before,
        r.commits[observer].len()
    );
    assert_prefix_consistent(&r.commits);
}

#[test]
fn reports_about_itself_or_non_members_are_ignored() {
    let mut core = cores(4).remove(0);
    core.handle(10, Event::Start);
    for validator in [0u16, 4, 300] {
        let actions = core.handle(
            20,
            Event::PeerReachable {
                validator,
                reachable: false,
            },
        );
        assert!(actions.is_empty(), "validator {validator}: {actions:?}");
    }
}
