//! Batches: the request shape, time, expiry, linked chains and the dispatch to each operation.

use super::{digest_tag, Ledger, PendingState};
use crate::codec::{decode_body, DecodeError};
use crate::types::{
    Account, Disbursement, EventResult, InstitutionId, Loan, Operation, Query, Repayment, Reply,
    Reserve, ResultCode, Statement, Transfer, BATCH_EVENTS_MAX, EVENT_BYTES,
};

/// The events of one request, by operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Events {
    CreateAccounts(Vec<Account>),
    CreateReserves(Vec<Reserve>),
    CreateTransfers(Vec<Transfer>),
    TopUp(Vec<Transfer>),
    CreateLoans(Vec<Loan>),
    Disburse(Vec<Disbursement>),
    Repay(Vec<Repayment>),
    PostStatements(Vec<Statement>),
    /// Any query operation (`Operation::is_query`).
    Query(Operation, Vec<Query>),
}

impl Events {
    pub fn len(&self) -> usize {
        match self {
            Events::CreateAccounts(events) => events.len(),
            Events::CreateReserves(events) => events.len(),
            Events::CreateTransfers(events) | Events::TopUp(events) => events.len(),
            Events::CreateLoans(events) => events.len(),
            Events::Disburse(events) => events.len(),
            Events::Repay(events) => events.len(),
            Events::PostStatements(events) => events.len(),
            Events::Query(_, events) => events.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes a request body for `operation`, validating every record.
    pub fn decode(operation: Operation, body: &[u8]) -> Result<Events, DecodeError> {
        Ok(match operation {
            Operation::CreateAccounts => Events::CreateAccounts(decode_body(body)?),
            Operation::CreateReserves => Events::CreateReserves(decode_body(body)?),
            Operation::CreateTransfers => Events::CreateTransfers(decode_body(body)?),
            Operation::TopUp => Events::TopUp(decode_body(body)?),
            Operation::CreateLoans => Events::CreateLoans(decode_body(body)?),
            Operation::Disburse => Events::Disburse(decode_body(body)?),
            Operation::Repay => Events::Repay(decode_body(body)?),
            Operation::PostStatements => Events::PostStatements(decode_body(body)?),
            query => Events::Query(query, decode_body(body)?),
        })
    }
}

/// One request as the ledger applies it: who asks, when (from the committed block), and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub requester: InstitutionId,
    pub timestamp_ns: u64,
    pub events: Events,
}

/// A batch the ledger refuses as a whole (nothing is applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "batch timestamp {timestamp_ns} is not after the last event timestamp {timestamp_last}"
    )]
    TimestampNotIncreasing {
        timestamp_ns: u64,
        timestamp_last: u64,
    },
    #[error("batch timestamp {timestamp_ns} plus {count} events overflows u64")]
    TimestampOverflow { timestamp_ns: u64, count: usize },
    #[error("batch holds {count} events, more than {BATCH_EVENTS_MAX}")]
    EventsMax { count: usize },
}

/// Why `apply_request` refused a request as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("batch: {0}")]
    Batch(#[from] BatchError),
}

/// How many events ahead the hot loop prefetches index slots (far) and, once those are in cache,
/// the account records they point to (near).
const PREFETCH_FAR: usize = 16;
const PREFETCH_NEAR: usize = 8;

fn transfer_linked(transfer: &Transfer) -> bool {
    transfer.flags & crate::types::transfer_flags::LINKED != 0
}

fn transfer_prefetch(ledger: &Ledger, transfer: &Transfer, near: bool) {
    if !near {
        ledger.transfer_index.prefetch(transfer.id);
        ledger.account_index.prefetch(transfer.debit_account_id);
        ledger.account_index.prefetch(transfer.credit_account_id);
        return;
    }
    for id in [transfer.debit_account_id, transfer.credit_account_id] {
        if let Some(index) = ledger.account_get(id) {
            super::memory::prefetch(&ledger.accounts[index as usize]);
            super::memory::prefetch(&ledger.account_meta[index as usize]);
        }
    }
}

