//! Snapshot plus tail replay gives the same *ledger* digest as a full replay, with the real
//! ledger: blocks of create_transfers requests go into the block log, the ledger is snapshotted
//! every K blocks, and a restart restores the newest snapshot and replays only the tail.

mod storage_common;

use engine::exec::execute;
use engine::ledger::Ledger;
use engine::sim::ledger_machine::{decode_batch, make_batch, LedgerMachine};
use engine::storage::{BlockLog, WriteBackend};
use rand::SeedableRng;
use storage_common::config;

/// Block payload: consensus timestamp (ms, u64 LE) then a sim batch of requests.
fn block_payload(timestamp_ms: u64, batch: &[u8]) -> Vec<u8> {
    [&timestamp_ms.to_le_bytes()[..], batch].concat()
}

fn apply_payload(ledger: &mut Ledger, payload: &[u8]) {
    let timestamp_ms = u64::from_le_bytes(payload[..8].try_into().expect("timestamp"));
    for request in decode_batch(&payload[8..]).expect("well-formed batch") {
        // Refusals (overdrafts, `exists`) are part of the deterministic outcome.
        let _ = execute(ledger, timestamp_ms, &request);
    }
}

fn digest32(ledger: &Ledger) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&ledger.digest().to_le_bytes());
    out
}

/// The genesis ledger of the simulated consortium (members and their accounts).
fn genesis() -> Ledger {
    let bytes = LedgerMachine::default().ledger().snapshot_bytes();
    Ledger::from_snapshot_bytes(&bytes).expect("genesis snapshot")
}

#[test]
fn ledger_snapshot_plus_tail_replay_equals_full_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(WriteBackend::Auto);
    cfg.snapshot_every_blocks = 25;
    let mut log = BlockLog::open(dir.path(), cfg.clone()).expect("open");
    let mut ledger = genesis();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut parent = [0; 32];
    for height in 1..=110u64 {
        let payload = block_payload(height * 10, &make_batch(&mut rng, height));
        let ticket = log.append(height, &parent, &payload).expect("append");
        parent = ticket.hash();
        apply_payload(&mut ledger, &payload);
        if log.snapshot_due(height) {
            ticket
                .wait()
                .expect("a snapshot covers only durable blocks");
            log.write_snapshot(height, digest32(&ledger), &ledger.snapshot_bytes())
                .expect("snapshot");
        }
    }
    log.wait_durable().expect("durable");
    let live_digest = ledger.digest();
    assert!(
        ledger.totals().transfers_count > 100,
        "the blocks really moved money"
    );
    drop(log);

    let log = BlockLog::open(dir.path(), cfg).expect("restart");
    let snap = log
        .load_latest_snapshot()
        .expect("load")
        .expect("a snapshot");
    assert_eq!(snap.height, 100);
    let mut restored = Ledger::from_snapshot_bytes(&snap.bytes).expect("snapshot decodes");
    assert_eq!(
        digest32(&restored),
        snap.digest,
        "the snapshot's digest is the ledger's"
    );
    let last = log.last().expect("last").0;
    let mut replayed = 0;
    for item in log.iter(snap.height + 1..=last) {
        apply_payload(&mut restored, &item.expect("read").1);
        replayed += 1;
    }
    assert_eq!(replayed, 10, "only the tail is replayed");

    let mut full = genesis();
    for item in log.iter(1..=last) {
        apply_payload(&mut full, &item.expect("read").1);
    }
    assert_eq!(restored.digest(), full.digest());
    assert_eq!(full.digest(), live_digest);
    assert_eq!(
        restored.snapshot_bytes(),
        full.snapshot_bytes(),
        "identical state, byte for byte"
    );
    let totals = full.totals();
    assert_eq!(
        totals.debits_posted, totals.credits_posted,
        "money is conserved"
    );
}
