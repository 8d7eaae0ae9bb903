//! Institution id to validated public key. Every key is validated once, at insertion.

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
        self.keys.push((institution, key));
        self.slots.insert(institution, slot);
        assert_eq!(self.slots.len(), self.keys.len());
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
