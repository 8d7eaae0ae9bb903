//! Behaviour of transfers: balances, linked chains, two-phase, expiry, balancing, closing,
//! idempotency, time and the request entry point.

use super::*;
use crate::codec::{encode_body, DecodeError, RecordError};
use crate::ledger::{BatchError, RequestError, TableFill};
use crate::types::{transfer_flags as tf, Operation, Reply};

fn t(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    transfer(id, debit, credit, amount, LEAD)
}

#[test]
fn plain_transfer_moves_posted_balances() {
    let mut world = World::consortium();
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![t(5, LEAD_CASH, BORROWER, 70)]),
    );
    assert_eq!(world.account(LEAD_CASH).debits_posted, FUNDING_FUNDS + 70);
    assert_eq!(world.account(BORROWER).credits_posted, 70);
    let stored = world.ledger.lookup_transfers(LEAD, &[5]);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].timestamp, world.clock_ns);
    world.assert_conserved();
}

#[test]
fn event_timestamps_are_batch_timestamp_plus_index() {
    let mut world = World::consortium();
    let events = vec![
        t(5, LEAD_CASH, BORROWER, 1),
        t(6, LEAD_CASH, BORROWER, 1),
        t(7, LEAD_CASH, BORROWER, 1),
    ];
    world.expect_ok(LEAD, Events::CreateTransfers(events));
    let stored = world.ledger.lookup_transfers(LEAD, &[5, 6, 7]);
    let stamps: Vec<u64> = stored.iter().map(|transfer| transfer.timestamp).collect();
    assert_eq!(
        stamps,
        vec![world.clock_ns, world.clock_ns + 1, world.clock_ns + 2]
    );
    assert_eq!(world.ledger.timestamp_last(), world.clock_ns + 2);
}

#[test]
fn batch_timestamp_must_increase() {
    let mut world = World::consortium();
    let batch = Batch {
        requester: LEAD,
        timestamp_ns: world.clock_ns,
        events: Events::CreateTransfers(vec![]),
    };
    let refused = world.ledger.apply(&batch);
    assert!(matches!(
        refused,
        Err(BatchError::TimestampNotIncreasing { .. })
    ));
    let batch = Batch {
        timestamp_ns: u64::MAX,
        events: Events::CreateTransfers(vec![t(5, LEAD_CASH, BORROWER, 1)]),
        ..batch
    };
    assert!(matches!(
        world.ledger.apply(&batch),
        Err(BatchError::TimestampOverflow { .. })
    ));
}

#[test]
fn linked_chain_is_all_or_nothing() {
    let mut world = World::consortium();
    let digest = world.ledger.digest();
    let linked = |transfer: Transfer| Transfer {
        flags: tf::LINKED,
        ..transfer
    };
    let events = vec![
        linked(t(5, LEAD_CASH, BORROWER, 1)),
        linked(t(6, LEAD_CASH, BORROWER, 2)),
        t(7, LEAD_CASH, 999, 3),
    ];
    let codes = world.codes(LEAD, Events::CreateTransfers(events));
    assert_eq!(
        codes,
        vec![
            ResultCode::LinkedEventFailed,
            ResultCode::LinkedEventFailed,
            ResultCode::CreditAccountNotFound
        ]
    );
    assert_eq!(world.account(BORROWER).credits_posted, 0);
    assert_eq!(world.ledger.digest(), digest);
    assert!(world.ledger.lookup_transfers(LEAD, &[5, 6]).is_empty());
    // The same ids succeed afterwards, with an unlinked event after the chain.
    let events = vec![
        linked(t(5, LEAD_CASH, BORROWER, 1)),
        t(6, LEAD_CASH, BORROWER, 2),
        t(7, LEAD_CASH, BORROWER, 3),
    ];
    world.expect_ok(LEAD, Events::CreateTransfers(events));
    assert_eq!(world.account(BORROWER).credits_posted, 6);
    world.assert_conserved();
}

