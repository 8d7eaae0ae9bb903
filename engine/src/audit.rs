//! `audit`: the offline auditor of a node's data directory (`reckon audit`).
//!
//! It reads the block log without writing anything (`storage::LogReader`) and checks, in height
//! order, for every record:
//! 1. storage: the segment header, the frame's xxh3-128 checksum and the BLAKE3 hash chain of
//!    frames (each names its predecessor's block hash) — `storage::LogReader::walk`;
//! 2. the record decodes (`node::execute::decode_record`) and its batches are the ones the block
//!    orders (batch digests equal the block's payload);
//! 3. consensus: the block extends the previous one and its commit QC certifies it with a quorum
//!    of the genesis validators, every signer's Ed25519 signature checked — `consensus::audit::audit_chain`;
//! 4. every request's BLS signature against the genesis institution registry (batched);
//! 5. re-execution: the block's requests through the real ledger from the genesis ledger
//!    (`node::execute::apply_block`, i.e. `exec`), and at every snapshot height the re-executed
//!    ledger digest and state must equal the snapshot's. Log records do not carry a ledger digest
//!    of their own; snapshots (every `storage.snapshot_every_blocks` blocks, the newest
//!    `SNAPSHOTS_KEPT` kept) are what the node recorded about its ledger.
//!
//! Checks 2-4 need no ledger state: they run for a window of up to `WINDOW_BLOCKS_MAX` blocks
//! (`WINDOW_BYTES_MAX` bytes) at a time on all cores (`audit/window.rs`); the window is then walked
//! in height order, so the fault named is always the first one.
//!
//! *Invariant:* read-only (a shared lock on the log keeps a node out meanwhile); the first fault
//! ends the audit and names its height, segment and offset; corrupt input is an `AuditFault`,
//! never a panic.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use self::window::{precheck, Checked, Pending, WINDOW_BLOCKS_MAX, WINDOW_BYTES_MAX};
use crate::codec::decode_results;
use crate::consensus::audit::audit_chain;
use crate::consensus::validator_crypto::{ValidatorCrypto, VerifyCache};
use crate::consensus::{genesis_block, genesis_qc, CommittedBlock, Config};
use crate::crypto::{BatchVerifier, ValidatorSet};
use crate::ledger::Ledger;
use crate::node::execute::{apply_block, decode_record};
use crate::node::genesis::{hex_encode, Genesis, GenesisError};
use crate::storage::{
    Cipher, EncryptionConfig, LogReader, SnapshotStore, StorageError, StoredRecord, WalkError,
};
use crate::types::Operation;

/// What to audit.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// A node's `data_dir` (its `log/` is audited) or a log directory itself.
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    /// The node's `files.storage_key`, when its log is encrypted.
    pub storage_key: Option<PathBuf>,
    /// Verify every request's signature (on by default; the costliest check).
    pub verify_requests: bool,
}

/// Why an audit could not run at all (distinct from a fault found in the data).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error("log directory {}: {source}", .path.display())]
    Log { path: PathBuf, source: StorageError },
    #[error("log directory {} is held by a running node (or another process): stop the node, or audit a copy of its data directory", .path.display())]
    Locked { path: PathBuf },
    #[error("genesis validators: {0}")]
    Validators(String),
}

/// What the audit covered (complete when there is no fault, up to the fault otherwise).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AuditReport {
    pub log_dir: PathBuf,
    pub genesis_hash: String,
    pub validators: usize,
    pub segments: usize,
    pub blocks: u64,
    pub first_height: Option<u64>,
    /// The last height that passed every check.
    pub last_height: u64,
    pub frame_bytes: u64,
    pub qcs_verified: u64,
    pub batches: u64,
    pub requests: u64,
    pub request_signatures_verified: u64,
    /// Requests the ledger refused as a whole (committed, `request_refused`).
    pub requests_refused: u64,
    /// Events with a non-ok result code (rejected by the ledger, or a warning).
    pub events_not_ok: u64,
    /// Snapshot heights whose digest and state matched re-execution.
    pub snapshots_matched: Vec<u64>,
    pub genesis_digest: String,
    /// The re-executed ledger digest at `last_height`.
    pub ledger_digest: String,
    pub temp_files: Vec<PathBuf>,
    pub elapsed_ms: u64,
}

/// The report and the first fault, if any.
#[derive(Clone, Debug)]
pub struct AuditOutcome {
    pub report: AuditReport,
    pub fault: Option<AuditFault>,
}

impl AuditOutcome {
    pub fn clean(&self) -> bool {
        self.fault.is_none()
    }
}

