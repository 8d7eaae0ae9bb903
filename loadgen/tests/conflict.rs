//! `ConflictIndex`: which mapped requests may be in flight together (the TCP target's ordering).

use loadgen::engine_map::{ConflictIndex, EngineRequest, MapConfig, Mapper};
use loadgen::op::{AccountKind, Op, TraceEvent};

fn event(institution: u16, op: Op) -> TraceEvent {
    TraceEvent {
        timestamp_ns: 0,
        institution,
        op,
    }
}

fn one(mapper: &mut Mapper, events: &[TraceEvent]) -> EngineRequest {
    let mut requests = mapper.requests(events).expect("maps");
    assert_eq!(requests.len(), 1, "one request");
    requests.remove(0)
}

#[test]
fn creates_order_uses_moves_commute_statements_and_checked_debits_wait() {
    let mut m = Mapper::new(MapConfig::default()).expect("mapper");
    let account = |account, kind| event(0, Op::CreateAccount { account, kind });
    let all = m
        .requests(&[
            account(1, AccountKind::Operating),
            account(2, AccountKind::Operating),
            account(3, AccountKind::Operating),
            account(4, AccountKind::Reserve),
        ])
        .expect("maps");
    let transfer = |debit, credit| {
        event(
            0,
            Op::Transfer {
                debit,
                credit,
                amount: 500,
            },
        )
    };
    let t12 = one(&mut m, &[transfer(1, 2)]);
    let t32 = one(&mut m, &[transfer(3, 2)]);
    let t23 = one(&mut m, &[transfer(2, 3)]);
    let from_reserve = one(&mut m, &[transfer(4, 1)]);
    let into_reserve = one(&mut m, &[transfer(1, 4)]);
    let statement = one(
        &mut m,
        &[event(
            0,
            Op::Statement {
                account: 2,
                period_start_ns: 0,
                period_end_ns: 1,
            },
        )],
    );

    let mut index = ConflictIndex::default();
    for r in &all {
        index.add(r);
    }
    assert!(
        index.conflicts_with(&t12),
        "a transfer waits for its accounts"
    );
    for r in &all {
        index.remove(r);
    }
    assert!(index.is_empty());

    index.add(&t12);
    assert!(!index.conflicts_with(&t32), "credits commute");
    assert!(
        !index.conflicts_with(&t23),
        "unlimited debits commute with credits"
    );
    assert!(
        index.conflicts_with(&statement),
        "a statement waits for moves"
    );
    index.add(&into_reserve);
    assert!(
        index.conflicts_with(&from_reserve),
        "a checked reserve debit waits for a credit of it"
    );
    index.remove(&t12);
    index.remove(&into_reserve);
    assert!(index.is_empty());
    index.add(&statement);
    assert!(index.conflicts_with(&t32), "moves wait for a statement");
}
