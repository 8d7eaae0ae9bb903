//! `ValidatorCrypto`: the `QuorumCrypto` of consensus, over the `crypto` module's validator keys
//! (Ed25519, one strict check per signature; a QC or TC is one signature per signer).
//!
//! Verification results are memoised in a bounded cache keyed by a hash of (kind, signers, message,
//! signatures), so a QC seen again (in a proposal, a timeout's high QC, a sync response) is checked
//! once per cache. A cache may be shared by simulated nodes (`VerifyCache::shared`): the result is
//! a pure function of the key.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::crypto_iface::{QuorumCrypto, Sig, SignerBitmap};
use super::ValidatorIndex;
use crate::crypto::{ValidatorKey, ValidatorSet};

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

/// Deterministic test/sim keys: validator i's key is derived from (seed, i).
pub fn keygen(seed: u64, index: ValidatorIndex) -> ValidatorKey {
    let mut hasher = blake3::Hasher::new_derive_key("reckon sim validator key v1");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    ValidatorKey::from_secret_bytes(hasher.finalize().as_bytes())
}

pub struct ValidatorCrypto {
    me: Option<ValidatorKey>,
    set: Rc<ValidatorSet>,
    cache: Rc<RefCell<VerifyCache>>,
}

impl ValidatorCrypto {
    /// `me` is this validator's key (None for an observer such as the auditor).
    pub fn new(
        me: Option<ValidatorKey>,
        set: Rc<ValidatorSet>,
        cache: Rc<RefCell<VerifyCache>>,
    ) -> Self {
        assert!(!set.is_empty());
        ValidatorCrypto { me, set, cache }
    }

    /// A whole validator set from one seed: (keys, the set).
    pub fn committee(seed: u64, n: usize) -> (Vec<ValidatorKey>, Rc<ValidatorSet>) {
        let keys: Vec<ValidatorKey> = (0..n).map(|i| keygen(seed, i as ValidatorIndex)).collect();
        let set = ValidatorSet::new(keys.iter().map(|k| *k.public()).collect())
            .expect("1..=VALIDATORS_MAX validators with distinct keys");
        (keys, Rc::new(set))
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

    /// Every index a member: refused before any signature is checked.
    fn members(&self, signers: &[usize]) -> bool {
        signers.iter().all(|i| *i < self.set.len())
    }
}

impl QuorumCrypto for ValidatorCrypto {
    fn validator_count(&self) -> usize {
        self.set.len()
    }

    fn sign(&self, msg: &[u8]) -> Sig {
        self.me.as_ref().expect("only validators sign").sign(msg)
    }

    fn verify_one(&self, signer: ValidatorIndex, msg: &[u8], sig: &Sig) -> bool {
        let key = Self::key(1, &[&signer.to_le_bytes(), msg, sig]);
        self.cached(key, || {
            self.set.verify(usize::from(signer), msg, sig).is_ok()
        })
    }

    fn verify_same_msg(&self, signers: &SignerBitmap, msg: &[u8], sigs: &[Sig]) -> bool {
        if signers.count() == 0 || sigs.len() != signers.count() {
            return false;
        }
        let mut bitmap = crate::consensus::wire::Writer::default();
        signers.encode(&mut bitmap);
        let mut parts: Vec<&[u8]> = vec![&bitmap.bytes, msg];
        parts.extend(sigs.iter().map(|s| &s[..]));
        let key = Self::key(2, &parts);
        self.cached(key, || {
            let indices: Vec<usize> = signers.iter().map(usize::from).collect();
            self.members(&indices) && self.set.verify_same_message(&indices, msg, sigs).is_ok()
        })
    }

