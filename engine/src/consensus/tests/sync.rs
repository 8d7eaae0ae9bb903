//! Block sync: responses are verified (linkage, heights, every QC) before anything is applied.

use super::*;

fn sync_response_from_warmed_node() -> SyncResponse {
    let mut r = warmed_router();
    r.run(400);
    let actions = r.cores[0].handle(
        r.now_ms,
        Event::Message {
            from: 1,
            msg: Message::SyncRequest(SyncRequest { from_height: 1 }),
        },
    );
    let response = actions
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                to: Recipient::One(1),
                msg: Message::SyncResponse(s),
            } => Some(s),
            _ => None,
        })
        .expect("a sync response");
    assert!(
        response.blocks.len() >= 4,
        "a useful response: {}",
        response.blocks.len()
    );
    response
}

#[test]
fn sync_responses_are_verified_before_anything_is_applied() {
    let good = sync_response_from_warmed_node();
    let feed = |response: SyncResponse| {
        let mut fresh = cores(4).remove(3);
        let actions = fresh.handle(
            5_000,
            Event::Message {
                from: 0,
                msg: Message::SyncResponse(response),
            },
        );
        (
            rejected(&actions),
            fresh.committed_height(),
            actions.iter().any(|a| matches!(a, Action::Commit(_))),
        )
    };
    let mut gap = good.clone();
    gap.blocks.remove(1);
    assert_eq!(
        feed(gap),
        (vec![RejectReason::SyncInvalid("hash linkage")], 0, false)
    );
    let mut forged = good.clone();
    forged.last_qc.as_mut().expect("qc").signatures[0] = cores(4)[0].crypto.sign(b"not a vote");
    assert_eq!(
        feed(forged),
        (vec![RejectReason::QcInvalidSignature], 0, false)
    );
    let mut unlinked = good.clone();
    unlinked.blocks.remove(0);
    assert!(matches!(
        feed(unlinked).0[..],
        [RejectReason::SyncInvalid(_)]
    ));
    let mut tampered = good.clone();
    tampered.blocks[2].payload.push([7; 32]);
    assert_eq!(
        feed(tampered).1,
        0,
        "a tampered block breaks the hash linkage"
    );
    let mut no_qc = good.clone();
    no_qc.last_qc = None;
    assert_eq!(
        feed(no_qc),
        (
            vec![RejectReason::SyncInvalid("no QC for last block")],
            0,
            false
        )
    );
    let (rejects, height, committed) = feed(good);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert!(
        height >= 2 && committed,
        "the verified chain commits: height {height}"
    );
}

#[test]
fn audit_accepts_a_committed_chain_and_rejects_any_tampering() {
    use crate::consensus::audit::{audit_chain, AuditError};
    let mut r = warmed_router();
    r.run(400);
    let chain = r.commits[0].clone();
    assert!(chain.len() >= 5);
    let genesis = CommittedBlock {
        height: 0,
        block: genesis_block(),
        qc: genesis_qc(),
    };
    let auditor = &r.cores[1];
    let audit = |blocks: &[CommittedBlock]| {
        audit_chain(&auditor.crypto, auditor.config(), &genesis, blocks)
    };
    assert_eq!(audit(&chain), Ok(()));
    let mut gap = chain.clone();
    gap.remove(2);
    assert_eq!(
        audit(&gap),
        Err(AuditError::HeightGap {
            height: 4,
            expected: 3
        })
    );
    let mut payload = chain.clone();
    payload[3].block.payload.push([1; 32]);
    assert_eq!(audit(&payload), Err(AuditError::QcMismatch { height: 4 }));
    let mut forged = chain.clone();
    forged[1].qc.signatures[0] = auditor.crypto.sign(b"forged");
    assert_eq!(audit(&forged), Err(AuditError::QcInvalid { height: 2 }));
    let mut bytes_round_trip = Vec::new();
    for c in &chain {
        bytes_round_trip.push(CommittedBlock::decode(&c.encode()).expect("log record decodes"));
    }
    assert_eq!(audit(&bytes_round_trip), Ok(()));
}

/// Regression (simulator seeds 172 and 388): a node that fell behind must catch up even when every
/// peer that could serve it has restarted since. A restarted node's committed window is refilled
/// from its log (`Recovered::history`), so it serves sync from below its restart point.
#[test]
fn laggard_catches_up_after_every_up_to_date_peer_restarted() {
    let mut r = Router::new(4);
    // The laggard stays within the peers' committed window (`COMMITTED_WINDOW_MAX`).
    let ahead = r.leave_validator_3_behind();
    r.queue.clear();
    for node in 0..3 {
        r.restart(node);
    }
    r.queue.clear();
    // A restarted node serves the chain from height 1, not only from its recovered tip.
    let actions = r.cores[0].handle(
        r.now_ms,
        Event::Message {
            from: 3,
            msg: Message::SyncRequest(SyncRequest { from_height: 1 }),
        },
    );
    let served: Vec<u64> = actions
        .iter()
        .find_map(|a| match a {
            Action::Send {
                msg: Message::SyncResponse(s),
                ..
            } => Some(s.blocks.iter().map(|b| b.height).collect()),
            _ => None,
        })
        .expect("a sync response");
    assert_eq!(served.first(), Some(&1), "served from height 1: {served:?}");
    assert!(served.len() >= ahead.min(SYNC_BLOCKS_MAX), "{served:?}");
    r.down.clear();
    for _ in 0..4 {
        r.timeout_all();
        r.run(3_000);
    }
    assert!(
        r.commits[3].len() >= ahead,
        "node 3 caught up: {} of {ahead}",
        r.commits[3].len()
    );
    assert_prefix_consistent(&r.commits);
}

