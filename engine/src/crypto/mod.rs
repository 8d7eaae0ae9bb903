//! `crypto`: BLS12-381 `min_sig` signatures (blst) for requests and consensus votes.
//!
//! Architecture invariant: this module never accepts a signature it has not verified, every
//! public key it holds passed a proof of possession and a subgroup check once at load, and batch
//! verification draws its random scalars from `OsRng`. No I/O except `keyfile`.
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
//! - `quorum`: votes, signer bitmaps and aggregation; `validators`: the validator set and QC checks.

mod batch;
mod curve;
mod encoded;
mod keyfile;
mod keys;
mod quorum;
mod registry;
mod request;
mod validators;

pub use batch::{
    BatchVerifier, Strategy, VerifyCode, VERIFY_BATCH_REQUESTS_MAX, VERIFY_CHUNK_ITEMS_MIN,
};
pub use encoded::{DigestedRef, EncodedRequest};
pub use keyfile::{load_key_file, save_key_file, KeyFileError, KeyKind, KEY_FILE_BYTES};
pub use keys::{HashedMessage, KeyError, KeyPair, ValidatedPublicKey};
pub use quorum::{
    aggregate, aggregate_signatures, sign_timeout, sign_vote, sum_signatures_unchecked,
    timeout_message, verify_vote, vote_message, QuorumSignature, SignerBitmap, ValidatorIndex,
    QUORUM_SIGNATURE_BYTES, SIGNER_BITMAP_BYTES, TIMEOUT_MESSAGE_BYTES, VALIDATORS_MAX,
    VOTE_MESSAGE_BYTES,
};
pub use registry::{Registry, RegistryError, INSTITUTIONS_MAX};
pub use request::{
    DecodeError, Request, SignedEnvelope, SignedRequest, SignedRequestRef, REQUEST_HEADER_BYTES,
    REQUEST_WIRE_BYTES_MAX,
};
pub use validators::{QuorumError, ValidatorSet};

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
/// Signing DST for consensus messages (votes and timeouts; the message carries its own tag).
pub const CONSENSUS_DST: &[u8] = b"RECKON-V1-CONSENSUS-BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// Proof-of-possession DST: the IETF `min_sig` PoP ciphersuite tag.
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// A compressed signature on the wire.
pub type SignatureBytes = [u8; SIGNATURE_BYTES];
/// A compressed public key on the wire.
pub type PublicKeyBytes = [u8; PUBLIC_KEY_BYTES];

#[cfg(test)]
mod tests_batch;
#[cfg(test)]
mod tests_quorum;
