//! The consensus stage: one thread owning `consensus::Core`. It executes the core's actions
//! strictly in order: safety state and blocks are written durably before any later `Send`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::consensus::bls::BlsCrypto;
use crate::consensus::wire::{Reader, Writer};
use crate::consensus::{
    Action, Block, CommittedBlock, Core, Digest, Event, Message, Recipient, Round, SafetyState,
    ValidatorIndex,
};
use crate::storage::write_file_atomic;

use super::dissemination::DisseminationIn;
use super::peers::{wall_ms, Peers, PEER_KIND_CONSENSUS};
use super::state::Shared;

/// Capacity of the queue into consensus (peer messages and batch events).
pub const CONSENSUS_QUEUE_MAX: usize = 4096;
/// Capacity of the queue from consensus to execute, in commit actions (each ≤ a few blocks).
pub const EXECUTE_QUEUE_COMMITS_MAX: usize = 1024;
/// The file holding the safety state, in `<data_dir>/consensus/`.
pub const SAFETY_FILE: &str = "safety.bin";
const BLOCK_FILE_PREFIX: &str = "block-";

// Peer messages dominate the queue; boxing them would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum ConsensusIn {
    Peer { from: ValidatorIndex, msg: Message },
    LocalBatchReady(Digest),
    BatchAvailable(Digest),
}

pub struct ConsensusStage {
    pub core: Core<BlsCrypto>,
    pub dir: PathBuf,
    pub input: Receiver<ConsensusIn>,
    pub peers: Arc<Peers>,
    pub execute: Sender<Vec<CommittedBlock>>,
    pub dissemination: Sender<DisseminationIn>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

fn block_file(block: &Block) -> String {
    format!(
        "{BLOCK_FILE_PREFIX}{:020}-{:020}.bin",
        block.round, block.height
    )
}

pub fn encode_block(block: &Block) -> Vec<u8> {
    let mut w = Writer::default();
    block.encode(&mut w);
    w.bytes
}

/// Loads the persisted safety state and uncommitted blocks (the `Recovered` inputs).
pub fn load_persisted(dir: &Path) -> Result<(Option<SafetyState>, Vec<Block>), String> {
    let safety = match std::fs::read(dir.join(SAFETY_FILE)) {
        Ok(bytes) => Some(
            SafetyState::decode(&bytes)
                .map_err(|e| format!("{}: {e:?}", dir.join(SAFETY_FILE).display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut blocks = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((safety, blocks)),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with(BLOCK_FILE_PREFIX) || !name.ends_with(".bin") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| format!("{name}: {e}"))?;
        let mut r = Reader::new(&bytes);
        match Block::decode(&mut r).and_then(|b| r.finish().map(|_| b)) {
            Ok(block) => blocks.push(block),
            // A torn write of a block file is possible only for a block not yet voted for.
            Err(e) => tracing::warn!(file = %name, error = ?e, "ignoring an unreadable block file"),
        }
    }
    Ok((safety, blocks))
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
        std::fs::create_dir_all(&self.dir).ok();
        let mut timer = Timers::default();
        self.step(Event::Start, &mut timer);
        while !self.stop.load(Ordering::Acquire) {
            let wait = timer.wait();
            match self.input.recv_timeout(wait) {
                Ok(ConsensusIn::Peer { from, msg }) => {
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
            while let Some(event) = timer.take_due() {
                self.step(event, &mut timer);
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
            }
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
            Action::PersistSafety(state) => {
                if let Err(e) = write_file_atomic(&self.dir, SAFETY_FILE, &state.encode()) {
                    tracing::error!(error = %e, "cannot persist the safety state; stopping");
                    return false;
                }
            }
            Action::PersistBlock(block) => {
                if let Err(e) =
                    write_file_atomic(&self.dir, &block_file(&block), &encode_block(&block))
                {
                    tracing::error!(error = %e, "cannot persist a block; stopping");
                    return false;
                }
            }
            Action::Send { to, msg } => {
                let bytes = msg.encode();
                match to {
                    Recipient::One(peer) => self.peers.send(peer, PEER_KIND_CONSENSUS, &bytes),
                    Recipient::Others => self.peers.broadcast(PEER_KIND_CONSENSUS, &bytes),
                }
            }
            Action::Commit(blocks) => {
                let round = blocks.last().map_or(0, |b| b.block.round);
                if self.execute.send(blocks).is_err() {
                    return false;
                }
                self.prune_blocks(round);
            }
            Action::SetTimer { round, duration_ms } => {
                timer.round = Some((Instant::now() + Duration::from_millis(duration_ms), round));
            }
            Action::SetProposeTimer { round, duration_ms } => {
                timer.propose = Some((Instant::now() + Duration::from_millis(duration_ms), round));
            }
            Action::FetchBatches { digests, from } => {
                let fetch = DisseminationIn::Fetch {
                    digests,
                    from: Some(from),
                };
                if let Err(TrySendError::Disconnected(_)) = self.dissemination.try_send(fetch) {
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

    /// Removes persisted blocks at or below the committed round (they are in the log now).
    fn prune_blocks(&self, committed_round: Round) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let round = name
                .strip_prefix(BLOCK_FILE_PREFIX)
                .and_then(|rest| rest.get(..20))
                .and_then(|r| r.parse::<u64>().ok());
            if round.is_some_and(|r| r <= committed_round) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