/// The log directory of a data directory: `DIR/log` when it exists, else `DIR` itself.
pub fn log_dir_of(data_dir: &Path) -> PathBuf {
    let log = data_dir.join("log");
    if log.is_dir() {
        log
    } else {
        data_dir.to_path_buf()
    }
}

/// The 128-bit ledger digest as a node reports it (`ledger_digest` in status).
pub fn digest_hex(digest: u128) -> String {
    format!("{digest:032x}")
}

/// Everything the per-record checks need.
struct Auditor {
    crypto: ValidatorCrypto,
    /// The same validator set, shareable across the verify threads.
    set: Arc<ValidatorSet>,
    config: Config,
    verifier: Option<BatchVerifier>,
    snapshots: SnapshotStore,
    /// Snapshot heights not reached yet, ascending.
    snapshot_heights: Vec<u64>,
    ledger: Ledger,
    previous: CommittedBlock,
    report: AuditReport,
    /// Decoded blocks waiting for the window's parallel checks.
    window: Vec<Pending>,
    window_bytes: usize,
}

impl Auditor {
    /// Decodes a record into the window; checks the window when it is full.
    fn record(&mut self, r: StoredRecord<'_>) -> Result<(), AuditFault> {
        let at = Location {
            height: r.height,
            segment: r.segment,
            offset: r.offset,
        };
        if self.report.blocks == 0 && self.window.is_empty() && r.height != 1 {
            return Err(AuditFault::LogStart { first: r.height });
        }
        let decoded = decode_record(&r.payload).and_then(|(committed, batches)| {
            if committed.height == r.height {
                Ok((committed, batches))
            } else {
                Err(format!(
                    "block of height {} stored at height {}",
                    committed.height, r.height
                ))
            }
        });
        let (committed, batches) = match decoded {
            Ok(decoded) => decoded,
            Err(reason) => {
                // Faults are named in height order: everything before this record first.
                self.flush()?;
                return Err(AuditFault::Record { at, reason });
            }
        };
        self.window.push(Pending {
            at,
            committed,
            batches,
        });
        self.window_bytes += r.payload.len();
        if self.window.len() >= WINDOW_BLOCKS_MAX || self.window_bytes >= WINDOW_BYTES_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Checks the window: the state-free checks on all cores, then in height order the chain,
    /// the verdicts, re-execution and snapshots.
    fn flush(&mut self) -> Result<(), AuditFault> {
        let window = std::mem::take(&mut self.window);
        self.window_bytes = 0;
        if window.is_empty() {
            return Ok(());
        }
        let chain = self.config.chain_id;
        let checked = precheck(&window, &self.set, chain, self.verifier.as_ref());
        for (p, c) in window.into_iter().zip(checked) {
            let at = p.at;
            if let Some(batch) = c.bad_batch {
                return Err(AuditFault::BatchDigest { at, batch });
            }
            let crypto = Checked {
                inner: &self.crypto,
                known: &c.qc,
            };
            audit_chain(
                &crypto,
                &self.config,
                &self.previous,
                std::slice::from_ref(&p.committed),
            )
            .map_err(|source| AuditFault::Chain { at, source })?;
            self.report.qcs_verified += 1;
            if let Some(fault) = c.request_fault {
                return Err(fault);
            }
            self.report.request_signatures_verified += c.signatures_verified;
            self.execute(p)?;
        }
        Ok(())
    }

    /// Re-executes one checked block and compares with a snapshot at its height.
    fn execute(&mut self, p: Pending) -> Result<(), AuditFault> {
        let height = p.at.height;
        let items = apply_block(&mut self.ledger, &p.committed, &p.batches);
        for item in &items {
            match &item.result {
                Ok(outcome) => {
                    let op = Operation::from_u8(outcome.operation);
                    if op.is_some_and(|op| !op.is_query()) {
                        let results = decode_results(&outcome.reply).unwrap_or_default();
                        let not_ok = results.iter().filter(|e| !e.code.is_ok()).count();
                        self.report.events_not_ok += not_ok as u64;
                    }
                }
                Err(_) => self.report.requests_refused += 1,
            }
        }
        self.report.batches += p.batches.len() as u64;
        self.report.requests += items.len() as u64;
        self.report.blocks += 1;
        self.report.last_height = height;
        if self.report.first_height.is_none() {
            self.report.first_height = Some(height);
        }
        self.previous = p.committed;
        self.check_snapshot(height)
    }

    fn check_snapshot(&mut self, height: u64) -> Result<(), AuditFault> {
        if self.snapshot_heights.first() != Some(&height) {
            return Ok(());
        }
        self.snapshot_heights.remove(0);
        let path = self.snapshots.path(height);
        let snapshot = self
            .snapshots
            .load(height)
            .map_err(|e| AuditFault::Snapshot {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let computed = self.ledger.digest();
        let mut expected = [0u8; 32];
        expected[..16].copy_from_slice(&computed.to_le_bytes());
        if snapshot.digest != expected {
            let mut recorded = [0u8; 16];
            recorded.copy_from_slice(&snapshot.digest[..16]);
            let tail_zero = snapshot.digest[16..].iter().all(|b| *b == 0);
            let recorded = if tail_zero {
                digest_hex(u128::from_le_bytes(recorded))
            } else {
                hex_encode(&snapshot.digest)
            };
            return Err(AuditFault::LedgerDigest {
                height,
                snapshot: path,
                recorded,
                computed: digest_hex(computed),
            });
        }
        if snapshot.bytes != self.ledger.snapshot_bytes() {
            return Err(AuditFault::LedgerState {
                height,
                snapshot: path,
            });
        }
        self.report.snapshots_matched.push(height);
        Ok(())
    }
}

/// Runs the audit. `Err` only when it cannot start (genesis, directory, lock, key); faults in the
/// data are in `AuditOutcome::fault`.
pub fn audit(options: &AuditOptions) -> Result<AuditOutcome, AuditError> {
    let started = Instant::now();
    let genesis = Genesis::load(&options.genesis)?;
    let g = &genesis.genesis;
    let keys = g.validator_keys()?;
    let shared_set = ValidatorSet::new(keys).map_err(|e| AuditError::Validators(e.to_string()))?;
    let validators = shared_set.len();
    let crypto = ValidatorCrypto::new(None, Rc::new(shared_set.clone()), VerifyCache::shared());
    let config = Config::new(genesis.consensus_chain_id(), validators, 0);
    let verifier = if options.verify_requests {
        Some(BatchVerifier::new(Arc::new(g.registry()?), g.chain_id))
    } else {
        None
    };
    let ledger = g.ledger()?;
    let log_dir = log_dir_of(&options.data_dir);
    let log_err = |source| AuditError::Log {
        path: log_dir.clone(),
        source,
    };
    let encryption = options
        .storage_key
        .as_ref()
        .map(|key_file| EncryptionConfig {
            key_file: key_file.clone(),
            cipher: Cipher::XChaCha20Poly1305,
        });
    let reader = LogReader::open(&log_dir, encryption.as_ref()).map_err(|e| match e {
        StorageError::Locked { path } => AuditError::Locked { path },
        other => log_err(other),
    })?;
    let snapshots = SnapshotStore::open(&log_dir).map_err(log_err)?;
    let mut snapshot_heights = snapshots.heights().map_err(log_err)?;
    snapshot_heights.sort_unstable();
    let report = AuditReport {
        log_dir: log_dir.clone(),
        genesis_hash: hex_encode(&genesis.hash),
        validators,
        genesis_digest: digest_hex(ledger.digest()),
        ledger_digest: digest_hex(ledger.digest()),
        temp_files: reader.temp_files.clone(),
        ..AuditReport::default()
    };
    let mut auditor = Auditor {
        crypto,
        set: Arc::new(shared_set),
        config,
        verifier,
        snapshots,
        snapshot_heights,
        ledger,
        previous: CommittedBlock {
            height: 0,
            block: genesis_block(),
            qc: genesis_qc(),
        },
        report,
        window: Vec::new(),
        window_bytes: 0,
    };
    let walked = reader.walk(|record| {
        let frame_bytes = record.frame_bytes;
        auditor.record(record)?;
        auditor.report.frame_bytes += frame_bytes;
        Ok(())
    });
    // The blocks still in the window precede whatever stopped the walk.
    let mut fault = match walked {
        Ok(_) => auditor.flush().err(),
        Err(WalkError::Fault(f)) => Some(auditor.flush().err().unwrap_or(AuditFault::Storage(f))),
        Err(WalkError::Visit(f)) => Some(f),
    };
    if fault.is_none() {
        if let Some(&height) = auditor.snapshot_heights.first() {
            fault = Some(AuditFault::SnapshotBeyondLog {
                height,
                last: auditor.report.last_height,
            });
        }
    }
    let mut report = auditor.report;
    report.segments = reader.segment_count();
    report.ledger_digest = digest_hex(auditor.ledger.digest());
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(AuditOutcome { report, fault })
}

mod fault;
mod window;
pub use fault::{AuditFault, Location};

#[cfg(test)]
mod tests;
