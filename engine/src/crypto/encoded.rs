//! `EncodedRequest`: a signed request's wire bytes, shared (`Arc`), with its signing digest
//! computed at most once per node.
//!
//! A 1 MiB request body costs a BLAKE3 pass each time its digest is needed (ingress' replay
//! check, the batch verifier, the waiter and mempool item, execute's reply and committed-id
//! record). The node keeps the bytes of a request in one `EncodedRequest` from ingress (or from a
//! peer batch, or the log) to execute, and its digest lives beside the bytes in a `OnceLock`.
//!
//! Why a digest can never belong to another request: the fields are private, and the only code
//! that fills the cell is `DigestedRef::digest`, which hashes the view decoded from this very
//! request's bytes (`SignedRequestRef::digest`, the one digest computation). Nothing can set a
//! digest from outside, and the bytes never change after construction. A clone shares the bytes
//! and copies the cell (a digest computed later in one clone is not seen by the other; it is
//! computed again there, never wrong).
//!
//! The batch verifier reads digests through `SignedEnvelope::digest`, so verifying
//! `DigestedRef`s fills the cells (in parallel on its pool) and whoever holds the request later
//! reuses the digest the signature was checked against.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use super::request::{DecodeError, SignedEnvelope, SignedRequestRef, DIGEST_BYTES};
use super::SignatureBytes;
use crate::types::{ChainId, InstitutionId};

/// A signed request's wire bytes and, once computed, its signing digest. The bytes are not
/// validated at construction (a batch read from a peer or the log may hold anything); `digested`
/// decodes them and fails without panicking on bad input. Dereferences to the wire bytes.
#[derive(Clone)]
pub struct EncodedRequest {
    bytes: Arc<[u8]>,
    digest: OnceLock<[u8; DIGEST_BYTES]>,
}

impl EncodedRequest {
    /// Wraps wire bytes; no digest yet.
    pub fn new(bytes: Arc<[u8]>) -> Self {
        Self {
            bytes,
            digest: OnceLock::new(),
        }
    }

    /// The wire bytes.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// The decoded view, paired with this request's digest cell. Never panics on bad bytes.
    pub fn digested(&self) -> Result<DigestedRef<'_>, DecodeError> {
        Ok(DigestedRef {
            view: SignedRequestRef::decode(&self.bytes)?,
            digest: &self.digest,
        })
    }

    /// The signing digest (hashed now unless already computed), or why the bytes do not decode.
    pub fn digest(&self) -> Result<[u8; DIGEST_BYTES], DecodeError> {
        self.digested().map(|request| request.digest())
    }

    /// The digest if it was already computed on this node; never hashes.
    pub fn known_digest(&self) -> Option<[u8; DIGEST_BYTES]> {
        self.digest.get().copied()
    }
}

impl From<Arc<[u8]>> for EncodedRequest {
    fn from(bytes: Arc<[u8]>) -> Self {
        Self::new(bytes)
    }
}

impl From<Vec<u8>> for EncodedRequest {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes.into())
    }
}

impl Deref for EncodedRequest {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Equal bytes are equal requests (the digest is a function of the bytes).
impl PartialEq for EncodedRequest {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for EncodedRequest {}

impl fmt::Debug for EncodedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedRequest")
            .field("bytes", &self.bytes.len())
            .field("digest_known", &self.digest.get().is_some())
            .finish()
    }
}

/// A decoded view of an `EncodedRequest` with access to its digest cell; only
/// `EncodedRequest::digested` makes one. A `SignedEnvelope`, so the batch verifier takes it.
#[derive(Clone, Copy)]
pub struct DigestedRef<'a> {
    view: SignedRequestRef<'a>,
    digest: &'a OnceLock<[u8; DIGEST_BYTES]>,
}

impl<'a> DigestedRef<'a> {
    pub fn view(&self) -> SignedRequestRef<'a> {
        self.view
    }

    /// The signing digest: computed from the view on first use, then read from the cell.
    pub fn digest(&self) -> [u8; DIGEST_BYTES] {
        *self.digest.get_or_init(|| self.view.digest())
    }
}

impl SignedEnvelope for DigestedRef<'_> {
    fn institution(&self) -> InstitutionId {
        self.view.institution()
    }
    fn chain_id(&self) -> ChainId {
        self.view.chain_id()
    }
    fn body_len(&self) -> usize {
        self.view.body().len()
    }
    fn signature(&self) -> &SignatureBytes {
        self.view.signature()
    }
    fn digest(&self) -> [u8; DIGEST_BYTES] {
        DigestedRef::digest(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{BatchVerifier, KeyPair, Registry, Request, VerifyCode};
    use crate::types::EVENT_BYTES;

    fn signed(pair: &KeyPair, institution: u32, id: u128, events: usize) -> Vec<u8> {
        Request {
            institution,
            chain_id: 7,
            request_id: id,
            operation: 1,
            body: (0..events * EVENT_BYTES)
                .map(|i| (i as u128 ^ id) as u8)
                .collect(),
        }
        .sign(pair)
        .expect("sign")
        .encode()
    }

    #[test]
    fn the_digest_is_the_signing_digest_of_its_own_bytes() {
        let pair = KeyPair::generate();
        let a = EncodedRequest::from(signed(&pair, 0, 1, 3));
        let b = EncodedRequest::from(signed(&pair, 0, 2, 3));
        assert_eq!(a.known_digest(), None);
        let expected = SignedRequestRef::decode(&a).expect("decodes").digest();
        assert_eq!(a.digest(), Ok(expected));
        assert_eq!(a.known_digest(), Some(expected));
        // A clone carries the computed digest; another request has its own.
        assert_eq!(a.clone().known_digest(), Some(expected));
        assert_eq!(b.known_digest(), None);
        assert_ne!(b.digest().expect("decodes"), expected);
        // Owned and borrowed decoders agree with the cached digest.
        let owned = crate::crypto::SignedRequest::decode(&a).expect("decodes");
        assert_eq!(owned.request.digest(), expected);
    }

    #[test]
    fn bad_bytes_have_no_digest_and_never_panic() {
        for bytes in [vec![], vec![0u8; 10], vec![0xFF; 200]] {
            let request = EncodedRequest::from(bytes);
            assert!(request.digest().is_err());
            assert!(request.digested().is_err());
            assert_eq!(request.known_digest(), None);
        }
    }

    #[test]
    fn the_verifier_fills_the_digests_it_checked_against() {
        let pairs: Vec<KeyPair> = (0..2).map(|_| KeyPair::generate()).collect();
        let mut registry = Registry::new();
        for (institution, pair) in pairs.iter().enumerate() {
            registry
                .insert_validated(institution as u32, *pair.public())
                .expect("register");
        }
        let verifier = BatchVerifier::new(Arc::new(registry), 7);
        let mut requests: Vec<EncodedRequest> = (0..6u32)
            .map(|i| EncodedRequest::from(signed(&pairs[(i % 2) as usize], i % 2, i.into(), 2)))
            .collect();
        // One forged request (institution 1's key for institution 0): checked, still filled.
        requests.push(EncodedRequest::from(signed(&pairs[1], 0, 99, 2)));
        let views: Vec<DigestedRef<'_>> = requests
            .iter()
            .map(|r| r.digested().expect("decodes"))
            .collect();
        let codes = verifier.verify(&views);
        assert_eq!(codes[..6], [VerifyCode::Ok; 6]);
        assert_eq!(codes[6], VerifyCode::InvalidSignature);
        for request in &requests {
            let fresh = SignedRequestRef::decode(request).expect("decodes").digest();
            assert_eq!(request.known_digest(), Some(fresh));
        }
    }
}
