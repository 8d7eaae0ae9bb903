//! `ResultCode`: the result of every event, with stable u32 values (docs/PROTOCOL.md).

macro_rules! result_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)+) => {
        /// The result of one event. Values are stable (docs/PROTOCOL.md). `Ok` and
        /// `OkReserveBelowWarning` are successes; every other code is a rejection with one cause.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ResultCode { $($(#[$doc])* $name = $value,)+ }

        impl ResultCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ResultCode] = &[$(ResultCode::$name,)+];
        }
    };
}

result_codes! {
    Ok = 0,
    OkReserveBelowWarning = 1,
    // Common to every event kind.
    LinkedEventFailed = 2,
    LinkedEventChainOpen = 3,
    TimestampMustBeZero = 4,
    IdMustNotBeZero = 5,
    IdMustNotBeIntMax = 6,
    Exists = 7,
    ExistsWithDifferentFields = 8,
    FlagsAreMutuallyExclusive = 9,
    LedgerMustNotBeZero = 10,
    CodeMustNotBeZero = 11,
    InstitutionMustMatchRequester = 12,
    // Accounts.
    BalancesMustBeZero = 20,
    InstitutionMustNotBeZero = 21,
    ClosedFlagMustNotBeSet = 22,
    // Transfers.
    DebitAccountIdMustNotBeZero = 30,
    CreditAccountIdMustNotBeZero = 31,
    AccountsMustBeDifferent = 32,
    PendingIdMustBeZero = 33,
    PendingIdMustNotBeZero = 34,
    PendingIdMustBeDifferent = 35,
    TimeoutReservedForPendingTransfer = 36,
    ClosingTransferMustBePending = 37,
    AmountMustNotBeZero = 38,
    DebitAccountNotFound = 39,
    CreditAccountNotFound = 40,
    AccountsMustHaveTheSameLedger = 41,
    TransferMustHaveTheSameLedgerAsAccounts = 42,
    PendingTransferNotFound = 43,
    PendingTransferNotPending = 44,
    PendingTransferHasDifferentDebitAccountId = 45,
    PendingTransferHasDifferentCreditAccountId = 46,
    PendingTransferHasDifferentLedger = 47,
    PendingTransferHasDifferentCode = 48,
    PendingTransferHasDifferentAmount = 49,
    ExceedsPendingTransferAmount = 50,
    PendingTransferAlreadyPosted = 51,
    PendingTransferAlreadyVoided = 52,
    PendingTransferExpired = 53,
    ExceedsCredits = 54,
    ExceedsDebits = 55,
    OverflowsDebitsPending = 56,
    OverflowsCreditsPending = 57,
    OverflowsDebitsPosted = 58,
    OverflowsCreditsPosted = 59,
    OverflowsDebits = 60,
    OverflowsCredits = 61,
    OverflowsTimeout = 62,
    DebitAccountAlreadyClosed = 63,
    CreditAccountAlreadyClosed = 64,
    // Authorization: the requester may not do this.
    AccountInstitutionNotRequester = 70,
    DebitAccountNotOwned = 71,
    ReserveAccountNotOwned = 72,
    LoanCreateNotAuthorized = 73,
    NotLoanLead = 74,
    TopUpReserveNotOwned = 75,
    StatementAccountNotOwned = 76,
    // Reserves and joint loans.
    ReserveAccountNotFound = 80,
    ReserveWarningBelowFloor = 81,
    TopUpCreditAccountNotReserve = 82,
    LoanNotFound = 83,
    LoanPartnerShareInvalid = 84,
    LoanLeadIsPartner = 85,
    LoanPrincipalMaxMustNotBeZero = 86,
    LoanBorrowerNotFound = 87,
    LoanReserveNotFound = 88,
    LoanFundingNotFound = 89,
    LoanAccountsMustHaveTheLoanLedger = 90,
    LoanReserveNotRegistered = 91,
    LoanReserveNotOwnedByPartner = 92,
    LoanFundingNotOwnedByLead = 93,
    LoanBorrowerNotOwnedByLead = 94,
    LoanAccountsMustBeDifferent = 95,
    TransferIdsMustBeDifferent = 96,
    DisbursementExceedsLoanLimit = 97,
    ReserveFloorBreached = 98,
    SplitLegRoundsToZero = 99,
    RepaymentMustNotBeZero = 100,
    RepaymentExceedsOutstanding = 101,
    // Statements.
    StatementPeriodInvalid = 110,
    StatementPeriodNotClosed = 111,
    StatementAccountNotFound = 112,
}

impl ResultCode {
    /// Successes are applied; everything else changed nothing.
    pub fn is_ok(self) -> bool {
        matches!(self, ResultCode::Ok | ResultCode::OkReserveBelowWarning)
    }

    pub fn from_u32(value: u32) -> Option<ResultCode> {
        ResultCode::ALL
            .iter()
            .copied()
            .find(|code| *code as u32 == value)
    }
}
