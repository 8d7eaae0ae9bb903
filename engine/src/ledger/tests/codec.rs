//! Codec and snapshots: round trips, strict validation, corruption is an error.

use super::*;
use crate::codec::{
    decode_body, decode_results, encode_body, encode_reply, DecodeError, Record, RecordError,
};
use crate::ledger::SnapshotError;
use crate::types::{
    account_flags, EventResult, Query, Reconciliation, Reply, ReservePosition, BATCH_EVENTS_MAX,
    EVENT_BYTES,
};
use proptest::prelude::*;

fn round_trip<R: Record + PartialEq + std::fmt::Debug>(record: R) {
    let bytes = record.to_bytes();
    assert_eq!(R::decode(&bytes), Ok(record));
    assert_eq!(
        decode_body::<R>(&encode_body(&[record, record])),
        Ok(vec![record, record])
    );
}

#[test]
fn every_record_round_trips() {
    round_trip(Account {
        debits_posted: 3,
        user_data_32: 9,
        timestamp: 77,
        ..account(u128::MAX - 1, 7, 3, account_flags::ALL)
    });
    round_trip(Transfer {
        pending_id: 4,
        timeout_s: 5,
        user_data_64: 6,
        flags: 0xFF,
        timestamp: 8,
        ..transfer(1, 2, 3, u128::MAX, 9)
    });
    round_trip(Loan {
        user_data_128: 12,
        timestamp: 3,
        ..loan(42)
    });
    round_trip(Disbursement {
        user_data_64: 5,
        code: 3,
        ..disbursement([1, 2], 3, 4)
    });
    round_trip(Repayment {
        user_data_128: 5,
        code: 3,
        ..repayment([1, 2], 3, 4, 5)
    });
    round_trip(reserve(1, 2, 3, 4));
    round_trip(Statement {
        ids_digest: [7; 32],
        period_start_ns: 1,
        period_end_ns: 2,
        transfer_count: 3,
        ..Statement::default()
    });
    round_trip(Query {
        id: 5,
        timestamp_min: 1,
        timestamp_max: 2,
        limit: 3,
        flags: 7,
        institution: 4,
        ..Query::default()
    });
    round_trip(ReservePosition {
        balance: -5,
        floor: 1,
        warning: 2,
        committed: 3,
        undrawn: 4,
        flags: 1,
        ..ReservePosition::default()
    });
    round_trip(Reconciliation {
        debits_diff: -1,
        credits_diff: 2,
        count_diff: -3,
        flags: 3,
        ..Reconciliation::default()
    });
}

#[test]
fn the_layout_is_little_endian_at_the_documented_offsets() {
    let bytes = transfer(0x0102, 3, 4, 5, 0x0A0B_0C0D).to_bytes();
    assert_eq!(&bytes[0..2], &[0x02, 0x01]);
    assert_eq!(bytes[16], 3);
    assert_eq!(bytes[48], 5);
    assert_eq!(&bytes[104..108], &[0x0D, 0x0C, 0x0B, 0x0A]);
    assert_eq!(bytes[112], 1, "ledger at 112");
    assert_eq!(bytes[116], 1, "code at 116");
}

#[test]
fn unknown_flags_and_reserved_bytes_are_rejected() {
    let mut bytes = account(1, 1, 1, 0).to_bytes();
    bytes[118] = 0x10;
    assert_eq!(
        Account::decode(&bytes),
        Err(RecordError::FlagsUnknown {
            record: "account",
            flags: 0x10
        })
    );
    let mut bytes = loan(1).to_bytes();
    bytes[118] = 1;
    assert_eq!(
        Loan::decode(&bytes),
        Err(RecordError::FlagsUnknown {
            record: "loan",
            flags: 1
        })
    );
    let mut bytes = disbursement([1, 2], 3, 4).to_bytes();
    bytes[70] = 1;
    assert_eq!(
        Disbursement::decode(&bytes),
        Err(RecordError::ReservedNotZero {
            record: "disbursement",
            offset: 70
        })
    );
    let mut bytes = reserve(1, 2, 3, 4).to_bytes();
    bytes[100] = 1;
    assert_eq!(
        Reserve::decode(&bytes),
        Err(RecordError::ReservedNotZero {
            record: "reserve",
            offset: 100
        })
    );
    let mut bytes = Statement::default().to_bytes();
    bytes[110] = 1;
    assert_eq!(
        Statement::decode(&bytes),
        Err(RecordError::ReservedNotZero {
            record: "statement",
            offset: 110
        })
    );
    let mut bytes = Query::default().to_bytes();
    bytes[127] = 1;
    assert_eq!(
        Query::decode(&bytes),
        Err(RecordError::ReservedNotZero {
            record: "query",
            offset: 127
        })
    );
    let mut bytes = repayment([1, 2], 3, 4, 5).to_bytes();
    bytes[104] = 1;
    assert_eq!(
        Repayment::decode(&bytes),
        Err(RecordError::ReservedNotZero {
            record: "repayment",
            offset: 104
        })
    );
}

