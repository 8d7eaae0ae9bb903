//! Queries: only what the requester owns or is a party to; history paging and filters.

use super::*;
use crate::codec::{decode_body, encode_body, encode_reply};
use crate::types::{query_flags, Operation, Query, Reply, ReservePosition};

fn history(world: &World, requester: InstitutionId, query: Query) -> Vec<u128> {
    world
        .ledger
        .get_account_transfers(requester, &query)
        .iter()
        .map(|transfer| transfer.id)
        .collect()
}

#[test]
fn lookups_return_only_what_the_requester_owns_or_is_party_to() {
    let world = World::consortium();
    let accounts = world.ledger.lookup_accounts(LEAD, &[FUNDING, RESERVE, 999]);
    assert_eq!(
        accounts
            .iter()
            .map(|account| account.id)
            .collect::<Vec<_>>(),
        vec![FUNDING]
    );
    assert_eq!(
        world.ledger.lookup_transfers(LEAD, &[1, 2]).len(),
        1,
        "LEAD is party to 2, not 1"
    );
    assert_eq!(world.ledger.lookup_transfers(PARTNER, &[1, 2]).len(), 1);
    assert!(world.ledger.lookup_transfers(OTHER, &[1, 2]).is_empty());
    assert!(world.ledger.lookup_accounts(OTHER, &[FUNDING]).is_empty());
}

#[test]
fn account_history_pages_by_time_and_filters_sides() {
    let mut world = World::consortium();
    let events: Vec<Transfer> = (5..15)
        .map(|id| transfer(id, LEAD_CASH, BORROWER, 1, LEAD))
        .collect();
    world.expect_ok(LEAD, Events::CreateTransfers(events));
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![transfer(15, BORROWER, LEAD_CASH, 1, LEAD)]),
    );
    let all = Query {
        id: BORROWER,
        ..Query::default()
    };
    assert_eq!(history(&world, LEAD, all), (5..16).collect::<Vec<u128>>());
    let page = Query { limit: 4, ..all };
    assert_eq!(history(&world, LEAD, page), vec![5, 6, 7, 8]);
    let eighth = world.ledger.lookup_transfers(LEAD, &[8])[0].timestamp;
    let next = Query {
        timestamp_min: eighth + 1,
        ..page
    };
    assert_eq!(history(&world, LEAD, next), vec![9, 10, 11, 12]);
    let newest = Query {
        flags: query_flags::REVERSED,
        limit: 2,
        ..all
    };
    assert_eq!(history(&world, LEAD, newest), vec![15, 14]);
    let debits = Query {
        flags: query_flags::DEBITS,
        ..all
    };
    assert_eq!(history(&world, LEAD, debits), vec![15]);
    let window = Query {
        timestamp_min: eighth,
        timestamp_max: eighth + 1,
        ..all
    };
    assert_eq!(history(&world, LEAD, window), vec![8, 9]);
    assert!(
        history(&world, PARTNER, all).is_empty(),
        "not the requester's account"
    );
}

#[test]
fn query_requests_decode_filter_and_encode() {
    let mut world = World::consortium();
    let body = encode_body(&[Query {
        institution: PARTNER,
        ..Query::default()
    }]);
    let reply = world
        .ledger
        .apply_request(PARTNER, 0, Operation::ReservePositions as u8, &body)
        .expect("query");
    let Reply::Positions(positions) = &reply else {
        panic!("positions expected, got {reply:?}")
    };
    assert_eq!(positions.len(), 1);
    let decoded: Vec<ReservePosition> = decode_body(&encode_reply(&reply)).expect("reply decodes");
    assert_eq!(&decoded, positions);
    let reply = world
        .ledger
        .apply_request(LEAD, 0, Operation::ReservePositions as u8, &body)
        .expect("query");
    assert_eq!(
        reply,
        Reply::Positions(vec![]),
        "another member's reserve is not shown"
    );
    let body = encode_body(&[
        Query {
            id: FUNDING,
            ..Query::default()
        },
        Query {
            id: RESERVE,
            ..Query::default()
        },
    ]);
    let reply = world
        .ledger
        .apply_request(LEAD, 0, Operation::LookupAccounts as u8, &body)
        .expect("query");
    assert!(
        matches!(reply, Reply::Accounts(ref accounts) if accounts.len() == 1 && accounts[0].id == FUNDING)
    );
    let reply = world
        .ledger
        .apply_request(LEAD, 0, Operation::ReconciliationReport as u8, &body[..128])
        .expect("query");
    assert_eq!(reply, Reply::Reconciliations(vec![]));
}
