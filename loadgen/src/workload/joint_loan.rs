//! The joint-loan workload: a lead bank and partner banks fund loans from reserve accounts.
//!
//! Setup first (reserve accounts, borrower accounts, loans, opening top-ups), then an endless
//! mix of top-ups, disbursements, repayments and statements. The generator keeps the ledger's
//! books itself so every stream is internally consistent: a disbursement never overdraws a
//! reserve (a top-up is emitted first) and never takes the outstanding principal past the
//! loan's limit, a repayment never exceeds the outstanding principal (so it always follows a
//! disbursement), and a statement covers the period since the account's previous statement.
//! Loans are credit lines (like WeBank's Weilidai). The ledger caps what a loan disburses over
//! its life at its limit, so a used-up line with nothing outstanding is renewed as a new loan
//! (a `create_loan` with the next id after the initial `loans`, same parties and limit).

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dist::{exponential_gap_ns, weighted_index, LogNormal, Zipf};
use crate::op::{AccountKind, Cents, InstitutionId, Op, TraceEvent, SHARE_BPS_FULL};

pub const INSTITUTIONS_MAX: u16 = 1024;
pub const LOANS_MAX: u64 = 10_000_000;
pub const RESERVES_PER_INSTITUTION_MAX: u64 = 1024;
/// Smallest disbursement and smallest principal left outstanding (100.00): with a partner share
/// of 1..=9,999 bps neither leg of a split then rounds to zero (the ledger refuses that).
/// Highest reserve floor (10,000,000.00): top-ups are sized for floors well below that.
pub const RESERVE_FLOOR_MAX: Cents = 1_000_000_000;
pub const LOAN_AMOUNT_MIN: Cents = 10_000;

#[derive(Clone, Debug, serde::Serialize)]
pub struct JointLoanConfig {
    pub seed: u64,
    /// Institution 0 is the lead bank; at least one partner.
    pub institutions: u16,
    pub reserves_per_institution: u64,
    pub loans: u64,
    /// Zipf exponent for hot loans and statement accounts (0 = uniform).
    pub zipf_exponent: f64,
    /// Share of each loan the partner funds, in basis points (WeBank's partners: about 80%).
    pub partner_share_bps: u16,
    /// Simulated arrival rate; timestamps are Poisson at this rate.
    pub events_per_second: f64,
    /// Steady-state mix weights: top-up, disburse, repay, statement.
    pub mix: [u32; 4],
    /// Balance no disbursement may take a reserve below (the ledger's reserve floor): the
    /// generator tops a reserve up first. Give the mapping the same floor.
    pub reserve_floor: Cents,
}

impl Default for JointLoanConfig {
    fn default() -> Self {
        JointLoanConfig {
            seed: 1,
            institutions: 4,
            reserves_per_institution: 4,
            loans: 10_000,
            zipf_exponent: 1.0,
            partner_share_bps: 8_000,
            events_per_second: 1_000.0,
            mix: [5, 35, 40, 20],
            reserve_floor: 0,
        }
    }
}

