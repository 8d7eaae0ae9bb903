//! The consensus state machine: `Core::handle(now_ms, event) -> Vec<Action>`.
//!
//! This file holds the event dispatch, proposals, votes and QC processing. Timeouts and TCs live in
//! `timeouts.rs`, block sync in `sync.rs`; all are `impl Core` blocks over the same state.

use std::collections::{BTreeMap, VecDeque};

use super::block_tree::{genesis_qc, BlockTree};
use super::crypto_iface::{vote_message, QuorumCrypto, SignerBitmap};
use super::messages::{Block, CommittedBlock, Message, Proposal, QuorumCert, TimeoutCert, Vote};
use super::pacemaker::Pacemaker;
use super::payload::PayloadState;
use super::safety::SafetyState;
use super::votes::VoteCollector;
use super::{
    leader, Action, Config, Event, Hash, Recipient, RejectReason, Round, ValidatorIndex,
    ROUNDS_AHEAD_MAX,
};

/// What a restarted node recovers from its own disk.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub safety: SafetyState,
    /// The last durably committed block with its certifying QC.
    pub tip: CommittedBlock,
    /// Committed blocks just below `tip` read back from the log, oldest first (up to
    /// `COMMITTED_WINDOW_MAX - 1`; fewer, or none, is allowed). They refill the committed window
    /// that serves sync: without them a restarted node could not help a peer that lags behind its
    /// restart point (found by the simulator, seeds 172 and 388). Only the run that links
    /// consecutively down from `tip` is kept.
    pub history: Vec<CommittedBlock>,
    /// Uncommitted blocks persisted before voting for them (`Action::PersistBlock`), any order.
    /// They keep a certified block available even if every honest voter restarts.
    pub blocks: Vec<Block>,
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
    pub(super) proposals_seen: BTreeMap<(Round, ValidatorIndex), Hash>,
    /// A proposal waiting for batches before the vote (only for the current round).
    pub(super) vote_deferred: Option<Block>,
    /// A proposal whose parent is being synced (retried once the sync response arrives).
    pub(super) proposal_parked: Option<(ValidatorIndex, Proposal)>,
    pub(super) sync_requested_at_ms: Option<u64>,
    /// True while a sync response's QCs are applied (no proposals for rounds passed through).
    pub(super) applying_sync: bool,
    /// Idle pacing: the round whose `SetProposeTimer` is armed, and the round whose wait is over.
    pub(super) propose_timer_round: Option<Round>,
    pub(super) idle_wait_over_round: Option<Round>,
    /// Round of the latest QC that committed a non-empty block: a leader holding it as its high QC
    /// proposes at once, since its proposal is how the other replicas learn of that commit.
    pub(super) payload_commit_qc_round: Option<Round>,
    /// Validators the shell reports unreachable (`Event::PeerReachable`): local, timers only.
    pub(super) unreachable: SignerBitmap,
    /// The round of this replica's latest vote and the next leader it went to.
    pub(super) vote_sent_to: Option<(Round, ValidatorIndex)>,
    /// The round whose timer is armed short because the validator it waits on is unreachable.
    pub(super) short_timer_round: Option<Round>,
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
        if let Err(e) = cfg.validate() {
            panic!("consensus config invalid: {e}");
        }
        let recovering = recovered.is_some();
        // Batches the log shows committed are never queued for proposal again after a restart.
        let mut payload = PayloadState::default();
        if let Some(r) = &recovered {
            for committed in r.history.iter().chain([&r.tip]) {
                payload.committed(&committed.block.payload);
            }
        }
        let (safety, mut tree) = match recovered {
            None => (SafetyState::default(), BlockTree::genesis()),
            Some(r) => (r.safety, BlockTree::recovered(r.tip, r.history, r.blocks)),
        };
        tree.tolerate_conflicts = cfg.testing_quorum_too_small;
        tree.set_window_max(cfg.committed_window);
        let mut safety = safety;
        let round = (tree.high_qc.round + 1)
            .max(safety.voted_round)
            .max(safety.timeout_round)
            .max(1);
        if recovering {
            // A proposal may have left before its record was durable (the shell sends proposals
            // without waiting for a sync): never propose in the round this node comes back to,
            // nor the next, which it may already have reached.
            safety.proposed_round = safety.proposed_round.max(round + 1);
        }
        let pacemaker = Pacemaker::new(round, cfg.round_timeout_ms, cfg.round_timeout_ms_max);
        Core {
            cfg,
            crypto,
            safety,
            tree,
            pacemaker,
            votes: VoteCollector::default(),
            payload,
            proposals_seen: BTreeMap::new(),
            vote_deferred: None,
            proposal_parked: None,
            sync_requested_at_ms: None,
            applying_sync: false,
            propose_timer_round: None,
            idle_wait_over_round: None,
            payload_commit_qc_round: None,
            unreachable: SignerBitmap::default(),
            vote_sent_to: None,
            short_timer_round: None,
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
            Event::ProposeTimer { round } => self.on_propose_timer(round),
            Event::LocalBatchReady(digest) => {
                if let Err(reason) = self.payload.local_ready(digest, self.pacemaker.round) {
                    self.reject(None, reason);
                }
                self.propose_if_idle_waiting();
            }
            Event::BatchAvailable(digest) => {
                self.on_batch_available(digest);
                self.propose_if_idle_waiting();
            }
            Event::PeerReachable {
                validator,
                reachable,
            } => self.on_peer_reachable(validator, reachable),
        }
        // Messages to self are handled after the event; each handled message may add more.
        let mut steps = 0;
        while let Some(msg) = self.loopback.pop_front() {
            steps += 1;
            assert!(steps <= 64, "loopback must converge");
            self.on_message(self.cfg.me, msg);
        }
        self.arm_timer_for_unreachable_wait();
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

    /// Check a QC: genesis by equality, otherwise quorum size, membership and every signer's signature.
    pub(super) fn verify_qc(&self, qc: &QuorumCert) -> Result<(), RejectReason> {
        if qc.round == 0 {
            return if *qc == genesis_qc() {
                Ok(())
            } else {
                Err(RejectReason::QcInvalidSignature)
            };
        }
        if !qc.signers.within(self.cfg.validator_count) {
            return Err(RejectReason::QcNonMemberSigner);
        }
        let (signers, quorum) = (qc.signers.count(), self.cfg.quorum());
        if signers < quorum {
            return Err(RejectReason::QcTooFewSigners { signers, quorum });
        }
        let msg = vote_message(self.cfg.chain_id, &qc.block_hash, qc.round, qc.height);
        if !self
            .crypto
            .verify_same_msg(&qc.signers, &msg, &qc.signatures)
        {
            return Err(RejectReason::QcInvalidSignature);
        }
        Ok(())
    }

    pub(super) fn on_batch_available(&mut self, digest: super::Digest) {
        self.payload.foreign_available(digest, self.pacemaker.round);
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
    pub(super) fn vote_for(&mut self, block: &Block, hash: Hash) {
        assert_eq!(block.round, self.pacemaker.round);
        self.out.push(Action::PersistBlock(block.clone()));
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
        let next_leader = leader::after_qc(&self.cfg, block.round + 1, block);
        self.vote_sent_to = Some((block.round, next_leader));
        self.send(next_leader, Message::Vote(vote));
    }

    fn on_vote(&mut self, from: ValidatorIndex, vote: Vote) {
        if vote.voter != from {
            return self.reject(Some(from), RejectReason::SenderMismatch);
        }
        // The vote's block names the next leader; a vote that overtook its block is collected (a
        // QC it helps form is checked like any other; proposing still needs the block).
        let certified = self.tree.get(&vote.block_hash);
        let next_leader =
            leader::after_qc_if_held(&self.cfg, vote.round + 1, certified).unwrap_or(self.cfg.me);
        if next_leader != self.cfg.me {
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
            Ok(committed) if !committed.is_empty() => {
                if committed.iter().any(|c| !c.block.payload.is_empty()) {
                    self.payload_commit_qc_round = self.payload_commit_qc_round.max(Some(qc.round));
                }
                self.on_committed(committed)
            }
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
}