    fn verify_distinct(&self, signed: &[(ValidatorIndex, Vec<u8>)], sigs: &[Sig]) -> bool {
        if signed.is_empty() || signed.len() != sigs.len() {
            return false;
        }
        if signed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return false; // signers must be ascending and distinct, as a bitmap lists them
        }
        let indices: Vec<[u8; 2]> = signed.iter().map(|(i, _)| i.to_le_bytes()).collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(3 * signed.len());
        for (((_, msg), index), sig) in signed.iter().zip(&indices).zip(sigs) {
            parts.extend([&index[..], msg, &sig[..]]);
        }
        let key = Self::key(3, &parts);
        self.cached(key, || {
            let signers: Vec<usize> = signed.iter().map(|(i, _)| usize::from(*i)).collect();
            let messages: Vec<&[u8]> = signed.iter().map(|(_, m)| m.as_slice()).collect();
            self.members(&signers) && self.set.verify_all(&signers, &messages, sigs).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::crypto_iface::vote_message;

    fn nodes(n: usize) -> Vec<ValidatorCrypto> {
        let (keys, set) = ValidatorCrypto::committee(9, n);
        keys.into_iter()
            .map(|k| ValidatorCrypto::new(Some(k), Rc::clone(&set), VerifyCache::shared()))
            .collect()
    }

    /// A QC verifies only with one valid signature per signer in signer order, over its message.
    #[test]
    fn a_qc_needs_every_signers_signature_in_order_over_its_message() {
        let nodes = nodes(4);
        let msg = vote_message(5, &[3; 32], 7, 2);
        let other = vote_message(5, &[4; 32], 7, 2);
        let mut signers = SignerBitmap::default();
        let sigs: Vec<Sig> = [0usize, 1, 3]
            .iter()
            .map(|&i| {
                signers.insert(i as ValidatorIndex);
                nodes[i].sign(&msg)
            })
            .collect();
        let observer = &nodes[2];
        assert!(observer.verify_same_msg(&signers, &msg, &sigs));
        assert!(!observer.verify_same_msg(&signers, &other, &sigs));
        assert!(!observer.verify_same_msg(&signers, &msg, &sigs[..2]));
        let mut reordered = sigs.clone();
        reordered.swap(1, 2);
        assert!(!observer.verify_same_msg(&signers, &msg, &reordered));
        let mut forged = sigs.clone();
        forged[2] = nodes[2].sign(&msg); // validator 2 signs in validator 3's place
        assert!(!observer.verify_same_msg(&signers, &msg, &forged));
        let mut outsider = signers;
        outsider.insert(4); // not a member of a 4-validator set
        let mut five = sigs.clone();
        five.push(nodes[0].sign(&msg));
        assert!(!observer.verify_same_msg(&outsider, &msg, &five));
    }

    #[test]
    fn a_tc_checks_each_signer_over_its_own_message_and_refuses_unordered_signers() {
        let nodes = nodes(4);
        let signed: Vec<(ValidatorIndex, Vec<u8>)> = [0u16, 2, 3]
            .iter()
            .map(|&i| (i, format!("timeout by {i}").into_bytes()))
            .collect();
        let sigs: Vec<Sig> = signed
            .iter()
            .map(|(i, m)| nodes[usize::from(*i)].sign(m))
            .collect();
        assert!(nodes[1].verify_distinct(&signed, &sigs));
        let mut swapped = signed.clone();
        swapped.swap(0, 1);
        let mut swapped_sigs = sigs.clone();
        swapped_sigs.swap(0, 1);
        assert!(!nodes[1].verify_distinct(&swapped, &swapped_sigs));
        let mut wrong = sigs.clone();
        wrong[1] = nodes[2].sign(b"something else");
        assert!(!nodes[1].verify_distinct(&signed, &wrong));
    }

    #[test]
    fn results_are_cached_by_their_inputs() {
        let nodes = nodes(4);
        let msg = b"vote";
        let sig = nodes[1].sign(msg);
        let cache = Rc::clone(&nodes[0].cache);
        assert!(nodes[0].verify_one(1, msg, &sig));
        assert!(nodes[0].verify_one(1, msg, &sig));
        assert!(!nodes[0].verify_one(2, msg, &sig));
        let (hits, misses) = (cache.borrow().hits, cache.borrow().misses);
        assert_eq!((hits, misses), (1, 2));
    }

    #[test]
    fn sim_keys_are_a_pure_function_of_seed_and_index() {
        assert_eq!(keygen(7, 1).public(), keygen(7, 1).public());
        assert_ne!(keygen(7, 1).public(), keygen(7, 2).public());
        assert_ne!(keygen(7, 1).public(), keygen(8, 1).public());
    }
}
