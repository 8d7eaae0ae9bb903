//! One case per rule: each builds on the consortium fixture and expects one result code.
//! `every_result_code_has_a_case` checks the table covers every code.

use super::*;
use crate::types::{account_flags as af, transfer_flags as tf};
use std::collections::HashSet;

type Case = (&'static str, ResultCode, fn(&mut World) -> ResultCode);

fn t(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    transfer(id, debit, credit, amount, LEAD)
}

fn plain(world: &mut World, event: Transfer) -> ResultCode {
    world.code(LEAD, Events::CreateTransfers(vec![event]))
}

/// A pending transfer BORROWER → LEAD_CASH (BORROWER has no debits yet).
fn pending(world: &mut World, id: u128, amount: u128, timeout_s: u32) {
    let event = Transfer {
        flags: tf::PENDING,
        timeout_s,
        ..t(id, BORROWER, LEAD_CASH, amount)
    };
    assert_eq!(plain(world, event), ResultCode::Ok);
}

fn finish(world: &mut World, id: u128, pending_id: u128, flags: u16, amount: u128) -> ResultCode {
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

fn new_account(world: &mut World, requester: InstitutionId, event: Account) -> ResultCode {
    world.code(requester, Events::CreateAccounts(vec![event]))
}

fn disburse(world: &mut World, requester: InstitutionId, event: Disbursement) -> ResultCode {
    world.code(requester, Events::Disburse(vec![event]))
}

fn new_loan(world: &mut World, requester: InstitutionId, event: Loan) -> ResultCode {
    world.code(requester, Events::CreateLoans(vec![event]))
}

fn statement(world: &mut World, requester: InstitutionId, event: Statement) -> ResultCode {
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

const CASES_TRANSFERS: &[Case] = &[
    ("transfer ok", ResultCode::Ok, |w| {
        plain(w, t(5, LEAD_CASH, BORROWER, 10))
    }),
    ("transfer exists", ResultCode::Exists, |w| {
        plain(w, t(2, LEAD_CASH, FUNDING, FUNDING_FUNDS))
    }),
    (
        "transfer exists differently",
        ResultCode::ExistsWithDifferentFields,
        |w| plain(w, t(2, LEAD_CASH, FUNDING, 1)),
    ),
    ("transfer timestamp", ResultCode::TimestampMustBeZero, |w| {
        plain(
            w,
            Transfer {
                timestamp: 1,
                ..t(5, LEAD_CASH, BORROWER, 1)
            },
        )
    }),
    ("transfer id zero", ResultCode::IdMustNotBeZero, |w| {
        plain(w, t(0, LEAD_CASH, BORROWER, 1))
    }),
    ("transfer id max", ResultCode::IdMustNotBeIntMax, |w| {
        plain(w, t(u128::MAX, LEAD_CASH, BORROWER, 1))
    }),
    (
        "transfer for someone else",
        ResultCode::InstitutionMustMatchRequester,
        |w| {
            w.code(
                LEAD,
                Events::CreateTransfers(vec![transfer(5, LEAD_CASH, BORROWER, 1, PARTNER)]),
            )
        },
    ),
    (
        "debit id zero",
        ResultCode::DebitAccountIdMustNotBeZero,
        |w| plain(w, t(5, 0, BORROWER, 1)),
    ),
    (
        "credit id zero",
        ResultCode::CreditAccountIdMustNotBeZero,
        |w| plain(w, t(5, LEAD_CASH, 0, 1)),
    ),
    ("same accounts", ResultCode::AccountsMustBeDifferent, |w| {
        plain(w, t(5, LEAD_CASH, LEAD_CASH, 1))
    }),
    (
        "pending id on plain",
        ResultCode::PendingIdMustBeZero,
        |w| {
            plain(
                w,
                Transfer {
                    pending_id: 2,
                    ..t(5, LEAD_CASH, BORROWER, 1)
                },
            )
        },
    ),
    (
        "timeout on plain",
        ResultCode::TimeoutReservedForPendingTransfer,
        |w| {
            plain(
                w,
                Transfer {
                    timeout_s: 1,
                    ..t(5, LEAD_CASH, BORROWER, 1)
                },
            )
        },
    ),
    (
        "closing not pending",
        ResultCode::ClosingTransferMustBePending,
        |w| {
            plain(
                w,
                Transfer {
                    flags: tf::CLOSING_DEBIT,
                    ..t(5, LEAD_CASH, BORROWER, 1)
                },
            )
        },
    ),
    ("amount zero", ResultCode::AmountMustNotBeZero, |w| {
        plain(w, t(5, LEAD_CASH, BORROWER, 0))
    }),
    (
        "transfer ledger zero",
        ResultCode::LedgerMustNotBeZero,
        |w| {
            plain(
                w,
                Transfer {
                    ledger: 0,
                    ..t(5, LEAD_CASH, BORROWER, 1)
                },
            )
        },
    ),
    ("transfer code zero", ResultCode::CodeMustNotBeZero, |w| {
        plain(
            w,
            Transfer {
                code: 0,
                ..t(5, LEAD_CASH, BORROWER, 1)
            },
        )
    }),
    ("debit not found", ResultCode::DebitAccountNotFound, |w| {
        plain(w, t(5, 999, BORROWER, 1))
    }),
    ("credit not found", ResultCode::CreditAccountNotFound, |w| {
        plain(w, t(5, LEAD_CASH, 999, 1))
    }),
    (
        "accounts on two ledgers",
        ResultCode::AccountsMustHaveTheSameLedger,
        |w| plain(w, t(5, LEAD_CASH, LEAD_LEDGER2, 1)),
    ),
    (
        "transfer ledger differs",
        ResultCode::TransferMustHaveTheSameLedgerAsAccounts,
        |w| {
            plain(
                w,
                Transfer {
                    ledger: 2,
                    ..t(5, LEAD_CASH, BORROWER, 1)
                },
            )
        },
    ),
    ("debit not owned", ResultCode::DebitAccountNotOwned, |w| {
        plain(w, t(5, OTHER_CASH, BORROWER, 1))
    }),
    ("exceeds credits", ResultCode::ExceedsCredits, |w| {
        w.expect_ok(
            LEAD,
            Events::CreateAccounts(vec![account(
                5,
                LEAD,
                1,
                af::DEBITS_MUST_NOT_EXCEED_CREDITS,
            )]),
        );
        plain(w, t(6, 5, BORROWER, 1))
    }),
    ("exceeds debits", ResultCode::ExceedsDebits, |w| {
        w.expect_ok(
            LEAD,
            Events::CreateAccounts(vec![account(
                5,
                LEAD,
                1,
                af::CREDITS_MUST_NOT_EXCEED_DEBITS,
            )]),
        );
        plain(w, t(6, LEAD_CASH, 5, 1))
    }),
    (
        "overflows debits posted",
        ResultCode::OverflowsDebitsPosted,
        |w| {
            assert_eq!(
                plain(w, t(5, BORROWER, LEAD_CASH, u128::MAX - 10)),
                ResultCode::Ok
            );
            plain(w, t(6, BORROWER, FUNDING, 20))
        },
    ),
    (
        "overflows credits posted",
        ResultCode::OverflowsCreditsPosted,
        |w| {
            assert_eq!(
                plain(w, t(5, BORROWER, LEAD_CASH, u128::MAX - 10)),
                ResultCode::Ok
            );
            plain(w, t(6, FUNDING, LEAD_CASH, u128::MAX))
        },
    ),
    (
        "overflows debits pending",
        ResultCode::OverflowsDebitsPending,
        |w| {
            pending(w, 5, u128::MAX, 0);
            plain(
                w,
                Transfer {
                    flags: tf::PENDING,
                    ..t(6, BORROWER, FUNDING, 1)
                },
            )
        },
    ),
    (
        "overflows credits pending",
        ResultCode::OverflowsCreditsPending,
        |w| {
            pending(w, 5, u128::MAX, 0);
            plain(
                w,
                Transfer {
                    flags: tf::PENDING,
                    ..t(6, FUNDING, LEAD_CASH, 1)
                },
            )
        },
    ),
    ("overflows debits", ResultCode::OverflowsDebits, |w| {
        pending(w, 5, u128::MAX, 0);
        plain(w, t(6, BORROWER, FUNDING, 1))
    }),
    ("overflows credits", ResultCode::OverflowsCredits, |w| {
        pending(w, 5, u128::MAX, 0);
        plain(w, t(6, FUNDING, LEAD_CASH, 1))
    }),
    ("overflows timeout", ResultCode::OverflowsTimeout, |w| {
        w.clock_ns = u64::MAX - 10 * NS_PER_S;
        plain(
            w,
            Transfer {
                flags: tf::PENDING,
                timeout_s: u32::MAX,
                ..t(5, LEAD_CASH, BORROWER, 1)
            },
        )
    }),
    ("debit closed", ResultCode::DebitAccountAlreadyClosed, |w| {
        assert_eq!(
            plain(
                w,
                Transfer {
                    flags: tf::PENDING | tf::CLOSING_DEBIT,
                    ..t(5, LEAD_CASH, BORROWER, 1)
                }
            ),
            ResultCode::Ok
        );
        plain(w, t(6, LEAD_CASH, FUNDING, 1))
    }),
    (
        "credit closed",
        ResultCode::CreditAccountAlreadyClosed,
        |w| {
            assert_eq!(
                plain(
                    w,
                    Transfer {
                        flags: tf::PENDING | tf::CLOSING_CREDIT,
                        ..t(5, LEAD_CASH, BORROWER, 1)
                    }
                ),
                ResultCode::Ok
            );
            plain(w, t(6, FUNDING, BORROWER, 1))
        },
    ),
];

const CASES_TWO_PHASE: &[Case] = &[
    (
        "post and void",
        ResultCode::FlagsAreMutuallyExclusive,
        |w| {
            pending(w, 5, 10, 0);
            finish(w, 6, 5, tf::POST_PENDING | tf::VOID_PENDING, 0)
        },
    ),
    ("pending id zero", ResultCode::PendingIdMustNotBeZero, |w| {
        finish(w, 6, 0, tf::POST_PENDING, 0)
    }),
    (
        "pending id self",
        ResultCode::PendingIdMustBeDifferent,
        |w| finish(w, 6, 6, tf::POST_PENDING, 0),
    ),
    (
        "post with timeout",
        ResultCode::TimeoutReservedForPendingTransfer,
        |w| {
            pending(w, 5, 10, 0);
            plain(
                w,
                Transfer {
                    pending_id: 5,
                    flags: tf::POST_PENDING,
                    timeout_s: 1,
                    ..t(6, 0, 0, 0)
                },
            )
        },
    ),
    (
        "pending not found",
        ResultCode::PendingTransferNotFound,
        |w| finish(w, 6, 77, tf::POST_PENDING, 0),
    ),
    (
        "pending not pending",
        ResultCode::PendingTransferNotPending,
        |w| finish(w, 6, 2, tf::POST_PENDING, 0),
    ),
    (
        "pending other debit",
        ResultCode::PendingTransferHasDifferentDebitAccountId,
        |w| {
            pending(w, 5, 10, 0);
            plain(
                w,
                Transfer {
                    pending_id: 5,
                    flags: tf::POST_PENDING,
                    ..t(6, FUNDING, 0, 0)
                },
            )
        },
    ),
    (
        "pending other credit",
        ResultCode::PendingTransferHasDifferentCreditAccountId,
        |w| {
            pending(w, 5, 10, 0);
            plain(
                w,
                Transfer {
                    pending_id: 5,
                    flags: tf::POST_PENDING,
                    ..t(6, 0, FUNDING, 0)
                },
            )
        },
    ),
    (
        "pending other ledger",
        ResultCode::PendingTransferHasDifferentLedger,
        |w| {
            pending(w, 5, 10, 0);
            plain(
                w,
                Transfer {
                    pending_id: 5,
                    flags: tf::POST_PENDING,
                    ledger: 2,
                    ..t(6, 0, 0, 0)
                },
            )
        },
    ),
    (
        "pending other code",
        ResultCode::PendingTransferHasDifferentCode,
        |w| {
            pending(w, 5, 10, 0);
            plain(
                w,
                Transfer {
                    pending_id: 5,
                    flags: tf::POST_PENDING,
                    code: 2,
                    ..t(6, 0, 0, 0)
                },
            )
        },
    ),
    (
        "void other amount",
        ResultCode::PendingTransferHasDifferentAmount,
        |w| {
            pending(w, 5, 10, 0);
            finish(w, 6, 5, tf::VOID_PENDING, 3)
        },
    ),
    (
        "post too much",
        ResultCode::ExceedsPendingTransferAmount,
        |w| {
            pending(w, 5, 10, 0);
            finish(w, 6, 5, tf::POST_PENDING, 11)
        },
    ),
    (
        "already posted",
        ResultCode::PendingTransferAlreadyPosted,
        |w| {
            pending(w, 5, 10, 0);
            assert_eq!(finish(w, 6, 5, tf::POST_PENDING, 0), ResultCode::Ok);
            finish(w, 7, 5, tf::VOID_PENDING, 0)
        },
    ),
    (
        "already voided",
        ResultCode::PendingTransferAlreadyVoided,
        |w| {
            pending(w, 5, 10, 0);
            assert_eq!(finish(w, 6, 5, tf::VOID_PENDING, 0), ResultCode::Ok);
            finish(w, 7, 5, tf::POST_PENDING, 0)
        },
    ),
    ("expired", ResultCode::PendingTransferExpired, |w| {
        pending(w, 5, 10, 1);
        w.clock_ns += 5 * NS_PER_S;
        finish(w, 6, 5, tf::POST_PENDING, 0)
    }),
    ("post not owned", ResultCode::DebitAccountNotOwned, |w| {
        pending(w, 5, 10, 0);
        let event = Transfer {
            pending_id: 5,
            flags: tf::POST_PENDING,
            ..transfer(6, 0, 0, 0, PARTNER)
        };
        w.code(PARTNER, Events::CreateTransfers(vec![event]))
    }),
];

const CASES_LOANS: &[Case] = &[
    ("loan ok by partner", ResultCode::Ok, |w| {
        new_loan(w, PARTNER, loan(8))
    }),
    ("loan ok by operator", ResultCode::Ok, |w| {
        new_loan(w, OPERATOR, loan(8))
    }),
    ("loan exists", ResultCode::Exists, |w| {
        new_loan(w, PARTNER, loan(LOAN))
    }),
    (
        "loan exists differently",
        ResultCode::ExistsWithDifferentFields,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    principal_max: 1,
                    ..loan(LOAN)
                },
            )
        },
    ),
    ("loan timestamp", ResultCode::TimestampMustBeZero, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                timestamp: 1,
                ..loan(8)
            },
        )
    }),
    ("loan id zero", ResultCode::IdMustNotBeZero, |w| {
        new_loan(w, PARTNER, loan(0))
    }),
    ("loan id max", ResultCode::IdMustNotBeIntMax, |w| {
        new_loan(w, PARTNER, loan(u128::MAX))
    }),
    (
        "loan by lead alone",
        ResultCode::LoanCreateNotAuthorized,
        |w| new_loan(w, LEAD, loan(8)),
    ),
    ("loan share", ResultCode::LoanPartnerShareInvalid, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                partner_share_bps: 10_000,
                ..loan(8)
            },
        )
    }),
    ("loan lead is partner", ResultCode::LoanLeadIsPartner, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                lead: PARTNER,
                ..loan(8)
            },
        )
    }),
    (
        "loan principal",
        ResultCode::LoanPrincipalMaxMustNotBeZero,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    principal_max: 0,
                    ..loan(8)
                },
            )
        },
    ),
    ("loan ledger", ResultCode::LedgerMustNotBeZero, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                ledger: 0,
                ..loan(8)
            },
        )
    }),
    (
        "loan accounts equal",
        ResultCode::LoanAccountsMustBeDifferent,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    borrower_account_id: FUNDING,
                    ..loan(8)
                },
            )
        },
    ),
    ("loan borrower", ResultCode::LoanBorrowerNotFound, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                borrower_account_id: 999,
                ..loan(8)
            },
        )
    }),
    ("loan reserve", ResultCode::LoanReserveNotFound, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                reserve_account_id: 999,
                ..loan(8)
            },
        )
    }),
    ("loan funding", ResultCode::LoanFundingNotFound, |w| {
        new_loan(
            w,
            PARTNER,
            Loan {
                funding_account_id: 999,
                ..loan(8)
            },
        )
    }),
    (
        "loan ledgers",
        ResultCode::LoanAccountsMustHaveTheLoanLedger,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    borrower_account_id: LEAD_LEDGER2,
                    ..loan(8)
                },
            )
        },
    ),
    (
        "loan reserve unregistered",
        ResultCode::LoanReserveNotRegistered,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    reserve_account_id: PARTNER_CASH,
                    ..loan(8)
                },
            )
        },
    ),
    (
        "loan reserve of another",
        ResultCode::LoanReserveNotOwnedByPartner,
        |w| {
            new_loan(
                w,
                OPERATOR,
                Loan {
                    partner: OTHER,
                    ..loan(8)
                },
            )
        },
    ),
    (
        "loan funding of another",
        ResultCode::LoanFundingNotOwnedByLead,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    funding_account_id: OTHER_CASH,
                    ..loan(8)
                },
            )
        },
    ),
    (
        "loan borrower of another",
        ResultCode::LoanBorrowerNotOwnedByLead,
        |w| {
            new_loan(
                w,
                PARTNER,
                Loan {
                    borrower_account_id: OTHER_CASH,
                    ..loan(8)
                },
            )
        },
    ),
    ("disburse ok", ResultCode::Ok, |w| {
        disburse(w, LEAD, disbursement([5, 6], LOAN, 1_000))
    }),
    ("disburse warning", ResultCode::OkReserveBelowWarning, |w| {
        disburse(w, LEAD, disbursement([5, 6], LOAN, 10_000))
    }),
    ("disburse not lead", ResultCode::NotLoanLead, |w| {
        disburse(w, PARTNER, disbursement([5, 6], LOAN, 1_000))
    }),
    ("disburse loan", ResultCode::LoanNotFound, |w| {
        disburse(w, LEAD, disbursement([5, 6], 999, 1_000))
    }),
    (
        "disburse ids",
        ResultCode::TransferIdsMustBeDifferent,
        |w| disburse(w, LEAD, disbursement([5, 5], LOAN, 1_000)),
    ),
    (
        "disburse limit",
        ResultCode::DisbursementExceedsLoanLimit,
        |w| disburse(w, LEAD, disbursement([5, 6], LOAN, 10_001)),
    ),
    ("disburse split", ResultCode::SplitLegRoundsToZero, |w| {
        disburse(w, LEAD, disbursement([5, 6], LOAN, 1))
    }),
    ("disburse floor", ResultCode::ReserveFloorBreached, |w| {
        assert_eq!(
            new_loan(
                w,
                PARTNER,
                Loan {
                    principal_max: 100_000,
                    ..loan(8)
                }
            ),
            ResultCode::Ok
        );
        disburse(w, LEAD, disbursement([5, 6], 8, 25_000))
    }),
    ("repay zero", ResultCode::RepaymentMustNotBeZero, |w| {
        w.code(LEAD, Events::Repay(vec![repayment([5, 6], LOAN, 0, 0)]))
    }),
    (
        "repay too much",
        ResultCode::RepaymentExceedsOutstanding,
        |w| w.code(LEAD, Events::Repay(vec![repayment([5, 6], LOAN, 1, 0)])),
    ),
    (
        "reserve account missing",
        ResultCode::ReserveAccountNotFound,
        |w| {
            w.code(
                PARTNER,
                Events::CreateReserves(vec![reserve(999, PARTNER, 0, 0)]),
            )
        },
    ),
    (
        "reserve not owned",
        ResultCode::ReserveAccountNotOwned,
        |w| {
            w.code(
                OPERATOR,
                Events::CreateReserves(vec![reserve(OTHER_CASH, PARTNER, 0, 0)]),
            )
        },
    ),
    (
        "reserve warning below floor",
        ResultCode::ReserveWarningBelowFloor,
        |w| {
            w.code(
                PARTNER,
                Events::CreateReserves(vec![reserve(PARTNER_CASH, PARTNER, 10, 9)]),
            )
        },
    ),
    (
        "top-up into non-reserve",
        ResultCode::TopUpCreditAccountNotReserve,
        |w| {
            w.code(
                PARTNER,
                Events::TopUp(vec![transfer(5, PARTNER_CASH, OTHER_CASH, 1, PARTNER)]),
            )
        },
    ),
    (
        "top-up into another's reserve",
        ResultCode::TopUpReserveNotOwned,
        |w| {
            w.code(
                LEAD,
                Events::TopUp(vec![transfer(5, LEAD_CASH, RESERVE, 1, LEAD)]),
            )
        },
    ),
];