#[test]
fn body_bounds_are_enforced() {
    assert_eq!(
        decode_body::<Transfer>(&[0u8; 129]),
        Err(DecodeError::BodyLength { bytes: 129 })
    );
    let too_many = vec![0u8; (BATCH_EVENTS_MAX + 1) * EVENT_BYTES];
    assert_eq!(
        decode_body::<Transfer>(&too_many),
        Err(DecodeError::BodyEventsMax {
            count: BATCH_EVENTS_MAX + 1
        })
    );
    assert_eq!(decode_body::<Transfer>(&[]), Ok(vec![]));
}

#[test]
fn results_round_trip() {
    let results = vec![EventResult {
        index: 3,
        code: ResultCode::ExceedsCredits,
    }];
    let bytes = encode_reply(&Reply::Results(results.clone()));
    assert_eq!(bytes.len(), 8);
    assert_eq!(decode_results(&bytes), Ok(results));
    assert_eq!(
        decode_results(&[0, 0, 0, 0, 0xFF, 0, 0, 0]),
        Err(DecodeError::ResultCodeUnknown { value: 255 })
    );
}

#[test]
fn snapshot_round_trips_and_continues_identically() {
    let mut world = World::consortium();
    world.expect_ok(
        LEAD,
        Events::Disburse(vec![disbursement([5, 6], LOAN, 1_000)]),
    );
    let pending = Transfer {
        flags: crate::types::transfer_flags::PENDING,
        timeout_s: 2,
        ..transfer(7, LEAD_CASH, BORROWER, 3, LEAD)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending]));
    let statement = world.statement(FUNDING, 0, 1, &[]);
    world.expect_ok(LEAD, Events::PostStatements(vec![statement]));
    let bytes = world.ledger.snapshot_bytes();
    let mut restored = World {
        ledger: Ledger::from_snapshot_bytes(&bytes).expect("loads"),
        clock_ns: world.clock_ns,
    };
    assert_eq!(restored.ledger.digest(), world.ledger.digest());
    assert_eq!(
        restored.ledger.reserve_position(PARTNER),
        world.ledger.reserve_position(PARTNER)
    );
    assert_eq!(
        restored.ledger.reconciliation_report(LEAD, 0, 0),
        world.ledger.reconciliation_report(LEAD, 0, 0)
    );
    // Both expire the pending transfer and apply the next batch the same way.
    for w in [&mut world, &mut restored] {
        w.clock_ns += 5 * NS_PER_S;
        w.expect_ok(
            LEAD,
            Events::CreateTransfers(vec![transfer(8, LEAD_CASH, BORROWER, 1, LEAD)]),
        );
        assert_eq!(w.account(BORROWER).credits_pending, 0);
    }
    assert_eq!(restored.ledger.digest(), world.ledger.digest());
}

