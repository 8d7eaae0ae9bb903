//! Votes, quorum certificates and timeout certificates, including every refusal edge case.

use super::*;

const CHAIN: u64 = 5;
const ROUND: u64 = 42;
const HASH: [u8; 32] = [7u8; 32];

fn validators(count: usize) -> (Vec<KeyPair>, ValidatorSet) {
    let keys: Vec<KeyPair> = (0..count).map(|_| KeyPair::generate()).collect();
    let publics: Vec<PublicKeyBytes> = keys.iter().map(|pair| pair.public().to_bytes()).collect();
    let entries: Vec<(&[u8], &[u8])> = publics
        .iter()
        .zip(&keys)
        .map(|(public, pair)| (&public[..], &pair.pop()[..]))
        .collect();
    let set = ValidatorSet::new(&entries).expect("validator set");
    (keys, set)
}

fn votes(keys: &[KeyPair], signers: &[u16], round: u64) -> Vec<(ValidatorIndex, SignatureBytes)> {
    signers
        .iter()
        .map(|index| {
            (
                *index,
                sign_vote(&keys[usize::from(*index)], CHAIN, round, &HASH),
            )
        })
        .collect()
}

#[test]
fn thresholds_follow_n_minus_f() {
    let (_keys, set) = validators(7);
    assert_eq!((set.faults_tolerated(), set.quorum_threshold()), (2, 5));
    for (n, threshold) in [
        (1usize, 1usize),
        (2, 2),
        (3, 3),
        (4, 3),
        (5, 4),
        (6, 5),
        (10, 7),
        (256, 171),
    ] {
        let f = (n - 1) / 3;
        assert_eq!(n - f, threshold);
        assert!(threshold > 2 * f);
    }
}

#[test]
fn quorum_certificate_accepts_a_quorum_and_refuses_edge_cases() {
    let (keys, set) = validators(7);
    let msg = vote_message(CHAIN, ROUND, &HASH);
    let quorum = aggregate(&votes(&keys, &[0, 2, 3, 5, 6], ROUND)).expect("aggregate");
    assert_eq!(quorum.signers.count(), 5);
    assert_eq!(set.verify_quorum(&msg, &quorum), Ok(()));
    assert_eq!(
        set.verify_quorum(&msg, &quorum),
        Ok(()),
        "cached aggregate key"
    );
    assert_eq!(set.verify_vote_quorum(CHAIN, ROUND, &HASH, &quorum), Ok(()));
    assert_eq!(QuorumSignature::from_bytes(&quorum.to_bytes()), quorum);
    set.clear_cache();
    let all = aggregate(&votes(&keys, &[6, 5, 4, 3, 2, 1, 0], ROUND)).expect("aggregate all");
    assert_eq!(set.verify_quorum(&msg, &all), Ok(()));

    let few = aggregate(&votes(&keys, &[0, 1, 2, 3], ROUND)).expect("aggregate few");
    assert_eq!(
        set.verify_quorum(&msg, &few),
        Err(QuorumError::TooFewSigners {
            signers: 4,
            threshold: 5
        })
    );
    let empty = QuorumSignature {
        signers: SignerBitmap::new(),
        signature: quorum.signature,
    };
    assert_eq!(
        set.verify_quorum(&msg, &empty),
        Err(QuorumError::TooFewSigners {
            signers: 0,
            threshold: 5
        })
    );
    assert!(matches!(
        aggregate(&[]),
        Err(QuorumError::TooFewSigners { signers: 0, .. })
    ));

    let mut doubled = votes(&keys, &[0, 1, 2, 3], ROUND);
    doubled.push(doubled[1]);
    assert_eq!(
        aggregate(&doubled),
        Err(QuorumError::DuplicateSigner { index: 1 })
    );

    let mut beyond = quorum;
    beyond.signers.insert(7).expect("bit 7 exists");
    assert_eq!(
        set.verify_quorum(&msg, &beyond),
        Err(QuorumError::UnknownSigner { index: 7 })
    );
    assert_eq!(
        SignerBitmap::new().insert(256),
        Err(QuorumError::UnknownSigner { index: 256 })
    );

    let wrong_round = vote_message(CHAIN, ROUND + 1, &HASH);
    assert_eq!(
        set.verify_quorum(&wrong_round, &quorum),
        Err(QuorumError::InvalidSignature)
    );
    let wrong_chain = vote_message(CHAIN + 1, ROUND, &HASH);
    assert_eq!(
        set.verify_quorum(&wrong_chain, &quorum),
        Err(QuorumError::InvalidSignature)
    );
    // The right signature with a bitmap naming other signers.
    let mut relabelled = quorum;
    relabelled.signers = all.signers;
    assert_eq!(
        set.verify_quorum(&msg, &relabelled),
        Err(QuorumError::InvalidSignature)
    );

    let mut infinity = quorum;
    infinity.signature = [0u8; SIGNATURE_BYTES];
    infinity.signature[0] = 0xc0;
    assert_eq!(
        set.verify_quorum(&msg, &infinity),
        Err(QuorumError::InfinitySignature)
    );
    let mut garbage = quorum;
    garbage.signature = [0xff; SIGNATURE_BYTES];
    assert_eq!(
        set.verify_quorum(&msg, &garbage),
        Err(QuorumError::MalformedSignature)
    );
}

