//! Vote collection at the next leader. Votes are checked optimistically: at quorum, the quorum's
//! signatures are checked as a QC; only if that fails is each vote checked alone (cached) and the
//! invalid ones discarded.
//!
//! Bound: rounds within `ROUNDS_AHEAD_MAX` of the current round, one vote per voter per round.

use std::collections::BTreeMap;

use super::crypto_iface::{vote_message, QuorumCrypto, SignerBitmap};
use super::messages::{QuorumCert, Vote};
use super::{ChainId, Hash, RejectReason, Round, ValidatorIndex};

#[derive(Default)]
struct RoundVotes {
    by_voter: BTreeMap<ValidatorIndex, Vote>,
    certified: bool,
}

#[derive(Default)]
pub struct VoteCollector {
    rounds: BTreeMap<Round, RoundVotes>,
}

/// Result of adding one vote.
pub struct VoteOutcome {
    pub qc: Option<QuorumCert>,
    pub rejects: Vec<(ValidatorIndex, RejectReason)>,
}

impl VoteCollector {
    /// Add a vote (sender already authenticated as `vote.voter`); forms a QC at `quorum` valid votes.
    pub fn add<C: QuorumCrypto>(
        &mut self,
        vote: Vote,
        quorum: usize,
        crypto: &C,
        chain_id: ChainId,
    ) -> VoteOutcome {
        let mut outcome = VoteOutcome {
            qc: None,
            rejects: Vec::new(),
        };
        let round_votes = self.rounds.entry(vote.round).or_default();
        if let Some(previous) = round_votes.by_voter.get(&vote.voter) {
            if previous.block_hash != vote.block_hash || previous.height != vote.height {
                let reason = RejectReason::DoubleVote {
                    voter: vote.voter,
                    round: vote.round,
                };
                outcome.rejects.push((vote.voter, reason));
            }
            return outcome; // duplicates are harmless
        }
        let (hash, round, height) = (vote.block_hash, vote.round, vote.height);
        round_votes.by_voter.insert(vote.voter, vote);
        if round_votes.certified {
            return outcome;
        }
        let msg = vote_message(chain_id, &hash, round, height);
        let matching = |rv: &RoundVotes| -> Vec<Vote> {
            rv.by_voter
                .values()
                .filter(|v| v.block_hash == hash && v.height == height)
                .cloned()
                .collect()
        };
        let votes = matching(round_votes);
        if votes.len() < quorum {
            return outcome;
        }
        if let Some(qc) = certify(&votes, &msg, crypto, hash, round, height) {
            round_votes.certified = true;
            outcome.qc = Some(qc);
            return outcome;
        }
        // Someone sent a bad signature: find and drop exactly the bad votes.
        for v in &votes {
            if !crypto.verify_one(v.voter, &msg, &v.signature) {
                round_votes.by_voter.remove(&v.voter);
                outcome
                    .rejects
                    .push((v.voter, RejectReason::VoteInvalidSignature));
            }
        }
        let votes = matching(round_votes);
        if votes.len() >= quorum {
            if let Some(qc) = certify(&votes, &msg, crypto, hash, round, height) {
                round_votes.certified = true;
                outcome.qc = Some(qc);
            }
        }
        outcome
    }

    /// Forget rounds below `round`.
    pub fn prune_below(&mut self, round: Round) {
        self.rounds = self.rounds.split_off(&round);
    }
}

fn certify<C: QuorumCrypto>(
    votes: &[Vote],
    msg: &[u8],
    crypto: &C,
    block_hash: Hash,
    round: Round,
    height: u64,
) -> Option<QuorumCert> {
    let mut signers = SignerBitmap::default();
    votes.iter().for_each(|v| signers.insert(v.voter));
    assert_eq!(signers.count(), votes.len(), "one vote per voter");
    // `votes` come from a map ordered by voter: the signatures are in signer order.
    let signatures: Vec<_> = votes.iter().map(|v| v.signature).collect();
    if !crypto.verify_same_msg(&signers, msg, &signatures) {
        return None;
    }
    Some(QuorumCert {
        block_hash,
        round,
        height,
        signers,
        signatures,
    })
}
