//! Signing: requests loadgen signs are accepted by the node's verifier; tampering is caught.

use engine::crypto::{BatchVerifier, SignedRequest, VerifyCode};
use loadgen::engine_map::{MapConfig, Mapper};
use loadgen::inproc::{InprocConfig, InprocTarget};
use loadgen::signing::{derived_secret, Keyring};
use loadgen::target::Outcome;
use loadgen::workload::{JointLoanConfig, Workload};

const CHAIN: u64 = 7;

fn signed_requests(keyring: &mut Keyring) -> Vec<SignedRequest> {
    let config = JointLoanConfig {
        loans: 20,
        ..JointLoanConfig::default()
    };
    let events: Vec<_> = Workload::joint_loan(config)
        .expect("valid")
        .take(400)
        .collect();
    let mut mapper = Mapper::new(MapConfig::default()).expect("config");
    let mut out = Vec::new();
    for chunk in events.chunks(50) {
        for (i, r) in mapper.requests(chunk).expect("map").into_iter().enumerate() {
            let id = (out.len() + i) as u128 + 1;
            out.push(
                keyring
                    .sign(id, r.requester, r.operation, r.body)
                    .expect("sign"),
            );
        }
    }
    out
}

#[test]
fn the_node_verifier_accepts_what_loadgen_signs() {
    let mut keyring = Keyring::derived(3, CHAIN);
    let mut signed = signed_requests(&mut keyring);
    assert!(signed.len() > 20);
    assert!(keyring.len() >= 4, "one key per signing institution");
    let verifier = BatchVerifier::new(keyring.registry().expect("registry"), CHAIN);
    assert!(verifier
        .verify(&signed)
        .iter()
        .all(|c| *c == VerifyCode::Ok));
    for s in &signed {
        let key = keyring.pair(s.request.institution).expect("key").public();
        assert!(s.verify_with(key));
        assert_eq!(SignedRequest::decode(&s.encode()).expect("decode"), *s);
    }
    // Tamper with one body byte and move another request to another chain.
    signed[3].request.body[0] ^= 1;
    signed[5].request.chain_id = CHAIN + 1;
    let codes = verifier.verify(&signed);
    assert_eq!(codes[3], VerifyCode::InvalidSignature);
    assert_eq!(codes[5], VerifyCode::WrongChainId);
    assert_eq!(
        codes.iter().filter(|c| **c == VerifyCode::Ok).count(),
        signed.len() - 2
    );
}

#[test]
fn derived_keys_are_deterministic_and_distinct() {
    assert_eq!(derived_secret(1, 2), derived_secret(1, 2));
    assert_ne!(derived_secret(1, 2), derived_secret(1, 3));
    assert_ne!(derived_secret(1, 2), derived_secret(2, 2));
    let mut a = Keyring::derived(9, CHAIN);
    let mut b = Keyring::derived(9, CHAIN);
    let pa = a.pair(4).expect("key").public().to_bytes();
    assert_eq!(pa, b.pair(4).expect("key").public().to_bytes());
    let mut files = Keyring::from_files(CHAIN);
    assert!(files.pair(4).is_err(), "a file keyring never invents keys");
}

#[test]
fn inproc_verify_mode_verifies_every_request() {
    let mut t = InprocTarget::new(InprocConfig {
        verify: true,
        ..InprocConfig::default()
    })
    .expect("config");
    let config = JointLoanConfig {
        loans: 20,
        ..JointLoanConfig::default()
    };
    let events: Vec<_> = Workload::joint_loan(config)
        .expect("valid")
        .take(300)
        .collect();
    for chunk in events.chunks(100) {
        let outcome = t.execute(chunk).expect("execute");
        assert!(
            matches!(
                outcome,
                Outcome::Executed {
                    events_committed: 100,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    assert_eq!(t.stats().verify_failures, 0);
    assert_eq!(t.stats().signatures, t.stats().requests);
}
