//! The execution boundary of the simulator: what a committed block is applied to.
//! `ledger_machine::LedgerMachine` puts the real double-entry `ledger` behind it.

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
