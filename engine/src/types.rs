//! `types`: ids, bounds and fixed-size records shared by every module.
//!
//! Every bound is named here once and checked where it is used. Every record is exactly
//! `EVENT_BYTES` long; its fields are declared in wire order and `#[repr(C)]`, and the offsets are
//! asserted at compile time, so the in-memory layout equals the little-endian wire layout.
//! Byte offsets are documented in docs/PROTOCOL.md. `codec` owns the encoding and validation.

use core::mem::{offset_of, size_of};

/// A consortium member (a bank or the consortium operator). Stable across the chain's life.
pub type InstitutionId = u32;

/// Identifies one chain; every signature is domain-separated by it so nothing replays across chains.
pub type ChainId = u64;

/// Size in bytes of every event record on the wire and on disk (accounts, transfers, loans, ...).
pub const EVENT_BYTES: usize = 128;

/// Most events one signed request may carry (TigerBeetle's bound for a 1 MiB message).
pub const BATCH_EVENTS_MAX: usize = 8190;

/// Largest request body: `BATCH_EVENTS_MAX` fixed-size events.
pub const REQUEST_BODY_BYTES_MAX: usize = BATCH_EVENTS_MAX * EVENT_BYTES;

/// Most records one query reply may carry (over all events of the query request).
pub const REPLY_RECORDS_MAX: usize = BATCH_EVENTS_MAX;

/// Basis points in one whole: a partner share of 8,000 bps is 80%.
pub const BPS_ONE: u16 = 10_000;

/// Nanoseconds per second: transfer timeouts are in seconds, timestamps in nanoseconds.
pub const NS_PER_S: u64 = 1_000_000_000;

/// Account flags (u16). Any other bit is rejected by `codec`.
pub mod account_flags {
    pub const LINKED: u16 = 1 << 0;
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    /// Set by the ledger when a closing transfer is pending against the account.
    pub const CLOSED: u16 = 1 << 3;
    pub const ALL: u16 =
        LINKED | DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS | CLOSED;
}

/// Transfer flags (u16). Any other bit is rejected by `codec`.
pub mod transfer_flags {
    pub const LINKED: u16 = 1 << 0;
    pub const PENDING: u16 = 1 << 1;
    pub const POST_PENDING: u16 = 1 << 2;
    pub const VOID_PENDING: u16 = 1 << 3;
    pub const BALANCING_DEBIT: u16 = 1 << 4;
    pub const BALANCING_CREDIT: u16 = 1 << 5;
    pub const CLOSING_DEBIT: u16 = 1 << 6;
    pub const CLOSING_CREDIT: u16 = 1 << 7;
    pub const ALL: u16 = 0xFF;
}

/// Query flags (u32) for `get_account_transfers`.
pub mod query_flags {
    pub const DEBITS: u32 = 1 << 0;
    pub const CREDITS: u32 = 1 << 1;
    pub const REVERSED: u32 = 1 << 2;
    pub const ALL: u32 = DEBITS | CREDITS | REVERSED;
}

/// A double-entry account. Balances are maintained by the ledger; a create event has them zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// The owning institution: only it may debit the account.
    pub institution: InstitutionId,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    /// Assigned by the ledger (zero in a create event).
    pub timestamp: u64,
}

/// A transfer between two accounts of one ledger.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    /// The requesting institution that made the transfer.
    pub institution: InstitutionId,
    /// Seconds after `timestamp` when a pending transfer expires (0: never).
    pub timeout_s: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

/// A joint loan: the lead funds `10_000 - partner_share_bps`, the partner the rest from its reserve.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loan {
    pub id: u128,
    pub borrower_account_id: u128,
    pub reserve_account_id: u128,
    pub funding_account_id: u128,
    pub principal_max: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub lead: InstitutionId,
    pub partner: InstitutionId,
    pub ledger: u32,
    pub partner_share_bps: u16,
    pub flags: u16,
    pub timestamp: u64,
}

/// A disbursement of `amount` on a loan: two transfers with the given ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disbursement {
    pub partner_transfer_id: u128,
    pub lead_transfer_id: u128,
    pub loan_id: u128,
    pub amount: u128,
    pub reserved_a: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub reserved_b: [u8; 12],
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

/// A repayment of principal and interest on a loan: two transfers with the given ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repayment {
    pub partner_transfer_id: u128,
    pub lead_transfer_id: u128,
    pub loan_id: u128,
    pub principal: u128,
    pub interest: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub reserved: [u8; 12],
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

/// Registers an account as its owner's reserve with a floor and a warning threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    pub account_id: u128,
    pub floor: u128,
    pub warning: u128,
    pub reserved_a: [u8; 56],
    pub institution: InstitutionId,
    pub reserved_b: [u8; 10],
    pub flags: u16,
    pub timestamp: u64,
}

/// A statement an institution posts for one of its accounts over `[period_start_ns, period_end_ns)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statement {
    pub account_id: u128,
    pub debits_total: u128,
    pub credits_total: u128,
    /// `reconcile::statement_digest` of the ids of the transfers booked in the period.
    pub ids_digest: [u8; 32],
    pub period_start_ns: u64,
    pub period_end_ns: u64,
    pub transfer_count: u64,
    pub institution: InstitutionId,
    pub reserved: [u8; 10],
    pub flags: u16,
    pub timestamp: u64,
}

