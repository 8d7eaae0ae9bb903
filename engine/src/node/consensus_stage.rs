//! The consensus stage: one thread owning `consensus::Core`. It executes the core's actions
//! strictly in order: safety state and blocks are written durably before any later `Send` of a
//! vote, timeout or sync message (a proposal does not wait: `Message::needs_durable_state`),
//! and before any `Send` at all while a vote or timeout this node signed is not yet durable. The
//! second rule covers the vote a next leader sends itself: it never leaves as a message, but the
//! QC that counts it leaves in the next proposal. Such a vote is synced at the end of the step
//! that cast it, while the other voters' votes are still on their way, so the proposal rarely
//! waits for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::consensus::validator_crypto::ValidatorCrypto;
use crate::consensus::wire::{Reader, Writer};
use crate::consensus::{
    Action, Block, CommittedBlock, Core, Digest, Event, Message, Recipient, Round, SafetyState,
    ValidatorIndex,
};
use crate::storage::Journal;

use super::batches::BatchStore;
use super::dissemination::{DisseminationIn, BATCH_FETCH_GRACE};
use super::execute::LogRead;
use super::peers::{
    wall_ms, Peers, Unreachable, PEER_HEARTBEAT_MS, PEER_KIND_CONSENSUS, PEER_KIND_HEARTBEAT,
};
use super::state::Shared;

/// Capacity of the queue into consensus (peer messages and batch events).
// The largest consensus message (a full sync response with 256-signer QCs) fits one peer frame.
const _: () = assert!(
    crate::consensus::messages::MESSAGE_BYTES_MAX
        <= crate::net::frame::FRAME_PAYLOAD_BYTES_MAX as usize
);
pub const CONSENSUS_QUEUE_MAX: usize = 4096;
/// Capacity of the queue from consensus to execute, in commit actions (each ≤ a few blocks).
pub const EXECUTE_QUEUE_COMMITS_MAX: usize = 1024;
/// Most vote times kept for blocks not committed yet (only the latency metric reads them).
const VOTED_AT_ROUNDS_MAX: usize = 1024;
/// The consensus journal (safety state, voted blocks), in `<data_dir>/consensus/`.
pub const JOURNAL_FILE: &str = "journal.bin";
/// The journal is compacted (rewritten with the live records only) past this many bytes.
const JOURNAL_COMPACT_BYTES: u64 = 8 << 20;

/// Journal record kinds (first payload byte).
const RECORD_SAFETY: u8 = 1;
const RECORD_BLOCK: u8 = 2;
/// Blocks at or below this round are committed (in the block log): drop them.
const RECORD_PRUNE: u8 = 3;

// Peer messages dominate the queue; boxing them would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum ConsensusIn {
    Peer { from: ValidatorIndex, msg: Message },
    LocalBatchReady(Digest),
    BatchAvailable(Digest),
}

