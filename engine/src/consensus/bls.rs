//! A small `QuorumCrypto` adapter over blst `min_sig` (48-byte G1 signatures, 96-byte G2 keys).
//! The `crypto` module replaces it after merge; it exists so tests, the simulator and the benchmark
//! sign and verify real BLS signatures today.
//!
//! Verification results are memoised in a bounded cache keyed by a hash of (kind, signers, message,
//! signature), so each distinct QC/TC costs one pairing check per cache. A cache may be shared by
//! simulated nodes (`VerifyCache::shared`): the result is a pure function of the key.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use blst::min_sig::{AggregatePublicKey, AggregateSignature, PublicKey, SecretKey, Signature};
use blst::BLST_ERROR;

use super::crypto_iface::{QuorumCrypto, Sig, SignerBitmap};
use super::ValidatorIndex;

/// Hash-to-curve domain separation tag for proof-of-possession min_sig signatures.
pub const BLS_DST: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

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
pub fn keygen(seed: u64, index: ValidatorIndex) -> SecretKey {
    let mut ikm = [0u8; 32];
    ikm[..8].copy_from_slice(&seed.to_le_bytes());
    ikm[8..10].copy_from_slice(&index.to_le_bytes());
    ikm[31] = 0x5a;
    SecretKey::key_gen(&ikm, b"reckon-sim-validator").expect("32-byte ikm is always accepted")
}

pub struct BlsCrypto {
    secret: Option<SecretKey>,
    publics: Rc<Vec<PublicKey>>,
    cache: Rc<RefCell<VerifyCache>>,
}

impl BlsCrypto {
    pub fn new(
        secret: Option<SecretKey>,
        publics: Rc<Vec<PublicKey>>,
        cache: Rc<RefCell<VerifyCache>>,
    ) -> Self {
        assert!(!publics.is_empty());
        BlsCrypto {
            secret,
            publics,
            cache,
        }
    }

    /// A whole validator set from one seed: (secret keys, shared public keys).
    pub fn committee(seed: u64, n: usize) -> (Vec<SecretKey>, Rc<Vec<PublicKey>>) {
        let secrets: Vec<SecretKey> = (0..n).map(|i| keygen(seed, i as ValidatorIndex)).collect();
        let publics = secrets.iter().map(|s| s.sk_to_pk()).collect();
        (secrets, Rc::new(publics))
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

fn decode_sig(sig: &Sig) -> Option<Signature> {
    // Group check on decode: an invalid point is rejected here, never reaches a pairing.
    Signature::sig_validate(sig, true).ok()
}

/// Decode for aggregation: on-curve only; the subgroup check runs once, on the aggregate, in verify.
fn decode_sig_unchecked(sig: &Sig) -> Option<Signature> {
    Signature::uncompress(sig).ok()
}

impl QuorumCrypto for BlsCrypto {
    fn validator_count(&self) -> usize {
        self.publics.len()
    }

    fn sign(&self, msg: &[u8]) -> Sig {
        let secret = self.secret.as_ref().expect("only validators sign");
        secret.sign(msg, BLS_DST, &[]).compress()
    }

    fn verify_one(&self, signer: ValidatorIndex, msg: &[u8], sig: &Sig) -> bool {
        let Some(public) = self.publics.get(signer as usize) else {
            return false;
        };
        let key = Self::key(1, &[&signer.to_le_bytes(), msg, sig]);
        self.cached(key, || {
            decode_sig(sig).is_some_and(|s| {
                s.verify(false, msg, BLS_DST, &[], public, false) == BLST_ERROR::BLST_SUCCESS
            })
        })
    }

    fn aggregate(&self, sigs: &[Sig]) -> Option<Sig> {
        let decoded: Option<Vec<Signature>> = sigs.iter().map(decode_sig_unchecked).collect();
        let decoded = decoded?;
        let refs: Vec<&Signature> = decoded.iter().collect();
        AggregateSignature::aggregate(&refs, false)
            .ok()
            .map(|a| a.to_signature().compress())
    }

    fn verify_same_msg(&self, signers: &SignerBitmap, msg: &[u8], agg: &Sig) -> bool {
        if signers.count() == 0 || !signers.within(self.publics.len()) {
            return false;
        }
        let mut bitmap = crate::consensus::wire::Writer::default();
        signers.encode(&mut bitmap);
        let key = Self::key(2, &[&bitmap.bytes, msg, agg]);
        self.cached(key, || {
            let Some(sig) = decode_sig(agg) else {
                return false;
            };
            let keys: Vec<&PublicKey> = signers.iter().map(|i| &self.publics[i as usize]).collect();
            let Ok(agg_pk) = AggregatePublicKey::aggregate(&keys, false) else {
                return false;
            };
            let pk = agg_pk.to_public_key();
            sig.fast_aggregate_verify_pre_aggregated(false, msg, BLS_DST, &pk)
                == BLST_ERROR::BLST_SUCCESS
        })
    }

    fn verify_distinct(&self, signed: &[(ValidatorIndex, Vec<u8>)], agg: &Sig) -> bool {
        if signed.is_empty()
            || signed
                .iter()
                .any(|(i, _)| *i as usize >= self.publics.len())
        {
            return false;
        }
        let mut parts: Vec<&[u8]> = vec![agg];
        let indices: Vec<[u8; 2]> = signed.iter().map(|(i, _)| i.to_le_bytes()).collect();
        for ((_, msg), index) in signed.iter().zip(&indices) {
            parts.push(index);
            parts.push(msg);
        }
        let key = Self::key(3, &parts);
        self.cached(key, || {
            let Some(sig) = decode_sig(agg) else {
                return false;
            };
            let msgs: Vec<&[u8]> = signed.iter().map(|(_, m)| m.as_slice()).collect();
            let keys: Vec<&PublicKey> = signed
                .iter()
                .map(|(i, _)| &self.publics[*i as usize])
                .collect();
            sig.aggregate_verify(false, &msgs, BLS_DST, &keys, false) == BLST_ERROR::BLST_SUCCESS
        })
    }
}
