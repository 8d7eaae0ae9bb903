//! The execution boundary of the simulator and a tiny stand-in ledger.
//!
//! `StateMachine` is what a committed block is applied to; the integrator plugs the real `ledger`
//! in (its `digest()` and `totals()`). `ToyLedger` is a map of accounts with transfers that conserve
//! money, enough to check determinism (equal digests at equal heights) and conservation.

use std::collections::{BTreeMap, BTreeSet};

use crate::consensus::Digest;

pub trait StateMachine {
    /// Apply one committed block's batches (contents, in payload order) at `height`; returns the state
    /// digest after the block.
    fn apply_block(
        &mut self,
        height: u64,
        timestamp_ms: u64,
        batches: &[(Digest, &[u8])],
    ) -> [u8; 32];
    fn digest(&self) -> [u8; 32];
    /// (total debits, total credits) ever applied: equal when money is conserved.
    fn totals(&self) -> (u128, u128);
    /// Sum of all balances: constant when money is conserved.
    fn supply(&self) -> u128;
}

/// Accounts in the toy ledger.
pub const TOY_ACCOUNTS: u32 = 16;
/// Opening balance of every toy account.
pub const TOY_OPENING_BALANCE: u64 = 1_000_000;
/// Size of one encoded toy transfer: debit u32, credit u32, amount u64.
pub const TOY_TRANSFER_BYTES: usize = 16;

pub struct ToyLedger {
    balances: BTreeMap<u32, u64>,
    applied: BTreeSet<Digest>,
    debits: u128,
    credits: u128,
    digest: [u8; 32],
    height: u64,
}

impl Default for ToyLedger {
    fn default() -> Self {
        let balances = (0..TOY_ACCOUNTS)
            .map(|a| (a, TOY_OPENING_BALANCE))
            .collect();
        ToyLedger {
            balances,
            applied: BTreeSet::new(),
            debits: 0,
            credits: 0,
            digest: [0; 32],
            height: 0,
        }
    }
}

/// Encode toy transfers into batch bytes.
pub fn encode_transfers(transfers: &[(u32, u32, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(transfers.len() * TOY_TRANSFER_BYTES);
    for (debit, credit, amount) in transfers {
        out.extend_from_slice(&debit.to_le_bytes());
        out.extend_from_slice(&credit.to_le_bytes());
        out.extend_from_slice(&amount.to_le_bytes());
    }
    out
}

impl ToyLedger {
    fn apply_transfer(&mut self, debit: u32, credit: u32, amount: u64) -> bool {
        let (Some(&from), true) = (
            self.balances.get(&debit),
            self.balances.contains_key(&credit),
        ) else {
            return false;
        };
        if debit == credit || from < amount {
            return false;
        }
        *self.balances.get_mut(&debit).expect("exists") -= amount;
        *self.balances.get_mut(&credit).expect("exists") += amount;
        self.debits += amount as u128;
        self.credits += amount as u128;
        true
    }
}

impl StateMachine for ToyLedger {
    fn apply_block(
        &mut self,
        height: u64,
        timestamp_ms: u64,
        batches: &[(Digest, &[u8])],
    ) -> [u8; 32] {
        assert_eq!(
            height,
            self.height + 1,
            "blocks are applied at consecutive heights"
        );
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.digest);
        hasher.update(&height.to_le_bytes());
        hasher.update(&timestamp_ms.to_le_bytes());
        for (digest, bytes) in batches {
            if !self.applied.insert(*digest) {
                continue; // idempotent: a batch applies once
            }
            for op in bytes.chunks_exact(TOY_TRANSFER_BYTES) {
                let debit = u32::from_le_bytes(op[0..4].try_into().expect("4"));
                let credit = u32::from_le_bytes(op[4..8].try_into().expect("4"));
                let amount = u64::from_le_bytes(op[8..16].try_into().expect("8"));
                let ok = self.apply_transfer(debit, credit, amount);
                hasher.update(&[ok as u8]);
            }
        }
        for (account, balance) in &self.balances {
            hasher.update(&account.to_le_bytes());
            hasher.update(&balance.to_le_bytes());
        }
        self.digest = *hasher.finalize().as_bytes();
        self.height = height;
        self.digest
    }
    fn digest(&self) -> [u8; 32] {
        self.digest
    }
    fn totals(&self) -> (u128, u128) {
        (self.debits, self.credits)
    }
    fn supply(&self) -> u128 {
        self.balances.values().map(|b| *b as u128).sum()
    }
}
