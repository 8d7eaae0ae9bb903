//! `BlsCrypto`: the `QuorumCrypto` of consensus, over the `crypto` module (BLS12-381 `min_sig`).
//!
//! Signing uses the validator's `crypto::KeyPair` under the consensus DST; verification is
//! `crypto::ValidatorSet` (keys validated with their proofs of possession at load, one pairing per
//! QC with cached aggregate keys, one multi-pairing per TC). Consensus owns the quorum-size rule,
//! so this adapter calls the set's pairing checks without the threshold (`verify_aggregate*`).
//!
//! Verification results are memoised in a bounded cache keyed by a hash of (kind, signers, message,
//! signature), so each distinct QC/TC costs one pairing check per cache. A cache may be shared by
//! simulated nodes (`VerifyCache::shared`): the result is a pure function of the key.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use super::crypto_iface::{QuorumCrypto, Sig, SignerBitmap};
use super::ValidatorIndex;
use crate::crypto::{self, HashedMessage, KeyPair, QuorumSignature, ValidatorSet};

/// Most verification results one cache remembers before it is cleared (deterministically).
pub const VERIFY_CACHE_ENTRIES_MAX: usize = 16_384;

/// Memoised verification results.
#[derive(Default)]
pub struct VerifyCache {
    results: BTreeMap<[u8; 32], bool>,
    pub hits: u64,
    pub misses: u64,
}

impl VerifyCache {
    pub fn shared() -> Rc<RefCell<VerifyCache>> {
        Rc::new(RefCell::new(VerifyCache::default()))
    }
}

/// Deterministic test/sim keys: validator i's key pair is derived from (seed, i).
pub fn keygen(seed: u64, index: ValidatorIndex) -> KeyPair {
    let mut ikm = [0u8; 32];
    ikm[..8].copy_from_slice(&seed.to_le_bytes());
    ikm[8..10].copy_from_slice(&index.to_le_bytes());
    ikm[31] = 0x5a;
    let secret = blst::min_sig::SecretKey::key_gen(&ikm, b"reckon-sim-validator")
        .expect("32-byte ikm is always accepted");
    KeyPair::from_secret_bytes(&secret.to_bytes()).expect("key_gen gives a valid scalar")
}

/// Messages this validator signed most recently whose hash to G1 is kept: a QC this node checks
/// (as the next leader over the votes' sum, or as a replica over a proposal's QC) is almost always
/// over the vote it signed a round before.
pub const SIGNED_HASHES_KEPT: usize = 4;

pub struct BlsCrypto {
    me: Option<KeyPair>,
    set: Rc<ValidatorSet>,
    cache: Rc<RefCell<VerifyCache>>,
    /// (message, its hash to G1) for the last `SIGNED_HASHES_KEPT` messages signed, newest last.
    signed: RefCell<VecDeque<(Vec<u8>, HashedMessage)>>,
}

impl BlsCrypto {
    /// `me` is this validator's key pair (None for an observer such as the auditor).
    pub fn new(
        me: Option<KeyPair>,
        set: Rc<ValidatorSet>,
        cache: Rc<RefCell<VerifyCache>>,
    ) -> Self {
        assert!(!set.is_empty());
        BlsCrypto {
            me,
            set,
            cache,
            signed: RefCell::new(VecDeque::with_capacity(SIGNED_HASHES_KEPT)),
        }
    }

    /// A whole validator set from one seed: (key pairs, the validated set).
    pub fn committee(seed: u64, n: usize) -> (Vec<KeyPair>, Rc<ValidatorSet>) {
        let pairs: Vec<KeyPair> = (0..n).map(|i| keygen(seed, i as ValidatorIndex)).collect();
        let set = ValidatorSet::from_validated(pairs.iter().map(|p| *p.public()).collect())
            .expect("1..=VALIDATORS_MAX validators");
        (pairs, Rc::new(set))
    }

    fn cached(&self, key: [u8; 32], verify: impl FnOnce() -> bool) -> bool {
        let hit = self.cache.borrow().results.get(&key).copied();
        if let Some(ok) = hit {
            self.cache.borrow_mut().hits += 1;
            return ok;
        }
        let ok = verify();
        let mut cache = self.cache.borrow_mut();
        cache.misses += 1;
        if cache.results.len() >= VERIFY_CACHE_ENTRIES_MAX {
            cache.results.clear();
        }
        cache.results.insert(key, ok);
        ok
    }

    fn key(kind: u8, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[kind]);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }
}

fn quorum(signers: &SignerBitmap, agg: &Sig) -> Option<QuorumSignature> {
    let mut bitmap = crypto::SignerBitmap::new();
    for index in signers.iter() {
        bitmap.insert(index).ok()?;
    }
    Some(QuorumSignature {
        signers: bitmap,
        signature: *agg,
    })
}

impl QuorumCrypto for BlsCrypto {
    fn validator_count(&self) -> usize {
        self.set.len()
    }