/// Tells consensus that a batch is held (`local`: this node's own, cut by dissemination), never
/// blocking: a full queue defers the news to the batch store, which the consensus stage drains
/// every turn (`BatchStore::defer_news` says why). False when consensus is gone.
pub fn tell_consensus(
    consensus: &Sender<ConsensusIn>,
    store: &BatchStore,
    digest: Digest,
    local: bool,
) -> bool {
    let news = if local {
        ConsensusIn::LocalBatchReady(digest)
    } else {
        ConsensusIn::BatchAvailable(digest)
    };
    match consensus.try_send(news) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            store.defer_news(digest, local);
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

pub struct ConsensusStage {
    pub core: Core<ValidatorCrypto>,
    pub journal: ConsensusJournal,
    pub input: Receiver<ConsensusIn>,
    pub peers: Arc<Peers>,
    pub execute: Sender<Vec<Commit>>,
    pub dissemination: Sender<DisseminationIn>,
    /// Sync requests from below the committed window, for execute to serve from the block log.
    pub log_reads: Sender<LogRead>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
    /// When this node voted for each uncommitted block it voted for, by round (one vote per
    /// round); taken at commit, older rounds pruned then, and at most `VOTED_AT_ROUNDS_MAX` kept
    /// while nothing commits.
    pub voted_at: BTreeMap<Round, Instant>,
    /// When this node last sent a sync request (for the sync round-trip figure).
    pub sync_sent_at: Option<Instant>,
    /// Holds the batch news other stages deferred when this stage's queue was full.
    pub store: Arc<BatchStore>,
    /// What the core was last told of each peer's reachability.
    pub watch: PeerWatch,
}

/// How often the stage looks at its links for peers that went down or came back.
const PEER_WATCH_MS: u64 = 10;

/// The failure detector's view the core holds (`Event::PeerReachable`), by validator index.
#[derive(Default)]
pub struct PeerWatch {
    unreachable: Vec<bool>,
    /// What the peer metrics last showed, by validator: connected, messages dropped, flagged.
    exported: Vec<Option<(bool, u64, bool)>>,
    checked_at: Option<Instant>,
    /// When the next heartbeat is due (None: before the first).
    heartbeat_at: Option<Instant>,
}

/// A committed block on its way to execute, with when this node voted for it (None: it did not,
/// e.g. a block it learned by sync). The reply splits a request's ordering latency there.
pub struct Commit {
    pub block: CommittedBlock,
    pub voted_at: Option<Instant>,
}

pub fn encode_block(block: &Block) -> Vec<u8> {
    let mut w = Writer::default();
    block.encode(&mut w);
    w.bytes
}

/// The consensus stage's durable state: one journal of safety states, voted blocks and prune
/// marks, and in memory the live (latest) safety record and the blocks not yet pruned, which is
/// exactly what a compaction writes back.
#[derive(Debug)]
pub struct ConsensusJournal {
    journal: Journal,
    safety: Option<Vec<u8>>,
    /// Encoded blocks by (round, height), each record with its kind byte.
    blocks: BTreeMap<(Round, u64), Vec<u8>>,
    /// `voted_round` and `timeout_round` of the latest safety state queued, and of the latest
    /// one durable: while they differ, a vote or timeout this node signed is not durable yet.
    signed_queued: (Round, Round),
    signed_durable: (Round, Round),
}

/// What a journal holds once replayed: the latest safety state and the unpruned blocks.
#[derive(Debug)]
pub struct Persisted {
    pub safety: Option<SafetyState>,
    pub blocks: Vec<Block>,
}

impl ConsensusJournal {
    /// Opens (or creates) the journal in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<(ConsensusJournal, Persisted), String> {
        let opened = Journal::open(dir, JOURNAL_FILE).map_err(|e| e.to_string())?;
        if opened.torn_bytes > 0 {
            tracing::warn!(
                bytes = opened.torn_bytes,
                "consensus journal: a torn last write was cut off"
            );
        }
        let path = dir.join(JOURNAL_FILE);
        let mut this = ConsensusJournal {
            journal: opened.journal,
            safety: None,
            blocks: BTreeMap::new(),
            signed_queued: (0, 0),
            signed_durable: (0, 0),
        };
        for (i, record) in opened.records.into_iter().enumerate() {
            let bad = |what: &str| format!("{}: record {i}: {what}", path.display());
            match record.first().copied() {
                Some(RECORD_SAFETY) => {
                    let state = SafetyState::decode(&record[1..])
                        .map_err(|e| bad(&format!("safety state: {e:?}")))?;
                    this.signed_durable = (state.voted_round, state.timeout_round);
                    this.signed_queued = this.signed_durable;
                    this.safety = Some(record);
                }
                Some(RECORD_BLOCK) => {
                    let block =
                        decode_block(&record[1..]).map_err(|e| bad(&format!("block: {e:?}")))?;
                    this.blocks.insert((block.round, block.height), record);
                }
                Some(RECORD_PRUNE) => {
                    let round = record
                        .get(1..9)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .ok_or_else(|| bad("prune mark truncated"))?;
                    this.prune(round);
                }
                _ => return Err(bad("unknown record kind")),
            }
        }
        let persisted = Persisted {
            safety: this
                .safety
                .as_ref()
                .map(|r| SafetyState::decode(&r[1..]).expect("checked above")),
            blocks: this
                .blocks
                .values()
                .map(|r| decode_block(&r[1..]).expect("checked above"))
                .collect(),
        };
        Ok((this, persisted))
    }

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut record = Vec::with_capacity(1 + body.len());
        record.push(kind);
        record.extend_from_slice(body);
        record
    }

    /// Queues the safety state; durable after `sync`.
    pub fn persist_safety(&mut self, state: &SafetyState) {
        let record = Self::record(RECORD_SAFETY, &state.encode());
        self.journal.append(&record);
        self.safety = Some(record);
        self.signed_queued = (state.voted_round, state.timeout_round);
    }

    /// Whether everything queued must be durable before `msg` is sent: when `msg` itself needs
    /// it, and whenever a vote or timeout this node signed is queued, since any message may
    /// carry it onward (a proposal's QC holds the vote its leader sent itself).
    pub fn must_sync_before(&self, msg: &Message) -> bool {
        msg.needs_durable_state() || self.signed_pending()
    }

    /// Whether a vote or timeout this node signed waits for `sync`.
    pub fn signed_pending(&self) -> bool {
        self.signed_queued != self.signed_durable
    }

    /// Queues a voted block; durable after `sync`.
    pub fn persist_block(&mut self, block: &Block) {
        let record = Self::record(RECORD_BLOCK, &encode_block(block));
        self.journal.append(&record);
        self.blocks.insert((block.round, block.height), record);
    }

    /// Forgets blocks at or below `committed_round` (they are in the block log). The mark need
    /// not be durable: a block replayed after a crash that is already committed is ignored.
    pub fn prune_to(&mut self, committed_round: Round) {
        self.prune(committed_round);
        self.journal
            .append(&Self::record(RECORD_PRUNE, &committed_round.to_le_bytes()));
    }

    fn prune(&mut self, committed_round: Round) {
        self.blocks = self.blocks.split_off(&(committed_round + 1, 0));
    }

    /// Writes and `fdatasync`s everything queued; compacts the file when it has grown large.
    pub fn sync(&mut self) -> Result<(), String> {
        if !self.journal.dirty() {
            return Ok(());
        }
        self.journal.sync().map_err(|e| e.to_string())?;
        self.signed_durable = self.signed_queued;
        if self.journal.len() > JOURNAL_COMPACT_BYTES {
            let live = self.safety.iter().chain(self.blocks.values());
            self.journal
                .rewrite(live.map(Vec::as_slice))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn live_blocks(&self) -> usize {
        self.blocks.len()
    }
}

fn decode_block(bytes: &[u8]) -> Result<Block, crate::consensus::wire::DecodeError> {
    let mut r = Reader::new(bytes);
    let block = Block::decode(&mut r)?;
    r.finish()?;
    Ok(block)
}

/// The core's two timers: the round timer (`SetTimer`) and the idle-pacing propose timer
/// (`SetProposeTimer`), each a deadline and its round.
#[derive(Default)]
struct Timers {
    round: Option<(Instant, Round)>,
    propose: Option<(Instant, Round)>,
}

impl Timers {
    /// How long the input queue may be waited on before a timer is due (at most 100 ms).
    fn wait(&self) -> Duration {
        let now = Instant::now();
        [self.round, self.propose]
            .iter()
            .flatten()
            .map(|(at, _)| at.saturating_duration_since(now))
            .fold(Duration::from_millis(100), Duration::min)
    }

    /// Takes the first due timer as its event.
    fn take_due(&mut self) -> Option<Event> {
        let now = Instant::now();
        if let Some((at, round)) = self.round {
            if now >= at {
                self.round = None;
                return Some(Event::Timer { round });
            }
        }
        if let Some((at, round)) = self.propose {
            if now >= at {
                self.propose = None;
                return Some(Event::ProposeTimer { round });
            }
        }
        None
    }
}

impl ConsensusStage {
    pub fn run(mut self) {
        let mut timer = Timers::default();
        self.step(Event::Start, &mut timer);
        while !self.stop.load(Ordering::Acquire) {
            let wait = timer.wait().min(self.heartbeat());
            match self.input.recv_timeout(wait) {
                Ok(ConsensusIn::Peer { from, msg }) => {
                    if let Message::SyncResponse(response) = &msg {
                        self.note_sync_response(response.blocks.len());
                    }
                    self.step(Event::Message { from, msg }, &mut timer)
                }
                Ok(ConsensusIn::LocalBatchReady(d)) => {
                    self.step(Event::LocalBatchReady(d), &mut timer)
                }
                Ok(ConsensusIn::BatchAvailable(d)) => {
                    self.step(Event::BatchAvailable(d), &mut timer)
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for (digest, local) in self.store.take_news() {
                let event = if local {
                    Event::LocalBatchReady(digest)
                } else {
                    Event::BatchAvailable(digest)
                };
                self.step(event, &mut timer);
            }
            self.watch_peers(&mut timer);
            while let Some(event) = timer.take_due() {
                if let Event::Timer { round } = event {
                    self.note_round_timeout(round);
                }
                self.step(event, &mut timer);
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
            }
        }
    }

    /// Sends every peer a heartbeat if one is due (every `PEER_HEARTBEAT_MS`: a live
    /// validator's consensus thread is never silent for long, which is what lets the peers'
    /// failure detectors flag a hung one); returns how long until the next.
    fn heartbeat(&mut self) -> Duration {
        let now = Instant::now();
        let interval = Duration::from_millis(PEER_HEARTBEAT_MS);
        let due = match self.watch.heartbeat_at {
            Some(at) if now < at => at,
            _ => {
                self.peers.broadcast(PEER_KIND_HEARTBEAT, &[]);
                now + interval
            }
        };
        self.watch.heartbeat_at = Some(due);
        due.saturating_duration_since(now)
    }

    /// Tells the core, at most every `PEER_WATCH_MS`, of peers that became unreachable
    /// (`Peers::unreachable`) or reachable again, so a round led by a node that is down ends
    /// after `consensus.unreachable_leader_timeout_ms` instead of the full round timer.
    fn watch_peers(&mut self, timer: &mut Timers) {
        let now = Instant::now();
        if self
            .watch
            .checked_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_millis(PEER_WATCH_MS))
        {
            return;
        }
        self.watch.checked_at = Some(now);
        let validators = self.peers.validators();
        self.watch.unreachable.resize(validators, false);
        for index in 0..validators {
            let validator = index as ValidatorIndex;
            let why = self.peers.unreachable(validator);
            let unreachable = why.is_some();
            if unreachable == self.watch.unreachable[index] {
                continue;
            }
            self.watch.unreachable[index] = unreachable;
            match why {
                Some(_) if !self.peers.ever_reached(validator) => tracing::info!(
                    peer = validator,
                    "peer not reachable yet (never connected or never heard from); rounds \
                     waiting on it time out early"
                ),
                Some(Unreachable::LinkDown) => tracing::warn!(
                    peer = validator,
                    "peer unreachable: its connection failed and it has been silent; rounds \
                     waiting on it time out early"
                ),
                Some(Unreachable::Silent) => tracing::warn!(
                    peer = validator,
                    "peer unreachable: nothing from it, not even a heartbeat, while the others \
                     are heard (hung or cut off); rounds waiting on it time out early"
                ),
                None => tracing::info!(peer = validator, "peer reachable again"),
            }
            let reachable = !unreachable;
            self.step(
                Event::PeerReachable {
                    validator,
                    reachable,
                },
                timer,
            );
        }
        self.export_peer_metrics();
    }

    /// Sets `reckon_peer_connected` and `reckon_peer_unreachable` and adds to
    /// `reckon_peer_messages_dropped_total` for each other validator whose link or verdict
    /// changed since the last look (a label lookup only on change).
    fn export_peer_metrics(&mut self) {
        let validators = self.peers.validators();
        self.watch.exported.resize(validators, None);
        for index in (0..validators).filter(|i| *i != self.peers.me as usize) {
            let validator = index as ValidatorIndex;
            let (connected, dropped, flagged) = (
                self.peers.connected(validator),
                self.peers.dropped(index),
                self.watch.unreachable[index],
            );
            let before = self.watch.exported[index];
            if before == Some((connected, dropped, flagged)) {
                continue;
            }
            let label = validator.to_string();
            let metrics = &self.shared.metrics;
            metrics
                .peer_connected
                .with_label_values(&[&label])
                .set(i64::from(connected));
            metrics
                .peer_unreachable
                .with_label_values(&[&label])
                .set(i64::from(flagged));
            let dropped_before = before.map_or(0, |(_, dropped, _)| dropped);
            metrics
                .peer_dropped
                .with_label_values(&[&label])
                .inc_by(dropped.saturating_sub(dropped_before));
            self.watch.exported[index] = Some((connected, dropped, flagged));
        }
    }

    /// Counts and logs a round timer that expires in the round it was armed for (the core then
    /// broadcasts a timeout). A run of them with a node down is what the timer's doubling turns
    /// into a long stall, so operators see each one.
    fn note_round_timeout(&self, round: Round) {
        if round != self.core.round() {
            return; // armed for a round already left: the core ignores it
        }
        self.shared.metrics.round_timeouts.inc();
        tracing::info!(
            round,
            timeouts = self.shared.metrics.round_timeouts.get(),
            "round timed out: no QC or TC in time; sending a timeout"
        );
    }

    /// Counts the blocks a sync response brings and how long after this node's last request
    /// it came (`sync_round_trip`: the peer's queue and read, both hops, this node's queue).
    fn note_sync_response(&mut self, blocks: usize) {
        let m = &self.shared.metrics;
        m.sync_blocks_received.inc_by(blocks as u64);
        if let Some(sent) = self.sync_sent_at.take() {
            m.stage_latency_s
                .with_label_values(&["sync_round_trip"])
                .observe(sent.elapsed().as_secs_f64());
        }
    }

    fn step(&mut self, event: Event, timer: &mut Timers) {
        let started = Instant::now();
        let actions = self.core.handle(wall_ms(), event);
        for action in actions {
            if !self.execute_action(action, timer) {
                self.stop.store(true, Ordering::Release);
                return;
            }
        }
        // A vote this node sent itself (as the next leader) left as no message; make it durable
        // now, before the QC counting it can leave in a proposal.
        if self.journal.signed_pending() && !self.sync_journal() {
            self.stop.store(true, Ordering::Release);
            return;
        }
        let round = self.core.round();
        self.shared.figures.round.store(round, Ordering::Relaxed);
        self.shared.metrics.round.set(round as i64);
        self.shared
            .metrics
            .stage_latency_s
            .with_label_values(&["consensus"])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Executes one action; false on a fatal persistence error (the node must stop, not vote).
    fn execute_action(&mut self, action: Action, timer: &mut Timers) -> bool {
        match action {
            Action::PersistSafety(state) => self.journal.persist_safety(&state),
            Action::PersistBlock(block) => {
                self.voted_at
                    .entry(block.round)
                    .or_insert_with(Instant::now);
                while self.voted_at.len() > VOTED_AT_ROUNDS_MAX {
                    self.voted_at.pop_first();
                }
                self.journal.persist_block(&block)
            }
            Action::Send { to, msg } => {
                // Everything persisted so far is durable before a vote, timeout or sync message is
                // sent. A proposal goes out at once (`Message::needs_durable_state`) unless a
                // signature of this node is queued (`ConsensusJournal::must_sync_before`); the
                // leader's own vote that follows it syncs.
                if self.journal.must_sync_before(&msg) && !self.sync_journal() {
                    return false;
                }
                if matches!(msg, Message::SyncRequest(_)) {
                    self.sync_sent_at = Some(Instant::now());
                }
                let bytes = msg.encode();
                match to {
                    Recipient::One(peer) => self.peers.send(peer, PEER_KIND_CONSENSUS, &bytes),
                    Recipient::Others => self.peers.broadcast(PEER_KIND_CONSENSUS, &bytes),
                }
            }
            Action::Commit(blocks) => {
                let round = blocks.last().map_or(0, |b| b.block.round);
                let commits = blocks
                    .into_iter()
                    .map(|block| Commit {
                        voted_at: self.voted_at.remove(&block.block.round),
                        block,
                    })
                    .collect();
                self.voted_at = self.voted_at.split_off(&round.saturating_add(1));
                if self.execute.send(commits).is_err() {
                    return false;
                }
                self.journal.prune_to(round);
            }
            Action::SetTimer { round, duration_ms } => {
                timer.round = Some((Instant::now() + Duration::from_millis(duration_ms), round));
            }
            Action::SetProposeTimer { round, duration_ms } => {
                timer.propose = Some((Instant::now() + Duration::from_millis(duration_ms), round));
            }
            Action::FetchBatches { digests, from } => {
                self.shared
                    .metrics
                    .batches_awaited
                    .inc_by(digests.len() as u64);
                let fetch = DisseminationIn::Fetch {
                    digests,
                    from: Some(from),
                    not_before: Instant::now() + BATCH_FETCH_GRACE,
                };
                if let Err(TrySendError::Disconnected(_)) = self.dissemination.try_send(fetch) {
                    return false;
                }
            }
            Action::ServeSyncFromLog {
                to,
                from_height,
                window_start,
            } => {
                tracing::debug!(
                    to,
                    from_height,
                    window_start,
                    "sync request served from the log"
                );
                let read = LogRead::Sync { to, from_height };
                // Full: the peer asks again after `SYNC_RETRY_MS`.
                if let Err(TrySendError::Disconnected(_)) = self.log_reads.try_send(read) {
                    return false;
                }
            }
            Action::Rejected { from, reason } => {
                tracing::debug!(?from, %reason, "consensus: input rejected");
            }
            Action::Equivocation { author, round, .. } => {
                tracing::warn!(author, round, "consensus: leader equivocation observed");
            }
        }
        true
    }

    /// One `fdatasync` for everything persisted since the last; false (stop) on failure.
    fn sync_journal(&mut self) -> bool {
        let started = Instant::now();
        let dirty = self.journal.journal.dirty();
        if let Err(error) = self.journal.sync() {
            tracing::error!(%error, "cannot persist consensus state; stopping");
            return false;
        }
        if dirty {
            self.shared
                .metrics
                .stage_latency_s
                .with_label_values(&["consensus_journal_sync"])
                .observe(started.elapsed().as_secs_f64());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::genesis_block;

    /// Batch news never blocks the sender: with consensus' queue full it waits in the store, in
    /// order, for the consensus stage to take; nothing is lost.
    #[test]
    fn batch_news_for_a_full_consensus_queue_is_deferred_not_blocked_on() {
        let (tx, rx) = crossbeam::channel::bounded(1);
        let store = BatchStore::default();
        assert!(store.take_news().is_empty());
        assert!(tell_consensus(&tx, &store, [1; 32], false));
        assert!(tell_consensus(&tx, &store, [2; 32], true)); // full: deferred
        assert!(tell_consensus(&tx, &store, [3; 32], false)); // full: deferred
        assert!(matches!(rx.try_recv(), Ok(ConsensusIn::BatchAvailable(d)) if d == [1; 32]));
        assert_eq!(
            Vec::from(store.take_news()),
            vec![([2; 32], true), ([3; 32], false)]
        );
        assert!(store.take_news().is_empty(), "taken once");
        drop(rx);
        assert!(
            !tell_consensus(&tx, &store, [4; 32], false),
            "consensus gone"
        );
    }

    fn block(round: Round, height: u64) -> Block {
        Block {
            round,
            height,
            payload: vec![[round as u8; 32]],
            ..genesis_block()
        }
    }

    fn safety(voted_round: Round) -> SafetyState {
        SafetyState {
            voted_round,
            ..SafetyState::default()
        }
    }

    #[test]
    fn the_journal_replays_the_latest_safety_state_and_the_unpruned_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, persisted) = ConsensusJournal::open(dir.path()).unwrap();
        assert!(persisted.safety.is_none() && persisted.blocks.is_empty());
        for round in 1..=6 {
            j.persist_block(&block(round, round));
            j.persist_safety(&safety(round));
        }
        j.prune_to(3);
        j.sync().unwrap();
        j.persist_safety(&safety(99)); // never synced: lost in the "crash"
        drop(j);
        let (j, persisted) = ConsensusJournal::open(dir.path()).unwrap();
        assert_eq!(persisted.safety, Some(safety(6)));
        let rounds: Vec<Round> = persisted.blocks.iter().map(|b| b.round).collect();
        assert_eq!(rounds, vec![4, 5, 6]);
        assert_eq!(persisted.blocks[0], block(4, 4));
        assert_eq!(j.live_blocks(), 3);
    }

    #[test]
    fn compaction_keeps_exactly_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = ConsensusJournal::open(dir.path()).unwrap();
        let mut round = 0;
        while j.journal.len() <= JOURNAL_COMPACT_BYTES / 2 {
            for _ in 0..1000 {
                round += 1;
                j.persist_block(&block(round, round));
                j.persist_safety(&safety(round));
                j.prune_to(round - 1);
            }
            j.sync().unwrap();
        }
        for _ in 0..(round as usize) {
            round += 1;
            j.persist_block(&block(round, round));
            j.persist_safety(&safety(round));
            j.prune_to(round - 2);
        }
        j.sync().unwrap();
        assert!(
            j.journal.len() < 4096,
            "compacted: {} bytes",
            j.journal.len()
        );
        drop(j);
        let (_, persisted) = ConsensusJournal::open(dir.path()).unwrap();
        assert_eq!(persisted.safety, Some(safety(round)));
        let rounds: Vec<Round> = persisted.blocks.iter().map(|b| b.round).collect();
        assert_eq!(rounds, vec![round - 1, round]);
    }

    fn proposal() -> Message {
        Message::Proposal(crate::consensus::Proposal {
            block: block(7, 7),
            tc: None,
        })
    }

    /// The next leader's vote for round r goes to itself and leaves as no message, but the QC
    /// that counts it leaves in its proposal for r + 1: that proposal must wait for the vote's
    /// record, while a proposal that only raises `proposed_round` need not wait.
    #[test]
    fn nothing_leaves_while_a_signed_vote_or_timeout_is_not_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = ConsensusJournal::open(dir.path()).unwrap();
        assert!(!j.must_sync_before(&proposal()));
        j.persist_block(&block(6, 6));
        j.persist_safety(&safety(6));
        assert!(j.signed_pending());
        assert!(
            j.must_sync_before(&proposal()),
            "the vote for round 6 is queued"
        );
        j.sync().unwrap();
        assert!(!j.signed_pending() && !j.must_sync_before(&proposal()));
        // The proposal's own record (proposed_round only) does not hold it back.
        j.persist_safety(&SafetyState {
            proposed_round: 7,
            ..safety(6)
        });
        assert!(!j.must_sync_before(&proposal()));
        // A timeout is a signature too.
        j.persist_safety(&SafetyState {
            timeout_round: 7,
            proposed_round: 7,
            ..safety(6)
        });
        assert!(j.must_sync_before(&proposal()));
        j.sync().unwrap();
        // After a restart, the replayed state counts as durable.
        drop(j);
        let (j, _) = ConsensusJournal::open(dir.path()).unwrap();
        assert!(!j.signed_pending());
    }

    #[test]
    fn an_unknown_record_kind_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = Journal::open(dir.path(), JOURNAL_FILE).unwrap().journal;
        raw.append(&[42, 1, 2, 3]);
        raw.sync().unwrap();
        drop(raw);
        let err = ConsensusJournal::open(dir.path()).unwrap_err();
        assert!(err.contains("record 0: unknown record kind"), "{err}");
    }
}
