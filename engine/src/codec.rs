//! `codec`: the little-endian wire and disk encoding of every fixed 128-byte record.
//!
//! Architecture invariant: decoding validates every byte (reserved bytes zero, no unknown flags,
//! length bounds) and never panics; it returns a `DecodeError`. Encoding is infallible.

use crate::types::{
    account_flags, query_flags, transfer_flags, Account, Disbursement, Loan, Query, Reconciliation,
    Repayment, Reserve, ReservePosition, Statement, Transfer, BATCH_EVENTS_MAX, EVENT_BYTES,
    POSITION_BELOW_WARNING, RECONCILIATION_FLAGS_ALL,
};

/// Why one record did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{record}: unknown flags {flags:#x}")]
    FlagsUnknown { record: &'static str, flags: u32 },
    #[error("{record}: reserved byte at offset {offset} is not zero")]
    ReservedNotZero { record: &'static str, offset: u32 },
}

/// Why a request body (or a reply) did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body of {bytes} bytes is not a whole number of {EVENT_BYTES}-byte events")]
    BodyLength { bytes: usize },
    #[error("body holds {count} events, more than {BATCH_EVENTS_MAX}")]
    BodyEventsMax { count: usize },
    #[error("unknown operation {value}")]
    OperationUnknown { value: u8 },
    #[error("unknown result code {value}")]
    ResultCodeUnknown { value: u32 },
    #[error("event {index}: {source}")]
    Event { index: u32, source: RecordError },
}

/// One fixed-size record: encoded little-endian into exactly `EVENT_BYTES`.
pub trait Record: Sized + Copy {
    const NAME: &'static str;
    fn encode(&self, out: &mut [u8; EVENT_BYTES]);
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Self, RecordError>;

    fn to_bytes(&self) -> [u8; EVENT_BYTES] {
        let mut out = [0u8; EVENT_BYTES];
        self.encode(&mut out);
        out
    }
}

/// Little-endian field reader over one record. Offsets are compile-time constants inside
/// `EVENT_BYTES`, so the slicing below cannot go out of bounds.
struct In<'a>(&'a [u8; EVENT_BYTES]);

impl In<'_> {
    fn u128(&self, at: usize) -> u128 {
        u128::from_le_bytes(self.array(at))
    }
    fn i128(&self, at: usize) -> i128 {
        i128::from_le_bytes(self.array(at))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.array(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.array(at))
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.array(at))
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.array(at))
    }
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[at..at + N]);
        out
    }
    /// Checks `[at, at + len)` is zero.
    fn reserved(&self, record: &'static str, at: usize, len: usize) -> Result<(), RecordError> {
        match self.0[at..at + len].iter().position(|byte| *byte != 0) {
            None => Ok(()),
            Some(offset) => Err(RecordError::ReservedNotZero {
                record,
                offset: (at + offset) as u32,
            }),
        }
    }
}

fn flags_check(record: &'static str, flags: u32, allowed: u32) -> Result<(), RecordError> {
    if flags & !allowed == 0 {
        Ok(())
    } else {
        Err(RecordError::FlagsUnknown { record, flags })
    }
}