#[test]
fn linked_chain_rolls_back_posts_and_history() {
    let mut world = World::consortium();
    let pending = Transfer {
        flags: tf::PENDING,
        ..t(5, LEAD_CASH, BORROWER, 10)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending]));
    let digest = world.ledger.digest();
    let post = Transfer {
        flags: tf::POST_PENDING | tf::LINKED,
        pending_id: 5,
        ..t(6, 0, 0, 0)
    };
    let codes = world.codes(
        LEAD,
        Events::CreateTransfers(vec![post, t(7, LEAD_CASH, BORROWER, 0)]),
    );
    assert_eq!(
        codes,
        vec![
            ResultCode::LinkedEventFailed,
            ResultCode::AmountMustNotBeZero
        ]
    );
    assert_eq!(world.ledger.digest(), digest);
    assert_eq!(world.account(BORROWER).credits_pending, 10);
    let history = world.ledger.get_account_transfers(
        LEAD,
        &crate::types::Query {
            id: BORROWER,
            ..Default::default()
        },
    );
    assert_eq!(
        history
            .iter()
            .map(|transfer| transfer.id)
            .collect::<Vec<_>>(),
        vec![5]
    );
    // The pending transfer can still be posted.
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![Transfer {
            flags: tf::POST_PENDING,
            ..post
        }]),
    );
    assert_eq!(world.account(BORROWER).credits_posted, 10);
}

#[test]
fn two_phase_partial_post_releases_the_whole_pending_amount() {
    let mut world = World::consortium();
    let pending = Transfer {
        flags: tf::PENDING,
        ..t(5, LEAD_CASH, BORROWER, 100)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending]));
    assert_eq!(world.account(LEAD_CASH).debits_pending, 100);
    assert_eq!(world.account(BORROWER).credits_pending, 100);
    let post = Transfer {
        flags: tf::POST_PENDING,
        pending_id: 5,
        amount: 60,
        ..t(6, 0, 0, 0)
    };
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![Transfer {
            ledger: 0,
            code: 0,
            ..post
        }]),
    );
    assert_eq!(world.account(LEAD_CASH).debits_pending, 0);
    assert_eq!(world.account(BORROWER).credits_pending, 0);
    assert_eq!(world.account(BORROWER).credits_posted, 60);
    let stored = world.ledger.lookup_transfers(LEAD, &[6]);
    assert_eq!(
        (stored[0].amount, stored[0].debit_account_id),
        (60, LEAD_CASH)
    );
    world.assert_conserved();
}

#[test]
fn void_releases_pending_and_posts_nothing() {
    let mut world = World::consortium();
    let pending = Transfer {
        flags: tf::PENDING,
        ..t(5, LEAD_CASH, BORROWER, 100)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending]));
    let void = Transfer {
        flags: tf::VOID_PENDING,
        pending_id: 5,
        ..t(6, LEAD_CASH, BORROWER, 0)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![void]));
    assert_eq!(world.account(BORROWER).credits_pending, 0);
    assert_eq!(world.account(BORROWER).credits_posted, 0);
    world.assert_conserved();
}

#[test]
fn pending_transfers_expire_as_time_advances() {
    let mut world = World::consortium();
    let pending = Transfer {
        flags: tf::PENDING,
        timeout_s: 3,
        ..t(5, LEAD_CASH, BORROWER, 100)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending]));
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![t(6, LEAD_CASH, BORROWER, 1)]),
    );
    assert_eq!(
        world.account(BORROWER).credits_pending,
        100,
        "not yet due after one second"
    );
    let digest = world.ledger.digest();
    world.clock_ns += 2 * NS_PER_S;
    world.expect_ok(LEAD, Events::CreateTransfers(vec![]));
    assert_eq!(world.account(BORROWER).credits_pending, 0);
    assert_eq!(world.account(LEAD_CASH).debits_pending, 0);
    assert_ne!(world.ledger.digest(), digest, "an expiry is a state change");
    world.assert_conserved();
}

#[test]
fn balancing_debit_caps_at_the_available_balance() {
    let mut world = World::consortium();
    // FUNDING holds 20,000 credits; a balancing debit of "everything" (amount 0) takes exactly that.
    let sweep = Transfer {
        flags: tf::BALANCING_DEBIT,
        ..t(5, FUNDING, BORROWER, 0)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![sweep]));
    assert_eq!(world.net(FUNDING), 0);
    assert_eq!(
        world.ledger.lookup_transfers(LEAD, &[5])[0].amount,
        FUNDING_FUNDS
    );
    // A capped balancing credit: BORROWER has no debits, so it can take nothing.
    let capped = Transfer {
        flags: tf::BALANCING_CREDIT,
        ..t(6, LEAD_CASH, BORROWER, 50)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![capped]));
    assert_eq!(world.ledger.lookup_transfers(LEAD, &[6])[0].amount, 0);
    // Re-submitting the sweep is `Exists`: the stored amount is within its cap.
    assert_eq!(
        world.code(LEAD, Events::CreateTransfers(vec![sweep])),
        ResultCode::Exists
    );
    world.assert_conserved();
}

