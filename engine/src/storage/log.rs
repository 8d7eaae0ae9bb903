//! `BlockLog`: the real block store. Appends go through the writer thread (group commit); reads
//! are zero-copy views into the read-only maps of the segments.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::config::LogConfig;
use super::crypt::{frame_aad, FrameCipher, AEAD_OVERHEAD_MAX, CIPHER_NONE};
use super::error::StorageError;
use super::frame::{self, BlockHash, FLAG_ENCRYPTED};
use super::recovery::{self, RecoveryReport, Segment};
use super::scan;
use super::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use super::snapshot::{Snapshot, SnapshotStore};
use super::ticket::Ticket;
use super::writer::{WriteJob, WritePath, Writer};
use super::BlockStore;

const LOCK_FILE: &str = "LOCK";

/// A durable block as stored: the payload is ciphertext (nonce || ciphertext || tag) if encrypted.
#[derive(Clone, Copy, Debug)]
pub struct BlockView<'a> {
    pub height: u64,
    pub parent_hash: BlockHash,
    pub encrypted: bool,
    pub stored_payload: &'a [u8],
}

pub struct BlockLog {
    dir: PathBuf,
    config: LogConfig,
    cipher: Option<FrameCipher>,
    segments: Vec<Segment>,
    last: Option<(u64, BlockHash)>,
    report: RecoveryReport,
    snapshots: SnapshotStore,
    // Declared after the segments: dropped first, so queued frames are written before files close.
    writer: Writer,
    _lock: File,
}

fn check_dir(dir: &Path) -> Result<(), StorageError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(StorageError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(StorageError::io(dir, e)),
    }
}

/// One process per log directory: an exclusive flock on `dir/LOCK`.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io(&path, e))?;
    // SAFETY: plain syscall on an owned, open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StorageError::Locked {
            path: dir.to_path_buf(),
        });
    }
    Ok(file)
}

