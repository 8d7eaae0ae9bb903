//! Encodes a planned group into a request body: fixes transfer ids, timestamps, loan splits
//! and statement figures, and remembers what it booked so a refusal can be undone.

use engine::codec::Record;
use engine::types::{
    Account, Disbursement, InstitutionId, Loan, Operation, Repayment, Reserve, Statement, Transfer,
    EVENT_BYTES,
};

use super::plan::{Group, Intent};
use super::{Mapper, TRANSFER_CODE_LOAN_LEG, TRANSFER_CODE_PLAIN, TRANSFER_CODE_TOP_UP};

pub use super::plan::SOURCE_DERIVED;

/// The ledger's split rounding, `floor(amount × bps / 10_000)`: the engine's own function, so
/// the mapping can never drift from it.
pub use engine::ledger::partner_part;

/// Something the mapping booked for one event of a request, undone if the ledger refuses it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Booking {
    Leg {
        event: u32,
        id: u128,
        accounts: (u128, u128),
        amount: u128,
        at_ns: u64,
    },
    Principal {
        event: u32,
        loan: u64,
        outstanding_delta: i128,
        partner_delta: i128,
    },
}

impl Booking {
    fn event(&self) -> u32 {
        match *self {
            Booking::Leg { event, .. } | Booking::Principal { event, .. } => event,
        }
    }
}

/// Where an event sits: its index in the request and its timestamp.
#[derive(Clone, Copy, Debug)]
struct Slot {
    index: u32,
    at_ns: u64,
}

/// One engine request, ready to sign (`signing::Keyring::sign`) or apply.
#[derive(Clone, Debug)]
pub struct EngineRequest {
    pub requester: InstitutionId,
    pub operation: Operation,
    /// The timestamp the mapping assumed: event `i` is stamped `timestamp_ns + i`.
    pub timestamp_ns: u64,
    /// `count × 128` bytes of records (`engine::codec`).
    pub body: Vec<u8>,
    /// Per engine event: index of its loadgen event in the batch, or `SOURCE_DERIVED`.
    pub sources: Vec<u32>,
    pub(super) bookings: Vec<Booking>,
    /// What its events touch and how (`ConflictIndex` orders pipelined requests by it).
    pub(super) footprint: Vec<(u128, super::plan::Access)>,
}

impl EngineRequest {
    pub fn events(&self) -> usize {
        self.sources.len()
    }
}

impl Mapper {
    pub(super) fn encode(&mut self, group: Group) -> EngineRequest {
        let count = group.items.len();
        assert!((1..=engine::types::BATCH_EVENTS_MAX).contains(&count));
        let timestamp_ns = self.clock_ns;
        self.clock_ns += count as u64;
        let mut request = EngineRequest {
            requester: group.requester,
            operation: group.operation,
            timestamp_ns,
            body: vec![0u8; count * EVENT_BYTES],
            sources: Vec::with_capacity(count),
            bookings: Vec::new(),
            footprint: group.footprint,
        };
        for (i, (source, intent)) in group.items.into_iter().enumerate() {
            let slot: &mut [u8; EVENT_BYTES] = (&mut request.body
                [i * EVENT_BYTES..(i + 1) * EVENT_BYTES])
                .try_into()
                .expect("EVENT_BYTES chunk");
            let at = timestamp_ns + i as u64;
            self.encode_intent(intent, i as u32, at, slot, &mut request.bookings);
            request.sources.push(source);
        }
        assert_eq!(request.body.len(), request.sources.len() * EVENT_BYTES);
        request
    }

    fn transfer_id(&mut self) -> u128 {
        let id = self.transfer_id_next;
        self.transfer_id_next += 1;
        id
    }

