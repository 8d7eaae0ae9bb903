//! Blocks held in memory, the committed tip, the high QC and the two-chain commit rule.
//!
//! Bounds: at most `BLOCKS_IN_MEMORY_MAX` blocks in the tree (the committed tip plus uncommitted
//! blocks of higher rounds) and `COMMITTED_WINDOW_MAX` recent committed blocks for serving sync.

use std::collections::BTreeMap;

use super::messages::{Block, CommittedBlock, QuorumCert, SyncResponse};
use super::{
    Hash, RejectReason, Round, BLOCKS_IN_MEMORY_MAX, COMMITTED_WINDOW_MAX, SYNC_BLOCKS_MAX,
};
use crate::consensus::crypto_iface::SignerBitmap;

/// A commit could not be evaluated because an ancestor is not held: sync first.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingAncestor;

pub struct BlockTree {
    blocks: BTreeMap<Hash, Block>,
    committed: BTreeMap<u64, CommittedBlock>,
    tip_hash: Hash,
    tip_height: u64,
    tip_round: Round,
    pub high_qc: QuorumCert,
    /// Most committed blocks kept in `committed` (`Config::committed_window`).
    window_max: usize,
    /// Skip the conflicting-commit assertion (only with the test-only broken quorum).
    pub(crate) tolerate_conflicts: bool,
}

pub fn genesis_block() -> Block {
    let justify = QuorumCert {
        block_hash: [0; 32],
        round: 0,
        height: 0,
        signers: SignerBitmap::default(),
        signatures: Vec::new(),
    };
    Block {
        author: 0,
        round: 0,
        height: 0,
        timestamp_ms: 0,
        justify,
        payload: Vec::new(),
    }
}

/// The QC every chain starts from: certifies genesis, carries no signatures, verified by equality.
pub fn genesis_qc() -> QuorumCert {
    QuorumCert {
        block_hash: genesis_block().hash(),
        round: 0,
        height: 0,
        signers: SignerBitmap::default(),
        signatures: Vec::new(),
    }
}

impl BlockTree {
    /// A tree rooted at `tip` (genesis for a fresh node, the last durable commit after a restart).
    pub fn new(tip: CommittedBlock) -> Self {
        let hash = tip.block.hash();
        assert_eq!(tip.qc.block_hash, hash, "tip QC must certify the tip");
        assert_eq!(tip.height, tip.block.height);
        let mut tree = BlockTree {
            blocks: BTreeMap::new(),
            committed: BTreeMap::new(),
            tip_hash: hash,
            tip_height: tip.height,
            tip_round: tip.block.round,
            high_qc: tip.qc.clone(),
            window_max: COMMITTED_WINDOW_MAX,
            tolerate_conflicts: false,
        };
        tree.blocks.insert(hash, tip.block.clone());
        tree.committed.insert(tip.height, tip);
        tree
    }

    /// A restarted node's tree: the durable tip, the committed window refilled from `history` (the
    /// log's blocks below the tip), and the blocks it persisted before voting. Blocks at or below the
    /// tip's round are dropped; the high QC is the highest `justify` among the rest (each was
    /// verified before its block was persisted).
    pub fn recovered(
        tip: CommittedBlock,
        history: Vec<CommittedBlock>,
        mut blocks: Vec<Block>,
    ) -> Self {
        let mut tree = BlockTree::new(tip);
        tree.refill_window(history);
        blocks.sort_by_key(|b| b.round);
        let tip_round = tree.tip_round;
        for block in blocks.into_iter().filter(|b| b.round > tip_round) {
            if block.justify.round > tree.high_qc.round && block.justify.height >= tree.tip_height {
                tree.high_qc = block.justify.clone();
            }
            if tree.insert(block).is_err() {
                break; // bounded: the oldest rounds are kept
            }
        }
        tree
    }

    /// Put committed blocks below the tip back into the window, newest first, as long as each one
    /// is certified by its QC and is the parent of the block above it (so the window stays one chain).
    fn refill_window(&mut self, mut history: Vec<CommittedBlock>) {
        history.sort_by_key(|c| std::cmp::Reverse(c.height));
        for c in history {
            if self.committed.len() >= self.window_max {
                break;
            }
            let (&lowest, above) = self.committed.first_key_value().expect("holds the tip");
            if c.height >= lowest {
                continue; // the tip itself, or a duplicate
            }
            let linked = c.height + 1 == lowest
                && c.height == c.block.height
                && c.qc.block_hash == c.block.hash()
                && above.block.parent_hash() == c.qc.block_hash;
            if !linked {
                break;
            }
            self.committed.insert(c.height, c);
        }
        assert!(self.committed.len() <= self.window_max);
    }

    /// Keeps at most `max` (at least 1: the tip) committed blocks in the window from now on,
    /// dropping the oldest beyond it.
    pub fn set_window_max(&mut self, max: usize) {
        self.window_max = max.max(1);
        while self.committed.len() > self.window_max {
            self.committed.pop_first();
        }
    }

    /// The lowest committed height still in the window (the tip's when the window holds only it).
    pub fn window_start(&self) -> u64 {
        let (&start, _) = self.committed.first_key_value().expect("holds the tip");
        start
    }

    pub fn genesis() -> Self {
        BlockTree::new(CommittedBlock {
            height: 0,
            block: genesis_block(),
            qc: genesis_qc(),
        })
    }

