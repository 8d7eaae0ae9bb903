//! Execute: owns the `Ledger` and the `BlockLog`. For each committed block it resolves the batch
//! digests, appends one log record (the block, its commit QC and the full signed requests, so the
//! log alone re-executes and audits; appended first, so its fdatasync overlaps the apply), applies
//! every request with the block's timestamp, takes a
//! snapshot every K blocks, and hands the durability ticket and the replies to the reply stage.
//! Queries, peers' fetches of committed batches that left the batch store, and peers' block sync
//! requests from below consensus' committed window are answered here, between blocks, from
//! committed state and from the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{never, select, Receiver, Sender};

use crate::codec::encode_reply;
use crate::consensus::{
    sync_response_from_log, CommittedBlock, Digest, Message, SyncResponse, ValidatorIndex,
};
use crate::crypto::REQUEST_HEADER_BYTES;
use crate::exec::{execute, request_timestamp_ns, ExecRequest};
use crate::ledger::{Ledger, TableFill};
use crate::mempool::RequestKey;
use crate::net::frame;
use crate::storage::{BlockLog, Ticket};
use crate::types::EVENT_BYTES;

use super::batches::{Batch, BatchStore, Located};
use super::consensus_stage::Commit;
use super::ingress::{reject, VerifyJob};
use super::peers::{
    encode_fetch_committed, Peers, PEER_KIND_BATCH, PEER_KIND_BATCH_FETCH_COMMITTED,
    PEER_KIND_CONSENSUS,
};
use super::protocol::{Outcome, RejectCode, Rejected, KIND_QUERY_RESULT};
use super::serve_budget::ServeBudget;
use super::snapshots::SnapshotWriter;
use super::state::Shared;
use super::thread_usage::ThreadUsage;

/// Capacity of the queue from execute to reply, in blocks.
pub const REPLY_QUEUE_BLOCKS_MAX: usize = 1024;
/// How long execute waits for a missing batch before asking peers again.
pub const BATCH_FETCH_RETRY_MS: u64 = 500;
/// Capacity of the queue of reads to serve from the log (peers' fetches of committed batches from
/// dissemination, one digest each; peers' sync requests from consensus): a full queue drops the
/// read, the peer asks again.
pub const LOG_FETCH_QUEUE_MAX: usize = 256;

/// Blocks executed in one turn before the queries and log reads that came meanwhile are served.
pub const EXECUTE_BLOCKS_PER_TURN: usize = 32;
/// Batch digests of pending blocks whose fetches may be in flight at once (`prefetch_ahead`):
/// at most about a third of them asked of each of three peers, below their log-read queue
/// (`LOG_FETCH_QUEUE_MAX`), which drops what does not fit.
pub const PREFETCH_DIGESTS_AHEAD: usize = 384;

/// Committed blocks taken from consensus and not executed yet, in height order.
#[derive(Default)]
struct Pending {
    blocks: std::collections::VecDeque<Commit>,
    /// Highest height whose batches `prefetch_ahead` asked for.
    prefetched_through: u64,
}

/// A read of the log on a peer's behalf, served by execute between blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRead {
    /// A committed batch that left the batch store (dissemination).
    Batch(LogFetch),
    /// Committed blocks from `from_height`, below consensus' committed window
    /// (`Action::ServeSyncFromLog`): answered with a `SyncResponse` on the consensus lane.
    Sync {
        to: ValidatorIndex,
        from_height: u64,
    },
}

/// A peer's fetch of a committed batch that left the batch store: `digest` was ordered by the
/// block at `height`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFetch {
    pub from: ValidatorIndex,
    pub digest: Digest,
    pub height: u64,
}

/// What one request produced in a block.
pub struct Executed {
    pub key: RequestKey,
    pub digest: [u8; 32],
    pub result: Result<Outcome, Rejected>,
}

pub struct ExecutedBlock {
    pub height: u64,
    /// When execute took the committed block (before resolving its batches).
    pub committed_at: Instant,
    /// When this node voted for the block (None: it did not vote for it).
    pub voted_at: Option<Instant>,
    pub ticket: Option<Ticket>,
    pub items: Vec<Executed>,
}

/// Log record: `committed_len u32 | CommittedBlock | batch_count u32 | batches`.
pub fn encode_record(committed: &CommittedBlock, batches: &[Arc<Batch>]) -> Vec<u8> {
    let record = RecordEncoder::new(committed, batches);
    let mut out = Vec::with_capacity(record.encoded_len());
    record.encode_into(&mut out);
    out
}

/// A log record ready to be written: its length is known before any byte is, so it can be
/// encoded straight into the log's frame buffer (`BlockLog::append_with`).
pub struct RecordEncoder<'a> {
    block: Vec<u8>,
    batches: &'a [Arc<Batch>],
}

