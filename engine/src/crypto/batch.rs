//! The parallel batched verifier: random-scalar batch checks on all cores (rayon), and bisection
//! of a failed batch down to exactly the bad requests.
//!
//! Grouped check (the default, `Strategy::Grouped`), for valid items i with signer j(i),
//! message point H_i = hash_to_G1(digest_i), signature σ_i and fresh random 64-bit r_i:
//!   e(Σ r_i σ_i, g2) == Π_j e(Σ_{i: j(i)=j} r_i H_i, pk_j)
//! Both sums are multi-scalar multiplications (Pippenger), so a batch needs one Miller loop per
//! (signer, chunk) plus one, instead of one per request, and one final exponentiation. The G2
//! sides (institution keys, the generator) are fixed, so every Miller loop runs from precomputed
//! lines (`Registry::lines_at`, `curve::g2_generator_lines`), and the loops of one chunk run as
//! one (`curve::miller_loop_lines_n`: the accumulator's squarings are shared; a batch of one
//! chunk also takes the generator's pair into it, as e(-Σ r_i σ_i, g2) · Π_j ... == 1).

use super::curve::{self, G2Lines, PointError, SCALAR_BYTES};
use super::registry::{Registry, SignerSlot};
use super::request::{body_events, SignedEnvelope, DIGEST_BYTES};
use super::REQUEST_DST;
use crate::types::ChainId;
use blst::min_sig::Signature;
use blst::{blst_fp12, blst_p1, blst_p1_affine, blst_p2_affine, blst_scalar, Pairing, BLST_ERROR};
use rand::rngs::OsRng;
use rand::RngCore;
use rayon::prelude::*;
use std::sync::Arc;

/// Fewest requests one rayon task prepares (hashing, decompression); bounds scheduling overhead.
pub const VERIFY_CHUNK_ITEMS_MIN: usize = 4;

/// Most requests one `verify` call takes (the ingress stage cuts batches; indices fit in u32).
pub const VERIFY_BATCH_REQUESTS_MAX: usize = 1 << 16;

/// Fewest requests per chunk of a batch check (see `chunk_items`).
const CHECK_CHUNK_ITEMS_MIN: usize = 32;

/// Per-request verification result. The numbers are stable wire result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum VerifyCode {
    Ok = 0,
    /// The signature decodes but does not verify for this request and institution.
    InvalidSignature = 1,
    /// The institution is not in the registry.
    UnknownInstitution = 2,
    /// The request names another chain.
    WrongChainId = 3,
    /// The signature bytes are not a canonical G1 point in the prime-order subgroup.
    MalformedSignature = 4,
    /// The signature is the point at infinity.
    InfinitySignature = 5,
    /// The body is empty, too long or not a multiple of `EVENT_BYTES`.
    BodyLength = 6,
}

impl VerifyCode {
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// How a batch is checked; all three are sound and give identical codes. `Grouped` is the
/// default and the fastest measured (docs/modules/crypto.md); the others are kept for the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Rayon chunks, multi-scalar sums grouped by signer, one Miller loop per signer and chunk.
    Grouped,
    /// Rayon chunks, each a blst `Pairing` fed with `mul_n_aggregate`, merged, one final check.
    PairingChunks,
    /// blst `verify_multiple_aggregate_signatures` on blst's own thread pool.
    BlstPool,
}

/// A request that passed every check short of the signature equation.
struct Prepared {
    index: u32,
    slot: SignerSlot,
    signature: Signature,
    digest: [u8; DIGEST_BYTES],
    /// hash_to_G1(digest) for `Strategy::Grouped`; unused (default) otherwise.
    message: blst_p1_affine,
}

pub struct BatchVerifier {
    registry: Arc<Registry>,
    chain_id: ChainId,
    strategy: Strategy,
}

impl BatchVerifier {
    pub fn new(registry: Arc<Registry>, chain_id: ChainId) -> Self {
        Self::with_strategy(registry, chain_id, Strategy::Grouped)
    }

    pub fn with_strategy(registry: Arc<Registry>, chain_id: ChainId, strategy: Strategy) -> Self {
        if strategy == Strategy::Grouped {
            curve::g2_generator_lines(); // computed once per process, here rather than in a batch
        }
        Self {
            registry,
            chain_id,
            strategy,
        }
    }

