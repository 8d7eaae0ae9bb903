//! `ledger`: the deterministic double-entry state machine.
//!
//! Architecture invariant: the ledger never does I/O, never reads a clock and never draws random
//! numbers. Time comes in with each batch (`timestamp_ns`, strictly increasing); event `i` of a
//! batch is stamped `timestamp_ns + i`. The same batches in the same order give the same state and
//! the same `digest()` on every replica.
//!
//! Layout: `accounts` (create, linked chains, undo), `transfers` (plain, two-phase, balancing,
//! closing), `jointloan` (reserves, loans, disburse, repay, positions), `reconcile` (statements),
//! `query` (lookups and history), `snapshot` (versioned binary state), `map` (the id index).

mod accounts;
mod batch;
mod jointloan;
mod map;
mod memory;
mod positions;
mod query;
mod reconcile;
mod snapshot;
mod table;
mod transfers;
mod two_phase;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::types::{Account, InstitutionId, Loan, Reconciliation, Reserve, Statement, Transfer};

pub use batch::{Batch, BatchError, Events, RequestError};
pub use jointloan::partner_part;
pub use map::{GrowthPhase, MapGrowth, U128Map};
pub use reconcile::{statement_digest, IdsDiff};
pub use snapshot::{SnapshotError, SnapshotSource};
use table::{CowTable, Table};

/// Marks "no index" in u32 index fields (history links, reserve index).
pub(crate) const INDEX_NONE: u32 = u32::MAX;

/// Most accounts and most transfers one ledger holds: indexes are u32 and `INDEX_NONE` is taken.
pub const ACCOUNTS_MAX: usize = (u32::MAX - 1) as usize;
pub const TRANSFERS_MAX: usize = (u32::MAX - 1) as usize;

/// Genesis parameters and capacity hints (the ledger grows past the hints; they avoid rehashing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// The consortium operator: may create accounts, reserves and loans for members.
    pub operator: InstitutionId,
    pub accounts_capacity: usize,
    pub transfers_capacity: usize,
    pub loans_capacity: usize,
}

impl LedgerConfig {
    pub fn new(operator: InstitutionId) -> LedgerConfig {
        LedgerConfig {
            operator,
            accounts_capacity: 1024,
            transfers_capacity: 16 * 1024,
            loans_capacity: 256,
        }
    }
}

/// A transfer's meta row before anything links it.
const TRANSFER_META_NONE: TransferMeta = TransferMeta {
    prev_debit: INDEX_NONE,
    prev_credit: INDEX_NONE,
    state: PendingState::None,
};
/// An account's meta row before it has history or a reserve.
const ACCOUNT_META_NONE: AccountMeta = AccountMeta {
    history_head: INDEX_NONE,
    reserve: INDEX_NONE,
};

/// The state of a transfer as seen by two-phase logic.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PendingState {
    /// Not a pending transfer (plain, post or void).
    None = 0,
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

impl PendingState {
    pub(crate) fn from_u8(value: u8) -> Option<PendingState> {
        [
            PendingState::None,
            PendingState::Pending,
            PendingState::Posted,
            PendingState::Voided,
            PendingState::Expired,
        ]
        .into_iter()
        .find(|state| *state as u8 == value)
    }
}

/// Per-account data beside the record: the newest transfer of its history and its reserve.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccountMeta {
    pub history_head: u32,
    pub reserve: u32,
}

/// Per-transfer data beside the record: history links (newest-first lists, no allocation per
/// transfer) and the two-phase state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TransferMeta {
    pub prev_debit: u32,
    pub prev_credit: u32,
    pub state: PendingState,
}

/// A registered reserve and what the loans drawing on it have committed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReserveState {
    pub record: Reserve,
    pub account: u32,
    /// Partner share of principal outstanding over the loans drawing on this reserve.
    pub committed: u128,
    pub loans_count: u32,
}

/// A loan and its running balances.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoanState {
    pub record: Loan,
    pub principal_disbursed: u128,
    pub principal_outstanding: u128,
    /// The part of `principal_outstanding` that came from the partner's reserve.
    pub partner_outstanding: u128,
    pub interest_repaid: u128,
}

/// One entry of the undo log, kept only inside a linked chain or a multi-leg loan event.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Undo {
    AccountInserted,
    TransferInserted,
    AccountRestore { index: u32, account: Account },
    PendingRestore { index: u32, state: PendingState },
}