impl Ledger {
    /// Decodes a signed request body (`count × 128` bytes) and applies it.
    pub fn apply_request(
        &mut self,
        requester: InstitutionId,
        timestamp_ns: u64,
        operation: u8,
        body: &[u8],
    ) -> Result<Reply, RequestError> {
        let operation = Operation::from_u8(operation)
            .ok_or(DecodeError::OperationUnknown { value: operation })?;
        let events = Events::decode(operation, body)?;
        assert_eq!(events.len() * EVENT_BYTES, body.len());
        Ok(self.apply(&Batch {
            requester,
            timestamp_ns,
            events,
        })?)
    }

    /// Applies one batch. Creates advance time (expiring due pending transfers first); queries
    /// change nothing and ignore the timestamp.
    pub fn apply(&mut self, batch: &Batch) -> Result<Reply, BatchError> {
        let count = batch.events.len();
        if count > BATCH_EVENTS_MAX {
            return Err(BatchError::EventsMax { count });
        }
        if let Events::Query(operation, queries) = &batch.events {
            return Ok(self.query(batch.requester, *operation, queries));
        }
        self.time_advance(batch.timestamp_ns, count)?;
        let requester = batch.requester;
        let mut results = Vec::new();
        let timestamp = batch.timestamp_ns;
        match &batch.events {
            Events::CreateAccounts(events) => {
                self.chain_apply(
                    events,
                    timestamp,
                    &mut results,
                    |a| a.flags & crate::types::account_flags::LINKED != 0,
                    |ledger, a, _near| ledger.account_index.prefetch(a.id),
                    |ledger, event, ts| ledger.account_create(requester, event, ts),
                );
            }
            Events::CreateTransfers(events) | Events::TopUp(events) => {
                // A top-up is a transfer with its own authorization rule (made by the reserve's
                // owner); everything else about applying it is the same.
                let role = if matches!(batch.events, Events::TopUp(_)) {
                    super::transfers::Role::TopUp
                } else {
                    super::transfers::Role::Plain
                };
                let first = self.transfers.len();
                self.digest_deferred = true;
                self.chain_apply(
                    events,
                    timestamp,
                    &mut results,
                    transfer_linked,
                    transfer_prefetch,
                    |ledger, event, ts| ledger.transfer_create(requester, event, ts, role),
                );
                self.digest_deferred = false;
                self.digest_mix_transfers(first);
            }
            Events::CreateReserves(events) => {
                self.each_apply(events, timestamp, &mut results, |ledger, event, ts| {
                    ledger.reserve_create(requester, event, ts)
                })
            }
            Events::CreateLoans(events) => {
                self.each_apply(events, timestamp, &mut results, |ledger, event, ts| {
                    ledger.loan_create(requester, event, ts)
                })
            }
            Events::Disburse(events) => {
                self.each_apply(events, timestamp, &mut results, |ledger, event, ts| {
                    ledger.disburse(requester, event, ts)
                })
            }
            Events::Repay(events) => {
                self.each_apply(events, timestamp, &mut results, |ledger, event, ts| {
                    ledger.repay(requester, event, ts)
                })
            }
            Events::PostStatements(events) => {
                self.each_apply(events, timestamp, &mut results, |ledger, event, ts| {
                    ledger.statement_post(requester, event, ts)
                })
            }
            Events::Query(..) => unreachable!("queries return above"),
        }
        assert!(!self.undo_active);
        Ok(Reply::Results(results))
    }

    /// Checks the batch timestamp, reserves `count` event timestamps and expires due transfers.
    fn time_advance(&mut self, timestamp_ns: u64, count: usize) -> Result<(), BatchError> {
        if timestamp_ns <= self.timestamp_last {
            return Err(BatchError::TimestampNotIncreasing {
                timestamp_ns,
                timestamp_last: self.timestamp_last,
            });
        }
        let last = timestamp_ns
            .checked_add(count.max(1) as u64 - 1)
            .filter(|last| *last < u64::MAX)
            .ok_or(BatchError::TimestampOverflow {
                timestamp_ns,
                count,
            })?;
        self.expire_due(timestamp_ns);
        self.timestamp_last = last;
        Ok(())
    }

