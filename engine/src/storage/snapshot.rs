//! Ledger snapshots (opaque bytes with height and state digest) and the atomic small-file writer.
//!
//! Snapshot file `snap-HHHHHHHHHHHHHHHHHHHH.snap`, little-endian:
//! ```text
//! off size field
//!   0    8 magic       b"RCKNSNP\0"
//!   8    4 version     SNAPSHOT_VERSION
//!  12    4 reserved    zero
//!  16    8 height      last block applied to the state
//!  24   32 digest      ledger state digest at `height`
//!  56    8 body_bytes
//!  64   16 checksum    xxh3-128 of bytes 0..64 and the body
//!  80    . body
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3Default;

use super::error::StorageError;
use super::segment::{sync_dir, TEMP_SUFFIX};

/// Snapshots kept on disk; older ones are deleted after a new one is durable.
pub const SNAPSHOTS_KEPT: usize = 2;
const SNAPSHOT_MAGIC: [u8; 8] = *b"RCKNSNP\0";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 80;
const _: () = assert!(8 + 4 + 4 + 8 + 32 + 8 + 16 == SNAPSHOT_HEADER_BYTES);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub height: u64,
    pub digest: [u8; 32],
    pub bytes: Vec<u8>,
}

/// Bytes written between two `fdatasync`s of a large file: the page cache never holds more of
/// it dirty, so writeback comes in bounded steps instead of one burst at the final fsync that
/// the block log's own fsyncs (same disk) would queue behind.
pub const ATOMIC_WRITE_SYNC_BYTES: usize = 8 << 20;

/// Writes `parts` (concatenated) to `dir/name` atomically: temp file, fsync, rename, fsync dir.
/// After a crash the file holds either the old or the new content, never a mix. A large file is
/// made durable `ATOMIC_WRITE_SYNC_BYTES` at a time as it is written.
pub fn write_file_atomic_parts(
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
) -> Result<(), StorageError> {
    write_file_atomic_paced(dir, name, parts, None)
}

