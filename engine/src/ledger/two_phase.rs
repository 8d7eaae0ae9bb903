//! Two-phase transfers: posting or voiding a pending transfer, and releasing pending balances
//! (also used by expiry).

use super::transfers::{expires_at, transfer_exists, Role};
use super::{Ledger, PendingState, Undo};
use crate::types::{account_flags, transfer_flags as tf, InstitutionId, ResultCode, Transfer};

impl Ledger {
    /// Posts or voids a pending transfer.
    pub(crate) fn pending_finish(
        &mut self,
        requester: InstitutionId,
        event: &Transfer,
        timestamp: u64,
        role: Role,
    ) -> ResultCode {
        let post = event.flags & tf::POST_PENDING != 0;
        let others = tf::PENDING
            | tf::BALANCING_DEBIT
            | tf::BALANCING_CREDIT
            | tf::CLOSING_DEBIT
            | tf::CLOSING_CREDIT;
        if (post && event.flags & tf::VOID_PENDING != 0) || event.flags & others != 0 {
            return ResultCode::FlagsAreMutuallyExclusive;
        }
        if let Some(index) = self.transfer_index.get(event.id) {
            return transfer_exists(event, &self.transfers[index as usize]);
        }
        if event.pending_id == 0 {
            return ResultCode::PendingIdMustNotBeZero;
        }
        if event.pending_id == event.id {
            return ResultCode::PendingIdMustBeDifferent;
        }
        if event.timeout_s != 0 {
            return ResultCode::TimeoutReservedForPendingTransfer;
        }
        if role == Role::LoanLeg {
            return ResultCode::FlagsAreMutuallyExclusive;
        }
        let Some(pending_index) = self.transfer_index.get(event.pending_id) else {
            return ResultCode::PendingTransferNotFound;
        };
        let pending = self.transfers[pending_index as usize];
        let amount =
            match self.pending_finish_check(requester, event, &pending, pending_index, timestamp) {
                Ok(amount) => amount,
                Err(code) => return code,
            };
        let debit = self
            .account_index
            .get(pending.debit_account_id)
            .expect("pending: debit account");
        let credit = self
            .account_index
            .get(pending.credit_account_id)
            .expect("pending: credit account");
        self.undo_push(Undo::PendingRestore {
            index: pending_index,
            state: PendingState::Pending,
        });
        self.transfer_meta[pending_index as usize].state = if post {
            PendingState::Posted
        } else {
            PendingState::Voided
        };
        self.pending_release(&pending, post);
        if post {
            let dr = &mut self.accounts[debit as usize];
            dr.debits_posted = dr
                .debits_posted
                .checked_add(amount)
                .expect("post: debits_posted bounded by pending");
            let cr = &mut self.accounts[credit as usize];
            cr.credits_posted = cr
                .credits_posted
                .checked_add(amount)
                .expect("post: credits_posted bounded by pending");
        }
        let stored = Transfer {
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount,
            ledger: pending.ledger,
            code: pending.code,
            timestamp,
            ..*event
        };
        self.transfer_insert(&stored, debit, credit, PendingState::None, None);
        ResultCode::Ok
    }

    /// Checks a post/void against its pending transfer; returns the amount to post (or void).
    fn pending_finish_check(
        &self,
        requester: InstitutionId,
        event: &Transfer,
        pending: &Transfer,
        pending_index: u32,
        timestamp: u64,
    ) -> Result<u128, ResultCode> {
        if pending.flags & tf::PENDING == 0 {
            return Err(ResultCode::PendingTransferNotPending);
        }
        if event.debit_account_id != 0 && event.debit_account_id != pending.debit_account_id {
            return Err(ResultCode::PendingTransferHasDifferentDebitAccountId);
        }
        if event.credit_account_id != 0 && event.credit_account_id != pending.credit_account_id {
            return Err(ResultCode::PendingTransferHasDifferentCreditAccountId);
        }
        if event.ledger != 0 && event.ledger != pending.ledger {
            return Err(ResultCode::PendingTransferHasDifferentLedger);
        }
        if event.code != 0 && event.code != pending.code {
            return Err(ResultCode::PendingTransferHasDifferentCode);
        }
        let debit = self
            .account_index
            .get(pending.debit_account_id)
            .expect("pending: debit account");
        if self.accounts[debit as usize].institution != requester {
            return Err(ResultCode::DebitAccountNotOwned);
        }
        let amount = if event.amount == 0 {
            pending.amount
        } else {
            event.amount
        };
        if event.flags & tf::POST_PENDING != 0 {
            if amount > pending.amount {
                return Err(ResultCode::ExceedsPendingTransferAmount);
            }
        } else if amount != pending.amount {
            return Err(ResultCode::PendingTransferHasDifferentAmount);
        }
        match self.transfer_meta[pending_index as usize].state {
            PendingState::Pending => {}
            PendingState::Posted => return Err(ResultCode::PendingTransferAlreadyPosted),
            PendingState::Voided => return Err(ResultCode::PendingTransferAlreadyVoided),
            PendingState::Expired => return Err(ResultCode::PendingTransferExpired),
            PendingState::None => unreachable!("a pending-flagged transfer has a pending state"),
        }
        if expires_at(pending).is_some_and(|expires| expires <= timestamp) {
            return Err(ResultCode::PendingTransferExpired);
        }
        Ok(amount)
    }

    /// Releases a pending transfer's pending balances; reopens accounts it closed unless posted.
    pub(crate) fn pending_release(&mut self, pending: &Transfer, posted: bool) {
        let debit = self
            .account_index
            .get(pending.debit_account_id)
            .expect("pending: debit account");
        let credit = self
            .account_index
            .get(pending.credit_account_id)
            .expect("pending: credit account");
        self.undo_account(debit);
        self.undo_account(credit);
        let dr = &mut self.accounts[debit as usize];
        assert!(
            dr.debits_pending >= pending.amount,
            "pending: debits_pending underflow"
        );
        dr.debits_pending -= pending.amount;
        if !posted && pending.flags & tf::CLOSING_DEBIT != 0 {
            dr.flags &= !account_flags::CLOSED;
        }
        let cr = &mut self.accounts[credit as usize];
        assert!(
            cr.credits_pending >= pending.amount,
            "pending: credits_pending underflow"
        );
        cr.credits_pending -= pending.amount;
        if !posted && pending.flags & tf::CLOSING_CREDIT != 0 {
            cr.flags &= !account_flags::CLOSED;
        }
    }
}
