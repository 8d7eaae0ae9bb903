//! At-rest encryption: round trip for both ciphers, no plaintext on disk, key-file permissions,
//! wrong key, and a torn encrypted tail rewritten with other content at the same height.

mod storage_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use engine::storage::{BlockLog, Cipher, EncryptionConfig, LogConfig, StorageError, WriteBackend};
use storage_common::*;

fn key_file(dir: &Path, name: &str, key: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, key).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn encrypted(key_file: &Path, cipher: Cipher) -> LogConfig {
    LogConfig {
        encryption: Some(EncryptionConfig {
            key_file: key_file.to_path_buf(),
            cipher,
        }),
        ..config(WriteBackend::Auto)
    }
}

#[test]
fn encrypted_round_trip_hides_plaintext_and_survives_reopen() {
    for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
        let keys = tempfile::tempdir().expect("tempdir");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = key_file(keys.path(), "key", &[0x11; 32], 0o600);
        let mut log = BlockLog::open(dir.path(), encrypted(&key, cipher)).expect("open");
        let marker = b"PLAINTEXT-MARKER-0123456789";
        let mut parent = [0; 32];
        for h in 1..=60u64 {
            let mut body = marker.to_vec();
            body.extend_from_slice(&payload(h, 0, 30_000));
            parent = log.append(h, &parent, &body).expect("append").hash();
        }
        log.wait_durable().expect("durable");
        assert!(log.read_view(5).expect("view").encrypted);
        drop(log);
        for entry in std::fs::read_dir(dir.path()).expect("ls") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "plaintext on disk"
            );
        }
        let log = BlockLog::open(dir.path(), encrypted(&key, cipher)).expect("reopen");
        assert_eq!(log.last(), Some((60, parent)));
        assert_eq!(&log.read(60).expect("read")[..marker.len()], marker);
        let other = key_file(keys.path(), "other", &[0x22; 32], 0o600);
        drop(log);
        let err = BlockLog::open(dir.path(), encrypted(&other, cipher))
            .err()
            .expect("wrong key");
        assert!(
            matches!(&err, StorageError::KeyFile { reason, .. } if reason.contains("wrong key")),
            "{err:?}"
        );
        let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
            .err()
            .expect("no key");
        assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    }
}

/// An encrypted block written straight into the frame buffer (`append_with`) reads back and
/// chains like one appended whole: the hash covers the plaintext, sealed after it is written.
#[test]
fn encrypted_append_with_matches_append() {
    for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
        let keys = tempfile::tempdir().expect("tempdir");
        let key = key_file(keys.path(), "key", &[0x22; 32], 0o600);
        let plain_dir = tempfile::tempdir().expect("tempdir");
        let sealed_dir = tempfile::tempdir().expect("tempdir");
        let mut plain = BlockLog::open(plain_dir.path(), config(WriteBackend::Auto)).expect("open");
        let mut sealed = BlockLog::open(sealed_dir.path(), encrypted(&key, cipher)).expect("open");
        let mut parent = [0; 32];
        for h in 1..=12u64 {
            let body = payload(h, 0, 20_000);
            let tp = plain.append(h, &parent, &body).expect("append");
            let ts = sealed
                .append_with(h, &parent, body.len(), |out| {
                    out.extend_from_slice(&body[..5]);
                    out.extend_from_slice(&body[5..]);
                })
                .expect("append_with");
            assert_eq!(tp.hash(), ts.hash(), "the chain hashes the plaintext");
            parent = ts.hash();
        }
        drop(sealed);
        let sealed = BlockLog::open(sealed_dir.path(), encrypted(&key, cipher)).expect("reopen");
        for h in 1..=12 {
            assert_eq!(
                &*sealed.read_verified(h).expect("read"),
                &payload(h, 0, 20_000)[..]
            );
        }
    }
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "key", &[0x11; 32], 0o644);
    let err = BlockLog::open(dir.path(), encrypted(&key, Cipher::XChaCha20Poly1305))
        .err()
        .expect("refuse");
    assert!(
        matches!(&err, StorageError::KeyFile { reason, .. } if reason.contains("chmod 600")),
        "{err:?}"
    );
    let hex_key = key_file(keys.path(), "hexkey", "ab".repeat(32).as_bytes(), 0o400);
    BlockLog::open(dir.path(), encrypted(&hex_key, Cipher::XChaCha20Poly1305))
        .expect("hex key, 0400");
}

#[test]
fn torn_encrypted_tail_is_rewritten_with_fresh_nonces() {
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "key", &[0x33; 32], 0o600);
    let cfg = encrypted(&key, Cipher::XChaCha20Poly1305);
    let mut log = BlockLog::open(dir.path(), cfg.clone()).expect("open");
    append_run(&mut log, 1, 10, 1000, true).expect("append");
    let stored_before = log.read_view(10).expect("view").stored_payload.to_vec();
    drop(log);
    let frame = frame_len(1000 + 24 + 16);
    let tail_offset = (engine::storage::SEGMENT_HEADER_BYTES + 9 * frame) as u64;
    flip_byte(&segment_path(dir.path(), 0), tail_offset + 200);
    let mut log = BlockLog::open(dir.path(), cfg.clone()).expect("reopen");
    assert_eq!(
        log.recovery_report()
            .dropped
            .as_ref()
            .map(|d| d.height_first),
        Some(10)
    );
    let parent = log.last().expect("last").1;
    log.append(10, &parent, &payload(10, 0, 1000))
        .expect("rewrite")
        .wait()
        .expect("durable");
    let stored_after = log.read_view(10).expect("view").stored_payload.to_vec();
    assert_ne!(
        stored_before[..24],
        stored_after[..24],
        "a rewrite of the same height uses a new nonce"
    );
    assert_eq!(&*log.read(10).expect("read"), &payload(10, 0, 1000)[..]);
}
