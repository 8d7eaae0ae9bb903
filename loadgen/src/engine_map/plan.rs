//! Splits a loadgen batch into homogeneous groups (one operation, one requester) without
//! changing the outcome of any event.
//!
//! An engine event may move ahead of the groups between its own group's end and its trace
//! position only if it commutes with every event in them. Two events commute unless they touch
//! the same account or loan with conflicting accesses: creating something conflicts with every
//! use of it; crediting (or debiting an account with no limit) commutes with other such moves;
//! a debit checked against a reserve floor, a statement (which reads the period's history) and
//! a loan's principal bookkeeping conflict with any balance move of the same thing.

use engine::types::{InstitutionId, Operation, BATCH_EVENTS_MAX};

use super::{
    engine_institution, settlement_account, AccountInfo, LoanInfo, Mapper, ACCOUNT_CODE_BORROWER,
    ACCOUNT_CODE_OPERATING, ACCOUNT_CODE_RESERVE, ACCOUNT_CODE_SETTLEMENT, OPERATOR,
};
use crate::op::{AccountKind, Op, TraceEvent};

/// Source index of an engine event the mapping adds itself (settlement accounts).
pub const SOURCE_DERIVED: u32 = u32::MAX;
/// Most resources one engine event touches (a loan event: loan, borrower, reserve, funding).
const ACCESSES_MAX: usize = 4;
pub(super) const ACCESS_KINDS: usize = 6;
/// Resource key of a loan (accounts use their id, which stays below 2^127).
const LOAN_KEY_TAG: u128 = 1 << 127;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Needs the thing to exist (a loan reading its accounts).
    Exist = 0,
    Create = 1,
    /// A credit, or a debit of an account without a limit.
    Move = 2,
    /// A debit checked against a reserve floor.
    CheckedDebit = 3,
    /// A statement over the account's history.
    Observe = 4,
    /// A loan's principal bookkeeping (disbursement, repayment).
    Principal = 5,
}

pub(super) const ACCESS_ALL: [Access; ACCESS_KINDS] = [
    Access::Exist,
    Access::Create,
    Access::Move,
    Access::CheckedDebit,
    Access::Observe,
    Access::Principal,
];

pub(super) fn conflicts(a: Access, b: Access) -> bool {
    use Access::*;
    match (a, b) {
        (Create, _) | (_, Create) => true,
        (Exist, _) | (_, Exist) => false,
        (Move, Move) => false,
        _ => true,
    }
}

/// One engine event before ids, timestamps and statement figures are fixed.
#[derive(Clone, Copy, Debug)]
pub(super) enum Intent {
    Account {
        id: u128,
        owner: InstitutionId,
        code: u16,
    },
    Reserve {
        account: u128,
        owner: InstitutionId,
    },
    Loan {
        loan: u64,
        borrower: u128,
        partner_reserve: u128,
        lead_reserve: u128,
        limit: u128,
        bps: u16,
        lead: InstitutionId,
        partner: InstitutionId,
    },
    TopUp {
        reserve: u128,
        amount: u128,
        institution: InstitutionId,
    },
    Transfer {
        debit: u128,
        credit: u128,
        amount: u128,
        institution: InstitutionId,
    },
    Disburse {
        loan: u64,
        amount: u128,
    },
    Repay {
        loan: u64,
        principal: u128,
        interest: u128,
    },
    Statement {
        account: u128,
        institution: InstitutionId,
    },
}

/// One future request: its requester, operation and events (with their loadgen source index).
pub(super) struct Group {
    pub requester: InstitutionId,
    pub operation: Operation,
    pub items: Vec<(u32, Intent)>,
    /// Every (resource, access) of its events: what a pipelining target must order it by.
    pub footprint: Vec<(u128, Access)>,
}

type Accesses = ([(u128, Access); ACCESSES_MAX], usize);
/// Where an engine event goes: its (requester, operation), what it is, what it touches.
type Placement = ((InstitutionId, Operation), Intent, Accesses);

/// Per-batch scratch state, kept to reuse its allocations.
#[derive(Default)]
pub(super) struct Planner {
    /// Per resource: 1 + the last group index that touched it, per access kind (0 = none).
    touched: super::idhash::IdMap<u128, [u32; ACCESS_KINDS]>,
    last_group: super::idhash::IdMap<(InstitutionId, u8), usize>,
}

