//! The crypto boundary of consensus: `validator_crypto::ValidatorCrypto` implements `QuorumCrypto`
//! over `crypto::ValidatorSet` and `crypto::ValidatorKey` (Ed25519).
//!
//! Consensus builds the exact bytes to sign (domain-separated, chain-bound) and hands them over; the
//! implementation signs for "my" validator index and verifies by validator index over the genesis set.
//! A QC or TC carries one signature per signer, in ascending signer order.

use super::wire::{DecodeError, Reader, Writer};
use super::{ChainId, Hash, Round, ValidatorIndex, VALIDATORS_MAX};

/// One validator's Ed25519 signature: a vote or a timeout.
pub type Sig = [u8; SIG_BYTES];
/// Bytes of one `Sig`.
pub const SIG_BYTES: usize = 64;

/// Which validators signed a QC or TC: bit i = validator index i.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SignerBitmap {
    words: [u64; VALIDATORS_MAX / 64],
}

impl std::fmt::Debug for SignerBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl SignerBitmap {
    pub const BYTES: usize = VALIDATORS_MAX / 8;

    pub fn insert(&mut self, index: ValidatorIndex) {
        let i = index as usize;
        assert!(i < VALIDATORS_MAX);
        self.words[i / 64] |= 1u64 << (i % 64);
    }
    pub fn remove(&mut self, index: ValidatorIndex) {
        let i = index as usize;
        if i < VALIDATORS_MAX {
            self.words[i / 64] &= !(1u64 << (i % 64));
        }
    }
    pub fn contains(&self, index: ValidatorIndex) -> bool {
        let i = index as usize;
        i < VALIDATORS_MAX && self.words[i / 64] & (1u64 << (i % 64)) != 0
    }
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Signers in ascending index order (the order of a certificate's signatures and of TC rounds).
    pub fn iter(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        (0..VALIDATORS_MAX)
            .filter(|i| self.contains(*i as ValidatorIndex))
            .map(|i| i as ValidatorIndex)
    }
    /// True when every set bit is a member of a set of `validator_count` validators.
    pub fn within(&self, validator_count: usize) -> bool {
        self.iter().all(|i| (i as usize) < validator_count)
    }
    pub fn encode(&self, w: &mut Writer) {
        for word in self.words {
            w.u64(word);
        }
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut bitmap = SignerBitmap::default();
        for word in bitmap.words.iter_mut() {
            *word = r.u64()?;
        }
        Ok(bitmap)
    }
}

/// Signing and verification for votes, QCs, timeouts and TCs. Implementations must be deterministic
/// (same inputs, same outputs) so the simulator replays exactly.
pub trait QuorumCrypto {
    /// Size of the genesis validator set (indices `0..validator_count`).
    fn validator_count(&self) -> usize;
    /// Sign `msg` with this node's validator key.
    fn sign(&self, msg: &[u8]) -> Sig;
    /// Verify one signature by validator `signer` over `msg`.
    fn verify_one(&self, signer: ValidatorIndex, msg: &[u8], sig: &Sig) -> bool;
    /// Verify `sigs[k]` as the k-th signer's (ascending) signature over `msg` (a QC). False when
    /// the counts differ, a signer is not a member, or any signature fails.
    fn verify_same_msg(&self, signers: &SignerBitmap, msg: &[u8], sigs: &[Sig]) -> bool;
    /// Verify `sigs[k]` as signer `signed[k].0`'s signature over `signed[k].1` (a TC; signers
    /// ascending and distinct).
    fn verify_distinct(&self, signed: &[(ValidatorIndex, Vec<u8>)], sigs: &[Sig]) -> bool;
}

const VOTE_DOMAIN: &[u8] = b"reckon/consensus/vote/v1";
const TIMEOUT_DOMAIN: &[u8] = b"reckon/consensus/timeout/v1";

/// The bytes a vote (and hence a QC) signs: chain, block hash, round and height.
pub fn vote_message(chain_id: ChainId, block_hash: &Hash, round: Round, height: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(VOTE_DOMAIN);
    w.u64(chain_id);
    w.raw(block_hash);
    w.u64(round);
    w.u64(height);
    w.bytes
}

/// The bytes a timeout signs. The signer index is included so every message in a TC is distinct.
pub fn timeout_message(
    chain_id: ChainId,
    round: Round,
    high_qc_round: Round,
    signer: ValidatorIndex,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(TIMEOUT_DOMAIN);
    w.u64(chain_id);
    w.u64(round);
    w.u64(high_qc_round);
    w.u16(signer);
    w.bytes
}