    /// Verifies every request on the current rayon pool; `result[i]` is request i's code.
    /// Takes owned requests or borrowed views (`SignedRequestRef`), by value or by reference.
    pub fn verify<R: SignedEnvelope + Sync>(&self, requests: &[R]) -> Vec<VerifyCode> {
        assert!(
            requests.len() <= VERIFY_BATCH_REQUESTS_MAX,
            "callers bound their batches"
        );
        let hash = self.strategy == Strategy::Grouped;
        let outcomes: Vec<Result<Prepared, VerifyCode>> = requests
            .par_iter()
            .with_min_len(VERIFY_CHUNK_ITEMS_MIN)
            .enumerate()
            .map(|(index, request)| self.prepare(index as u32, request, hash))
            .collect();
        let mut codes = Vec::with_capacity(requests.len());
        let mut prepared = Vec::with_capacity(requests.len());
        for outcome in outcomes {
            match outcome {
                Ok(item) => {
                    codes.push(VerifyCode::Ok);
                    prepared.push(item);
                }
                Err(code) => codes.push(code),
            }
        }
        // Contiguous signer runs make one Miller loop per signer per chunk.
        prepared.sort_by_key(|item| item.slot);
        for index in self.find_invalid(&prepared) {
            assert_eq!(codes[index as usize], VerifyCode::Ok);
            codes[index as usize] = VerifyCode::InvalidSignature;
        }
        assert_eq!(codes.len(), requests.len());
        codes
    }

    /// One request, one full two-pairing verification (the client library and the baseline).
    pub fn verify_one(&self, request: &impl SignedEnvelope) -> VerifyCode {
        let item = match self.prepare(0, request, false) {
            Ok(item) => item,
            Err(code) => return code,
        };
        let key = self.registry.key_at(item.slot).blst();
        match item
            .signature
            .verify(false, &item.digest, REQUEST_DST, &[], key, false)
        {
            BLST_ERROR::BLST_SUCCESS => VerifyCode::Ok,
            _ => VerifyCode::InvalidSignature,
        }
    }

    fn prepare(
        &self,
        index: u32,
        request: &impl SignedEnvelope,
        hash: bool,
    ) -> Result<Prepared, VerifyCode> {
        let slot = self
            .registry
            .slot(request.institution())
            .ok_or(VerifyCode::UnknownInstitution)?;
        if request.chain_id() != self.chain_id {
            return Err(VerifyCode::WrongChainId);
        }
        body_events(request.body_len()).map_err(|_| VerifyCode::BodyLength)?;
        let signature =
            curve::decode_signature(request.signature()).map_err(|error| match error {
                PointError::Malformed => VerifyCode::MalformedSignature,
                PointError::Infinity => VerifyCode::InfinitySignature,
            })?;
        let digest = request.digest();
        let message = if hash {
            curve::hash_to_g1(&digest, REQUEST_DST)
        } else {
            blst_p1_affine::default()
        };
        Ok(Prepared {
            index,
            slot,
            signature,
            digest,
            message,
        })
    }

    /// Indices of exactly the items whose signature equation fails.
    fn find_invalid(&self, items: &[Prepared]) -> Vec<u32> {
        if items.is_empty() || self.batch_holds(items) {
            return Vec::new();
        }
        self.bisect_failed(items)
    }

    /// `items` failed a check (so it holds an invalid signature). Check the left half; if it holds,
    /// the right half must hold the bad one (a valid set always passes), so it is split without
    /// a check of its own. That saves about a quarter of the checks against checking both halves.
    fn bisect_failed(&self, items: &[Prepared]) -> Vec<u32> {
        assert!(!items.is_empty());
        if items.len() == 1 {
            return vec![items[0].index];
        }
        let (left, right) = items.split_at(split_point(items));
        if self.batch_holds(left) {
            // A lone request is still checked itself, so a valid one is never rejected even if
            // the left check passed a bad request (probability 2^-64).
            return if right.len() == 1 {
                self.find_invalid(right)
            } else {
                self.bisect_failed(right)
            };
        }
        let (mut bad, bad_right) =
            rayon::join(|| self.bisect_failed(left), || self.find_invalid(right));
        bad.extend(bad_right);
        bad
    }

