//! Transfers: plain, pending, post/void, balancing and closing. The hot path of the ledger.
//!
//! Every check runs before the first mutation, so a failed transfer changes nothing.

use super::{digest_tag, Ledger, PendingState, TransferMeta, Undo, INDEX_NONE, TRANSFERS_MAX};
use crate::codec::Record;
use crate::types::{
    account_flags, transfer_flags as tf, InstitutionId, ResultCode, Transfer, NS_PER_S,
};

/// On whose authority a transfer is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The requester must own the debit account.
    Plain,
    /// As `Plain`, and the credit account must be a reserve the requester owns.
    TopUp,
    /// A leg of a disbursement or repayment: the loan record authorized both accounts.
    LoanLeg,
}

/// When a pending transfer expires (None: not pending or no timeout).
pub(crate) fn expires_at(transfer: &Transfer) -> Option<u64> {
    if transfer.flags & tf::PENDING == 0 || transfer.timeout_s == 0 {
        return None;
    }
    transfer
        .timestamp
        .checked_add(u64::from(transfer.timeout_s) * NS_PER_S)
}

impl Ledger {
    /// Creates one transfer on behalf of `requester`, stamped `timestamp`.
    pub(crate) fn transfer_create(
        &mut self,
        requester: InstitutionId,
        event: &Transfer,
        timestamp: u64,
        role: Role,
    ) -> ResultCode {
        if event.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        if event.id == 0 {
            return ResultCode::IdMustNotBeZero;
        }
        if event.id == u128::MAX {
            return ResultCode::IdMustNotBeIntMax;
        }
        if event.institution != requester {
            return ResultCode::InstitutionMustMatchRequester;
        }
        if event.flags & (tf::POST_PENDING | tf::VOID_PENDING) != 0 {
            return self.pending_finish(requester, event, timestamp, role);
        }
        let vacancy = match self.transfer_index.find(event.id) {
            Ok(index) => return transfer_exists(event, &self.transfers[index as usize]),
            Err(vacancy) => vacancy,
        };
        let code = transfer_fields_check(event);
        if code != ResultCode::Ok {
            return code;
        }
        let (debit, credit) = match self.transfer_accounts(requester, event, role) {
            Ok(pair) => pair,
            Err(code) => return code,
        };
        let amount = match self.transfer_amount(event, debit, credit, timestamp) {
            Ok(amount) => amount,
            Err(code) => return code,
        };
        let mut stored = *event;
        stored.amount = amount;
        stored.timestamp = timestamp;
        let state = if event.flags & tf::PENDING != 0 {
            PendingState::Pending
        } else {
            PendingState::None
        };
        self.transfer_insert(&stored, debit, credit, state, Some(vacancy));
        if let Some(expires) = expires_at(&stored) {
            self.expiries.push(std::cmp::Reverse((expires, stored.id)));
        }
        self.reserve_warning_code(debit)
    }

    /// Looks up both accounts and checks ledgers, authorization and closed flags.
    fn transfer_accounts(
        &self,
        requester: InstitutionId,
        event: &Transfer,
        role: Role,
    ) -> Result<(u32, u32), ResultCode> {
        let debit = self
            .account_index
            .get(event.debit_account_id)
            .ok_or(ResultCode::DebitAccountNotFound)?;
        let credit = self
            .account_index
            .get(event.credit_account_id)
            .ok_or(ResultCode::CreditAccountNotFound)?;
        let debit_account = &self.accounts[debit as usize];
        let credit_account = &self.accounts[credit as usize];
        if debit_account.ledger != credit_account.ledger {
            return Err(ResultCode::AccountsMustHaveTheSameLedger);
        }
        if event.ledger != debit_account.ledger {
            return Err(ResultCode::TransferMustHaveTheSameLedgerAsAccounts);
        }
        if role != Role::LoanLeg && debit_account.institution != requester {
            return Err(ResultCode::DebitAccountNotOwned);
        }
        if role == Role::TopUp {
            if self.account_meta[credit as usize].reserve == INDEX_NONE {
                return Err(ResultCode::TopUpCreditAccountNotReserve);
            }
            if credit_account.institution != requester {
                return Err(ResultCode::TopUpReserveNotOwned);
            }
        }
        if debit_account.flags & account_flags::CLOSED != 0 {
            return Err(ResultCode::DebitAccountAlreadyClosed);
        }
        if credit_account.flags & account_flags::CLOSED != 0 {
            return Err(ResultCode::CreditAccountAlreadyClosed);
        }
        Ok((debit, credit))
    }

