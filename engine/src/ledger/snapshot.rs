//! Snapshots: the whole state as one versioned, checksummed byte string.
//!
//! Layout (little-endian): magic `RECKONLS`, version u32, operator u32, timestamp_last u64,
//! digest u128, five counts u64 (accounts, transfers, reserves, loans, statements), then the
//! account records, the transfer records, one pending-state byte per transfer, the reserves
//! (record + committed u128 + loans_count u32), the loans (record + disbursed, outstanding,
//! partner outstanding, interest repaid as u128), the statements and their reconciliations
//! (records), and last a 32-byte BLAKE3 hash of everything before it. History links, indexes and
//! the expiry queue are rebuilt on load. Loading checks the hash, every record, every reference
//! and money conservation; a bad snapshot is an error, never a panic.

use std::cmp::Reverse;

use super::table::Frozen;
use super::{
    AccountMeta, Ledger, LedgerConfig, LoanState, PendingState, ReserveState, TransferMeta,
    INDEX_NONE,
};
use crate::codec::{Record, RecordError};
use crate::types::{Account, Loan, Reconciliation, Reserve, Statement, Transfer, EVENT_BYTES};

const SNAPSHOT_MAGIC: [u8; 8] = *b"RECKONLS";
const SNAPSHOT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 16 + 5 * 8;
const CHECKSUM_BYTES: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is truncated")]
    Truncated,
    #[error("snapshot magic is wrong")]
    Magic,
    #[error("snapshot version {version} is not supported (expected {SNAPSHOT_VERSION})")]
    Version { version: u32 },
    #[error("snapshot checksum does not match")]
    Checksum,
    #[error("snapshot has {bytes} bytes left over")]
    TrailingBytes { bytes: usize },
    #[error("snapshot record: {0}")]
    Record(#[from] RecordError),
    #[error("snapshot is inconsistent: {0}")]
    Invariant(&'static str),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(len).ok_or(SnapshotError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(SnapshotError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    fn record<R: Record>(&mut self) -> Result<R, SnapshotError> {
        Ok(R::decode(&self.array::<EVENT_BYTES>()?)?)
    }
    /// A count whose records (each at least `record_bytes`) must fit in what is left.
    fn count(&mut self, record_bytes: usize) -> Result<usize, SnapshotError> {
        let count = usize::try_from(self.u64()?).map_err(|_| SnapshotError::Truncated)?;
        let left = self.bytes.len().saturating_sub(self.at);
        if count
            .checked_mul(record_bytes)
            .is_none_or(|needed| needed > left)
        {
            return Err(SnapshotError::Truncated);
        }
        Ok(count)
    }
}

fn invariant(holds: bool, what: &'static str) -> Result<(), SnapshotError> {
    if holds {
        Ok(())
    } else {
        Err(SnapshotError::Invariant(what))
    }
}

/// The transfer records, then one pending-state byte per transfer.
fn encode_transfers<'a>(
    out: &mut Vec<u8>,
    transfers: impl Iterator<Item = &'a Transfer>,
    meta: impl Iterator<Item = &'a TransferMeta>,
) {
    transfers.for_each(|transfer| out.extend_from_slice(&transfer.to_bytes()));
    meta.for_each(|meta| out.push(meta.state as u8));
}

/// A ledger's state at one moment, ready to encode off the ledger's thread
/// (`Ledger::snapshot_source`).
pub struct SnapshotSource {
    /// Header, counts and accounts, encoded.
    head: Vec<u8>,
    transfers: Frozen<Transfer>,
    transfer_meta: Frozen<TransferMeta>,
    /// Reserves, loans, statements, encoded.
    rest: Vec<u8>,
}

impl SnapshotSource {
    /// The snapshot body (`Ledger::snapshot_body` at the moment the source was taken).
    pub fn encode(&self) -> Vec<u8> {
        let transfers = self.transfers.len();
        let bytes = self.head.len() + transfers * (EVENT_BYTES + 1) + self.rest.len();
        let mut out = Vec::with_capacity(bytes + CHECKSUM_BYTES);
        out.extend_from_slice(&self.head);
        encode_transfers(&mut out, self.transfers.iter(), self.transfer_meta.iter());
        out.extend_from_slice(&self.rest);
        out
    }
}