    /// Expires every pending transfer whose timeout is at or before `timestamp_ns`, soonest first.
    pub(crate) fn expire_due(&mut self, timestamp_ns: u64) {
        while let Some(std::cmp::Reverse((expires_at, id))) = self.expiries.peek().copied() {
            if expires_at > timestamp_ns {
                break;
            }
            self.expiries.pop();
            let Some(index) = self.transfer_get(id) else {
                continue;
            };
            let pending = self.transfers[index as usize];
            let due = super::transfers::expires_at(&pending);
            if self.transfer_meta[index as usize].state != PendingState::Pending
                || due != Some(expires_at)
            {
                continue; // Stale: posted, voided, or rolled back and re-created.
            }
            self.transfer_meta[index as usize].state = PendingState::Expired;
            self.pending_release(&pending, false);
            let mut record = [0u8; EVENT_BYTES];
            record[..16].copy_from_slice(&id.to_le_bytes());
            record[16..24].copy_from_slice(&timestamp_ns.to_le_bytes());
            self.digest_mix(digest_tag::EXPIRY, &record);
        }
    }

    /// Applies events one by one; each is atomic on its own.
    fn each_apply<E>(
        &mut self,
        events: &[E],
        timestamp: u64,
        results: &mut Vec<EventResult>,
        mut apply_one: impl FnMut(&mut Ledger, &E, u64) -> ResultCode,
    ) {
        for (index, event) in events.iter().enumerate() {
            let code = apply_one(self, event, timestamp + index as u64);
            if code != ResultCode::Ok {
                results.push(EventResult {
                    index: index as u32,
                    code,
                });
            }
        }
    }

    /// Applies events with linked chains: a chain (events flagged linked, closed by the first
    /// event without the flag) applies all-or-nothing. `prefetch` is called `PREFETCH_FAR` and
    /// `PREFETCH_NEAR` events ahead so the cache misses of the indexes and records overlap.
    fn chain_apply<E>(
        &mut self,
        events: &[E],
        timestamp: u64,
        results: &mut Vec<EventResult>,
        linked: impl Fn(&E) -> bool,
        prefetch: impl Fn(&Ledger, &E, bool),
        mut apply_one: impl FnMut(&mut Ledger, &E, u64) -> ResultCode,
    ) {
        let mut index = 0;
        while index < events.len() {
            if let Some(ahead) = events.get(index + PREFETCH_FAR) {
                prefetch(self, ahead, false);
            }
            if let Some(ahead) = events.get(index + PREFETCH_NEAR) {
                prefetch(self, ahead, true);
            }
            if !linked(&events[index]) {
                let code = apply_one(self, &events[index], timestamp + index as u64);
                if code != ResultCode::Ok {
                    results.push(EventResult {
                        index: index as u32,
                        code,
                    });
                }
                index += 1;
                continue;
            }
            let mut end = index;
            while end < events.len() && linked(&events[end]) {
                end += 1;
            }
            if end == events.len() {
                for open in index..events.len() {
                    let code = if open + 1 == events.len() {
                        ResultCode::LinkedEventChainOpen
                    } else {
                        ResultCode::LinkedEventFailed
                    };
                    results.push(EventResult {
                        index: open as u32,
                        code,
                    });
                }
                return;
            }
            self.chain_apply_one(events, index, end, timestamp, results, &mut apply_one);
            index = end + 1;
        }
    }

    /// Applies the chain `events[first..=last]` all-or-nothing.
    fn chain_apply_one<E>(
        &mut self,
        events: &[E],
        first: usize,
        last: usize,
        timestamp: u64,
        results: &mut Vec<EventResult>,
        apply_one: &mut impl FnMut(&mut Ledger, &E, u64) -> ResultCode,
    ) {
        assert!(first < last && last < events.len());
        let digest_before = self.digest;
        let results_before = results.len();
        self.undo_begin();
        let mut failure = None;
        for (offset, event) in events[first..=last].iter().enumerate() {
            let index = first + offset;
            let code = apply_one(self, event, timestamp + index as u64);
            if !code.is_ok() {
                failure = Some((index, code));
                break;
            }
            if code != ResultCode::Ok {
                results.push(EventResult {
                    index: index as u32,
                    code,
                });
            }
        }
        match failure {
            None => self.undo_commit(),
            Some((failed, code)) => {
                self.undo_rollback(digest_before);
                results.truncate(results_before);
                for index in first..=last {
                    let code = if index == failed {
                        code
                    } else {
                        ResultCode::LinkedEventFailed
                    };
                    results.push(EventResult {
                        index: index as u32,
                        code,
                    });
                }
            }
        }
    }
}
