//! `MemBlockStore`: the simulator's block store. Same frame format, same scan and same recovery
//! rules as `BlockLog`, on one in-memory image, single-threaded and deterministic. `sync` is the
//! group commit; `crash` drops what was not synced, `crash_torn` keeps a random prefix of it.

use std::borrow::Cow;
use std::path::Path;

use rand::{Rng, RngCore};

use super::error::StorageError;
use super::frame::{self, BlockHash};
use super::recovery::{DroppedTail, RecoveryReport};
use super::scan::{self, After, ScanInput};
use super::BlockStore;

/// Default bound of the in-memory image.
pub const MEM_STORE_BYTES_MAX_DEFAULT: usize = 256 << 20;
const MEM_PATH: &str = "<memory>";

pub struct MemBlockStore {
    image: Vec<u8>,
    /// Height of the first frame: set by the first append, like a segment header.
    first_height: Option<u64>,
    offsets: Vec<u32>,
    synced_bytes: usize,
    synced_frames: usize,
    /// First height of the current (unsynced) group commit.
    batch_first: Option<u64>,
    last: Option<(u64, BlockHash)>,
    bytes_max: usize,
}

impl Default for MemBlockStore {
    fn default() -> Self {
        MemBlockStore::new(MEM_STORE_BYTES_MAX_DEFAULT)
    }
}

impl MemBlockStore {
    /// A store whose image may hold at most `bytes_max` bytes (then appends fail as `DiskFull`).
    pub fn new(bytes_max: usize) -> MemBlockStore {
        assert!(bytes_max <= u32::MAX as usize, "frame offsets are u32");
        MemBlockStore {
            image: Vec::new(),
            first_height: None,
            offsets: Vec::new(),
            synced_bytes: 0,
            synced_frames: 0,
            batch_first: None,
            last: None,
            bytes_max,
        }
    }

    /// Bytes appended but not yet synced.
    pub fn unsynced_bytes(&self) -> usize {
        self.image.len() - self.synced_bytes
    }

    /// Power loss: everything not synced is lost. Runs recovery and returns its report.
    pub fn crash(&mut self) -> Result<RecoveryReport, StorageError> {
        self.image.truncate(self.synced_bytes);
        self.recover()
    }

    /// Power loss in the middle of the unsynced writes: a random prefix of them reached the
    /// medium, cut anywhere (usually inside a frame), and the last `garbage_bytes_max` bytes of
    /// that prefix may be random garbage. Recovery then truncates the torn tail.
    pub fn crash_torn(
        &mut self,
        rng: &mut dyn RngCore,
        garbage_bytes_max: usize,
    ) -> Result<RecoveryReport, StorageError> {
        let unsynced = self.unsynced_bytes();
        let keep = if unsynced == 0 {
            0
        } else {
            rng.gen_range(0..=unsynced)
        };
        self.image.truncate(self.synced_bytes + keep);
        let garbage = keep.min(garbage_bytes_max);
        let from = self.image.len() - garbage;
        rng.fill_bytes(&mut self.image[from..]);
        self.recover()
    }

    /// Flips one byte of the image (tests of corruption handling).
    pub fn flip_byte(&mut self, offset: usize) {
        self.image[offset] ^= 0xA5;
    }

    /// Byte offset of a frame in the image (for `flip_byte`).
    pub fn frame_offset(&self, height: u64) -> Option<usize> {
        let slot = height.checked_sub(self.first_height?)? as usize;
        self.offsets.get(slot).map(|&o| o as usize)
    }

