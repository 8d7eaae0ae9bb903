//! Signed requests: the canonical wire encoding and the signing digest.
//!
//! Wire layout (integers little-endian), `REQUEST_HEADER_BYTES` = 36:
//! `institution u32 | chain_id u64 | request_id u128 | operation u8 | reserved [u8; 3] = 0 |
//! event_count u32 | body [event_count × EVENT_BYTES] | signature [48] (compressed G1)`.
//!
//! Signing digest: `blake3(REQUEST_DIGEST_CONTEXT || header[36] || body)`, 32 bytes; the signature
//! is the `min_sig` BLS signature of that digest under `REQUEST_DST`. The header fixes the body
//! length, so the concatenation is unambiguous.

use super::curve;
use super::keys::{KeyPair, ValidatedPublicKey};
use super::{SignatureBytes, REQUEST_DST, SIGNATURE_BYTES};
use crate::types::{ChainId, InstitutionId, BATCH_EVENTS_MAX, EVENT_BYTES, REQUEST_BODY_BYTES_MAX};
use blst::BLST_ERROR;

/// Bytes of the fixed request header on the wire.
pub const REQUEST_HEADER_BYTES: usize = 36;
/// Largest encoded signed request.
pub const REQUEST_WIRE_BYTES_MAX: usize =
    REQUEST_HEADER_BYTES + REQUEST_BODY_BYTES_MAX + SIGNATURE_BYTES;
/// Domain separation for the digest (distinct from every other blake3 use in Reckon).
const REQUEST_DIGEST_CONTEXT: &[u8; 24] = b"reckon.v1.request.digest";
/// Bytes of the signing digest.
pub(crate) const DIGEST_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("request is {len} bytes, shorter than header plus signature")]
    Truncated { len: usize },
    #[error("request carries {count} events; 1 to {BATCH_EVENTS_MAX} are allowed")]
    EventCount { count: u64 },
    #[error("request body is {len} bytes: not a non-zero multiple of {EVENT_BYTES} up to {REQUEST_BODY_BYTES_MAX}")]
    BodyLength { len: usize },
    #[error("request is {len} bytes, its header says {expected}")]
    LengthMismatch { len: usize, expected: usize },
    #[error("request header reserved bytes are not zero")]
    ReservedNonZero,
}

/// An unsigned request: one institution's batch of 1 to `BATCH_EVENTS_MAX` operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub institution: InstitutionId,
    pub chain_id: ChainId,
    /// Idempotency key chosen by the client.
    pub request_id: u128,
    /// Operation kind; its values belong to the ledger, this module treats it as opaque.
    pub operation: u8,
    /// `event_count × EVENT_BYTES` bytes.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub request: Request,
    pub signature: SignatureBytes,
}

/// Checks the body bounds and the multiple-of-`EVENT_BYTES` rule; returns the event count.
pub(crate) fn body_events(len: usize) -> Result<u32, DecodeError> {
    if len == 0 || len > REQUEST_BODY_BYTES_MAX || !len.is_multiple_of(EVENT_BYTES) {
        return Err(DecodeError::BodyLength { len });
    }
    let count = len / EVENT_BYTES;
    assert!((1..=BATCH_EVENTS_MAX).contains(&count));
    Ok(u32::try_from(count).expect("count <= BATCH_EVENTS_MAX"))
}

impl Request {
    /// Validates the body length bounds.
    pub fn validate(&self) -> Result<(), DecodeError> {
        body_events(self.body.len()).map(|_| ())
    }

    /// The header as it appears on the wire. Panics if the body breaks its bounds: callers
    /// construct bodies themselves and `validate` first (`sign` does).
    pub fn header(&self) -> [u8; REQUEST_HEADER_BYTES] {
        let count = body_events(self.body.len()).expect("request body within bounds");
        let mut header = [0u8; REQUEST_HEADER_BYTES];
        header[0..4].copy_from_slice(&self.institution.to_le_bytes());
        header[4..12].copy_from_slice(&self.chain_id.to_le_bytes());
        header[12..28].copy_from_slice(&self.request_id.to_le_bytes());
        header[28] = self.operation;
        // header[29..32] reserved, zero.
        header[32..36].copy_from_slice(&count.to_le_bytes());
        header
    }