impl Planner {
    fn place(
        &mut self,
        groups: &mut Vec<Group>,
        key: (InstitutionId, Operation),
        source: u32,
        intent: Intent,
        accesses: Accesses,
    ) {
        let map_key = (key.0, key.1 as u8);
        let candidate =
            self.last_group.get(&map_key).copied().filter(|&g| {
                groups[g].items.len() < BATCH_EVENTS_MAX && self.may_join(g, &accesses)
            });
        let g = candidate.unwrap_or_else(|| {
            groups.push(Group {
                requester: key.0,
                operation: key.1,
                items: Vec::new(),
                footprint: Vec::new(),
            });
            groups.len() - 1
        });
        assert_eq!(groups[g].operation, key.1);
        groups[g].items.push((source, intent));
        groups[g]
            .footprint
            .extend_from_slice(&accesses.0[..accesses.1]);
        self.last_group.insert(map_key, g);
        for &(resource, access) in &accesses.0[..accesses.1] {
            let last = self.touched.entry(resource).or_default();
            let mark = g as u32 + 1;
            last[access as usize] = last[access as usize].max(mark);
        }
    }

    /// Whether an event with `accesses` may join group `g`: no later group touched any of its
    /// resources in a conflicting way.
    fn may_join(&self, g: usize, accesses: &Accesses) -> bool {
        accesses.0[..accesses.1].iter().all(|&(resource, access)| {
            let Some(last) = self.touched.get(&resource) else {
                return true;
            };
            ACCESS_ALL
                .iter()
                .filter(|&&other| conflicts(access, other))
                .all(|&other| last[other as usize] as usize <= g + 1)
        })
    }
}

fn accesses(list: &[(u128, Access)]) -> Accesses {
    assert!(list.len() <= ACCESSES_MAX);
    let mut out = [(0u128, Access::Exist); ACCESSES_MAX];
    out[..list.len()].copy_from_slice(list);
    (out, list.len())
}

impl Mapper {
    pub(super) fn plan(&mut self, batch: &[TraceEvent]) -> Vec<Group> {
        let mut planner = std::mem::take(&mut self.planner);
        planner.touched.clear();
        planner.last_group.clear();
        let mut groups = Vec::new();
        for (index, event) in batch.iter().enumerate() {
            let institution = engine_institution(event.institution);
            if !self.settlement_created[institution as usize] {
                self.settlement_created[institution as usize] = true;
                let id = settlement_account(institution);
                let intent = Intent::Account {
                    id,
                    owner: institution,
                    code: ACCOUNT_CODE_SETTLEMENT,
                };
                let key = (institution, Operation::CreateAccounts);
                planner.place(
                    &mut groups,
                    key,
                    SOURCE_DERIVED,
                    intent,
                    accesses(&[(id, Access::Create)]),
                );
            }
            self.plan_event(
                &mut planner,
                &mut groups,
                index as u32,
                institution,
                &event.op,
            );
        }
        self.planner = planner;
        groups
    }

    fn move_of(&self, account: u128, debit: bool) -> Access {
        let reserve = self.accounts.get(&account).is_some_and(|a| a.reserve);
        if debit && reserve {
            Access::CheckedDebit
        } else {
            Access::Move
        }
    }

    fn plan_event(
        &mut self,
        planner: &mut Planner,
        groups: &mut Vec<Group>,
        source: u32,
        institution: InstitutionId,
        op: &Op,
    ) {
        let mut placements = Vec::with_capacity(2);
        match *op {
            Op::CreateAccount { account, kind } => {
                self.plan_account(institution, self.account_id(account), kind, &mut placements)
            }
            Op::CreateLoan { .. } => placements.push(self.plan_loan(institution, op)),
            _ => placements.push(self.plan_steady(institution, op)),
        }
        for (key, intent, acc) in placements {
            planner.place(groups, key, source, intent, acc);
        }
    }

    fn plan_account(
        &mut self,
        owner: InstitutionId,
        id: u128,
        kind: AccountKind,
        out: &mut Vec<Placement>,
    ) {
        let code = match kind {
            AccountKind::Reserve => ACCOUNT_CODE_RESERVE,
            AccountKind::Borrower => ACCOUNT_CODE_BORROWER,
            AccountKind::Operating => ACCOUNT_CODE_OPERATING,
        };
        let reserve = kind == AccountKind::Reserve;
        self.accounts.insert(id, AccountInfo { owner, reserve });
        let acc = accesses(&[(id, Access::Create)]);
        let intent = Intent::Account { id, owner, code };
        out.push(((owner, Operation::CreateAccounts), intent, acc));
        if reserve {
            let intent = Intent::Reserve { account: id, owner };
            out.push(((owner, Operation::CreateReserves), intent, acc));
        }
    }