/// Sums over all accounts, modulo 2^128 (each account balance may reach u128::MAX, so the exact
/// sum may not fit). Conservation requires debits == credits for posted and for pending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub debits_pending: u128,
    pub credits_pending: u128,
    pub accounts_count: u64,
    pub transfers_count: u64,
}

/// The ledger: all state in memory, sized by `LedgerConfig`.
pub struct Ledger {
    pub(crate) config: LedgerConfig,
    pub(crate) accounts: Table<Account>,
    pub(crate) account_meta: Table<AccountMeta>,
    pub(crate) account_index: U128Map,
    pub(crate) transfers: CowTable<Transfer>,
    pub(crate) transfer_meta: CowTable<TransferMeta>,
    pub(crate) transfer_index: U128Map,
    /// Pending transfers with a timeout: (expires_at_ns, transfer id), soonest first. Stale entries
    /// (posted, voided, rolled back) are skipped when they surface.
    pub(crate) expiries: BinaryHeap<Reverse<(u64, u128)>>,
    pub(crate) reserves: Vec<ReserveState>,
    pub(crate) loans: Vec<LoanState>,
    pub(crate) loan_index: U128Map,
    pub(crate) reconciliations: Vec<Reconciliation>,
    /// The statements behind `reconciliations` (same index).
    pub(crate) statements: Vec<Statement>,
    /// (account id, period start, period end) → index into `reconciliations`.
    pub(crate) statement_index: HashMap<(u128, u64, u64), u32>,
    /// The timestamp of the last event applied (0 before the first batch).
    pub(crate) timestamp_last: u64,
    pub(crate) digest: u128,
    pub(crate) undo: Vec<Undo>,
    pub(crate) undo_active: bool,
    /// Inside a create_transfers or top_up request: new transfers are mixed into the digest
    /// together at the end of the request (`digest_mix_transfers`), not one by one.
    pub(crate) digest_deferred: bool,
}

/// Tags mixed into the digest chain, one per kind of state change.
pub(crate) mod digest_tag {
    pub const ACCOUNT: u64 = 1;
    pub const TRANSFER: u64 = 2;
    pub const EXPIRY: u64 = 3;
    pub const RESERVE: u64 = 4;
    pub const LOAN: u64 = 5;
    pub const STATEMENT: u64 = 6;
    /// All transfers a create_transfers or top_up request created, in order.
    pub const TRANSFERS: u64 = 7;
}

/// Records held and capacity of the ledger's record tables (`Ledger::table_fill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFill {
    pub accounts: usize,
    pub accounts_capacity: usize,
    pub transfers: usize,
    pub transfers_capacity: usize,
}

impl TableFill {
    /// The share of a table's capacity at which the node warns that it will soon outgrow it.
    pub const WARN_PER_MILLE: usize = 900;

    /// Tables (by name) whose fill crossed `WARN_PER_MILLE` of their capacity going from
    /// `before` to `self` (the same capacity; a table resized in between does not count).
    pub fn crossed_warning(&self, before: &TableFill) -> Vec<&'static str> {
        let crossed = |old: usize, new: usize, capacity: usize, old_capacity: usize| {
            let mark = capacity / 1000 * Self::WARN_PER_MILLE;
            capacity == old_capacity && old < mark && new >= mark
        };
        let mut tables = Vec::new();
        if crossed(
            before.accounts,
            self.accounts,
            self.accounts_capacity,
            before.accounts_capacity,
        ) {
            tables.push("accounts");
        }
        if crossed(
            before.transfers,
            self.transfers,
            self.transfers_capacity,
            before.transfers_capacity,
        ) {
            tables.push("transfers");
        }
        tables
    }
}

