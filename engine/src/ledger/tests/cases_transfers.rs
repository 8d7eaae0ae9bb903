//! Cases for transfers and two-phase transfers (driven by `cases`).

use super::cases::*;
use super::*;
use crate::types::{account_flags as af, transfer_flags as tf};

pub(super) const CASES_TRANSFERS: &[Case] = &[
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
pub(super) const CASES_TWO_PHASE: &[Case] = &[
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