    /// The 32-byte signing digest (see the module docs).
    pub fn digest(&self) -> [u8; DIGEST_BYTES] {
        signing_digest(&self.header(), &self.body)
    }

    /// Client side: signs the digest with the institution's key.
    pub fn sign(self, pair: &KeyPair) -> Result<SignedRequest, DecodeError> {
        self.validate()?;
        let signature = pair.sign(&self.digest(), REQUEST_DST);
        Ok(SignedRequest {
            request: self,
            signature,
        })
    }
}

impl SignedRequest {
    /// Client-side check of one signature against a known key (a full two-pairing verify).
    /// The node uses `BatchVerifier`, which also checks the registry and the chain id.
    pub fn verify_with(&self, key: &ValidatedPublicKey) -> bool {
        if self.request.validate().is_err() {
            return false;
        }
        let Ok(signature) = curve::decode_signature(&self.signature) else {
            return false;
        };
        let outcome = signature.verify(
            false,
            &self.request.digest(),
            REQUEST_DST,
            &[],
            key.blst(),
            false,
        );
        outcome == BLST_ERROR::BLST_SUCCESS
    }

    pub fn encoded_len(&self) -> usize {
        REQUEST_HEADER_BYTES + self.request.body.len() + SIGNATURE_BYTES
    }

    /// Appends the canonical wire encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.request.header());
        out.extend_from_slice(&self.request.body);
        out.extend_from_slice(&self.signature);
        assert_eq!(out.len() - start, self.encoded_len());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes one request occupying all of `bytes` into an owned copy of its body (see
    /// `SignedRequestRef::decode`, which this is built on and which copies nothing). Never panics
    /// on bad input; does not verify.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        SignedRequestRef::decode(bytes).map(Self::from)
    }
}

/// A decoded signed request borrowed from its wire bytes: the header fields by value, the body
/// and the signature as slices of the encoding. Only `decode` makes one, so it always holds a
/// well-formed request (1 to `BATCH_EVENTS_MAX` events, reserved bytes zero); it is not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequestRef<'a> {
    institution: InstitutionId,
    chain_id: ChainId,
    request_id: u128,
    operation: u8,
    header: &'a [u8; REQUEST_HEADER_BYTES],
    body: &'a [u8],
    signature: &'a SignatureBytes,
}

impl<'a> SignedRequestRef<'a> {
    /// Decodes one request occupying all of `bytes` without copying it. Never panics on bad
    /// input; does not verify. The single parser of the wire layout (`SignedRequest::decode`
    /// uses it).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let len = bytes.len();
        let truncated = DecodeError::Truncated { len };
        let (header, rest) = bytes
            .split_first_chunk::<REQUEST_HEADER_BYTES>()
            .ok_or(truncated)?;
        let (body, signature) = rest
            .split_last_chunk::<SIGNATURE_BYTES>()
            .ok_or(truncated)?;
        let count = u32::from_le_bytes(array(header, 32)?);
        if count == 0 || count as usize > BATCH_EVENTS_MAX {
            return Err(DecodeError::EventCount {
                count: u64::from(count),
            });
        }
        let expected = REQUEST_HEADER_BYTES + count as usize * EVENT_BYTES + SIGNATURE_BYTES;
        if len != expected {
            return Err(DecodeError::LengthMismatch { len, expected });
        }
        if header[29..32] != [0u8; 3] {
            return Err(DecodeError::ReservedNonZero);
        }
        assert_eq!(body_events(body.len()), Ok(count));
        Ok(Self {
            institution: u32::from_le_bytes(array(header, 0)?),
            chain_id: u64::from_le_bytes(array(header, 4)?),
            request_id: u128::from_le_bytes(array(header, 12)?),
            operation: header[28],
            header,
            body,
            signature,
        })
    }

    pub fn institution(&self) -> InstitutionId {
        self.institution
    }

    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// Idempotency key chosen by the client.
    pub fn request_id(&self) -> u128 {
        self.request_id
    }

    /// Operation kind (opaque here, as in `Request`).
    pub fn operation(&self) -> u8 {
        self.operation
    }

    /// `event_count × EVENT_BYTES` bytes, borrowed from the encoding.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn signature(&self) -> &'a SignatureBytes {
        self.signature
    }

    /// The 32-byte signing digest (see the module docs); equal to the owned request's.
    pub fn digest(&self) -> [u8; DIGEST_BYTES] {
        signing_digest(self.header, self.body)
    }
}

