//! Payload bookkeeping: which batch digests this node holds, and local batches waiting for a block.
//!
//! Bounds: `LOCAL_BATCHES_PENDING_MAX` pending local digests, `BATCHES_AVAILABLE_MAX` held digests
//! (oldest forgotten first).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    Digest, RejectReason, BATCHES_AVAILABLE_MAX, BLOCK_DIGESTS_MAX, LOCAL_BATCHES_PENDING_MAX,
};

#[derive(Default)]
pub struct PayloadState {
    pending: BTreeMap<u64, Digest>,
    pending_seq: BTreeMap<Digest, u64>,
    next_seq: u64,
    available: BTreeSet<Digest>,
    available_order: VecDeque<Digest>,
}

impl PayloadState {
    pub fn local_ready(&mut self, digest: Digest) -> Result<(), RejectReason> {
        self.mark_available(digest);
        if self.pending_seq.contains_key(&digest) {
            return Ok(());
        }
        if self.pending.len() >= LOCAL_BATCHES_PENDING_MAX {
            return Err(RejectReason::BufferFull("local batches pending"));
        }
        self.pending.insert(self.next_seq, digest);
        self.pending_seq.insert(digest, self.next_seq);
        self.next_seq += 1;
        assert_eq!(self.pending.len(), self.pending_seq.len());
        Ok(())
    }

    pub fn mark_available(&mut self, digest: Digest) {
        if self.available.insert(digest) {
            self.available_order.push_back(digest);
        }
        while self.available_order.len() > BATCHES_AVAILABLE_MAX {
            let old = self.available_order.pop_front().expect("nonempty");
            self.available.remove(&old);
        }
        assert_eq!(self.available.len(), self.available_order.len());
    }

    pub fn missing(&self, digests: &[Digest]) -> Vec<Digest> {
        digests
            .iter()
            .filter(|d| !self.available.contains(*d))
            .copied()
            .collect()
    }

    /// Oldest pending digests not already in `exclude` (the uncommitted ancestors' payloads).
    pub fn select(&self, exclude: &BTreeSet<Digest>) -> Vec<Digest> {
        let chosen: Vec<Digest> = self
            .pending
            .values()
            .filter(|d| !exclude.contains(*d))
            .take(BLOCK_DIGESTS_MAX)
            .copied()
            .collect();
        assert!(chosen.len() <= BLOCK_DIGESTS_MAX);
        chosen
    }

    /// Committed digests never need proposing again.
    pub fn committed(&mut self, digests: &[Digest]) {
        for digest in digests {
            if let Some(seq) = self.pending_seq.remove(digest) {
                self.pending.remove(&seq);
            }
        }
        assert_eq!(self.pending.len(), self.pending_seq.len());
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}
