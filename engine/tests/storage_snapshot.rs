//! Snapshots: snapshot + tail replay equals full replay (with a stand-in state machine), corrupt
//! newest snapshot falls back, only two are kept; atomic small-file writes.

mod storage_common;

use engine::storage::{
    write_file_atomic, write_file_atomic_parts, BlockLog, SnapshotStore, WriteBackend,
    ATOMIC_WRITE_SYNC_BYTES, SNAPSHOTS_KEPT,
};
use storage_common::*;

/// Stand-in ledger: a running BLAKE3 over every payload applied, plus a count.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StandIn {
    digest: [u8; 32],
    applied: u64,
}

impl StandIn {
    fn new() -> StandIn {
        StandIn {
            digest: [0; 32],
            applied: 0,
        }
    }
    fn apply(&mut self, payload: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(&self.digest);
        h.update(payload);
        self.digest = *h.finalize().as_bytes();
        self.applied += 1;
    }
    fn encode(&self) -> Vec<u8> {
        [&self.digest[..], &self.applied.to_le_bytes()].concat()
    }
    fn decode(bytes: &[u8]) -> StandIn {
        StandIn {
            digest: bytes[..32].try_into().expect("32"),
            applied: u64::from_le_bytes(bytes[32..40].try_into().expect("8")),
        }
    }
}

#[test]
fn snapshot_plus_tail_replay_equals_full_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(WriteBackend::Auto);
    cfg.snapshot_every_blocks = 25;
    let mut log = BlockLog::open(dir.path(), cfg.clone()).expect("open");
    let mut state = StandIn::new();
    let mut parent = [0; 32];
    for h in 1..=110u64 {
        let body = payload(h, 0, 5_000 + h as usize);
        let ticket = log.append(h, &parent, &body).expect("append");
        parent = ticket.hash();
        state.apply(&body);
        if log.snapshot_due(h) {
            ticket.wait().expect("snapshot only covers durable blocks");
            log.write_snapshot(h, state.digest, &state.encode())
                .expect("snapshot");
        }
    }
    log.wait_durable().expect("durable");
    drop(log);

    let log = BlockLog::open(dir.path(), cfg).expect("restart");
    let snap = log
        .load_latest_snapshot()
        .expect("load")
        .expect("a snapshot");
    assert_eq!(snap.height, 100);
    let mut restored = StandIn::decode(&snap.bytes);
    assert_eq!(restored.digest, snap.digest);
    let last = log.last().expect("last").0;
    let mut replayed = 0;
    for item in log.iter(snap.height + 1..=last) {
        restored.apply(&item.expect("read").1);
        replayed += 1;
    }
    assert_eq!(replayed, 10, "only the tail is replayed");
    let mut full = StandIn::new();
    for item in log.iter(1..=last) {
        full.apply(&item.expect("read").1);
    }
    assert_eq!(restored, full);
    assert_eq!(full, state);
    let store = SnapshotStore::open(dir.path()).expect("store");
    assert_eq!(store.heights().expect("ls"), vec![100, 75]);
    assert_eq!(SNAPSHOTS_KEPT, 2);
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("store");
    assert_eq!(store.load_latest().expect("load"), None);
    store.write(10, [1; 32], b"state at ten").expect("write");
    store.write(20, [2; 32], b"state at twenty").expect("write");
    let newest = dir.path().join(format!("snap-{:020}.snap", 20));
    flip_byte(&newest, 85);
    let snap = store.load_latest().expect("load").expect("fallback");
    assert_eq!(
        (snap.height, snap.digest, snap.bytes.as_slice()),
        (10, [1; 32], &b"state at ten"[..])
    );
    std::fs::write(&newest, b"tiny").expect("truncate");
    assert_eq!(
        store.load_latest().expect("load").map(|s| s.height),
        Some(10)
    );
}

#[test]
fn atomic_file_write_replaces_whole_and_leftover_temps_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file_atomic(dir.path(), "safety", b"round 1").expect("write");
    write_file_atomic(dir.path(), "safety", b"round 2, locked qc").expect("overwrite");
    assert_eq!(
        std::fs::read(dir.path().join("safety")).expect("read"),
        b"round 2, locked qc"
    );
    std::fs::write(dir.path().join("safety.tmp"), b"half-written").expect("simulate crash");
    let log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    assert_eq!(log.recovery_report().temp_files_removed.len(), 1);
    assert!(!dir.path().join("safety.tmp").exists());
    assert_eq!(
        std::fs::read(dir.path().join("safety")).expect("read"),
        b"round 2, locked qc"
    );
}

/// A file larger than `ATOMIC_WRITE_SYNC_BYTES`, in parts whose boundaries fall inside the sync
/// chunks, is written whole and in order (it is made durable chunk by chunk as it goes).
#[test]
fn a_large_snapshot_written_in_synced_chunks_reads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("store");
    let len = 2 * ATOMIC_WRITE_SYNC_BYTES + 12_345;
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    store.write(7, [3; 32], &body).expect("write");
    let snap = store.load(7).expect("load");
    assert_eq!((snap.height, snap.digest), (7, [3; 32]));
    assert!(snap.bytes == body, "the body reads back byte for byte");
    let parts = [
        &body[..1000],
        &body[1000..ATOMIC_WRITE_SYNC_BYTES + 5],
        &body[ATOMIC_WRITE_SYNC_BYTES + 5..],
    ];
    write_file_atomic_parts(dir.path(), "parts", &parts).expect("parts");
    assert!(std::fs::read(dir.path().join("parts")).expect("read") == body);
}

/// A paced write takes at least its bytes over the rate (and writes the same file).
#[test]
fn a_paced_snapshot_write_keeps_to_its_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("store");
    let body = vec![9u8; 3 * ATOMIC_WRITE_SYNC_BYTES];
    let rate = (ATOMIC_WRITE_SYNC_BYTES * 20) as u64; // 3 chunks: at least 0.1 s after the 2nd
    let started = std::time::Instant::now();
    store
        .write_paced(1, [0; 32], &body, Some(rate))
        .expect("write");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(100),
        "{elapsed:?}"
    );
    assert!(store.load(1).expect("load").bytes == body);
}
