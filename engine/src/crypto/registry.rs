//! Institution id to validated public key. Every key is validated once, at insertion.

use super::curve::{self, G2Lines};
use super::keys::{KeyError, ValidatedPublicKey};
use crate::types::InstitutionId;
use std::collections::HashMap;

/// Most institutions one registry holds (a consortium is tens of banks; this bounds memory).
pub const INSTITUTIONS_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("institution {0} is already registered")]
    Duplicate(InstitutionId),
    #[error("registry is full ({INSTITUTIONS_MAX} institutions)")]
    Full,
    #[error("institution {institution}: {source}")]
    Key {
        institution: InstitutionId,
        source: KeyError,
    },
}

/// The signer slot of an institution: a dense index used by the verifier to group by signer.
pub(crate) type SignerSlot = u32;

#[derive(Debug, Default, Clone)]
pub struct Registry {
    slots: HashMap<InstitutionId, SignerSlot>,
    keys: Vec<(InstitutionId, ValidatedPublicKey)>,
    /// `lines[slot]`: the Miller-loop lines of `keys[slot]`, for the grouped batch check.
    ///
    /// Precomputed eagerly, at insertion, rather than lazily per slot: insertion happens at
    /// startup and already pays a proof-of-possession check (two Miller loops and a final
    /// exponentiation), which the precomputation (a quarter of one Miller loop's instructions)
    /// adds little to; the verify path then reads plain memory, with no first-use synchronisation or
    /// first-batch latency. The cost is 19,584 bytes per key whether or not the institution ever
    /// signs: under 1 MB for a consortium of tens of banks, 80 MB at `INSTITUTIONS_MAX`. A lazy
    /// `OnceLock` per slot saves only the lines of registered institutions that never sign, and
    /// has the same bound.
    lines: Vec<G2Lines>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates `public` with its proof of possession and registers it.
    pub fn insert(
        &mut self,
        institution: InstitutionId,
        public: &[u8],
        pop: &[u8],
    ) -> Result<(), RegistryError> {
        let key = ValidatedPublicKey::new(public, pop).map_err(|source| RegistryError::Key {
            institution,
            source,
        })?;
        self.insert_validated(institution, key)
    }

    pub fn insert_validated(
        &mut self,
        institution: InstitutionId,
        key: ValidatedPublicKey,
    ) -> Result<(), RegistryError> {
        if self.slots.contains_key(&institution) {
            return Err(RegistryError::Duplicate(institution));
        }
        if self.keys.len() >= INSTITUTIONS_MAX {
            return Err(RegistryError::Full);
        }
        let slot = SignerSlot::try_from(self.keys.len()).expect("bounded by INSTITUTIONS_MAX");
        self.lines.push(curve::precompute_lines(key.blst().into()));
        self.keys.push((institution, key));
        self.slots.insert(institution, slot);
        assert_eq!(self.slots.len(), self.keys.len());
        assert_eq!(self.lines.len(), self.keys.len());
        Ok(())
    }

    pub fn get(&self, institution: InstitutionId) -> Option<&ValidatedPublicKey> {
        self.slot(institution).map(|slot| self.key_at(slot))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn slot(&self, institution: InstitutionId) -> Option<SignerSlot> {
        self.slots.get(&institution).copied()
    }

    pub(crate) fn key_at(&self, slot: SignerSlot) -> &ValidatedPublicKey {
        let (_, key) = &self.keys[slot as usize];
        key
    }

    /// The precomputed Miller-loop lines of `key_at(slot)`.
    pub(crate) fn lines_at(&self, slot: SignerSlot) -> &G2Lines {
        &self.lines[slot as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;

    #[test]
    fn insert_lookup_and_refusals() {
        let mut registry = Registry::new();
        let a = KeyPair::generate();
        let b = KeyPair::generate();
        registry
            .insert(7, &a.public().to_bytes(), a.pop())
            .expect("insert a");
        assert_eq!(registry.get(7), Some(a.public()));
        assert_eq!(registry.get(8), None);
        assert_eq!(
            registry.insert(7, &b.public().to_bytes(), b.pop()),
            Err(RegistryError::Duplicate(7))
        );
        let wrong_pop = registry.insert(8, &b.public().to_bytes(), a.pop());
        assert_eq!(
            wrong_pop,
            Err(RegistryError::Key {
                institution: 8,
                source: KeyError::PopInvalid
            })
        );
        registry
            .insert(8, &b.public().to_bytes(), b.pop())
            .expect("insert b");
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.slot(8), Some(1));
    }
}