impl BlockLog {
    /// Opens (or creates, if empty) the log in an existing directory `dir`, running recovery.
    pub fn open(dir: &Path, config: LogConfig) -> Result<BlockLog, StorageError> {
        config.validate()?;
        check_dir(dir)?;
        let lock = lock_dir(dir)?;
        let cipher = config
            .encryption
            .as_ref()
            .map(FrameCipher::from_config)
            .transpose()?;
        let mut recovered = recovery::recover(dir, &config, cipher.as_ref())?;
        if let Some(tail) = recovered.segments.last_mut() {
            tail.attach_direct(config.direct_io)?;
        }
        let durable = recovered.last.map(|(h, _)| h);
        let writer = Writer::start(&config, durable)?;
        let snapshots = SnapshotStore::open(dir)?;
        tracing::info!(dir = %dir.display(), report = ?recovered.report, path = ?writer.path, "block log open");
        Ok(BlockLog {
            dir: dir.to_path_buf(),
            config,
            cipher,
            segments: recovered.segments,
            last: recovered.last,
            report: recovered.report,
            snapshots,
            writer,
            _lock: lock,
        })
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }
    pub fn write_path(&self) -> WritePath {
        self.writer.path
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    /// Group commits (write + fdatasync pairs) completed since open.
    pub fn group_commits(&self) -> u64 {
        self.writer.durability.group_commits()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Queues a block; the ticket fires once it is durable. Blocks while the writer queue is full.
    pub fn append(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload: &[u8],
    ) -> Result<Ticket, StorageError> {
        let write = |buf: &mut Vec<u8>| buf.extend_from_slice(payload);
        self.append_inner(height, parent_hash, payload.len(), write, true)
    }

    /// Like `append`, but `write` appends the payload (exactly `payload_len` bytes) straight into
    /// the frame buffer, so a block encoded for the log needs no buffer of its own: a copy and a
    /// fresh allocation the size of the block fewer for each append. Panics if `write` appends a
    /// different number of bytes (a bug in the caller, not bad input).
    pub fn append_with(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Ticket, StorageError> {
        self.append_inner(height, parent_hash, payload_len, write, true)
    }

    /// Like `append`, but a full writer queue returns `QueueFull` instead of blocking.
    pub fn try_append(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload: &[u8],
    ) -> Result<Ticket, StorageError> {
        let write = |buf: &mut Vec<u8>| buf.extend_from_slice(payload);
        self.append_inner(height, parent_hash, payload.len(), write, false)
    }

    fn append_inner(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
        block: bool,
    ) -> Result<Ticket, StorageError> {
        if payload_len > self.config.payload_bytes_max {
            let bytes_max = self.config.payload_bytes_max;
            return Err(StorageError::PayloadTooLarge {
                bytes: payload_len,
                bytes_max,
            });
        }
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
        let mut buf = self.writer.buffer();
        buf.reserve(frame::frame_bytes(payload_len) + AEAD_OVERHEAD_MAX);
        let flags = if self.cipher.is_some() {
            FLAG_ENCRYPTED
        } else {
            0
        };
        frame::begin(&mut buf, height, parent_hash, flags);
        let body_at = match &self.cipher {
            Some(c) => c.seal_begin(&mut buf),
            None => buf.len(),
        };
        write(&mut buf);
        assert_eq!(
            buf.len() - body_at,
            payload_len,
            "append_with: the payload written is not the length announced"
        );
        // The hash chain covers the plaintext: hashed before it is sealed.
        let hash = frame::block_hash(height, parent_hash, &buf[body_at..]);
        if let Some(c) = &self.cipher {
            c.seal_finish(&mut buf, body_at, &frame_aad(height, parent_hash));
        }
        frame::finish(&mut buf);
        self.make_room(height, buf.len() as u64, block)?;
        let tail = self
            .segments
            .last_mut()
            .expect("make_room leaves a tail segment");
        let offset = tail.end;
        let job = WriteJob {
            file: tail.write_file.clone(),
            direct: tail.direct,
            offset,
            frame: buf,
            height,
        };
        let frame_len = job.frame.len() as u64;
        self.writer.send(job, block)?;
        tail.offsets
            .push(u32::try_from(offset).expect("segments are at most 4 GiB"));
        tail.end += frame_len;
        assert!(tail.end <= tail.map.len() as u64);
        assert_eq!(tail.first_height + tail.offsets.len() as u64 - 1, height);
        self.last = Some((height, hash));
        Ok(Ticket {
            height,
            hash,
            durability: self.writer.durability.clone(),
        })
    }

    /// Ensures the tail segment has room for `frame_len` bytes, rolling to a new segment if not.
    /// Rolling first waits until the old tail is durable: a batch never spans two segments, and a
    /// sealed segment holds only acknowledged frames.
    /// With `block` false (try_append), a roll that would have to wait returns `QueueFull`.
    fn make_room(&mut self, height: u64, frame_len: u64, block: bool) -> Result<(), StorageError> {
        let entered = Instant::now();
        if let Some(tail) = self.segments.last() {
            if tail.end + frame_len <= tail.map.len() as u64 {
                return Ok(());
            }
            assert!(
                !tail.offsets.is_empty(),
                "config guarantees one frame fits a segment"
            );
            let tail_durable = self.last.map(|l| l.0) == self.durable_height();
            if !block && !tail_durable {
                let capacity = self.config.queue_frames_max;
                return Err(StorageError::QueueFull { capacity });
            }
            self.wait_durable()?;
        }
        let rolled = self.segments.last().map(|_| (entered, Instant::now()));
        let index = self.segments.last().map_or(0, |s| s.index + 1);
        let header = SegmentHeader {
            cipher: self.cipher.as_ref().map_or(CIPHER_NONE, |c| c.id()),
            segment_index: index,
            first_height: height,
            segment_bytes: self.config.segment_bytes,
            key_check: self.cipher.as_ref().map_or([0; 16], |c| c.key_check()),
        };
        let (file, path) = segment::create(&self.dir, &header)?;
        let map = segment::map(&file, &path)?;
        assert!(map.len() as u64 >= SEGMENT_HEADER_BYTES as u64 + frame_len);
        let file = Arc::new(file);
        let mut seg = Segment {
            index,
            first_height: height,
            write_file: file.clone(),
            direct: false,
            file,
            map,
            offsets: Vec::new(),
            end: SEGMENT_HEADER_BYTES as u64,
            path,
        };
        seg.attach_direct(self.config.direct_io)?;
        self.segments.push(seg);
        if let Some((entered, durable)) = rolled {
            let ms =
                |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
            tracing::debug!(
                segment = index,
                first_height = height,
                wait_durable_ms = ms(entered, durable),
                create_ms = ms(durable, Instant::now()),
                "block log segment rolled"
            );
        }
        Ok(())
    }

    /// Waits until every appended block is durable.
    pub fn wait_durable(&self) -> Result<Option<u64>, StorageError> {
        if let Some((height, _)) = self.last {
            self.writer.durability.wait(height)?;
        }
        Ok(self.durable_height())
    }

    pub fn durable_height(&self) -> Option<u64> {
        self.writer.durability.durable_height()
    }

    pub fn first_height(&self) -> Option<u64> {
        self.segments
            .first()
            .filter(|s| !s.offsets.is_empty())
            .map(|s| s.first_height)
    }

    pub fn last(&self) -> Option<(u64, BlockHash)> {
        self.last
    }

    fn locate(&self, height: u64) -> Result<(&Segment, usize), StorageError> {
        let not_found = StorageError::NotFound { height };
        if self.durable_height().is_none_or(|d| height > d) {
            return Err(not_found);
        }
        let i = self.segments.partition_point(|s| s.first_height <= height);
        let seg = self.segments.get(i.wrapping_sub(1)).ok_or(not_found)?;
        let slot = (height - seg.first_height) as usize;
        let offset = *seg
            .offsets
            .get(slot)
            .ok_or(StorageError::NotFound { height })?;
        Ok((seg, offset as usize))
    }

    /// The stored frame of a durable block, without verifying its checksum (verified on open).
    pub fn read_view(&self, height: u64) -> Result<BlockView<'_>, StorageError> {
        let (seg, offset) = self.locate(height)?;
        let bad = |reason: &str| StorageError::MidLogCorruption {
            segment: seg.index,
            offset: offset as u64,
            height,
            reason: reason.to_string(),
        };
        let h = frame::header(&seg.map[offset..]).map_err(|f| bad(f.describe()))?;
        if h.height != height {
            return Err(bad("index points at a frame of another height"));
        }
        Ok(BlockView {
            height,
            parent_hash: h.parent_hash,
            encrypted: h.flags & FLAG_ENCRYPTED != 0,
            stored_payload: frame::payload(&seg.map[offset..], &h),
        })
    }

    /// The plaintext payload: borrowed from the map, or decrypted into a new buffer.
    pub fn read(&self, height: u64) -> Result<Cow<'_, [u8]>, StorageError> {
        let view = self.read_view(height)?;
        if !view.encrypted {
            return Ok(Cow::Borrowed(view.stored_payload));
        }
        let cipher = self
            .cipher
            .as_ref()
            .ok_or(StorageError::Decrypt { height })?;
        let aad = frame_aad(height, &view.parent_hash);
        Ok(Cow::Owned(cipher.open(
            view.stored_payload,
            &aad,
            height,
        )?))
    }

    /// Like `read`, but verifies the frame checksum first.
    pub fn read_verified(&self, height: u64) -> Result<Cow<'_, [u8]>, StorageError> {
        let (seg, offset) = self.locate(height)?;
        frame::parse(&seg.map[offset..]).map_err(|f| StorageError::MidLogCorruption {
            segment: seg.index,
            offset: offset as u64,
            height,
            reason: f.describe().to_string(),
        })?;
        self.read(height)
    }

