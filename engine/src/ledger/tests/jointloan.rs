//! Joint loans: split disbursement and repayment, rounding, floors, warnings, positions.

use super::*;
use crate::ledger::jointloan::partner_part;
use crate::types::POSITION_BELOW_WARNING;

#[test]
fn partner_part_is_the_floor_of_the_share() {
    assert_eq!(partner_part(1_001, 8_000), 800);
    assert_eq!(partner_part(9_999, 1), 0);
    assert_eq!(partner_part(10_000, 1), 1);
    assert_eq!(
        partner_part(u128::MAX, 9_999),
        u128::MAX / 10_000 * 9_999 + (u128::MAX % 10_000) * 9_999 / 10_000
    );
    assert_eq!(partner_part(u128::MAX, 10_000), u128::MAX);
}

#[test]
fn disbursement_splits_by_share_and_lead_takes_the_remainder() {
    let mut world = World::consortium();
    world.expect_ok(
        LEAD,
        Events::Disburse(vec![disbursement([5, 6], LOAN, 1_001)]),
    );
    assert_eq!(world.net(RESERVE), (RESERVE_FUNDS - 800) as i128);
    assert_eq!(world.net(FUNDING), (FUNDING_FUNDS - 201) as i128);
    assert_eq!(world.net(BORROWER), 1_001);
    let (_, disbursed, outstanding, _) = world.ledger.loan(LOAN).expect("loan");
    assert_eq!((disbursed, outstanding), (1_001, 1_001));
    let legs = world.ledger.lookup_transfers(LEAD, &[5, 6]);
    assert_eq!(
        legs.iter().map(|leg| leg.amount).collect::<Vec<_>>(),
        vec![800, 201]
    );
    assert!(legs
        .iter()
        .all(|leg| leg.user_data_128 == LOAN && leg.institution == LEAD));
    world.assert_conserved();
}

#[test]
fn disbursement_is_idempotent_and_atomic() {
    let mut world = World::consortium();
    let event = disbursement([5, 6], LOAN, 1_000);
    world.expect_ok(LEAD, Events::Disburse(vec![event]));
    let digest = world.ledger.digest();
    assert_eq!(
        world.code(LEAD, Events::Disburse(vec![event])),
        ResultCode::Exists
    );
    let other = Disbursement {
        amount: 2_000,
        ..event
    };
    assert_eq!(
        world.code(LEAD, Events::Disburse(vec![other])),
        ResultCode::ExistsWithDifferentFields
    );
    assert_eq!(world.ledger.digest(), digest);
    // The lead leg fails (funding would be debited by a closed account): nothing is applied.
    let mut world = World::consortium();
    let closing = Transfer {
        flags: crate::types::transfer_flags::PENDING | crate::types::transfer_flags::CLOSING_DEBIT,
        ..transfer(9, FUNDING, LEAD_CASH, 1, LEAD)
    };
    world.expect_ok(LEAD, Events::CreateTransfers(vec![closing]));
    let digest = world.ledger.digest();
    assert_eq!(
        world.code(LEAD, Events::Disburse(vec![event])),
        ResultCode::DebitAccountAlreadyClosed
    );
    assert_eq!(world.ledger.digest(), digest);
    assert_eq!(world.net(RESERVE), RESERVE_FUNDS as i128);
    assert!(world.ledger.lookup_transfers(LEAD, &[5]).is_empty());
    assert_eq!(world.ledger.loan(LOAN).expect("loan").1, 0);
}

#[test]
fn repayment_splits_back_and_the_final_one_settles_the_partner_exactly() {
    let mut world = World::consortium();
    world.expect_ok(
        LEAD,
        Events::Disburse(vec![disbursement([5, 6], LOAN, 1_001)]),
    ); // partner 800
    world.expect_ok(
        LEAD,
        Events::Disburse(vec![disbursement([7, 8], LOAN, 1_001)]),
    ); // partner 800
       // 2,002 × 0.8 = 1,601.6 but the partner lent 1,600.
    world.expect_ok(
        LEAD,
        Events::Repay(vec![repayment([9, 10], LOAN, 1_001, 100)]),
    );
    // partner: floor(1001 × 0.8) + floor(100 × 0.8) = 800 + 80.
    assert_eq!(world.net(RESERVE), (RESERVE_FUNDS - 1_600 + 880) as i128);
    world.expect_ok(
        LEAD,
        Events::Repay(vec![repayment([11, 12], LOAN, 1_001, 0)]),
    );
    assert_eq!(
        world.net(RESERVE),
        (RESERVE_FUNDS + 80) as i128,
        "the partner got back exactly what it lent"
    );
    assert_eq!(world.net(FUNDING), (FUNDING_FUNDS + 20) as i128);
    assert_eq!(world.net(BORROWER), -100);
    let (_, disbursed, outstanding, interest) = world.ledger.loan(LOAN).expect("loan");
    assert_eq!((disbursed, outstanding, interest), (2_002, 0, 100));
    // Re-submitting a repayment is `Exists` even though the loan has moved on.
    assert_eq!(
        world.code(
            LEAD,
            Events::Repay(vec![repayment([9, 10], LOAN, 1_001, 100)])
        ),
        ResultCode::Exists
    );
    world.assert_conserved();
}

