//! Consensus votes, signer bitmaps and vote aggregation into one quorum signature.
//!
//! Messages (integers little-endian), signed under `CONSENSUS_DST`; the leading tag byte keeps
//! votes and timeouts apart:
//! - vote: `0x01 | chain_id u64 | round u64 | block_hash [32]` (49 bytes)
//! - timeout: `0x02 | chain_id u64 | round u64 | high_qc_round u64` (25 bytes)

use super::curve::{self, PointError};
use super::keys::KeyPair;
use super::validators::{QuorumError, ValidatorSet};
use super::{SignatureBytes, CONSENSUS_DST};
use crate::types::ChainId;
use blst::min_sig::{AggregateSignature, Signature};

/// Most validators a set may hold; the signer bitmap has exactly this many bits.
pub const VALIDATORS_MAX: usize = 256;
const BITMAP_WORDS: usize = VALIDATORS_MAX / 64;
/// Bytes of a signer bitmap on the wire (little-endian u64 words, bit i = validator i).
pub const SIGNER_BITMAP_BYTES: usize = VALIDATORS_MAX / 8;
/// Bytes of a vote message and a timeout message.
pub const VOTE_MESSAGE_BYTES: usize = 49;
pub const TIMEOUT_MESSAGE_BYTES: usize = 25;
const TAG_VOTE: u8 = 0x01;
const TAG_TIMEOUT: u8 = 0x02;

/// Position of a validator in its `ValidatorSet`.
pub type ValidatorIndex = u16;

/// Which validators signed: a fixed set of `VALIDATORS_MAX` bits. It cannot express a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SignerBitmap {
    words: [u64; BITMAP_WORDS],
}

impl SignerBitmap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `index`; returns false if it was already set. Errors if `index >= VALIDATORS_MAX`.
    pub fn insert(&mut self, index: ValidatorIndex) -> Result<bool, QuorumError> {
        let position = usize::from(index);
        if position >= VALIDATORS_MAX {
            return Err(QuorumError::UnknownSigner { index: position });
        }
        let (word, bit) = (position / 64, 1u64 << (position % 64));
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        assert!(self.contains(index));
        Ok(fresh)
    }

    pub fn contains(&self, index: ValidatorIndex) -> bool {
        let position = usize::from(index);
        position < VALIDATORS_MAX && self.words[position / 64] & (1u64 << (position % 64)) != 0
    }

    pub fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Set positions in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..VALIDATORS_MAX)
            .filter(|position| self.words[position / 64] & (1u64 << (position % 64)) != 0)
    }

    /// Highest set position, if any.
    pub fn highest(&self) -> Option<usize> {
        let word = self.words.iter().rposition(|word| *word != 0)?;
        Some(word * 64 + 63 - self.words[word].leading_zeros() as usize)
    }

    pub fn to_bytes(&self) -> [u8; SIGNER_BITMAP_BYTES] {
        let mut out = [0u8; SIGNER_BITMAP_BYTES];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8; SIGNER_BITMAP_BYTES]) -> Self {
        let mut words = [0u64; BITMAP_WORDS];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8)"));
        }
        Self { words }
    }
}

/// One aggregate signature plus who signed: the signature half of a QC or TC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumSignature {
    pub signers: SignerBitmap,
    pub signature: SignatureBytes,
}

/// Bytes of a quorum signature on the wire: signer bitmap then compressed signature.
pub const QUORUM_SIGNATURE_BYTES: usize = SIGNER_BITMAP_BYTES + super::SIGNATURE_BYTES;

impl QuorumSignature {
    pub fn to_bytes(&self) -> [u8; QUORUM_SIGNATURE_BYTES] {
        let mut out = [0u8; QUORUM_SIGNATURE_BYTES];
        out[..SIGNER_BITMAP_BYTES].copy_from_slice(&self.signers.to_bytes());
        out[SIGNER_BITMAP_BYTES..].copy_from_slice(&self.signature);
        out
    }

    /// Splits the fixed layout; the signature is checked when the quorum is verified.
    pub fn from_bytes(bytes: &[u8; QUORUM_SIGNATURE_BYTES]) -> Self {
        let mut bitmap = [0u8; SIGNER_BITMAP_BYTES];
        bitmap.copy_from_slice(&bytes[..SIGNER_BITMAP_BYTES]);
        let mut signature = [0u8; super::SIGNATURE_BYTES];
        signature.copy_from_slice(&bytes[SIGNER_BITMAP_BYTES..]);
        Self {
            signers: SignerBitmap::from_bytes(&bitmap),
            signature,
        }
    }
}

pub fn vote_message(
    chain_id: ChainId,
    round: u64,
    block_hash: &[u8; 32],
) -> [u8; VOTE_MESSAGE_BYTES] {
    let mut out = [0u8; VOTE_MESSAGE_BYTES];
    out[0] = TAG_VOTE;
    out[1..9].copy_from_slice(&chain_id.to_le_bytes());
    out[9..17].copy_from_slice(&round.to_le_bytes());
    out[17..49].copy_from_slice(block_hash);
    out
}