    fn plan_loan(&mut self, lead: InstitutionId, op: &Op) -> Placement {
        let Op::CreateLoan {
            loan,
            borrower,
            lead_reserve,
            partner_reserve,
            limit,
            partner_share_bps,
        } = *op
        else {
            unreachable!("plan_loan takes create_loan events only")
        };
        let (borrower, funding, reserve) = (
            self.account_id(borrower),
            self.account_id(lead_reserve),
            self.account_id(partner_reserve),
        );
        // The partner commits its reserve, so it creates the loan (the operator if the reserve
        // is unknown: the ledger then refuses it with a precise code).
        let partner = self.accounts.get(&reserve).map_or(OPERATOR, |a| a.owner);
        let bps = partner_share_bps;
        let info = LoanInfo {
            borrower,
            reserve,
            funding,
            bps,
            outstanding: 0,
            partner_outstanding: 0,
        };
        self.loans.insert(loan, info);
        let limit = u128::from(limit);
        let intent = Intent::Loan {
            loan,
            borrower,
            partner_reserve: reserve,
            lead_reserve: funding,
            limit,
            bps,
            lead,
            partner,
        };
        let acc = accesses(&[
            (LOAN_KEY_TAG | u128::from(loan), Access::Create),
            (borrower, Access::Exist),
            (reserve, Access::Exist),
            (funding, Access::Exist),
        ]);
        ((partner, Operation::CreateLoans), intent, acc)
    }

    /// Top-ups, loan events, statements and transfers: always by the event's institution.
    fn plan_steady(&self, institution: InstitutionId, op: &Op) -> Placement {
        let (operation, intent, acc) = match *op {
            Op::TopUp {
                reserve_account,
                amount,
            } => {
                let reserve = self.account_id(reserve_account);
                let amount = u128::from(amount);
                // The settlement account has no limit: top-ups of one institution commute.
                let settlement = settlement_account(institution);
                let acc = accesses(&[(reserve, Access::Move), (settlement, Access::Move)]);
                (
                    Operation::TopUp,
                    Intent::TopUp {
                        reserve,
                        amount,
                        institution,
                    },
                    acc,
                )
            }
            Op::Disburse { loan, amount } => {
                let intent = Intent::Disburse {
                    loan,
                    amount: u128::from(amount),
                };
                (Operation::Disburse, intent, self.loan_accesses(loan, true))
            }
            Op::Repay {
                loan,
                principal,
                interest,
            } => {
                let (principal, interest) = (u128::from(principal), u128::from(interest));
                let intent = Intent::Repay {
                    loan,
                    principal,
                    interest,
                };
                (Operation::Repay, intent, self.loan_accesses(loan, false))
            }
            Op::Statement { account, .. } => {
                let account = self.account_id(account);
                let acc = accesses(&[(account, Access::Observe)]);
                (
                    Operation::PostStatements,
                    Intent::Statement {
                        account,
                        institution,
                    },
                    acc,
                )
            }
            Op::Transfer {
                debit,
                credit,
                amount,
            } => {
                let (debit, credit) = (self.account_id(debit), self.account_id(credit));
                let acc = accesses(&[(debit, self.move_of(debit, true)), (credit, Access::Move)]);
                let amount = u128::from(amount);
                let intent = Intent::Transfer {
                    debit,
                    credit,
                    amount,
                    institution,
                };
                (Operation::CreateTransfers, intent, acc)
            }
            Op::CreateAccount { .. } | Op::CreateLoan { .. } => {
                unreachable!("setup events are planned by plan_account / plan_loan")
            }
        };
        ((institution, operation), intent, acc)
    }

    /// A disbursement debits both reserves (checked) and credits the borrower; a repayment
    /// debits the borrower (no limit) and credits both reserves.
    fn loan_accesses(&self, loan: u64, disburse: bool) -> Accesses {
        let key = (LOAN_KEY_TAG | u128::from(loan), Access::Principal);
        let Some(info) = self.loans.get(&loan) else {
            return accesses(&[key]);
        };
        let (reserve, funding) = if disburse {
            (
                self.move_of(info.reserve, true),
                self.move_of(info.funding, true),
            )
        } else {
            (Access::Move, Access::Move)
        };
        accesses(&[
            key,
            (info.borrower, Access::Move),
            (info.reserve, reserve),
            (info.funding, funding),
        ])
    }
}
