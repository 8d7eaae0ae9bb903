//! Simulated time and network: one event queue ordered by (simulated ms, insertion sequence), and a
//! link model that delays, drops, duplicates and reorders messages and enforces partitions.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::faults::{DROP_PER_MILLE, DUPLICATE_PER_MILLE, REORDER_DELAY_MS_MAX, REORDER_PER_MILLE};
use crate::consensus::Digest;

/// Most events pending in the queue at once (a runaway protocol fails loudly, not slowly).
pub const EVENTS_PENDING_MAX: usize = 1_000_000;

/// What travels between simulated nodes.
#[derive(Clone, Debug)]
pub enum NetMsg {
    /// A consensus message in its canonical encoding (decoded by the receiver, like off a socket).
    Consensus(Vec<u8>),
    /// Dissemination: "I hold this batch" pushed with its contents.
    BatchPush(Digest),
    BatchFetch(Digest),
    BatchReply(Digest),
}

#[derive(Clone, Debug)]
pub enum SimEvent {
    Deliver { from: usize, to: usize, msg: NetMsg },
    Timer { node: usize, token: u64 },
    ClientBatch,
    Crash { node: usize },
    Restart { node: usize },
    PartitionStart { side_b: Vec<bool> },
    PartitionEnd,
    Heal,
    Probe { index: u32 },
}

#[derive(Default)]
pub struct EventQueue {
    events: BTreeMap<(u64, u64), SimEvent>,
    sequence: u64,
}

impl EventQueue {
    pub fn push(&mut self, at_ms: u64, event: SimEvent) {
        assert!(
            self.events.len() < EVENTS_PENDING_MAX,
            "event queue bound exceeded"
        );
        self.sequence += 1;
        self.events.insert((at_ms, self.sequence), event);
    }
    pub fn pop(&mut self) -> Option<(u64, SimEvent)> {
        self.events.pop_first().map(|((at, _), event)| (at, event))
    }
}

/// The link model. Faulty behaviour is on only while `faulty` (the fault phase).
pub struct Links {
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub faulty: bool,
    /// Side of each node while a partition is active.
    pub partition: Option<Vec<bool>>,
    pub sent: u64,
    pub dropped: u64,
}

impl Links {
    pub fn can_talk(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_none_or(|side| side[a] == side[b])
    }

    /// Delivery delays for one message: empty when dropped, two entries when duplicated.
    pub fn delays(&mut self, rng: &mut ChaCha8Rng, from: usize, to: usize) -> Vec<u64> {
        self.sent += 1;
        if !self.can_talk(from, to) || (self.faulty && rng.gen_range(0..1000) < DROP_PER_MILLE) {
            self.dropped += 1;
            return Vec::new();
        }
        let copies = if self.faulty && rng.gen_range(0..1000) < DUPLICATE_PER_MILLE {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut delay = rng.gen_range(self.latency_ms_min..=self.latency_ms_max);
                if self.faulty && rng.gen_range(0..1000) < REORDER_PER_MILLE {
                    delay += rng.gen_range(0..=REORDER_DELAY_MS_MAX);
                }
                delay
            })
            .collect()
    }
}
