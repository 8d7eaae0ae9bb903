//! One case per rule: each builds on the consortium fixture and expects one result code.
//! `every_result_code_has_a_case` checks the tables cover every code. Transfer and two-phase
//! cases are in `cases_transfers`, loan and statement cases in `cases_loans`.

use super::cases_loans::{CASES_LOANS, CASES_STATEMENTS};
use super::cases_transfers::{CASES_TRANSFERS, CASES_TWO_PHASE};
use super::*;
use crate::types::{account_flags as af, transfer_flags as tf};
use std::collections::HashSet;

pub(super) type Case = (&'static str, ResultCode, fn(&mut World) -> ResultCode);

pub(super) fn t(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    transfer(id, debit, credit, amount, LEAD)
}

pub(super) fn plain(world: &mut World, event: Transfer) -> ResultCode {
    world.code(LEAD, Events::CreateTransfers(vec![event]))
}

/// A pending transfer BORROWER → LEAD_CASH (BORROWER has no debits yet).
pub(super) fn pending(world: &mut World, id: u128, amount: u128, timeout_s: u32) {
    let event = Transfer {
        flags: tf::PENDING,
        timeout_s,
        ..t(id, BORROWER, LEAD_CASH, amount)
    };
    assert_eq!(plain(world, event), ResultCode::Ok);
}

pub(super) fn finish(
    world: &mut World,
    id: u128,
    pending_id: u128,
    flags: u16,
    amount: u128,
) -> ResultCode {
    let event = Transfer {
        pending_id,
        flags,
        amount,
        ..transfer(id, 0, 0, 0, LEAD)
    };
    let event = Transfer {
        ledger: 0,
        code: 0,
        ..event
    };
    plain(world, event)
}

pub(super) fn new_account(
    world: &mut World,
    requester: InstitutionId,
    event: Account,
) -> ResultCode {
    world.code(requester, Events::CreateAccounts(vec![event]))
}

pub(super) fn disburse(
    world: &mut World,
    requester: InstitutionId,
    event: Disbursement,
) -> ResultCode {
    world.code(requester, Events::Disburse(vec![event]))
}

pub(super) fn new_loan(world: &mut World, requester: InstitutionId, event: Loan) -> ResultCode {
    world.code(requester, Events::CreateLoans(vec![event]))
}

pub(super) fn statement(
    world: &mut World,
    requester: InstitutionId,
    event: Statement,
) -> ResultCode {
    world.code(requester, Events::PostStatements(vec![event]))
}
const CASES_ACCOUNTS: &[Case] = &[
    ("account ok", ResultCode::Ok, |w| {
        new_account(w, LEAD, account(5, LEAD, 1, 0))
    }),
    ("operator creates for a member", ResultCode::Ok, |w| {
        new_account(w, OPERATOR, account(5, PARTNER, 1, 0))
    }),
    ("account exists", ResultCode::Exists, |w| {
        new_account(w, LEAD, account(FUNDING, LEAD, 1, 0))
    }),
    (
        "account exists differently",
        ResultCode::ExistsWithDifferentFields,
        |w| {
            new_account(
                w,
                LEAD,
                Account {
                    code: 9,
                    ..account(FUNDING, LEAD, 1, 0)
                },
            )
        },
    ),
    ("account timestamp", ResultCode::TimestampMustBeZero, |w| {
        new_account(
            w,
            LEAD,
            Account {
                timestamp: 1,
                ..account(5, LEAD, 1, 0)
            },
        )
    }),
    ("account id zero", ResultCode::IdMustNotBeZero, |w| {
        new_account(w, LEAD, account(0, LEAD, 1, 0))
    }),
    ("account id max", ResultCode::IdMustNotBeIntMax, |w| {
        new_account(w, LEAD, account(u128::MAX, LEAD, 1, 0))
    }),
    (
        "account limit flags",
        ResultCode::FlagsAreMutuallyExclusive,
        |w| {
            let flags = af::DEBITS_MUST_NOT_EXCEED_CREDITS | af::CREDITS_MUST_NOT_EXCEED_DEBITS;
            new_account(w, LEAD, account(5, LEAD, 1, flags))
        },
    ),
    (
        "account closed on create",
        ResultCode::ClosedFlagMustNotBeSet,
        |w| new_account(w, LEAD, account(5, LEAD, 1, af::CLOSED)),
    ),
    ("account balances", ResultCode::BalancesMustBeZero, |w| {
        new_account(
            w,
            LEAD,
            Account {
                credits_posted: 1,
                ..account(5, LEAD, 1, 0)
            },
        )
    }),
    ("account ledger", ResultCode::LedgerMustNotBeZero, |w| {
        new_account(w, LEAD, account(5, LEAD, 0, 0))
    }),
    ("account code", ResultCode::CodeMustNotBeZero, |w| {
        new_account(
            w,
            LEAD,
            Account {
                code: 0,
                ..account(5, LEAD, 1, 0)
            },
        )
    }),
    (
        "account institution zero",
        ResultCode::InstitutionMustNotBeZero,
        |w| new_account(w, LEAD, account(5, 0, 1, 0)),
    ),
    (
        "account for another member",
        ResultCode::AccountInstitutionNotRequester,
        |w| new_account(w, LEAD, account(5, PARTNER, 1, 0)),
    ),
    ("linked chain open", ResultCode::LinkedEventChainOpen, |w| {
        new_account(w, LEAD, account(5, LEAD, 1, af::LINKED))
    }),
    ("linked chain failed", ResultCode::LinkedEventFailed, |w| {
        let events = vec![account(5, LEAD, 1, af::LINKED), account(0, LEAD, 1, 0)];
        w.codes(LEAD, Events::CreateAccounts(events))[0]
    }),
];
#[test]
fn every_case_gives_its_code() {
    for table in [
        CASES_ACCOUNTS,
        CASES_TRANSFERS,
        CASES_TWO_PHASE,
        CASES_LOANS,
        CASES_STATEMENTS,
    ] {
        for (name, expected, case) in table {
            let mut world = World::consortium();
            let code = case(&mut world);
            assert_eq!(code, *expected, "case {name:?}");
            world.assert_conserved();
        }
    }
}

#[test]
fn every_result_code_has_a_case() {
    let covered: HashSet<ResultCode> = [
        CASES_ACCOUNTS,
        CASES_TRANSFERS,
        CASES_TWO_PHASE,
        CASES_LOANS,
        CASES_STATEMENTS,
    ]
    .iter()
    .flat_map(|table| table.iter().map(|case| case.1))
    .collect();
    let missing: Vec<ResultCode> = ResultCode::ALL
        .iter()
        .copied()
        .filter(|code| !covered.contains(code))
        .collect();
    assert!(
        missing.is_empty(),
        "result codes without a case: {missing:?}"
    );
}

#[test]
fn result_code_values_are_unique_and_round_trip() {
    let values: HashSet<u32> = ResultCode::ALL.iter().map(|code| *code as u32).collect();
    assert_eq!(values.len(), ResultCode::ALL.len());
    for code in ResultCode::ALL {
        assert_eq!(ResultCode::from_u32(*code as u32), Some(*code));
    }
    assert_eq!(ResultCode::from_u32(9_999), None);
}