impl JointLoanConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=INSTITUTIONS_MAX).contains(&self.institutions) {
            return Err(format!(
                "institutions must be 2..={INSTITUTIONS_MAX} (a lead and a partner)"
            ));
        }
        if !(1..=RESERVES_PER_INSTITUTION_MAX).contains(&self.reserves_per_institution) {
            return Err(format!(
                "reserves per institution must be 1..={RESERVES_PER_INSTITUTION_MAX}"
            ));
        }
        if !(1..=LOANS_MAX).contains(&self.loans) {
            return Err(format!("loans must be 1..={LOANS_MAX}"));
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0) {
            return Err("zipf exponent must be >= 0".into());
        }
        if self.partner_share_bps > SHARE_BPS_FULL {
            return Err(format!("partner share must be <= {SHARE_BPS_FULL} bps"));
        }
        if !(self.events_per_second.is_finite() && self.events_per_second > 0.0) {
            return Err("events per second must be > 0".into());
        }
        if self.reserve_floor > RESERVE_FLOOR_MAX {
            return Err(format!(
                "reserve floor must be <= {RESERVE_FLOOR_MAX} cents"
            ));
        }
        if self.mix.iter().all(|&w| w == 0) {
            return Err("the op mix must have a non-zero weight".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Loan {
    /// The current loan id of this credit line (renewed when its limit is used up).
    id: u64,
    borrower: u64,
    lead_reserve: u64,
    partner_reserve: u64,
    limit: Cents,
    /// Principal disbursed over the loan's life: the ledger caps it at the limit.
    disbursed: Cents,
    outstanding: Cents,
    /// The partner's part of `outstanding`, kept exactly as the ledger keeps it.
    partner_outstanding: Cents,
}

/// Streaming generator; `next()` never returns `None`.
pub struct JointLoan {
    config: JointLoanConfig,
    rng: ChaCha8Rng,
    clock_ns: u64,
    /// Events decided but not yet returned: setup, then any top-up a disbursement needs.
    pending: VecDeque<(InstitutionId, Op)>,
    loans: Vec<Loan>,
    /// Id of the next renewed loan (renewals get ids after the initial `loans`).
    loan_id_next: u64,
    reserve_balance: Vec<Cents>,
    /// End of each account's last statement period, by account index.
    statement_end_ns: Vec<u64>,
    hot_loans: Zipf,
    hot_accounts: Zipf,
    loan_size: LogNormal,
    top_up_size: LogNormal,
}

/// Account ids: reserves first (1-based), then one borrower account per loan.
fn reserve_account(c: &JointLoanConfig, institution: u16, r: u64) -> u64 {
    1 + u64::from(institution) * c.reserves_per_institution + r
}

impl JointLoan {
    pub fn new(config: JointLoanConfig) -> Result<JointLoan, String> {
        config.validate()?;
        let reserves = u64::from(config.institutions) * config.reserves_per_institution;
        let accounts = (reserves + config.loans) as usize;
        let mut g = JointLoan {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            clock_ns: 0,
            pending: VecDeque::new(),
            loan_id_next: config.loans + 1,
            loans: Vec::with_capacity(config.loans as usize),
            reserve_balance: vec![0; reserves as usize],
            statement_end_ns: vec![0; accounts],
            hot_loans: Zipf::new(config.loans as usize, config.zipf_exponent),
            hot_accounts: Zipf::new(accounts, config.zipf_exponent),
            // Consumer joint loans: median 30,000.00, long right tail, 1,000.00 to 5,000,000.00.
            loan_size: LogNormal::new(3_000_000, 1.0, 100_000, 500_000_000),
            top_up_size: LogNormal::new(500_000_000, 0.5, 10_000_000, 50_000_000_000),
            config,
        };
        g.plan_setup();
        Ok(g)
    }

    fn plan_setup(&mut self) {
        let c = self.config.clone();
        for i in 0..c.institutions {
            for r in 0..c.reserves_per_institution {
                let account = reserve_account(&c, i, r);
                self.pending.push_back((
                    i,
                    Op::CreateAccount {
                        account,
                        kind: AccountKind::Reserve,
                    },
                ));
            }
        }
        let first_borrower = u64::from(c.institutions) * c.reserves_per_institution + 1;
        for l in 0..c.loans {
            let partner = 1 + (l % u64::from(c.institutions - 1)) as u16;
            let loan = Loan {
                borrower: first_borrower + l,
                lead_reserve: reserve_account(
                    &c,
                    0,
                    self.rng.gen_range(0..c.reserves_per_institution),
                ),
                partner_reserve: reserve_account(
                    &c,
                    partner,
                    self.rng.gen_range(0..c.reserves_per_institution),
                ),
                limit: self.loan_size.sample(&mut self.rng),
                id: l + 1,
                disbursed: 0,
                outstanding: 0,
                partner_outstanding: 0,
            };
            self.loans.push(loan);
            let create = Op::CreateAccount {
                account: loan.borrower,
                kind: AccountKind::Borrower,
            };
            self.pending.push_back((0, create));
        }
        for loan in &self.loans {
            self.pending.push_back((0, Self::create_loan(&c, loan)));
        }
        for reserve in 0..self.reserve_balance.len() as u64 {
            let op = self.top_up(reserve + 1);
            self.pending
                .push_back((self.reserve_owner(reserve + 1), op));
        }
    }

    fn create_loan(c: &JointLoanConfig, loan: &Loan) -> Op {
        Op::CreateLoan {
            loan: loan.id,
            borrower: loan.borrower,
            lead_reserve: loan.lead_reserve,
            partner_reserve: loan.partner_reserve,
            limit: loan.limit,
            partner_share_bps: c.partner_share_bps,
        }
    }

    /// The ledger caps a loan's total disbursed principal at its limit, so a used-up credit
    /// line with nothing outstanding is renewed as a new loan (same parties and limit).
    fn renew_loan(&mut self, l: usize) {
        let loan = &mut self.loans[l];
        assert_eq!(loan.outstanding, 0);
        loan.id = self.loan_id_next;
        loan.disbursed = 0;
        loan.partner_outstanding = 0;
        self.loan_id_next += 1;
        let op = Self::create_loan(&self.config, &self.loans[l]);
        self.pending.push_back((0, op));
    }

    fn reserve_owner(&self, account: u64) -> InstitutionId {
        ((account - 1) / self.config.reserves_per_institution) as InstitutionId
    }

    fn top_up(&mut self, account: u64) -> Op {
        let amount = self.top_up_size.sample(&mut self.rng);
        let balance = &mut self.reserve_balance[(account - 1) as usize];
        *balance = balance.saturating_add(amount);
        Op::TopUp {
            reserve_account: account,
            amount,
        }
    }

    /// Plans the next steady-state event(s) into `pending`.
    fn plan_steady(&mut self) {
        match weighted_index(&mut self.rng, &self.config.mix) {
            0 => {
                let reserves = self.reserve_balance.len() as u64;
                let account = self.rng.gen_range(1..=reserves);
                let op = self.top_up(account);
                self.pending.push_back((self.reserve_owner(account), op));
            }
            1 => {
                let l = self.hot_loans.sample(&mut self.rng);
                self.plan_disburse_of(l);
            }
            2 => {
                let l = self.hot_loans.sample(&mut self.rng);
                self.plan_repay_of(l);
            }
            _ => self.plan_statement(),
        }
    }

    /// `floor(amount × bps / 10_000)`: the ledger's own rounding (`engine::ledger::partner_part`).
    fn partner_part(&self, amount: Cents) -> Cents {
        let part = engine::ledger::partner_part(u128::from(amount), self.config.partner_share_bps);
        Cents::try_from(part).expect("a part of a u64 amount fits in u64")
    }

    fn plan_disburse_of(&mut self, l: usize) {
        let mut loan = self.loans[l];
        if loan.limit - loan.disbursed < LOAN_AMOUNT_MIN {
            if loan.outstanding > 0 {
                // Used up: the borrower repays instead (outstanding >= LOAN_AMOUNT_MIN).
                return self.plan_repay_of(l);
            }
            self.renew_loan(l);
            loan = self.loans[l];
        }
        let remaining = loan.limit - loan.disbursed;
        // One to three tranches: 30%..100% of the limit, never past it.
        let tranche = (loan.limit as f64 * self.rng.gen_range(0.3..=1.0)) as Cents;
        let amount = tranche.clamp(LOAN_AMOUNT_MIN, remaining);
        let partner = self.partner_part(amount);
        let floor = self.config.reserve_floor;
        for (reserve, part) in [
            (loan.partner_reserve, partner),
            (loan.lead_reserve, amount - partner),
        ] {
            while self.reserve_balance[(reserve - 1) as usize] < part.saturating_add(floor) {
                let op = self.top_up(reserve);
                self.pending.push_back((self.reserve_owner(reserve), op));
            }
            self.reserve_balance[(reserve - 1) as usize] -= part;
        }
        let loan = &mut self.loans[l];
        loan.disbursed += amount;
        loan.outstanding += amount;
        loan.partner_outstanding += partner;
        assert!(
            loan.disbursed <= loan.limit,
            "disbursed past the loan limit"
        );
        let loan = loan.id;
        self.pending.push_back((0, Op::Disburse { loan, amount }));
    }

    fn plan_repay_of(&mut self, l: usize) {
        let loan = self.loans[l];
        if loan.outstanding == 0 {
            // Repayments only after disbursements: a loan with nothing out is drawn first
            // (limit >= LOAN_AMOUNT_MIN, so this does not come back here).
            return self.plan_disburse_of(l);
        }
        // Instalments: 10%..100% of the outstanding principal, never leaving less than
        // LOAN_AMOUNT_MIN outstanding; monthly interest 0.5%..1.5%.
        let fraction = self.rng.gen_range(0.1..=1.0);
        let mut principal =
            ((loan.outstanding as f64 * fraction) as Cents).clamp(1, loan.outstanding);
        if loan.outstanding - principal < LOAN_AMOUNT_MIN {
            principal = loan.outstanding;
        }
        let interest = (principal as f64 * self.rng.gen_range(0.005..0.015)) as Cents;
        // The ledger's split: the partner gets its share of the principal (all of its
        // outstanding part on the final repayment) plus its share of the interest.
        let partner_principal = if principal == loan.outstanding {
            loan.partner_outstanding
        } else {
            self.partner_part(principal).min(loan.partner_outstanding)
        };
        let partner = partner_principal + self.partner_part(interest);
        self.reserve_balance[(loan.partner_reserve - 1) as usize] += partner;
        self.reserve_balance[(loan.lead_reserve - 1) as usize] += principal + interest - partner;
        let loan = &mut self.loans[l];
        loan.outstanding -= principal;
        loan.partner_outstanding -= partner_principal;
        assert!(loan.outstanding == 0 || loan.outstanding >= LOAN_AMOUNT_MIN);
        let loan = loan.id;
        self.pending.push_back((
            0,
            Op::Repay {
                loan,
                principal,
                interest,
            },
        ));
    }

    fn plan_statement(&mut self) {
        let index = self.hot_accounts.sample(&mut self.rng);
        let account = index as u64 + 1;
        let reserves = self.reserve_balance.len() as u64;
        let owner = if account <= reserves {
            self.reserve_owner(account)
        } else {
            0
        };
        let period_start_ns = self.statement_end_ns[index];
        let period_end_ns = self.clock_ns.max(period_start_ns);
        self.statement_end_ns[index] = period_end_ns;
        self.pending.push_back((
            owner,
            Op::Statement {
                account,
                period_start_ns,
                period_end_ns,
            },
        ));
    }
}

impl Iterator for JointLoan {
    type Item = TraceEvent;

    fn next(&mut self) -> Option<TraceEvent> {
        while self.pending.is_empty() {
            self.plan_steady();
        }
        let (institution, op) = self.pending.pop_front()?;
        let mean_gap_ns = 1e9 / self.config.events_per_second;
        self.clock_ns += exponential_gap_ns(&mut self.rng, mean_gap_ns);
        debug_assert!(institution < self.config.institutions);
        Some(TraceEvent {
            timestamp_ns: self.clock_ns,
            institution,
            op,
        })
    }
}