const CASES_STATEMENTS: &[Case] = &[
    ("statement ok", ResultCode::Ok, |w| {
        let s = w.statement(FUNDING, 0, 1, &[]);
        statement(w, LEAD, s)
    }),
    ("statement exists", ResultCode::Exists, |w| {
        let s = w.statement(FUNDING, 0, 1, &[]);
        assert_eq!(statement(w, LEAD, s), ResultCode::Ok);
        statement(w, LEAD, s)
    }),
    (
        "statement period",
        ResultCode::StatementPeriodInvalid,
        |w| {
            let s = w.statement(FUNDING, 5, 5, &[]);
            statement(w, LEAD, s)
        },
    ),
    (
        "statement open period",
        ResultCode::StatementPeriodNotClosed,
        |w| {
            let s = w.statement(FUNDING, 0, u64::MAX, &[]);
            statement(w, LEAD, s)
        },
    ),
    (
        "statement account",
        ResultCode::StatementAccountNotFound,
        |w| {
            let s = Statement {
                account_id: 999,
                ..w.statement(FUNDING, 0, 1, &[])
            };
            statement(w, LEAD, s)
        },
    ),
    (
        "statement not owned",
        ResultCode::StatementAccountNotOwned,
        |w| {
            let s = Statement {
                institution: PARTNER,
                ..w.statement(FUNDING, 0, 1, &[])
            };
            statement(w, PARTNER, s)
        },
    ),
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