    fn encode_intent(
        &mut self,
        intent: Intent,
        index: u32,
        at_ns: u64,
        out: &mut [u8; EVENT_BYTES],
        bookings: &mut Vec<Booking>,
    ) {
        let event = Slot { index, at_ns };
        match intent {
            Intent::Account { .. } | Intent::Reserve { .. } | Intent::Loan { .. } => {
                self.encode_setup(intent, out)
            }
            Intent::TopUp {
                reserve,
                amount,
                institution,
            } => {
                let debit = super::settlement_account(institution);
                let t = (debit, reserve, amount, institution, TRANSFER_CODE_TOP_UP);
                self.encode_transfer(t, event, out, bookings);
            }
            Intent::Transfer {
                debit,
                credit,
                amount,
                institution,
            } => {
                let t = (debit, credit, amount, institution, TRANSFER_CODE_PLAIN);
                self.encode_transfer(t, event, out, bookings);
            }
            Intent::Disburse { loan, amount } => {
                self.encode_disburse(loan, amount, event, out, bookings)
            }
            Intent::Repay {
                loan,
                principal,
                interest,
            } => self.encode_repay(loan, (principal, interest), event, out, bookings),
            Intent::Statement {
                account,
                institution,
            } => self.encode_statement(account, institution, at_ns, out),
        }
    }

    /// Accounts, reserves and loans: records only, nothing booked.
    fn encode_setup(&self, intent: Intent, out: &mut [u8; EVENT_BYTES]) {
        let ledger = self.config.ledger;
        match intent {
            Intent::Account { id, owner, code } => Account {
                id,
                institution: owner,
                ledger,
                code,
                ..Account::default()
            }
            .encode(out),
            Intent::Reserve { account, owner } => Reserve {
                account_id: account,
                floor: self.config.reserve_floor,
                warning: self.config.reserve_warning,
                institution: owner,
                ..Reserve::default()
            }
            .encode(out),
            Intent::Loan {
                loan,
                borrower,
                partner_reserve,
                lead_reserve,
                limit,
                bps,
                lead,
                partner,
            } => Loan {
                id: self.loan_id(loan),
                borrower_account_id: borrower,
                reserve_account_id: partner_reserve,
                funding_account_id: lead_reserve,
                principal_max: limit,
                lead,
                partner,
                ledger,
                partner_share_bps: bps,
                ..Loan::default()
            }
            .encode(out),
            _ => unreachable!("encode_setup takes setup intents only"),
        }
    }

