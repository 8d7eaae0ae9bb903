//! Batched verification: exact classification of mixed batches and the cancelling-pair attack.

use super::curve;
use super::*;
use crate::types::{ChainId, EVENT_BYTES};
use blst::min_sig::{AggregateSignature, Signature};
use blst::{blst_fp12, blst_p1, blst_p1_affine, blst_p2_affine, BLST_ERROR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const CHAIN: ChainId = 77;
const INSTITUTION_FIRST: u32 = 100;
const STRATEGIES: [Strategy; 3] = [
    Strategy::Grouped,
    Strategy::PairingChunks,
    Strategy::BlstPool,
];

pub(super) struct Fixture {
    pub keys: Vec<KeyPair>,
    pub registry: Arc<Registry>,
}

pub(super) fn fixture(institutions: usize) -> Fixture {
    let keys: Vec<KeyPair> = (0..institutions).map(|_| KeyPair::generate()).collect();
    let mut registry = Registry::new();
    for (offset, pair) in keys.iter().enumerate() {
        registry
            .insert(
                INSTITUTION_FIRST + offset as u32,
                &pair.public().to_bytes(),
                pair.pop(),
            )
            .expect("register");
    }
    Fixture {
        keys,
        registry: Arc::new(registry),
    }
}

fn request(fixture: &Fixture, signer: usize, request_id: u128, events: usize) -> SignedRequest {
    let body = (0..events * EVENT_BYTES)
        .map(|i| (i as u128 ^ request_id) as u8)
        .collect();
    let institution = INSTITUTION_FIRST + signer as u32;
    let request = Request {
        institution,
        chain_id: CHAIN,
        request_id,
        operation: 3,
        body,
    };
    request.sign(&fixture.keys[signer]).expect("sign")
}

/// Signature bytes that decompress to a curve point outside the G1 subgroup.
fn off_subgroup_signature(rng: &mut StdRng) -> SignatureBytes {
    loop {
        let mut bytes = [0u8; SIGNATURE_BYTES];
        rng.fill(&mut bytes[..]);
        bytes[0] = (bytes[0] & 0x1f) | 0x80; // compressed, not infinity, x < p
        if let Ok(signature) = Signature::from_bytes(&bytes) {
            assert!(
                !signature.subgroup_check(),
                "a random curve point is in G1 with negligible odds"
            );
            return bytes;
        }
    }
}

/// Corrupts `signed` in one of the ways the verifier must classify; returns the expected code.
fn corrupt(fixture: &Fixture, signed: &mut SignedRequest, rng: &mut StdRng) -> VerifyCode {
    match rng.gen_range(0..7) {
        0 => {
            signed.request.body[0] ^= 1; // signed something else
            VerifyCode::InvalidSignature
        }
        1 => {
            let other =
                (signed.request.institution - INSTITUTION_FIRST + 1) as usize % fixture.keys.len();
            signed.signature = signed
                .request
                .clone()
                .sign(&fixture.keys[other])
                .expect("sign")
                .signature;
            VerifyCode::InvalidSignature
        }
        2 => {
            signed.request.institution = 9_999;
            VerifyCode::UnknownInstitution
        }
        3 => {
            signed.request.chain_id = CHAIN + 1;
            VerifyCode::WrongChainId
        }
        4 => {
            signed.signature = [0xff; SIGNATURE_BYTES]; // x >= p: does not decode
            VerifyCode::MalformedSignature
        }
        5 => {
            signed.signature = off_subgroup_signature(rng);
            VerifyCode::MalformedSignature
        }
        _ => {
            signed.signature = [0u8; SIGNATURE_BYTES];
            signed.signature[0] = 0xc0; // compressed infinity
            VerifyCode::InfinitySignature
        }
    }
}

#[test]
fn mixed_batches_are_classified_exactly() {
    let fixture = fixture(4);
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let count = rng.gen_range(1..48);
        let mut expected = Vec::with_capacity(count);
        let mut batch = Vec::with_capacity(count);
        for id in 0..count {
            // Skewed signers: institution 0 signs about half of the requests.
            let signer = if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(0..4)
            };
            let mut signed = request(&fixture, signer, id as u128, rng.gen_range(1..4));
            let code = if rng.gen_bool(0.3) {
                corrupt(&fixture, &mut signed, &mut rng)
            } else {
                VerifyCode::Ok
            };
            expected.push(code);
            batch.push(signed);
        }
        for strategy in STRATEGIES {
            let verifier = BatchVerifier::with_strategy(fixture.registry.clone(), CHAIN, strategy);
            assert_eq!(
                verifier.verify(&batch),
                expected,
                "seed {seed} strategy {strategy:?}"
            );
        }
        let one = BatchVerifier::new(fixture.registry.clone(), CHAIN);
        let singles: Vec<VerifyCode> = batch.iter().map(|signed| one.verify_one(signed)).collect();
        assert_eq!(singles, expected, "seed {seed} one by one");
        // Borrowed views of the encodings are classified exactly like the owned requests.
        let encoded: Vec<Vec<u8>> = batch.iter().map(SignedRequest::encode).collect();
        let views: Vec<SignedRequestRef<'_>> = encoded
            .iter()
            .map(|bytes| SignedRequestRef::decode(bytes).expect("decode"))
            .collect();
        assert_eq!(one.verify(&views), expected, "seed {seed} views");
        let singles: Vec<VerifyCode> = views.iter().map(|view| one.verify_one(view)).collect();
        assert_eq!(singles, expected, "seed {seed} views one by one");
    }
}