#[test]
fn closing_transfer_closes_and_void_or_expiry_reopens() {
    let mut world = World::consortium();
    let closing = Transfer {
        flags: tf::PENDING | tf::CLOSING_DEBIT,
        timeout_s: 5,
        ..t(5, LEAD_CASH, BORROWER, 1)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![closing]));
    let blocked = world.code(
        LEAD,
        Events::CreateTransfers(vec![t(6, LEAD_CASH, BORROWER, 1)]),
    );
    assert_eq!(blocked, ResultCode::DebitAccountAlreadyClosed);
    let void = Transfer {
        flags: tf::VOID_PENDING,
        pending_id: 5,
        ..t(7, 0, 0, 0)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![void]));
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![t(6, LEAD_CASH, BORROWER, 1)]),
    );
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![Transfer { id: 8, ..closing }]),
    );
    world.clock_ns += 10 * NS_PER_S;
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![t(9, LEAD_CASH, BORROWER, 1)]),
    );
    world.assert_conserved();
}

#[test]
fn resubmitting_a_batch_changes_nothing() {
    let mut world = World::consortium();
    let events = vec![
        t(5, LEAD_CASH, BORROWER, 1),
        Transfer {
            flags: tf::PENDING,
            ..t(6, LEAD_CASH, BORROWER, 2)
        },
    ];
    world.expect_ok(LEAD, Events::CreateTransfers(events.clone()));
    let digest = world.ledger.digest();
    let totals = world.ledger.totals();
    let codes = world.codes(LEAD, Events::CreateTransfers(events));
    assert_eq!(codes, vec![ResultCode::Exists, ResultCode::Exists]);
    assert_eq!(world.ledger.digest(), digest);
    assert_eq!(world.ledger.totals(), totals);
}

#[test]
fn apply_request_decodes_and_applies() {
    let mut world = World::consortium();
    let body = encode_body(&[t(5, LEAD_CASH, BORROWER, 9)]);
    let reply = world.ledger.apply_request(
        LEAD,
        world.clock_ns + 1,
        Operation::CreateTransfers as u8,
        &body,
    );
    assert_eq!(reply, Ok(Reply::Results(vec![])));
    assert_eq!(world.account(BORROWER).credits_posted, 9);
    let unknown = world
        .ledger
        .apply_request(LEAD, world.clock_ns + 2, 200, &body);
    assert_eq!(
        unknown,
        Err(RequestError::Decode(DecodeError::OperationUnknown {
            value: 200
        }))
    );
    let short = world.ledger.apply_request(
        LEAD,
        world.clock_ns + 2,
        Operation::CreateTransfers as u8,
        &body[..100],
    );
    assert_eq!(
        short,
        Err(RequestError::Decode(DecodeError::BodyLength { bytes: 100 }))
    );
    let mut bad_flags = body.clone();
    bad_flags[119] = 0x80; // bit 15 of the flags: unknown.
    let refused = world.ledger.apply_request(
        LEAD,
        world.clock_ns + 2,
        Operation::CreateTransfers as u8,
        &bad_flags,
    );
    let expected = DecodeError::Event {
        index: 0,
        source: RecordError::FlagsUnknown {
            record: "transfer",
            flags: 0x8000,
        },
    };
    assert_eq!(refused, Err(RequestError::Decode(expected)));
}

#[test]
fn debit_of_an_account_of_another_institution_is_refused_for_every_requester_but_its_owner() {
    let mut world = World::consortium();
    for requester in [OPERATOR, PARTNER, OTHER] {
        let code = world.code(
            requester,
            Events::CreateTransfers(vec![transfer(5, LEAD_CASH, BORROWER, 1, requester)]),
        );
        assert_eq!(
            code,
            ResultCode::DebitAccountNotOwned,
            "requester {requester}"
        );
    }
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![t(5, LEAD_CASH, BORROWER, 1)]),
    );
}