    fn encode_transfer(
        &mut self,
        (debit, credit, amount, institution, code): (u128, u128, u128, InstitutionId, u16),
        event: Slot,
        out: &mut [u8; EVENT_BYTES],
        bookings: &mut Vec<Booking>,
    ) {
        let id = self.transfer_id();
        Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            institution,
            ledger: self.config.ledger,
            code,
            ..Transfer::default()
        }
        .encode(out);
        if debit != credit && amount > 0 {
            self.leg(id, debit, credit, amount, event, bookings);
        }
    }

    fn leg(
        &mut self,
        id: u128,
        debit: u128,
        credit: u128,
        amount: u128,
        event: Slot,
        bookings: &mut Vec<Booking>,
    ) {
        if debit == credit {
            return; // The ledger refuses it (accounts_must_be_different); nothing to book.
        }
        self.books.book(id, debit, credit, amount);
        bookings.push(Booking::Leg {
            event: event.index,
            id,
            accounts: (debit, credit),
            amount,
            at_ns: event.at_ns,
        });
    }

    fn encode_disburse(
        &mut self,
        loan: u64,
        amount: u128,
        event: Slot,
        out: &mut [u8; EVENT_BYTES],
        bookings: &mut Vec<Booking>,
    ) {
        let (partner_id, lead_id) = (self.transfer_id(), self.transfer_id());
        Disbursement {
            partner_transfer_id: partner_id,
            lead_transfer_id: lead_id,
            loan_id: self.loan_id(loan),
            amount,
            code: TRANSFER_CODE_LOAN_LEG,
            ..Disbursement::default()
        }
        .encode(out);
        let Some(info) = self.loans.get(&loan).copied() else {
            return;
        };
        let partner = partner_part(amount, info.bps);
        self.leg(
            partner_id,
            info.reserve,
            info.borrower,
            partner,
            event,
            bookings,
        );
        self.leg(
            lead_id,
            info.funding,
            info.borrower,
            amount - partner,
            event,
            bookings,
        );
        self.principal(loan, event, amount as i128, partner as i128, bookings);
    }

    fn encode_repay(
        &mut self,
        loan: u64,
        (principal, interest): (u128, u128),
        event: Slot,
        out: &mut [u8; EVENT_BYTES],
        bookings: &mut Vec<Booking>,
    ) {
        let (partner_id, lead_id) = (self.transfer_id(), self.transfer_id());
        Repayment {
            partner_transfer_id: partner_id,
            lead_transfer_id: lead_id,
            loan_id: self.loan_id(loan),
            principal,
            interest,
            code: TRANSFER_CODE_LOAN_LEG,
            ..Repayment::default()
        }
        .encode(out);
        let Some(info) = self.loans.get(&loan).copied() else {
            return;
        };
        let bps = info.bps;
        // The ledger's split (engine::ledger::jointloan::repay).
        let partner_principal = if principal == info.outstanding {
            info.partner_outstanding
        } else {
            partner_part(principal, bps).min(info.partner_outstanding)
        };
        let partner = partner_principal + partner_part(interest, bps);
        let total = principal.saturating_add(interest);
        self.leg(
            partner_id,
            info.borrower,
            info.reserve,
            partner,
            event,
            bookings,
        );
        self.leg(
            lead_id,
            info.borrower,
            info.funding,
            total - partner.min(total),
            event,
            bookings,
        );
        self.principal(
            loan,
            event,
            -(principal as i128),
            -(partner_principal as i128),
            bookings,
        );
    }

    fn principal(
        &mut self,
        loan: u64,
        event: Slot,
        outstanding_delta: i128,
        partner_delta: i128,
        bookings: &mut Vec<Booking>,
    ) {
        if let Some(info) = self.loans.get_mut(&loan) {
            info.outstanding = info.outstanding.wrapping_add_signed(outstanding_delta);
            info.partner_outstanding = info.partner_outstanding.wrapping_add_signed(partner_delta);
        }
        bookings.push(Booking::Principal {
            event: event.index,
            loan,
            outstanding_delta,
            partner_delta,
        });
    }

    fn encode_statement(
        &mut self,
        account: u128,
        institution: InstitutionId,
        at_ns: u64,
        out: &mut [u8; EVENT_BYTES],
    ) {
        let book = self.books.close_period(account, at_ns);
        Statement {
            account_id: account,
            debits_total: book.debits,
            credits_total: book.credits,
            ids_digest: book.ids_digest,
            period_start_ns: book.period_start_ns,
            period_end_ns: at_ns,
            transfer_count: book.count,
            institution,
            ..Statement::default()
        }
        .encode(out);
    }

    /// Undoes what event `index` of `request` booked (the ledger refused it).
    pub(super) fn undo_event(&mut self, request: &super::EngineRequest, index: u32) {
        let from = request.bookings.partition_point(|b| b.event() < index);
        for booking in request.bookings[from..]
            .iter()
            .take_while(|b| b.event() == index)
        {
            match *booking {
                Booking::Leg {
                    id,
                    accounts,
                    amount,
                    at_ns,
                    ..
                } => self.books.unbook(id, accounts, amount, at_ns),
                Booking::Principal {
                    loan,
                    outstanding_delta,
                    partner_delta,
                    ..
                } => {
                    if let Some(info) = self.loans.get_mut(&loan) {
                        info.outstanding = info.outstanding.wrapping_add_signed(-outstanding_delta);
                        info.partner_outstanding =
                            info.partner_outstanding.wrapping_add_signed(-partner_delta);
                    }
                }
            }
        }
    }
}
