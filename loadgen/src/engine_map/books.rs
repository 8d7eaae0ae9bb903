//! The statement books: per account, what moved since its last statement, as the institution's
//! own back office would keep it. A statement posts these figures and the ids' digest, so the
//! ledger's reconciliation matches them exactly when both sides booked the same transfers.
//!
//! The ids digest is `engine::ledger::statement_digest`: a sum mod 2^256 of one hash per id. A
//! book keeps the running sum (each term is `statement_digest(&[id])`), so it holds a fixed 100
//! bytes per account whatever the period's length, and a refused transfer is subtracted again.

use engine::ledger::statement_digest;

use super::idhash::IdMap;
use super::SETTLEMENT_ACCOUNT_BASE;

const DIGEST_LIMBS: usize = 4;

/// A 256-bit little-endian sum, in u64 limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestSum([u64; DIGEST_LIMBS]);

fn limbs(bytes: &[u8; 32]) -> [u64; DIGEST_LIMBS] {
    let mut out = [0u64; DIGEST_LIMBS];
    for (limb, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *limb = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    out
}

impl DigestSum {
    /// The term of one id: `statement_digest(&[id])`.
    pub fn term(id: u128) -> [u64; DIGEST_LIMBS] {
        limbs(&statement_digest(&[id]))
    }

    pub fn add(&mut self, term: [u64; DIGEST_LIMBS]) {
        let mut carry = false;
        for (limb, t) in self.0.iter_mut().zip(term) {
            let (sum, c1) = limb.overflowing_add(t);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *limb = sum;
            carry = c1 || c2;
        }
    }

    pub fn sub(&mut self, term: [u64; DIGEST_LIMBS]) {
        let mut borrow = false;
        for (limb, t) in self.0.iter_mut().zip(term) {
            let (diff, b1) = limb.overflowing_sub(t);
            let (diff, b2) = diff.overflowing_sub(u64::from(borrow));
            *limb = diff;
            borrow = b1 || b2;
        }
    }

    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }
}

/// What one account booked since its previous statement.
#[derive(Clone, Copy, Debug, Default)]
struct Book {
    debits: u128,
    credits: u128,
    count: u64,
    digest: DigestSum,
    /// Start of the next statement's period: the end (own timestamp) of the previous one.
    period_start_ns: u64,
}

/// A closed period's figures, as a statement posts them.
pub(super) struct Figures {
    pub debits: u128,
    pub credits: u128,
    pub count: u64,
    pub ids_digest: [u8; 32],
    pub period_start_ns: u64,
}

#[derive(Default)]
pub(super) struct Books {
    accounts: IdMap<u128, Book>,
}

/// Settlement accounts never get statements: they are not booked (they see every top-up).
fn booked(account: u128) -> bool {
    account < SETTLEMENT_ACCOUNT_BASE
}

impl Books {
    /// Books transfer `id` on both its accounts (settlement accounts excepted).
    pub fn book(&mut self, id: u128, debit: u128, credit: u128, amount: u128) {
        assert_ne!(debit, credit);
        let term = DigestSum::term(id);
        for (account, is_debit) in [(debit, true), (credit, false)] {
            if !booked(account) {
                continue;
            }
            let book = self.accounts.entry(account).or_default();
            if is_debit {
                book.debits = book.debits.wrapping_add(amount);
            } else {
                book.credits = book.credits.wrapping_add(amount);
            }
            book.count += 1;
            book.digest.add(term);
        }
    }

    /// Drops a refused transfer stamped `at_ns`. If a statement already closed the period it
    /// was in (a later request of a pipelined batch), that statement stands as posted.
    pub fn unbook(&mut self, id: u128, (debit, credit): (u128, u128), amount: u128, at_ns: u64) {
        let term = DigestSum::term(id);
        for (account, is_debit) in [(debit, true), (credit, false)] {
            let Some(book) = self.accounts.get_mut(&account) else {
                continue;
            };
            if at_ns < book.period_start_ns {
                continue;
            }
            assert!(book.count > 0, "unbooking from an empty period");
            if is_debit {
                book.debits = book.debits.wrapping_sub(amount);
            } else {
                book.credits = book.credits.wrapping_sub(amount);
            }
            book.count -= 1;
            book.digest.sub(term);
        }
    }

    /// Closes the account's period at `end_ns` and returns what it booked.
    pub fn close_period(&mut self, account: u128, end_ns: u64) -> Figures {
        let book = self.accounts.entry(account).or_default();
        assert!(
            book.period_start_ns < end_ns,
            "statement periods strictly advance"
        );
        let closed = std::mem::replace(
            book,
            Book {
                period_start_ns: end_ns,
                ..Book::default()
            },
        );
        Figures {
            debits: closed.debits,
            credits: closed.credits,
            count: closed.count,
            ids_digest: closed.digest.to_bytes(),
            period_start_ns: closed.period_start_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_sum_equals_statement_digest() {
        let ids: Vec<u128> = (1..200u128)
            .map(|i| i * 0x1_0000_0001 + (i << 90))
            .collect();
        let mut sum = DigestSum::default();
        for &id in &ids {
            sum.add(DigestSum::term(id));
        }
        assert_eq!(sum.to_bytes(), statement_digest(&ids));
        let extra = 77u128;
        sum.add(DigestSum::term(extra));
        sum.sub(DigestSum::term(extra));
        assert_eq!(sum.to_bytes(), statement_digest(&ids));
        assert_eq!(DigestSum::default().to_bytes(), statement_digest(&[]));
    }
}