impl From<SignedRequestRef<'_>> for SignedRequest {
    fn from(view: SignedRequestRef<'_>) -> Self {
        SignedRequest {
            request: Request {
                institution: view.institution,
                chain_id: view.chain_id,
                request_id: view.request_id,
                operation: view.operation,
                body: view.body.to_vec(),
            },
            signature: *view.signature,
        }
    }
}

/// What `BatchVerifier` reads from a signed request, so it verifies owned requests and borrowed
/// views (`SignedRequestRef`, no copy of the body) alike.
pub trait SignedEnvelope {
    fn institution(&self) -> InstitutionId;
    fn chain_id(&self) -> ChainId;
    /// Bytes of the body; the verifier checks the bounds (`BodyLength`) before `digest`.
    fn body_len(&self) -> usize;
    fn signature(&self) -> &SignatureBytes;
    /// The signing digest; only called when the body is within bounds.
    fn digest(&self) -> [u8; DIGEST_BYTES];
}

impl SignedEnvelope for SignedRequest {
    fn institution(&self) -> InstitutionId {
        self.request.institution
    }
    fn chain_id(&self) -> ChainId {
        self.request.chain_id
    }
    fn body_len(&self) -> usize {
        self.request.body.len()
    }
    fn signature(&self) -> &SignatureBytes {
        &self.signature
    }
    fn digest(&self) -> [u8; DIGEST_BYTES] {
        self.request.digest()
    }
}

impl SignedEnvelope for SignedRequestRef<'_> {
    fn institution(&self) -> InstitutionId {
        self.institution
    }
    fn chain_id(&self) -> ChainId {
        self.chain_id
    }
    fn body_len(&self) -> usize {
        self.body.len()
    }
    fn signature(&self) -> &SignatureBytes {
        self.signature
    }
    fn digest(&self) -> [u8; DIGEST_BYTES] {
        SignedRequestRef::digest(self)
    }
}

impl<T: SignedEnvelope + ?Sized> SignedEnvelope for &T {
    fn institution(&self) -> InstitutionId {
        (**self).institution()
    }
    fn chain_id(&self) -> ChainId {
        (**self).chain_id()
    }
    fn body_len(&self) -> usize {
        (**self).body_len()
    }
    fn signature(&self) -> &SignatureBytes {
        (**self).signature()
    }
    fn digest(&self) -> [u8; DIGEST_BYTES] {
        (**self).digest()
    }
}

/// `blake3(REQUEST_DIGEST_CONTEXT || header || body)`: the one digest computation, for owned
/// requests and borrowed views.
fn signing_digest(header: &[u8; REQUEST_HEADER_BYTES], body: &[u8]) -> [u8; DIGEST_BYTES] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(REQUEST_DIGEST_CONTEXT);
    hasher.update(header);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