/// One query event: `id` is an account or transfer id; the rest filters history and reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u128,
    pub timestamp_min: u64,
    /// Inclusive; 0 means no upper bound.
    pub timestamp_max: u64,
    /// 0 means `REPLY_RECORDS_MAX`.
    pub limit: u32,
    pub flags: u32,
    /// For reserve_positions and reconciliation_report; must be 0 or the requester.
    pub institution: InstitutionId,
    pub reserved: [u8; 84],
}

/// A reserve's position (query reply record).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReservePosition {
    pub account_id: u128,
    /// credits_posted - debits_posted - debits_pending (may be negative without balance flags).
    pub balance: i128,
    pub floor: u128,
    pub warning: u128,
    /// The partner share of principal outstanding on the loans that draw on this reserve.
    pub committed: u128,
    /// The partner share of the loan limits not yet disbursed.
    pub undrawn: u128,
    pub institution: InstitutionId,
    pub ledger: u32,
    pub loans_count: u32,
    /// Bit 0: balance below the warning threshold.
    pub flags: u32,
    pub reserved: [u8; 16],
}

impl Default for Reserve {
    fn default() -> Reserve {
        Reserve {
            account_id: 0,
            floor: 0,
            warning: 0,
            reserved_a: [0; 56],
            institution: 0,
            reserved_b: [0; 10],
            flags: 0,
            timestamp: 0,
        }
    }
}

impl Default for Query {
    fn default() -> Query {
        Query {
            id: 0,
            timestamp_min: 0,
            timestamp_max: 0,
            limit: 0,
            flags: 0,
            institution: 0,
            reserved: [0; 84],
        }
    }
}

pub const POSITION_BELOW_WARNING: u32 = 1;

/// The outcome of one statement (query reply record). Differences are statement minus ledger.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub account_id: u128,
    pub period_start_ns: u64,
    pub period_end_ns: u64,
    pub debits_ledger: u128,
    pub credits_ledger: u128,
    pub debits_diff: i128,
    pub credits_diff: i128,
    pub count_ledger: u64,
    pub count_diff: i64,
    pub institution: InstitutionId,
    /// Bit 0: mismatched; bit 1: the id digests differ.
    pub flags: u32,
    pub timestamp: u64,
}

pub const RECONCILIATION_MISMATCHED: u32 = 1 << 0;
pub const RECONCILIATION_DIGEST_DIFFERS: u32 = 1 << 1;
pub const RECONCILIATION_FLAGS_ALL: u32 = 0b11;

impl Reconciliation {
    pub fn matched(&self) -> bool {
        self.flags & RECONCILIATION_MISMATCHED == 0
    }
}

macro_rules! assert_record_layout {
    ($t:ty, $($field:ident = $offset:expr),+ $(,)?) => {
        const _: () = assert!(size_of::<$t>() == EVENT_BYTES);
        $(const _: () = assert!(offset_of!($t, $field) == $offset);)+
    };
}

assert_record_layout!(
    Account,
    id = 0,
    debits_pending = 16,
    debits_posted = 32,
    credits_pending = 48,
    credits_posted = 64,
    user_data_128 = 80,
    user_data_64 = 96,
    user_data_32 = 104,
    institution = 108,
    ledger = 112,
    code = 116,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Transfer,
    id = 0,
    debit_account_id = 16,
    credit_account_id = 32,
    amount = 48,
    pending_id = 64,
    user_data_128 = 80,
    user_data_64 = 96,
    institution = 104,
    timeout_s = 108,
    ledger = 112,
    code = 116,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Loan,
    id = 0,
    borrower_account_id = 16,
    reserve_account_id = 32,
    funding_account_id = 48,
    principal_max = 64,
    user_data_128 = 80,
    user_data_64 = 96,
    lead = 104,
    partner = 108,
    ledger = 112,
    partner_share_bps = 116,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Disbursement,
    partner_transfer_id = 0,
    lead_transfer_id = 16,
    loan_id = 32,
    amount = 48,
    reserved_a = 64,
    user_data_128 = 80,
    user_data_64 = 96,
    reserved_b = 104,
    code = 116,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Repayment,
    partner_transfer_id = 0,
    lead_transfer_id = 16,
    loan_id = 32,
    principal = 48,
    interest = 64,
    user_data_128 = 80,
    user_data_64 = 96,
    reserved = 104,
    code = 116,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Reserve,
    account_id = 0,
    floor = 16,
    warning = 32,
    reserved_a = 48,
    institution = 104,
    reserved_b = 108,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Statement,
    account_id = 0,
    debits_total = 16,
    credits_total = 32,
    ids_digest = 48,
    period_start_ns = 80,
    period_end_ns = 88,
    transfer_count = 96,
    institution = 104,
    reserved = 108,
    flags = 118,
    timestamp = 120
);
assert_record_layout!(
    Query,
    id = 0,
    timestamp_min = 16,
    timestamp_max = 24,
    limit = 32,
    flags = 36,
    institution = 40,
    reserved = 44
);
assert_record_layout!(
    ReservePosition,
    account_id = 0,
    balance = 16,
    floor = 32,
    warning = 48,
    committed = 64,
    undrawn = 80,
    institution = 96,
    ledger = 100,
    loans_count = 104,
    flags = 108,
    reserved = 112
);
assert_record_layout!(
    Reconciliation,
    account_id = 0,
    period_start_ns = 16,
    period_end_ns = 24,
    debits_ledger = 32,
    credits_ledger = 48,
    debits_diff = 64,
    credits_diff = 80,
    count_ledger = 96,
    count_diff = 104,
    institution = 112,
    flags = 116,
    timestamp = 120
);

mod request;
mod result_code;
pub use request::{EventResult, Operation, Reply};
pub use result_code::ResultCode;
