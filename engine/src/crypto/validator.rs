//! Validators' consensus keys (Ed25519) and the validator set that checks votes, timeouts, QCs
//! and TCs.
//!
//! A QC is one signature per signer over the same vote message; a TC one per signer over its own
//! timeout message. Every signature is checked with `verify_strict` (canonical encodings only,
//! no small-order R, no weak public key), so the node, the simulator and the auditor reach the
//! same verdict on the same bytes; batch verification is deliberately not used, since it can
//! accept signatures that a single strict check refuses.
//!
//! Why not BLS aggregates (the design brief's first choice): a BLS QC check costs two Miller loops
//! and a final exponentiation, 825 µs on the dev machine, against 101 µs for three strict Ed25519
//! checks, and signing 164 µs against 17-21 µs (`bench-harness verify`). Every node pays both once
//! per round. The Ed25519 check grows with the signers and passes BLS's somewhere between 16 and
//! 64 validators; a consortium has tens (docs/modules/crypto.md, "Consensus signatures").

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::RngCore;

/// Bytes of a validator's secret seed, public key and signature.
pub const VALIDATOR_SECRET_BYTES: usize = 32;
pub const VALIDATOR_PUBLIC_KEY_BYTES: usize = 32;
pub const VALIDATOR_SIGNATURE_BYTES: usize = 64;

/// One validator signature on the wire.
pub type ValidatorSignature = [u8; VALIDATOR_SIGNATURE_BYTES];

/// Most validators a set may hold (the consensus signer bitmap's width).
pub const VALIDATOR_SET_MAX: usize = 256;

/// Why a validator public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorKeyError {
    #[error("validator public key is not {VALIDATOR_PUBLIC_KEY_BYTES} bytes")]
    Length,
    #[error("validator public key does not decode to an Ed25519 point")]
    Malformed,
    #[error("validator public key is a small-order (weak) point")]
    Weak,
}

/// Why a validator set or one of its signatures was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("a validator set holds 1 to {VALIDATOR_SET_MAX} validators, not {size}")]
    SetSize { size: usize },
    #[error("validators {first} and {second} share a public key")]
    DuplicateKey { first: usize, second: usize },
    #[error("signer {index} is not in the validator set")]
    UnknownSigner { index: usize },
    #[error("{signatures} signatures for {signers} signers")]
    SignatureCount { signatures: usize, signers: usize },
    #[error("validator {index}'s signature does not verify")]
    InvalidSignature { index: usize },
}

/// A validator public key that decoded to a point of large order: only `from_bytes` makes one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ValidatorPublicKey {
    key: VerifyingKey,
}

impl ValidatorPublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ValidatorKeyError> {
        let bytes: &[u8; VALIDATOR_PUBLIC_KEY_BYTES] =
            bytes.try_into().map_err(|_| ValidatorKeyError::Length)?;
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ValidatorKeyError::Malformed)?;
        if key.is_weak() {
            return Err(ValidatorKeyError::Weak);
        }
        Ok(Self { key })
    }

    pub fn to_bytes(&self) -> [u8; VALIDATOR_PUBLIC_KEY_BYTES] {
        self.key.to_bytes()
    }

    /// True iff `signature` is this key's strict Ed25519 signature of `msg`.
    pub fn verify(&self, msg: &[u8], signature: &ValidatorSignature) -> bool {
        let signature = Signature::from_bytes(signature);
        self.key.verify_strict(msg, &signature).is_ok()
    }
}

impl std::fmt::Debug for ValidatorPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.to_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "ValidatorPublicKey({hex}..)")
    }
}

/// A validator's secret signing key (zeroised on drop by ed25519-dalek).
#[derive(Clone)]
pub struct ValidatorKey {
    secret: SigningKey,
    public: ValidatorPublicKey,
}

impl ValidatorKey {
    /// A fresh key from 32 bytes of `OsRng`.
    pub fn generate() -> Self {
        let mut seed = [0u8; VALIDATOR_SECRET_BYTES];
        OsRng.fill_bytes(&mut seed);
        let key = Self::from_secret_bytes(&seed);
        seed.fill(0);
        std::hint::black_box(&seed);
        key
    }