#[test]
fn corrupt_snapshots_are_errors() {
    let world = World::consortium();
    let bytes = world.ledger.snapshot_bytes();
    assert_eq!(
        Ledger::from_snapshot_bytes(&bytes[..10]).err(),
        Some(SnapshotError::Truncated)
    );
    let mut flipped = bytes.clone();
    flipped[200] ^= 1;
    assert_eq!(
        Ledger::from_snapshot_bytes(&flipped).err(),
        Some(SnapshotError::Checksum)
    );
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(
        Ledger::from_snapshot_bytes(&magic).err(),
        Some(SnapshotError::Magic)
    );
    let mut version = bytes.clone();
    version[8] = 9;
    assert_eq!(
        Ledger::from_snapshot_bytes(&version).err(),
        Some(SnapshotError::Version { version: 9 })
    );
    assert_eq!(
        Ledger::from_snapshot_bytes(&bytes[..bytes.len() - 1]).err(),
        Some(SnapshotError::Checksum)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = decode_body::<Account>(&bytes);
        let _ = decode_body::<Transfer>(&bytes);
        let _ = decode_body::<Statement>(&bytes);
        let _ = decode_body::<Query>(&bytes);
        let _ = decode_results(&bytes);
        prop_assert!(Ledger::from_snapshot_bytes(&bytes).is_err());
    }

    #[test]
    fn damaged_snapshots_never_panic(position in any::<usize>(), value in any::<u8>(), cut in any::<usize>()) {
        let world = World::consortium();
        let mut bytes = world.ledger.snapshot_bytes();
        let at = position % bytes.len();
        let changed = bytes[at] != value;
        bytes[at] = value;
        let result = Ledger::from_snapshot_bytes(&bytes);
        prop_assert_eq!(result.is_err(), changed);
        bytes.truncate(cut % bytes.len());
        prop_assert!(Ledger::from_snapshot_bytes(&bytes).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reading_a_transfer_in_place_equals_reading_it_field_by_field(bytes in prop::array::uniform32(any::<u8>()), tail in prop::array::uniform32(any::<u8>())) {
        let mut record = [0u8; EVENT_BYTES];
        for (index, byte) in record.iter_mut().enumerate() {
            *byte = if index < 32 { bytes[index] } else { tail[index % 32] ^ (index as u8) };
        }
        record[118] = bytes[3]; // Known flags only (bits 0-7).
        record[119] = 0;
        let decoded = Transfer::decode(&record).expect("known flags decode");
        prop_assert_eq!(decoded, crate::codec::transfer_fields(&record));
        prop_assert_eq!(decoded.to_bytes(), record);
    }
}

/// A snapshot source taken now encodes to the snapshot of now, however the ledger changes after:
/// more transfers, and the post of a pending transfer whose record sits in a segment the source
/// shares (the write copies that segment; the source keeps the pending state).
#[test]
fn a_snapshot_source_is_the_state_when_taken_across_shared_segments() {
    use crate::types::transfer_flags as tf;
    let mut world = World::consortium();
    let pending = Transfer {
        flags: tf::PENDING,
        ..transfer(1_000_001, LEAD_CASH, BORROWER, 50, LEAD)
    };
    let at = world.ledger.transfers.len();
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending]));
    // Past one full segment of the transfer tables (65,536 records), so the source shares one.
    let mut id = 2_000_000u128;
    while world.ledger.transfers.len() < super::super::table::SEGMENT_LEN + 100 {
        let chunk = (0..8_000)
            .map(|_| {
                id += 1;
                transfer(id, LEAD_CASH, BORROWER, 1, LEAD)
            })
            .collect();
        world.expect_ok(LEAD, Events::CreateTransfers(chunk));
    }
    let body_then = world.ledger.snapshot_body();
    let source = world.ledger.snapshot_source();
    assert_eq!(source.encode(), body_then);
    let post = Transfer {
        flags: tf::POST_PENDING,
        pending_id: 1_000_001,
        ..transfer(1_000_002, 0, 0, 0, LEAD)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![post]));
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![transfer(1_000_003, LEAD_CASH, BORROWER, 1, LEAD)]),
    );
    assert_ne!(
        world.ledger.snapshot_body(),
        body_then,
        "the ledger moved on"
    );
    let encoded = source.encode();
    assert!(
        encoded == body_then,
        "the source still encodes the old state"
    );
    let restored = Ledger::from_snapshot_bytes(&Ledger::seal_snapshot(encoded)).expect("loads");
    assert_eq!(
        restored.transfer_meta[at].state,
        crate::ledger::PendingState::Pending
    );
    assert_ne!(
        world.ledger.transfer_meta[at].state,
        crate::ledger::PendingState::Pending
    );
}