impl Ledger {
    /// A ledger with all its capacity allocated and faulted in now (static allocation at
    /// startup, so the hot path takes no page faults until a capacity is exceeded).
    pub fn new(config: LedgerConfig) -> Ledger {
        Ledger {
            config,
            accounts: Table::reserved(config.accounts_capacity, Account::default()),
            account_meta: Table::reserved(config.accounts_capacity, ACCOUNT_META_NONE),
            account_index: U128Map::with_capacity(config.accounts_capacity),
            transfers: Table::reserved(config.transfers_capacity, Transfer::default()),
            transfer_meta: Table::reserved(config.transfers_capacity, TRANSFER_META_NONE),
            transfer_index: U128Map::with_capacity(config.transfers_capacity),
            expiries: BinaryHeap::new(),
            reserves: Vec::new(),
            loans: Vec::with_capacity(config.loans_capacity),
            loan_index: U128Map::with_capacity(config.loans_capacity),
            reconciliations: Vec::new(),
            statements: Vec::new(),
            statement_index: HashMap::new(),
            timestamp_last: 0,
            digest: 0,
            undo: Vec::with_capacity(64),
            undo_active: false,
            digest_deferred: false,
        }
    }

    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// Sizes the account and transfer tables for at least this many records now, so that the hot
    /// path does no growth work (segments, index migration) below them. Record tables are
    /// reserved lazily (pages fault in as they fill, or by `prefault`); the id indexes are
    /// allocated and faulted in now, since their inserts land anywhere. Never shrinks.
    pub fn reserve(&mut self, accounts: usize, transfers: usize) {
        self.accounts.reserve_lazy(accounts);
        self.account_meta.reserve_lazy(accounts);
        self.account_index.reserve(accounts);
        self.transfers.reserve_lazy(transfers);
        self.transfer_meta.reserve_lazy(transfers);
        self.transfer_index.reserve(transfers);
        self.config.accounts_capacity = self.config.accounts_capacity.max(accounts);
        self.config.transfers_capacity = self.config.transfers_capacity.max(transfers);
    }

    /// Records held in the account and transfer tables, and the capacity they were sized and
    /// faulted in for (`LedgerConfig`, raised by `reserve`). Past that capacity a table still
    /// grows without stopping (a segment at a time, never a copy: `table`), but its pages fault
    /// in on the hot path and the id index migrates to a larger table as it goes (`map`), so
    /// execution is slower until the next restart sizes it (docs/OPERATIONS.md).
    pub fn table_fill(&self) -> TableFill {
        TableFill {
            accounts: self.accounts.len(),
            accounts_capacity: self.config.accounts_capacity,
            transfers: self.transfers.len(),
            transfers_capacity: self.config.transfers_capacity,
        }
    }

    /// Faults in the reserved, still unused capacity of the record tables (see `reserve`), so
    /// the execute thread never pays a first-touch page fault while it appends, on every core
    /// (startup only: `memory::populate_parallel`). Returns the bytes populated (0 where the
    /// kernel cannot populate ahead: the tables then fault in as they fill).
    pub fn prefault(&self) -> usize {
        let ranges: Vec<(usize, usize)> = self
            .accounts
            .spare_ranges()
            .chain(self.account_meta.spare_ranges())
            .chain(self.transfers.spare_ranges())
            .chain(self.transfer_meta.spare_ranges())
            .collect();
        memory::populate_parallel(&ranges)
    }

    /// The running digest: `d' = xxh3_128_with_seed(d ‖ record, tag)` over every state change in
    /// order (docs/modules/ledger.md). Equal digests mean equal histories of applied changes.
    pub fn digest(&self) -> u128 {
        self.digest
    }

    /// The timestamp of the last event applied.
    pub fn timestamp_last(&self) -> u64 {
        self.timestamp_last
    }

    pub(crate) fn digest_mix(&mut self, tag: u64, record: &[u8; crate::types::EVENT_BYTES]) {
        let mut buffer = [0u8; 16 + crate::types::EVENT_BYTES];
        buffer[..16].copy_from_slice(&self.digest.to_le_bytes());
        buffer[16..].copy_from_slice(record);
        self.digest = xxhash_rust::xxh3::xxh3_128_with_seed(&buffer, tag);
    }

    /// Mixes the transfers from index `first` on (those the current request created) into the
    /// digest as one chunk: `d' = xxh3_128_with_seed(d ‖ records, TRANSFERS)`.
    pub(crate) fn digest_mix_transfers(&mut self, first: usize) {
        assert!(!self.digest_deferred);
        assert!(first <= self.transfers.len());
        if first == self.transfers.len() {
            return;
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(digest_tag::TRANSFERS);
        hasher.update(&self.digest.to_le_bytes());
        for slice in self.transfers.slices_from(first) {
            transfers_bytes(slice, |bytes| hasher.update(bytes));
        }
        self.digest = hasher.digest128();
    }

    /// Sums of balances over all accounts, modulo 2^128 (O(accounts)).
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for account in self.accounts.iter() {
            totals.debits_posted = totals.debits_posted.wrapping_add(account.debits_posted);
            totals.credits_posted = totals.credits_posted.wrapping_add(account.credits_posted);
            totals.debits_pending = totals.debits_pending.wrapping_add(account.debits_pending);
            totals.credits_pending = totals.credits_pending.wrapping_add(account.credits_pending);
        }
        totals.accounts_count = self.accounts.len() as u64;
        totals.transfers_count = self.transfers.len() as u64;
        totals
    }

