//! Account creation: validation, authorization, idempotency.

use super::{digest_tag, AccountMeta, Ledger, Undo, ACCOUNTS_MAX, INDEX_NONE};
use crate::codec::Record;
use crate::types::{account_flags, Account, InstitutionId, ResultCode};

impl Ledger {
    /// Creates one account on behalf of `requester`, stamped `timestamp`.
    pub(crate) fn account_create(
        &mut self,
        requester: InstitutionId,
        event: &Account,
        timestamp: u64,
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
        let both = account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS
            | account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        if event.flags & both == both {
            return ResultCode::FlagsAreMutuallyExclusive;
        }
        if event.flags & account_flags::CLOSED != 0 {
            return ResultCode::ClosedFlagMustNotBeSet;
        }
        if event.debits_pending != 0
            || event.debits_posted != 0
            || event.credits_pending != 0
            || event.credits_posted != 0
        {
            return ResultCode::BalancesMustBeZero;
        }
        if event.ledger == 0 {
            return ResultCode::LedgerMustNotBeZero;
        }
        if event.code == 0 {
            return ResultCode::CodeMustNotBeZero;
        }
        if event.institution == 0 {
            return ResultCode::InstitutionMustNotBeZero;
        }
        if event.institution != requester && requester != self.config.operator {
            return ResultCode::AccountInstitutionNotRequester;
        }
        if let Some(index) = self.account_index.get(event.id) {
            return account_exists(event, &self.accounts[index as usize]);
        }
        assert!(self.accounts.len() < ACCOUNTS_MAX, "ledger: accounts full");
        let index = self.accounts.len() as u32;
        let mut account = *event;
        account.timestamp = timestamp;
        // The linked flag only groups events of a request; the stored record keeps it like
        // TigerBeetle so an identical re-submission compares equal.
        self.accounts.push(account);
        self.account_meta.push(AccountMeta {
            history_head: INDEX_NONE,
            reserve: INDEX_NONE,
        });
        self.account_index.insert_new(account.id, index);
        self.undo_push(Undo::AccountInserted);
        self.digest_mix(digest_tag::ACCOUNT, &account.to_bytes());
        assert_eq!(self.accounts.len(), self.account_meta.len());
        ResultCode::Ok
    }
}

/// An account with this id exists: identical (ignoring balances and timestamp) or not.
fn account_exists(event: &Account, existing: &Account) -> ResultCode {
    let flags_mask = !account_flags::CLOSED;
    let same = event.user_data_128 == existing.user_data_128
        && event.user_data_64 == existing.user_data_64
        && event.user_data_32 == existing.user_data_32
        && event.institution == existing.institution
        && event.ledger == existing.ledger
        && event.code == existing.code
        && event.flags & flags_mask == existing.flags & flags_mask;
    if same {
        ResultCode::Exists
    } else {
        ResultCode::ExistsWithDifferentFields
    }
}
