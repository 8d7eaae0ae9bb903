//! The consensus state machine: `Core::handle(now_ms, event) -> Vec<Action>`.
//!
//! This file holds the event dispatch, proposals, votes and QC processing. Timeouts and TCs live in
//! `timeouts.rs`, block sync in `sync.rs`; all are `impl Core` blocks over the same state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::block_tree::{genesis_qc, BlockTree};
use super::crypto_iface::{vote_message, QuorumCrypto};
use super::messages::{Block, CommittedBlock, Message, Proposal, QuorumCert, TimeoutCert, Vote};
use super::pacemaker::Pacemaker;
use super::payload::PayloadState;
use super::safety::SafetyState;
use super::votes::VoteCollector;
use super::{
    Action, Config, Event, Hash, Recipient, RejectReason, Round, ValidatorIndex, BLOCK_DIGESTS_MAX,
    EQUIVOCATION_ROUNDS_KEPT, ROUNDS_AHEAD_MAX,
};

/// What a restarted node recovers from its own disk.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub safety: SafetyState,
    /// The last durably committed block with its certifying QC.
    pub tip: CommittedBlock,
}

pub struct Core<C: QuorumCrypto> {
    pub(super) cfg: Config,
    pub(super) crypto: C,
    pub(super) safety: SafetyState,
    pub(super) tree: BlockTree,
    pub(super) pacemaker: Pacemaker,
    votes: VoteCollector,
    pub(super) payload: PayloadState,
    /// First proposal hash seen per (round, leader), for equivocation detection.
    proposals_seen: BTreeMap<(Round, ValidatorIndex), Hash>,
    /// A proposal waiting for batches before the vote (only for the current round).
    vote_deferred: Option<Block>,
    /// A proposal whose parent is being synced (retried once the sync response arrives).
    pub(super) proposal_parked: Option<(ValidatorIndex, Proposal)>,
    pub(super) sync_requested_at_ms: Option<u64>,
    pub(super) now_ms: u64,
    pub(super) out: Vec<Action>,
    pub(super) loopback: VecDeque<Message>,
}