#[test]
fn single_votes_verify_against_their_validator_only() {
    let (keys, set) = validators(4);
    let signature = sign_vote(&keys[2], CHAIN, ROUND, &HASH);
    assert_eq!(
        verify_vote(&set, 2, CHAIN, ROUND, &HASH, &signature),
        Ok(())
    );
    assert_eq!(
        verify_vote(&set, 1, CHAIN, ROUND, &HASH, &signature),
        Err(QuorumError::InvalidSignature)
    );
    assert_eq!(
        verify_vote(&set, 2, CHAIN, ROUND, &[8u8; 32], &signature),
        Err(QuorumError::InvalidSignature)
    );
    assert_eq!(
        verify_vote(&set, 4, CHAIN, ROUND, &HASH, &signature),
        Err(QuorumError::UnknownSigner { index: 4 })
    );
    // A timeout signature never passes as a vote: the messages carry distinct tags.
    let timeout = sign_timeout(&keys[2], CHAIN, ROUND, 0);
    assert_eq!(
        verify_vote(&set, 2, CHAIN, ROUND, &HASH, &timeout),
        Err(QuorumError::InvalidSignature)
    );
}

#[test]
fn timeout_certificate_with_distinct_messages() {
    let (keys, set) = validators(4);
    let signers = [0u16, 1, 3];
    let high_qc_rounds = [40u64, 41, 39];
    let signed: Vec<(ValidatorIndex, SignatureBytes)> = signers
        .iter()
        .zip(high_qc_rounds)
        .map(|(index, high)| {
            (
                *index,
                sign_timeout(&keys[usize::from(*index)], CHAIN, ROUND, high),
            )
        })
        .collect();
    let quorum = aggregate(&signed).expect("aggregate");
    let messages: Vec<[u8; TIMEOUT_MESSAGE_BYTES]> = high_qc_rounds
        .iter()
        .map(|high| timeout_message(CHAIN, ROUND, *high))
        .collect();
    let msgs: Vec<&[u8]> = messages.iter().map(|m| &m[..]).collect();
    assert_eq!(set.verify_quorum_distinct(&msgs, &quorum), Ok(()));
    let swapped = [msgs[1], msgs[0], msgs[2]];
    assert_eq!(
        set.verify_quorum_distinct(&swapped, &quorum),
        Err(QuorumError::InvalidSignature)
    );
    assert_eq!(
        set.verify_quorum_distinct(&msgs[..2], &quorum),
        Err(QuorumError::MessageCount {
            messages: 2,
            signers: 3
        })
    );
    let two = aggregate(&signed[..2]).expect("aggregate two");
    assert_eq!(
        set.verify_quorum_distinct(&msgs[..2], &two),
        Err(QuorumError::TooFewSigners {
            signers: 2,
            threshold: 3
        })
    );
}

