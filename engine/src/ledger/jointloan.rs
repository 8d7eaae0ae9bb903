//! `jointloan`: reserves (floor, warning), loans, split disbursement and repayment. Positions
//! and warnings are in `positions`.
//!
//! Rounding: the partner part of an amount is `floor(amount × bps / 10_000)`, the lead gets the
//! remainder. A repayment that clears the principal pays the partner exactly its outstanding
//! part, so over a loan's life each funder gets back exactly the principal it lent.

use super::transfers::Role;
use super::{digest_tag, Ledger, LoanState, ReserveState, INDEX_NONE};
use crate::codec::Record;
use crate::types::{
    Disbursement, InstitutionId, Loan, Repayment, Reserve, ResultCode, Transfer, BPS_ONE,
};

/// The partner part of `amount`: `floor(amount × bps / 10_000)`, computed without overflow.
pub fn partner_part(amount: u128, partner_share_bps: u16) -> u128 {
    assert!(partner_share_bps <= BPS_ONE);
    let bps = u128::from(partner_share_bps);
    let one = u128::from(BPS_ONE);
    let part = (amount / one) * bps + (amount % one) * bps / one;
    assert!(part <= amount);
    part
}

/// `transfer_user_data_64` marks of loan legs, so a loan's transfers are recognisable in history.
pub const LEG_DISBURSE_PARTNER: u64 = 1;
pub const LEG_DISBURSE_LEAD: u64 = 2;
pub const LEG_REPAY_PARTNER: u64 = 3;
pub const LEG_REPAY_LEAD: u64 = 4;

impl Ledger {
    /// Registers a reserve (by its owner or the operator).
    pub(crate) fn reserve_create(
        &mut self,
        requester: InstitutionId,
        event: &Reserve,
        timestamp: u64,
    ) -> ResultCode {
        if event.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        if event.account_id == 0 {
            return ResultCode::IdMustNotBeZero;
        }
        if event.institution != requester && requester != self.config.operator {
            return ResultCode::InstitutionMustMatchRequester;
        }
        let Some(account) = self.account_get(event.account_id) else {
            return ResultCode::ReserveAccountNotFound;
        };
        if self.accounts[account as usize].institution != event.institution {
            return ResultCode::ReserveAccountNotOwned;
        }
        let existing = self.account_meta[account as usize].reserve;
        if existing != INDEX_NONE {
            let record = &self.reserves[existing as usize].record;
            let same = record.floor == event.floor && record.warning == event.warning;
            return if same {
                ResultCode::Exists
            } else {
                ResultCode::ExistsWithDifferentFields
            };
        }
        if event.warning < event.floor {
            return ResultCode::ReserveWarningBelowFloor;
        }
        let record = Reserve {
            timestamp,
            ..*event
        };
        self.account_meta[account as usize].reserve = self.reserves.len() as u32;
        self.reserves.push(ReserveState {
            record,
            account,
            committed: 0,
            loans_count: 0,
        });
        self.digest_mix(digest_tag::RESERVE, &record.to_bytes());
        ResultCode::Ok
    }

    /// Creates a loan (by the partner whose reserve it commits, or the operator).
    pub(crate) fn loan_create(
        &mut self,
        requester: InstitutionId,
        event: &Loan,
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
        if requester != event.partner && requester != self.config.operator {
            return ResultCode::LoanCreateNotAuthorized;
        }
        if let Some(index) = self.loan_index.get(event.id) {
            let existing = Loan {
                timestamp: 0,
                ..self.loans[index as usize].record
            };
            return if existing == *event {
                ResultCode::Exists
            } else {
                ResultCode::ExistsWithDifferentFields
            };
        }
        let reserve = match self.loan_check(event) {
            Ok(reserve) => reserve,
            Err(code) => return code,
        };
        let record = Loan {
            timestamp,
            ..*event
        };
        self.loan_index
            .insert_new(record.id, self.loans.len() as u32);
        self.loans.push(LoanState {
            record,
            principal_disbursed: 0,
            principal_outstanding: 0,
            partner_outstanding: 0,
            interest_repaid: 0,
        });
        self.reserves[reserve as usize].loans_count += 1;
        self.digest_mix(digest_tag::LOAN, &record.to_bytes());
        ResultCode::Ok
    }

