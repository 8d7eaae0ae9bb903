//! Each request is hashed once per node: the digests a batch carries are each request's signing
//! digest for local, peer and recovered batches, execute reuses them, and the digest a committed
//! request's reply and committed-id record get is the one its client signed.

use std::sync::Arc;

use super::*;
use crate::consensus::{genesis_block, genesis_qc, CommittedBlock};
use crate::crypto::{
    BatchVerifier, EncodedRequest, KeyPair, Registry, Request, SignedRequest, VerifyCode,
};
use crate::ledger::{Ledger, LedgerConfig};
use crate::mempool::{Mempool, MempoolConfig};
use crate::node::execute::{apply_block, decode_record, encode_record};
use crate::node::verify::check_together;
use crate::types::{Operation, EVENT_BYTES};

const CHAIN: u64 = 5;

struct Fixture {
    keys: Vec<KeyPair>,
    verifier: BatchVerifier,
}

fn fixture() -> Fixture {
    let keys: Vec<KeyPair> = (0..2).map(|_| KeyPair::generate()).collect();
    let mut registry = Registry::new();
    for (institution, pair) in keys.iter().enumerate() {
        registry
            .insert_validated(institution as u32, *pair.public())
            .expect("register");
    }
    let verifier = BatchVerifier::new(Arc::new(registry), CHAIN);
    Fixture { keys, verifier }
}

impl Fixture {
    /// Distinct signed requests; `first_id` keeps the ids of different calls apart.
    fn signed(&self, first_id: u128, count: usize) -> Vec<SignedRequest> {
        (0..count)
            .map(|i| {
                let institution = (i % self.keys.len()) as u32;
                let id = first_id + i as u128;
                Request {
                    institution,
                    chain_id: CHAIN,
                    request_id: id,
                    operation: Operation::CreateTransfers as u8,
                    body: (0..(1 + i % 3) * EVENT_BYTES)
                        .map(|b| (b as u128 + id) as u8)
                        .collect(),
                }
                .sign(&self.keys[institution as usize])
                .expect("sign")
            })
            .collect()
    }
}

fn block(height: u64, batches: &[Arc<Batch>]) -> CommittedBlock {
    let mut block = genesis_block();
    block.height = height;
    block.round = height;
    block.timestamp_ms = 1_000 * height;
    block.payload = batches.iter().map(|b| b.digest()).collect();
    CommittedBlock {
        height,
        block,
        qc: genesis_qc(),
    }
}

/// Every request of `batch` already carries its signing digest (nobody needs to hash it again).
fn assert_digests_known(batch: &Batch, signed: &[SignedRequest]) {
    assert_eq!(batch.requests.len(), signed.len());
    for (request, signed) in batch.requests.iter().zip(signed) {
        assert_eq!(request.known_digest(), Some(signed.request.digest()));
    }
}

/// The digests execute reports are the signed digests, in order.
fn assert_executed_digests(batches: &[Arc<Batch>], signed: &[SignedRequest], height: u64) {
    let mut ledger = Ledger::new(LedgerConfig::new(0));
    let items = apply_block(&mut ledger, &block(height, batches), batches);
    assert_eq!(items.len(), signed.len());
    for (item, signed) in items.iter().zip(signed) {
        assert_eq!(item.key.institution, signed.request.institution);
        assert_eq!(item.key.request_id, signed.request.request_id);
        assert_eq!(item.digest, signed.request.digest());
    }
}

#[test]
fn a_local_batch_carries_the_digests_ingress_computed() {
    let f = fixture();
    let signed = f.signed(1, 6);
    let mempool: Mempool<RequestBytes> = Mempool::new(MempoolConfig::with_institutions(2));
    for s in &signed {
        // What ingress and verify do: hash once (the replay check), keep the digest in the item.
        let encoded = EncodedRequest::from(s.encode());
        let digest = encoded.digest().expect("decodes");
        mempool
            .insert(Item {
                institution: s.request.institution,
                request_id: s.request.request_id,
                digest,
                bytes: encoded.len() as u32,
                payload: encoded,
            })
            .expect("insert");
    }
    let items = mempool.take_batch(64, 1 << 20);
    // Fair order across institutions: compare each request with its own signed original.
    let taken: Vec<SignedRequest> = items
        .iter()
        .map(|item| {
            let original = signed
                .iter()
                .find(|s| s.request.request_id == item.request_id)
                .expect("taken from these");
            assert_eq!(item.digest, original.request.digest());
            original.clone()
        })
        .collect();
    let batch = Arc::new(local_batch(items));
    assert_digests_known(&batch, &taken);
    assert_executed_digests(&[batch], &taken, 1);
}

