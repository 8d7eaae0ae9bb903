//! The statement books: per account, what moved since its last statement, as the institution's
//! own back office would keep it. A statement posts these figures and the ids' digest
//! (`engine::ledger::statement_digest`), so the ledger's reconciliation matches them exactly
//! when both sides booked the same transfers.

use std::collections::HashMap;

use engine::ledger::statement_digest;

use super::SETTLEMENT_ACCOUNT_BASE;

/// What one account booked since its previous statement.
#[derive(Clone, Debug, Default)]
pub(super) struct Book {
    pub debits: u128,
    pub credits: u128,
    pub ids: Vec<u128>,
    /// Start of the next statement's period: the end (own timestamp) of the previous one.
    pub period_start_ns: u64,
}

/// Something the mapping booked for one event of a request, undone if the ledger refuses it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Booking {
    Leg {
        event: u32,
        id: u128,
        debit: u128,
        credit: u128,
        amount: u128,
    },
    Principal {
        event: u32,
        loan: u64,
        outstanding_delta: i128,
        partner_delta: i128,
    },
}

impl Booking {
    pub fn event(&self) -> u32 {
        match *self {
            Booking::Leg { event, .. } | Booking::Principal { event, .. } => event,
        }
    }
}

#[derive(Default)]
pub(super) struct Books {
    accounts: HashMap<u128, Book>,
}

/// Settlement accounts never get statements: they are not booked (they see every top-up).
fn booked(account: u128) -> bool {
    account < SETTLEMENT_ACCOUNT_BASE
}

impl Books {
    pub fn book(&mut self, id: u128, debit: u128, credit: u128, amount: u128) {
        assert_ne!(debit, credit);
        if booked(debit) {
            let book = self.accounts.entry(debit).or_default();
            book.debits = book.debits.wrapping_add(amount);
            book.ids.push(id);
        }
        if booked(credit) {
            let book = self.accounts.entry(credit).or_default();
            book.credits = book.credits.wrapping_add(amount);
            book.ids.push(id);
        }
    }

    /// Drops a refused transfer. If a statement already took it (a later request of the same
    /// batch, encoded before this one's results), that statement stands as posted.
    pub fn unbook(&mut self, id: u128, debit: u128, credit: u128, amount: u128) {
        for (account, is_debit) in [(debit, true), (credit, false)] {
            let Some(book) = self.accounts.get_mut(&account) else {
                continue;
            };
            let Some(at) = book.ids.iter().rposition(|&x| x == id) else {
                continue;
            };
            book.ids.swap_remove(at);
            if is_debit {
                book.debits = book.debits.wrapping_sub(amount);
            } else {
                book.credits = book.credits.wrapping_sub(amount);
            }
        }
    }

    /// Closes the account's period at `end_ns` and returns what it booked, digest included
    /// (the ids' allocation is kept for the next period).
    pub fn close_period(&mut self, account: u128, end_ns: u64) -> Figures {
        let book = self.accounts.entry(account).or_default();
        assert!(
            book.period_start_ns < end_ns,
            "statement periods strictly advance"
        );
        let figures = Figures {
            debits: book.debits,
            credits: book.credits,
            count: book.ids.len() as u64,
            ids_digest: statement_digest(&book.ids),
            period_start_ns: book.period_start_ns,
        };
        book.debits = 0;
        book.credits = 0;
        book.ids.clear();
        book.period_start_ns = end_ns;
        figures
    }
}

/// A closed period's figures, as a statement posts them.
pub(super) struct Figures {
    pub debits: u128,
    pub credits: u128,
    pub count: u64,
    pub ids_digest: [u8; 32],
    pub period_start_ns: u64,
}