#[test]
fn all_valid_all_invalid_and_empty() {
    let fixture = fixture(2);
    let verifier = BatchVerifier::new(fixture.registry.clone(), CHAIN);
    assert!(verifier.verify::<SignedRequest>(&[]).is_empty());
    let mut batch: Vec<SignedRequest> = (0..20)
        .map(|id| request(&fixture, id % 2, id as u128, 1))
        .collect();
    assert!(verifier
        .verify(&batch)
        .iter()
        .all(|code| *code == VerifyCode::Ok));
    for signed in &mut batch {
        signed.request.request_id += 1;
    }
    assert!(verifier
        .verify(&batch)
        .iter()
        .all(|code| *code == VerifyCode::InvalidSignature));
    assert_eq!(VerifyCode::InvalidSignature.code(), 1);
    assert_eq!(VerifyCode::InfinitySignature.code(), 5);
}

fn g1_add(a: &blst_p1_affine, b: &blst_p1_affine, negate_b: bool) -> SignatureBytes {
    let mut a_projective = blst_p1::default();
    let mut b_projective = blst_p1::default();
    // SAFETY: valid pointers to initialised points.
    unsafe {
        blst::blst_p1_from_affine(&mut a_projective, a);
        blst::blst_p1_from_affine(&mut b_projective, b);
        blst::blst_p1_cneg(&mut b_projective, negate_b);
    }
    let sum = curve::to_affine(&curve::add(&a_projective, &b_projective));
    Signature::from(sum).to_bytes()
}

/// sig1' = sig1 + X and sig2' = sig2 - X are each invalid, but their sum is the valid aggregate.
/// Plain aggregate verification accepts the pair; the random scalars make the batch reject both.
#[test]
fn cancelling_pair_is_rejected_exactly() {
    let fixture = fixture(2);
    let mut batch = vec![
        request(&fixture, 0, 1, 1),
        request(&fixture, 1, 2, 1),
        request(&fixture, 0, 3, 1),
    ];
    let x = curve::hash_to_g1(b"an arbitrary G1 point", b"RECKON-TEST-X");
    let sig = |bytes: &SignatureBytes| {
        *<&blst_p1_affine>::from(&Signature::from_bytes(bytes).expect("decode"))
    };
    let (s1, s2) = (sig(&batch[0].signature), sig(&batch[1].signature));
    batch[0].signature = g1_add(&s1, &x, false);
    batch[1].signature = g1_add(&s2, &x, true);

    let digests = [batch[0].request.digest(), batch[1].request.digest()];
    let forged: Vec<Signature> = batch[..2]
        .iter()
        .map(|s| Signature::from_bytes(&s.signature).expect("decode"))
        .collect();
    let aggregate = AggregateSignature::aggregate(&[&forged[0], &forged[1]], true)
        .expect("aggregate")
        .to_signature();
    let keys = [
        fixture.keys[0].public().blst(),
        fixture.keys[1].public().blst(),
    ];
    let plain = aggregate.aggregate_verify(
        true,
        &[&digests[0][..], &digests[1][..]],
        REQUEST_DST,
        &keys,
        false,
    );
    assert_eq!(
        plain,
        BLST_ERROR::BLST_SUCCESS,
        "plain aggregation is fooled by the cancelling pair"
    );

    let expected = vec![
        VerifyCode::InvalidSignature,
        VerifyCode::InvalidSignature,
        VerifyCode::Ok,
    ];
    for strategy in STRATEGIES {
        let verifier = BatchVerifier::with_strategy(fixture.registry.clone(), CHAIN, strategy);
        for _ in 0..4 {
            assert_eq!(verifier.verify(&batch), expected, "strategy {strategy:?}");
        }
    }
}

