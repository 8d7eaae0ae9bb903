//! Block log: round trip, reopen, both write paths, append checks, torn tail and mid-log corruption.

mod storage_common;

use engine::storage::{BlockLog, BlockStore, StorageError, WriteBackend, WritePath};
use storage_common::*;

#[test]
fn round_trip_reopen_and_continue_on_both_write_paths() {
    for backend in [WriteBackend::Auto, WriteBackend::Pwrite] {
        let dir = tempfile::tempdir().expect("tempdir");
        let len = 20_000;
        let mut log = BlockLog::open(dir.path(), config(backend)).expect("open empty");
        let expected_path = if backend == WriteBackend::Pwrite {
            WritePath::Pwrite
        } else {
            WritePath::IoUring
        };
        assert_eq!(log.write_path(), expected_path);
        assert_eq!(log.last(), None);
        let tickets = append_run(&mut log, 1, 200, len, false).expect("append");
        tickets.last().expect("tickets").wait().expect("durable");
        assert!(tickets.iter().all(|t| t.is_durable()));
        assert!(
            log.segment_count() >= 4,
            "200 x 20 KB crosses 1 MiB segments"
        );
        for h in 1..=200 {
            assert_eq!(&*log.read(h).expect("read"), &payload(h, 0, len)[..]);
        }
        let hashes: Vec<_> = (1..=200).map(|h| log.hash_of(h).expect("hash")).collect();
        assert_eq!(hashes[199], tickets[199].hash());
        let count = log
            .iter(50..=150)
            .map(|r| r.expect("iter"))
            .filter(|(h, p)| **p == payload(*h, 0, len)[..])
            .count();
        assert_eq!(count, 101);
        drop(log);

        let mut log = BlockLog::open(dir.path(), config(backend)).expect("reopen");
        assert_eq!(log.recovery_report().dropped, None);
        assert_eq!(log.recovery_report().last_height, Some(200));
        assert_eq!(log.last(), Some((200, hashes[199])));
        assert_eq!(log.first_height(), Some(1));
        for h in 1..=200 {
            assert_eq!(
                &*log.read_verified(h).expect("read"),
                &payload(h, 0, len)[..]
            );
            assert_eq!(log.hash_of(h).expect("hash"), hashes[h as usize - 1]);
        }
        append_run(&mut log, 201, 10, len, true).expect("continue after reopen");
        assert_eq!(BlockStore::sync(&mut log).expect("sync"), Some(210));
        assert!(matches!(
            log.read(211),
            Err(StorageError::NotFound { height: 211 })
        ));
    }
}

#[test]
fn append_checks_height_parent_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    let t = log
        .append(7, &[1; 32], b"first block may start anywhere")
        .expect("append");
    let err = log.append(9, &t.hash(), b"gap").expect_err("gap");
    assert!(matches!(
        err,
        StorageError::HeightNotNext {
            height: 9,
            expected: 8
        }
    ));
    let err = log
        .append(8, &[2; 32], b"wrong parent")
        .expect_err("parent");
    assert!(matches!(err, StorageError::ParentMismatch { height: 8 }));
    let big = vec![0u8; log.config().payload_bytes_max + 1];
    assert!(matches!(
        log.append(8, &t.hash(), &big),
        Err(StorageError::PayloadTooLarge { .. })
    ));
    let t8 = log
        .append(8, &t.hash(), b"")
        .expect("empty payload is fine");
    t8.wait().expect("durable");
    assert_eq!(&*log.read(8).expect("read"), b"");
    assert_eq!(log.first_height(), Some(7));
}

/// A payload written in pieces straight into the frame buffer (`append_with`, as execute writes
/// its records) is the same block as the whole payload appended: the same hashes, the same bytes
/// read back, on both write paths.
#[test]
fn append_with_writes_the_same_blocks_as_append() {
    for backend in [WriteBackend::Auto, WriteBackend::Pwrite] {
        let whole_dir = tempfile::tempdir().expect("tempdir");
        let pieces_dir = tempfile::tempdir().expect("tempdir");
        let mut whole = BlockLog::open(whole_dir.path(), config(backend)).expect("open");
        let mut pieces = BlockLog::open(pieces_dir.path(), config(backend)).expect("open");
        let (mut parent_w, mut parent_p) = ([0; 32], [0; 32]);
        for h in 1..=40u64 {
            let body = payload(h, 0, 7_000 + 1_000 * h as usize);
            let tw = whole.append(h, &parent_w, &body).expect("append");
            let tp = pieces
                .append_with(h, &parent_p, body.len(), |out| {
                    for piece in body.chunks(3_001) {
                        out.extend_from_slice(piece);
                    }
                })
                .expect("append_with");
            assert_eq!(tw.hash(), tp.hash(), "height {h}: the chains agree");
            (parent_w, parent_p) = (tw.hash(), tp.hash());
        }
        BlockStore::sync(&mut pieces).expect("sync");
        for h in 1..=40 {
            let body = payload(h, 0, 7_000 + 1_000 * h as usize);
            assert_eq!(&*pieces.read_verified(h).expect("read"), &body[..]);
        }
        drop(pieces);
        let reopened = BlockLog::open(pieces_dir.path(), config(backend)).expect("reopen");
        assert_eq!(reopened.last(), Some((40, parent_w)));
    }
}

