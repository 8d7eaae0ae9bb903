//! The validator set (index = validator index) and quorum certificate verification.

use super::curve::{self, G2Lines};
use super::keys::{HashedMessage, KeyError, ValidatedPublicKey};
use super::quorum::{
    decode_signature, QuorumSignature, SignerBitmap, ValidatorIndex, VALIDATORS_MAX,
};
use super::{SignatureBytes, CONSENSUS_DST};
use blst::min_sig::{AggregatePublicKey, PublicKey};
use blst::{blst_p1_affine, blst_p2_affine, BLST_ERROR};
use std::sync::{Arc, Mutex};

/// Aggregated public keys, with their Miller-loop lines, kept per signer bitmap (a QC's signers
/// repeat from round to round). 32 x ~19.7 KB.
const AGGREGATE_CACHE_ENTRIES: usize = 32;

/// One signer set's aggregate key and its precomputed lines.
#[derive(Debug)]
struct AggregateKey {
    signers: SignerBitmap,
    lines: Arc<G2Lines>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("{signers} signers, a quorum needs {threshold}")]
    TooFewSigners { signers: usize, threshold: usize },
    #[error("signer {index} is not in the validator set")]
    UnknownSigner { index: usize },
    #[error("validator {index} signed twice")]
    DuplicateSigner { index: usize },
    #[error("signature bytes are not a G1 point in the prime-order subgroup")]
    MalformedSignature,
    #[error("signature is the point at infinity")]
    InfinitySignature,
    #[error("signature does not verify")]
    InvalidSignature,
    #[error("{messages} messages for {signers} signers")]
    MessageCount { messages: usize, signers: usize },
    #[error("a validator set holds 1 to {VALIDATORS_MAX} validators, not {size}")]
    SetSize { size: usize },
    #[error("validator {index}: {source}")]
    Key { index: usize, source: KeyError },
    #[error("validators {first} and {second} share a public key")]
    DuplicateKey { first: usize, second: usize },
}

/// Ordered validator public keys, each validated with its proof of possession at construction.
#[derive(Debug)]
pub struct ValidatorSet {
    keys: Vec<ValidatedPublicKey>,
    cache: Mutex<Vec<AggregateKey>>,
}

impl ValidatorSet {
    /// Validates every (public key, proof of possession) pair; order gives the validator index.
    pub fn new(entries: &[(&[u8], &[u8])]) -> Result<Self, QuorumError> {
        let mut keys = Vec::with_capacity(entries.len());
        for (index, (public, pop)) in entries.iter().enumerate() {
            keys.push(
                ValidatedPublicKey::new(public, pop)
                    .map_err(|source| QuorumError::Key { index, source })?,
            );
        }
        Self::from_validated(keys)
    }