#[test]
fn one_thread_pool_gives_the_same_codes() {
    let fixture = fixture(3);
    let mut batch: Vec<SignedRequest> = (0..24)
        .map(|id| request(&fixture, id % 3, id as u128, 1))
        .collect();
    for position in [0usize, 11, 23] {
        batch[position].request.operation ^= 0x80;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let verifier = BatchVerifier::new(fixture.registry.clone(), CHAIN);
    let codes = pool.install(|| verifier.verify(&batch));
    let bad: Vec<usize> = (0..codes.len())
        .filter(|i| codes[*i] != VerifyCode::Ok)
        .collect();
    assert_eq!(bad, vec![0, 11, 23]);
    assert!(bad
        .iter()
        .all(|i| codes[*i] == VerifyCode::InvalidSignature));
}

#[test]
fn few_bad_among_many_are_found_at_random_positions() {
    let fixture = fixture(3);
    let clean: Vec<SignedRequest> = (0..160)
        .map(|id| request(&fixture, id % 3, id as u128, 1))
        .collect();
    let verifier = BatchVerifier::new(fixture.registry.clone(), CHAIN);
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(1_000 + seed);
        let mut batch = clean.clone();
        let mut expected = vec![VerifyCode::Ok; batch.len()];
        for _ in 0..rng.gen_range(0..5) {
            let position = rng.gen_range(0..batch.len());
            batch[position].request.body[5] ^= 0x40;
            // Flipping the same bit twice restores the request: track parity, not count.
            expected[position] = match expected[position] {
                VerifyCode::Ok => VerifyCode::InvalidSignature,
                _ => VerifyCode::Ok,
            };
        }
        assert_eq!(verifier.verify(&batch), expected, "seed {seed}");
    }
}

/// The grouped check's Miller loops from precomputed lines equal blst's plain Miller loop, for
/// every registry key (so `lines_at(slot)` belongs to `key_at(slot)`) and for the G2 generator.
#[test]
fn precomputed_lines_equal_the_plain_miller_loop() {
    let fixture = fixture(3);
    let points = [
        curve::hash_to_g1(b"first point", b"RECKON-TEST-LINES"),
        curve::hash_to_g1(b"second point", b"RECKON-TEST-LINES"),
    ];
    let keys: Vec<blst_p2_affine> = (0..3u32)
        .map(|slot| *<&blst_p2_affine>::from(fixture.registry.key_at(slot).blst()))
        .collect();
    for p in &points {
        for (slot, key) in keys.iter().enumerate() {
            let plain = blst_fp12::miller_loop(key, p);
            let lines = curve::miller_loop_lines(fixture.registry.lines_at(slot as u32), p);
            assert_eq!(lines, plain, "slot {slot}");
            assert_eq!(lines.final_exp(), plain.final_exp(), "slot {slot}");
            assert!(curve::pairings_equal(&lines, &plain));
        }
        let plain = blst_fp12::miller_loop(&curve::g2_generator(), p);
        let lines = curve::miller_loop_lines(curve::g2_generator_lines(), p);
        assert_eq!(lines, plain, "generator");
        assert_eq!(lines.final_exp(), plain.final_exp(), "generator");
        // The comparison has teeth: another key's lines give another pairing.
        let other = curve::miller_loop_lines(fixture.registry.lines_at(1), p);
        assert!(!curve::pairings_equal(
            &other,
            &blst_fp12::miller_loop(&keys[0], p)
        ));
    }
    // A cloned registry carries the same lines.
    let clone = (*fixture.registry).clone();
    let plain = blst_fp12::miller_loop(&keys[2], &points[0]);
    assert_eq!(
        curve::miller_loop_lines(clone.lines_at(2), &points[0]),
        plain
    );
}

#[test]
fn one_loop_over_several_pairs_is_the_product_of_their_miller_loops() {
    let f = fixture(3);
    let points: Vec<blst_p1_affine> = (0..4u8)
        .map(|i| curve::hash_to_g1(&[i; 32], REQUEST_DST))
        .collect();
    let generator = curve::g2_generator_lines();
    let slots: Vec<_> = (0..3)
        .map(|i| f.registry.slot(INSTITUTION_FIRST + i).expect("registered"))
        .collect();
    let mut pairs = vec![(generator, points[0])];
    pairs.extend((0..3).map(|i| (f.registry.lines_at(slots[i]), points[i + 1])));
    // One pair: exactly blst's own loop.
    for (lines, p) in &pairs {
        assert!(curve::miller_loop_lines_n(&[(lines, *p)]) == curve::miller_loop_lines(lines, p));
    }
    // Several: the product of the single loops, for every prefix.
    for n in 2..=pairs.len() {
        let product = pairs[..n]
            .iter()
            .map(|(lines, p)| curve::miller_loop_lines(lines, p))
            .reduce(|a, b| a * b)
            .expect("at least two pairs");
        assert!(
            curve::miller_loop_lines_n(&pairs[..n]) == product,
            "{n} pairs"
        );
    }
    // And a different point changes it.
    let mut other = pairs.clone();
    other[1].1 = points[0];
    assert!(curve::miller_loop_lines_n(&other) != curve::miller_loop_lines_n(&pairs));
}
