//! Reconciliation: statements matched and mismatched, the report, narrowing to ids.

use super::*;
use crate::ledger::statement_digest;

/// The fixture plus three transfers on FUNDING in one known period; returns (start, end, ids).
fn booked(world: &mut World) -> (u64, u64, Vec<u128>) {
    let start = world.clock_ns + 1;
    let events = vec![
        transfer(5, LEAD_CASH, FUNDING, 100, LEAD),
        transfer(6, FUNDING, BORROWER, 30, LEAD),
        transfer(7, LEAD_CASH, FUNDING, 5, LEAD),
    ];
    world.expect_ok(LEAD, Events::CreateTransfers(events));
    let end = world.clock_ns + 3;
    world.expect_ok(
        LEAD,
        Events::CreateTransfers(vec![transfer(8, LEAD_CASH, FUNDING, 1, LEAD)]),
    );
    (start, end, vec![5, 6, 7])
}

#[test]
fn statement_digest_is_order_independent_and_sensitive() {
    assert_eq!(statement_digest(&[1, 2, 3]), statement_digest(&[3, 1, 2]));
    assert_ne!(statement_digest(&[1, 2, 3]), statement_digest(&[1, 2]));
    assert_ne!(statement_digest(&[1, 2, 3]), statement_digest(&[1, 2, 4]));
    assert_eq!(statement_digest(&[]), [0u8; 32]);
}

#[test]
fn a_true_statement_is_matched() {
    let mut world = World::consortium();
    let (start, end, ids) = booked(&mut world);
    let statement = world.statement(FUNDING, start, end, &ids);
    assert_eq!((statement.debits_total, statement.credits_total), (30, 105));
    world.expect_ok(LEAD, Events::PostStatements(vec![statement]));
    let report = world.ledger.reconciliation_report(LEAD, 0, 0);
    assert_eq!(report.len(), 1);
    assert!(report[0].matched());
    assert_eq!(
        (
            report[0].debits_ledger,
            report[0].credits_ledger,
            report[0].count_ledger
        ),
        (30, 105, 3)
    );
}

#[test]
fn a_wrong_statement_is_mismatched_with_the_differences_and_narrows_to_ids() {
    let mut world = World::consortium();
    let (start, end, _) = booked(&mut world);
    // The bank missed transfer 7 (credit 5) and booked a stray id 99.
    let mut statement = world.statement(FUNDING, start, end, &[5, 6, 99]);
    statement.credits_total = 100;
    world.expect_ok(LEAD, Events::PostStatements(vec![statement]));
    let report = world.ledger.reconciliation_report(LEAD, start, end);
    assert_eq!(report.len(), 1);
    assert!(!report[0].matched());
    assert_eq!(
        (
            report[0].debits_diff,
            report[0].credits_diff,
            report[0].count_diff
        ),
        (0, -5, 0)
    );
    assert_ne!(
        report[0].flags & crate::types::RECONCILIATION_DIGEST_DIFFERS,
        0
    );
    let diff = world
        .ledger
        .reconcile_ids(LEAD, FUNDING, start, end, &[6, 5, 99])
        .expect("own account");
    assert_eq!((diff.missing, diff.extra), (vec![7], vec![99]));
    let refused = world
        .ledger
        .reconcile_ids(PARTNER, FUNDING, start, end, &[]);
    assert_eq!(refused, Err(ResultCode::StatementAccountNotOwned));
    // Reposting a different statement for the same account and period is refused.
    statement.credits_total = 105;
    assert_eq!(
        world.code(LEAD, Events::PostStatements(vec![statement])),
        ResultCode::ExistsWithDifferentFields
    );
}

#[test]
fn the_report_lists_only_the_institution_and_the_period() {
    let mut world = World::consortium();
    let (start, end, ids) = booked(&mut world);
    let lead_statement = world.statement(FUNDING, start, end, &ids);
    world.expect_ok(LEAD, Events::PostStatements(vec![lead_statement]));
    let partner_statement = world.statement(RESERVE, 0, end, &[1]);
    world.expect_ok(PARTNER, Events::PostStatements(vec![partner_statement]));
    assert_eq!(world.ledger.reconciliation_report(LEAD, 0, 0).len(), 1);
    assert_eq!(world.ledger.reconciliation_report(PARTNER, 0, 0).len(), 1);
    assert!(world.ledger.reconciliation_report(PARTNER, 0, 0)[0].matched());
    assert!(world
        .ledger
        .reconciliation_report(LEAD, end + 1, 0)
        .is_empty());
    assert!(world.ledger.reconciliation_report(OTHER, 0, 0).is_empty());
}

#[test]
fn pending_and_void_transfers_are_not_booked_but_posts_are() {
    use crate::types::transfer_flags as tf;
    let mut world = World::consortium();
    let start = world.clock_ns + 1;
    let pending = Transfer {
        flags: tf::PENDING,
        ..transfer(5, LEAD_CASH, FUNDING, 40, LEAD)
    };
    let post = Transfer {
        flags: tf::POST_PENDING,
        pending_id: 5,
        amount: 25,
        ..transfer(6, 0, 0, 0, LEAD)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![pending, post]));
    let end = world.clock_ns + 2;
    let statement = world.statement(FUNDING, start, end, &[6]);
    assert_eq!(statement.credits_total, 25);
    world.expect_ok(LEAD, Events::PostStatements(vec![statement]));
    assert!(world.ledger.reconciliation_report(LEAD, 0, 0)[0].matched());
}