/// The window refilled on restart keeps only blocks that link down from the tip.
#[test]
fn recovered_window_keeps_only_the_chain_that_links_to_the_tip() {
    let mut r = warmed_router();
    r.run(400);
    let log = r.commits[0].clone();
    assert!(log.len() >= 6, "{}", log.len());
    let (secrets, publics) = ValidatorCrypto::committee(42, 4);
    let crypto = ValidatorCrypto::new(Some(secrets[0].clone()), publics, VerifyCache::shared());
    let mut history = log[..log.len() - 1].to_vec();
    history[1].block.payload.push([9; 32]); // height 2 no longer matches its QC: cut below 3
    let mut core = Core::new(
        Config::new(CHAIN, 4, 0),
        crypto,
        Some(Recovered {
            safety: r.durable_safety[0],
            tip: log.last().cloned().expect("nonempty"),
            history,
            blocks: Vec::new(),
        }),
    );
    let actions = core.handle(
        r.now_ms,
        Event::Message {
            from: 1,
            msg: Message::SyncRequest(SyncRequest { from_height: 1 }),
        },
    );
    let first_served = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::Send {
                msg: Message::SyncResponse(s),
                ..
            } => Some(s.blocks.first().map(|b| b.height)),
            _ => None,
        })
    };
    assert_eq!(
        first_served(&actions),
        None,
        "height 1 is not in the window"
    );
    assert!(
        matches!(
            actions[..],
            [Action::ServeSyncFromLog {
                to: 1,
                from_height: 1,
                window_start: 3
            }]
        ),
        "below the window: served from the log, {actions:?}"
    );
    let actions = core.handle(
        r.now_ms,
        Event::Message {
            from: 1,
            msg: Message::SyncRequest(SyncRequest { from_height: 3 }),
        },
    );
    assert_eq!(first_served(&actions), Some(Some(3)));
}

/// An empty sync response does not re-arm the request at once: the next request (to whichever peer
/// shows a QC next) waits `SYNC_RETRY_MS`, instead of a request/response loop at network speed.
#[test]
fn empty_sync_response_paces_the_next_request() {
    let mut r = warmed_router();
    let timeout_from = |r: &mut Router, node: usize| {
        let (now, round) = (r.now_ms, r.cores[node].round());
        let actions = r.cores[node].handle(now, Event::Timer { round });
        actions
            .into_iter()
            .find_map(|a| match a {
                Action::Send {
                    msg: Message::Timeout(t),
                    ..
                } => Some(t),
                _ => None,
            })
            .expect("a timeout")
    };
    let (from_0, from_1) = (timeout_from(&mut r, 0), timeout_from(&mut r, 1));
    let mut fresh = cores(4).remove(3);
    let sync_requests = |actions: &[Action]| -> Vec<Recipient> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    to,
                    msg: Message::SyncRequest(_),
                } => Some(to.clone()),
                _ => None,
            })
            .collect()
    };
    let message = |from, msg| Event::Message { from, msg };
    let t0 = 10_000;
    let actions = fresh.handle(t0, message(0, Message::Timeout(from_0)));
    assert_eq!(sync_requests(&actions), vec![Recipient::One(0)]);
    let empty = SyncResponse {
        blocks: Vec::new(),
        last_qc: None,
    };
    fresh.handle(t0 + 10, message(0, Message::SyncResponse(empty)));
    let actions = fresh.handle(t0 + 20, message(1, Message::Timeout(from_1.clone())));
    assert!(sync_requests(&actions).is_empty(), "paced: {actions:?}");
    let actions = fresh.handle(t0 + SYNC_RETRY_MS, message(1, Message::Timeout(from_1)));
    assert_eq!(sync_requests(&actions), vec![Recipient::One(1)]);
}

