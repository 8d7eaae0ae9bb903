//! MemBlockStore: the simulator's store. Seeded crashes and torn writes never lose a synced block,
//! recovery truncates torn tails, and the same seed gives the same result.

use engine::storage::{BlockHash, BlockStore, MemBlockStore, StorageError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn body(height: u64, round: u64, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = rng.gen_range(0..3000);
    (0..len)
        .map(|i| (height as usize * 31 + i + round as usize) as u8)
        .collect()
}

/// Runs `rounds` of random appends, syncs and crashes; returns the final (last height, hash).
fn simulate(seed: u64, rounds: u64) -> Option<(u64, BlockHash)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut store = MemBlockStore::default();
    let mut synced: Vec<(u64, BlockHash)> = Vec::new();
    for round in 0..rounds {
        for _ in 0..rng.gen_range(1..20) {
            let (height, parent) = store.last().map_or((1, [0; 32]), |(h, hash)| (h + 1, hash));
            let hash = store
                .append(height, &parent, &body(height, round, &mut rng))
                .expect("append");
            if rng.gen_bool(0.2) {
                let durable = store.sync().expect("sync");
                assert_eq!(durable, Some(height));
                synced.push((height, hash));
            }
        }
        let report = match rng.gen_range(0..3) {
            0 => store.crash().expect("crash"),
            1 => store.crash_torn(&mut rng, 16).expect("torn crash"),
            _ => continue,
        };
        if let Some(dropped) = &report.dropped {
            assert!(
                dropped.height_first > synced.last().map_or(0, |s| s.0),
                "dropped a synced block"
            );
        }
        let last = store.last().map_or(0, |l| l.0);
        for (h, _) in &synced {
            assert!(*h <= last, "seed {seed}: synced height {h} lost");
            assert!(store.read(*h).is_ok());
        }
        assert_eq!(store.durable_height(), store.last().map(|l| l.0));
        assert_eq!(store.unsynced_bytes(), 0);
    }
    store.last()
}

#[test]
fn seeded_crashes_never_lose_synced_blocks_and_are_deterministic() {
    for seed in 0..40 {
        let a = simulate(seed, 60);
        assert_eq!(a, simulate(seed, 60), "seed {seed} is not deterministic");
    }
}

#[test]
fn torn_last_frame_is_truncated_and_reported() {
    let mut store = MemBlockStore::default();
    let h1 = store.append(1, &[0; 32], b"one").expect("append");
    store.sync().expect("sync");
    let h2 = store.append(2, &h1, &[7u8; 500]).expect("append");
    assert!(store.read(2).is_err(), "not durable yet");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let report = loop {
        let report = store.crash_torn(&mut rng, 0).expect("recover");
        if report.dropped.is_some() {
            break report;
        }
        store.append(2, &h1, &[7u8; 500]).expect("append again");
    };
    let dropped = report.dropped.expect("torn");
    assert_eq!(
        (dropped.offset, dropped.height_first),
        (store.frame_offset(1).map_or(0, |o| o as u64) + 88, 2)
    );
    assert_eq!(store.last(), Some((1, h1)));
    assert_eq!(store.append(2, &h1, &[7u8; 500]).expect("rewrite"), h2);
}

#[test]
fn damage_in_the_unsynced_batch_truncates_but_in_a_synced_one_refuses() {
    let mut store = MemBlockStore::default();
    let mut parent = [0; 32];
    for h in 1..=10 {
        parent = store.append(h, &parent, &[h as u8; 100]).expect("append");
    }
    store.sync().expect("sync");
    for h in 11..=15 {
        parent = store.append(h, &parent, &[h as u8; 100]).expect("append");
    }
    // Frame 12 is damaged but 13..15 of the same (unsynced) group commit are intact: torn tail.
    store.flip_byte(store.frame_offset(12).expect("offset") + 90);
    let report = store.recover().expect("torn batch is truncated");
    let dropped = report.dropped.expect("reported");
    assert_eq!(
        (dropped.height_first, dropped.height_last_seen),
        (12, Some(15))
    );
    assert_eq!(store.last().map(|l| l.0), Some(11));
    // Block 5 was synced and block 11 (a later group commit) is intact: refuse.
    store.flip_byte(store.frame_offset(5).expect("offset") + 90);
    let err = store.recover().expect_err("acknowledged block damaged");
    assert!(
        matches!(err, StorageError::MidLogCorruption { height: 5, .. }),
        "{err:?}"
    );
}
