//! Reserve positions and warnings: what a reserve holds, what loans have committed of it.

use super::jointloan::partner_part;
use super::{Ledger, ReserveState, INDEX_NONE};
use crate::types::{InstitutionId, Loan, ReservePosition, ResultCode, POSITION_BELOW_WARNING};

impl Ledger {
    /// `OkReserveBelowWarning` if `account` is a reserve now below its warning threshold.
    pub(crate) fn reserve_warning_code(&self, account: u32) -> ResultCode {
        let reserve = self.account_meta[account as usize].reserve;
        if reserve == INDEX_NONE {
            return ResultCode::Ok;
        }
        if self.reserve_below_warning(&self.reserves[reserve as usize]) {
            ResultCode::OkReserveBelowWarning
        } else {
            ResultCode::Ok
        }
    }

    /// credits_posted - debits_posted - debits_pending, saturated into i128.
    fn reserve_balance(&self, reserve: &ReserveState) -> i128 {
        let account = &self.accounts[reserve.account as usize];
        let debits = account.debits_posted.saturating_add(account.debits_pending);
        if account.credits_posted >= debits {
            i128::try_from(account.credits_posted - debits).unwrap_or(i128::MAX)
        } else {
            i128::try_from(debits - account.credits_posted).map_or(i128::MIN, |deficit| -deficit)
        }
    }

    fn reserve_below_warning(&self, reserve: &ReserveState) -> bool {
        let balance = self.reserve_balance(reserve);
        balance < 0 || (balance as u128) < reserve.record.warning
    }

    fn position(&self, reserve: &ReserveState) -> ReservePosition {
        let account = &self.accounts[reserve.account as usize];
        let balance = self.reserve_balance(reserve);
        let below = self.reserve_below_warning(reserve);
        let mut undrawn: u128 = 0;
        if reserve.loans_count > 0 {
            for loan in self
                .loans
                .iter()
                .filter(|loan| loan.record.reserve_account_id == account.id)
            {
                let remaining = loan.record.principal_max - loan.principal_disbursed;
                undrawn =
                    undrawn.saturating_add(partner_part(remaining, loan.record.partner_share_bps));
            }
        }
        ReservePosition {
            account_id: account.id,
            balance,
            floor: reserve.record.floor,
            warning: reserve.record.warning,
            committed: reserve.committed,
            undrawn,
            institution: account.institution,
            ledger: account.ledger,
            loans_count: reserve.loans_count,
            flags: if below { POSITION_BELOW_WARNING } else { 0 },
            reserved: [0; 16],
        }
    }

    /// The positions of every reserve `institution` owns (the node's local view, unfiltered).
    pub fn reserve_position(&self, institution: InstitutionId) -> Vec<ReservePosition> {
        self.reserves
            .iter()
            .filter(|reserve| reserve.record.institution == institution)
            .map(|reserve| self.position(reserve))
            .collect()
    }

    /// The loan record with its running balances: (record, disbursed, outstanding, interest repaid).
    pub fn loan(&self, id: u128) -> Option<(Loan, u128, u128, u128)> {
        let index = self.loan_index.get(id)?;
        let state = &self.loans[index as usize];
        Some((
            state.record,
            state.principal_disbursed,
            state.principal_outstanding,
            state.interest_repaid,
        ))
    }
}
