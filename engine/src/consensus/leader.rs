//! Leader election: who proposes in a round, decided from what every honest replica of that round
//! holds, so that they all expect the same author.
//!
//! - **Round-robin** (`LeaderElection::RoundRobin`): round r is led by validator r mod n.
//! - **Reputation** (`LeaderElection::Reputation`, the default; the idea of Carousel, Cohen et al.
//!   2021): a round entered through a QC is led by a validator that was recently active. Round r's
//!   leader after a QC on block B (round r-1) is picked, by r, among the signers of B's own QC
//!   (`B.justify`, the validators whose votes certified B's parent), leaving out B's author. A
//!   validator that is down signs no QC, so after one or two rounds it is never chosen again, and
//!   the others keep committing at full rate instead of timing out every n-th round. Leaving out B's
//!   author rotates the role among the active validators.
//! - A round entered through a TC (the happy path broke) falls back to round-robin, and so does a
//!   block whose QC has no signers (the genesis QC).
//! - The round after a block that extended a TC (its QC is not of the round before it) is led by
//!   that block's author again. Such a block carries the newest QC there was, which may predate
//!   the failure and name a validator that is now down: picking among its signers could pick that
//!   validator round after round, each timeout doubling the round timer (a 4-node cluster sat 30 s
//!   at one round in the kill -9 test), and round-robin would name the same validator for the
//!   round's QC path and then again for its TC path. The author has just proposed, so it is up.
//!
//! Invariant: the leader of a round is a function of (round, certified parent block) only. Voters of
//! B know B when they send their vote to the leader of B.round + 1; a replica checking a proposal
//! holds its parent (the block its QC certifies) before it votes. A proposal carries no TC exactly
//! when it extends a QC of the round before, so the rule it is checked against is fixed by the
//! proposal itself. Safety does not depend on this choice (a replica votes at most once per round);
//! only liveness does.

use super::messages::Block;
use super::{Config, Round, ValidatorIndex};

/// How the leader of a round entered through a QC is chosen. Every validator of one consortium must
/// use the same rule (a mismatch costs liveness, not safety: rounds then advance only by timeouts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeaderElection {
    /// Validator `round mod n`, always.
    RoundRobin,
    /// Recently active validators lead after a QC; round-robin after a TC.
    #[default]
    Reputation,
}

/// The round-robin leader of `round` over `validator_count` validators.
pub fn round_robin(validator_count: usize, round: Round) -> ValidatorIndex {
    (round % validator_count as u64) as ValidatorIndex
}

/// The leader of `round` when it is entered through a QC on `certified` (so `certified.round` is
/// `round - 1` on the happy path): whom votes for `certified` go to, and who may propose on its QC.
pub fn after_qc(cfg: &Config, round: Round, certified: &Block) -> ValidatorIndex {
    let fallback = round_robin(cfg.validator_count, round);
    if cfg.leader_election == LeaderElection::RoundRobin {
        return fallback;
    }
    let n = cfg.validator_count;
    let extended_tc = certified.justify.round.saturating_add(1) != certified.round;
    if extended_tc && certified.justify.signers.count() > 0 {
        // `certified` extended a TC: its QC is older than the break and may name a validator
        // that has since gone down. Its author has just shown it is up: it leads again.
        return if (certified.author as usize) < n {
            certified.author
        } else {
            fallback
        };
    }
    let candidates = || {
        certified
            .justify
            .signers
            .iter()
            .filter(move |v| (*v as usize) < n && *v != certified.author)
    };
    let count = candidates().count();
    if count == 0 {
        return fallback;
    }
    candidates()
        .nth((round % count as u64) as usize)
        .expect("index below the candidate count")
}

