//! Restart: rebuild the ledger from the newest snapshot plus the log's tail, and the consensus
//! `Recovered` input from the safety file, the persisted blocks and the log's last block, and the
//! batch store's index of committed batch digests (fetches of them are served from the log).

use std::path::Path;

use crate::consensus::{
    genesis_block, genesis_qc, CommittedBlock, Recovered, COMMITTED_WINDOW_MAX,
};
use crate::ledger::Ledger;
use crate::mempool::RequestKey;
use crate::storage::BlockLog;

use super::batches::BatchStore;
use super::config::LedgerSection;
use super::consensus_stage::ConsensusJournal;
use super::execute::{apply_block, decode_record, decode_record_block};
use super::genesis::Genesis;
use super::state::Shared;

/// What a node starts from.
pub struct Restored {
    pub ledger: Ledger,
    pub executed_height: u64,
    pub consensus: Option<Recovered>,
    /// The opened consensus journal, handed to the consensus stage.
    pub journal: Option<ConsensusJournal>,
}

fn read_record(
    log: &BlockLog,
    height: u64,
) -> Result<(CommittedBlock, Vec<super::batches::Batch>), String> {
    let bytes = log
        .read(height)
        .map_err(|e| format!("log height {height}: {e}"))?;
    decode_record(&bytes).map_err(|e| format!("log height {height}: {e}"))
}

/// The committed blocks below the log's last one that refill consensus' sync window (the newest
/// `window - 1`, `window` at most `COMMITTED_WINDOW_MAX`); only each record's block is decoded,
/// not its batches.
fn committed_history(
    log: &BlockLog,
    last: u64,
    window: usize,
) -> Result<Vec<CommittedBlock>, String> {
    let window = window.clamp(1, COMMITTED_WINDOW_MAX) as u64;
    let first = log.first_height().unwrap_or(1).max(1);
    let from = first.max(last.saturating_sub(window - 1));
    let mut history = Vec::new();
    for height in from..last {
        let bytes = log
            .read(height)
            .map_err(|e| format!("log height {height}: {e}"))?;
        let (committed, _) =
            decode_record_block(&bytes).map_err(|e| format!("log height {height}: {e}"))?;
        history.push(committed);
    }
    Ok(history)
}

/// Most blocks before the snapshot read back to refill the committed-id table after a restart.
pub const RESTORE_ID_SCAN_BLOCKS_MAX: u64 = 20_000;

/// Refills the committed-id table from blocks at or below the snapshot height (newest
/// `RESTORE_ID_SCAN_BLOCKS_MAX`), so `request_replayed` answers survive a restart.
fn remember_committed(log: &BlockLog, snapshot_height: u64, shared: &Shared) -> Result<(), String> {
    let Some(first) = log.first_height() else {
        return Ok(());
    };
    let from = first
        .max(snapshot_height.saturating_sub(RESTORE_ID_SCAN_BLOCKS_MAX - 1))
        .max(1);
    for height in from..=snapshot_height {
        let (_, batches) = read_record(log, height)?;
        for request in batches.iter().flat_map(|b| b.requests.iter()) {
            if let Ok(signed) = request.digested() {
                let key = RequestKey {
                    institution: signed.view().institution(),
                    request_id: signed.view().request_id(),
                };
                shared.record_committed(key, height, signed.digest());
            }
        }
    }
    Ok(())
}

