//! Request signing: one BLS signature per engine request, with one key per institution.
//!
//! Keys are derived deterministically from a seed for loadgen runs (so a run is reproducible
//! and a node under test can be given the same public keys), or loaded from the key files
//! `reckon init` writes (`Keyring::load_key_file`, the hook for the TCP target).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use engine::crypto::{
    load_institution_key, KeyError, KeyFileError, KeyPair, Registry, RegistryError, Request,
    SignedRequest,
};
use engine::types::{ChainId, InstitutionId, Operation};
use thiserror::Error;

/// Domain of the deterministic key derivation (blake3 of this, the seed and the institution).
const KEY_DERIVATION_CONTEXT: &[u8] = b"reckon.loadgen.institution-key.v1";
/// Most keys one keyring holds (the engine registry's own bound).
pub const KEYS_MAX: usize = engine::crypto::INSTITUTIONS_MAX;

#[derive(Debug, Error)]
pub enum SigningError {
    /// A keyring loaded from key files holds only the institutions whose files were given
    /// (`pair` derives a missing key only for a derived keyring; `sign_loaded` never does).
    #[error(
        "no signing key for institution {0}: the keyring holds no key for it (load its key file, \
         or call `pair` first on a derived keyring)"
    )]
    NoKey(InstitutionId),
    #[error("keyring full: at most {KEYS_MAX} institutions")]
    Full,
    #[error("deriving the key of institution {institution}: {source}")]
    Derive {
        institution: InstitutionId,
        source: KeyError,
    },
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("request body out of bounds: {0}")]
    Body(#[from] engine::crypto::DecodeError),
}

/// Where keys come from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Derived from this seed on first use.
    Derived(u64),
    /// Only keys inserted or loaded from files.
    Files,
}

/// One key per institution; signs engine requests.
pub struct Keyring {
    chain_id: ChainId,
    source: Source,
    pairs: HashMap<InstitutionId, KeyPair>,
}

/// The secret scalar of `institution` for `seed`: 32 big-endian bytes below 2^254, so always
/// below the BLS12-381 group order.
pub fn derived_secret(seed: u64, institution: InstitutionId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(KEY_DERIVATION_CONTEXT);
    hasher.update(&seed.to_le_bytes());
    hasher.update(&institution.to_le_bytes());
    let mut secret = *hasher.finalize().as_bytes();
    secret[0] &= 0x3f;
    secret[31] |= 1; // never zero
    secret
}

impl Keyring {
    /// Keys derived from `seed` (the same seed gives the same keys everywhere).
    pub fn derived(seed: u64, chain_id: ChainId) -> Keyring {
        Keyring {
            chain_id,
            source: Source::Derived(seed),
            pairs: HashMap::new(),
        }
    }

    /// An empty keyring filled by `insert` / `load_key_file` (keys from `reckon init`).
    pub fn from_files(chain_id: ChainId) -> Keyring {
        Keyring {
            chain_id,
            source: Source::Files,
            pairs: HashMap::new(),
        }
    }

    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    pub fn insert(
        &mut self,
        institution: InstitutionId,
        pair: KeyPair,
    ) -> Result<(), SigningError> {
        if self.pairs.len() >= KEYS_MAX && !self.pairs.contains_key(&institution) {
            return Err(SigningError::Full);
        }
        self.pairs.insert(institution, pair);
        Ok(())
    }

    /// Loads an institution key file written by `reckon init` (mode 0600, kind institution).
    pub fn load_key_file(
        &mut self,
        institution: InstitutionId,
        path: &Path,
    ) -> Result<(), SigningError> {
        let pair = load_institution_key(path)?;
        self.insert(institution, pair)
    }

    /// The key of `institution`, deriving it on first use for a derived keyring.
    pub fn pair(&mut self, institution: InstitutionId) -> Result<&KeyPair, SigningError> {
        if !self.pairs.contains_key(&institution) {
            let Source::Derived(seed) = self.source else {
                return Err(SigningError::NoKey(institution));
            };
            let secret = derived_secret(seed, institution);
            let pair =
                KeyPair::from_secret_bytes(&secret).map_err(|source| SigningError::Derive {
                    institution,
                    source,
                })?;
            self.insert(institution, pair)?;
        }
        self.pairs
            .get(&institution)
            .ok_or(SigningError::NoKey(institution))
    }

    /// Signs one request body of `requester` (an `EngineRequest`'s, moved in).
    pub fn sign(
        &mut self,
        request_id: u128,
        requester: InstitutionId,
        operation: Operation,
        body: Vec<u8>,
    ) -> Result<SignedRequest, SigningError> {
        self.pair(requester)?;
        self.sign_loaded(request_id, requester, operation, body)
    }

    /// As `sign`, with a key already in the keyring (`pair` derives a missing one first). Takes
    /// `&self`, so several threads can sign with one keyring (presigning, `tcp::Outbox`).
    pub fn sign_loaded(
        &self,
        request_id: u128,
        requester: InstitutionId,
        operation: Operation,
        body: Vec<u8>,
    ) -> Result<SignedRequest, SigningError> {
        let pair = self
            .pairs
            .get(&requester)
            .ok_or(SigningError::NoKey(requester))?;
        let unsigned = Request {
            institution: requester,
            chain_id: self.chain_id,
            request_id,
            operation: operation as u8,
            body,
        };
        Ok(unsigned.sign(pair)?)
    }

    /// A verifier registry with the public keys of every institution in the keyring.
    pub fn registry(&self) -> Result<Arc<Registry>, SigningError> {
        let mut registry = Registry::new();
        let mut ids: Vec<&InstitutionId> = self.pairs.keys().collect();
        ids.sort();
        for id in ids {
            registry.insert_validated(*id, *self.pairs[id].public())?;
        }
        Ok(Arc::new(registry))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}
