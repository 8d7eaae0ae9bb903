//! Key generation from a CSPRNG, proofs of possession and validated public keys.

use super::{PublicKeyBytes, SignatureBytes, POP_DST, PUBLIC_KEY_BYTES, SECRET_KEY_BYTES};
use blst::min_sig::{PublicKey, SecretKey, Signature};
use blst::BLST_ERROR;
use rand::rngs::OsRng;
use rand::RngCore;

/// Bytes of input key material drawn from the OS CSPRNG per key (blst requires at least 32).
const KEY_IKM_BYTES: usize = 32;

/// Why a public key or proof of possession was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key bytes do not decode to a curve point")]
    PublicKeyMalformed,
    #[error("public key is the point at infinity")]
    PublicKeyInfinity,
    #[error("public key is not in the G2 prime-order subgroup")]
    PublicKeyNotInGroup,
    #[error("proof of possession does not decode to a curve point")]
    PopMalformed,
    #[error("proof of possession does not verify against the public key")]
    PopInvalid,
    #[error("secret key bytes are not a valid non-zero scalar")]
    SecretKeyInvalid,
}

/// A public key that passed decoding, the infinity check, the subgroup check and its proof of
/// possession. Only `ValidatedPublicKey::new` makes one, so holding one is the proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedPublicKey {
    key: PublicKey,
}

impl ValidatedPublicKey {
    /// Validates once at load: decode, not infinity, G2 subgroup, proof of possession.
    pub fn new(public: &[u8], pop: &[u8]) -> Result<Self, KeyError> {
        let key = decode_public_key(public)?;
        let pop_sig = Signature::from_bytes(pop).map_err(|_| KeyError::PopMalformed)?;
        // The PoP is verified with a subgroup check on the signature; the key is checked above.
        let outcome = pop_sig.verify(true, &key.to_bytes(), POP_DST, &[], &key, false);
        if outcome != BLST_ERROR::BLST_SUCCESS {
            return Err(KeyError::PopInvalid);
        }
        Ok(Self { key })
    }

    pub fn blst(&self) -> &PublicKey {
        &self.key
    }

    pub fn to_bytes(&self) -> PublicKeyBytes {
        let bytes = self.key.to_bytes();
        assert_eq!(bytes.len(), PUBLIC_KEY_BYTES);
        bytes
    }
}

fn decode_public_key(public: &[u8]) -> Result<PublicKey, KeyError> {
    if public.len() != PUBLIC_KEY_BYTES {
        return Err(KeyError::PublicKeyMalformed);
    }
    let key = PublicKey::from_bytes(public).map_err(|_| KeyError::PublicKeyMalformed)?;
    match key.validate() {
        Ok(()) => Ok(key),
        Err(BLST_ERROR::BLST_PK_IS_INFINITY) => Err(KeyError::PublicKeyInfinity),
        Err(_) => Err(KeyError::PublicKeyNotInGroup),
    }
}

/// A secret key with its public key and proof of possession.
#[derive(Clone)]
pub struct KeyPair {
    secret: SecretKey,
    public: ValidatedPublicKey,
    pop: SignatureBytes,
}

impl KeyPair {
    /// A fresh key from 32 bytes of `OsRng` input key material (IETF KeyGen via blst).
    pub fn generate() -> Self {
        let mut ikm = [0u8; KEY_IKM_BYTES];
        OsRng.fill_bytes(&mut ikm);
        let secret = SecretKey::key_gen(&ikm, &[]);
        ikm.fill(0);
        // key_gen only fails for short IKM, which KEY_IKM_BYTES rules out.
        let secret = secret.expect("32-byte IKM is accepted by key_gen");
        Self::from_secret(secret)
    }

    /// Rebuilds a pair from secret bytes (big-endian scalar), deriving the public key and PoP.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != SECRET_KEY_BYTES {
            return Err(KeyError::SecretKeyInvalid);
        }
        let secret = SecretKey::from_bytes(bytes).map_err(|_| KeyError::SecretKeyInvalid)?;
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: SecretKey) -> Self {
        let key = secret.sk_to_pk();
        let pop = secret.sign(&key.to_bytes(), POP_DST, &[]).to_bytes();
        let public = ValidatedPublicKey::new(&key.to_bytes(), &pop)
            .expect("a key derived from a valid scalar has a valid proof of possession");
        Self {
            secret,
            public,
            pop,
        }
    }

    pub fn public(&self) -> &ValidatedPublicKey {
        &self.public
    }

    pub fn pop(&self) -> &SignatureBytes {
        &self.pop
    }

    pub(crate) fn secret_bytes(&self) -> [u8; SECRET_KEY_BYTES] {
        self.secret.to_bytes()
    }

    /// Signs `msg` under `dst` (callers pass one of the module's DSTs).
    pub(crate) fn sign(&self, msg: &[u8], dst: &[u8]) -> SignatureBytes {
        self.secret.sign(msg, dst, &[]).to_bytes()
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ_and_carry_valid_pops() {
        let a = KeyPair::generate();
        let b = KeyPair::generate();
        assert_ne!(a.public().to_bytes(), b.public().to_bytes());
        assert!(ValidatedPublicKey::new(&a.public().to_bytes(), a.pop()).is_ok());
        // A PoP belongs to exactly one key.
        let swapped = ValidatedPublicKey::new(&a.public().to_bytes(), b.pop());
        assert_eq!(swapped, Err(KeyError::PopInvalid));
        let rebuilt = KeyPair::from_secret_bytes(&a.secret_bytes()).expect("round trip");
        assert_eq!(rebuilt.public(), a.public());
    }

    #[test]
    fn malformed_and_infinity_keys_are_refused() {
        let a = KeyPair::generate();
        let garbage = [0x5au8; PUBLIC_KEY_BYTES];
        assert_eq!(
            ValidatedPublicKey::new(&garbage, a.pop()),
            Err(KeyError::PublicKeyMalformed)
        );
        let mut infinity = [0u8; PUBLIC_KEY_BYTES];
        infinity[0] = 0xc0; // compressed + infinity flags
        assert_eq!(
            ValidatedPublicKey::new(&infinity, a.pop()),
            Err(KeyError::PublicKeyInfinity)
        );
        assert_eq!(
            ValidatedPublicKey::new(&a.public().to_bytes()[..95], a.pop()),
            Err(KeyError::PublicKeyMalformed)
        );
        assert_eq!(
            ValidatedPublicKey::new(&a.public().to_bytes(), &[1u8; 48]),
            Err(KeyError::PopMalformed)
        );
        assert_eq!(
            KeyPair::from_secret_bytes(&[0u8; 32]).err(),
            Some(KeyError::SecretKeyInvalid)
        );
    }
}
