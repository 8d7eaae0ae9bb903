//! Ledger tests: one case per rule and result code (`cases`), behaviour (`behaviour`,
//! `jointloan`, `reconcile`, `queries`), codec and snapshots (`codec`), properties (`props`).

mod behaviour;
mod cases;
mod cases_loans;
mod cases_transfers;
mod codec;
mod jointloan;
mod props;
mod queries;
mod reconcile;

use super::{Batch, Events, Ledger, LedgerConfig};
use crate::types::{
    Account, Disbursement, EventResult, InstitutionId, Loan, Repayment, Reserve, ResultCode,
    Statement, Transfer, NS_PER_S,
};

pub(super) const OPERATOR: InstitutionId = 1;
pub(super) const LEAD: InstitutionId = 10;
pub(super) const PARTNER: InstitutionId = 20;
pub(super) const OTHER: InstitutionId = 30;

/// Fixture account ids (ledger 1 unless noted).
pub(super) const FUNDING: u128 = 101;
pub(super) const BORROWER: u128 = 102;
pub(super) const LEAD_CASH: u128 = 103;
pub(super) const RESERVE: u128 = 201;
pub(super) const PARTNER_CASH: u128 = 202;
pub(super) const OTHER_CASH: u128 = 301;
/// On ledger 2, owned by LEAD.
pub(super) const LEAD_LEDGER2: u128 = 901;
pub(super) const LOAN: u128 = 7001;
pub(super) const RESERVE_FLOOR: u128 = 1_000;
pub(super) const RESERVE_WARNING: u128 = 15_000;
pub(super) const RESERVE_FUNDS: u128 = 20_000;
pub(super) const FUNDING_FUNDS: u128 = 20_000;
pub(super) const PARTNER_BPS: u16 = 8_000;

/// A ledger with a clock: every batch is one second after the previous one.
pub(super) struct World {
    pub ledger: Ledger,
    pub clock_ns: u64,
}

pub(super) fn account(id: u128, institution: InstitutionId, ledger: u32, flags: u16) -> Account {
    Account {
        id,
        institution,
        ledger,
        code: 1,
        flags,
        ..Account::default()
    }
}

pub(super) fn transfer(
    id: u128,
    debit: u128,
    credit: u128,
    amount: u128,
    institution: InstitutionId,
) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        institution,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

pub(super) fn loan(id: u128) -> Loan {
    Loan {
        id,
        borrower_account_id: BORROWER,
        reserve_account_id: RESERVE,
        funding_account_id: FUNDING,
        principal_max: 10_000,
        lead: LEAD,
        partner: PARTNER,
        ledger: 1,
        partner_share_bps: PARTNER_BPS,
        ..Loan::default()
    }
}

pub(super) fn disbursement(ids: [u128; 2], loan_id: u128, amount: u128) -> Disbursement {
    Disbursement {
        partner_transfer_id: ids[0],
        lead_transfer_id: ids[1],
        loan_id,
        amount,
        ..Disbursement::default()
    }
}

pub(super) fn repayment(
    ids: [u128; 2],
    loan_id: u128,
    principal: u128,
    interest: u128,
) -> Repayment {
    Repayment {
        partner_transfer_id: ids[0],
        lead_transfer_id: ids[1],
        loan_id,
        principal,
        interest,
        ..Repayment::default()
    }
}

pub(super) fn reserve(
    account_id: u128,
    institution: InstitutionId,
    floor: u128,
    warning: u128,
) -> Reserve {
    Reserve {
        account_id,
        institution,
        floor,
        warning,
        ..Reserve::default()
    }
}

impl World {
    /// An empty ledger.
    pub fn empty() -> World {
        World {
            ledger: Ledger::new(LedgerConfig::new(OPERATOR)),
            clock_ns: 0,
        }
    }

    /// The consortium fixture: accounts, a funded reserve, funded lead funding, one loan.
    pub fn consortium() -> World {
        let mut world = World::empty();
        let accounts = vec![
            account(FUNDING, LEAD, 1, 0),
            account(BORROWER, LEAD, 1, 0),
            account(LEAD_CASH, LEAD, 1, 0),
            account(RESERVE, PARTNER, 1, 0),
            account(PARTNER_CASH, PARTNER, 1, 0),
            account(OTHER_CASH, OTHER, 1, 0),
            account(LEAD_LEDGER2, LEAD, 2, 0),
        ];
        world.expect_ok(OPERATOR, Events::CreateAccounts(accounts));
        let reserves = vec![reserve(RESERVE, PARTNER, RESERVE_FLOOR, RESERVE_WARNING)];
        world.expect_ok(PARTNER, Events::CreateReserves(reserves));
        let top_up = transfer(1, PARTNER_CASH, RESERVE, RESERVE_FUNDS, PARTNER);
        world.expect_ok(PARTNER, Events::TopUp(vec![top_up]));
        let funding = transfer(2, LEAD_CASH, FUNDING, FUNDING_FUNDS, LEAD);
        world.expect_ok(LEAD, Events::CreateTransfers(vec![funding]));
        world.expect_ok(PARTNER, Events::CreateLoans(vec![loan(LOAN)]));
        world
    }

    /// Applies one batch one second after the last.
    pub fn run(&mut self, requester: InstitutionId, events: Events) -> Vec<EventResult> {
        self.clock_ns += NS_PER_S;
        let batch = Batch {
            requester,
            timestamp_ns: self.clock_ns,
            events,
        };
        match self.ledger.apply(&batch) {
            Ok(reply) => reply.results().to_vec(),
            Err(error) => panic!("batch refused: {error}"),
        }
    }

    /// Applies a batch and returns one code per event (`Ok` where the reply lists nothing).
    pub fn codes(&mut self, requester: InstitutionId, events: Events) -> Vec<ResultCode> {
        let count = events.len();
        let mut codes = vec![ResultCode::Ok; count];
        for result in self.run(requester, events) {
            codes[result.index as usize] = result.code;
        }
        codes
    }

    /// Applies a single-event batch and returns its code.
    pub fn code(&mut self, requester: InstitutionId, events: Events) -> ResultCode {
        assert_eq!(events.len(), 1);
        self.codes(requester, events)[0]
    }

    pub fn expect_ok(&mut self, requester: InstitutionId, events: Events) {
        let results = self.run(requester, events);
        assert!(results.is_empty(), "expected success, got {results:?}");
    }

    pub fn account(&self, id: u128) -> Account {
        let index = self.ledger.account_get(id).expect("fixture account exists");
        self.ledger.accounts[index as usize]
    }

    /// credits_posted - debits_posted of an account.
    pub fn net(&self, id: u128) -> i128 {
        let account = self.account(id);
        account.credits_posted as i128 - account.debits_posted as i128
    }

    pub fn statement(&self, account_id: u128, start: u64, end: u64, ids: &[u128]) -> Statement {
        let figures = self.ledger.figures(
            self.ledger.account_get(account_id).expect("account"),
            start,
            end,
        );
        Statement {
            account_id,
            debits_total: figures.debits,
            credits_total: figures.credits,
            ids_digest: super::statement_digest(ids),
            period_start_ns: start,
            period_end_ns: end,
            transfer_count: ids.len() as u64,
            institution: self.account(account_id).institution,
            ..Statement::default()
        }
    }

    pub fn assert_conserved(&self) {
        let totals = self.ledger.totals();
        assert_eq!(totals.debits_posted, totals.credits_posted);
        assert_eq!(totals.debits_pending, totals.credits_pending);
    }
}
