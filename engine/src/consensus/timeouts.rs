//! Round timers, timeout messages and timeout certificates (the pacemaker's side of the core).

use super::core::Core;
use super::crypto_iface::{timeout_message, QuorumCrypto};
use super::messages::{Message, Timeout, TimeoutCert, TimeoutMsg};
use super::{leader, Action, RejectReason, Round, ValidatorIndex, ROUNDS_AHEAD_MAX};

impl<C: QuorumCrypto> Core<C> {
    pub(super) fn on_timer(&mut self, round: Round) {
        if round != self.pacemaker.round {
            return; // a timer of a round already left
        }
        self.pacemaker.note_local_timeout();
        self.local_timeout();
        let duration_ms = self.pacemaker.timer_ms();
        self.out.push(Action::SetTimer { round, duration_ms });
        if let Some((from, _)) = &self.proposal_parked {
            let peer = *from;
            self.request_sync(peer); // retried on every timer while a parent is missing
        }
    }

    pub(super) fn on_peer_reachable(&mut self, validator: ValidatorIndex, reachable: bool) {
        if validator as usize >= self.cfg.validator_count || validator == self.cfg.me {
            return; // the shell reports only its peers; anything else is ignored
        }
        if reachable {
            self.unreachable.remove(validator);
        } else {
            self.unreachable.insert(validator);
        }
    }

    /// The validator this replica waits on in the current round, when it knows: the round's
    /// leader until it votes, then the next leader its vote went to (whose QC and proposal end
    /// the round). None once it has sent a timeout for the round, or when the round's leader
    /// depends on a block it does not hold.
    pub(super) fn awaited_validator(&self) -> Option<ValidatorIndex> {
        let round = self.pacemaker.round;
        if self.safety.timeout_round >= round {
            return None;
        }
        if self.safety.voted_round >= round {
            return self
                .vote_sent_to
                .filter(|(voted, _)| *voted == round)
                .map(|(_, next)| next);
        }
        let high_qc = &self.tree.high_qc;
        if high_qc.round + 1 == round {
            let certified = self.tree.get(&high_qc.block_hash);
            return leader::after_qc_if_held(&self.cfg, round, certified);
        }
        let via_tc = self
            .pacemaker
            .last_tc
            .as_ref()
            .is_some_and(|tc| tc.round + 1 == round);
        via_tc.then(|| self.cfg.round_robin_leader(round))
    }

    /// Called after every event: arms the round timer short while the validator the round waits
    /// on is reported unreachable, and back to the full timer if the report is withdrawn before
    /// it fires. At most one short timer a round: after it fires the round is timed out as usual
    /// (and the timer doubles as usual), so a node that stays down cannot make rounds spin.
    pub(super) fn arm_timer_for_unreachable_wait(&mut self) {
        let short_ms = self.cfg.unreachable_leader_timeout_ms;
        if short_ms == 0 {
            return;
        }
        let round = self.pacemaker.round;
        let waits_on_unreachable = self
            .awaited_validator()
            .is_some_and(|v| v != self.cfg.me && self.unreachable.contains(v));
        let armed_short = self.short_timer_round == Some(round);
        if waits_on_unreachable && !armed_short {
            self.short_timer_round = Some(round);
            let duration_ms = short_ms.min(self.pacemaker.timer_ms());
            self.out.push(Action::SetTimer { round, duration_ms });
        } else if !waits_on_unreachable && armed_short && self.safety.timeout_round < round {
            self.short_timer_round = None;
            let duration_ms = self.pacemaker.timer_ms();
            self.out.push(Action::SetTimer { round, duration_ms });
        }
    }

    /// Sign and broadcast a timeout for the current round (persisting the safety state first).
    pub(super) fn local_timeout(&mut self) {
        let round = self.pacemaker.round;
        let state = self.safety.record_timeout(round);
        self.out.push(Action::PersistSafety(state));
        let high_qc = self.tree.high_qc.clone();
        let msg = timeout_message(self.cfg.chain_id, round, high_qc.round, self.cfg.me);
        let timeout = Timeout {
            round,
            author: self.cfg.me,
            high_qc,
            signature: self.crypto.sign(&msg),
        };
        let last_tc = self.pacemaker.last_tc.clone();
        self.broadcast(Message::Timeout(TimeoutMsg { timeout, last_tc }));
    }

    pub(super) fn on_timeout_msg(&mut self, from: ValidatorIndex, msg: TimeoutMsg) {
        let TimeoutMsg { timeout, last_tc } = msg;
        if timeout.author != from {
            return self.reject(Some(from), RejectReason::SenderMismatch);
        }
        if timeout.high_qc.round >= timeout.round {
            return self.reject(
                Some(from),
                RejectReason::BlockMalformed("timeout high QC not below its round"),
            );
        }
        if let Err(reason) = self.verify_qc(&timeout.high_qc) {
            return self.reject(Some(from), reason);
        }
        self.process_qc(&timeout.high_qc, Some(from));
        if let Some(tc) = &last_tc {
            if let Err(reason) = self.verify_tc(tc) {
                return self.reject(Some(from), reason);
            }
            self.process_tc(tc);
        }
        let current = self.pacemaker.round;
        if timeout.round < current {
            return; // stale: its QC/TC were still useful above
        }
        if timeout.round > current + ROUNDS_AHEAD_MAX {
            return self.reject(
                Some(from),
                RejectReason::FutureRound {
                    round: timeout.round,
                    current,
                },
            );
        }
        let signed = timeout_message(
            self.cfg.chain_id,
            timeout.round,
            timeout.high_qc.round,
            timeout.author,
        );
        if from != self.cfg.me
            && !self
                .crypto
                .verify_one(timeout.author, &signed, &timeout.signature)
        {
            return self.reject(Some(from), RejectReason::TimeoutInvalidSignature);
        }
        let round = timeout.round;
        if let Some(tc) = self.pacemaker.add_timeout(timeout, self.cfg.quorum()) {
            assert!(self.verify_tc(&tc).is_ok(), "self-formed TC must verify");
            return self.process_tc(&tc);
        }
        // Join a round change that f+1 validators (so at least one honest) already asked for, even
        // for a round ahead of ours: otherwise nodes split across two rounds could wait forever.
        let joiners = self.cfg.faults_max() + 1;
        if self.pacemaker.timeout_count(round) >= joiners && self.safety.timeout_round < round {
            self.advance_round(round, false);
            self.local_timeout();
        }
    }

    /// Check a TC: quorum of members, one high-QC round per signer below the TC round, and every
    /// signer's signature over its own message.
    pub(super) fn verify_tc(&self, tc: &TimeoutCert) -> Result<(), RejectReason> {
        let signers = tc.signers.count();
        if signers < self.cfg.quorum() || !tc.signers.within(self.cfg.validator_count) {
            return Err(RejectReason::TcInvalid("too few signers or non-members"));
        }
        if tc.high_qc_rounds.len() != signers || tc.high_qc_rounds.iter().any(|r| *r >= tc.round) {
            return Err(RejectReason::TcInvalid("high QC rounds malformed"));
        }
        let signed: Vec<(ValidatorIndex, Vec<u8>)> = tc
            .signers
            .iter()
            .zip(&tc.high_qc_rounds)
            .map(|(i, hqc)| (i, timeout_message(self.cfg.chain_id, tc.round, *hqc, i)))
            .collect();
        if !self.crypto.verify_distinct(&signed, &tc.signatures) {
            return Err(RejectReason::TcInvalid("a signature is invalid"));
        }
        Ok(())
    }
}
