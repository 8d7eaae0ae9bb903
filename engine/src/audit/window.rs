//! The checks of a window of decoded blocks that need no ledger state, on all cores (rayon):
//! batch digests, each commit QC's signatures, request decoding and request
//! signatures (one batched verification for the whole window). The auditor then walks the window
//! in height order and reports the first fault, so parallelism never changes which fault is named.

use rayon::prelude::*;

use super::{AuditFault, Location};
use crate::consensus::validator_crypto::ValidatorCrypto;
use crate::consensus::{vote_message, CommittedBlock, QuorumCrypto, Sig, SignerBitmap};
use crate::crypto::{self, BatchVerifier, DigestedRef, ValidatorSet, VerifyCode};
use crate::node::batches::Batch;

/// Most blocks checked together.
pub const WINDOW_BLOCKS_MAX: usize = 256;
/// Most record bytes held in one window (a window closes at whichever bound comes first).
pub const WINDOW_BYTES_MAX: usize = 64 << 20;

/// A decoded block waiting for its checks.
pub(super) struct Pending {
    pub at: Location,
    pub committed: CommittedBlock,
    pub batches: Vec<Batch>,
}

/// The QC check of one block: the exact inputs and the verdict on its signatures.
pub(super) struct QcVerdict {
    signers: SignerBitmap,
    msg: Vec<u8>,
    signatures: Vec<Sig>,
    ok: bool,
}

/// What the parallel pass found for one block.
pub(super) struct Prechecked {
    /// The first batch whose digest is not the one the block orders.
    pub bad_batch: Option<usize>,
    pub qc: QcVerdict,
    /// The block's first request that does not decode or whose signature fails.
    pub request_fault: Option<AuditFault>,
    pub signatures_verified: u64,
}

fn qc_verdict(set: &ValidatorSet, chain: u64, c: &CommittedBlock) -> QcVerdict {
    let msg = vote_message(chain, &c.block.hash(), c.qc.round, c.height);
    let signers = c.qc.signers;
    let indices: Vec<usize> = signers.iter().map(usize::from).collect();
    let members = !indices.is_empty() && signers.within(set.len());
    let ok = members
        && set
            .verify_same_message(&indices, &msg, &c.qc.signatures)
            .is_ok();
    QcVerdict {
        signers,
        msg,
        signatures: c.qc.signatures.clone(),
        ok,
    }
}

fn first_bad_batch(p: &Pending) -> Option<usize> {
    p.batches
        .iter()
        .zip(&p.committed.block.payload)
        .position(|(stored, ordered)| stored.digest() != *ordered)
}

/// Runs the window's state-free checks on all cores; one `Prechecked` per block, in order.
pub(super) fn precheck(
    window: &[Pending],
    set: &ValidatorSet,
    chain: u64,
    verifier: Option<&BatchVerifier>,
) -> Vec<Prechecked> {
    let mut checked: Vec<Prechecked> = window
        .par_iter()
        .map(|p| Prechecked {
            bad_batch: first_bad_batch(p),
            qc: qc_verdict(set, chain, &p.committed),
            request_fault: None,
            signatures_verified: 0,
        })
        .collect();
    // Decode every request; remember where each came from.
    // Views with each request's digest cell: the verifier fills the cells from the bytes, and
    // re-execution (`apply_block`) reuses them.
    let mut decoded: Vec<DigestedRef<'_>> = Vec::new();
    let mut places: Vec<(usize, usize, usize)> = Vec::new();
    for (block, p) in window.iter().enumerate() {
        'block: for (batch, b) in p.batches.iter().enumerate() {
            for (index, request) in b.requests.iter().enumerate() {
                match request.digested() {
                    Ok(signed) => {
                        decoded.push(signed);
                        places.push((block, batch, index));
                    }
                    Err(e) => {
                        checked[block].request_fault = Some(AuditFault::RequestUndecodable {
                            at: p.at,
                            batch,
                            index,
                            reason: e.to_string(),
                        });
                        break 'block;
                    }
                }
            }
        }
    }
    let Some(verifier) = verifier else {
        return checked;
    };
    let chunk = crypto::VERIFY_BATCH_REQUESTS_MAX;
    for (requests, owners) in decoded.chunks(chunk).zip(places.chunks(chunk)) {
        let codes = verifier.verify(requests);
        for ((code, request), &(block, batch, index)) in codes.iter().zip(requests).zip(owners) {
            let c = &mut checked[block];
            if *code == VerifyCode::Ok {
                c.signatures_verified += 1;
            } else if c.request_fault.is_none() {
                c.request_fault = Some(AuditFault::RequestSignature {
                    at: window[block].at,
                    batch,
                    index,
                    institution: request.view().institution(),
                    request_id: request.view().request_id(),
                    code: *code,
                });
            }
        }
    }
    checked
}

/// `audit_chain`'s crypto for one block: the verdict computed in the parallel pass for exactly
/// these inputs, anything else through the real `ValidatorCrypto`.
pub(super) struct Checked<'a> {
    pub inner: &'a ValidatorCrypto,
    pub known: &'a QcVerdict,
}

impl QuorumCrypto for Checked<'_> {
    fn validator_count(&self) -> usize {
        self.inner.validator_count()
    }
    fn sign(&self, msg: &[u8]) -> Sig {
        self.inner.sign(msg)
    }
    fn verify_one(&self, signer: crate::consensus::ValidatorIndex, msg: &[u8], sig: &Sig) -> bool {
        self.inner.verify_one(signer, msg, sig)
    }
    fn verify_same_msg(&self, signers: &SignerBitmap, msg: &[u8], sigs: &[Sig]) -> bool {
        let k = self.known;
        if k.signers == *signers && k.msg == msg && k.signatures == sigs {
            return k.ok;
        }
        self.inner.verify_same_msg(signers, msg, sigs)
    }
    fn verify_distinct(
        &self,
        signed: &[(crate::consensus::ValidatorIndex, Vec<u8>)],
        sigs: &[Sig],
    ) -> bool {
        self.inner.verify_distinct(signed, sigs)
    }
}
