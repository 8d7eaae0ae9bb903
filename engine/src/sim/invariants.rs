//! Invariants checked continuously while a seed runs. Every check can fail (see the negative tests).
//!
//! - agreement: no two different blocks committed at one height on any two honest nodes;
//! - prefix: each honest node commits consecutive heights, so chains are prefixes of one another;
//! - determinism: equal state digests at equal heights;
//! - conservation: debits equal credits and the supply never changes;
//! - durability: a restarted node recovers at least every commit it acknowledged, unchanged;
//! - liveness: after the faults heal, new requests commit within `LIVENESS_ROUNDS_MAX` rounds.

use std::collections::BTreeMap;
use std::fmt;

use crate::consensus::{Hash, Round};

/// Rounds after submission (once faults healed) within which a request must commit everywhere.
pub const LIVENESS_ROUNDS_MAX: u64 = 40;
/// Violations recorded per seed before the checker stops collecting (the first one matters most).
pub const VIOLATIONS_KEPT_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    Fork {
        height: u64,
        node: usize,
        other_node: usize,
    },
    Gap {
        node: usize,
        expected: u64,
        got: u64,
    },
    StateDivergence {
        height: u64,
        node: usize,
        other_node: usize,
    },
    MoneyNotConserved {
        node: usize,
        height: u64,
        debits: u128,
        credits: u128,
        supply: u128,
    },
    LostCommit {
        node: usize,
        acked: u64,
        recovered: u64,
    },
    Liveness {
        batch: u64,
        submitted_round: Round,
        round_now: Round,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Fork { height, node, other_node } => {
                write!(f, "fork: nodes {node} and {other_node} committed different blocks at height {height}")
            }
            Violation::Gap { node, expected, got } => write!(f, "gap: node {node} committed {got}, expected {expected}"),
            Violation::StateDivergence { height, node, other_node } => {
                write!(f, "state divergence at height {height} between nodes {node} and {other_node}")
            }
            Violation::MoneyNotConserved { node, height, debits, credits, supply } => write!(
                f,
                "money not conserved on node {node} at height {height}: debits {debits} credits {credits} supply {supply}"
            ),
            Violation::LostCommit { node, acked, recovered } => {
                write!(f, "node {node} acknowledged height {acked} but recovered only {recovered}")
            }
            Violation::Liveness { batch, submitted_round, round_now } => write!(
                f,
                "liveness: batch {batch} submitted at round {submitted_round} not committed by round {round_now}"
            ),
        }
    }
}

/// First honest commit per height: (block hash, state digest, node).
#[derive(Default)]
pub struct Checker {
    chain: BTreeMap<u64, (Hash, [u8; 32], usize)>,
    acked: BTreeMap<usize, u64>,
    pub violations: Vec<Violation>,
    pub expected_supply: u128,
}

impl Checker {
    pub fn new(expected_supply: u128) -> Self {
        Checker {
            expected_supply,
            ..Default::default()
        }
    }

    pub fn report(&mut self, violation: Violation) {
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(violation);
        }
    }

    pub fn acked_height(&self, node: usize) -> u64 {
        self.acked.get(&node).copied().unwrap_or(0)
    }

    /// Record that honest `node` executed and acknowledged `height` (after its log sync).
    pub fn on_commit(&mut self, node: usize, height: u64, block_hash: Hash, state: [u8; 32]) {
        let expected = self.acked_height(node) + 1;
        if height != expected {
            self.report(Violation::Gap {
                node,
                expected,
                got: height,
            });
        }
        self.acked.insert(node, height);
        self.check_against_chain(node, height, block_hash, Some(state));
    }

    fn check_against_chain(
        &mut self,
        node: usize,
        height: u64,
        block_hash: Hash,
        state: Option<[u8; 32]>,
    ) {
        match self.chain.get(&height).copied() {
            None => {
                let state = state.expect("first commit at a height carries its state");
                self.chain.insert(height, (block_hash, state, node));
            }
            Some((hash, first_state, other_node)) => {
                if hash != block_hash {
                    self.report(Violation::Fork {
                        height,
                        node,
                        other_node,
                    });
                } else if state.is_some_and(|s| s != first_state) {
                    self.report(Violation::StateDivergence {
                        height,
                        node,
                        other_node,
                    });
                }
            }
        }
    }

    pub fn check_money(&mut self, node: usize, height: u64, totals: (u128, u128), supply: u128) {
        if totals.0 != totals.1 || supply != self.expected_supply {
            let (debits, credits) = totals;
            self.report(Violation::MoneyNotConserved {
                node,
                height,
                debits,
                credits,
                supply,
            });
        }
    }

    /// A restarted honest node recovered `blocks` (height, hash, state after re-execution) from its
    /// own disk: it must hold every acknowledged commit, unchanged.
    pub fn on_recover(&mut self, node: usize, recovered: &[(u64, Hash, [u8; 32])]) {
        let acked = self.acked_height(node);
        let top = recovered.last().map_or(0, |(h, _, _)| *h);
        if top < acked {
            self.report(Violation::LostCommit {
                node,
                acked,
                recovered: top,
            });
        }
        for (height, hash, state) in recovered {
            self.check_against_chain(node, *height, *hash, Some(*state));
        }
        self.acked.insert(node, top); // later commits continue from here
    }

    pub fn heights_committed(&self) -> u64 {
        self.chain.last_key_value().map_or(0, |(h, _)| *h)
    }
}