impl<C: QuorumCrypto> Core<C> {
    /// A validator starting from genesis (`recovered` = None) or from its durable state.
    pub fn new(cfg: Config, crypto: C, recovered: Option<Recovered>) -> Self {
        assert_eq!(
            cfg.validator_count,
            crypto.validator_count(),
            "config and key set disagree"
        );
        let (safety, mut tree) = match recovered {
            None => (SafetyState::default(), BlockTree::genesis()),
            Some(r) => (r.safety, BlockTree::new(r.tip)),
        };
        tree.tolerate_conflicts = cfg.testing_quorum_too_small;
        let round = (tree.high_qc.round + 1)
            .max(safety.voted_round)
            .max(safety.timeout_round)
            .max(1);
        let pacemaker = Pacemaker::new(round, cfg.round_timeout_ms);
        Core {
            cfg,
            crypto,
            safety,
            tree,
            pacemaker,
            votes: VoteCollector::default(),
            payload: PayloadState::default(),
            proposals_seen: BTreeMap::new(),
            vote_deferred: None,
            proposal_parked: None,
            sync_requested_at_ms: None,
            now_ms: 0,
            out: Vec::new(),
            loopback: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn round(&self) -> Round {
        self.pacemaker.round
    }
    pub fn safety(&self) -> SafetyState {
        self.safety
    }
    pub fn committed_height(&self) -> u64 {
        self.tree.committed_height()
    }
    pub fn high_qc(&self) -> &QuorumCert {
        &self.tree.high_qc
    }
    pub fn blocks_in_memory(&self) -> usize {
        self.tree.len()
    }
    pub fn pending_local_batches(&self) -> usize {
        self.payload.pending_len()
    }

    /// Feed one event; returns the actions to execute in order.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        assert!(self.out.is_empty() && self.loopback.is_empty());
        self.now_ms = self.now_ms.max(now_ms);
        match event {
            Event::Start => self.on_start(),
            Event::Message { from, msg } => self.on_message(from, msg),
            Event::Timer { round } => self.on_timer(round),
            Event::LocalBatchReady(digest) => {
                if let Err(reason) = self.payload.local_ready(digest) {
                    self.reject(None, reason);
                }
            }
            Event::BatchAvailable(digest) => self.on_batch_available(digest),
        }
        // Messages to self are handled after the event; each handled message may add more.
        let mut steps = 0;
        while let Some(msg) = self.loopback.pop_front() {
            steps += 1;
            assert!(steps <= 64, "loopback must converge");
            self.on_message(self.cfg.me, msg);
        }
        std::mem::take(&mut self.out)
    }

    fn on_start(&mut self) {
        let (round, duration_ms) = (self.pacemaker.round, self.pacemaker.timer_ms());
        self.out.push(Action::SetTimer { round, duration_ms });
        self.try_propose();
    }

    fn on_message(&mut self, from: ValidatorIndex, msg: Message) {
        if from as usize >= self.cfg.validator_count {
            return self.reject(Some(from), RejectReason::NonMember(from));
        }
        match msg {
            Message::Proposal(p) => self.on_proposal(from, p),
            Message::Vote(v) => self.on_vote(from, v),
            Message::Timeout(t) => self.on_timeout_msg(from, t),
            Message::SyncRequest(r) => self.on_sync_request(from, r),
            Message::SyncResponse(r) => self.on_sync_response(from, r),
        }
    }

    pub(super) fn reject(&mut self, from: Option<ValidatorIndex>, reason: RejectReason) {
        self.out.push(Action::Rejected { from, reason });
    }

    pub(super) fn send(&mut self, to: ValidatorIndex, msg: Message) {
        if to == self.cfg.me {
            self.loopback.push_back(msg);
        } else {
            self.out.push(Action::Send {
                to: Recipient::One(to),
                msg,
            });
        }
    }

    pub(super) fn broadcast(&mut self, msg: Message) {
        self.out.push(Action::Send {
            to: Recipient::Others,
            msg: msg.clone(),
        });
        self.loopback.push_back(msg);
    }

    /// Check a QC: genesis by equality, otherwise quorum size, membership and one aggregate pairing.
    pub(super) fn verify_qc(&self, qc: &QuorumCert) -> Result<(), RejectReason> {
        if qc.round == 0 {
            return if *qc == genesis_qc() {
                Ok(())
            } else {
                Err(RejectReason::QcInvalidSignature)
            };
        }
        let (signers, quorum) = (qc.signers.count(), self.cfg.quorum());
        if signers < quorum || !qc.signers.within(self.cfg.validator_count) {
            return Err(RejectReason::QcTooFewSigners { signers, quorum });
        }
        let msg = vote_message(self.cfg.chain_id, &qc.block_hash, qc.round, qc.height);
        if !self
            .crypto
            .verify_same_msg(&qc.signers, &msg, &qc.signature)
        {
            return Err(RejectReason::QcInvalidSignature);
        }
        Ok(())
    }

    fn check_proposal_shape(
        &self,
        from: ValidatorIndex,
        block: &Block,
    ) -> Result<(), RejectReason> {
        if block.author != from {
            return Err(RejectReason::SenderMismatch);
        }
        let leader = self.cfg.leader(block.round);
        if block.author != leader {
            return Err(RejectReason::WrongLeader {
                round: block.round,
                author: block.author,
                leader,
            });
        }
        if block.payload.len() > BLOCK_DIGESTS_MAX {
            return Err(RejectReason::BlockMalformed("payload too long"));
        }
        if block.round <= block.justify.round || block.height != block.justify.height + 1 {
            return Err(RejectReason::BlockMalformed(
                "round/height do not follow the QC",
            ));
        }
        Ok(())
    }

    pub(super) fn on_proposal(&mut self, from: ValidatorIndex, proposal: Proposal) {
        let block = &proposal.block;
        if let Err(reason) = self.check_proposal_shape(from, block) {
            return self.reject(Some(from), reason);
        }
        if let Err(reason) = self.verify_qc(&block.justify) {
            return self.reject(Some(from), reason);
        }
        self.process_qc(&block.justify, Some(from));
        if let Some(tc) = &proposal.tc {
            if let Err(reason) = self.verify_tc(tc) {
                return self.reject(Some(from), reason);
            }
            self.process_tc(tc);
        }
        let current = self.pacemaker.round;
        if block.round != current {
            let reason = if block.round < current {
                RejectReason::StaleRound {
                    round: block.round,
                    current,
                }
            } else {
                RejectReason::FutureRound {
                    round: block.round,
                    current,
                }
            };
            return self.reject(Some(from), reason);
        }
        let hash = block.hash();
        match self.proposals_seen.get(&(block.round, block.author)) {
            Some(first) if *first == hash => return, // duplicate delivery
            Some(first) => {
                let (author, round, first) = (block.author, block.round, *first);
                self.out.push(Action::Equivocation {
                    author,
                    round,
                    first,
                    second: hash,
                });
                return self.reject(Some(from), RejectReason::Equivocation { author, round });
            }
            None => {}
        }
        let Some(parent) = self.tree.get(&block.parent_hash()) else {
            self.proposal_parked = Some((from, proposal));
            self.request_sync(from);
            return self.reject(Some(from), RejectReason::MissingParent);
        };
        if let Err(reason) = self.check_timestamp(parent, block) {
            return self.reject(Some(from), reason);
        }
        self.accept_proposal(from, proposal, hash);
    }

    fn check_timestamp(&self, parent: &Block, block: &Block) -> Result<(), RejectReason> {
        if block.height != parent.height + 1 {
            return Err(RejectReason::BlockMalformed(
                "height is not parent height + 1",
            ));
        }
        let limit_ms = self.now_ms.saturating_add(self.cfg.timestamp_drift_ms_max);
        if block.timestamp_ms <= parent.timestamp_ms || block.timestamp_ms > limit_ms {
            let (timestamp_ms, parent_ms) = (block.timestamp_ms, parent.timestamp_ms);
            return Err(RejectReason::TimestampOutOfBounds {
                timestamp_ms,
                parent_ms,
                limit_ms,
            });
        }
        Ok(())
    }

    fn accept_proposal(&mut self, from: ValidatorIndex, proposal: Proposal, hash: Hash) {
        let Proposal { block, tc } = proposal;
        if let Err(reason) = self.tree.insert(block.clone()) {
            return self.reject(Some(from), reason);
        }
        self.proposals_seen
            .insert((block.round, block.author), hash);
        let keep_from = block.round.saturating_sub(EQUIVOCATION_ROUNDS_KEPT);
        self.proposals_seen
            .retain(|(round, _), _| *round >= keep_from);
        if let Err(reason) = self.safety.check_vote(&block, tc.as_ref()) {
            return self.reject(Some(from), reason);
        }
        let missing = self.payload.missing(&block.payload);
        if !missing.is_empty() {
            self.out.push(Action::FetchBatches {
                digests: missing,
                from,
            });
            self.vote_deferred = Some(block);
            return;
        }
        self.vote_for(&block, hash);
    }

    fn on_batch_available(&mut self, digest: super::Digest) {
        self.payload.mark_available(digest);
        let ready = self
            .vote_deferred
            .as_ref()
            .is_some_and(|b| self.payload.missing(&b.payload).is_empty());
        if !ready {
            return;
        }
        let block = self.vote_deferred.take().expect("checked above");
        if block.round == self.pacemaker.round
            && block.round > self.safety.voted_round.max(self.safety.timeout_round)
        {
            let hash = block.hash();
            self.vote_for(&block, hash);
        }
    }

    /// Persist the safety state, then send the vote to the next leader.
    fn vote_for(&mut self, block: &Block, hash: Hash) {
        assert_eq!(block.round, self.pacemaker.round);
        let state = self.safety.record_vote(block.round);
        self.out.push(Action::PersistSafety(state));
        let msg = vote_message(self.cfg.chain_id, &hash, block.round, block.height);
        let signature = self.crypto.sign(&msg);
        let vote = Vote {
            block_hash: hash,
            round: block.round,
            height: block.height,
            voter: self.cfg.me,
            signature,
        };
        self.send(self.cfg.leader(block.round + 1), Message::Vote(vote));
    }

    fn on_vote(&mut self, from: ValidatorIndex, vote: Vote) {
        if vote.voter != from {
            return self.reject(Some(from), RejectReason::SenderMismatch);
        }
        if self.cfg.leader(vote.round + 1) != self.cfg.me {
            return self.reject(
                Some(from),
                RejectReason::NotNextLeader { round: vote.round },
            );
        }
        if vote.round <= self.tree.high_qc.round || vote.round + 1 < self.pacemaker.round {
            return; // late vote for an already certified (or abandoned) round: harmless
        }
        if vote.round > self.pacemaker.round + ROUNDS_AHEAD_MAX {
            let current = self.pacemaker.round;
            return self.reject(
                Some(from),
                RejectReason::FutureRound {
                    round: vote.round,
                    current,
                },
            );
        }
        let outcome = self
            .votes
            .add(vote, self.cfg.quorum(), &self.crypto, self.cfg.chain_id);
        for (voter, reason) in outcome.rejects {
            self.reject(Some(voter), reason);
        }
        if let Some(qc) = outcome.qc {
            assert!(self.verify_qc(&qc).is_ok(), "self-formed QC must verify");
            self.process_qc(&qc, None);
        }
    }

    /// Absorb a verified QC: high QC, lock, commit rule, round advance.
    pub(super) fn process_qc(&mut self, qc: &QuorumCert, source: Option<ValidatorIndex>) {
        if qc.round > self.tree.high_qc.round {
            self.tree.high_qc = qc.clone();
        }
        match self.tree.get(&qc.block_hash) {
            Some(block) => {
                let justify_round = block.justify.round;
                self.safety.raise_lock(justify_round);
            }
            None if qc.height > self.tree.committed_height() => {
                if let Some(peer) = source {
                    self.request_sync(peer);
                }
            }
            None => {}
        }
        match self.tree.try_commit(qc) {
            Ok(committed) if !committed.is_empty() => self.on_committed(committed),
            Ok(_) => {}
            Err(_) if qc.height <= self.tree.committed_height() => {}
            Err(_) => {
                if let Some(peer) = source {
                    self.request_sync(peer);
                }
            }
        }
        self.advance_round(qc.round + 1, true);
    }

    fn on_committed(&mut self, committed: Vec<CommittedBlock>) {
        assert!(committed.windows(2).all(|w| w[1].height == w[0].height + 1));
        assert_eq!(
            committed.last().map(|c| c.height),
            Some(self.tree.committed_height())
        );
        for c in &committed {
            self.payload.committed(&c.block.payload);
        }
        self.out.push(Action::Commit(committed));
    }

    pub(super) fn process_tc(&mut self, tc: &TimeoutCert) {
        if self
            .pacemaker
            .last_tc
            .as_ref()
            .is_none_or(|last| tc.round > last.round)
        {
            self.pacemaker.last_tc = Some(tc.clone());
        }
        self.advance_round(tc.round + 1, false);
    }

    pub(super) fn advance_round(&mut self, round: Round, via_qc: bool) {
        if !self.pacemaker.advance(round, via_qc) {
            return;
        }
        self.votes.prune_below(round.saturating_sub(1));
        if self.vote_deferred.as_ref().is_some_and(|b| b.round < round) {
            self.vote_deferred = None;
        }
        let duration_ms = self.pacemaker.timer_ms();
        self.out.push(Action::SetTimer { round, duration_ms });
        self.try_propose();
    }

    /// Propose in the current round if this node leads it and holds a justification and the parent.
    pub(super) fn try_propose(&mut self) {
        let round = self.pacemaker.round;
        if self.cfg.leader(round) != self.cfg.me || self.safety.proposed_round >= round {
            return;
        }
        let high_qc = self.tree.high_qc.clone();
        let tc = if high_qc.round + 1 == round {
            None
        } else {
            match &self.pacemaker.last_tc {
                Some(tc) if tc.round + 1 == round && high_qc.round >= tc.max_high_qc_round() => {
                    Some(tc.clone())
                }
                _ => return,
            }
        };
        let Some(parent) = self.tree.get(&high_qc.block_hash) else {
            return;
        };
        let exclude: BTreeSet<_> = self
            .tree
            .uncommitted_chain(&high_qc.block_hash)
            .iter()
            .flat_map(|b| b.payload.iter().copied())
            .collect();
        let block = Block {
            author: self.cfg.me,
            round,
            height: parent.height + 1,
            timestamp_ms: self.now_ms.max(parent.timestamp_ms + 1),
            justify: high_qc,
            payload: self.payload.select(&exclude),
        };
        let state = self.safety.record_proposal(round);
        self.out.push(Action::PersistSafety(state));
        self.broadcast(Message::Proposal(Proposal { block, tc }));
    }
}
