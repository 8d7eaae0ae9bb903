//! Queries: lookups, account history, reserve positions and reconciliation reports.
//!
//! Authorization: a query returns only records the requester owns or is a party to; anything else
//! is left out (not refused), so a query never reveals whether another member's id exists.

use std::collections::VecDeque;

use super::{Ledger, INDEX_NONE};
use crate::types::{
    query_flags, Account, InstitutionId, Operation, Query, Reply, Transfer, REPLY_RECORDS_MAX,
};

impl Ledger {
    /// Answers a query request (no state changes).
    pub(crate) fn query(
        &self,
        requester: InstitutionId,
        operation: Operation,
        queries: &[Query],
    ) -> Reply {
        assert!(operation.is_query());
        match operation {
            Operation::LookupAccounts => {
                let ids: Vec<u128> = queries.iter().map(|query| query.id).collect();
                Reply::Accounts(self.lookup_accounts(requester, &ids))
            }
            Operation::LookupTransfers => {
                let ids: Vec<u128> = queries.iter().map(|query| query.id).collect();
                Reply::Transfers(self.lookup_transfers(requester, &ids))
            }
            Operation::GetAccountTransfers => {
                let mut transfers = Vec::new();
                for query in queries {
                    let room = REPLY_RECORDS_MAX - transfers.len();
                    let mut found = self.get_account_transfers(requester, query);
                    found.truncate(room);
                    transfers.extend_from_slice(&found);
                }
                Reply::Transfers(transfers)
            }
            Operation::ReservePositions => {
                let mut positions = Vec::new();
                let asked =
                    |query: &Query| query.institution == 0 || query.institution == requester;
                if queries.iter().any(asked) {
                    positions = self.reserve_position(requester);
                }
                positions.truncate(REPLY_RECORDS_MAX);
                Reply::Positions(positions)
            }
            Operation::ReconciliationReport => {
                let mut report = Vec::new();
                for query in queries
                    .iter()
                    .filter(|q| q.institution == 0 || q.institution == requester)
                {
                    report.extend(self.reconciliation_report(
                        requester,
                        query.timestamp_min,
                        query.timestamp_max,
                    ));
                }
                report.truncate(REPLY_RECORDS_MAX);
                Reply::Reconciliations(report)
            }
            _ => unreachable!("not a query: {operation:?}"),
        }
    }

    /// The accounts among `ids` that `requester` owns.
    pub fn lookup_accounts(&self, requester: InstitutionId, ids: &[u128]) -> Vec<Account> {
        ids.iter()
            .take(REPLY_RECORDS_MAX)
            .filter_map(|id| self.account_get(*id))
            .map(|index| self.accounts[index as usize])
            .filter(|account| account.institution == requester)
            .collect()
    }

    /// The transfers among `ids` that `requester` made or owns an account of.
    pub fn lookup_transfers(&self, requester: InstitutionId, ids: &[u128]) -> Vec<Transfer> {
        ids.iter()
            .take(REPLY_RECORDS_MAX)
            .filter_map(|id| self.transfer_get(*id))
            .map(|index| self.transfers[index as usize])
            .filter(|transfer| self.transfer_party(requester, transfer))
            .collect()
    }

    fn transfer_party(&self, requester: InstitutionId, transfer: &Transfer) -> bool {
        let owns = |id: u128| {
            self.account_get(id)
                .is_some_and(|index| self.accounts[index as usize].institution == requester)
        };
        transfer.institution == requester
            || owns(transfer.debit_account_id)
            || owns(transfer.credit_account_id)
    }

    /// The history of an account `requester` owns, filtered by side and by timestamp in
    /// `[timestamp_min, timestamp_max]`, oldest first (newest first with `REVERSED`), at most
    /// `limit`. Page on by passing the last timestamp seen ± 1.
    pub fn get_account_transfers(&self, requester: InstitutionId, query: &Query) -> Vec<Transfer> {
        let Some(account) = self.account_get(query.id) else {
            return Vec::new();
        };
        if self.accounts[account as usize].institution != requester {
            return Vec::new();
        }
        let limit = if query.limit == 0 {
            REPLY_RECORDS_MAX
        } else {
            (query.limit as usize).min(REPLY_RECORDS_MAX)
        };
        let maximum = if query.timestamp_max == 0 {
            u64::MAX
        } else {
            query.timestamp_max
        };
        let sides = query.flags & (query_flags::DEBITS | query_flags::CREDITS);
        let sides = if sides == 0 {
            query_flags::DEBITS | query_flags::CREDITS
        } else {
            sides
        };
        let reversed = query.flags & query_flags::REVERSED != 0;
        let mut found: VecDeque<Transfer> = VecDeque::with_capacity(limit.min(1024));
        let mut index = self.account_meta[account as usize].history_head;
        while index != INDEX_NONE {
            let transfer = &self.transfers[index as usize];
            let meta = &self.transfer_meta[index as usize];
            let debit = transfer.debit_account_id == query.id;
            if transfer.timestamp < query.timestamp_min {
                break;
            }
            let side = if debit {
                query_flags::DEBITS
            } else {
                query_flags::CREDITS
            };
            if transfer.timestamp <= maximum && sides & side != 0 {
                found.push_back(*transfer);
                if found.len() > limit {
                    // Walking newest to oldest: keep the oldest `limit` unless reversed.
                    if reversed {
                        found.pop_back();
                        break;
                    }
                    found.pop_front();
                }
            }
            index = if debit {
                meta.prev_debit
            } else {
                meta.prev_credit
            };
        }
        let mut transfers: Vec<Transfer> = found.into();
        if !reversed {
            transfers.reverse();
        }
        assert!(transfers.len() <= limit);
        transfers
    }
}