    /// Plaintext payloads of a range of durable heights, in order.
    pub fn iter(
        &self,
        heights: RangeInclusive<u64>,
    ) -> impl Iterator<Item = Result<(u64, Cow<'_, [u8]>), StorageError>> + '_ {
        heights.map(move |h| self.read(h).map(|p| (h, p)))
    }

    /// Block hash of a durable block (recomputed from its plaintext).
    pub fn hash_of(&self, height: u64) -> Result<BlockHash, StorageError> {
        let (seg, offset) = self.locate(height)?;
        scan::frame_hash(&seg.map, offset, self.cipher.as_ref()).map_err(|reason| {
            StorageError::MidLogCorruption {
                segment: seg.index,
                offset: offset as u64,
                height,
                reason,
            }
        })
    }

    /// True when the ledger should snapshot at `height` (every `snapshot_every_blocks`).
    pub fn snapshot_due(&self, height: u64) -> bool {
        let every = self.config.snapshot_every_blocks;
        every > 0 && height > 0 && height.is_multiple_of(every)
    }

    pub fn write_snapshot(
        &self,
        height: u64,
        state_digest: [u8; 32],
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        self.snapshots.write(height, state_digest, bytes)
    }

    /// The snapshot directory, for a writer on another thread.
    pub fn snapshot_store(&self) -> SnapshotStore {
        self.snapshots.clone()
    }

    pub fn load_latest_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshots.load_latest()
    }
}

impl BlockStore for BlockLog {
    fn append(
        &mut self,
        height: u64,
        parent_hash: &BlockHash,
        payload: &[u8],
    ) -> Result<BlockHash, StorageError> {
        BlockLog::append(self, height, parent_hash, payload).map(|t| t.hash())
    }
    fn sync(&mut self) -> Result<Option<u64>, StorageError> {
        self.wait_durable()
    }
    fn durable_height(&self) -> Option<u64> {
        BlockLog::durable_height(self)
    }
    fn read(&self, height: u64) -> Result<Cow<'_, [u8]>, StorageError> {
        BlockLog::read(self, height)
    }
    fn last(&self) -> Option<(u64, BlockHash)> {
        self.last
    }
    fn first_height(&self) -> Option<u64> {
        BlockLog::first_height(self)
    }
}

// The node moves the log into its storage thread; the simulator moves stores between tasks.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<BlockLog>();
    assert_send::<super::MemBlockStore>();
    assert_send::<Ticket>();
};