    /// True iff every item verifies (except with probability 2^-64 over the fresh scalars).
    fn batch_holds(&self, items: &[Prepared]) -> bool {
        let scalars = random_scalars(items.len());
        match self.strategy {
            Strategy::Grouped => self.holds_grouped(items, &scalars),
            Strategy::PairingChunks => self.holds_pairing_chunks(items, &scalars),
            Strategy::BlstPool => self.holds_blst_pool(items, &scalars),
        }
    }

    /// One chunk per thread, but never under `CHECK_CHUNK_ITEMS_MIN` items: each chunk costs a
    /// Miller loop per signer it holds, which small bisection halves cannot amortise.
    fn chunk_items(items: usize) -> usize {
        items
            .div_ceil(rayon::current_num_threads().max(1))
            .max(CHECK_CHUNK_ITEMS_MIN)
    }

    fn holds_grouped(&self, items: &[Prepared], scalars: &[u8]) -> bool {
        let chunk = Self::chunk_items(items.len());
        if items.len() <= chunk {
            // One chunk (every window under `CHECK_CHUNK_ITEMS_MIN` per thread): the generator's
            // pair joins the signers' in the same Miller loop, as
            // e(-Σ r_i σ_i, g2) · Π_j e(Σ r_i H_i, pk_j) == 1.
            let (mut pairs, signatures) = self.grouped_pairs(items, scalars);
            let signature_sum = curve::to_affine(&signatures);
            // Σ r_i σ_i is infinity only with negligible probability; it then contributes 1.
            if !curve::is_infinity(&signature_sum) {
                pairs.push((curve::g2_generator_lines(), curve::negate(&signature_sum)));
            }
            return pairs.is_empty()
                || curve::pairing_product_is_one(&curve::miller_loop_lines_n(&pairs));
        }
        let identity = || (blst_fp12::default(), blst_p1::default());
        let (messages, signatures) = items
            .par_chunks(chunk)
            .zip(scalars.par_chunks(chunk * SCALAR_BYTES))
            .map(|(chunk, scalars)| self.grouped_terms(chunk, scalars))
            .reduce(identity, |(gt_a, sig_a), (gt_b, sig_b)| {
                (gt_a * gt_b, curve::add(&sig_a, &sig_b))
            });
        let signature_sum = curve::to_affine(&signatures);
        let lhs = if curve::is_infinity(&signature_sum) {
            blst_fp12::default()
        } else {
            curve::miller_loop_lines(curve::g2_generator_lines(), &signature_sum)
        };
        curve::pairings_equal(&lhs, &messages)
    }

    /// For one chunk (sorted by signer): Π_j ML(pk_j, Σ r_i H_i), in one loop, and Σ r_i σ_i.
    fn grouped_terms(&self, items: &[Prepared], scalars: &[u8]) -> (blst_fp12, blst_p1) {
        let (pairs, signature_sum) = self.grouped_pairs(items, scalars);
        let product = if pairs.is_empty() {
            blst_fp12::default() // one
        } else {
            curve::miller_loop_lines_n(&pairs)
        };
        (product, signature_sum)
    }

    /// For one chunk (sorted by signer): each signer's lines with Σ r_i H_i over its items, and
    /// Σ r_i σ_i over all of them.
    fn grouped_pairs(
        &self,
        items: &[Prepared],
        scalars: &[u8],
    ) -> (Vec<(&G2Lines, blst_p1_affine)>, blst_p1) {
        assert_eq!(items.len() * SCALAR_BYTES, scalars.len());
        let signatures: Vec<blst_p1_affine> = items
            .iter()
            .map(|item| *<&blst_p1_affine>::from(&item.signature))
            .collect();
        let signature_sum = curve::multi_scalar_mult(&signatures, scalars);
        let mut pairs = Vec::new();
        let mut start = 0;
        while start < items.len() {
            let slot = items[start].slot;
            let end = start
                + items[start..]
                    .iter()
                    .take_while(|item| item.slot == slot)
                    .count();
            let messages: Vec<blst_p1_affine> =
                items[start..end].iter().map(|item| item.message).collect();
            let sum = curve::to_affine(&curve::multi_scalar_mult(
                &messages,
                &scalars[start * SCALAR_BYTES..end * SCALAR_BYTES],
            ));
            // Σ r_i H_i is infinity only with negligible probability; it then contributes 1.
            if !curve::is_infinity(&sum) {
                pairs.push((self.registry.lines_at(slot), sum));
            }
            start = end;
        }
        (pairs, signature_sum)
    }

