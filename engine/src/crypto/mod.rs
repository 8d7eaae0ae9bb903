//! `crypto`: BLS12-381 `min_sig` signatures (blst) for institutions' requests, verified in
//! batches; Ed25519 signatures for validators' consensus messages.
//!
//! Architecture invariant: this module never accepts a signature it has not verified, every
//! BLS public key it holds passed a proof of possession and a subgroup check once at load, every
//! validator key decoded to a point of large order, and batch verification draws its random
//! scalars from `OsRng`. No I/O except `keyfile`.
//!
//! Map:
//! - `keys`: key generation from a CSPRNG, proof of possession, validated public keys.
//! - `keyfile`: the on-disk key file (header, checksum, 0600 permissions).
//! - `registry`: institution id to validated public key.
//! - `request`: `Request`, `SignedRequest`, the borrowed `SignedRequestRef` (zero-copy decode),
//!   canonical wire encoding and the signing digest.
//! - `encoded`: `EncodedRequest`, shared wire bytes with their signing digest computed at most
//!   once (filled by whoever hashes first, e.g. the batch verifier through `DigestedRef`).
//! - `curve`: the few raw blst calls the batched verifier needs (the only `unsafe` here).
//! - `batch`: the parallel batched verifier with bisection and per-request result codes.
//! - `validator`: validators' Ed25519 keys and the validator set that checks votes, QCs and TCs
//!   (one strict signature check per signer).

mod batch;
mod curve;
mod encoded;
mod keyfile;
mod keys;
mod registry;
mod request;
mod validator;

pub use batch::{
    BatchVerifier, Strategy, VerifyCode, VERIFY_BATCH_REQUESTS_MAX, VERIFY_CHUNK_ITEMS_MIN,
};
pub use encoded::{DigestedRef, EncodedRequest};
pub use keyfile::{
    load_institution_key, load_validator_key, save_institution_key, save_validator_key,
    KeyFileError, KeyKind, KEY_FILE_BYTES, VALIDATOR_KEY_FILE_BYTES,
};
pub use keys::{KeyError, KeyPair, ValidatedPublicKey};
pub use registry::{Registry, RegistryError, INSTITUTIONS_MAX};
pub use request::{
    DecodeError, Request, SignedEnvelope, SignedRequest, SignedRequestRef, REQUEST_HEADER_BYTES,
    REQUEST_WIRE_BYTES_MAX,
};
pub use validator::{
    ValidatorKey, ValidatorKeyError, ValidatorPublicKey, ValidatorSet, ValidatorSetError,
    ValidatorSignature, VALIDATOR_PUBLIC_KEY_BYTES, VALIDATOR_SECRET_BYTES, VALIDATOR_SET_MAX,
    VALIDATOR_SIGNATURE_BYTES,
};

/// Compressed `min_sig` signature (a G1 point).
pub const SIGNATURE_BYTES: usize = 48;
/// Compressed `min_sig` public key (a G2 point).
pub const PUBLIC_KEY_BYTES: usize = 96;
/// Secret scalar, big-endian as blst serialises it.
pub const SECRET_KEY_BYTES: usize = 32;
/// Bits of each random batch-verification scalar (the standard 64-bit security margin for
/// random linear combinations; a forged batch passes with probability at most 2^-64).
pub const BATCH_SCALAR_BITS: usize = 64;

/// Signing DST for requests: an application tag plus the IETF proof-of-possession scheme name
/// (rogue keys are excluded by PoPs, not by distinct messages).
pub const REQUEST_DST: &[u8] = b"RECKON-V1-REQUEST-BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// Proof-of-possession DST: the IETF `min_sig` PoP ciphersuite tag.
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// A compressed signature on the wire.
pub type SignatureBytes = [u8; SIGNATURE_BYTES];
/// A compressed public key on the wire.
pub type PublicKeyBytes = [u8; PUBLIC_KEY_BYTES];

#[cfg(test)]
mod tests_batch;
