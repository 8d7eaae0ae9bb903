//! `LogReader`: a read-only walk over every frame of a log directory for the offline auditor.
//!
//! Unlike `BlockLog::open` it never writes: no temp-file removal, no torn-tail zeroing, no writer.
//! It verifies what recovery verifies and more: every segment header, the checksum of every frame
//! (sealed segments included), the storage hash chain (each frame names the BLAKE3 block hash of
//! its predecessor; height 1 names zeros) across segments, and that nothing but zeros follows the
//! last frame of a segment. The first fault stops the walk and names its segment, offset and
//! height. A shared `flock` on `LOCK` keeps a node from opening the directory during the walk (and
//! refuses to walk a directory a running node holds).

use std::borrow::Cow;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::config::{EncryptionConfig, LogConfig};
use super::crypt::FrameCipher;
use super::error::StorageError;
use super::frame::{self, BlockHash};
use super::scan::{self, After, ScanInput};
use super::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};

/// A content fault found by the walk: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("segment {segment} ({path}) offset {offset}{}: {reason}", height_text(*.height))]
pub struct LogFault {
    pub segment: u64,
    pub path: PathBuf,
    pub offset: u64,
    /// The height the frame at `offset` holds or should hold (None for a segment-level fault).
    pub height: Option<u64>,
    pub reason: String,
}

fn height_text(height: Option<u64>) -> String {
    height.map_or(String::new(), |h| format!(" (height {h})"))
}

/// Why a walk stopped: a fault in the log, or the visitor's own error.
#[derive(Debug)]
pub enum WalkError<E> {
    Fault(LogFault),
    Visit(E),
}

/// One verified frame, handed to the visitor in height order.
pub struct StoredRecord<'a> {
    pub segment: u64,
    pub offset: u64,
    pub height: u64,
    /// The storage block hash (BLAKE3 over height, parent hash and plaintext).
    pub hash: BlockHash,
    /// The plaintext payload (decrypted when the log is encrypted).
    pub payload: Cow<'a, [u8]>,
    /// Bytes the frame occupies in the segment (header, stored payload, padding).
    pub frame_bytes: u64,
}

/// What a complete walk covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkSummary {
    pub segments: usize,
    pub records: u64,
    pub first_height: Option<u64>,
    pub last_height: Option<u64>,
    /// Stored frame bytes (headers, payloads, padding).
    pub frame_bytes: u64,
}

struct ReadSegment {
    index: u64,
    path: PathBuf,
    map: Mmap,
}

/// A read-only view of a log directory.
pub struct LogReader {
    dir: PathBuf,
    config: LogConfig,
    cipher: Option<FrameCipher>,
    segments: Vec<ReadSegment>,
    /// Temp files a crash left behind (recovery would remove them; reported, not touched).
    pub temp_files: Vec<PathBuf>,
    _lock: Option<File>,
}

/// Takes a shared lock on `dir/LOCK` if the file exists; a node holding it exclusively refuses.
fn lock_shared(dir: &Path) -> Result<Option<File>, StorageError> {
    let path = dir.join("LOCK");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    // SAFETY: plain syscall on an owned, open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
        return Err(StorageError::Locked {
            path: dir.to_path_buf(),
        });
    }
    Ok(Some(file))
}

