//! Clear errors for a missing directory, a path under a regular file, a foreign file, a second
//! opener, permission denied (a child that drops root) and a full disk (a small tmpfs).

mod storage_common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use engine::storage::{BlockLog, StorageError, WriteBackend};
use storage_common::*;

const EACCES_CHILD_ENV: &str = "RECKON_STORAGE_EACCES_CHILD_DIR";

#[test]
fn missing_dir_and_path_under_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let err = BlockLog::open(&missing, config(WriteBackend::Auto))
        .err()
        .expect("missing");
    assert!(
        matches!(&err, StorageError::DirMissing { path } if *path == missing),
        "{err:?}"
    );
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let err = BlockLog::open(&file, config(WriteBackend::Auto))
        .err()
        .expect("file");
    assert!(matches!(err, StorageError::NotADirectory { .. }), "{err:?}");
    let under = file.join("log");
    let err = BlockLog::open(&under, config(WriteBackend::Auto))
        .err()
        .expect("under file");
    assert!(matches!(err, StorageError::NotADirectory { .. }), "{err:?}");
}

#[test]
fn foreign_files_with_the_segment_name_pattern_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = segment_path(dir.path(), 0);
    let junk = vec![0x42u8; 8192];
    std::fs::write(&seg, &junk).expect("write");
    let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
        .err()
        .expect("foreign");
    assert!(
        matches!(&err, StorageError::ForeignFile { path, reason } if *path == seg && reason.contains("magic")),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&seg).expect("read"),
        junk,
        "foreign file untouched"
    );
    std::fs::write(&seg, b"short").expect("write");
    let err = reopen_after_drop(dir.path()).err().expect("short");
    assert!(matches!(err, StorageError::ForeignFile { .. }), "{err:?}");
    std::fs::remove_file(&seg).expect("rm");
    std::fs::write(dir.path().join("7.seg"), b"odd name").expect("write");
    let err = reopen_after_drop(dir.path()).err().expect("odd name");
    assert!(matches!(err, StorageError::ForeignFile { .. }), "{err:?}");
}

/// Opens a log whose previous opener (a handle, or an open that failed after taking the lock) was
/// just dropped. Other tests in this binary spawn children (the EACCES child, `mount`); between a
/// fork and its exec the child shares every open descriptor, including a lock file's, so the
/// flock can outlive `drop` for that window: retry `Locked` briefly (bounded), anything else is
/// the answer.
fn reopen_after_drop(dir: &std::path::Path) -> Result<BlockLog, StorageError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match BlockLog::open(dir, config(WriteBackend::Auto)) {
            Err(StorageError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

#[test]
fn missing_segment_in_the_sequence_and_second_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    let err = BlockLog::open(dir.path(), config(WriteBackend::Auto))
        .err()
        .expect("locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
    append_run(&mut log, 1, 40, 100_000, true).expect("append");
    assert!(log.segment_count() >= 3);
    drop(log);
    std::fs::remove_file(segment_path(dir.path(), 1)).expect("rm");
    let err = reopen_after_drop(dir.path()).err().expect("gap");
    assert!(
        matches!(&err, StorageError::ForeignFile { reason, .. } if reason.contains("missing")),
        "{err:?}"
    );
}

/// Child mode: drops root to `nobody`, then opens a root-only directory.
#[test]
fn eacces_child_entry() {
    let Ok(dir) = std::env::var(EACCES_CHILD_ENV) else {
        return;
    };
    // SAFETY: plain syscalls in a single-purpose child process.
    let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
    assert!(dropped, "setuid to nobody");
    let err = BlockLog::open(std::path::Path::new(&dir), config(WriteBackend::Auto))
        .err()
        .expect("must fail");
    println!("CHILD-ERROR {err:?}");
}

#[test]
fn permission_denied_for_an_unprivileged_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    std::fs::create_dir(&log_dir).expect("mkdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod parent");
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "eacces_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EACCES_CHILD_ENV, &log_dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("CHILD-ERROR") && String::from_utf8_lossy(&out.stderr).contains("setuid") {
        eprintln!("cannot drop privileges here; permission-denied test skipped");
        return;
    }
    assert!(
        stdout.contains("CHILD-ERROR PermissionDenied"),
        "child said: {stdout}"
    );
}

#[test]
fn disk_full_is_a_clear_error_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot mount a tmpfs here; disk-full test skipped");
        return;
    }
    let result = std::panic::catch_unwind(|| disk_full_on(&mount));
    let _ = Command::new("umount").arg(&mount).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn disk_full_on(dir: &std::path::Path) {
    let mut log = BlockLog::open(dir, config(WriteBackend::Auto)).expect("open");
    let mut acked = 0;
    let err = loop {
        match append_run(&mut log, acked + 1, 1, 100_000, true) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 100, "a 3 MiB tmpfs must fill up");
    };
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("disk full"));
    drop(log);
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().ends_with(".tmp")),
        "{leftovers:?}"
    );
    let log = reopen_after_drop(dir).expect("reopen after ENOSPC");
    assert_eq!(log.last().map(|l| l.0), Some(acked));
    for h in 1..=acked {
        assert_eq!(
            &*log.read_verified(h).expect("read"),
            &payload(h, 0, 100_000)[..]
        );
    }
}

#[test]
fn truncated_segment_file_is_reported_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = BlockLog::open(dir.path(), config(WriteBackend::Auto)).expect("open");
    append_run(&mut log, 1, 5, 1000, true).expect("append");
    drop(log);
    let seg = segment_path(dir.path(), 0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    file.set_len(SEGMENT_BYTES_TEST / 2).expect("truncate");
    let err = reopen_after_drop(dir.path()).err().expect("refuse");
    assert!(
        matches!(&err, StorageError::ForeignFile { reason, .. } if reason.contains("header says")),
        "{err:?}"
    );
}