#[test]
fn reserve_floor_and_warning_show_in_results_and_position() {
    let mut world = World::consortium();
    let position = world.ledger.reserve_position(PARTNER);
    assert_eq!(position.len(), 1);
    assert_eq!(position[0].balance, RESERVE_FUNDS as i128);
    assert_eq!(
        (position[0].floor, position[0].warning),
        (RESERVE_FLOOR, RESERVE_WARNING)
    );
    assert_eq!(position[0].undrawn, 8_000);
    assert_eq!(position[0].flags & POSITION_BELOW_WARNING, 0);
    let code = world.code(
        LEAD,
        Events::Disburse(vec![disbursement([5, 6], LOAN, 10_000)]),
    );
    assert_eq!(code, ResultCode::OkReserveBelowWarning);
    let position = world.ledger.reserve_position(PARTNER)[0];
    assert_eq!(position.balance, (RESERVE_FUNDS - 8_000) as i128);
    assert_eq!(
        (position.committed, position.undrawn, position.loans_count),
        (8_000, 0, 1)
    );
    assert_eq!(
        position.flags & POSITION_BELOW_WARNING,
        POSITION_BELOW_WARNING
    );
    // The owner may spend its reserve, but never below the floor.
    let spend = |amount| transfer(20, RESERVE, PARTNER_CASH, amount, PARTNER);
    let floor_gap = RESERVE_FUNDS - 8_000 - RESERVE_FLOOR;
    assert_eq!(
        world.code(PARTNER, Events::CreateTransfers(vec![spend(floor_gap + 1)])),
        ResultCode::ReserveFloorBreached
    );
    assert_eq!(
        world.code(PARTNER, Events::CreateTransfers(vec![spend(floor_gap)])),
        ResultCode::OkReserveBelowWarning
    );
    // A top-up by the owner restores it.
    let top_up = transfer(21, PARTNER_CASH, RESERVE, 50_000, PARTNER);
    world.expect_ok(PARTNER, Events::TopUp(vec![top_up]));
    let position = world.ledger.reserve_position(PARTNER)[0];
    assert_eq!(position.balance, (RESERVE_FLOOR + 50_000) as i128);
    assert_eq!(position.flags & POSITION_BELOW_WARNING, 0);
    world.assert_conserved();
}

#[test]
fn the_lead_cannot_spend_the_partner_reserve_outside_a_loan() {
    let mut world = World::consortium();
    let raid = transfer(5, RESERVE, BORROWER, 1, LEAD);
    assert_eq!(
        world.code(LEAD, Events::CreateTransfers(vec![raid])),
        ResultCode::DebitAccountNotOwned
    );
    let top_up = transfer(5, RESERVE, BORROWER, 1, LEAD);
    assert_eq!(
        world.code(LEAD, Events::TopUp(vec![top_up])),
        ResultCode::DebitAccountNotOwned
    );
    assert_eq!(
        world.code(
            OPERATOR,
            Events::Disburse(vec![disbursement([5, 6], LOAN, 1_000)])
        ),
        ResultCode::NotLoanLead
    );
    assert_eq!(world.net(RESERVE), RESERVE_FUNDS as i128);
}

#[test]
fn reserve_registration_is_idempotent() {
    let mut world = World::consortium();
    let event = reserve(RESERVE, PARTNER, RESERVE_FLOOR, RESERVE_WARNING);
    assert_eq!(
        world.code(PARTNER, Events::CreateReserves(vec![event])),
        ResultCode::Exists
    );
    let changed = Reserve { floor: 0, ..event };
    assert_eq!(
        world.code(PARTNER, Events::CreateReserves(vec![changed])),
        ResultCode::ExistsWithDifferentFields
    );
    let for_other = reserve(OTHER_CASH, OTHER, 0, 0);
    assert_eq!(
        world.code(PARTNER, Events::CreateReserves(vec![for_other])),
        ResultCode::InstitutionMustMatchRequester
    );
    assert_eq!(
        world.code(OPERATOR, Events::CreateReserves(vec![for_other])),
        ResultCode::Ok
    );
}
