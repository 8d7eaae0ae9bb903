//! Execute: owns the `Ledger` and the `BlockLog`. For each committed block it resolves the batch
//! digests, applies every request with the block's timestamp, appends one log record (the block,
//! its commit QC and the full signed requests, so the log alone re-executes and audits), takes a
//! snapshot every K blocks, and hands the durability ticket and the replies to the reply stage.
//! Queries are answered here, between blocks, from committed state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{select, Receiver, Sender, TrySendError};

use crate::codec::encode_reply;
use crate::consensus::CommittedBlock;
use crate::crypto::REQUEST_HEADER_BYTES;
use crate::exec::{execute, request_timestamp_ns, ExecRequest};
use crate::ledger::Ledger;
use crate::mempool::RequestKey;
use crate::storage::{BlockLog, Ticket};
use crate::types::EVENT_BYTES;

use super::batches::{Batch, BatchStore};
use super::dissemination::DisseminationIn;
use super::ingress::{reject, VerifyJob};
use super::protocol::{Outcome, RejectCode, Rejected, KIND_QUERY_RESULT};
use super::state::Shared;

/// Capacity of the queue from execute to reply, in blocks.
pub const REPLY_QUEUE_BLOCKS_MAX: usize = 1024;
/// How long execute waits for a missing batch before asking peers again.
pub const BATCH_FETCH_RETRY_MS: u64 = 500;

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
    pub ticket: Option<Ticket>,
    pub items: Vec<Executed>,
}

/// Log record: `committed_len u32 | CommittedBlock | batch_count u32 | batches`.
pub fn encode_record(committed: &CommittedBlock, batches: &[Arc<Batch>]) -> Vec<u8> {
    let block = committed.encode();
    let batches_len: usize = batches.iter().map(|b| b.encoded_len()).sum();
    let mut out = Vec::with_capacity(block.len() + 8 + batches_len);
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for batch in batches {
        batch.encode_into(&mut out);
    }
    out
}

/// The record's block alone (its batches are not decoded); returns it and where the batches start.
pub fn decode_record_block(bytes: &[u8]) -> Result<(CommittedBlock, usize), String> {
    let len = bytes.get(..4).ok_or("record truncated")?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let block = bytes.get(4..4 + len).ok_or("record block truncated")?;
    let committed = CommittedBlock::decode(block).map_err(|e| format!("block: {e:?}"))?;
    Ok((committed, 4 + len))
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
    pub commits: Receiver<Vec<CommittedBlock>>,
    pub queries: Receiver<VerifyJob>,
    pub store: Arc<BatchStore>,
    pub dissemination: Sender<DisseminationIn>,
    pub reply: Sender<ExecutedBlock>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

impl Execute {
    /// Runs until consensus is gone or the node stops, then flushes the log.
    pub fn run(mut self) {
        self.serve();
        match self.log.wait_durable() {
            Ok(height) => tracing::info!(?height, "block log flushed"),
            Err(error) => tracing::error!(%error, "block log flush failed"),
        }
    }

    fn serve(&mut self) {
        loop {
            select! {
                recv(self.commits) -> blocks => match blocks {
                    Ok(blocks) => {
                        for committed in blocks {
                            if !self.execute_block(committed) {
                                return;
                            }
                        }
                    }
                    Err(_) => return,
                },
                recv(self.queries) -> job => match job {
                    Ok(job) => self.answer_query(job),
                    Err(_) => return,
                },
                default(Duration::from_millis(100)) => {
                    if self.stop.load(Ordering::Acquire) && self.commits.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// Waits for every batch of the block (asking peers while any is missing).
    fn resolve(&self, committed: &CommittedBlock) -> Option<Vec<Arc<Batch>>> {
        let payload = &committed.block.payload;
        loop {
            let missing = self
                .store
                .wait_for(payload, Duration::from_millis(BATCH_FETCH_RETRY_MS));
            if missing.is_empty() {
                break;
            }
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            tracing::info!(
                height = committed.height,
                missing = missing.len(),
                "fetching batches of a committed block"
            );
            let fetch = DisseminationIn::Fetch {
                digests: missing,
                from: None,
            };
            if let Err(TrySendError::Disconnected(_)) = self.dissemination.try_send(fetch) {
                return None;
            }
        }
        payload.iter().map(|d| self.store.get(d)).collect()
    }

    fn execute_block(&mut self, committed: CommittedBlock) -> bool {
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
        let started = Instant::now();
        let items = apply_block(&mut self.ledger, &committed, &batches);
        let record = encode_record(&committed, &batches);
        let parent = self.log.last().map(|(_, hash)| hash).unwrap_or([0; 32]);
        let ticket = match self.log.append(committed.height, &parent, &record) {
            Ok(ticket) => Some(ticket),
            Err(error) => {
                tracing::error!(height = committed.height, %error, "block log append failed; stopping");
                self.stop.store(true, Ordering::Release);
                None
            }
        };
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
        self.shared
            .metrics
            .stage_latency_s
            .with_label_values(&["execute"])
            .observe(started.elapsed().as_secs_f64());
        self.maybe_snapshot(committed.height, ticket.as_ref());
        let ok = ticket.is_some();
        let block = ExecutedBlock {
            height: committed.height,
            committed_at,
            ticket,
            items,
        };
        self.reply.send(block).is_ok() && ok
    }

    fn maybe_snapshot(&self, height: u64, ticket: Option<&Ticket>) {
        let Some(ticket) = ticket else { return };
        if !self.log.snapshot_due(height) || ticket.wait().is_err() {
            return;
        }
        let mut digest = [0u8; 32];
        digest[..16].copy_from_slice(&self.ledger.digest().to_le_bytes());
        match self
            .log
            .write_snapshot(height, digest, &self.ledger.snapshot_bytes())
        {
            Ok(()) => tracing::info!(height, "ledger snapshot written"),
            Err(error) => tracing::warn!(height, %error, "ledger snapshot failed"),
        }
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
