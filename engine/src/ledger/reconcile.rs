//! `reconcile`: institutions post statements; the ledger compares them with its own figures.
//!
//! A statement covers one account over `[period_start_ns, period_end_ns)`. The transfers it
//! counts are those that moved posted balances in the period: plain, balancing and post_pending
//! transfers (pending and void transfers, and expiries, move only pending balances).

use super::{digest_tag, Ledger, INDEX_NONE};
use crate::codec::Record;
use crate::types::{
    transfer_flags as tf, InstitutionId, Reconciliation, ResultCode, Statement,
    RECONCILIATION_DIGEST_DIFFERS, RECONCILIATION_MISMATCHED,
};

/// The statement digest of a set of transfer ids: the sum, modulo 2^256, of
/// `blake3(id as 16 little-endian bytes)` read as 256-bit little-endian integers, returned
/// little-endian. Order-independent, so client and ledger need not agree on an order.
pub fn statement_digest(ids: &[u128]) -> [u8; 32] {
    let mut sum = [0u64; 4];
    for id in ids {
        digest_add(&mut sum, id);
    }
    let mut out = [0u8; 32];
    for (limb, chunk) in sum.iter().zip(out.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    out
}

fn digest_add(sum: &mut [u64; 4], id: &u128) {
    let hash = blake3::hash(&id.to_le_bytes());
    let bytes = hash.as_bytes();
    let mut carry = 0u64;
    for (limb_index, limb) in sum.iter_mut().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[limb_index * 8..limb_index * 8 + 8]);
        let (partial, overflow_a) = limb.overflowing_add(u64::from_le_bytes(word));
        let (total, overflow_b) = partial.overflowing_add(carry);
        *limb = total;
        carry = u64::from(overflow_a) + u64::from(overflow_b);
    }
}

/// The ledger's own figures for one account and period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub debits: u128,
    pub credits: u128,
    pub ids: Vec<u128>,
}

/// Transfer ids the ledger booked but the institution did not list (`missing`), and ids it
/// listed that the ledger did not book for that account and period (`extra`). Both sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdsDiff {
    pub missing: Vec<u128>,
    pub extra: Vec<u128>,
}

fn saturating_i128(value: u128) -> i128 {
    i128::try_from(value).unwrap_or(i128::MAX)
}

impl Ledger {
    /// Walks `account`'s history (newest first) over `[start, end)` and sums what it booked.
    pub(crate) fn figures(
        &self,
        account: u32,
        period_start_ns: u64,
        period_end_ns: u64,
    ) -> Figures {
        let account_id = self.accounts[account as usize].id;
        let mut figures = Figures::default();
        let mut index = self.account_meta[account as usize].history_head;
        while index != INDEX_NONE {
            let transfer = &self.transfers[index as usize];
            let meta = &self.transfer_meta[index as usize];
            let debit = transfer.debit_account_id == account_id;
            assert!(
                debit || transfer.credit_account_id == account_id,
                "history: link to a stranger"
            );
            if transfer.timestamp < period_start_ns {
                break;
            }
            let posts = transfer.flags & (tf::PENDING | tf::VOID_PENDING) == 0;
            if transfer.timestamp < period_end_ns && posts {
                if debit {
                    figures.debits = figures.debits.saturating_add(transfer.amount);
                } else {
                    figures.credits = figures.credits.saturating_add(transfer.amount);
                }
                figures.ids.push(transfer.id);
            }
            index = if debit {
                meta.prev_debit
            } else {
                meta.prev_credit
            };
        }
        figures
    }