/// A response that starts below what this node committed since it asked (the parent of its first
/// block may be pruned) is applied from the committed tip up, not rejected.
#[test]
fn sync_response_overlapping_new_commits_is_applied_from_the_tip() {
    let good = sync_response_from_warmed_node();
    assert!(good.blocks.len() >= 5, "{}", good.blocks.len());
    let mut fresh = cores(4).remove(3);
    let partial = SyncResponse {
        blocks: good.blocks[..3].to_vec(),
        last_qc: Some(good.blocks[3].justify.clone()),
    };
    let actions = fresh.handle(
        5_000,
        Event::Message {
            from: 0,
            msg: Message::SyncResponse(partial),
        },
    );
    assert!(rejected(&actions).is_empty(), "{:?}", rejected(&actions));
    let partly = fresh.committed_height();
    assert!(partly >= 1, "the partial chain commits");
    let actions = fresh.handle(
        5_010,
        Event::Message {
            from: 0,
            msg: Message::SyncResponse(good),
        },
    );
    assert!(rejected(&actions).is_empty(), "{:?}", rejected(&actions));
    assert!(
        fresh.committed_height() > partly,
        "{} -> {}",
        partly,
        fresh.committed_height()
    );
}

/// Votes can overtake their proposal: the next leader forms the QC first, then receives the block
/// for a round it already left. It keeps the certified block and proposes on it at once, instead
/// of waiting for sync or timing out (found by the simulator's idle-pacing test).
#[test]
fn next_leader_keeps_a_late_block_its_qc_certifies_and_proposes_on_it() {
    let mut all = cores(4);
    let p = super::first_proposal(&all[1].handle(10, Event::Start));
    let hash = p.block.hash();
    for voter in [0u16, 1, 3] {
        let msg = vote_message(CHAIN, &hash, 1, 1);
        let vote = Vote {
            block_hash: hash,
            round: 1,
            height: 1,
            voter,
            signature: all[voter as usize].crypto.sign(&msg),
        };
        all[2].handle(
            11,
            Event::Message {
                from: voter,
                msg: Message::Vote(vote),
            },
        );
    }
    assert_eq!((all[2].round(), all[2].high_qc().round), (2, 1));
    let actions = all[2].handle(
        12,
        Event::Message {
            from: 1,
            msg: Message::Proposal(p),
        },
    );
    assert!(rejected(&actions).is_empty(), "{:?}", rejected(&actions));
    let mine = super::first_proposal(&actions);
    assert_eq!((mine.block.round, mine.block.justify.block_hash), (2, hash));
}

/// A request from below the committed window is handed to the shell to serve from its block log;
/// one from inside the window is answered from memory as before; what the log serves verifies and
/// commits on a fresh node like any response.
#[test]
fn a_sync_request_from_below_the_committed_window_is_served_from_the_log() {
    let mut r = Router::with(4, |cfg| cfg.committed_window = 4);
    r.start();
    r.run(600);
    let committed = r.cores[0].committed_height();
    assert!(
        committed >= 8,
        "a chain longer than the window: {committed}"
    );
    let request = |r: &mut Router, from_height| {
        let now = r.now_ms;
        r.cores[0].handle(
            now,
            Event::Message {
                from: 1,
                msg: Message::SyncRequest(SyncRequest { from_height }),
            },
        )
    };
    let below = request(&mut r, 1);
    let window_start = committed - 3;
    assert!(
        matches!(below[..], [Action::ServeSyncFromLog { to: 1, from_height: 1, window_start: w }] if w == window_start),
        "{below:?}"
    );
    let inside = request(&mut r, window_start);
    let served = inside.iter().find_map(|a| match a {
        Action::Send {
            to: Recipient::One(1),
            msg: Message::SyncResponse(s),
        } => Some(s.blocks.len()),
        _ => None,
    });
    assert!(served.is_some_and(|n| n >= 4), "{inside:?}");

    let log = r.commits[0].clone();
    let response = sync_response_from_log(1, |h| log.get(h as usize - 1).cloned());
    assert_eq!(
        response.blocks.len(),
        log.len().min(SYNC_BLOCKS_MAX),
        "consecutive blocks from the log"
    );
    assert_eq!(
        sync_response_from_log(log.len() as u64 + 1, |h| log.get(h as usize - 1).cloned())
            .blocks
            .len(),
        0,
        "nothing past the log's end"
    );
    let mut fresh = cores(4).remove(3);
    let actions = fresh.handle(
        r.now_ms,
        Event::Message {
            from: 0,
            msg: Message::SyncResponse(response),
        },
    );
    assert!(rejected(&actions).is_empty(), "{:?}", rejected(&actions));
    assert!(
        fresh.committed_height() + 1 >= log.len().min(SYNC_BLOCKS_MAX) as u64,
        "the log's blocks commit: {}",
        fresh.committed_height()
    );
}

/// A node that fell further behind than every peer's committed window catches up from their
/// logs (before, every peer answered it with nothing and it could never vote again).
#[test]
fn laggard_behind_every_window_catches_up_from_the_logs() {
    let mut r = Router::with(4, |cfg| cfg.committed_window = 2);
    // At least 5 blocks ahead: node 3's next height is below every 2-block window.
    let ahead = r.leave_validator_3_behind();
    r.rejoin(3);
    assert!(r.served_from_log > 0, "the peers served it from their logs");
    assert!(
        r.commits[3].len() >= ahead,
        "node 3 caught up: {} of {ahead}",
        r.commits[3].len()
    );
    r.assert_no_invalid_sync();
    assert_prefix_consistent(&r.commits);
}