/// `write_file_atomic_parts` at most `bytes_per_s` on average (None: as fast as the disk takes
/// it): after each synced chunk it sleeps until the bytes written so far are due. A background
/// writer (ledger snapshots) so takes a bounded share of a disk that the block log's and the
/// consensus journal's fsyncs share.
pub fn write_file_atomic_paced(
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
    bytes_per_s: Option<u64>,
) -> Result<(), StorageError> {
    assert!(!name.is_empty() && !name.contains('/'), "a plain file name");
    let path = dir.join(name);
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let started = std::time::Instant::now();
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| StorageError::io(&temp, e))?;
        let (mut unsynced, mut written) = (0usize, 0u64);
        for part in parts {
            for chunk in part.chunks(ATOMIC_WRITE_SYNC_BYTES) {
                file.write_all(chunk)
                    .map_err(|e| StorageError::io(&temp, e))?;
                unsynced += chunk.len();
                written += chunk.len() as u64;
                if unsynced >= ATOMIC_WRITE_SYNC_BYTES {
                    file.sync_data().map_err(|e| StorageError::io(&temp, e))?;
                    unsynced = 0;
                    if let Some(rate) = bytes_per_s.filter(|r| *r > 0) {
                        let due = std::time::Duration::from_secs_f64(written as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
        }
        file.sync_all().map_err(|e| StorageError::io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// `write_file_atomic_parts` with one buffer; for consensus safety state and similar small files.
pub fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    write_file_atomic_parts(dir, name, &[bytes])
}

fn snapshot_name(height: u64) -> String {
    format!("snap-{height:020}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    (digits.len() == 20 && digits.bytes().all(|c| c.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

fn checksum(head: &[u8], body: &[u8]) -> u128 {
    let mut h = Xxh3Default::new();
    h.update(head);
    h.update(body);
    h.digest128()
}

fn encode_header(height: u64, digest: &[u8; 32], body: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut b = [0u8; SNAPSHOT_HEADER_BYTES];
    b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    b[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&height.to_le_bytes());
    b[24..56].copy_from_slice(digest);
    b[56..64].copy_from_slice(&(body.len() as u64).to_le_bytes());
    let sum = checksum(&b[..64], body);
    b[64..80].copy_from_slice(&sum.to_le_bytes());
    b
}

fn decode(bytes: Vec<u8>, height_named: u64) -> Result<Snapshot, &'static str> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || bytes[0..8] != SNAPSHOT_MAGIC {
        return Err("bad magic or short file");
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) != SNAPSHOT_VERSION {
        return Err("unknown version");
    }
    let (height, body_bytes) = (u64_at(16), u64_at(56));
    if height != height_named || body_bytes != (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64 {
        return Err("height or length does not match");
    }
    let stored = u128::from_le_bytes(bytes[64..80].try_into().expect("16 bytes"));
    if checksum(&bytes[..64], &bytes[SNAPSHOT_HEADER_BYTES..]) != stored {
        return Err("checksum mismatch");
    }
    let digest = bytes[24..56].try_into().expect("32 bytes");
    let mut body = bytes;
    body.drain(..SNAPSHOT_HEADER_BYTES);
    Ok(Snapshot {
        height,
        digest,
        bytes: body,
    })
}

/// Snapshot files in one directory.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn open(dir: &Path) -> Result<SnapshotStore, StorageError> {
        if !dir.is_dir() {
            return Err(StorageError::DirMissing {
                path: dir.to_path_buf(),
            });
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Heights of the snapshot files present, newest first.
    pub fn heights(&self) -> Result<Vec<u64>, StorageError> {
        let mut heights = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            if let Some(h) = parse_snapshot_name(&entry.file_name().to_string_lossy()) {
                heights.push(h);
            }
        }
        heights.sort_unstable_by(|a, b| b.cmp(a));
        Ok(heights)
    }

    /// Writes a snapshot atomically, then deletes all but the newest `SNAPSHOTS_KEPT`.
    pub fn write(
        &self,
        height: u64,
        state_digest: [u8; 32],
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        self.write_paced(height, state_digest, bytes, None)
    }

    /// `write` at most `bytes_per_s` on average (`write_file_atomic_paced`).
    pub fn write_paced(
        &self,
        height: u64,
        state_digest: [u8; 32],
        bytes: &[u8],
        bytes_per_s: Option<u64>,
    ) -> Result<(), StorageError> {
        let header = encode_header(height, &state_digest, bytes);
        let name = snapshot_name(height);
        write_file_atomic_paced(&self.dir, &name, &[&header, bytes], bytes_per_s)?;
        let heights = self.heights()?;
        assert!(
            heights.contains(&height),
            "the snapshot just written is listed"
        );
        for old in heights.iter().skip(SNAPSHOTS_KEPT) {
            let path = self.dir.join(snapshot_name(*old));
            std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        }
        sync_dir(&self.dir)
    }

    /// The file a snapshot at `height` is (or would be) stored in.
    pub fn path(&self, height: u64) -> PathBuf {
        self.dir.join(snapshot_name(height))
    }

    /// The snapshot at `height`, verified (magic, version, height, length, checksum).
    pub fn load(&self, height: u64) -> Result<Snapshot, StorageError> {
        let path = self.dir.join(snapshot_name(height));
        let bytes = std::fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
        decode(bytes, height).map_err(|why| StorageError::foreign(&path, why))
    }

    /// The newest snapshot that verifies; a corrupt newer one falls back to an older one.
    pub fn load_latest(&self) -> Result<Option<Snapshot>, StorageError> {
        for height in self.heights()? {
            let path = self.dir.join(snapshot_name(height));
            let bytes = std::fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
            match decode(bytes, height) {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(why) => {
                    tracing::warn!(path = %path.display(), why, "skipping corrupt snapshot")
                }
            }
        }
        Ok(None)
    }
}
