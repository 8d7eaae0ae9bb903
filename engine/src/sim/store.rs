//! The storage boundary the simulated nodes use, and an in-memory store with crash semantics.
//!
//! `NodeStore` is deliberately narrow so the integrator can put storage's `MemBlockStore` (and the
//! real block log) behind it: a safety record and voted blocks that are durable when the call returns,
//! a block log with buffered appends made durable by `sync` (group commit), and recovery after a crash.
//!
//! `MemStore` models a disk: appends sit in a volatile buffer until `sync`; a crash loses the buffer;
//! a torn crash leaves a random prefix of the in-flight write on "disk", which recovery must detect by
//! checksum and truncate. The safety record alternates between two slots so a torn write leaves the
//! previous record intact.

use std::collections::BTreeMap;

use crate::consensus::wire::{Reader, Writer};
use crate::consensus::{Block, CommittedBlock, Hash, Round, SafetyState};
use crate::storage::{BlockStore, MemBlockStore, RecoveryReport, StorageError};
use rand::SeedableRng;

/// What a restarted node finds on its disk.
#[derive(Clone, Debug, Default)]
pub struct RecoveredStore {
    pub safety: Option<SafetyState>,
    /// The committed log, heights 1.. consecutive.
    pub blocks: Vec<CommittedBlock>,
    /// Uncommitted blocks persisted before voting.
    pub voted_blocks: Vec<Block>,
}

/// The write a crash interrupts, and the fraction (0..1) of its bytes that reached the disk.
pub enum TornWrite<'a> {
    /// The buffered log appends being synced.
    Log {
        keep: f64,
    },
    Safety {
        state: &'a SafetyState,
        keep: f64,
    },
    Block {
        block: &'a Block,
        keep: f64,
    },
}

pub trait NodeStore {
    /// Durably replace the safety record (durable on return).
    fn put_safety(&mut self, state: &SafetyState);
    /// Durably store an uncommitted block (durable on return).
    fn put_block(&mut self, block: &Block);
    /// Forget stored uncommitted blocks at or below `round` (they are committed or abandoned).
    fn prune_blocks(&mut self, round: Round);
    /// Buffer one committed block for appending to the log.
    fn append_block(&mut self, block: &CommittedBlock);
    /// Make every buffered append durable (group commit).
    fn sync(&mut self);
    /// Power loss, optionally in the middle of `torn`: unsynced appends are lost, the torn write
    /// leaves a prefix of its bytes.
    fn crash(&mut self, torn: Option<TornWrite>);
    /// Read back everything that survived, truncating a torn tail so later appends stay readable.
    fn recover(&mut self) -> RecoveredStore;
}

/// Largest record the mem store accepts (a committed block with a full payload fits easily).
pub const RECORD_BYTES_MAX: usize = 64 * 1024;
/// Most uncommitted blocks the store keeps (oldest rounds are pruned first when full).
pub const VOTED_BLOCKS_MAX: usize = 1024;
/// Most garbage bytes a torn log write leaves at the cut.
pub const TORN_GARBAGE_BYTES_MAX: usize = 64;

#[derive(Default)]
pub struct MemStore {
    /// The committed-block log: the storage module's in-memory block log (same frames, hash
    /// chain, scan and torn-tail recovery as the on-disk `BlockLog`).
    log: MemBlockStore,
    safety_slots: [Vec<u8>; 2],
    safety_seq: u64,
    voted_blocks: BTreeMap<Hash, (Round, Vec<u8>)>,
    pub torn_tails_truncated: u64,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= RECORD_BYTES_MAX);
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&blake3::hash(payload).as_bytes()[..8]);
    out.extend_from_slice(payload);
    out
}

/// Parse framed records until the first incomplete or corrupt one. Returns records and bytes used.
fn unframe(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 12) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > RECORD_BYTES_MAX {
            break;
        }
        let Some(payload) = bytes.get(at + 12..at + 12 + len) else {
            break;
        };
        if blake3::hash(payload).as_bytes()[..8] != header[4..12] {
            break;
        }
        records.push(payload);
        at += 12 + len;
    }
    (records, at)
}

fn torn_prefix(bytes: &[u8], keep: f64) -> &[u8] {
    let keep = ((bytes.len() as f64) * keep.clamp(0.0, 1.0)) as usize;
    &bytes[..keep.min(bytes.len().saturating_sub(1))]
}

fn encode_block(block: &Block) -> Vec<u8> {
    let mut w = Writer::default();
    block.encode(&mut w);
    w.bytes
}

fn decode_block(bytes: &[u8]) -> Option<Block> {
    let mut r = Reader::new(bytes);
    let block = Block::decode(&mut r).ok()?;
    r.finish().ok()?;
    Some(block)
}