impl<'a> RecordEncoder<'a> {
    pub fn new(committed: &CommittedBlock, batches: &'a [Arc<Batch>]) -> Self {
        RecordEncoder {
            block: committed.encode(),
            batches,
        }
    }

    /// Bytes `encode_into` appends.
    pub fn encoded_len(&self) -> usize {
        let batches: usize = self.batches.iter().map(|b| b.encoded_len()).sum();
        4 + self.block.len() + 4 + batches
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.block);
        out.extend_from_slice(&(self.batches.len() as u32).to_le_bytes());
        for batch in self.batches {
            batch.encode_into(out);
        }
    }
}

/// The record's block alone (its batches are not decoded); returns it and where the batches start.
pub fn decode_record_block(bytes: &[u8]) -> Result<(CommittedBlock, usize), String> {
    let len = bytes.get(..4).ok_or("record truncated")?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let block = bytes.get(4..4 + len).ok_or("record block truncated")?;
    let committed = CommittedBlock::decode(block).map_err(|e| format!("block: {e:?}"))?;
    Ok((committed, 4 + len))
}

/// The encoded batch `digest` of a log record (its bytes, `count u32 | (len u32 | request)*`,
/// exactly as `Batch::encode_into` wrote them), found through the block's payload; None when
/// the block does not order that digest. Every length is bounds-checked (never panics).
pub fn record_batch_bytes<'a>(
    bytes: &'a [u8],
    digest: &Digest,
) -> Result<Option<&'a [u8]>, String> {
    let (committed, mut at) = decode_record_block(bytes)?;
    let Some(index) = committed.block.payload.iter().position(|d| d == digest) else {
        return Ok(None);
    };
    let count = bytes
        .get(at..at + 4)
        .ok_or("record batch count truncated")?;
    let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
    if count != committed.block.payload.len() {
        return Err(format!(
            "record has {count} batches, block orders {}",
            committed.block.payload.len()
        ));
    }
    at += 4;
    let read_u32 = |at: usize| -> Result<usize, String> {
        let b = bytes.get(at..at + 4).ok_or("record batch truncated")?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    for i in 0..=index {
        let start = at;
        let requests = read_u32(at)?;
        at += 4;
        for _ in 0..requests {
            let len = read_u32(at)?;
            at = (at + 4)
                .checked_add(len)
                .filter(|end| *end <= bytes.len())
                .ok_or("record request truncated")?;
        }
        if i == index {
            return Ok(Some(&bytes[start..at]));
        }
    }
    unreachable!("the loop returns at index")
}

/// The peer frame (`PEER_KIND_BATCH`) carrying batch `digest` of a log record: the same bytes
/// `Batch::encode_peer_into` gives for the batch, built from the record without decoding it.
pub fn record_batch_frame(
    bytes: &[u8],
    chain: u64,
    digest: &Digest,
) -> Result<Option<Arc<[u8]>>, String> {
    let Some(batch) = record_batch_bytes(bytes, digest)? else {
        return Ok(None);
    };
    let payload_len = 40 + batch.len();
    let mut out = Vec::with_capacity(frame::FRAME_HEADER_BYTES + payload_len);
    out.extend_from_slice(&frame::encode_header(PEER_KIND_BATCH, payload_len));
    out.extend_from_slice(&chain.to_le_bytes());
    out.extend_from_slice(digest);
    out.extend_from_slice(batch);
    Ok(Some(out.into()))
}

/// The committed blocks from `from_height` in the log, as a sync response (at most
/// `SYNC_BLOCKS_MAX`, stopping at the first height the log does not hold durably or cannot decode).
pub fn log_sync_response(log: &BlockLog, from_height: u64) -> SyncResponse {
    sync_response_from_log(from_height, |height| {
        let bytes = log.read(height).ok()?;
        decode_record_block(&bytes)
            .ok()
            .map(|(committed, _)| committed)
    })
}

/// Splits `digests` over the peers that are `up`, round-robin from `rotation`: one fetch per peer,
/// each digest asked of exactly one. With no peer up, one fetch asks every peer.
fn spread_fetches<T: Clone>(
    digests: Vec<T>,
    up: &[ValidatorIndex],
    rotation: usize,
) -> Vec<(Option<ValidatorIndex>, Vec<T>)> {
    if digests.is_empty() {
        return Vec::new();
    }
    if up.is_empty() {
        return vec![(None, digests)];
    }
    let mut shares: Vec<Vec<T>> = vec![Vec::new(); up.len()];
    for (position, digest) in digests.into_iter().enumerate() {
        shares[(position + rotation) % up.len()].push(digest);
    }
    up.iter()
        .zip(shares)
        .filter(|(_, share)| !share.is_empty())
        .map(|(peer, share)| (Some(*peer), share))
        .collect()
}