/// The digest after a create_transfers request that stored `stored`, by the digest's definition:
/// `xxh3_128_with_seed(digest_before ‖ records, TRANSFERS)`.
fn transfers_digest(digest_before: u128, stored: &[Transfer]) -> u128 {
    use crate::codec::Record;
    let mut bytes = digest_before.to_le_bytes().to_vec();
    stored
        .iter()
        .for_each(|transfer| bytes.extend_from_slice(&transfer.to_bytes()));
    xxhash_rust::xxh3::xxh3_128_with_seed(&bytes, crate::ledger::digest_tag::TRANSFERS)
}

#[test]
fn a_transfer_request_is_mixed_into_the_digest_as_one_chunk_of_wire_records() {
    let mut world = World::consortium();
    let digest_before = world.ledger.digest();
    let events = vec![
        t(5, LEAD_CASH, BORROWER, 1),
        t(6, LEAD_CASH, 999, 1),
        t(7, LEAD_CASH, BORROWER, 2),
    ];
    world.codes(LEAD, Events::CreateTransfers(events));
    let stored = world.ledger.lookup_transfers(LEAD, &[5, 7]);
    assert_eq!(
        world.ledger.digest(),
        transfers_digest(digest_before, &stored)
    );
}

#[test]
fn reserve_and_prefault_mid_life_keep_state_and_change_no_result_or_digest() {
    let mut plain = World::consortium();
    let mut reserved = World::consortium();
    let first: Vec<Transfer> = (0..40)
        .map(|i| t(100 + i, LEAD_CASH, BORROWER, 3))
        .collect();
    plain.expect_ok(LEAD, Events::CreateTransfers(first.clone()));
    reserved.expect_ok(LEAD, Events::CreateTransfers(first));
    reserved.ledger.reserve(50_000, 200_000);
    let populated = reserved.ledger.prefault();
    // 200,000 transfers of 128 bytes: the transfer table alone is 24 MiB of spare capacity.
    #[cfg(target_os = "linux")]
    assert!(populated >= 24 << 20, "populated {populated} bytes");
    let _ = populated;
    assert!(reserved.ledger.config().transfers_capacity >= 200_000);
    assert!(reserved.ledger.transfers.capacity() >= 200_000);
    assert!(reserved.ledger.transfer_meta.capacity() >= 200_000);
    assert!(reserved.ledger.accounts.capacity() >= 50_000);
    let second: Vec<Transfer> = (0..40)
        .map(|i| t(200 + i, LEAD_CASH, BORROWER, 5))
        .collect();
    plain.expect_ok(LEAD, Events::CreateTransfers(second.clone()));
    reserved.expect_ok(LEAD, Events::CreateTransfers(second));
    assert_eq!(plain.ledger.digest(), reserved.ledger.digest());
    assert_eq!(
        plain.ledger.lookup_transfers(LEAD, &[105, 205]),
        reserved.ledger.lookup_transfers(LEAD, &[105, 205])
    );
    assert_eq!(reserved.account(BORROWER).credits_posted, 40 * 3 + 40 * 5);
    reserved.assert_conserved();
}

#[test]
fn table_fill_counts_records_and_warns_once_when_a_table_nears_its_capacity() {
    let mut world = World::consortium();
    let before = world.ledger.table_fill();
    let batch: Vec<Transfer> = (0..40)
        .map(|i| t(300 + i, LEAD_CASH, BORROWER, 1))
        .collect();
    world.expect_ok(LEAD, Events::CreateTransfers(batch));
    let after = world.ledger.table_fill();
    assert_eq!(after.transfers, before.transfers + 40);
    assert_eq!(
        after.transfers_capacity,
        world.ledger.config().transfers_capacity
    );
    assert_eq!(after.accounts, before.accounts);

    let fill = |accounts: usize, transfers: usize, transfers_capacity: usize| TableFill {
        accounts,
        accounts_capacity: 1_000,
        transfers,
        transfers_capacity,
    };
    // 90 % of 10,000 is 9,000: crossing it warns, once.
    assert_eq!(
        fill(10, 9_000, 10_000).crossed_warning(&fill(10, 8_999, 10_000)),
        vec!["transfers"]
    );
    assert!(fill(10, 9_500, 10_000)
        .crossed_warning(&fill(10, 9_000, 10_000))
        .is_empty());
    assert!(fill(10, 8_999, 10_000)
        .crossed_warning(&fill(10, 100, 10_000))
        .is_empty());
    // A table reserved larger in between is far from full again.
    assert!(fill(10, 10_001, 20_000)
        .crossed_warning(&fill(10, 9_999, 10_000))
        .is_empty());
    assert_eq!(
        fill(900, 5, 10_000).crossed_warning(&fill(899, 5, 10_000)),
        vec!["accounts"]
    );
}