    /// The key whose 32-byte secret seed is `secret` (RFC 8032). A seed whose public key is weak
    /// is impossible except with negligible probability; it is refused all the same.
    pub fn from_secret_bytes(secret: &[u8; VALIDATOR_SECRET_BYTES]) -> Self {
        let secret = SigningKey::from_bytes(secret);
        let public = ValidatorPublicKey::from_bytes(secret.verifying_key().as_bytes())
            .expect("an RFC 8032 seed gives a large-order public key");
        Self { secret, public }
    }

    pub fn secret_bytes(&self) -> [u8; VALIDATOR_SECRET_BYTES] {
        self.secret.to_bytes()
    }

    pub fn public(&self) -> &ValidatorPublicKey {
        &self.public
    }

    pub fn sign(&self, msg: &[u8]) -> ValidatorSignature {
        let signature = self.secret.sign(msg).to_bytes();
        debug_assert!(self.public.verify(msg, &signature));
        signature
    }
}

impl std::fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The genesis validators, index = validator index.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    keys: Vec<ValidatorPublicKey>,
}

impl ValidatorSet {
    pub fn new(keys: Vec<ValidatorPublicKey>) -> Result<Self, ValidatorSetError> {
        if keys.is_empty() || keys.len() > VALIDATOR_SET_MAX {
            return Err(ValidatorSetError::SetSize { size: keys.len() });
        }
        for (second, key) in keys.iter().enumerate() {
            if let Some(first) = keys[..second].iter().position(|other| other == key) {
                return Err(ValidatorSetError::DuplicateKey { first, second });
            }
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, index: usize) -> Option<&ValidatorPublicKey> {
        self.keys.get(index)
    }

    /// f: the most faulty validators a set of n = 3f + 1 (or more) tolerates.
    pub fn faults_tolerated(&self) -> usize {
        (self.len() - 1) / 3
    }

    /// n - f signers: any two quorums share at least f + 1 validators.
    pub fn quorum_threshold(&self) -> usize {
        let threshold = self.len() - self.faults_tolerated();
        assert!(threshold > 2 * self.faults_tolerated() && threshold <= self.len());
        threshold
    }

    /// One signature by validator `index` over `msg`.
    pub fn verify(
        &self,
        index: usize,
        msg: &[u8],
        signature: &ValidatorSignature,
    ) -> Result<(), ValidatorSetError> {
        let key = self
            .key(index)
            .ok_or(ValidatorSetError::UnknownSigner { index })?;
        if key.verify(msg, signature) {
            Ok(())
        } else {
            Err(ValidatorSetError::InvalidSignature { index })
        }
    }

    /// Signer k (`signers` ascending) signed `messages[k]` with `signatures[k]` (a TC: each
    /// signer its own timeout message). The quorum size is the caller's rule (consensus owns it);
    /// this checks membership, counts and every signature.
    pub fn verify_all(
        &self,
        signers: &[usize],
        messages: &[&[u8]],
        signatures: &[ValidatorSignature],
    ) -> Result<(), ValidatorSetError> {
        if messages.len() != signers.len() {
            return Err(ValidatorSetError::SignatureCount {
                signatures: signatures.len(),
                signers: signers.len(),
            });
        }
        self.verify_each(signers, signatures, |k| messages[k])
    }

    /// Every signer (ascending) signed the same `msg`, signer k with `signatures[k]`: a QC.
    pub fn verify_same_message(
        &self,
        signers: &[usize],
        msg: &[u8],
        signatures: &[ValidatorSignature],
    ) -> Result<(), ValidatorSetError> {
        self.verify_each(signers, signatures, |_| msg)
    }

    fn verify_each<'m>(
        &self,
        signers: &[usize],
        signatures: &[ValidatorSignature],
        message: impl Fn(usize) -> &'m [u8],
    ) -> Result<(), ValidatorSetError> {
        if signatures.len() != signers.len() {
            return Err(ValidatorSetError::SignatureCount {
                signatures: signatures.len(),
                signers: signers.len(),
            });
        }
        assert!(signers.windows(2).all(|w| w[0] < w[1]), "signers ascending");
        for (k, (index, signature)) in signers.iter().zip(signatures).enumerate() {
            self.verify(*index, message(k), signature)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> (Vec<ValidatorKey>, ValidatorSet) {
        let keys: Vec<ValidatorKey> = (0..n).map(|_| ValidatorKey::generate()).collect();
        let set = ValidatorSet::new(keys.iter().map(|k| *k.public()).collect()).expect("set");
        (keys, set)
    }

    #[test]
    fn a_signature_verifies_for_its_key_and_message_only() {
        let (keys, set) = set(4);
        let sig = keys[1].sign(b"vote");
        assert_eq!(set.verify(1, b"vote", &sig), Ok(()));
        assert_eq!(
            set.verify(2, b"vote", &sig),
            Err(ValidatorSetError::InvalidSignature { index: 2 })
        );
        assert!(set.verify(1, b"vote!", &sig).is_err());
        assert_eq!(
            set.verify(4, b"vote", &sig),
            Err(ValidatorSetError::UnknownSigner { index: 4 })
        );
        let mut flipped = sig;
        flipped[63] ^= 0x01;
        assert!(set.verify(1, b"vote", &flipped).is_err());
    }

    #[test]
    fn a_non_canonical_s_is_refused_by_the_strict_check() {
        // S + L encodes the same scalar as S modulo L: a malleated copy of a valid signature.
        // A lenient verifier might accept it; the strict one must not.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let (keys, set) = set(1);
        let sig = keys[0].sign(b"m");
        let mut malleated = sig;
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_ne!(malleated, sig);
        assert!(set.verify(0, b"m", &malleated).is_err());
    }

    #[test]
    fn verify_all_checks_counts_membership_and_every_signature() {
        let (keys, set) = set(4);
        let msg: &[u8] = b"qc";
        let sigs: Vec<ValidatorSignature> = [0, 2, 3].iter().map(|&i| keys[i].sign(msg)).collect();
        assert_eq!(set.verify_all(&[0, 2, 3], &[msg; 3], &sigs), Ok(()));
        assert!(matches!(
            set.verify_all(&[0, 2], &[msg; 2], &sigs),
            Err(ValidatorSetError::SignatureCount { .. })
        ));
        let mut swapped = sigs.clone();
        swapped.swap(0, 1);
        assert_eq!(
            set.verify_all(&[0, 2, 3], &[msg; 3], &swapped),
            Err(ValidatorSetError::InvalidSignature { index: 0 })
        );
        // Distinct messages (a TC): signer k over message k.
        let msgs: [&[u8]; 2] = [b"t0", b"t3"];
        let tc = [keys[0].sign(msgs[0]), keys[3].sign(msgs[1])];
        assert_eq!(set.verify_all(&[0, 3], &msgs, &tc), Ok(()));
        assert!(set.verify_all(&[0, 3], &[msgs[1], msgs[0]], &tc).is_err());
    }

    #[test]
    fn keys_round_trip_and_bad_public_keys_are_refused() {
        let key = ValidatorKey::generate();
        let again = ValidatorKey::from_secret_bytes(&key.secret_bytes());
        assert_eq!(again.public(), key.public());
        assert_eq!(
            again.sign(b"x"),
            key.sign(b"x"),
            "Ed25519 signing is deterministic"
        );
        let public = ValidatorPublicKey::from_bytes(&key.public().to_bytes()).expect("decodes");
        assert_eq!(&public, key.public());
        assert_eq!(
            ValidatorPublicKey::from_bytes(&[1u8; 31]),
            Err(ValidatorKeyError::Length)
        );
        // The identity point (y = 1) has order 1: weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            ValidatorPublicKey::from_bytes(&identity),
            Err(ValidatorKeyError::Weak)
        );
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.secret_bytes())));
    }

    #[test]
    fn sets_refuse_sizes_and_duplicates_and_quorums_intersect() {
        assert_eq!(
            ValidatorSet::new(Vec::new()).err(),
            Some(ValidatorSetError::SetSize { size: 0 })
        );
        let key = *ValidatorKey::generate().public();
        assert_eq!(
            ValidatorSet::new(vec![key, key]).err(),
            Some(ValidatorSetError::DuplicateKey {
                first: 0,
                second: 1
            })
        );
        for n in 1..=13 {
            let (_, s) = set(n);
            let (q, f) = (s.quorum_threshold(), s.faults_tolerated());
            assert!(
                2 * q > n + f,
                "n {n}: two quorums share an honest validator"
            );
            assert_eq!(q, n - f);
        }
    }
}