    /// Checks a loan's terms and accounts; returns its reserve's index.
    fn loan_check(&self, event: &Loan) -> Result<u32, ResultCode> {
        if event.partner_share_bps == 0 || event.partner_share_bps >= BPS_ONE {
            return Err(ResultCode::LoanPartnerShareInvalid);
        }
        if event.lead == 0 || event.partner == 0 {
            return Err(ResultCode::InstitutionMustNotBeZero);
        }
        if event.lead == event.partner {
            return Err(ResultCode::LoanLeadIsPartner);
        }
        if event.principal_max == 0 {
            return Err(ResultCode::LoanPrincipalMaxMustNotBeZero);
        }
        if event.ledger == 0 {
            return Err(ResultCode::LedgerMustNotBeZero);
        }
        let ids = [
            event.borrower_account_id,
            event.reserve_account_id,
            event.funding_account_id,
        ];
        if ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
            return Err(ResultCode::LoanAccountsMustBeDifferent);
        }
        let borrower = self
            .account_get(ids[0])
            .ok_or(ResultCode::LoanBorrowerNotFound)?;
        let reserve_account = self
            .account_get(ids[1])
            .ok_or(ResultCode::LoanReserveNotFound)?;
        let funding = self
            .account_get(ids[2])
            .ok_or(ResultCode::LoanFundingNotFound)?;
        for account in [borrower, reserve_account, funding] {
            if self.accounts[account as usize].ledger != event.ledger {
                return Err(ResultCode::LoanAccountsMustHaveTheLoanLedger);
            }
        }
        let reserve = self.account_meta[reserve_account as usize].reserve;
        if reserve == INDEX_NONE {
            return Err(ResultCode::LoanReserveNotRegistered);
        }
        if self.accounts[reserve_account as usize].institution != event.partner {
            return Err(ResultCode::LoanReserveNotOwnedByPartner);
        }
        if self.accounts[funding as usize].institution != event.lead {
            return Err(ResultCode::LoanFundingNotOwnedByLead);
        }
        if self.accounts[borrower as usize].institution != event.lead {
            return Err(ResultCode::LoanBorrowerNotOwnedByLead);
        }
        Ok(reserve)
    }

    /// Finds the loan and checks the requester is its lead and the two transfer ids.
    fn loan_event_check(
        &self,
        requester: InstitutionId,
        loan_id: u128,
        ids: [u128; 2],
    ) -> Result<u32, ResultCode> {
        if ids[0] == 0 || ids[1] == 0 {
            return Err(ResultCode::IdMustNotBeZero);
        }
        if ids[0] == u128::MAX || ids[1] == u128::MAX {
            return Err(ResultCode::IdMustNotBeIntMax);
        }
        if ids[0] == ids[1] {
            return Err(ResultCode::TransferIdsMustBeDifferent);
        }
        let loan = self
            .loan_index
            .get(loan_id)
            .ok_or(ResultCode::LoanNotFound)?;
        if self.loans[loan as usize].record.lead != requester {
            return Err(ResultCode::NotLoanLead);
        }
        Ok(loan)
    }

    /// Disburses: partner reserve → borrower (partner part), lead funding → borrower (the rest).
    pub(crate) fn disburse(
        &mut self,
        requester: InstitutionId,
        event: &Disbursement,
        timestamp: u64,
    ) -> ResultCode {
        if event.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        let ids = [event.partner_transfer_id, event.lead_transfer_id];
        let loan_index = match self.loan_event_check(requester, event.loan_id, ids) {
            Ok(index) => index,
            Err(code) => return code,
        };
        let loan = self.loans[loan_index as usize];
        let partner_amount = partner_part(event.amount, loan.record.partner_share_bps);
        let lead_amount = event.amount - partner_amount;
        let legs = [
            leg(
                &loan.record,
                event.partner_transfer_id,
                loan.record.reserve_account_id,
                loan.record.borrower_account_id,
                partner_amount,
                event.code,
                LEG_DISBURSE_PARTNER,
            ),
            leg(
                &loan.record,
                event.lead_transfer_id,
                loan.record.funding_account_id,
                loan.record.borrower_account_id,
                lead_amount,
                event.code,
                LEG_DISBURSE_LEAD,
            ),
        ];
        if let Some(code) = self.legs_exist(&legs, None) {
            return code;
        }
        if partner_amount == 0 || lead_amount == 0 {
            return ResultCode::SplitLegRoundsToZero;
        }
        let disbursed = loan.principal_disbursed.checked_add(event.amount);
        if disbursed.is_none_or(|total| total > loan.record.principal_max) {
            return ResultCode::DisbursementExceedsLoanLimit;
        }
        let code = self.legs_apply(requester, &legs, timestamp);
        if !code.is_ok() {
            return code;
        }
        let state = &mut self.loans[loan_index as usize];
        state.principal_disbursed += event.amount;
        state.principal_outstanding += event.amount;
        state.partner_outstanding += partner_amount;
        let reserve = self.reserve_of(&loan.record);
        self.reserves[reserve as usize].committed += partner_amount;
        code
    }

    /// Repays principal and interest: borrower → reserve (partner part), borrower → funding (rest).
    pub(crate) fn repay(
        &mut self,
        requester: InstitutionId,
        event: &Repayment,
        timestamp: u64,
    ) -> ResultCode {
        if event.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        let ids = [event.partner_transfer_id, event.lead_transfer_id];
        let loan_index = match self.loan_event_check(requester, event.loan_id, ids) {
            Ok(index) => index,
            Err(code) => return code,
        };
        let loan = self.loans[loan_index as usize];
        let bps = loan.record.partner_share_bps;
        let partner_principal = if event.principal == loan.principal_outstanding {
            loan.partner_outstanding // The final repayment settles the partner exactly.
        } else {
            partner_part(event.principal, bps).min(loan.partner_outstanding)
        };
        let partner_interest = partner_part(event.interest, bps);
        let total = event.principal.checked_add(event.interest);
        let Some(total) = total else {
            return ResultCode::OverflowsCredits;
        };
        let partner_amount = partner_principal + partner_interest;
        let lead_amount = total - partner_amount.min(total);
        let record = &loan.record;
        let legs = [
            leg(
                record,
                event.partner_transfer_id,
                record.borrower_account_id,
                record.reserve_account_id,
                partner_amount,
                event.code,
                LEG_REPAY_PARTNER,
            ),
            leg(
                record,
                event.lead_transfer_id,
                record.borrower_account_id,
                record.funding_account_id,
                lead_amount,
                event.code,
                LEG_REPAY_LEAD,
            ),
        ];
        if let Some(code) = self.legs_exist(&legs, Some(total)) {
            return code;
        }
        if total == 0 {
            return ResultCode::RepaymentMustNotBeZero;
        }
        if event.principal > loan.principal_outstanding {
            return ResultCode::RepaymentExceedsOutstanding;
        }
        if partner_amount == 0 || lead_amount == 0 {
            return ResultCode::SplitLegRoundsToZero;
        }
        let code = self.legs_apply(requester, &legs, timestamp);
        if !code.is_ok() {
            return code;
        }
        let state = &mut self.loans[loan_index as usize];
        state.principal_outstanding -= event.principal;
        state.partner_outstanding -= partner_principal;
        state.interest_repaid = state.interest_repaid.saturating_add(event.interest);
        let reserve = self.reserve_of(&loan.record);
        self.reserves[reserve as usize].committed -= partner_principal;
        code
    }

    /// If both legs exist already: `Exists` when both match, else `ExistsWithDifferentFields`.
    /// A repayment's split depends on the loan's state when it was applied, so for a repayment
    /// (`total` given) the legs must match in everything but their split and sum to `total`.
    fn legs_exist(&self, legs: &[Transfer; 2], total: Option<u128>) -> Option<ResultCode> {
        let found = legs.map(|leg| self.transfer_get(leg.id));
        match found {
            [None, None] => None,
            [Some(first), Some(second)] => {
                let existing = [
                    self.transfers[first as usize],
                    self.transfers[second as usize],
                ];
                let mut expected = *legs;
                if let Some(total) = total {
                    expected[0].amount = existing[0].amount;
                    expected[1].amount = existing[1].amount;
                    if existing[0].amount.checked_add(existing[1].amount) != Some(total) {
                        return Some(ResultCode::ExistsWithDifferentFields);
                    }
                }
                let codes = [
                    super::transfers::transfer_exists(&expected[0], &existing[0]),
                    super::transfers::transfer_exists(&expected[1], &existing[1]),
                ];
                let same = codes.iter().all(|code| *code == ResultCode::Exists);
                Some(if same {
                    ResultCode::Exists
                } else {
                    ResultCode::ExistsWithDifferentFields
                })
            }
            _ => Some(ResultCode::ExistsWithDifferentFields),
        }
    }

    /// Applies both legs all-or-nothing; returns the first failure, or a warning, or `Ok`.
    fn legs_apply(
        &mut self,
        requester: InstitutionId,
        legs: &[Transfer; 2],
        timestamp: u64,
    ) -> ResultCode {
        let digest_before = self.digest;
        self.undo_begin();
        let mut outcome = ResultCode::Ok;
        for leg in legs {
            let code = self.transfer_create(requester, leg, timestamp, Role::LoanLeg);
            if !code.is_ok() {
                self.undo_rollback(digest_before);
                return code;
            }
            if code != ResultCode::Ok {
                outcome = code;
            }
        }
        self.undo_commit();
        outcome
    }

    fn reserve_of(&self, loan: &Loan) -> u32 {
        let account = self
            .account_get(loan.reserve_account_id)
            .expect("loan: reserve account");
        let reserve = self.account_meta[account as usize].reserve;
        assert!(reserve != INDEX_NONE, "loan: reserve not registered");
        reserve
    }
}

/// One leg of a loan event as a plain transfer record made by the lead.
fn leg(
    loan: &Loan,
    id: u128,
    debit: u128,
    credit: u128,
    amount: u128,
    code: u16,
    kind: u64,
) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        user_data_128: loan.id,
        user_data_64: kind,
        institution: loan.lead,
        ledger: loan.ledger,
        code: if code == 0 { 1 } else { code },
        ..Transfer::default()
    }
}