    /// Resolves the amount (balancing) and checks overflows, balance limits and reserve floors.
    fn transfer_amount(
        &self,
        event: &Transfer,
        debit: u32,
        credit: u32,
        timestamp: u64,
    ) -> Result<u128, ResultCode> {
        let dr = &self.accounts[debit as usize];
        let cr = &self.accounts[credit as usize];
        let mut amount = event.amount;
        if event.flags & (tf::BALANCING_DEBIT | tf::BALANCING_CREDIT) != 0 {
            if amount == 0 {
                amount = u128::MAX;
            }
            if event.flags & tf::BALANCING_DEBIT != 0 {
                let debits = dr.debits_posted.saturating_add(dr.debits_pending);
                amount = amount.min(dr.credits_posted.saturating_sub(debits));
            }
            if event.flags & tf::BALANCING_CREDIT != 0 {
                let credits = cr.credits_posted.saturating_add(cr.credits_pending);
                amount = amount.min(cr.debits_posted.saturating_sub(credits));
            }
        }
        if event.flags & tf::PENDING != 0 {
            dr.debits_pending
                .checked_add(amount)
                .ok_or(ResultCode::OverflowsDebitsPending)?;
            cr.credits_pending
                .checked_add(amount)
                .ok_or(ResultCode::OverflowsCreditsPending)?;
        } else {
            dr.debits_posted
                .checked_add(amount)
                .ok_or(ResultCode::OverflowsDebitsPosted)?;
            cr.credits_posted
                .checked_add(amount)
                .ok_or(ResultCode::OverflowsCreditsPosted)?;
        }
        let debits_after = dr
            .debits_pending
            .checked_add(dr.debits_posted)
            .and_then(|sum| sum.checked_add(amount))
            .ok_or(ResultCode::OverflowsDebits)?;
        let credits_after = cr
            .credits_pending
            .checked_add(cr.credits_posted)
            .and_then(|sum| sum.checked_add(amount))
            .ok_or(ResultCode::OverflowsCredits)?;
        if event.timeout_s != 0
            && timestamp
                .checked_add(u64::from(event.timeout_s) * NS_PER_S)
                .is_none()
        {
            return Err(ResultCode::OverflowsTimeout);
        }
        if dr.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
            && debits_after > dr.credits_posted
        {
            return Err(ResultCode::ExceedsCredits);
        }
        if cr.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
            && credits_after > cr.debits_posted
        {
            return Err(ResultCode::ExceedsDebits);
        }
        let reserve = self.account_meta[debit as usize].reserve;
        if reserve != INDEX_NONE {
            let floor = self.reserves[reserve as usize].record.floor;
            if debits_after
                .checked_add(floor)
                .is_none_or(|needed| needed > dr.credits_posted)
            {
                return Err(ResultCode::ReserveFloorBreached);
            }
        }
        Ok(amount)
    }