    fn holds_pairing_chunks(&self, items: &[Prepared], scalars: &[u8]) -> bool {
        let chunk = Self::chunk_items(items.len());
        let merged = items
            .par_chunks(chunk)
            .zip(scalars.par_chunks(chunk * SCALAR_BYTES))
            .map(|(chunk, scalars)| {
                let mut pairing = Pairing::new(true, REQUEST_DST);
                for (item, scalar) in chunk.iter().zip(scalars.chunks_exact(SCALAR_BYTES)) {
                    let key: &blst_p2_affine = self.registry.key_at(item.slot).blst().into();
                    let signature: &blst_p1_affine = (&item.signature).into();
                    let outcome = pairing.mul_n_aggregate(
                        key,
                        false,
                        signature,
                        false,
                        scalar,
                        super::BATCH_SCALAR_BITS,
                        &item.digest,
                        &[],
                    );
                    assert_eq!(
                        outcome,
                        BLST_ERROR::BLST_SUCCESS,
                        "inputs were validated in prepare"
                    );
                }
                pairing.commit();
                pairing
            })
            .reduce_with(|mut a, b| {
                assert_eq!(a.merge(&b), BLST_ERROR::BLST_SUCCESS);
                a
            });
        merged.is_some_and(|pairing| pairing.finalverify(None))
    }

    fn holds_blst_pool(&self, items: &[Prepared], scalars: &[u8]) -> bool {
        let messages: Vec<&[u8]> = items.iter().map(|item| &item.digest[..]).collect();
        let keys: Vec<_> = items
            .iter()
            .map(|item| self.registry.key_at(item.slot).blst())
            .collect();
        let signatures: Vec<&Signature> = items.iter().map(|item| &item.signature).collect();
        let rands: Vec<blst_scalar> = scalars
            .chunks_exact(SCALAR_BYTES)
            .map(|bytes| {
                let mut scalar = blst_scalar::default();
                scalar.b[..SCALAR_BYTES].copy_from_slice(bytes);
                scalar
            })
            .collect();
        let outcome = Signature::verify_multiple_aggregate_signatures(
            &messages,
            REQUEST_DST,
            &keys,
            false,
            &signatures,
            false,
            &rands,
            super::BATCH_SCALAR_BITS,
        );
        outcome == BLST_ERROR::BLST_SUCCESS
    }
}

/// Where to halve a failed set (sorted by signer, at least 2 items): the signer boundary nearest
/// the middle, else the middle. Signer-aligned halves clear an honest institution's requests in
/// one check, and a single-signer set costs only two Miller loops per check.
fn split_point(items: &[Prepared]) -> usize {
    assert!(items.len() >= 2);
    let middle = items.len() / 2;
    let boundary = |i: &usize| items[*i - 1].slot != items[*i].slot;
    let below = (1..=middle).rev().find(boundary);
    let above = (middle + 1..items.len()).find(boundary);
    let point = match (below, above) {
        (Some(b), Some(a)) => {
            if middle - b <= a - middle {
                b
            } else {
                a
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => middle,
    };
    assert!(point >= 1 && point < items.len());
    point
}

/// `count` fresh non-zero 64-bit scalars from the OS CSPRNG, little-endian, packed.
fn random_scalars(count: usize) -> Vec<u8> {
    let mut scalars = vec![0u8; count * SCALAR_BYTES];
    OsRng.fill_bytes(&mut scalars);
    for scalar in scalars.chunks_exact_mut(SCALAR_BYTES) {
        if scalar.iter().all(|byte| *byte == 0) {
            scalar[0] = 1; // A zero scalar would drop its signature from the check.
        }
    }
    scalars
}