/// The `N` bytes at `offset`, or `Truncated` if they run past the end.
fn array<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], DecodeError> {
    let truncated = DecodeError::Truncated { len: bytes.len() };
    let end = offset.checked_add(N).ok_or(truncated)?;
    bytes
        .get(offset..end)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(events: usize) -> Request {
        Request {
            institution: 0xA1B2_C3D4,
            chain_id: 0x0102_0304_0506_0708,
            request_id: 0x1111_2222_3333_4444_5555_6666_7777_8888,
            operation: 9,
            body: (0..events * EVENT_BYTES).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn encoding_is_little_endian_and_round_trips() {
        let pair = KeyPair::generate();
        let signed = sample(2).sign(&pair).expect("sign");
        let bytes = signed.encode();
        assert_eq!(
            bytes.len(),
            REQUEST_HEADER_BYTES + 2 * EVENT_BYTES + SIGNATURE_BYTES
        );
        assert_eq!(&bytes[0..4], &[0xD4, 0xC3, 0xB2, 0xA1]);
        assert_eq!(&bytes[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[12], 0x88);
        assert_eq!(bytes[28], 9);
        assert_eq!(&bytes[32..36], &[2, 0, 0, 0]);
        assert_eq!(SignedRequest::decode(&bytes), Ok(signed.clone()));
        assert!(signed.verify_with(pair.public()));
        assert!(!signed.verify_with(KeyPair::generate().public()));
        let mut tampered = signed.clone();
        tampered.request.request_id += 1;
        assert!(!tampered.verify_with(pair.public()));
    }

    #[test]
    fn body_bounds() {
        let pair = KeyPair::generate();
        let mut empty = sample(1);
        empty.body.clear();
        assert_eq!(
            empty.sign(&pair).err(),
            Some(DecodeError::BodyLength { len: 0 })
        );
        let mut ragged = sample(1);
        ragged.body.push(0);
        assert_eq!(ragged.validate(), Err(DecodeError::BodyLength { len: 129 }));
        assert!(sample(BATCH_EVENTS_MAX).validate().is_ok());
        assert!(sample(BATCH_EVENTS_MAX + 1).validate().is_err());
    }

    #[test]
    fn decode_refuses_bad_headers() {
        let pair = KeyPair::generate();
        let bytes = sample(1).sign(&pair).expect("sign").encode();
        assert_eq!(
            SignedRequest::decode(&bytes[..50]),
            Err(DecodeError::Truncated { len: 50 })
        );
        let mut zero = bytes.clone();
        zero[32..36].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            SignedRequest::decode(&zero),
            Err(DecodeError::EventCount { count: 0 })
        );
        let mut huge = bytes.clone();
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            SignedRequest::decode(&huge),
            Err(DecodeError::EventCount {
                count: u64::from(u32::MAX)
            })
        );
        let mut two = bytes.clone();
        two[32] = 2;
        assert!(matches!(
            SignedRequest::decode(&two),
            Err(DecodeError::LengthMismatch { .. })
        ));
        let mut reserved = bytes.clone();
        reserved[30] = 1;
        assert_eq!(
            SignedRequest::decode(&reserved),
            Err(DecodeError::ReservedNonZero)
        );
        // Every header field is covered by the digest.
        let base = sample(1);
        let mut other = base.clone();
        other.operation = 10;
        assert_ne!(base.digest(), other.digest());
        other = base.clone();
        other.chain_id += 1;
        assert_ne!(base.digest(), other.digest());
    }

    /// The owned decoder as it was before `SignedRequestRef` (it copied the body while parsing):
    /// the reference both decoders are held to.
    fn reference_decode(bytes: &[u8]) -> Result<SignedRequest, DecodeError> {
        let len = bytes.len();
        if len < REQUEST_HEADER_BYTES + SIGNATURE_BYTES {
            return Err(DecodeError::Truncated { len });
        }
        let count = u32::from_le_bytes(array(bytes, 32)?);
        if count == 0 || count as usize > BATCH_EVENTS_MAX {
            return Err(DecodeError::EventCount {
                count: u64::from(count),
            });
        }
        let expected = REQUEST_HEADER_BYTES + count as usize * EVENT_BYTES + SIGNATURE_BYTES;
        if len != expected {
            return Err(DecodeError::LengthMismatch { len, expected });
        }
        if bytes[29..32] != [0u8; 3] {
            return Err(DecodeError::ReservedNonZero);
        }
        let request = Request {
            institution: u32::from_le_bytes(array(bytes, 0)?),
            chain_id: u64::from_le_bytes(array(bytes, 4)?),
            request_id: u128::from_le_bytes(array(bytes, 12)?),
            operation: bytes[28],
            body: bytes[REQUEST_HEADER_BYTES..len - SIGNATURE_BYTES].to_vec(),
        };
        let signature = bytes[len - SIGNATURE_BYTES..]
            .try_into()
            .map_err(|_| DecodeError::Truncated { len })?;
        Ok(SignedRequest { request, signature })
    }

    /// Both decoders agree with the reference on `bytes`, and the view's fields and digest are
    /// the owned request's.
    fn decoders_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let expected = reference_decode(bytes);
        let view = SignedRequestRef::decode(bytes);
        prop_assert_eq!(SignedRequest::decode(bytes), expected.clone());
        prop_assert_eq!(view.map(SignedRequest::from), expected.clone());
        if let (Ok(view), Ok(owned)) = (view, expected) {
            prop_assert_eq!(view.institution(), owned.request.institution);
            prop_assert_eq!(view.chain_id(), owned.request.chain_id);
            prop_assert_eq!(view.request_id(), owned.request.request_id);
            prop_assert_eq!(view.operation(), owned.request.operation);
            prop_assert_eq!(view.body(), &owned.request.body[..]);
            prop_assert_eq!(view.signature(), &owned.signature);
            prop_assert_eq!(view.digest(), owned.request.digest());
            prop_assert_eq!(
                SignedEnvelope::digest(&view),
                SignedEnvelope::digest(&owned)
            );
        }
        Ok(())
    }

    #[test]
    fn the_view_borrows_the_encoding() {
        let pair = KeyPair::generate();
        let signed = sample(3).sign(&pair).expect("sign");
        let bytes = signed.encode();
        let view = SignedRequestRef::decode(&bytes).expect("decode");
        assert!(std::ptr::eq(
            view.body(),
            &bytes[REQUEST_HEADER_BYTES..bytes.len() - SIGNATURE_BYTES]
        ));
        assert_eq!(view.digest(), signed.request.digest());
        assert_eq!(SignedRequest::from(view), signed);
        assert!(signed.verify_with(pair.public()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn decode_of_mutated_encodings_never_panics(
            events in 1usize..4,
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let signed = SignedRequest { request: sample(events), signature: [0x99; SIGNATURE_BYTES] };
            let mut bytes = signed.encode();
            let at = position.index(bytes.len());
            bytes[at] = value;
            match SignedRequest::decode(&bytes) {
                Ok(decoded) => prop_assert_eq!(decoded.encode(), bytes.clone()),
                Err(error) => prop_assert!((28..REQUEST_HEADER_BYTES).contains(&at), "{error:?} at {at}"),
            }
            let kept = cut.index(bytes.len());
            prop_assert!(SignedRequest::decode(&bytes[..kept]).is_err());
        }

        #[test]
        fn borrowed_and_owned_decode_agree_on_mutated_encodings(
            events in 1usize..4,
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            extra in proptest::collection::vec(any::<u8>(), 0..3 * EVENT_BYTES),
        ) {
            let signed = SignedRequest { request: sample(events), signature: [0x99; SIGNATURE_BYTES] };
            let mut bytes = signed.encode();
            for (position, value) in mutations {
                let at = position.index(bytes.len());
                bytes[at] = value;
            }
            decoders_agree(&bytes)?;
            decoders_agree(&bytes[..cut.index(bytes.len())])?;
            bytes.extend_from_slice(&extra);
            decoders_agree(&bytes)?;
            // A header whose count matches a longer body than the one it was encoded with.
            if let Some(count) = bytes.get_mut(32) {
                *count = count.wrapping_add(1);
            }
            decoders_agree(&bytes)?;
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(decoded) = SignedRequest::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes.clone());
            }
            decoders_agree(&bytes)?;
        }
    }
}