/// Loads the newest usable snapshot, replays the log tail after it, restores the batch store
/// and the committed-id table from the tail, and assembles the consensus recovery input with the
/// newest `committed_window` committed blocks (`consensus.committed_window_blocks`).
pub fn restore(
    log: &BlockLog,
    genesis: &Genesis,
    consensus_dir: &Path,
    capacity: &LedgerSection,
    committed_window: usize,
    shared: &Shared,
    store: &BatchStore,
) -> Result<Restored, String> {
    let last = log.last().map(|(height, _)| height).unwrap_or(0);
    let snapshot = log
        .load_latest_snapshot()
        .map_err(|e| format!("snapshot: {e}"))?;
    let (mut ledger, start) = match snapshot {
        Some(s) if s.height <= last => {
            let ledger = Ledger::from_snapshot_bytes(&s.bytes)
                .map_err(|e| format!("snapshot at {}: {e}", s.height))?;
            (ledger, s.height)
        }
        _ => (genesis.ledger().map_err(|e| e.to_string())?, 0),
    };
    ledger.reserve(capacity.accounts_capacity, capacity.transfers_capacity);
    if capacity.prefault {
        let started = std::time::Instant::now();
        let bytes = ledger.prefault();
        tracing::info!(
            mib = bytes >> 20,
            ms = started.elapsed().as_millis() as u64,
            "ledger tables faulted in"
        );
    }
    let first = log.first_height().unwrap_or(1);
    if last > 0 && first > start + 1 {
        return Err(format!(
            "log starts at height {first} but the ledger state is at {start}"
        ));
    }
    remember_committed(log, start, shared)?;
    let mut tip = None;
    for height in (start + 1)..=last {
        let (committed, batches) = read_record(log, height)?;
        let items = apply_block(&mut ledger, &committed, &batches);
        for item in items {
            shared.record_committed(item.key, height, item.digest);
        }
        tip = Some(committed);
    }
    if tip.is_none() && last > 0 {
        tip = Some(read_record(log, last)?.0);
    }
    tracing::info!(snapshot_height = start, replayed = last - start, height = last, digest = %format!("{:032x}", ledger.digest()), "ledger restored");
    // The committed batches stay in the log, not in memory: the store indexes the digests of
    // the sync window's blocks so peers' fetches of them are served from the log.
    let history = committed_history(log, last, committed_window)?;
    for committed in history.iter().chain(&tip) {
        store.committed(committed.height, &committed.block.payload, last);
    }
    let (journal, persisted) = ConsensusJournal::open(consensus_dir)?;
    let (safety, blocks) = (persisted.safety, persisted.blocks);
    let consensus = if safety.is_none() && tip.is_none() {
        None
    } else {
        Some(Recovered {
            safety: safety.unwrap_or_default(),
            tip: tip.unwrap_or_else(|| CommittedBlock {
                height: 0,
                block: genesis_block(),
                qc: genesis_qc(),
            }),
            history,
            blocks,
        })
    };
    Ok(Restored {
        ledger,
        executed_height: last,
        consensus,
        journal: Some(journal),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LogConfig, WriteBackend};

    fn log_of(dir: &Path, blocks: u64) -> BlockLog {
        let mut config = LogConfig::for_tests(64 << 10);
        config.write_backend = WriteBackend::Pwrite;
        config.direct_io = false;
        let mut log = BlockLog::open(dir, config).expect("open log");
        let mut parent = [0u8; 32];
        for height in 1..=blocks {
            let committed = super::super::execute::tests::committed(height, &[]);
            let record = super::super::execute::encode_record(&committed, &[]);
            let ticket = log.append(height, &parent, &record).expect("append");
            parent = ticket.hash();
            ticket.wait().expect("durable");
        }
        log
    }

    /// A restart reads back only the configured window's blocks below the tip (the tip itself is
    /// read apart), not `COMMITTED_WINDOW_MAX` whatever the configuration.
    #[test]
    fn the_restored_history_is_the_configured_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 10);
        let heights = |window| -> Vec<u64> {
            committed_history(&log, 10, window)
                .expect("history")
                .iter()
                .map(|c| c.height)
                .collect()
        };
        assert_eq!(heights(4), vec![7, 8, 9]);
        assert_eq!(heights(1), Vec::<u64>::new());
        assert_eq!(heights(COMMITTED_WINDOW_MAX), (1..10).collect::<Vec<_>>());
        // Out-of-range windows are clamped, not trusted.
        assert_eq!(heights(0), Vec::<u64>::new());
    }
}