fn put(out: &mut [u8; EVENT_BYTES], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Record for Account {
    const NAME: &'static str = "account";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 16, &self.debits_pending.to_le_bytes());
        put(out, 32, &self.debits_posted.to_le_bytes());
        put(out, 48, &self.credits_pending.to_le_bytes());
        put(out, 64, &self.credits_posted.to_le_bytes());
        put(out, 80, &self.user_data_128.to_le_bytes());
        put(out, 96, &self.user_data_64.to_le_bytes());
        put(out, 104, &self.user_data_32.to_le_bytes());
        put(out, 108, &self.institution.to_le_bytes());
        put(out, 112, &self.ledger.to_le_bytes());
        put(out, 116, &self.code.to_le_bytes());
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Account, RecordError> {
        let b = In(bytes);
        let flags = b.u16(118);
        flags_check(Self::NAME, u32::from(flags), u32::from(account_flags::ALL))?;
        Ok(Account {
            id: b.u128(0),
            debits_pending: b.u128(16),
            debits_posted: b.u128(32),
            credits_pending: b.u128(48),
            credits_posted: b.u128(64),
            user_data_128: b.u128(80),
            user_data_64: b.u64(96),
            user_data_32: b.u32(104),
            institution: b.u32(108),
            ledger: b.u32(112),
            code: b.u16(116),
            flags,
            timestamp: b.u64(120),
        })
    }
}

impl Record for Transfer {
    const NAME: &'static str = "transfer";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 16, &self.debit_account_id.to_le_bytes());
        put(out, 32, &self.credit_account_id.to_le_bytes());
        put(out, 48, &self.amount.to_le_bytes());
        put(out, 64, &self.pending_id.to_le_bytes());
        put(out, 80, &self.user_data_128.to_le_bytes());
        put(out, 96, &self.user_data_64.to_le_bytes());
        put(out, 104, &self.institution.to_le_bytes());
        put(out, 108, &self.timeout_s.to_le_bytes());
        put(out, 112, &self.ledger.to_le_bytes());
        put(out, 116, &self.code.to_le_bytes());
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Transfer, RecordError> {
        let flags = In(bytes).u16(118);
        flags_check(Self::NAME, u32::from(flags), u32::from(transfer_flags::ALL))?;
        Ok(transfer_in_place(bytes))
    }
}

/// Reads a transfer from its wire bytes in place (one copy) on little-endian targets, where the
/// `#[repr(C)]` layout is the wire layout.
#[cfg(target_endian = "little")]
fn transfer_in_place(bytes: &[u8; EVENT_BYTES]) -> Transfer {
    // SAFETY: `Transfer` is `#[repr(C)]`, exactly `EVENT_BYTES` long with every field offset
    // asserted in `types` (no padding), and made only of integers, so every byte pattern is a
    // valid value; `read_unaligned` needs no alignment of `bytes`.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Transfer) }
}

#[cfg(not(target_endian = "little"))]
fn transfer_in_place(bytes: &[u8; EVENT_BYTES]) -> Transfer {
    transfer_fields(bytes)
}

/// Reads a transfer field by field (the portable definition of the layout).
#[cfg(any(test, not(target_endian = "little")))]
pub(crate) fn transfer_fields(bytes: &[u8; EVENT_BYTES]) -> Transfer {
    let b = In(bytes);
    {
        Transfer {
            id: b.u128(0),
            debit_account_id: b.u128(16),
            credit_account_id: b.u128(32),
            amount: b.u128(48),
            pending_id: b.u128(64),
            user_data_128: b.u128(80),
            user_data_64: b.u64(96),
            institution: b.u32(104),
            timeout_s: b.u32(108),
            ledger: b.u32(112),
            code: b.u16(116),
            flags: b.u16(118),
            timestamp: b.u64(120),
        }
    }
}

impl Record for Loan {
    const NAME: &'static str = "loan";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 16, &self.borrower_account_id.to_le_bytes());
        put(out, 32, &self.reserve_account_id.to_le_bytes());
        put(out, 48, &self.funding_account_id.to_le_bytes());
        put(out, 64, &self.principal_max.to_le_bytes());
        put(out, 80, &self.user_data_128.to_le_bytes());
        put(out, 96, &self.user_data_64.to_le_bytes());
        put(out, 104, &self.lead.to_le_bytes());
        put(out, 108, &self.partner.to_le_bytes());
        put(out, 112, &self.ledger.to_le_bytes());
        put(out, 116, &self.partner_share_bps.to_le_bytes());
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Loan, RecordError> {
        let b = In(bytes);
        let flags = b.u16(118);
        flags_check(Self::NAME, u32::from(flags), 0)?;
        Ok(Loan {
            id: b.u128(0),
            borrower_account_id: b.u128(16),
            reserve_account_id: b.u128(32),
            funding_account_id: b.u128(48),
            principal_max: b.u128(64),
            user_data_128: b.u128(80),
            user_data_64: b.u64(96),
            lead: b.u32(104),
            partner: b.u32(108),
            ledger: b.u32(112),
            partner_share_bps: b.u16(116),
            flags,
            timestamp: b.u64(120),
        })
    }
}

impl Record for Disbursement {
    const NAME: &'static str = "disbursement";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.partner_transfer_id.to_le_bytes());
        put(out, 16, &self.lead_transfer_id.to_le_bytes());
        put(out, 32, &self.loan_id.to_le_bytes());
        put(out, 48, &self.amount.to_le_bytes());
        put(out, 64, &self.reserved_a.to_le_bytes());
        put(out, 80, &self.user_data_128.to_le_bytes());
        put(out, 96, &self.user_data_64.to_le_bytes());
        put(out, 104, &self.reserved_b);
        put(out, 116, &self.code.to_le_bytes());
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Disbursement, RecordError> {
        let b = In(bytes);
        b.reserved(Self::NAME, 64, 16)?;
        b.reserved(Self::NAME, 104, 12)?;
        let flags = b.u16(118);
        flags_check(Self::NAME, u32::from(flags), 0)?;
        Ok(Disbursement {
            partner_transfer_id: b.u128(0),
            lead_transfer_id: b.u128(16),
            loan_id: b.u128(32),
            amount: b.u128(48),
            reserved_a: 0,
            user_data_128: b.u128(80),
            user_data_64: b.u64(96),
            reserved_b: [0; 12],
            code: b.u16(116),
            flags,
            timestamp: b.u64(120),
        })
    }
}

impl Record for Repayment {
    const NAME: &'static str = "repayment";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.partner_transfer_id.to_le_bytes());
        put(out, 16, &self.lead_transfer_id.to_le_bytes());
        put(out, 32, &self.loan_id.to_le_bytes());
        put(out, 48, &self.principal.to_le_bytes());
        put(out, 64, &self.interest.to_le_bytes());
        put(out, 80, &self.user_data_128.to_le_bytes());
        put(out, 96, &self.user_data_64.to_le_bytes());
        put(out, 104, &self.reserved);
        put(out, 116, &self.code.to_le_bytes());
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Repayment, RecordError> {
        let b = In(bytes);
        b.reserved(Self::NAME, 104, 12)?;
        let flags = b.u16(118);
        flags_check(Self::NAME, u32::from(flags), 0)?;
        Ok(Repayment {
            partner_transfer_id: b.u128(0),
            lead_transfer_id: b.u128(16),
            loan_id: b.u128(32),
            principal: b.u128(48),
            interest: b.u128(64),
            user_data_128: b.u128(80),
            user_data_64: b.u64(96),
            reserved: [0; 12],
            code: b.u16(116),
            flags,
            timestamp: b.u64(120),
        })
    }
}

impl Record for Reserve {
    const NAME: &'static str = "reserve";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.account_id.to_le_bytes());
        put(out, 16, &self.floor.to_le_bytes());
        put(out, 32, &self.warning.to_le_bytes());
        put(out, 48, &self.reserved_a);
        put(out, 104, &self.institution.to_le_bytes());
        put(out, 108, &self.reserved_b);
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Reserve, RecordError> {
        let b = In(bytes);
        b.reserved(Self::NAME, 48, 56)?;
        b.reserved(Self::NAME, 108, 10)?;
        let flags = b.u16(118);
        flags_check(Self::NAME, u32::from(flags), 0)?;
        Ok(Reserve {
            account_id: b.u128(0),
            floor: b.u128(16),
            warning: b.u128(32),
            institution: b.u32(104),
            flags,
            timestamp: b.u64(120),
            ..Reserve::default()
        })
    }
}

impl Record for Statement {
    const NAME: &'static str = "statement";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.account_id.to_le_bytes());
        put(out, 16, &self.debits_total.to_le_bytes());
        put(out, 32, &self.credits_total.to_le_bytes());
        put(out, 48, &self.ids_digest);
        put(out, 80, &self.period_start_ns.to_le_bytes());
        put(out, 88, &self.period_end_ns.to_le_bytes());
        put(out, 96, &self.transfer_count.to_le_bytes());
        put(out, 104, &self.institution.to_le_bytes());
        put(out, 108, &self.reserved);
        put(out, 118, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Statement, RecordError> {
        let b = In(bytes);
        b.reserved(Self::NAME, 108, 10)?;
        let flags = b.u16(118);
        flags_check(Self::NAME, u32::from(flags), 0)?;
        Ok(Statement {
            account_id: b.u128(0),
            debits_total: b.u128(16),
            credits_total: b.u128(32),
            ids_digest: b.array(48),
            period_start_ns: b.u64(80),
            period_end_ns: b.u64(88),
            transfer_count: b.u64(96),
            institution: b.u32(104),
            reserved: [0; 10],
            flags,
            timestamp: b.u64(120),
        })
    }
}

impl Record for Query {
    const NAME: &'static str = "query";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 16, &self.timestamp_min.to_le_bytes());
        put(out, 24, &self.timestamp_max.to_le_bytes());
        put(out, 32, &self.limit.to_le_bytes());
        put(out, 36, &self.flags.to_le_bytes());
        put(out, 40, &self.institution.to_le_bytes());
        put(out, 44, &self.reserved);
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Query, RecordError> {
        let b = In(bytes);
        b.reserved(Self::NAME, 44, 84)?;
        let flags = b.u32(36);
        flags_check(Self::NAME, flags, query_flags::ALL)?;
        Ok(Query {
            id: b.u128(0),
            timestamp_min: b.u64(16),
            timestamp_max: b.u64(24),
            limit: b.u32(32),
            flags,
            institution: b.u32(40),
            ..Query::default()
        })
    }
}

impl Record for ReservePosition {
    const NAME: &'static str = "reserve_position";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.account_id.to_le_bytes());
        put(out, 16, &self.balance.to_le_bytes());
        put(out, 32, &self.floor.to_le_bytes());
        put(out, 48, &self.warning.to_le_bytes());
        put(out, 64, &self.committed.to_le_bytes());
        put(out, 80, &self.undrawn.to_le_bytes());
        put(out, 96, &self.institution.to_le_bytes());
        put(out, 100, &self.ledger.to_le_bytes());
        put(out, 104, &self.loans_count.to_le_bytes());
        put(out, 108, &self.flags.to_le_bytes());
        put(out, 112, &self.reserved);
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<ReservePosition, RecordError> {
        let b = In(bytes);
        b.reserved(Self::NAME, 112, 16)?;
        let flags = b.u32(108);
        flags_check(Self::NAME, flags, POSITION_BELOW_WARNING)?;
        Ok(ReservePosition {
            account_id: b.u128(0),
            balance: b.i128(16),
            floor: b.u128(32),
            warning: b.u128(48),
            committed: b.u128(64),
            undrawn: b.u128(80),
            institution: b.u32(96),
            ledger: b.u32(100),
            loans_count: b.u32(104),
            flags,
            reserved: [0; 16],
        })
    }
}

impl Record for Reconciliation {
    const NAME: &'static str = "reconciliation";
    fn encode(&self, out: &mut [u8; EVENT_BYTES]) {
        put(out, 0, &self.account_id.to_le_bytes());
        put(out, 16, &self.period_start_ns.to_le_bytes());
        put(out, 24, &self.period_end_ns.to_le_bytes());
        put(out, 32, &self.debits_ledger.to_le_bytes());
        put(out, 48, &self.credits_ledger.to_le_bytes());
        put(out, 64, &self.debits_diff.to_le_bytes());
        put(out, 80, &self.credits_diff.to_le_bytes());
        put(out, 96, &self.count_ledger.to_le_bytes());
        put(out, 104, &self.count_diff.to_le_bytes());
        put(out, 112, &self.institution.to_le_bytes());
        put(out, 116, &self.flags.to_le_bytes());
        put(out, 120, &self.timestamp.to_le_bytes());
    }
    fn decode(bytes: &[u8; EVENT_BYTES]) -> Result<Reconciliation, RecordError> {
        let b = In(bytes);
        let flags = b.u32(116);
        flags_check(Self::NAME, flags, RECONCILIATION_FLAGS_ALL)?;
        Ok(Reconciliation {
            account_id: b.u128(0),
            period_start_ns: b.u64(16),
            period_end_ns: b.u64(24),
            debits_ledger: b.u128(32),
            credits_ledger: b.u128(48),
            debits_diff: b.i128(64),
            credits_diff: b.i128(80),
            count_ledger: b.u64(96),
            count_diff: b.i64(104),
            institution: b.u32(112),
            flags,
            timestamp: b.u64(120),
        })
    }
}

mod body;
pub use body::{body_events_count, decode_body, decode_results, encode_body, encode_reply};