    pub fn get(&self, hash: &Hash) -> Option<&Block> {
        self.blocks.get(hash)
    }
    pub fn committed_height(&self) -> u64 {
        self.tip_height
    }
    pub fn committed_round(&self) -> Round {
        self.tip_round
    }
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn insert(&mut self, block: Block) -> Result<(), RejectReason> {
        if block.round <= self.tip_round {
            return Err(RejectReason::StaleRound {
                round: block.round,
                current: self.tip_round,
            });
        }
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return Ok(());
        }
        if self.blocks.len() >= BLOCKS_IN_MEMORY_MAX {
            return Err(RejectReason::BufferFull("blocks in memory"));
        }
        self.blocks.insert(hash, block);
        assert!(self.blocks.len() <= BLOCKS_IN_MEMORY_MAX);
        Ok(())
    }

    /// Uncommitted ancestors of `hash` (inclusive), newest first, stopping at the committed tip.
    pub fn uncommitted_chain(&self, hash: &Hash) -> Vec<&Block> {
        let mut chain = Vec::new();
        let mut cursor = *hash;
        while cursor != self.tip_hash {
            let Some(block) = self.blocks.get(&cursor) else {
                break;
            };
            assert!(chain.len() < BLOCKS_IN_MEMORY_MAX, "block tree cycle");
            chain.push(block);
            cursor = block.parent_hash();
        }
        chain
    }

    /// The two-chain rule: a QC for B1 whose parent B0 is in the directly preceding round commits B0
    /// and every uncommitted ancestor. Returns the newly committed blocks in height order.
    pub fn try_commit(&mut self, qc: &QuorumCert) -> Result<Vec<CommittedBlock>, MissingAncestor> {
        let Some(b1) = self.blocks.get(&qc.block_hash) else {
            return Err(MissingAncestor);
        };
        if b1.justify.round + 1 != b1.round || b1.justify.height <= self.tip_height {
            return Ok(Vec::new());
        }
        let mut pending = vec![(b1.parent_hash(), b1.justify.clone())];
        loop {
            let (hash, _) = pending.last().expect("nonempty");
            let Some(block) = self.blocks.get(hash) else {
                return Err(MissingAncestor);
            };
            if block.height == self.tip_height + 1 {
                if block.parent_hash() != self.tip_hash {
                    assert!(
                        self.tolerate_conflicts,
                        "SAFETY: commit conflicts with the committed chain"
                    );
                    return Ok(Vec::new());
                }
                break;
            }
            assert!(block.height > self.tip_height + 1 && pending.len() <= BLOCKS_IN_MEMORY_MAX);
            pending.push((block.parent_hash(), block.justify.clone()));
        }
        let committed: Vec<CommittedBlock> = pending
            .into_iter()
            .rev()
            .map(|(hash, qc)| {
                let block = self.blocks[&hash].clone();
                CommittedBlock {
                    height: block.height,
                    block,
                    qc,
                }
            })
            .collect();
        self.apply_commits(&committed);
        Ok(committed)
    }

    fn apply_commits(&mut self, committed: &[CommittedBlock]) {
        for c in committed {
            assert_eq!(
                c.height,
                self.tip_height + 1,
                "commit heights are consecutive"
            );
            assert_eq!(
                c.block.parent_hash(),
                self.tip_hash,
                "commit extends the committed tip"
            );
            assert_eq!(c.qc.block_hash, c.block.hash());
            self.tip_hash = c.qc.block_hash;
            self.tip_height = c.height;
            self.tip_round = c.block.round;
            self.committed.insert(c.height, c.clone());
        }
        while self.committed.len() > self.window_max {
            self.committed.pop_first();
        }
        let (tip_hash, tip_round) = (self.tip_hash, self.tip_round);
        self.blocks
            .retain(|hash, block| *hash == tip_hash || block.round > tip_round);
        assert!(self.blocks.contains_key(&self.tip_hash));
    }

    /// Blocks from `from_height` up along the committed chain then to the high QC's block, with the
    /// QC certifying the last one. Empty when `from_height` left the committed window (the core
    /// then has the shell serve it from the block log: `Action::ServeSyncFromLog`).
    pub fn serve_sync(&self, from_height: u64) -> SyncResponse {
        let empty = SyncResponse {
            blocks: Vec::new(),
            last_qc: None,
        };
        let Some((&window_start, _)) = self.committed.first_key_value() else {
            return empty;
        };
        if from_height < window_start.max(1) {
            return empty;
        }
        let mut pairs: Vec<(Block, QuorumCert)> = self
            .committed
            .range(from_height..)
            .take(SYNC_BLOCKS_MAX)
            .map(|(_, c)| (c.block.clone(), c.qc.clone()))
            .collect();
        let mut chain: Vec<&Block> = self.uncommitted_chain(&self.high_qc.block_hash);
        chain.reverse();
        if chain
            .first()
            .is_some_and(|b| b.parent_hash() != self.tip_hash)
        {
            chain.clear(); // a gap below the high QC's block: serve only the committed part
        }
        let mut certifying = chain
            .iter()
            .skip(1)
            .map(|b| b.justify.clone())
            .chain([self.high_qc.clone()]);
        for block in chain.iter() {
            let qc = certifying.next().expect("one QC per block");
            if block.height >= from_height && pairs.len() < SYNC_BLOCKS_MAX {
                pairs.push(((*block).clone(), qc));
            }
        }
        let last_qc = pairs.last().map(|(_, qc)| qc.clone());
        SyncResponse {
            blocks: pairs.into_iter().map(|(b, _)| b).collect(),
            last_qc,
        }
    }
}