impl Ledger {
    /// Encodes the whole state (see the module docs for the layout).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        Ledger::seal_snapshot(self.snapshot_body())
    }

    /// Appends the checksum to a `snapshot_body`, giving `snapshot_bytes`. Apart so that a node
    /// hashes on a background thread: only the encoding needs the ledger.
    pub fn seal_snapshot(mut body: Vec<u8>) -> Vec<u8> {
        let checksum = blake3::hash(&body);
        body.extend_from_slice(checksum.as_bytes());
        body
    }

    /// The snapshot without its trailing checksum (`seal_snapshot` adds it).
    pub fn snapshot_body(&self) -> Vec<u8> {
        let bytes_estimate =
            HEADER_BYTES + (self.accounts.len() + self.transfers.len()) * (EVENT_BYTES + 1);
        let mut out = Vec::with_capacity(bytes_estimate + CHECKSUM_BYTES);
        self.encode_head(&mut out);
        encode_transfers(&mut out, self.transfers.iter(), self.transfer_meta.iter());
        self.encode_rest(&mut out);
        out
    }

    /// What a snapshot needs, taken now at the cost of a copy of the accounts and the small tables
    /// and of at most one segment of each transfer table (`Table::freeze`); the transfers are
    /// encoded later, on any thread, by `SnapshotSource::encode`, into the same bytes
    /// `snapshot_body` would have given now.
    pub fn snapshot_source(&mut self) -> SnapshotSource {
        let mut head = Vec::with_capacity(HEADER_BYTES + self.accounts.len() * EVENT_BYTES);
        self.encode_head(&mut head);
        let mut rest = Vec::new();
        self.encode_rest(&mut rest);
        SnapshotSource {
            head,
            transfers: self.transfers.freeze(),
            transfer_meta: self.transfer_meta.freeze(),
            rest,
        }
    }

    /// Header, counts and the account records.
    fn encode_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.config.operator.to_le_bytes());
        out.extend_from_slice(&self.timestamp_last.to_le_bytes());
        out.extend_from_slice(&self.digest.to_le_bytes());
        let counts = [
            self.accounts.len(),
            self.transfers.len(),
            self.reserves.len(),
            self.loans.len(),
            self.statements.len(),
        ];
        for count in counts {
            out.extend_from_slice(&(count as u64).to_le_bytes());
        }
        self.accounts
            .iter()
            .for_each(|account| out.extend_from_slice(&account.to_bytes()));
    }

    /// Reserves, loans, statements and reconciliations.
    fn encode_rest(&self, out: &mut Vec<u8>) {
        for reserve in &self.reserves {
            out.extend_from_slice(&reserve.record.to_bytes());
            out.extend_from_slice(&reserve.committed.to_le_bytes());
            out.extend_from_slice(&reserve.loans_count.to_le_bytes());
        }
        for loan in &self.loans {
            out.extend_from_slice(&loan.record.to_bytes());
            for value in [
                loan.principal_disbursed,
                loan.principal_outstanding,
                loan.partner_outstanding,
                loan.interest_repaid,
            ] {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        for (statement, reconciliation) in self.statements.iter().zip(&self.reconciliations) {
            out.extend_from_slice(&statement.to_bytes());
            out.extend_from_slice(&reconciliation.to_bytes());
        }
    }

    /// Decodes a snapshot into a ledger with the same state and digest.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(SnapshotError::Truncated);
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let mut reader = Reader { bytes: body, at: 0 };
        if reader.array::<8>()? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Magic);
        }
        let version = reader.u32()?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { version });
        }
        if blake3::hash(body).as_bytes() != checksum {
            return Err(SnapshotError::Checksum);
        }
        let operator = reader.u32()?;
        let timestamp_last = reader.u64()?;
        let digest = reader.u128()?;
        let accounts_count = reader.count(EVENT_BYTES)?;
        let transfers_count = reader.count(EVENT_BYTES + 1)?;
        let reserves_count = reader.count(EVENT_BYTES + 20)?;
        let loans_count = reader.count(EVENT_BYTES + 64)?;
        let statements_count = reader.count(2 * EVENT_BYTES)?;
        let config = LedgerConfig {
            operator,
            accounts_capacity: accounts_count.max(1024),
            transfers_capacity: transfers_count.max(16 * 1024),
            loans_capacity: loans_count.max(256),
        };
        let mut ledger = Ledger::new(config);
        ledger.timestamp_last = timestamp_last;
        ledger.digest = digest;
        ledger.load_accounts(&mut reader, accounts_count)?;
        ledger.load_transfers(&mut reader, transfers_count)?;
        ledger.load_loans_and_reserves(&mut reader, reserves_count, loans_count)?;
        ledger.load_statements(&mut reader, statements_count)?;
        if reader.at != body.len() {
            return Err(SnapshotError::TrailingBytes {
                bytes: body.len() - reader.at,
            });
        }
        ledger.pending_balances_check()?;
        let totals = ledger.totals();
        invariant(
            totals.debits_posted == totals.credits_posted,
            "posted debits differ from credits",
        )?;
        invariant(
            totals.debits_pending == totals.credits_pending,
            "pending debits differ from credits",
        )?;
        Ok(ledger)
    }

    fn load_accounts(&mut self, reader: &mut Reader, count: usize) -> Result<(), SnapshotError> {
        for index in 0..count {
            let account: Account = reader.record()?;
            invariant(account.id != 0 && account.id != u128::MAX, "account id")?;
            invariant(
                self.account_index.get(account.id).is_none(),
                "account id repeated",
            )?;
            self.account_index.insert_new(account.id, index as u32);
            self.accounts.push(account);
            self.account_meta.push(AccountMeta {
                history_head: INDEX_NONE,
                reserve: INDEX_NONE,
            });
        }
        Ok(())
    }

    fn load_transfers(&mut self, reader: &mut Reader, count: usize) -> Result<(), SnapshotError> {
        for index in 0..count {
            let transfer: Transfer = reader.record()?;
            invariant(transfer.id != 0 && transfer.id != u128::MAX, "transfer id")?;
            invariant(
                self.transfer_index.get(transfer.id).is_none(),
                "transfer id repeated",
            )?;
            invariant(
                transfer.timestamp <= self.timestamp_last,
                "transfer from the future",
            )?;
            let debit = self
                .account_get(transfer.debit_account_id)
                .ok_or(SnapshotError::Invariant("debit account"))?;
            let credit = self
                .account_get(transfer.credit_account_id)
                .ok_or(SnapshotError::Invariant("credit account"))?;
            invariant(debit != credit, "transfer accounts equal")?;
            let meta = TransferMeta {
                prev_debit: self.account_meta[debit as usize].history_head,
                prev_credit: self.account_meta[credit as usize].history_head,
                state: PendingState::None,
            };
            self.account_meta[debit as usize].history_head = index as u32;
            self.account_meta[credit as usize].history_head = index as u32;
            self.transfer_index.insert_new(transfer.id, index as u32);
            self.transfers.push(transfer);
            self.transfer_meta.push(meta);
        }
        for index in 0..count {
            let state = PendingState::from_u8(reader.array::<1>()?[0])
                .ok_or(SnapshotError::Invariant("pending state"))?;
            let pending = self.transfers[index].flags & crate::types::transfer_flags::PENDING != 0;
            invariant(
                pending == (state != PendingState::None),
                "pending state of a transfer",
            )?;
            self.transfer_meta[index].state = state;
            if state == PendingState::Pending {
                if let Some(expires) = super::transfers::expires_at(&self.transfers[index]) {
                    self.expiries
                        .push(Reverse((expires, self.transfers[index].id)));
                }
            }
        }
        Ok(())
    }

    fn load_loans_and_reserves(
        &mut self,
        reader: &mut Reader,
        reserves: usize,
        loans: usize,
    ) -> Result<(), SnapshotError> {
        for index in 0..reserves {
            let record: Reserve = reader.record()?;
            let committed = reader.u128()?;
            let loans_count = reader.u32()?;
            let account = self
                .account_get(record.account_id)
                .ok_or(SnapshotError::Invariant("reserve account"))?;
            invariant(
                self.account_meta[account as usize].reserve == INDEX_NONE,
                "reserve repeated",
            )?;
            invariant(
                self.accounts[account as usize].institution == record.institution,
                "reserve owner",
            )?;
            self.account_meta[account as usize].reserve = index as u32;
            self.reserves.push(ReserveState {
                record,
                account,
                committed,
                loans_count,
            });
        }
        for index in 0..loans {
            let record: Loan = reader.record()?;
            let values = [
                reader.u128()?,
                reader.u128()?,
                reader.u128()?,
                reader.u128()?,
            ];
            invariant(
                record.id != 0 && self.loan_index.get(record.id).is_none(),
                "loan id",
            )?;
            let reserve = self
                .account_get(record.reserve_account_id)
                .map(|a| self.account_meta[a as usize].reserve);
            invariant(
                reserve.is_some_and(|reserve| reserve != INDEX_NONE),
                "loan reserve",
            )?;
            invariant(
                self.account_get(record.borrower_account_id).is_some(),
                "loan borrower",
            )?;
            invariant(
                self.account_get(record.funding_account_id).is_some(),
                "loan funding",
            )?;
            invariant(
                record.partner_share_bps < crate::types::BPS_ONE,
                "loan share",
            )?;
            invariant(
                values[0] <= record.principal_max
                    && values[1] <= values[0]
                    && values[2] <= values[1],
                "loan balances",
            )?;
            self.loan_index.insert_new(record.id, index as u32);
            self.loans.push(LoanState {
                record,
                principal_disbursed: values[0],
                principal_outstanding: values[1],
                partner_outstanding: values[2],
                interest_repaid: values[3],
            });
        }
        Ok(())
    }

    /// Every account's pending balances equal the sums of its transfers still pending, so no
    /// later post, void or expiry can underflow them.
    fn pending_balances_check(&self) -> Result<(), SnapshotError> {
        let mut pending = vec![(0u128, 0u128); self.accounts.len()];
        for (transfer, meta) in self.transfers.iter().zip(self.transfer_meta.iter()) {
            if meta.state != PendingState::Pending {
                continue;
            }
            let debit = self
                .account_get(transfer.debit_account_id)
                .ok_or(SnapshotError::Invariant("debit account"))?;
            let credit = self
                .account_get(transfer.credit_account_id)
                .ok_or(SnapshotError::Invariant("credit account"))?;
            let overflow = SnapshotError::Invariant("pending sum overflows");
            pending[debit as usize].0 = pending[debit as usize]
                .0
                .checked_add(transfer.amount)
                .ok_or(overflow.clone())?;
            pending[credit as usize].1 = pending[credit as usize]
                .1
                .checked_add(transfer.amount)
                .ok_or(overflow)?;
        }
        for (account, (debits, credits)) in self.accounts.iter().zip(pending) {
            invariant(
                account.debits_pending == debits,
                "debits_pending differs from pending transfers",
            )?;
            invariant(
                account.credits_pending == credits,
                "credits_pending differs from pending transfers",
            )?;
        }
        Ok(())
    }

    fn load_statements(&mut self, reader: &mut Reader, count: usize) -> Result<(), SnapshotError> {
        for index in 0..count {
            let statement: Statement = reader.record()?;
            let reconciliation: Reconciliation = reader.record()?;
            invariant(
                reconciliation.account_id == statement.account_id,
                "reconciliation account",
            )?;
            invariant(
                self.account_get(statement.account_id).is_some(),
                "statement account",
            )?;
            let key = (
                statement.account_id,
                statement.period_start_ns,
                statement.period_end_ns,
            );
            invariant(
                self.statement_index.insert(key, index as u32).is_none(),
                "statement repeated",
            )?;
            self.statements.push(statement);
            self.reconciliations.push(reconciliation);
        }
        Ok(())
    }
}