#[test]
fn set_construction_refusals_and_bitmap_encoding() {
    let (keys, _set) = validators(2);
    let a = keys[0].public().to_bytes();
    assert!(matches!(
        ValidatorSet::new(&[(&a[..], &keys[1].pop()[..])]),
        Err(QuorumError::Key {
            index: 0,
            source: KeyError::PopInvalid
        })
    ));
    assert!(matches!(
        ValidatorSet::new(&[(&a[..], &keys[0].pop()[..]), (&a[..], &keys[0].pop()[..])]),
        Err(QuorumError::DuplicateKey {
            first: 0,
            second: 1
        })
    ));
    assert!(matches!(
        ValidatorSet::new(&[]),
        Err(QuorumError::SetSize { size: 0 })
    ));

    let mut bitmap = SignerBitmap::new();
    for index in [0u16, 63, 64, 200, 255] {
        assert_eq!(bitmap.insert(index), Ok(true));
    }
    assert_eq!(bitmap.insert(64), Ok(false));
    assert_eq!(bitmap.count(), 5);
    assert_eq!(bitmap.highest(), Some(255));
    assert_eq!(bitmap.iter().collect::<Vec<_>>(), vec![0, 63, 64, 200, 255]);
    assert_eq!(SignerBitmap::from_bytes(&bitmap.to_bytes()), bitmap);
    assert_eq!(bitmap.to_bytes()[0], 1);
    assert_eq!(SignerBitmap::new().highest(), None);
}

#[test]
fn aggregate_checks_without_the_threshold_still_verify_every_signature() {
    let (keys, set) = validators(7);
    let msg = vote_message(CHAIN, ROUND, &HASH);
    // Three signers: below the quorum of five, so verify_quorum refuses it, but the pairing-only
    // check (for callers that own the threshold) accepts it because every signature is valid.
    let few = aggregate(&votes(&keys, &[0, 3, 6], ROUND)).expect("aggregate");
    assert!(matches!(
        set.verify_quorum(&msg, &few),
        Err(QuorumError::TooFewSigners {
            signers: 3,
            threshold: 5
        })
    ));
    assert_eq!(set.verify_aggregate(&msg, &few), Ok(()));
    // A wrong message, an unknown signer and an empty set are still refused.
    let other = vote_message(CHAIN, ROUND + 1, &HASH);
    assert_eq!(
        set.verify_aggregate(&other, &few),
        Err(QuorumError::InvalidSignature)
    );
    let mut unknown = few;
    unknown.signers.insert(9).expect("index within the bitmap");
    assert_eq!(
        set.verify_aggregate(&msg, &unknown),
        Err(QuorumError::UnknownSigner { index: 9 })
    );
    let empty = QuorumSignature {
        signers: SignerBitmap::new(),
        signature: few.signature,
    };
    assert!(matches!(
        set.verify_aggregate(&msg, &empty),
        Err(QuorumError::TooFewSigners { .. })
    ));
    // Distinct messages: two timeouts, each over its own high-QC round.
    let msgs = [
        timeout_message(CHAIN, ROUND, 3),
        timeout_message(CHAIN, ROUND, 4),
    ];
    let sigs = [
        keys[1].sign_consensus(&msgs[0]),
        keys[2].sign_consensus(&msgs[1]),
    ];
    let mut signers = SignerBitmap::new();
    signers.insert(1).expect("1");
    signers.insert(2).expect("2");
    let tc = QuorumSignature {
        signers,
        signature: aggregate_signatures(&sigs).expect("sum"),
    };
    let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    assert_eq!(set.verify_aggregate_distinct(&refs, &tc), Ok(()));
    let swapped: Vec<&[u8]> = vec![&msgs[1][..], &msgs[0][..]];
    assert_eq!(
        set.verify_aggregate_distinct(&swapped, &tc),
        Err(QuorumError::InvalidSignature)
    );
    assert!(
        aggregate_signatures(&[]).is_err(),
        "an empty sum is refused"
    );
}