#[test]
fn a_ledger_grown_far_past_its_capacity_keeps_records_digest_and_rollback_across_segments() {
    let mut world = World::consortium(); // sized for 16 Ki transfers: it must grow
    let capacity = world.ledger.config().transfers_capacity;
    let boundary = crate::ledger::table::SEGMENT_LEN;
    assert!(capacity < boundary);
    let mut id = 1_000u128;
    let mut fill = |world: &mut World, count: usize| {
        let events: Vec<Transfer> = (0..count)
            .map(|_| {
                id += 1;
                t(id, LEAD_CASH, BORROWER, 1)
            })
            .collect();
        world.expect_ok(LEAD, Events::CreateTransfers(events));
    };
    while world.ledger.transfers.len() + 5_000 < boundary {
        fill(&mut world, 5_000);
    }
    let last = boundary - 3 - world.ledger.transfers.len();
    fill(&mut world, last);
    assert_eq!(world.ledger.transfers.len(), boundary - 3);
    let first_record = &world.ledger.transfers[0] as *const Transfer;

    // A linked chain that straddles the segment boundary and fails at its end rolls back
    // through it.
    let linked = |transfer: Transfer| Transfer {
        flags: tf::LINKED,
        ..transfer
    };
    let digest = world.ledger.digest();
    let chain: Vec<Transfer> = (0..6)
        .map(|i| linked(t(900_000 + i, LEAD_CASH, BORROWER, 1)))
        .chain([t(900_006, LEAD_CASH, 999, 1)])
        .collect();
    let codes = world.codes(LEAD, Events::CreateTransfers(chain));
    assert_eq!(codes[6], ResultCode::CreditAccountNotFound);
    assert_eq!(world.ledger.transfers.len(), boundary - 3);
    assert_eq!(world.ledger.digest(), digest);
    assert!(world
        .ledger
        .lookup_transfers(LEAD, &[900_002, 900_004])
        .is_empty());

    // A request straddling the boundary is mixed into the digest as one chunk, exactly as the
    // digest's definition says (records concatenated across the segments).
    let digest_before = world.ledger.digest();
    let ids: Vec<u128> = (0..7).map(|i| 900_000 + i).collect();
    let events: Vec<Transfer> = ids
        .iter()
        .map(|&id| t(id, LEAD_CASH, BORROWER, 2))
        .collect();
    world.expect_ok(LEAD, Events::CreateTransfers(events));
    assert_eq!(world.ledger.transfers.len(), boundary + 4);
    let stored = world.ledger.lookup_transfers(LEAD, &ids);
    assert_eq!(stored.len(), 7);
    assert_eq!(
        world.ledger.digest(),
        transfers_digest(digest_before, &stored)
    );
    assert_eq!(
        &world.ledger.transfers[0] as *const Transfer, first_record,
        "growth moved a record"
    );
    assert_eq!(world.ledger.table_fill().transfers, boundary + 4);
    assert_eq!(world.ledger.table_fill().transfers_capacity, capacity);

    // Every record is still found by id, and a snapshot restores the same state.
    assert_eq!(
        world
            .ledger
            .lookup_transfers(LEAD, &[1_001, 1_000 + 40_000])
            .len(),
        2
    );
    let restored = crate::ledger::Ledger::from_snapshot_bytes(&world.ledger.snapshot_bytes())
        .expect("restore");
    assert_eq!(restored.digest(), world.ledger.digest());
    assert_eq!(restored.lookup_transfers(LEAD, &ids), stored);
    assert_eq!(
        world.account(BORROWER).credits_posted,
        (boundary + 4 - 2 - 7) as u128 + 7 * 2
    );
    world.assert_conserved();
}
