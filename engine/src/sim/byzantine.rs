//! Byzantine behaviour: a Byzantine node runs an honest core, but its shell rewrites what it sends:
//! equivocating proposals, proposals with unavailable payloads or forged QCs, invalid vote and timeout
//! signatures, votes for unknown blocks, and corrupted sync responses.

use rand::Rng;

use super::faults::BYZANTINE_ACT_PER_MILLE;
use super::runner::Sim;
use crate::consensus::{Message, SignerBitmap};

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
        let garbage = self.secrets[node]
            .sign(
                &self.rng.gen::<[u8; 32]>(),
                crate::consensus::bls::BLS_DST,
                &[],
            )
            .compress();
        match &mut bad {
            Message::Proposal(p) => match self.rng.gen_range(0..5) {
                // Equivocation: odd peers get a different, otherwise valid block...
                0 if peer % 2 == 1 => p.block.timestamp_ms += 1,
                0 => {}
                // ...or a peer gets both blocks (and must detect and report it).
                4 => {
                    p.block.timestamp_ms += 1;
                    return vec![msg.clone(), bad];
                }
                1 => p.block.payload.push(self.rng.gen()), // a digest nobody holds
                2 => p.block.justify.signature = garbage,
                _ => {
                    p.block.justify.signers = SignerBitmap::default();
                    p.block.justify.signers.insert(node as u16);
                }
            },
            Message::Vote(v) => match self.rng.gen_range(0..3) {
                0 => v.signature = garbage,
                1 => v.block_hash = self.rng.gen(),
                _ => return vec![msg.clone(), bad_vote_twin(msg, garbage)],
            },
            Message::Timeout(t) => match self.rng.gen_range(0..2) {
                0 => t.timeout.signature = garbage,
                _ => t.timeout.high_qc.signature = garbage,
            },
            Message::SyncResponse(s) => {
                if s.blocks.len() > 2 {
                    s.blocks.remove(1);
                } else if let Some(qc) = s.last_qc.as_mut() {
                    qc.signature = garbage;
                }
            }
            Message::SyncRequest(_) => {}
        }
        vec![bad]
    }
}

/// A second, conflicting vote in the same round (for another block) with a garbage signature.
fn bad_vote_twin(msg: &Message, signature: [u8; 48]) -> Message {
    let mut twin = msg.clone();
    if let Message::Vote(v) = &mut twin {
        v.block_hash[0] ^= 0xff;
        v.signature = signature;
    }
    twin
}
