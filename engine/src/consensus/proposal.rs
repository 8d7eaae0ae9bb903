//! Proposals: checking and accepting a leader's block (shape, QC, TC, round, equivocation, parent,
//! timestamp, safety rule, payload availability), and making this node's own proposal.

use std::collections::BTreeSet;

use super::core::Core;
use super::crypto_iface::QuorumCrypto;
use super::messages::{Block, Message, Proposal};
use super::{
    leader, Action, Hash, RejectReason, ValidatorIndex, BLOCK_DIGESTS_MAX, EQUIVOCATION_ROUNDS_KEPT,
};

/// A block that extends a QC of the round just before its own entered that round through the QC
/// (it carries no TC); any other block entered through a TC.
fn extends_previous_round(block: &Block) -> bool {
    block.justify.round + 1 == block.round
}

impl<C: QuorumCrypto> Core<C> {
    fn check_proposal_shape(
        &self,
        from: ValidatorIndex,
        block: &Block,
    ) -> Result<(), RejectReason> {
        if block.author != from {
            return Err(RejectReason::SenderMismatch);
        }
        if !extends_previous_round(block) {
            // Entered through a TC: round-robin, known without the parent.
            Self::check_leader(block, self.cfg.round_robin_leader(block.round))?;
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

    fn check_leader(block: &Block, leader: ValidatorIndex) -> Result<(), RejectReason> {
        if block.author != leader {
            return Err(RejectReason::WrongLeader {
                round: block.round,
                author: block.author,
                leader,
            });
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
        if block.round < current && self.keep_certified_late_block(block) {
            return;
        }
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
        if extends_previous_round(block) {
            // Entered through a QC: the leader is decided by the parent (`leader.rs`).
            let leader = leader::after_qc(&self.cfg, block.round, parent);
            if let Err(reason) = Self::check_leader(block, leader) {
                return self.reject(Some(from), reason);
            }
        }
        if let Err(reason) = self.check_timestamp(parent, block) {
            return self.reject(Some(from), reason);
        }
        self.accept_proposal(from, proposal, hash);
    }

    /// Votes can overtake their proposal: the next leader may hold a block's QC (and have moved to
    /// the next round) before the block arrives. A late block that our high QC certifies is kept,
    /// without a vote, so that this node can extend it and commit through it instead of timing out
    /// (found by the simulator's idle-pacing test). Returns true when the block was kept.
    fn keep_certified_late_block(&mut self, block: &Block) -> bool {
        let qc = self.tree.high_qc.clone();
        let linked = self
            .tree
            .get(&block.parent_hash())
            .is_some_and(|parent| parent.height + 1 == block.height);
        if qc.block_hash != block.hash()
            || self.tree.get(&qc.block_hash).is_some()
            || !linked
            || self.tree.insert(block.clone()).is_err()
        {
            return false;
        }
        self.process_qc(&qc, None);
        self.try_propose();
        true
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

    /// Idle pacing: whether this leader may propose an empty block in `round` (no pacing, or its
    /// propose timer for `round` fired).
    fn idle_wait_over(&self, round: super::Round) -> bool {
        self.cfg.min_idle_block_interval_ms == 0 || self.idle_wait_over_round == Some(round)
    }

    pub(super) fn on_propose_timer(&mut self, round: super::Round) {
        if round != self.pacemaker.round || self.propose_timer_round != Some(round) {
            return; // a wait of a round already left
        }
        self.idle_wait_over_round = Some(round);
        self.try_propose();
    }

    /// A batch arrived while this leader waits idle: propose now if it made the block urgent.
    pub(super) fn propose_if_idle_waiting(&mut self) {
        let round = self.pacemaker.round;
        if self.propose_timer_round == Some(round) && self.safety.proposed_round < round {
            self.try_propose();
        }
    }

    /// Propose in the current round if this node leads it and holds a justification and the parent.
    /// An idle leader (see `Config::min_idle_block_interval_ms`) arms the propose timer instead.
    pub(super) fn try_propose(&mut self) {
        let round = self.pacemaker.round;
        if self.applying_sync || self.safety.proposed_round >= round {
            return;
        }
        let high_qc = self.tree.high_qc.clone();
        let tc = if high_qc.round + 1 == round {
            None
        } else {
            if self.cfg.round_robin_leader(round) != self.cfg.me {
                return;
            }
            match &self.pacemaker.last_tc {
                Some(tc) if tc.round + 1 == round && high_qc.round >= tc.max_high_qc_round() => {
                    Some(tc.clone())
                }
                _ => return,
            }
        };
        let parent = self.tree.get(&high_qc.block_hash);
        if tc.is_none() {
            // Entered through a QC: the certified block names the leader. A node that lacks it
            // cannot tell, and needs the block to vote on the next proposal anyway: it syncs.
            let leader = leader::after_qc_if_held(&self.cfg, round, parent);
            if leader.is_some_and(|l| l != self.cfg.me) {
                return;
            }
        }
        let Some(parent) = parent else {
            // Certified by others but never received here: fetch it from a signer of its QC,
            // rotating with the round so a withholding signer cannot stall us.
            let signers: Vec<ValidatorIndex> = high_qc
                .signers
                .iter()
                .filter(|s| *s != self.cfg.me)
                .collect();
            if !signers.is_empty() {
                self.request_sync(signers[round as usize % signers.len()]);
            }
            return;
        };
        let chain = self.tree.uncommitted_chain(&high_qc.block_hash);
        let chain_has_payload = chain.iter().any(|b| !b.payload.is_empty());
        let exclude: BTreeSet<_> = chain
            .iter()
            .flat_map(|b| b.payload.iter().copied())
            .collect();
        let (height, timestamp_ms) = (parent.height + 1, self.now_ms.max(parent.timestamp_ms + 1));
        let payload = self.payload.select(
            &exclude,
            round,
            super::payload::FOREIGN_BATCH_DELAY_ROUNDS,
            self.cfg.block_digests_max,
        );
        let urgent = !payload.is_empty()
            || chain_has_payload
            || tc.is_some()
            || self.payload_commit_qc_round == Some(high_qc.round)
            || self.payload.foreign_pending() > 0;
        if !urgent && !self.idle_wait_over(round) {
            if self.propose_timer_round != Some(round) {
                self.propose_timer_round = Some(round);
                let duration_ms = self.cfg.min_idle_block_interval_ms;
                self.out
                    .push(Action::SetProposeTimer { round, duration_ms });
            }
            return;
        }
        let block = Block {
            author: self.cfg.me,
            round,
            height,
            timestamp_ms,
            justify: high_qc,
            payload,
        };
        let state = self.safety.record_proposal(round);
        self.out.push(Action::PersistSafety(state));
        self.broadcast(Message::Proposal(Proposal { block, tc }));
    }
}
