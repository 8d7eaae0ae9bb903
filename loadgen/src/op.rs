//! loadgen's own workload event model: what a trace records and what a `Target` receives.
//!
//! Architecture invariant: this module is pure data. The integrator maps `TraceEvent` to the
//! engine's 128-byte ledger records (codec) and signs each request; loadgen never depends on them.

use std::fmt;

/// Amounts are integer cents. `u64` cents holds 1.8e17 cents, far past any single loan.
pub type Cents = u64;
/// Institution index within the consortium (0 = the lead bank).
pub type InstitutionId = u16;

/// Partner funding shares are in basis points: 10_000 bps = 100%.
pub const SHARE_BPS_FULL: u16 = 10_000;

/// What an account is used for; the ledger decides its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccountKind {
    /// A reserve-fund account an institution funds loans from.
    Reserve = 1,
    /// A borrower's loan account.
    Borrower = 2,
    /// A plain operating account (transfers workload).
    Operating = 3,
}

impl AccountKind {
    pub const ALL: [AccountKind; 3] = [Self::Reserve, Self::Borrower, Self::Operating];

    pub fn name(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Borrower => "borrower",
            Self::Operating => "operating",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

/// One ledger operation, with exactly the fields the trace format carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Open an account owned by the event's institution.
    CreateAccount { account: u64, kind: AccountKind },
    /// Open a joint loan: the lead institution (the event's) and one partner fund it from their
    /// reserves, the partner paying `partner_share_bps` of every disbursement.
    CreateLoan {
        loan: u64,
        borrower: u64,
        lead_reserve: u64,
        partner_reserve: u64,
        limit: Cents,
        partner_share_bps: u16,
    },
    /// Move money into a reserve-fund account.
    TopUp { reserve_account: u64, amount: Cents },
    /// Pay out loan principal, split between the reserves by funding share.
    Disburse { loan: u64, amount: Cents },
    /// Repay principal plus interest, split back by funding share.
    Repay {
        loan: u64,
        principal: Cents,
        interest: Cents,
    },
    /// Reconciliation statement of one account over `[period_start_ns, period_end_ns)`.
    Statement {
        account: u64,
        period_start_ns: u64,
        period_end_ns: u64,
    },
    /// Plain double-entry transfer.
    Transfer {
        debit: u64,
        credit: u64,
        amount: Cents,
    },
}

/// The operation's code on disk and its name in CSV. Codes are stable: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum OpKind {
    CreateAccount = 1,
    CreateLoan = 2,
    TopUp = 3,
    Disburse = 4,
    Repay = 5,
    Statement = 6,
    Transfer = 7,
}

impl OpKind {
    pub const ALL: [OpKind; 7] = [
        Self::CreateAccount,
        Self::CreateLoan,
        Self::TopUp,
        Self::Disburse,
        Self::Repay,
        Self::Statement,
        Self::Transfer,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Self::CreateAccount => "create_account",
            Self::CreateLoan => "create_loan",
            Self::TopUp => "top_up",
            Self::Disburse => "disburse",
            Self::Repay => "repay",
            Self::Statement => "statement",
            Self::Transfer => "transfer",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == code)
    }

    /// Dense index in `0..COUNT`, for per-kind counters.
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::CreateAccount { .. } => OpKind::CreateAccount,
            Op::CreateLoan { .. } => OpKind::CreateLoan,
            Op::TopUp { .. } => OpKind::TopUp,
            Op::Disburse { .. } => OpKind::Disburse,
            Op::Repay { .. } => OpKind::Repay,
            Op::Statement { .. } => OpKind::Statement,
            Op::Transfer { .. } => OpKind::Transfer,
        }
    }
}

/// One event of a workload or trace: when, who, what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceEvent {
    /// Nanoseconds since the start of the trace (simulated time for synthetic workloads).
    pub timestamp_ns: u64,
    /// The institution that signs the request.
    pub institution: InstitutionId,
    pub op: Op,
}
