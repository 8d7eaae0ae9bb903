//! Byzantine behaviour. Each Byzantine validator runs as *twins* (the Twins method): two honest cores
//! with the same key, each talking to its own subset of peers, so equivocation, double votes and
//! conflicting timeouts arise naturally with valid signatures. On top, each twin's shell rewrites
//! part of what it sends:
//! equivocating proposals, proposals with unavailable payloads, forged QCs or an old branch, invalid,
//! impersonated and double votes, invalid timeouts and corrupted sync responses.

use rand::Rng;

use super::faults::BYZANTINE_ACT_PER_MILLE;
use super::node::SIM_CHAIN_ID;
use super::runner::Sim;
use crate::consensus::{
    genesis_qc, vote_message, Message, Proposal, QuorumCert, Sig, SignerBitmap, Vote,
};

impl Sim {
    /// The messages a Byzantine `node` actually sends to `peer` instead of `msg`.
    pub(super) fn byzantine_rewrite(
        &mut self,
        node: usize,
        peer: usize,
        msg: &Message,
    ) -> Vec<Message> {
        if self.rng.gen_range(0..1000) >= BYZANTINE_ACT_PER_MILLE {
            return vec![msg.clone()];
        }
        let mut bad = msg.clone();
        let identity = self.nodes[node].identity;
        let garbage = self.secrets[identity].sign(&self.rng.gen::<[u8; 32]>());
        match &mut bad {
            Message::Proposal(p) => {
                if self.rewrite_proposal(p, peer, identity, garbage) {
                    return vec![msg.clone(), bad];
                }
            }
            Message::Vote(v) => match self.rng.gen_range(0..4) {
                0 => v.signature = garbage,
                1 => v.block_hash = self.rng.gen(),
                2 => v.voter = ((v.voter as usize + 1) % self.cfg.nodes) as u16, // impersonation
                _ => {
                    // A validly signed second vote in the same round, for another block.
                    let twin_hash: [u8; 32] = self.rng.gen();
                    let signed = vote_message(SIM_CHAIN_ID, &twin_hash, v.round, v.height);
                    let signature = self.secrets[identity].sign(&signed);
                    let twin = Vote {
                        block_hash: twin_hash,
                        signature,
                        ..v.clone()
                    };
                    return vec![msg.clone(), Message::Vote(twin)];
                }
            },
            Message::Timeout(t) => match self.rng.gen_range(0..2) {
                0 => t.timeout.signature = garbage,
                _ => forge(&mut t.timeout.high_qc, identity, garbage),
            },
            Message::SyncResponse(s) => {
                if s.blocks.len() > 2 {
                    s.blocks.remove(1);
                } else if let Some(qc) = s.last_qc.as_mut() {
                    forge(qc, identity, garbage);
                }
            }
            Message::SyncRequest(_) => {}
        }
        vec![bad]
    }

    /// Rewrite a proposal in place; true when the peer must receive the original as well (an
    /// equivocation delivered to one peer).
    fn rewrite_proposal(
        &mut self,
        p: &mut Proposal,
        peer: usize,
        identity: usize,
        garbage: Sig,
    ) -> bool {
        match self.rng.gen_range(0..6) {
            // Equivocation: odd peers get a different, otherwise valid block...
            0 if peer % 2 == 1 => p.block.timestamp_ms += 1,
            0 => {}
            // ...or a peer gets both blocks (and must detect and report it).
            4 => {
                p.block.timestamp_ms += 1;
                return true;
            }
            1 => {
                // A digest nobody holds (kept within the encodable bound).
                p.block
                    .payload
                    .truncate(crate::consensus::BLOCK_DIGESTS_MAX - 1);
                p.block.payload.push(self.rng.gen());
            }
            2 => forge(&mut p.block.justify, identity, garbage),
            5 => {
                // Extend an old branch: re-parent on genesis (fails the lock or the TC rule).
                p.block.justify = genesis_qc();
                p.block.height = 1;
                p.tc = None;
            }
            _ => {
                // A "QC" signed by this validator alone: valid signature, too few signers.
                let qc = &mut p.block.justify;
                let msg = vote_message(SIM_CHAIN_ID, &qc.block_hash, qc.round, qc.height);
                qc.signers = SignerBitmap::default();
                qc.signers.insert(identity as u16);
                qc.signatures = vec![self.secrets[identity].sign(&msg)];
            }
        }
        false
    }
}

/// Replaces one of `qc`'s signatures with `garbage` (or, for the genesis QC, which has none, adds
/// `identity` with it), so the forgery stays encodable: one signature per signer.
fn forge(qc: &mut QuorumCert, identity: usize, garbage: Sig) {
    match qc.signatures.first_mut() {
        Some(first) => *first = garbage,
        None => {
            qc.signers.insert(identity as u16);
            qc.signatures.push(garbage);
        }
    }
    assert_eq!(qc.signatures.len(), qc.signers.count());
}