    fn sign(&self, msg: &[u8]) -> Sig {
        let (signature, hashed) = self
            .me
            .as_ref()
            .expect("only validators sign")
            .sign_consensus_hashed(msg);
        let mut signed = self.signed.borrow_mut();
        if signed.len() == SIGNED_HASHES_KEPT {
            signed.pop_front();
        }
        signed.push_back((msg.to_vec(), hashed));
        signature
    }

    fn verify_one(&self, signer: ValidatorIndex, msg: &[u8], sig: &Sig) -> bool {
        let key = Self::key(1, &[&signer.to_le_bytes(), msg, sig]);
        self.cached(key, || self.set.verify_signature(signer, msg, sig).is_ok())
    }

    fn aggregate(&self, sigs: &[Sig]) -> Option<Sig> {
        // No subgroup check per signature: every aggregate consensus forms is checked whole (a
        // QC by `verify_same_msg`, which checks the sum's group membership), or sums timeouts
        // that were each verified on arrival.
        crypto::sum_signatures_unchecked(sigs).ok()
    }

    fn verify_same_msg(&self, signers: &SignerBitmap, msg: &[u8], agg: &Sig) -> bool {
        if signers.count() == 0 || !signers.within(self.set.len()) {
            return false;
        }
        let mut bitmap = crate::consensus::wire::Writer::default();
        signers.encode(&mut bitmap);
        let key = Self::key(2, &[&bitmap.bytes, msg, agg]);
        self.cached(key, || {
            let Some(q) = quorum(signers, agg) else {
                return false;
            };
            // The hash this node computed when it signed the same bytes, if it did lately.
            let known = (self.signed.borrow().iter())
                .rev()
                .find(|(signed, _)| signed.as_slice() == msg)
                .map(|(_, hashed)| *hashed);
            let hashed = known.unwrap_or_else(|| HashedMessage::consensus(msg));
            self.set.verify_aggregate_hashed(&hashed, &q).is_ok()
        })
    }

    fn verify_distinct(&self, signed: &[(ValidatorIndex, Vec<u8>)], agg: &Sig) -> bool {
        if signed.is_empty() || signed.iter().any(|(i, _)| *i as usize >= self.set.len()) {
            return false;
        }
        // The set checks signer k (ascending index order) against message k.
        let mut ordered: Vec<&(ValidatorIndex, Vec<u8>)> = signed.iter().collect();
        ordered.sort_by_key(|(i, _)| *i);
        if ordered.windows(2).any(|w| w[0].0 == w[1].0) {
            return false; // a duplicate signer cannot be expressed in a bitmap
        }
        let mut parts: Vec<&[u8]> = vec![agg];
        let indices: Vec<[u8; 2]> = ordered.iter().map(|(i, _)| i.to_le_bytes()).collect();
        for ((_, msg), index) in ordered.iter().zip(&indices) {
            parts.push(index);
            parts.push(msg);
        }
        let key = Self::key(3, &parts);
        self.cached(key, || {
            let mut signers = SignerBitmap::default();
            ordered.iter().for_each(|(i, _)| signers.insert(*i));
            let msgs: Vec<&[u8]> = ordered.iter().map(|(_, m)| m.as_slice()).collect();
            quorum(&signers, agg)
                .is_some_and(|q| self.set.verify_aggregate_distinct(&msgs, &q).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::crypto_iface::vote_message;

    /// The hash kept from signing is used only for the very bytes it was made from: a QC over the
    /// signed vote verifies, the same sum presented over another message does not, and a QC over a
    /// message this node never signed is still checked from its own hash.
    #[test]
    fn a_qc_check_reuses_the_signed_votes_hash_only_for_the_same_message() {
        let (pairs, set) = BlsCrypto::committee(9, 4);
        let nodes: Vec<BlsCrypto> = pairs
            .iter()
            .map(|p| BlsCrypto::new(Some(p.clone()), Rc::clone(&set), VerifyCache::shared()))
            .collect();
        let signed = vote_message(5, &[3; 32], 7, 2);
        let other = vote_message(5, &[4; 32], 7, 2);
        let mut signers = SignerBitmap::default();
        let votes: Vec<Sig> = (0..3)
            .map(|i| {
                signers.insert(i as ValidatorIndex);
                nodes[i].sign(&signed)
            })
            .collect();
        let sum = nodes[0].aggregate(&votes).expect("sum");
        assert_eq!(
            nodes[0].signed.borrow().len(),
            1,
            "node 0 kept its vote's hash"
        );
        assert!(nodes[0].verify_same_msg(&signers, &signed, &sum));
        assert!(!nodes[0].verify_same_msg(&signers, &other, &sum));
        // Node 3 signed nothing: it hashes the message itself and agrees.
        assert!(nodes[3].signed.borrow().is_empty());
        assert!(nodes[3].verify_same_msg(&signers, &signed, &sum));
        // Only the newest `SIGNED_HASHES_KEPT` messages are kept.
        for round in 0..(SIGNED_HASHES_KEPT as u64 + 2) {
            nodes[1].sign(&vote_message(5, &[9; 32], round, 1));
        }
        assert_eq!(nodes[1].signed.borrow().len(), SIGNED_HASHES_KEPT);
        assert!(nodes[1].verify_same_msg(&signers, &signed, &sum));
    }
}