/// Like `after_qc` when this node may not hold the certified block: None when it does not and the
/// rule needs the block (reputation); round-robin needs none.
pub fn after_qc_if_held(
    cfg: &Config,
    round: Round,
    certified: Option<&Block>,
) -> Option<ValidatorIndex> {
    match certified {
        Some(block) => Some(after_qc(cfg, round, block)),
        None if cfg.leader_election == LeaderElection::RoundRobin => {
            Some(round_robin(cfg.validator_count, round))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::block_tree::genesis_block;
    use crate::consensus::SignerBitmap;
    use proptest::prelude::*;

    fn block(author: ValidatorIndex, signers: &[ValidatorIndex]) -> Block {
        let mut b = genesis_block();
        b.author = author;
        b.round = 9;
        b.justify.round = 8; // a QC of the round before: the reputation rule applies
        for s in signers {
            b.justify.signers.insert(*s);
        }
        b
    }

    fn cfg(n: usize, election: LeaderElection) -> Config {
        let mut c = Config::new(7, n, 0);
        c.leader_election = election;
        c
    }

    #[test]
    fn a_qc_without_signers_falls_back_to_round_robin() {
        let c = cfg(4, LeaderElection::Reputation);
        let g = genesis_block();
        assert_eq!(after_qc(&c, 1, &g), 1);
        assert_eq!(after_qc(&c, 6, &g), 2);
    }

    #[test]
    fn the_leader_is_a_signer_of_the_parents_qc_other_than_its_author() {
        let c = cfg(4, LeaderElection::Reputation);
        // Validator 3 signed nothing (it is down); validator 2 wrote the block.
        let b = block(2, &[0, 1, 2]);
        assert_eq!(after_qc(&c, 10, &b), 0);
        assert_eq!(after_qc(&c, 11, &b), 1);
        // Round-robin would pick the silent validator 3 for round 11.
        assert_eq!(after_qc(&cfg(4, LeaderElection::RoundRobin), 11, &b), 3);
    }

    #[test]
    fn after_a_block_that_extended_a_tc_its_author_leads_again() {
        let c = cfg(4, LeaderElection::Reputation);
        // Round 9's block extends the QC of round 5 (a TC broke the chain); validator 3 signed
        // that QC and may be down since. Every round after it goes back to its author.
        let mut b = block(2, &[0, 1, 3]);
        b.justify.round = 5;
        assert!((10..20).all(|round| after_qc(&c, round, &b) == 2));
        assert_eq!(after_qc(&cfg(4, LeaderElection::RoundRobin), 11, &b), 3);
    }

    #[test]
    fn only_the_author_signed_falls_back_to_round_robin() {
        let c = cfg(1, LeaderElection::Reputation);
        assert_eq!(after_qc(&c, 5, &block(0, &[0])), 0);
    }

    proptest! {
        #[test]
        fn the_leader_is_always_an_active_member(
            n in 1usize..=16,
            author in 0u16..16,
            signer_bits in any::<u32>(),
            round in 1u64..1_000_000,
        ) {
            let c = cfg(n, LeaderElection::Reputation);
            let signers: Vec<ValidatorIndex> =
                (0..20u16).filter(|i| signer_bits & (1 << i) != 0).collect();
            let b = block(author % n as u16, &signers);
            let leader = after_qc(&c, round, &b);
            prop_assert!((leader as usize) < n);
            let active: SignerBitmap = b.justify.signers;
            let has_candidates = active
                .iter()
                .any(|v| (v as usize) < n && v != b.author);
            if has_candidates {
                prop_assert!(active.contains(leader) && leader != b.author);
            } else {
                prop_assert_eq!(leader, round_robin(n, round));
            }
            // Rotation: over as many consecutive rounds as there are candidates, each leads once.
            let candidates: Vec<ValidatorIndex> =
                active.iter().filter(|v| (*v as usize) < n && *v != b.author).collect();
            if !candidates.is_empty() {
                let mut led: Vec<ValidatorIndex> = (round..round + candidates.len() as u64)
                    .map(|r| after_qc(&c, r, &b))
                    .collect();
                led.sort_unstable();
                prop_assert_eq!(led, candidates);
            }
        }
    }
}
