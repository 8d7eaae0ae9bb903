//! Payload bookkeeping: which batch digests this node holds, local batches waiting for a block, and
//! other validators' batches this node will propose itself if they stay unordered.
//!
//! Censorship resistance: a Byzantine leader that follows validator v (always, under round-robin;
//! often, if it steers the reputation choice, `leader.rs`) can withhold the QC of every block v
//! proposes, so v's own batches would never commit. Every held
//! batch (local or not) is therefore queued; a leader proposes its local batches first, then other
//! validators' batches it holds (`FOREIGN_BATCH_DELAY_ROUNDS` = 0: at once), so a batch waits for
//! the next leader that holds it, not for its owner's turn. A replica asked to vote for a batch it
//! does not hold yet defers its vote until the batch arrives (the owner broadcast it first; a
//! fetch goes out only after `BATCH_FETCH_GRACE` in the node); a quorum needs only the replicas
//! that already hold it. Committed digests leave every queue; a digest in an uncommitted ancestor
//! is never proposed again on that branch, so on one branch a batch is ordered once.
//!
//! Bounds: `LOCAL_BATCHES_PENDING_MAX` digests per queue (oldest foreign ones are dropped first),
//! `BATCHES_AVAILABLE_MAX` held digests and as many committed ones (oldest forgotten first; a
//! committed digest announced again is not queued again).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    Digest, RejectReason, Round, BATCHES_AVAILABLE_MAX, BLOCK_DIGESTS_MAX,
    LOCAL_BATCHES_PENDING_MAX,
};

/// How many rounds a leader holds another validator's batch before it proposes it: 0, at once.
/// With 1 (sessions 3-7), a leader that had just received a batch waited for the round after; the
/// per-batch traces of docs/CAPACITY.md (session 8) put that wait at 13-17 ms mean under the e2e
/// load, against 8.5-12.6 ms with 0, with no more fetches.
pub const FOREIGN_BATCH_DELAY_ROUNDS: Round = 0;

/// Digests in arrival order, with the round each arrived in.
#[derive(Default)]
struct Queue {
    by_seq: BTreeMap<u64, (Digest, Round)>,
    seq_of: BTreeMap<Digest, u64>,
    next_seq: u64,
}

impl Queue {
    fn insert(&mut self, digest: Digest, round: Round) -> bool {
        if self.seq_of.contains_key(&digest) {
            return false;
        }
        self.by_seq.insert(self.next_seq, (digest, round));
        self.seq_of.insert(digest, self.next_seq);
        self.next_seq += 1;
        true
    }
    fn remove(&mut self, digest: &Digest) {
        if let Some(seq) = self.seq_of.remove(digest) {
            self.by_seq.remove(&seq);
        }
        assert_eq!(self.by_seq.len(), self.seq_of.len());
    }
    fn pop_oldest(&mut self) {
        if let Some((_, (digest, _))) = self.by_seq.pop_first() {
            self.seq_of.remove(&digest);
        }
    }
    fn len(&self) -> usize {
        self.by_seq.len()
    }
}

#[derive(Default)]
pub struct PayloadState {
    local: Queue,
    foreign: Queue,
    available: BTreeSet<Digest>,
    available_order: VecDeque<Digest>,
    /// Digests seen committed (the newest `BATCHES_AVAILABLE_MAX`): a batch announced again after
    /// it committed (a late fetch answer, a peer's re-send) is held but never queued again, or it
    /// would be ordered a second time.
    committed: BTreeSet<Digest>,
    committed_order: VecDeque<Digest>,
}

impl PayloadState {
    pub fn local_ready(&mut self, digest: Digest, round: Round) -> Result<(), RejectReason> {
        self.mark_available(digest);
        if self.local.seq_of.contains_key(&digest) || self.committed.contains(&digest) {
            return Ok(());
        }
        if self.local.len() >= LOCAL_BATCHES_PENDING_MAX {
            return Err(RejectReason::BufferFull("local batches pending"));
        }
        self.foreign.remove(&digest);
        assert!(self.local.insert(digest, round));
        Ok(())
    }

    /// Another validator's batch is held in full: remember it, and queue it as a fallback proposal.
    pub fn foreign_available(&mut self, digest: Digest, round: Round) {
        self.mark_available(digest);
        if self.local.seq_of.contains_key(&digest) || self.committed.contains(&digest) {
            return;
        }
        if self.foreign.insert(digest, round) && self.foreign.len() > LOCAL_BATCHES_PENDING_MAX {
            self.foreign.pop_oldest();
        }
        assert!(self.foreign.len() <= LOCAL_BATCHES_PENDING_MAX);
    }

    fn mark_available(&mut self, digest: Digest) {
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

    /// The payload for a block in `round`: oldest local digests, then foreign digests held since at
    /// least `foreign_delay_rounds` rounds; never a digest in `exclude` (uncommitted ancestors).
    pub fn select(
        &self,
        exclude: &BTreeSet<Digest>,
        round: Round,
        foreign_delay_rounds: u64,
        digests_max: usize,
    ) -> Vec<Digest> {
        assert!(digests_max <= BLOCK_DIGESTS_MAX);
        let local = self.local.by_seq.values().map(|(d, _)| *d);
        let foreign = (self.foreign.by_seq.values())
            .filter(|(_, since)| since + foreign_delay_rounds <= round)
            .map(|(d, _)| *d);
        let chosen: Vec<Digest> = local
            .chain(foreign)
            .filter(|d| !exclude.contains(d))
            .take(digests_max)
            .collect();
        assert!(chosen.len() <= digests_max);
        chosen
    }

    /// Committed digests never need proposing again, even if announced again later.
    pub fn committed(&mut self, digests: &[Digest]) {
        for digest in digests {
            self.local.remove(digest);
            self.foreign.remove(digest);
            if self.committed.insert(*digest) {
                self.committed_order.push_back(*digest);
            }
        }
        while self.committed_order.len() > BATCHES_AVAILABLE_MAX {
            let old = self.committed_order.pop_front().expect("nonempty");
            self.committed.remove(&old);
        }
        assert_eq!(self.committed.len(), self.committed_order.len());
    }

    pub fn pending_len(&self) -> usize {
        self.local.len()
    }

    /// Other validators' batches held and not yet seen committed (work pending in the cluster).
    pub fn foreign_pending(&self) -> usize {
        self.foreign.len()
    }
}
