//! Cases for reserves, loans, top-ups and statements (driven by `cases`).

use super::cases::*;
use super::*;

pub(super) const CASES_LOANS: &[Case] = &[
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
    ("disburse loan zero", ResultCode::LoanNotFound, |w| {
        disburse(w, LEAD, disbursement([5, 6], 0, 1_000))
    }),
    ("repay loan zero", ResultCode::LoanNotFound, |w| {
        w.code(LEAD, Events::Repay(vec![repayment([5, 6], 0, 1, 0)]))
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
pub(super) const CASES_STATEMENTS: &[Case] = &[
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