impl LogReader {
    /// Lists and maps every segment of `dir` read-only. Content is checked by `walk`.
    pub fn open(
        dir: &Path,
        encryption: Option<&EncryptionConfig>,
    ) -> Result<LogReader, StorageError> {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(StorageError::NotADirectory {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(StorageError::io(dir, e)),
        }
        let lock = lock_shared(dir)?;
        let cipher = encryption.map(FrameCipher::from_config).transpose()?;
        let config = LogConfig {
            encryption: encryption.cloned(),
            ..LogConfig::default()
        };
        let (indices, temp_files) = super::recovery::scan_dir(dir)?;
        let mut segments = Vec::with_capacity(indices.len());
        for index in indices {
            let path = dir.join(segment::segment_name(index));
            let file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(&path, e))?
                .len();
            if len < SEGMENT_HEADER_BYTES as u64 {
                let why = format!("{len} bytes: shorter than a segment header");
                return Err(StorageError::foreign(&path, why));
            }
            let map = segment::map(&file, &path)?;
            segments.push(ReadSegment { index, path, map });
        }
        Ok(LogReader {
            dir: dir.to_path_buf(),
            config,
            cipher,
            segments,
            temp_files,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Visits every frame in height order after verifying it; stops at the first fault.
    pub fn walk<E>(
        &self,
        mut visit: impl FnMut(StoredRecord<'_>) -> Result<(), E>,
    ) -> Result<WalkSummary, WalkError<E>> {
        let mut summary = WalkSummary::default();
        let mut last: Option<(u64, BlockHash)> = None;
        let mut expected_index = self.segments.first().map(|s| s.index);
        for (position, seg) in self.segments.iter().enumerate() {
            let is_tail = position + 1 == self.segments.len();
            let fault = |offset: usize, height: Option<u64>, reason: String| {
                WalkError::Fault(LogFault {
                    segment: seg.index,
                    path: seg.path.clone(),
                    offset: offset as u64,
                    height,
                    reason,
                })
            };
            if expected_index != Some(seg.index) {
                let why = format!(
                    "segment {} is missing from the sequence",
                    expected_index.unwrap_or(0)
                );
                return Err(fault(0, None, why));
            }
            expected_index = Some(seg.index + 1);
            let header = SegmentHeader::decode(&seg.map, &seg.path)
                .map_err(|e| fault(0, None, e.to_string()))?;
            let file_len = (seg.path.as_path(), seg.map.len() as u64);
            super::recovery::check_header(
                &header,
                seg.index,
                file_len,
                &self.config,
                self.cipher.as_ref(),
            )
            .map_err(|e| fault(0, None, e.to_string()))?;
            let prev_hash = match last {
                Some((height, hash)) => {
                    if header.first_height != height + 1 {
                        let why = format!(
                            "segment starts at height {} but the previous segment ends at {height}",
                            header.first_height
                        );
                        return Err(fault(0, None, why));
                    }
                    Some(hash)
                }
                // The first block of a chain names no parent: zeros.
                None if header.first_height == 1 => Some([0u8; 32]),
                None => None,
            };
            let input = ScanInput {
                data: &seg.map,
                start: SEGMENT_HEADER_BYTES,
                first_height: header.first_height,
                prev_hash,
                verify_checksum: true,
                verify_chain: true,
                cipher: self.cipher.as_ref(),
            };
            let out = scan::scan(&input);
            summary.segments += 1;
            for &offset in &out.offsets {
                let offset = offset as usize;
                let bytes = &seg.map[offset..];
                let h = frame::header(bytes)
                    .map_err(|f| fault(offset, None, f.describe().to_string()))?;
                let plain = scan::plaintext(&h, frame::payload(bytes, &h), self.cipher.as_ref())
                    .map_err(|why| fault(offset, Some(h.height), why))?;
                let hash = frame::block_hash(h.height, &h.parent_hash, &plain);
                summary.records += 1;
                summary.frame_bytes += frame::frame_bytes(h.payload_bytes as usize) as u64;
                if summary.first_height.is_none() {
                    summary.first_height = Some(h.height);
                }
                summary.last_height = Some(h.height);
                last = Some((h.height, hash));
                visit(StoredRecord {
                    segment: seg.index,
                    offset: offset as u64,
                    height: h.height,
                    hash,
                    payload: plain,
                    frame_bytes: frame::frame_bytes(h.payload_bytes as usize) as u64,
                })
                .map_err(WalkError::Visit)?;
            }
            let stop = &out.stop;
            let window = self.config.batch_bytes_max + 2 * self.config.frame_bytes_max();
            let after = scan::after_stop(&seg.map, stop, window);
            if stop.clean && after == After::Clean {
                continue;
            }
            let why =
                match after {
                    After::Torn { .. } if is_tail => format!(
                    "{} (within the last group commit of the tail segment: possibly a torn write \
                     from a crash, which the node truncates at its next start)",
                    if stop.clean { "bytes after the last frame" } else { &stop.reason }
                ),
                    After::LaterBatch { offset, height } => format!(
                        "{} (a later group commit holds height {height} at offset {offset})",
                        stop.reason
                    ),
                    _ if stop.clean => "non-zero bytes after the last frame".to_string(),
                    _ => stop.reason.clone(),
                };
            return Err(fault(stop.offset, Some(stop.height), why));
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BlockLog;

    fn small_log(dir: &Path, blocks: u64) {
        let mut config = LogConfig::for_tests(64 << 10);
        config.write_backend = crate::storage::WriteBackend::Pwrite;
        config.direct_io = false;
        let mut log = BlockLog::open(dir, config).expect("open");
        let mut parent = [0u8; 32];
        for height in 1..=blocks {
            let payload = vec![height as u8; 5000];
            parent = log
                .append(height, &parent, &payload)
                .expect("append")
                .hash();
        }
        log.wait_durable().expect("durable");
    }

    fn walk(dir: &Path) -> Result<WalkSummary, WalkError<()>> {
        LogReader::open(dir, None).expect("open").walk(|_| Ok(()))
    }

    #[test]
    fn a_clean_log_walks_every_frame_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        small_log(dir.path(), 40);
        let summary = walk(dir.path()).map_err(|_| ()).expect("clean");
        assert_eq!(summary.records, 40);
        assert_eq!(
            (summary.first_height, summary.last_height),
            (Some(1), Some(40))
        );
        assert!(summary.segments > 1, "{summary:?}");
    }

    #[test]
    fn a_flipped_byte_in_a_sealed_segment_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        small_log(dir.path(), 40);
        let path = dir.path().join(segment::segment_name(0));
        let mut bytes = std::fs::read(&path).expect("read");
        let at = SEGMENT_HEADER_BYTES + 80 + 100; // inside the first frame's payload
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        match walk(dir.path()) {
            Err(WalkError::Fault(f)) => {
                assert_eq!((f.segment, f.offset, f.height), (0, 4096, Some(1)));
                assert!(f.reason.contains("checksum"), "{f}");
            }
            other => panic!("expected a fault, got {:?}", other.map_err(|_| ())),
        }
    }

    #[test]
    fn a_running_node_lock_refuses_the_walk() {
        let dir = tempfile::tempdir().expect("tempdir");
        small_log(dir.path(), 2);
        let mut config = LogConfig::for_tests(64 << 10);
        config.direct_io = false;
        let _log = BlockLog::open(dir.path(), config).expect("open");
        assert!(matches!(
            LogReader::open(dir.path(), None),
            Err(StorageError::Locked { .. })
        ));
    }
}