    /// Re-derives the index from the image, truncating a torn tail, exactly like `BlockLog::open`.
    pub fn recover(&mut self) -> Result<RecoveryReport, StorageError> {
        let mut report = RecoveryReport::default();
        let Some(first_height) = self.first_height else {
            self.reset_empty();
            return Ok(report);
        };
        let input = ScanInput {
            data: &self.image,
            start: 0,
            first_height,
            prev_hash: None,
            verify_checksum: true,
            verify_chain: true,
            cipher: None,
        };
        let out = scan::scan(&input);
        let stop = out.stop.clone();
        match scan::after_stop(&self.image, &stop, self.image.len()) {
            After::Clean => {}
            After::LaterBatch { offset, height } => {
                return Err(StorageError::MidLogCorruption {
                    segment: 0,
                    offset: stop.offset as u64,
                    height: stop.height,
                    reason: format!(
                        "{} (later group commit holds height {height} at {offset})",
                        stop.reason
                    ),
                })
            }
            After::Torn { bytes, height_max } => {
                report.dropped = Some(DroppedTail {
                    segment: 0,
                    offset: stop.offset as u64,
                    bytes: bytes as u64,
                    height_first: stop.height,
                    height_last_seen: height_max,
                    reason: stop.reason.clone(),
                });
            }
        }
        self.image.truncate(out.end);
        self.offsets = out.offsets;
        self.last = out.last.map(|(h, hash)| (h, hash.expect("chain verified")));
        self.synced_bytes = self.image.len();
        self.synced_frames = self.offsets.len();
        self.batch_first = None;
        if self.offsets.is_empty() {
            self.reset_empty();
        }
        report.segments = 1;
        report.first_height = self.first_height;
        report.last_height = self.last.map(|(h, _)| h);
        Ok(report)
    }

    fn reset_empty(&mut self) {
        *self = MemBlockStore::new(self.bytes_max);
    }
}

impl BlockStore for MemBlockStore {
    fn append(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload: &[u8],
    ) -> Result<BlockHash, StorageError> {
        if let Some((last_height, last_hash)) = self.last {
            if height != last_height + 1 {
                return Err(StorageError::HeightNotNext {
                    height,
                    expected: last_height + 1,
                });
            }
            if *parent_hash != last_hash {
                return Err(StorageError::ParentMismatch { height });
            }
        }
        if self.image.len() + frame::frame_bytes(payload.len()) > self.bytes_max {
            return Err(StorageError::DiskFull {
                path: Path::new(MEM_PATH).to_path_buf(),
            });
        }
        let mut buf = Vec::with_capacity(frame::frame_bytes(payload.len()));
        frame::begin(&mut buf, height, parent_hash, 0);
        buf.extend_from_slice(payload);
        frame::finish(&mut buf);
        frame::seal(&mut buf, *self.batch_first.get_or_insert(height));
        self.first_height.get_or_insert(height);
        self.offsets.push(self.image.len() as u32);
        self.image.extend_from_slice(&buf);
        let hash = frame::block_hash(height, parent_hash, payload);
        self.last = Some((height, hash));
        Ok(hash)
    }

    fn sync(&mut self) -> Result<Option<u64>, StorageError> {
        self.synced_bytes = self.image.len();
        self.synced_frames = self.offsets.len();
        self.batch_first = None;
        Ok(self.durable_height())
    }

    fn durable_height(&self) -> Option<u64> {
        let first = self.first_height?;
        (self.synced_frames > 0).then(|| first + self.synced_frames as u64 - 1)
    }

    fn read(&self, height: u64) -> Result<Cow<'_, [u8]>, StorageError> {
        if self.durable_height().is_none_or(|d| height > d) {
            return Err(StorageError::NotFound { height });
        }
        let offset = self
            .frame_offset(height)
            .ok_or(StorageError::NotFound { height })?;
        let bytes = &self.image[offset..];
        let h = frame::header(bytes).map_err(|f| StorageError::MidLogCorruption {
            segment: 0,
            offset: offset as u64,
            height,
            reason: f.describe().into(),
        })?;
        Ok(Cow::Borrowed(frame::payload(bytes, &h)))
    }

    fn last(&self) -> Option<(u64, BlockHash)> {
        self.last
    }

    fn first_height(&self) -> Option<u64> {
        self.first_height.filter(|_| !self.offsets.is_empty())
    }
}
