//! One rule per test: rejections with typed reasons, persistence order, payload deferral, encoding.

use super::*;

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
    bad.signatures[0] = r.cores[1].crypto.sign(b"something else");
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
    let (secrets, publics) = ValidatorCrypto::committee(42, 4);
    let crypto = ValidatorCrypto::new(Some(secrets[2].clone()), publics, VerifyCache::shared());
    let tip = CommittedBlock {
        height: 0,
        block: genesis_block(),
        qc: block_tree::genesis_qc(),
    };
    let mut restarted = Core::new(
        Config::new(CHAIN, 4, 2),
        crypto,
        Some(Recovered {
            safety: state,
            tip,
            history: Vec::new(),
            blocks: Vec::new(),
        }),
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

/// A proposal leaves before its `proposed_round` record is durable (the node shell does not wait
/// for an fsync to send it). A leader that crashes in that window and restarts must not propose
/// again in the round it comes back to, nor the next: it may already have, and a second,
/// different block would be an equivocation (voters' rules keep it safe, but it wastes the round).
#[test]
fn a_restarted_leader_does_not_propose_again_in_its_recovery_round() {
    let mut all = cores(4);
    let first = first_proposal(&all[1].handle(10, Event::Start));
    assert_eq!((first.block.round, first.block.author), (1, 1));
    let (secrets, publics) = ValidatorCrypto::committee(42, 4);
    let crypto = ValidatorCrypto::new(Some(secrets[1].clone()), publics, VerifyCache::shared());
    let tip = CommittedBlock {
        height: 0,
        block: genesis_block(),
        qc: block_tree::genesis_qc(),
    };
    // Crashed before anything became durable: the journal holds no safety record.
    let mut restarted = Core::new(
        Config::new(CHAIN, 4, 1),
        crypto,
        Some(Recovered {
            safety: SafetyState::default(),
            tip,
            history: Vec::new(),
            blocks: Vec::new(),
        }),
    );
    assert_eq!(restarted.round(), 1);
    assert!(restarted.safety().proposed_round > restarted.round());
    let actions = restarted.handle(12, Event::Start);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::Proposal(_),
                ..
            }
        )),
        "no second proposal in round 1"
    );
    // A fresh node (nothing recovered) has sent nothing before and proposes at once.
    assert_eq!(all[1].safety().proposed_round, 1);
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
        signatures: Vec::new(),
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
        signatures: vec![[3; 64]; 3],
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
            signature: [2; 64],
        }),
        Message::Timeout(TimeoutMsg {
            timeout: Timeout {
                round: 4,
                author: 2,
                high_qc: qc.clone(),
                signature: [4; 64],
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

#[test]
fn rejects_qc_signed_by_non_members() {
    let r = warmed_router();
    let mut qc = r.cores[0].high_qc().clone();
    qc.signers.insert(200);
    assert_eq!(
        r.cores[1].verify_qc(&qc),
        Err(RejectReason::QcNonMemberSigner)
    );
}

#[test]
fn leader_missing_the_certified_parent_syncs_it_from_a_signer() {
    let mut all = cores(4);
    let p = first_proposal(&all[1].handle(10, Event::Start));
    let hash = p.block.hash();
    // Node 2 leads round 2; it never receives the round-1 proposal, only the votes for it.
    let mut actions = Vec::new();
    for voter in [0u16, 1, 3] {
        let msg = vote_message(CHAIN, &hash, 1, 1);
        let vote = Vote {
            block_hash: hash,
            round: 1,
            height: 1,
            voter,
            signature: all[voter as usize].crypto.sign(&msg),
        };
        actions.extend(all[2].handle(
            11,
            Event::Message {
                from: voter,
                msg: Message::Vote(vote),
            },
        ));
    }
    assert_eq!(all[2].high_qc().round, 1);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::Proposal(_),
                ..
            }
        )),
        "no parent, no proposal"
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Send { to: Recipient::One(to), msg: Message::SyncRequest(_) } if *to != 2)));
}