#[test]
fn a_verified_peer_batch_carries_the_digests_the_verifier_computed() {
    let f = fixture();
    let signed = f.signed(100, 5);
    let sent = Batch {
        requests: signed.iter().map(|s| s.encode().into()).collect(),
    };
    let digest = sent.digest();
    let (got_digest, received) =
        Batch::decode_peer(&sent.encode_peer(9, &digest), 9).expect("decodes");
    assert_eq!(got_digest, digest);
    assert!(received.requests.iter().all(|r| r.known_digest().is_none()));
    let mut forged = f.signed(200, 2);
    forged[1].signature = forged[0].signature;
    let bad = Batch {
        requests: forged.iter().map(|s| s.encode().into()).collect(),
    };
    let bad_digest = bad.digest();
    // Every signature verifies, but the peer claims another batch's digest for it.
    let mislabelled = Batch {
        requests: f.signed(400, 2).iter().map(|s| s.encode().into()).collect(),
    };
    // A client request verified in the same call keeps its own code.
    let client: EncodedRequest = f.signed(300, 1)[0].encode().into();
    let clients = vec![client.digested().expect("decodes")];
    let peer = [
        (&received, &digest),
        (&bad, &bad_digest),
        (&mislabelled, &digest),
    ];
    let (codes, verdicts) = check_together(&f.verifier, clients, &peer);
    assert_eq!(codes, vec![VerifyCode::Ok]);
    assert_eq!(verdicts[0], Ok(()));
    assert!(verdicts[1]
        .as_ref()
        .is_err_and(|e| e.contains("does not verify")));
    assert_eq!(
        verdicts[2],
        Err(crate::node::batches::BatchDecodeError::DigestMismatch.to_string())
    );
    let received = Arc::new(received);
    assert_digests_known(&received, &signed);
    assert_executed_digests(&[received], &signed, 1);
}

#[test]
fn a_recovered_batch_computes_its_digests_from_the_bytes_once() {
    let f = fixture();
    let signed = f.signed(300, 4);
    let batches = vec![
        Arc::new(Batch {
            requests: signed[..3].iter().map(|s| s.encode().into()).collect(),
        }),
        Arc::new(Batch {
            requests: signed[3..].iter().map(|s| s.encode().into()).collect(),
        }),
    ];
    let committed = block(7, &batches);
    let (decoded_block, decoded) =
        decode_record(&encode_record(&committed, &batches)).expect("record decodes");
    assert_eq!(decoded_block, committed);
    // Read from the log: nothing is known until it is computed from the bytes.
    assert!(decoded
        .iter()
        .flat_map(|b| b.requests.iter())
        .all(|r| r.known_digest().is_none()));
    let mut ledger = Ledger::new(LedgerConfig::new(0));
    let items = apply_block(&mut ledger, &committed, &decoded);
    for (item, s) in items.iter().zip(&signed) {
        assert_eq!(item.digest, s.request.digest());
    }
    // Kept in the batches (recovery hands them to the batch store).
    assert_digests_known(&decoded[0], &signed[..3]);
    assert_digests_known(&decoded[1], &signed[3..]);
}

#[test]
fn an_undecodable_committed_request_is_skipped_without_a_digest() {
    let f = fixture();
    let signed = f.signed(400, 2);
    let mut requests: Vec<EncodedRequest> = signed.iter().map(|s| s.encode().into()).collect();
    requests.insert(1, vec![0u8; 12].into());
    let batches = vec![Arc::new(Batch { requests })];
    assert_executed_digests(&batches, &signed, 3);
    assert_eq!(batches[0].requests[1].known_digest(), None);
}