/// A G1 point on the curve but outside the prime-order subgroup: the first x whose compressed
/// encoding decodes (x³ + 4 a square) is, with overwhelming probability, not in the subgroup.
fn point_outside_the_subgroup() -> SignatureBytes {
    for x in 1u64.. {
        let mut bytes = [0u8; 48];
        bytes[40..].copy_from_slice(&x.to_be_bytes());
        bytes[0] |= 0x80;
        if let Ok(point) = blst::min_sig::Signature::from_bytes(&bytes) {
            if !point.subgroup_check() {
                return bytes;
            }
        }
    }
    unreachable!("a non-subgroup point exists")
}

#[test]
fn an_unchecked_sum_equals_the_checked_one_and_its_check_catches_an_off_group_vote() {
    let (keys, set) = validators(4);
    let good = votes(&keys, &[0, 1, 2], ROUND);
    let sigs: Vec<SignatureBytes> = good.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        sum_signatures_unchecked(&sigs),
        aggregate_signatures(&sigs),
        "same sum for valid signatures"
    );
    let msg = vote_message(CHAIN, ROUND, &HASH);
    let mut signers = SignerBitmap::new();
    for index in [0, 1, 2] {
        signers.insert(index).expect("signer");
    }
    let valid = QuorumSignature {
        signers,
        signature: sum_signatures_unchecked(&sigs).expect("sum"),
    };
    assert_eq!(set.verify_aggregate(&msg, &valid), Ok(()));

    // One voter sends a point off the subgroup: the checked sum refuses it at once, the unchecked
    // sum goes through, and the QC check of that sum refuses it.
    let off = point_outside_the_subgroup();
    let mut bad = sigs.clone();
    bad[2] = off;
    assert_eq!(
        aggregate_signatures(&bad),
        Err(QuorumError::MalformedSignature)
    );
    let sum = sum_signatures_unchecked(&bad).expect("sums without group checks");
    let forged = QuorumSignature {
        signers,
        signature: sum,
    };
    assert!(set.verify_aggregate(&msg, &forged).is_err());
    assert!(
        sum_signatures_unchecked(&[]).is_err(),
        "an empty sum is refused"
    );
    let mut garbage = [0xffu8; 48];
    garbage[0] = 0x9f;
    assert_eq!(
        sum_signatures_unchecked(&[sigs[0], garbage]),
        Err(QuorumError::MalformedSignature)
    );
}

#[test]
fn a_message_hashed_once_signs_and_checks_exactly_as_the_bytes_do() {
    let (keys, set) = validators(4);
    let msg = vote_message(CHAIN, ROUND, &HASH);
    let other = vote_message(CHAIN, ROUND + 1, &HASH);
    // The same signature bytes as hashing inside `sign`.
    let signed: Vec<(SignatureBytes, HashedMessage)> =
        keys.iter().map(|k| k.sign_consensus_hashed(&msg)).collect();
    for (pair, (signature, _)) in keys.iter().zip(&signed) {
        assert_eq!(*signature, pair.sign_consensus(&msg));
    }
    let mut signers = SignerBitmap::new();
    for index in 0..3 {
        signers.insert(index).expect("index");
    }
    let sigs: Vec<SignatureBytes> = signed[..3].iter().map(|(s, _)| *s).collect();
    let qc = QuorumSignature {
        signers,
        signature: aggregate_signatures(&sigs).expect("sum"),
    };
    let hashed = signed[0].1;
    assert_eq!(set.verify_aggregate_hashed(&hashed, &qc), Ok(()));
    assert_eq!(set.verify_aggregate(&msg, &qc), Ok(()));
    // The hash of another message refuses the same aggregate, as the other bytes do.
    assert_eq!(
        set.verify_aggregate_hashed(&HashedMessage::consensus(&other), &qc),
        Err(QuorumError::InvalidSignature)
    );
    assert_eq!(
        set.verify_aggregate(&other, &qc),
        Err(QuorumError::InvalidSignature)
    );
}