/// Batch `digest` of the log's block at `height`, decoded.
fn log_batch(log: &BlockLog, height: u64, digest: &Digest) -> Result<Option<Batch>, String> {
    let bytes = log.read(height).map_err(|e| e.to_string())?;
    let Some(batch) = record_batch_bytes(&bytes, digest)? else {
        return Ok(None);
    };
    let mut at = 0;
    let batch = Batch::decode_from(batch, &mut at).map_err(|e| e.to_string())?;
    Ok((batch.digest() == *digest).then_some(batch))
}

pub fn decode_record(bytes: &[u8]) -> Result<(CommittedBlock, Vec<Batch>), String> {
    let (committed, mut at) = decode_record_block(bytes)?;
    let count = bytes
        .get(at..at + 4)
        .ok_or("record batch count truncated")?;
    let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
    at += 4;
    if count != committed.block.payload.len() {
        return Err(format!(
            "record has {count} batches, block orders {}",
            committed.block.payload.len()
        ));
    }
    let mut batches = Vec::with_capacity(count);
    for _ in 0..count {
        batches.push(Batch::decode_from(bytes, &mut at).map_err(|e| e.to_string())?);
    }
    if at != bytes.len() {
        return Err("trailing bytes in record".into());
    }
    Ok((committed, batches))
}

/// Applies a committed block's requests in order. Deterministic: every node computes the same
/// timestamps and results from the same block. Each `Executed::digest` is the request's signing
/// digest: the one this node already computed (at ingress, or when it verified the peer batch or
/// the auditor its window), else computed here from the bytes and kept in the batch.
pub fn apply_block(
    ledger: &mut Ledger,
    committed: &CommittedBlock,
    batches: &[impl AsRef<Batch>],
) -> Vec<Executed> {
    let block_ms = committed.block.timestamp_ms;
    let mut items = Vec::new();
    for batch in batches {
        for request in &batch.as_ref().requests {
            let Ok(digested) = request.digested() else {
                tracing::error!(
                    height = committed.height,
                    "a committed request does not decode; skipped"
                );
                continue;
            };
            let r = digested.view();
            let key = RequestKey {
                institution: r.institution(),
                request_id: r.request_id(),
            };
            let timestamp_ns = request_timestamp_ns(ledger, block_ms);
            let exec = ExecRequest {
                institution: r.institution(),
                operation: r.operation(),
                body: r.body(),
            };
            let result = match execute(ledger, block_ms, &exec) {
                Ok(reply) => Ok(Outcome {
                    institution: r.institution(),
                    request_id: r.request_id(),
                    height: committed.height,
                    timestamp_ns,
                    operation: r.operation(),
                    reply: encode_reply(&reply),
                }),
                Err(error) => Err(Rejected {
                    height: committed.height,
                    ..Rejected::new(
                        (r.institution(), r.request_id()),
                        RejectCode::RequestRefused,
                        error.to_string(),
                    )
                }),
            };
            items.push(Executed {
                key,
                digest: digested.digest(),
                result,
            });
        }
    }
    items
}

pub struct Execute {
    pub ledger: Ledger,
    pub log: BlockLog,
    pub commits: Receiver<Vec<Commit>>,
    pub queries: Receiver<VerifyJob>,
    /// Reads to serve from the log: batch fetches (dissemination), sync requests (consensus).
    pub log_reads: Receiver<LogRead>,
    pub store: Arc<BatchStore>,
    pub peers: Arc<Peers>,
    /// Consensus chain id, in every batch peer frame.
    pub chain: u64,
    pub reply: Sender<ExecutedBlock>,
    /// Writes the snapshots this thread encodes (`snapshots`).
    pub snapshots: SnapshotWriter,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
    /// Blocks whose execution (from taking the commit to handing it to reply) takes longer are
    /// logged with where the time went.
    pub slow_block: Option<Duration>,
    /// Bytes of log reads each peer may have a second (`storage.peer_log_serve_mib_per_s`).
    pub serve_budget: ServeBudget,
}

impl Execute {
    /// Runs until consensus is gone or the node stops, then flushes the log.
    pub fn run(mut self) {
        // The apply's usage split is read only for the slow-block log.
        let usage = if self.slow_block.is_some() {
            ThreadUsage::for_current_thread()
        } else {
            ThreadUsage::disabled()
        };
        self.serve(&usage);
        match self.log.wait_durable() {
            Ok(height) => tracing::info!(?height, "block log flushed"),
            Err(error) => tracing::error!(%error, "block log flush failed"),
        }
        self.snapshots.finish();
    }