#[test]
#[should_panic(expected = "not the length announced")]
fn append_with_that_writes_another_length_is_a_bug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    let _ = log.append_with(1, &[0; 32], 10, |out| out.extend_from_slice(b"eleven byte"));
}

#[test]
fn full_queue_returns_queue_full_with_try_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(WriteBackend::Pwrite);
    cfg.queue_frames_max = 1;
    cfg.batch_frames_max = 1;
    let mut log = BlockLog::open(dir.path(), cfg).expect("open");
    let mut parent = [0u8; 32];
    let mut full = 0;
    let mut height = 1;
    while height < 2000 && full == 0 {
        match log.try_append(height, &parent, &payload(height, 0, 100_000)) {
            Ok(t) => {
                parent = t.hash();
                height += 1;
            }
            Err(StorageError::QueueFull { capacity: 1 }) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(full, 1, "a queue of one frame fills while fdatasync runs");
    log.wait_durable().expect("drains");
    assert_eq!(log.durable_height(), Some(height - 1));
}

#[test]
fn flipped_byte_in_tail_block_is_truncated_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 1000;
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 50, len, true).expect("append");
    drop(log);
    let last_offset = frame_offset(49, len);
    flip_byte(&segment_path(dir.path(), 0), last_offset + 80 + 500);

    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("torn tail opens");
    let dropped = log.recovery_report().dropped.clone().expect("reported");
    assert_eq!((dropped.segment, dropped.offset), (0, last_offset));
    assert_eq!(dropped.bytes, frame_len(len) as u64);
    assert_eq!(dropped.height_first, 50);
    assert!(dropped.reason.contains("checksum"), "{}", dropped.reason);
    assert_eq!(log.last().map(|l| l.0), Some(49));
    assert!(log.read(50).is_err());
    assert_eq!(&*log.read(49).expect("49 intact"), &payload(49, 0, len)[..]);
    let parent = log.last().expect("last").1;
    log.append(50, &parent, b"rewritten height 50")
        .expect("rewrite")
        .wait()
        .expect("durable");
    drop(log);
    let log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("reopen");
    assert_eq!(log.recovery_report().dropped, None);
    assert_eq!(&*log.read(50).expect("read"), b"rewritten height 50");
}