    pub fn from_validated(keys: Vec<ValidatedPublicKey>) -> Result<Self, QuorumError> {
        if keys.is_empty() || keys.len() > VALIDATORS_MAX {
            return Err(QuorumError::SetSize { size: keys.len() });
        }
        for (second, key) in keys.iter().enumerate() {
            if let Some(first) = keys[..second].iter().position(|other| other == key) {
                return Err(QuorumError::DuplicateKey { first, second });
            }
        }
        Ok(Self {
            keys,
            cache: Mutex::new(Vec::with_capacity(AGGREGATE_CACHE_ENTRIES)),
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, index: ValidatorIndex) -> Option<&ValidatedPublicKey> {
        self.keys.get(usize::from(index))
    }

    /// Faults tolerated: f = ⌊(n − 1) / 3⌋.
    pub fn faults_tolerated(&self) -> usize {
        (self.len() - 1) / 3
    }

    /// Signers a quorum needs: n − f, which is 2f + 1 when n = 3f + 1 and never less than 2f + 1,
    /// so any two quorums share at least f + 1 validators.
    pub fn quorum_threshold(&self) -> usize {
        let threshold = self.len() - self.faults_tolerated();
        assert!(threshold > 2 * self.faults_tolerated() && threshold <= self.len());
        threshold
    }

    /// One signature by validator `index` over `msg` (a vote or timeout message).
    pub fn verify_signature(
        &self,
        index: ValidatorIndex,
        msg: &[u8],
        signature: &SignatureBytes,
    ) -> Result<(), QuorumError> {
        let key = self.key(index).ok_or(QuorumError::UnknownSigner {
            index: usize::from(index),
        })?;
        let signature = decode_signature(signature)?;
        match signature.verify(false, msg, CONSENSUS_DST, &[], key.blst(), false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(QuorumError::InvalidSignature),
        }
    }

    /// Checks the signer set: every signer known and at least `quorum_threshold()` of them.
    fn check_signers(&self, signers: &SignerBitmap) -> Result<(), QuorumError> {
        if let Some(highest) = signers.highest() {
            if highest >= self.len() {
                return Err(QuorumError::UnknownSigner { index: highest });
            }
        }
        let count = signers.count();
        if count < self.quorum_threshold() {
            return Err(QuorumError::TooFewSigners {
                signers: count,
                threshold: self.quorum_threshold(),
            });
        }
        Ok(())
    }

    /// Every signer is a member, and there is at least one.
    fn check_known(&self, signers: &SignerBitmap) -> Result<(), QuorumError> {
        match signers.highest() {
            None => Err(QuorumError::TooFewSigners {
                signers: 0,
                threshold: 1,
            }),
            Some(highest) if highest >= self.len() => {
                Err(QuorumError::UnknownSigner { index: highest })
            }
            Some(_) => Ok(()),
        }
    }

    /// A QC: every signer signed the same `msg`. One key aggregation (cached) and one pairing check.
    pub fn verify_quorum(&self, msg: &[u8], quorum: &QuorumSignature) -> Result<(), QuorumError> {
        self.check_signers(&quorum.signers)?;
        self.verify_aggregate(msg, quorum)
    }

    /// The pairing check of a QC without the quorum-size rule: every signer known, at least one,
    /// all signed `msg`. For callers that enforce their own threshold (consensus owns its quorum
    /// rule, including a deliberately broken one in negative simulator tests).
    pub fn verify_aggregate(
        &self,
        msg: &[u8],
        quorum: &QuorumSignature,
    ) -> Result<(), QuorumError> {
        self.verify_aggregate_hashed(&HashedMessage::consensus(msg), quorum)
    }

    /// `verify_aggregate` for a message already hashed (e.g. the vote this node signed).
    pub fn verify_aggregate_hashed(
        &self,
        message: &HashedMessage,
        quorum: &QuorumSignature,
    ) -> Result<(), QuorumError> {
        self.check_known(&quorum.signers)?;
        let signature = decode_signature(&quorum.signature)?;
        let lines = self.aggregate_lines(&quorum.signers)?;
        // e(sig, g2) == e(H(msg), apk), each Miller loop from precomputed lines (the G2 side of
        // both is fixed: the generator, and the signer set's aggregate key).
        let hashed = *message.point();
        if curve::is_infinity(&hashed) {
            return Err(QuorumError::InvalidSignature);
        }
        let signature: &blst_p1_affine = (&signature).into();
        let lhs = curve::miller_loop_lines(curve::g2_generator_lines(), signature);
        let rhs = curve::miller_loop_lines(&lines, &hashed);
        if curve::pairings_equal(&lhs, &rhs) {
            Ok(())
        } else {
            Err(QuorumError::InvalidSignature)
        }
    }

    /// A QC over a block: `verify_quorum` of the vote message for (chain, round, block hash).
    pub fn verify_vote_quorum(
        &self,
        chain_id: crate::types::ChainId,
        round: u64,
        block_hash: &[u8; 32],
        quorum: &QuorumSignature,
    ) -> Result<(), QuorumError> {
        self.verify_quorum(
            &super::quorum::vote_message(chain_id, round, block_hash),
            quorum,
        )
    }

    /// A TC: signer k (in ascending index order) signed `msgs[k]`. One multi-pairing check.
    pub fn verify_quorum_distinct(
        &self,
        msgs: &[&[u8]],
        quorum: &QuorumSignature,
    ) -> Result<(), QuorumError> {
        self.check_signers(&quorum.signers)?;
        self.verify_aggregate_distinct(msgs, quorum)
    }

    /// The pairing check of a TC without the quorum-size rule (see `verify_aggregate`).
    pub fn verify_aggregate_distinct(
        &self,
        msgs: &[&[u8]],
        quorum: &QuorumSignature,
    ) -> Result<(), QuorumError> {
        self.check_known(&quorum.signers)?;
        let signers = quorum.signers.count();
        if msgs.len() != signers {
            return Err(QuorumError::MessageCount {
                messages: msgs.len(),
                signers,
            });
        }
        let signature = decode_signature(&quorum.signature)?;
        let keys: Vec<&PublicKey> = quorum
            .signers
            .iter()
            .map(|index| self.keys[index].blst())
            .collect();
        assert_eq!(keys.len(), msgs.len());
        match signature.aggregate_verify(false, msgs, CONSENSUS_DST, &keys, false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(QuorumError::InvalidSignature),
        }
    }

    /// The Miller-loop lines of Σ pk_i over the signers, from the cache when this bitmap was seen
    /// recently.
    fn aggregate_lines(&self, signers: &SignerBitmap) -> Result<Arc<G2Lines>, QuorumError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some(hit) = cache.iter().find(|entry| entry.signers == *signers) {
                return Ok(hit.lines.clone());
            }
        }
        let keys: Vec<&PublicKey> = signers
            .iter()
            .map(|index| self.keys[index].blst())
            .collect();
        let key = AggregatePublicKey::aggregate(&keys, false)
            .map_err(|_| QuorumError::InvalidSignature)?
            .to_public_key();
        // Keys with proofs of possession cannot cancel except with negligible probability.
        if key == PublicKey::default() {
            return Err(QuorumError::InvalidSignature);
        }
        let point: &blst_p2_affine = (&key).into();
        let lines = Arc::new(curve::precompute_lines(point));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= AGGREGATE_CACHE_ENTRIES {
                cache.remove(0);
            }
            cache.push(AggregateKey {
                signers: *signers,
                lines: lines.clone(),
            });
            assert!(cache.len() <= AGGREGATE_CACHE_ENTRIES);
        }
        Ok(lines)
    }

    /// Drops cached aggregate keys (the benchmark measures cold and warm QC checks).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }
}