    /// Posts a statement and records Matched or Mismatched.
    pub(crate) fn statement_post(
        &mut self,
        requester: InstitutionId,
        event: &Statement,
        timestamp: u64,
    ) -> ResultCode {
        if event.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        if event.account_id == 0 {
            return ResultCode::IdMustNotBeZero;
        }
        if event.institution != requester {
            return ResultCode::InstitutionMustMatchRequester;
        }
        if event.period_start_ns >= event.period_end_ns {
            return ResultCode::StatementPeriodInvalid;
        }
        if event.period_end_ns > timestamp {
            return ResultCode::StatementPeriodNotClosed;
        }
        let Some(account) = self.account_get(event.account_id) else {
            return ResultCode::StatementAccountNotFound;
        };
        if self.accounts[account as usize].institution != requester {
            return ResultCode::StatementAccountNotOwned;
        }
        let key = (event.account_id, event.period_start_ns, event.period_end_ns);
        if let Some(index) = self.statement_index.get(&key) {
            let existing = Statement {
                timestamp: 0,
                ..self.statements[*index as usize]
            };
            return if existing == *event {
                ResultCode::Exists
            } else {
                ResultCode::ExistsWithDifferentFields
            };
        }
        let figures = self.figures(account, event.period_start_ns, event.period_end_ns);
        let reconciliation = reconciliation_of(event, &figures, timestamp);
        let stored = Statement {
            timestamp,
            ..*event
        };
        self.statement_index
            .insert(key, self.reconciliations.len() as u32);
        self.reconciliations.push(reconciliation);
        self.statements.push(stored);
        assert_eq!(self.reconciliations.len(), self.statements.len());
        self.digest_mix(digest_tag::STATEMENT, &stored.to_bytes());
        ResultCode::Ok
    }

    /// The results of `institution`'s statements whose periods lie within
    /// `[period_start_ns, period_end_ns]` (`period_end_ns` 0: no upper bound), in posting order.
    pub fn reconciliation_report(
        &self,
        institution: InstitutionId,
        period_start_ns: u64,
        period_end_ns: u64,
    ) -> Vec<Reconciliation> {
        let end = if period_end_ns == 0 {
            u64::MAX
        } else {
            period_end_ns
        };
        self.reconciliations
            .iter()
            .filter(|r| {
                r.institution == institution
                    && r.period_start_ns >= period_start_ns
                    && r.period_end_ns <= end
            })
            .copied()
            .collect()
    }

    /// Narrows a mismatch: compares the ids `institution` booked for its account and period with
    /// the ledger's. Refuses accounts the institution does not own.
    pub fn reconcile_ids(
        &self,
        institution: InstitutionId,
        account_id: u128,
        period_start_ns: u64,
        period_end_ns: u64,
        ids: &[u128],
    ) -> Result<IdsDiff, ResultCode> {
        let account = self
            .account_get(account_id)
            .ok_or(ResultCode::StatementAccountNotFound)?;
        if self.accounts[account as usize].institution != institution {
            return Err(ResultCode::StatementAccountNotOwned);
        }
        if period_start_ns >= period_end_ns {
            return Err(ResultCode::StatementPeriodInvalid);
        }
        let mut ledger_ids = self.figures(account, period_start_ns, period_end_ns).ids;
        ledger_ids.sort_unstable();
        let mut client_ids = ids.to_vec();
        client_ids.sort_unstable();
        client_ids.dedup();
        let mut diff = IdsDiff::default();
        let (mut a, mut b) = (0, 0);
        loop {
            match (ledger_ids.get(a), client_ids.get(b)) {
                (Some(x), Some(y)) if x == y => {
                    a += 1;
                    b += 1;
                }
                (Some(x), Some(y)) if x < y => {
                    diff.missing.push(*x);
                    a += 1;
                }
                (Some(x), None) => {
                    diff.missing.push(*x);
                    a += 1;
                }
                (_, Some(y)) => {
                    diff.extra.push(*y);
                    b += 1;
                }
                (None, None) => break,
            }
        }
        Ok(diff)
    }
}

fn reconciliation_of(event: &Statement, figures: &Figures, timestamp: u64) -> Reconciliation {
    let count_ledger = figures.ids.len() as u64;
    let debits_diff =
        saturating_i128(event.debits_total).saturating_sub(saturating_i128(figures.debits));
    let credits_diff =
        saturating_i128(event.credits_total).saturating_sub(saturating_i128(figures.credits));
    let count_diff = (event.transfer_count as i128 - i128::from(count_ledger))
        .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let digest_differs = statement_digest(&figures.ids) != event.ids_digest;
    let mismatched = debits_diff != 0 || credits_diff != 0 || count_diff != 0 || digest_differs;
    let mut flags = 0;
    if mismatched {
        flags |= RECONCILIATION_MISMATCHED;
    }
    if digest_differs {
        flags |= RECONCILIATION_DIGEST_DIFFERS;
    }
    Reconciliation {
        account_id: event.account_id,
        period_start_ns: event.period_start_ns,
        period_end_ns: event.period_end_ns,
        debits_ledger: figures.debits,
        credits_ledger: figures.credits,
        debits_diff,
        credits_diff,
        count_ledger,
        count_diff,
        institution: event.institution,
        flags,
        timestamp,
    }
}