    fn serve(&mut self, usage: &ThreadUsage) {
        let mut pending = Pending::default();
        loop {
            if !pending.blocks.is_empty() {
                // Catching up (or a burst): reads that came meanwhile first, then a few blocks.
                self.serve_reads_waiting();
                if !self.execute_pending(&mut pending, usage) {
                    return;
                }
                continue;
            }
            select! {
                recv(self.commits) -> blocks => match blocks {
                    Ok(blocks) => {
                        pending.blocks.extend(blocks);
                        if !self.execute_pending(&mut pending, usage) {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                recv(self.queries) -> job => match job {
                    Ok(job) => self.answer_query(job),
                    Err(_) => return,
                },
                recv(self.log_reads) -> read => match read {
                    Ok(read) => self.serve_log_read(read),
                    // Dissemination and consensus stopped first: no more reads, keep executing.
                    Err(_) => self.log_reads = never(),
                },
                default(Duration::from_millis(100)) => {
                    let durable = self.log.durable_height().unwrap_or(0);
                    self.store.evict_committed(durable);
                    if self.stop.load(Ordering::Acquire) && self.commits.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// Serves one peer's log read if that peer's budget allows; otherwise refuses it (counted)
    /// and the peer asks again on its retry timer.
    fn serve_log_read(&mut self, read: LogRead) {
        let peer = match &read {
            LogRead::Batch(fetch) => fetch.from,
            LogRead::Sync { to, .. } => *to,
        };
        if !self.serve_budget.admit(peer as usize, Instant::now()) {
            self.shared.metrics.log_reads_over_budget.inc();
            tracing::debug!(peer, "log read refused: the peer's serve budget is spent");
            return;
        }
        let bytes = match read {
            LogRead::Batch(fetch) => self.serve_log_fetch(&fetch),
            LogRead::Sync { to, from_height } => self.serve_log_sync(to, from_height),
        };
        self.serve_budget.spend(peer as usize, bytes);
        self.shared.metrics.log_served_bytes.inc_by(bytes as u64);
    }

    /// Between blocks while commits wait: the queries and peers' log reads queued meanwhile (at
    /// most their queues' worth, so a flood of them cannot hold execution either).
    fn serve_reads_waiting(&mut self) {
        for _ in 0..super::verify::QUERY_QUEUE_MAX {
            let Ok(job) = self.queries.try_recv() else {
                break;
            };
            self.answer_query(job);
        }
        for _ in 0..LOG_FETCH_QUEUE_MAX {
            let Ok(read) = self.log_reads.try_recv() else {
                break;
            };
            self.serve_log_read(read);
        }
    }

    /// Executes up to `EXECUTE_BLOCKS_PER_TURN` pending blocks, topping up the prefetch before
    /// each; false when the node must stop.
    fn execute_pending(&mut self, pending: &mut Pending, usage: &ThreadUsage) -> bool {
        for _ in 0..EXECUTE_BLOCKS_PER_TURN {
            self.prefetch_ahead(pending);
            let Some(commit) = pending.blocks.pop_front() else {
                return true;
            };
            if !self.execute_block(commit, usage) {
                return false;
            }
        }
        true
    }

    /// Takes what consensus handed over meanwhile (up to `PREFETCH_DIGESTS_AHEAD` digests'
    /// worth of blocks ahead) and asks peers for the missing batches of the blocks among them
    /// not asked for yet, so a catching-up node's fetches of later blocks are in flight while
    /// earlier ones execute, across consensus' hand-offs (one per sync response), instead of one
    /// fetch round trip per hand-off.
    fn prefetch_ahead(&mut self, pending: &mut Pending) {
        let ahead = |pending: &Pending| -> usize {
            (pending.blocks.iter())
                .map(|c| c.block.block.payload.len().max(1))
                .sum()
        };
        while ahead(pending) < PREFETCH_DIGESTS_AHEAD {
            match self.commits.try_recv() {
                Ok(more) => pending.blocks.extend(more),
                Err(_) => break,
            }
        }
        let mut digests = 0;
        let mut fresh = Vec::new();
        for commit in &pending.blocks {
            digests += commit.block.block.payload.len();
            if digests > PREFETCH_DIGESTS_AHEAD && !fresh.is_empty() {
                break;
            }
            if commit.block.height > pending.prefetched_through {
                fresh.push(commit);
            }
        }
        if let Some(last) = fresh.last() {
            pending.prefetched_through = last.block.height;
            self.prefetch(fresh.into_iter());
        }
    }

    /// Publishes the ledger tables' fill, and warns once when a table passes 90 % of the
    /// capacity it was sized for. Past it the table still grows without stopping, but page
    /// faults and the id index's migration land on the execute thread (`ledger::table`,
    /// `ledger::map`), so execution slows until a restart with a larger `[ledger]` capacity.
    fn note_table_fill(&self, before: &TableFill) {
        let fill = self.ledger.table_fill();
        let m = &self.shared.metrics;
        for (table, records, capacity) in [
            ("accounts", fill.accounts, fill.accounts_capacity),
            ("transfers", fill.transfers, fill.transfers_capacity),
        ] {
            m.ledger_records
                .with_label_values(&[table])
                .set(records as i64);
            m.ledger_capacity
                .with_label_values(&[table])
                .set(capacity as i64);
        }
        for table in fill.crossed_warning(before) {
            tracing::warn!(
                table,
                accounts = fill.accounts,
                accounts_capacity = fill.accounts_capacity,
                transfers = fill.transfers,
                transfers_capacity = fill.transfers_capacity,
                "ledger table at 90% of its configured capacity: past it the node grows it as it goes, slower (page faults and index migration on the execute thread); raise [ledger] {table}_capacity at the next restart"
            );
        }
    }

    /// Asks peers at once for every batch this node does not know of the blocks it did not vote
    /// for (learned by sync: it is catching up, so their batches are not on their way by broadcast).
    /// One fetch for the whole hand-off (up to a sync response's blocks), so the batches of later
    /// blocks arrive while earlier ones execute, instead of one fetch per block each after
    /// `BATCH_FETCH_RETRY_MS`: a catching-up node went 3.5 blocks/s that way (docs/CAPACITY.md,
    /// session 9) and never caught up with peers committing 60 blocks/s. Each digest goes to one
    /// peer that is up (`spread_fetches`), not to all: every peer asked reads the batch from its
    /// log and sends it, so asking all of them tripled the reads and the bytes. A batch the peer
    /// asked does not send is asked of every peer by `resolve` after its wait. Each digest goes
    /// with its block's height, so a peer serves it from its log however old the block is.
    fn prefetch<'a>(&self, blocks: impl Iterator<Item = &'a Commit>) {
        let (executed_height, _) = self.shared.executed();
        let wanted: Vec<(u64, Digest)> = blocks
            .filter(|c| c.voted_at.is_none() && c.block.height > executed_height)
            .flat_map(|c| c.block.block.payload.iter().map(|d| (c.block.height, *d)))
            .filter(|(_, digest)| self.store.locate(digest) == Located::Unknown)
            .collect();
        if wanted.is_empty() {
            return; // the usual case: no `peers.up()` lookup per hand-off
        }
        self.store
            .expect_certified(wanted.iter().map(|(_, digest)| *digest));
        let rotation = executed_height as usize;
        for (from, wanted) in spread_fetches(wanted, &self.peers.up(), rotation) {
            self.fetch_committed(from, &wanted);
        }
    }

    /// Asks `from` (every peer when None) for committed batches, each with its block's height.
    fn fetch_committed(&self, from: Option<ValidatorIndex>, wanted: &[(u64, Digest)]) {
        for chunk in wanted.chunks(super::peers::FETCH_DIGESTS_MAX) {
            let payload = encode_fetch_committed(chunk);
            match from {
                Some(peer) => self
                    .peers
                    .send(peer, PEER_KIND_BATCH_FETCH_COMMITTED, &payload),
                None => self
                    .peers
                    .broadcast(PEER_KIND_BATCH_FETCH_COMMITTED, &payload),
            }
        }
    }

    /// Waits for every batch of the block (asking peers while any is missing). A batch ordered
    /// again after it left memory (committed earlier) is read back from this node's own log.
    fn resolve(&self, committed: &CommittedBlock) -> Option<Vec<Arc<Batch>>> {
        let payload = &committed.block.payload;
        let mut found: Vec<Option<Arc<Batch>>> = vec![None; payload.len()];
        loop {
            for (slot, digest) in found.iter_mut().zip(payload) {
                if slot.is_some() {
                    continue;
                }
                *slot = match self.store.locate(digest) {
                    Located::Memory(batch) => Some(batch),
                    Located::Log(height) => log_batch(&self.log, height, digest)
                        .ok()
                        .flatten()
                        .map(Arc::new),
                    Located::Unknown => None,
                };
            }
            let missing: Vec<Digest> = found
                .iter()
                .zip(payload)
                .filter(|(slot, _)| slot.is_none())
                .map(|(_, digest)| *digest)
                .collect();
            if missing.is_empty() {
                return found.into_iter().collect();
            }
            let missing = self
                .store
                .wait_for(&missing, Duration::from_millis(BATCH_FETCH_RETRY_MS));
            if missing.is_empty() {
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            tracing::info!(
                height = committed.height,
                missing = missing.len(),
                "fetching batches of a committed block"
            );
            let wanted: Vec<(u64, Digest)> =
                missing.iter().map(|d| (committed.height, *d)).collect();
            self.store.expect_certified(missing.iter().copied());
            self.fetch_committed(None, &wanted);
        }
    }

    /// Sends a peer the committed batch it fetched, read from the log (between blocks); returns
    /// the bytes sent.
    fn serve_log_fetch(&self, fetch: &LogFetch) -> usize {
        let served = self
            .log
            .read(fetch.height)
            .map_err(|e| e.to_string())
            .and_then(|bytes| record_batch_frame(&bytes, self.chain, &fetch.digest));
        match served {
            Ok(Some(frame)) => {
                let bytes = frame.len();
                self.peers.send_encoded(fetch.from, PEER_KIND_BATCH, frame);
                self.shared.metrics.batches_served_from_log.inc();
                return bytes;
            }
            // The peer's height was wrong, or (from the index) a bug: nothing to send.
            Ok(None) => tracing::debug!(
                from = fetch.from,
                height = fetch.height,
                "a fetched batch is not in the block at the height named"
            ),
            // Not durable yet (the peer retries) or unreadable.
            Err(error) => {
                tracing::debug!(height = fetch.height, %error, "fetch not served from the log")
            }
        }
        0
    }

    /// Answers a peer's sync request from below consensus' committed window with the committed
    /// blocks from its log (`log_sync_response`); nothing when the log does not hold the height yet
    /// (the peer asks again after `SYNC_RETRY_MS`).
    fn serve_log_sync(&self, to: ValidatorIndex, from_height: u64) -> usize {
        let response = log_sync_response(&self.log, from_height);
        if response.blocks.is_empty() {
            tracing::debug!(
                to,
                from_height,
                "sync request: the log does not hold that height"
            );
            return 0;
        }
        let served = response.blocks.len() as u64;
        let bytes = Message::SyncResponse(response).encode();
        self.peers.send(to, PEER_KIND_CONSENSUS, &bytes);
        self.shared
            .metrics
            .sync_blocks_served_from_log
            .inc_by(served);
        bytes.len()
    }

    fn execute_block(&mut self, commit: Commit, usage: &ThreadUsage) -> bool {
        let Commit {
            block: committed,
            voted_at,
        } = commit;
        let (executed_height, _) = self.shared.executed();
        if committed.height <= executed_height {
            return true; // already in the log (recovered)
        }
        assert_eq!(
            committed.height,
            executed_height + 1,
            "commits arrive in height order"
        );
        let committed_at = Instant::now();
        let Some(batches) = self.resolve(&committed) else {
            return false;
        };
        let before_append = usage.sample();
        let started = before_append.at();
        // The record is the block and its batches, not the results: it is appended first, so the
        // writer's write and fdatasync run while the block is applied here (the reply waits for
        // both).
        let record = RecordEncoder::new(&committed, &batches);
        let parent = self.log.last().map(|(_, hash)| hash).unwrap_or([0; 32]);
        let queued = self
            .log
            .append_with(committed.height, &parent, record.encoded_len(), |out| {
                record.encode_into(out)
            });
        let ticket = match queued {
            Ok(ticket) => Some(ticket),
            Err(error) => {
                tracing::error!(height = committed.height, %error, "block log append failed; stopping");
                self.stop.store(true, Ordering::Release);
                None
            }
        };
        let appended = usage.sample();
        let fill_before = self.ledger.table_fill();
        let items = apply_block(&mut self.ledger, &committed, &batches);
        let applied = usage.sample();
        self.note_table_fill(&fill_before);
        // The block's batches are committed: they leave memory after the store's window (once
        // durable) and fetches of them are then served from the log.
        let durable = self.log.durable_height().unwrap_or(0);
        self.store
            .committed(committed.height, &committed.block.payload, durable);
        self.shared
            .metrics
            .batch_store_bytes
            .set(self.store.bytes() as i64);
        let digest = self.ledger.digest();
        self.shared.set_executed(committed.height, digest);
        self.shared
            .figures
            .executed_requests
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.shared.metrics.height.set(committed.height as i64);
        self.shared.metrics.commits.inc();
        let events: usize = batches
            .iter()
            .flat_map(|b| b.requests.iter())
            .map(|r| r.len().saturating_sub(REQUEST_HEADER_BYTES + 48) / EVENT_BYTES)
            .sum();
        self.shared
            .metrics
            .transfers_committed
            .inc_by(events as u64);
        let finished = Instant::now();
        self.shared
            .metrics
            .stage_latency_s
            .with_label_values(&["execute"])
            .observe(finished.saturating_duration_since(started).as_secs_f64());
        if self
            .slow_block
            .is_some_and(|limit| finished.saturating_duration_since(committed_at) > limit)
        {
            let ms =
                |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
            let append = before_append.span_to(&appended);
            let apply = appended.span_to(&applied);
            tracing::warn!(
                height = committed.height,
                batches = batches.len(),
                requests = items.len(),
                events,
                resolve_ms = ms(committed_at, started),
                append_ms = append.wall_ms,
                append_on_cpu_ms = append.on_cpu_ms,
                append_runnable_wait_ms = append.runnable_wait_ms,
                append_system_ms = append.system_ms,
                append_minor_faults = append.minor_faults,
                apply_ms = apply.wall_ms,
                apply_on_cpu_ms = apply.on_cpu_ms,
                apply_runnable_wait_ms = apply.runnable_wait_ms,
                apply_blocked_or_stolen_ms = apply.blocked_or_stolen_ms(),
                apply_system_ms = apply.system_ms,
                apply_minor_faults = apply.minor_faults,
                apply_involuntary_switches = apply.involuntary_switches,
                after_ms = ms(applied.at(), finished),
                "slow block execution"
            );
        }
        self.maybe_snapshot(committed.height, ticket.as_ref());
        let ok = ticket.is_some();
        let block = ExecutedBlock {
            height: committed.height,
            committed_at,
            voted_at,
            ticket,
            items,
        };
        self.reply.send(block).is_ok() && ok
    }

    /// Every `snapshot_every_blocks`, once the block is durable: takes the ledger's state here
    /// (`Ledger::snapshot_source`, no encoding) and hands it to the snapshot writer thread.
    fn maybe_snapshot(&mut self, height: u64, ticket: Option<&Ticket>) {
        let Some(ticket) = ticket else { return };
        if !self.log.snapshot_due(height) || ticket.wait().is_err() {
            return;
        }
        let started = Instant::now();
        let mut digest = [0u8; 32];
        digest[..16].copy_from_slice(&self.ledger.digest().to_le_bytes());
        let source = self.ledger.snapshot_source();
        self.shared
            .metrics
            .stage_latency_s
            .with_label_values(&["snapshot_take"])
            .observe(started.elapsed().as_secs_f64());
        self.snapshots.submit(height, digest, source);
    }

    fn answer_query(&mut self, job: VerifyJob) {
        let r = job.request();
        let key = (r.institution(), r.request_id());
        let (height, _) = self.shared.executed();
        match self
            .ledger
            .apply_request(r.institution(), 0, r.operation(), r.body())
        {
            Ok(reply) => {
                let outcome = Outcome {
                    institution: r.institution(),
                    request_id: r.request_id(),
                    height,
                    timestamp_ns: 0,
                    operation: r.operation(),
                    reply: encode_reply(&reply),
                };
                let _ = job.writer.send(KIND_QUERY_RESULT, &outcome.encode());
            }
            Err(error) => reject(
                &self.shared,
                &job.writer,
                Rejected::new(key, RejectCode::RequestRefused, error.to_string()),
            ),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::consensus::{genesis_qc, Block};
    use crate::net::frame::{decode, FRAME_PAYLOAD_BYTES_MAX};
    use crate::storage::{LogConfig, WriteBackend};

    fn batch(tag: u8, requests: usize) -> Batch {
        Batch {
            requests: (0..requests)
                .map(|i| {
                    Arc::<[u8]>::from(vec![tag ^ i as u8; 100 + i * 7].into_boxed_slice()).into()
                })
                .collect(),
        }
    }

    #[test]
    fn prefetch_asks_each_missing_batch_of_exactly_one_peer_that_is_up() {
        let digests: Vec<Digest> = (0..10u8).map(|i| [i; 32]).collect();
        let spread = spread_fetches(digests.clone(), &[1, 2, 3], 4);
        assert_eq!(spread.len(), 3);
        let mut asked: Vec<Digest> = spread.iter().flat_map(|(_, d)| d.clone()).collect();
        asked.sort();
        assert_eq!(asked, digests, "every digest asked once");
        let sizes: Vec<usize> = spread.iter().map(|(_, d)| d.len()).collect();
        assert!(sizes.iter().all(|n| (3..=4).contains(n)), "{sizes:?}");
        assert!(spread.iter().all(|(from, _)| matches!(from, Some(1..=3))));
        // The rotation moves who gets the first digest.
        let first_of = |rotation| spread_fetches(digests[..1].to_vec(), &[1, 2, 3], rotation)[0].0;
        assert_eq!(
            (first_of(0), first_of(1), first_of(2)),
            (Some(1), Some(2), Some(3))
        );
        // Nobody up: everyone is asked; nothing missing: nobody is.
        assert_eq!(
            spread_fetches(digests[..2].to_vec(), &[], 0),
            vec![(None, digests[..2].to_vec())]
        );
        assert!(spread_fetches(Vec::<Digest>::new(), &[1, 2], 0).is_empty());
    }

    /// A committed block at `height` ordering `batches` (genesis QCs: the log does not check them).
    pub(in crate::node) fn committed(height: u64, batches: &[Arc<Batch>]) -> CommittedBlock {
        CommittedBlock {
            height,
            block: Block {
                author: 0,
                round: height,
                height,
                timestamp_ms: 1_000 + height,
                justify: genesis_qc(),
                payload: batches.iter().map(|b| b.digest()).collect(),
            },
            qc: genesis_qc(),
        }
    }

    /// A fetch for a committed batch that left the store is answered from the log with the
    /// exact batch: the frame equals the one dissemination builds from memory, and decodes (as a
    /// peer does, digest checked) to the same batch.
    #[test]
    fn a_committed_batch_that_left_memory_is_served_from_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LogConfig::for_tests(64 << 10);
        config.write_backend = WriteBackend::Pwrite;
        config.direct_io = false;
        let mut log = BlockLog::open(dir.path(), config).expect("open log");
        let store = BatchStore::with_bounds(1 << 30, 2, 1 << 20);
        let chain = 0x5eed;
        let mut parent = [0u8; 32];
        let mut blocks = Vec::new();
        for height in 1..=5u64 {
            let batches: Vec<Arc<Batch>> = (0..3u8)
                .map(|i| Arc::new(batch(height as u8 * 10 + i, 1 + i as usize * 2)))
                .collect();
            for b in &batches {
                assert!(store.insert(b.digest(), b.clone()));
            }
            let committed = committed(height, &batches);
            let ticket = log
                .append(height, &parent, &encode_record(&committed, &batches))
                .expect("append");
            parent = ticket.hash();
            ticket.wait().expect("durable");
            store.committed(height, &committed.block.payload, height);
            blocks.push(batches);
        }
        // Window of 2 blocks: the batches of blocks 1..=3 left memory.
        let wanted = blocks[1][2].clone();
        let digest = wanted.digest();
        assert!(store.get(&digest).is_none());
        assert_eq!(store.locate(&digest), Located::Log(2));

        let bytes = log.read(2).expect("read");
        let frame = record_batch_frame(&bytes, chain, &digest)
            .expect("record decodes")
            .expect("block 2 orders it");
        // Byte for byte what a node holding the batch in memory sends.
        let mut expected =
            frame::encode_header(PEER_KIND_BATCH, wanted.peer_encoded_len()).to_vec();
        wanted.encode_peer_into(chain, &digest, &mut expected);
        assert_eq!(&frame[..], &expected[..]);
        let (decoded, used) = decode(&frame, FRAME_PAYLOAD_BYTES_MAX).expect("frame");
        assert_eq!(used, frame.len());
        assert_eq!(decoded.kind, PEER_KIND_BATCH);
        let (got_digest, got) = Batch::decode_peer(&decoded.payload, chain).expect("batch");
        assert_eq!((got_digest, &got), (digest, &*wanted));
        // Execute's own read-back (a batch ordered again) gives the same batch.
        assert_eq!(log_batch(&log, 2, &digest), Ok(Some((*wanted).clone())));
        // A digest the block does not order: nothing; a damaged record: an error, no panic.
        assert_eq!(record_batch_frame(&bytes, chain, &[7; 32]), Ok(None));
        for cut in 0..bytes.len() {
            let _ = record_batch_frame(&bytes[..cut], chain, &digest);
        }
        assert!(record_batch_frame(&bytes[..bytes.len() - 1], chain, &digest).is_err());

        // A peer syncing from below consensus' window gets the log's blocks with their QCs.
        let response = log_sync_response(&log, 2);
        let heights: Vec<u64> = response.blocks.iter().map(|b| b.height).collect();
        assert_eq!(heights, vec![2, 3, 4, 5]);
        let block_5 = decode_record_block(&log.read(5).expect("read"))
            .expect("decodes")
            .0;
        assert_eq!(response.last_qc, Some(block_5.qc));
        assert_eq!(response.blocks[3], block_5.block);
        assert!(log_sync_response(&log, 6).blocks.is_empty(), "past the log");
        assert_eq!(
            log_sync_response(&log, 0).blocks.len(),
            5,
            "height 0 starts at 1"
        );
    }
}