pub fn timeout_message(
    chain_id: ChainId,
    round: u64,
    high_qc_round: u64,
) -> [u8; TIMEOUT_MESSAGE_BYTES] {
    let mut out = [0u8; TIMEOUT_MESSAGE_BYTES];
    out[0] = TAG_TIMEOUT;
    out[1..9].copy_from_slice(&chain_id.to_le_bytes());
    out[9..17].copy_from_slice(&round.to_le_bytes());
    out[17..25].copy_from_slice(&high_qc_round.to_le_bytes());
    out
}

pub fn sign_vote(
    pair: &KeyPair,
    chain_id: ChainId,
    round: u64,
    block_hash: &[u8; 32],
) -> SignatureBytes {
    pair.sign(&vote_message(chain_id, round, block_hash), CONSENSUS_DST)
}

pub fn sign_timeout(
    pair: &KeyPair,
    chain_id: ChainId,
    round: u64,
    high_qc_round: u64,
) -> SignatureBytes {
    pair.sign(
        &timeout_message(chain_id, round, high_qc_round),
        CONSENSUS_DST,
    )
}

/// Verifies one vote from validator `index` of `set`.
pub fn verify_vote(
    set: &ValidatorSet,
    index: ValidatorIndex,
    chain_id: ChainId,
    round: u64,
    block_hash: &[u8; 32],
    signature: &SignatureBytes,
) -> Result<(), QuorumError> {
    set.verify_signature(index, &vote_message(chain_id, round, block_hash), signature)
}

pub(crate) fn decode_signature(bytes: &SignatureBytes) -> Result<Signature, QuorumError> {
    curve::decode_signature(bytes).map_err(|error| match error {
        PointError::Malformed => QuorumError::MalformedSignature,
        PointError::Infinity => QuorumError::InfinitySignature,
    })
}

/// Sums individually verified votes (validator index, signature) into one quorum signature.
/// Refuses an empty list, a duplicate signer, an index beyond `VALIDATORS_MAX` and bad points.
/// It does not verify: verify each vote on receipt (`verify_vote`) or the result (`verify_quorum`).
pub fn aggregate(
    votes: &[(ValidatorIndex, SignatureBytes)],
) -> Result<QuorumSignature, QuorumError> {
    if votes.is_empty() || votes.len() > VALIDATORS_MAX {
        return Err(QuorumError::TooFewSigners {
            signers: votes.len(),
            threshold: 1,
        });
    }
    let mut signers = SignerBitmap::new();
    for (index, _) in votes {
        if !signers.insert(*index)? {
            return Err(QuorumError::DuplicateSigner {
                index: usize::from(*index),
            });
        }
    }
    assert_eq!(signers.count(), votes.len());
    let signatures: Vec<SignatureBytes> = votes.iter().map(|(_, bytes)| *bytes).collect();
    Ok(QuorumSignature {
        signers,
        signature: aggregate_signatures(&signatures)?,
    })
}

/// Sums signatures that the caller will check as a whole (a vote collector's QC, before
/// `ValidatorSet::verify_aggregate`, which checks the sum's group membership and pairing): each
/// must decode to a point on the curve, and no other check is made, so the sum costs no
/// subgroup check per signature. A sum that fails its check tells the caller to find the bad
/// signatures one by one. Refuses an empty list.
pub fn sum_signatures_unchecked(
    signatures: &[SignatureBytes],
) -> Result<SignatureBytes, QuorumError> {
    sum_decoded(signatures, |bytes| {
        Signature::from_bytes(bytes).map_err(|_| QuorumError::MalformedSignature)
    })
}

/// Sums signatures into one (no verification, no signer bookkeeping). Refuses an empty list and
/// points that do not decode, are infinity or lie outside the group.
pub fn aggregate_signatures(signatures: &[SignatureBytes]) -> Result<SignatureBytes, QuorumError> {
    sum_decoded(signatures, decode_signature)
}

/// Decodes each signature with `decode` and sums them; refuses an empty list.
fn sum_decoded(
    signatures: &[SignatureBytes],
    decode: impl Fn(&SignatureBytes) -> Result<Signature, QuorumError>,
) -> Result<SignatureBytes, QuorumError> {
    if signatures.is_empty() {
        return Err(QuorumError::TooFewSigners {
            signers: 0,
            threshold: 1,
        });
    }
    let decoded: Vec<Signature> = signatures.iter().map(decode).collect::<Result<_, _>>()?;
    let refs: Vec<&Signature> = decoded.iter().collect();
    let sum =
        AggregateSignature::aggregate(&refs, false).map_err(|_| QuorumError::MalformedSignature)?;
    Ok(sum.to_signature().to_bytes())
}