    /// Applies a checked transfer: balances, closing flags, history links, index, digest.
    /// `vacancy` is the index slot `U128Map::find` returned for its id, if known.
    pub(crate) fn transfer_insert(
        &mut self,
        stored: &Transfer,
        debit: u32,
        credit: u32,
        state: PendingState,
        vacancy: Option<usize>,
    ) {
        assert!(
            self.transfers.len() < TRANSFERS_MAX,
            "ledger: transfers full"
        );
        assert!(debit != credit);
        self.undo_account(debit);
        self.undo_account(credit);
        let pending = stored.flags & tf::PENDING != 0;
        let finishing = stored.flags & (tf::POST_PENDING | tf::VOID_PENDING) != 0;
        if !finishing {
            let dr = &mut self.accounts[debit as usize];
            if pending {
                dr.debits_pending += stored.amount;
            } else {
                dr.debits_posted += stored.amount;
            }
            if stored.flags & tf::CLOSING_DEBIT != 0 {
                dr.flags |= account_flags::CLOSED;
            }
            let cr = &mut self.accounts[credit as usize];
            if pending {
                cr.credits_pending += stored.amount;
            } else {
                cr.credits_posted += stored.amount;
            }
            if stored.flags & tf::CLOSING_CREDIT != 0 {
                cr.flags |= account_flags::CLOSED;
            }
        }
        let index = self.transfers.len() as u32;
        let meta = TransferMeta {
            prev_debit: self.account_meta[debit as usize].history_head,
            prev_credit: self.account_meta[credit as usize].history_head,
            state,
        };
        self.transfers.push(*stored);
        self.transfer_meta.push(meta);
        self.account_meta[debit as usize].history_head = index;
        self.account_meta[credit as usize].history_head = index;
        match vacancy {
            Some(slot) => self.transfer_index.insert_at(slot, stored.id, index),
            None => self.transfer_index.insert_new(stored.id, index),
        }
        self.undo_push(Undo::TransferInserted);
        if !self.digest_deferred {
            self.digest_mix(digest_tag::TRANSFER, &stored.to_bytes());
        }
    }
}

/// Field checks that need no state.
fn transfer_fields_check(event: &Transfer) -> ResultCode {
    let flags = event.flags;
    if event.debit_account_id == 0 {
        return ResultCode::DebitAccountIdMustNotBeZero;
    }
    if event.credit_account_id == 0 {
        return ResultCode::CreditAccountIdMustNotBeZero;
    }
    if event.debit_account_id == event.credit_account_id {
        return ResultCode::AccountsMustBeDifferent;
    }
    if event.pending_id != 0 {
        return ResultCode::PendingIdMustBeZero;
    }
    if event.timeout_s != 0 && flags & tf::PENDING == 0 {
        return ResultCode::TimeoutReservedForPendingTransfer;
    }
    if flags & (tf::CLOSING_DEBIT | tf::CLOSING_CREDIT) != 0 && flags & tf::PENDING == 0 {
        return ResultCode::ClosingTransferMustBePending;
    }
    if event.amount == 0 && flags & (tf::BALANCING_DEBIT | tf::BALANCING_CREDIT) == 0 {
        return ResultCode::AmountMustNotBeZero;
    }
    if event.ledger == 0 {
        return ResultCode::LedgerMustNotBeZero;
    }
    if event.code == 0 {
        return ResultCode::CodeMustNotBeZero;
    }
    ResultCode::Ok
}

/// A transfer with this id exists: the same event (zero fields of a post/void and the amount cap
/// of a balancing transfer match what was resolved) or a different one.
pub(crate) fn transfer_exists(event: &Transfer, existing: &Transfer) -> ResultCode {
    let finishing = event.flags & (tf::POST_PENDING | tf::VOID_PENDING) != 0;
    let wild = |event_field: u128, existing_field: u128| {
        event_field == existing_field || (finishing && event_field == 0)
    };
    let amount_same = if event.flags & (tf::BALANCING_DEBIT | tf::BALANCING_CREDIT) != 0 {
        event.amount == 0 || existing.amount <= event.amount
    } else {
        wild(event.amount, existing.amount)
    };
    let same = amount_same
        && wild(event.debit_account_id, existing.debit_account_id)
        && wild(event.credit_account_id, existing.credit_account_id)
        && wild(u128::from(event.ledger), u128::from(existing.ledger))
        && wild(u128::from(event.code), u128::from(existing.code))
        && event.pending_id == existing.pending_id
        && event.user_data_128 == existing.user_data_128
        && event.user_data_64 == existing.user_data_64
        && event.institution == existing.institution
        && event.timeout_s == existing.timeout_s
        && event.flags == existing.flags;
    if same {
        ResultCode::Exists
    } else {
        ResultCode::ExistsWithDifferentFields
    }
}