#[test]
fn flipped_byte_in_acknowledged_middle_block_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 1000;
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 50, len, true).expect("append, one group commit each");
    drop(log);
    let offset = frame_offset(24, len);
    flip_byte(&segment_path(dir.path(), 0), offset + 80 + 3);
    let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
        .err()
        .expect("must refuse");
    match &err {
        StorageError::MidLogCorruption {
            segment,
            offset: at,
            height,
            reason,
        } => {
            assert_eq!((*segment, *at, *height), (0, offset, 25));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("wrong error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("segment 0")
            && text.contains("height 25")
            && text.contains(&offset.to_string()),
        "{text}"
    );
}

#[test]
fn zeroed_acknowledged_block_and_sealed_segment_damage_refuse_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 100_000;
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 30, len, true).expect("append");
    assert!(log.segment_count() >= 3);
    drop(log);
    // Lost write of block 5's header (zeros) in sealed segment 0.
    let seg0 = segment_path(dir.path(), 0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg0)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 80], frame_offset(4, len))
        .expect("zero");
    let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
        .err()
        .expect("refuse");
    assert!(
        matches!(
            err,
            StorageError::MidLogCorruption {
                segment: 0,
                height: 5,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn open_with_sealed_checksum_verification_off_still_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 40, 50_000, false).expect("append");
    log.wait_durable().expect("durable");
    drop(log);
    let mut cfg = config(WriteBackend::Auto);
    cfg.verify_sealed_checksums = false;
    let log = BlockLog::open(dir.path(), cfg).expect("open");
    assert_eq!(log.last().map(|l| l.0), Some(40));
    assert_eq!(&*log.read(3).expect("read"), &payload(3, 0, 50_000)[..]);
}

#[test]
fn many_unaligned_group_commits_round_trip_direct_and_buffered() {
    for direct_io in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = engine::storage::LogConfig {
            direct_io,
            ..config(WriteBackend::Auto)
        };
        let mut log = BlockLog::open(dir.path(), cfg.clone()).expect("open");
        let mut parent = [0u8; 32];
        let len = |h: u64| (h * 7919 % 5000) as usize + 1;
        for h in 1..=3000u64 {
            let ticket = log
                .append(h, &parent, &payload(h, 1, len(h)))
                .expect("append");
            parent = ticket.hash();
            // Read a durable block while later group commits are in flight on the pages after it.
            if let Some(r) = log.durable_height().filter(|d| *d > 1).map(|d| d - 1) {
                let got = log.read_verified(r).expect("concurrent read");
                assert_eq!(
                    &*got,
                    &payload(r, 1, len(r))[..],
                    "read of {r} during writes"
                );
            }
            if h % 7 == 0 {
                ticket.wait().expect("durable");
                // Reads through the map right after O_DIRECT rewrote the page they share with the
                // next batch: the page cache must not serve stale bytes.
                for back in [0, 1, 6] {
                    let r = h - back;
                    let got = log.read_verified(r).expect("fresh read");
                    assert_eq!(&*got, &payload(r, 1, len(r))[..], "in-process read of {r}");
                }
            }
            if h == 1500 {
                // Reopen mid-way: the first batch after it starts inside a written page.
                log.wait_durable().expect("durable");
                drop(log);
                log = BlockLog::open(dir.path(), cfg.clone()).expect("reopen mid-way");
            }
        }
        log.wait_durable().expect("durable");
        assert!(
            log.group_commits() > 200,
            "many batches: {}",
            log.group_commits()
        );
        drop(log);
        let log = BlockLog::open(dir.path(), cfg).expect("reopen");
        assert_eq!(log.recovery_report().dropped, None);
        assert_eq!(log.last(), Some((3000, parent)));
        for h in 1..=3000u64 {
            assert_eq!(
                &*log.read_verified(h).expect("read"),
                &payload(h, 1, len(h))[..],
                "height {h}"
            );
        }
    }
}

/// Rewrites the parent hash of the frame at `offset` and recomputes its checksum, producing a
/// frame that is valid on its own but breaks the hash chain.
fn forge_parent(path: &std::path::Path, offset: u64, payload_bytes: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut frame = vec![0u8; 80 + payload_bytes];
    file.read_exact_at(&mut frame, offset).expect("read frame");
    frame[24..56].copy_from_slice(&[0xEE; 32]);
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(&frame[..64]);
    hasher.update(&frame[80..]);
    frame[64..80].copy_from_slice(&hasher.digest128().to_le_bytes());
    file.write_all_at(&frame, offset).expect("write frame");
}

#[test]
fn broken_hash_chain_across_segments_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 100_000;
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 30, len, true).expect("append");
    assert!(log.segment_count() >= 3);
    drop(log);
    forge_parent(&segment_path(dir.path(), 1), frame_offset(0, len), len);
    let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
        .err()
        .expect("refuse");
    match &err {
        StorageError::MidLogCorruption {
            segment,
            offset,
            reason,
            ..
        } => {
            assert_eq!((*segment, *offset), (1, frame_offset(0, len)));
            assert!(reason.contains("parent hash"), "{reason}");
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn broken_hash_chain_into_the_tail_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 100_000;
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 30, len, true).expect("append");
    let tail = log.segment_count() as u64 - 1;
    assert!(tail >= 2);
    drop(log);
    forge_parent(&segment_path(dir.path(), tail), frame_offset(0, len), len);
    let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
        .err()
        .expect("refuse: later group commits in the tail are durable");
    match &err {
        StorageError::MidLogCorruption {
            segment,
            offset,
            reason,
            ..
        } => {
            assert_eq!((*segment, *offset), (tail, frame_offset(0, len)));
            assert!(reason.contains("parent hash"), "{reason}");
        }
        other => panic!("wrong error {other:?}"),
    }
}