    #[inline]
    pub(crate) fn account_get(&self, id: u128) -> Option<u32> {
        if id == 0 {
            return None;
        }
        self.account_index.get(id)
    }

    #[inline]
    pub(crate) fn transfer_get(&self, id: u128) -> Option<u32> {
        if id == 0 {
            return None;
        }
        self.transfer_index.get(id)
    }

    /// Starts recording undo entries (a linked chain or a multi-leg loan event).
    pub(crate) fn undo_begin(&mut self) {
        assert!(!self.undo_active);
        assert!(self.undo.is_empty());
        self.undo_active = true;
    }

    pub(crate) fn undo_commit(&mut self) {
        assert!(self.undo_active);
        self.undo.clear();
        self.undo_active = false;
    }

    /// Reverts every change since `undo_begin`, newest first.
    pub(crate) fn undo_rollback(&mut self, digest_before: u128) {
        assert!(self.undo_active);
        while let Some(entry) = self.undo.pop() {
            match entry {
                Undo::AccountInserted => {
                    let account = self.accounts.pop().expect("undo: account log out of step");
                    self.account_meta.pop();
                    let removed = self.account_index.remove(account.id);
                    assert_eq!(removed, Some(self.accounts.len() as u32));
                }
                Undo::TransferInserted => self.transfer_pop(),
                Undo::AccountRestore { index, account } => self.accounts[index as usize] = account,
                Undo::PendingRestore { index, state } => {
                    self.transfer_meta[index as usize].state = state
                }
            }
        }
        self.digest = digest_before;
        self.undo_active = false;
    }

    fn transfer_pop(&mut self) {
        let transfer = self
            .transfers
            .pop()
            .expect("undo: transfer log out of step");
        let meta = self
            .transfer_meta
            .pop()
            .expect("undo: transfer meta out of step");
        let index = self.transfers.len() as u32;
        assert_eq!(self.transfer_index.remove(transfer.id), Some(index));
        let debit = self
            .account_index
            .get(transfer.debit_account_id)
            .expect("undo: debit account");
        let credit = self
            .account_index
            .get(transfer.credit_account_id)
            .expect("undo: credit account");
        assert_eq!(self.account_meta[debit as usize].history_head, index);
        self.account_meta[debit as usize].history_head = meta.prev_debit;
        assert_eq!(self.account_meta[credit as usize].history_head, index);
        self.account_meta[credit as usize].history_head = meta.prev_credit;
    }

    pub(crate) fn undo_push(&mut self, entry: Undo) {
        if self.undo_active {
            self.undo.push(entry);
        }
    }

    /// Saves an account for undo before it changes.
    pub(crate) fn undo_account(&mut self, index: u32) {
        if self.undo_active {
            self.undo.push(Undo::AccountRestore {
                index,
                account: self.accounts[index as usize],
            });
        }
    }
}

/// Passes the wire encoding of `transfers` to `sink`. On little-endian targets that is the memory
/// image itself (one slice, no copy).
#[cfg(target_endian = "little")]
fn transfers_bytes(transfers: &[Transfer], mut sink: impl FnMut(&[u8])) {
    // SAFETY: `Transfer` is `#[repr(C)]`, exactly `EVENT_BYTES` long, and `types` asserts every
    // field offset, so it has no padding: every byte is initialized, and on a little-endian target
    // the memory image equals `codec`'s encoding (asserted in the tests).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            transfers.as_ptr() as *const u8,
            std::mem::size_of_val(transfers),
        )
    };
    sink(bytes);
}

#[cfg(not(target_endian = "little"))]
fn transfers_bytes(transfers: &[Transfer], mut sink: impl FnMut(&[u8])) {
    for transfer in transfers {
        sink(&crate::codec::Record::to_bytes(transfer));
    }
}
