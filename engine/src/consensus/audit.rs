//! Offline re-verification of a committed chain (for the audit tool): every block must link to its
//! predecessor by hash, heights must be consecutive, and every QC must certify its block and verify
//! (quorum size, members only, every signer's signature).

use thiserror::Error;

use super::block_tree::genesis_qc;
use super::crypto_iface::{vote_message, QuorumCrypto};
use super::messages::CommittedBlock;
use super::Config;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuditError {
    #[error("height {height}: expected height {expected}")]
    HeightGap { height: u64, expected: u64 },
    #[error("height {height}: block does not extend the previous block")]
    BrokenLink { height: u64 },
    #[error("height {height}: QC does not certify this block")]
    QcMismatch { height: u64 },
    #[error("height {height}: QC has {signers} signers, quorum is {quorum}")]
    QcTooFewSigners {
        height: u64,
        signers: usize,
        quorum: usize,
    },
    #[error("height {height}: QC signature invalid")]
    QcInvalid { height: u64 },
}

/// Verify `blocks` as the continuation of `previous` (genesis: height 0, `genesis_block()`).
pub fn audit_chain<C: QuorumCrypto>(
    crypto: &C,
    cfg: &Config,
    previous: &CommittedBlock,
    blocks: &[CommittedBlock],
) -> Result<(), AuditError> {
    let mut prev_hash = previous.block.hash();
    for (expected, c) in (previous.height + 1..).zip(blocks) {
        let height = c.height;
        if height != expected || c.block.height != height {
            return Err(AuditError::HeightGap { height, expected });
        }
        if c.block.parent_hash() != prev_hash {
            return Err(AuditError::BrokenLink { height });
        }
        let hash = c.block.hash();
        if c.qc.block_hash != hash
            || c.qc.round != c.block.round
            || c.qc.height != height
            || c.qc == genesis_qc()
        {
            return Err(AuditError::QcMismatch { height });
        }
        let (signers, quorum) = (c.qc.signers.count(), cfg.quorum());
        if signers < quorum || !c.qc.signers.within(cfg.validator_count) {
            return Err(AuditError::QcTooFewSigners {
                height,
                signers,
                quorum,
            });
        }
        let msg = vote_message(cfg.chain_id, &hash, c.qc.round, height);
        if !crypto.verify_same_msg(&c.qc.signers, &msg, &c.qc.signatures) {
            return Err(AuditError::QcInvalid { height });
        }
        prev_hash = hash;
    }
    Ok(())
}