impl MemStore {
    fn safety_record(&self, state: &SafetyState) -> Vec<u8> {
        let mut payload = (self.safety_seq + 1).to_le_bytes().to_vec();
        payload.extend_from_slice(&state.encode());
        frame(&payload)
    }

    /// Runs the block log's recovery (as `BlockLog::open` does) and counts truncated torn tails.
    fn recover_log(&mut self, report: Result<RecoveryReport, StorageError>) {
        // The sim never corrupts a synced frame, so recovery can only truncate a torn tail; any
        // other outcome is a storage bug that must stop the run.
        let report = report.expect("the in-memory block log recovers after a crash");
        if report.dropped.is_some() {
            self.torn_tails_truncated += 1;
        }
    }

    /// The committed block at `height` from the log (buffered appends included), if it holds it.
    pub fn committed_block(&self, height: u64) -> Option<CommittedBlock> {
        let bytes = self.log.read(height).ok()?;
        CommittedBlock::decode(&bytes).ok()
    }

    fn committed_blocks(&self) -> Vec<CommittedBlock> {
        let (Some(first), Some((last, _))) = (self.log.first_height(), self.log.last()) else {
            return Vec::new();
        };
        (first..=last)
            .map_while(|h| {
                self.log
                    .read(h)
                    .ok()
                    .and_then(|p| CommittedBlock::decode(&p).ok())
            })
            .collect()
    }

    fn recover_safety(&self) -> Option<SafetyState> {
        let mut best: Option<(u64, SafetyState)> = None;
        for slot in &self.safety_slots {
            let (records, _) = unframe(slot);
            let Some(payload) = records.first() else {
                continue;
            };
            let Some(seq) = payload
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            else {
                continue;
            };
            if let Ok(state) = SafetyState::decode(&payload[8..]) {
                if best.is_none_or(|(s, _)| seq > s) {
                    best = Some((seq, state));
                }
            }
        }
        best.map(|(_, state)| state)
    }
}

impl NodeStore for MemStore {
    fn put_safety(&mut self, state: &SafetyState) {
        let record = self.safety_record(state);
        self.safety_seq += 1;
        self.safety_slots[(self.safety_seq % 2) as usize] = record;
    }

    fn put_block(&mut self, block: &Block) {
        self.voted_blocks
            .insert(block.hash(), (block.round, frame(&encode_block(block))));
        while self.voted_blocks.len() > VOTED_BLOCKS_MAX {
            let oldest = self
                .voted_blocks
                .iter()
                .min_by_key(|(_, (round, _))| *round)
                .map(|(h, _)| *h);
            self.voted_blocks.remove(&oldest.expect("nonempty"));
        }
    }

    fn prune_blocks(&mut self, round: Round) {
        self.voted_blocks.retain(|_, (r, _)| *r > round);
    }

    fn append_block(&mut self, block: &CommittedBlock) {
        let (last_height, parent) = self.log.last().map_or((0, [0; 32]), |(h, hash)| (h, hash));
        if block.height <= last_height {
            return; // already in the log (re-delivered after a restart)
        }
        self.log
            .append(block.height, &parent, &block.encode())
            .expect("committed blocks are appended at consecutive heights");
    }

    fn sync(&mut self) {
        self.log.sync().expect("the in-memory block log syncs");
    }

    fn crash(&mut self, torn: Option<TornWrite>) {
        match torn {
            None => {}
            Some(TornWrite::Log { keep }) => {
                // The torn write keeps a seeded-random prefix of the unsynced frames (with up to
                // TORN_GARBAGE_BYTES_MAX bytes of garbage at the cut), derived from `keep`, so the
                // run stays a pure function of the sim seed.
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(keep.to_bits());
                let report = self.log.crash_torn(&mut rng, TORN_GARBAGE_BYTES_MAX);
                self.recover_log(report);
            }
            Some(TornWrite::Safety { state, keep }) => {
                let record = self.safety_record(state);
                let slot = ((self.safety_seq + 1) % 2) as usize;
                self.safety_slots[slot] = torn_prefix(&record, keep).to_vec();
            }
            Some(TornWrite::Block { block, keep }) => {
                let torn = torn_prefix(&frame(&encode_block(block)), keep).to_vec();
                self.voted_blocks.insert(block.hash(), (block.round, torn));
            }
        }
        if self.log.unsynced_bytes() > 0 {
            let report = self.log.crash();
            self.recover_log(report);
        }
    }

    fn recover(&mut self) -> RecoveredStore {
        let report = self.log.recover();
        self.recover_log(report);
        let blocks = self.committed_blocks();
        let voted_blocks = (self.voted_blocks.values())
            .filter_map(|(_, record)| {
                unframe(record)
                    .0
                    .first()
                    .and_then(|payload| decode_block(payload))
            })
            .collect();
        RecoveredStore {
            safety: self.recover_safety(),
            blocks,
            voted_blocks,
        }
    }
}
