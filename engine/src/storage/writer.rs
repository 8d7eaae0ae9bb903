//! The writer thread: drains a bounded queue of encoded frames, groups contiguous frames into one
//! write + fdatasync (linked with IO_LINK on io_uring, or pwrite + fdatasync), and only then
//! publishes the new durable height, which fires the tickets.
//!
//! Pipelining: while group commit k is in flight on io_uring, the writer already gathers, seals
//! (checksums) and stages group commit k+1 in the other slot. It submits k+1 only after k's
//! fdatasync completed: recovery relies on "a durable frame of batch k+1 proves batch k durable".

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};
use io_uring::{opcode, squeue, types, IoUring};

use super::config::{LogConfig, WriteBackend};
use super::direct::Stager;
use super::error::StorageError;
use super::frame;
use super::ticket::Durability;

/// Submission queue entries: one write and one fsync per group commit.
const RING_ENTRIES: u32 = 8;
/// Frame buffers handed back from the writer to `append` for reuse.
const RECYCLE_FRAMES_MAX: usize = 64;

/// Which write path the writer chose at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    IoUring,
    Pwrite,
}

pub(crate) struct WriteJob {
    pub file: Arc<File>,
    /// `file` was opened with O_DIRECT: the batch is staged into an aligned buffer.
    pub direct: bool,
    pub offset: u64,
    pub frame: Vec<u8>,
    pub height: u64,
}

pub(crate) struct Writer {
    tx: Option<Sender<WriteJob>>,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) durability: Arc<Durability>,
    pub(crate) path: WritePath,
    queue_frames_max: usize,
}

/// One group commit being prepared or in flight.
#[derive(Default)]
struct Slot {
    batch: Vec<WriteJob>,
    /// Bytes of the frames in `batch`.
    bytes: usize,
    /// Frames already sealed (and staged, for O_DIRECT).
    sealed: usize,
    iovecs: Vec<libc::iovec>,
    offset: u64,
}

struct Pipeline {
    rx: Receiver<WriteJob>,
    recycle: Sender<Vec<u8>>,
    durability: Arc<Durability>,
    /// None: pwrite + fdatasync.
    ring: Option<IoUring>,
    slots: [Slot; 2],
    stager: Stager,
    pending: Option<WriteJob>,
    in_flight: Option<usize>,
    frames_max: usize,
    bytes_max: usize,
}

// SAFETY: the iovecs only point into frames and staging buffers owned by the same Pipeline.
unsafe impl Send for Pipeline {}

fn choose_ring(config: &LogConfig) -> Option<IoUring> {
    if config.write_backend == WriteBackend::Pwrite {
        tracing::info!("block log write path: pwrite + fdatasync (forced by config)");
        return None;
    }
    match IoUring::new(RING_ENTRIES) {
        Ok(ring) => {
            tracing::info!("block log write path: io_uring write + linked fdatasync");
            Some(ring)
        }
        Err(e) => {
            tracing::warn!(error = %e, "io_uring unavailable; block log write path: pwrite + fdatasync");
            None
        }
    }
}

impl Writer {
    pub(crate) fn start(
        config: &LogConfig,
        durable_height: Option<u64>,
    ) -> Result<Writer, StorageError> {
        let ring = choose_ring(config);
        let path = if ring.is_some() {
            WritePath::IoUring
        } else {
            WritePath::Pwrite
        };
        let durability = Durability::new(durable_height);
        let (tx, rx) = bounded(config.queue_frames_max);
        let (recycle, recycled) = bounded(RECYCLE_FRAMES_MAX);
        let pipeline = Pipeline {
            rx,
            recycle,
            durability: durability.clone(),
            ring,
            slots: Default::default(),
            stager: Stager::new(config.batch_bytes_max, config.frame_bytes_max()),
            pending: None,
            in_flight: None,
            frames_max: config.batch_frames_max,
            bytes_max: config.batch_bytes_max,
        };
        let thread = std::thread::Builder::new()
            .name("reckon-log-writer".into())
            .spawn(move || pipeline.run())
            .map_err(|e| StorageError::WriterFailed(format!("cannot spawn writer thread: {e}")))?;
        let queue_frames_max = config.queue_frames_max;
        Ok(Writer {
            tx: Some(tx),
            recycled,
            thread: Some(thread),
            durability,
            path,
            queue_frames_max,
        })
    }

    /// An empty frame buffer, reused from a completed group commit when one is available.
    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Queues a frame; blocks while the queue is full unless `block` is false (then `QueueFull`).
    pub(crate) fn send(&self, job: WriteJob, block: bool) -> Result<(), StorageError> {
        if let Some(message) = self.durability.failure() {
            return Err(StorageError::WriterFailed(message));
        }
        let tx = self.tx.as_ref().expect("sender lives until drop");
        let gone = || StorageError::WriterFailed("writer thread exited".into());
        if block {
            return tx.send(job).map_err(|_| gone());
        }
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => StorageError::QueueFull {
                capacity: self.queue_frames_max,
            },
            TrySendError::Disconnected(_) => gone(),
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Pipeline {
    fn run(mut self) {
        let mut next = 0usize;
        loop {
            let Some(first) = self.next_first() else {
                match self.in_flight.take() {
                    Some(slot) if self.complete(slot) => continue,
                    _ => return,
                }
            };
            self.slots[next].batch.push(first);
            self.slots[next].bytes = self.slots[next].batch[0].frame.len();
            // Gather and seal what is queued now (overlapping the batch in flight), then, once
            // that batch is durable, top up with what arrived meanwhile before submitting.
            self.gather(next);
            if let Err(e) = self.prepare(next) {
                self.fail(next, e);
                return;
            }
            if let Some(slot) = self.in_flight.take() {
                if !self.complete(slot) {
                    return;
                }
                self.gather(next);
                if let Err(e) = self.prepare(next) {
                    self.fail(next, e);
                    return;
                }
            }
            self.finish(next);
            if !self.submit(next) {
                return;
            }
            next ^= 1;
        }
    }

    /// The first frame of the next batch; while a batch is in flight, only if one is queued.
    fn next_first(&mut self) -> Option<WriteJob> {
        if let Some(job) = self.pending.take() {
            return Some(job);
        }
        if self.in_flight.is_none() {
            return self.rx.recv().ok();
        }
        self.rx.try_recv().ok()
    }

    /// Adds the contiguous frames queued behind the batch in `slot`, within the bounds.
    fn gather(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        assert!(!s.batch.is_empty(), "a batch starts with its first frame");
        while self.pending.is_none() && s.batch.len() < self.frames_max && s.bytes < self.bytes_max
        {
            let Ok(job) = self.rx.try_recv() else { break };
            let last = s.batch.last().expect("batch is not empty");
            let contiguous = job.offset == last.offset + last.frame.len() as u64;
            if !Arc::ptr_eq(&job.file, &last.file) || !contiguous {
                self.pending = Some(job);
                break;
            }
            assert_eq!(job.height, last.height + 1, "frames queue in height order");
            s.bytes += job.frame.len();
            s.batch.push(job);
        }
    }

    /// Stamps and checksums the frames not sealed yet; for O_DIRECT, stages them.
    fn prepare(&mut self, slot: usize) -> io::Result<()> {
        let s = &mut self.slots[slot];
        let batch_first_height = s.batch[0].height;
        let direct = s.batch[0].direct;
        if direct && s.sealed == 0 {
            self.stager
                .begin(slot, &s.batch[0].file, s.batch[0].offset)?;
        }
        for job in s.batch[s.sealed..].iter_mut() {
            frame::seal(&mut job.frame, batch_first_height);
            if direct {
                self.stager.push(slot, &job.frame);
            }
        }
        s.sealed = s.batch.len();
        Ok(())
    }

    /// Points the slot's iovecs at its frames, or at their aligned staging copy for O_DIRECT.
    fn finish(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        assert_eq!(
            s.sealed,
            s.batch.len(),
            "every frame is sealed before submission"
        );
        s.iovecs.clear();
        if !s.batch[0].direct {
            s.iovecs.extend(s.batch.iter().map(|j| libc::iovec {
                iov_base: j.frame.as_ptr() as *mut libc::c_void,
                iov_len: j.frame.len(),
            }));
            s.offset = s.batch[0].offset;
            return;
        }
        let (offset, staged) = self.stager.finish(slot, &s.batch[0].file);
        s.iovecs.push(libc::iovec {
            iov_base: staged.as_ptr() as *mut libc::c_void,
            iov_len: staged.len(),
        });
        s.offset = offset;
    }

    fn total(&self, slot: usize) -> usize {
        self.slots[slot].iovecs.iter().map(|v| v.iov_len).sum()
    }

    /// Starts the write + fdatasync of `slot` (io_uring), or does it synchronously (pwrite).
    fn submit(&mut self, slot: usize) -> bool {
        assert!(
            self.in_flight.is_none(),
            "one group commit in flight at a time"
        );
        assert!(
            self.total(slot) <= i32::MAX as usize,
            "a group commit fits one io_uring result"
        );
        let s = &self.slots[slot];
        let file = s.batch[0].file.clone();
        let Some(ring) = self.ring.as_mut() else {
            let done = pwrite_iovecs(&file, s.offset, &s.iovecs, 0).and_then(|()| file.sync_data());
            return match done {
                Ok(()) => self.publish(slot),
                Err(e) => self.fail(slot, e),
            };
        };
        let fd = types::Fd(file.as_raw_fd());
        let write = opcode::Writev::new(fd, s.iovecs.as_ptr(), s.iovecs.len() as u32)
            .offset(s.offset)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(1);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(2);
        // SAFETY: the iovecs and the buffers they point to stay untouched until `complete`.
        let pushed = unsafe { ring.submission().push_multiple(&[write, sync]) };
        let submitted = pushed
            .map_err(|_| io::Error::other("submission queue full"))
            .and_then(|()| ring.submit());
        if let Err(e) = submitted {
            return self.fail(slot, e);
        }
        self.in_flight = Some(slot);
        true
    }

    /// Waits for the in-flight `slot`, finishes a short write synchronously, publishes.
    fn complete(&mut self, slot: usize) -> bool {
        let ring = self
            .ring
            .as_mut()
            .expect("only io_uring leaves a batch in flight");
        let (written, synced) = match reap_two(ring) {
            Ok(results) => results,
            Err(e) => return self.fail(slot, e),
        };
        let total = self.total(slot);
        let s = &self.slots[slot];
        let file = &s.batch[0].file;
        let result = if written < 0 {
            Err(io::Error::from_raw_os_error(-written))
        } else if (written as usize) < total {
            // Short write: the linked fsync was cancelled; finish synchronously.
            pwrite_iovecs(file, s.offset, &s.iovecs, written as usize)
                .and_then(|()| file.sync_data())
        } else if synced < 0 {
            Err(io::Error::from_raw_os_error(-synced))
        } else {
            Ok(())
        };
        match result {
            Ok(()) => self.publish(slot),
            Err(e) => self.fail(slot, e),
        }
    }

    fn publish(&mut self, slot: usize) -> bool {
        let s = &mut self.slots[slot];
        let last_height = s.batch.last().expect("batch is not empty").height;
        self.durability.publish(last_height);
        s.iovecs.clear();
        s.bytes = 0;
        s.sealed = 0;
        for job in s.batch.drain(..) {
            let _ = self.recycle.try_send(job.frame);
        }
        true
    }

    fn fail(&mut self, slot: usize, e: io::Error) -> bool {
        let last_height = self.slots[slot].batch.last().map_or(0, |j| j.height);
        self.durability
            .fail(format!("group commit up to height {last_height}: {e}"));
        false
    }
}

/// Waits for the write (user_data 1) and fsync (user_data 2) completions.
fn reap_two(ring: &mut IoUring) -> io::Result<(i32, i32)> {
    let (mut written, mut synced) = (None, None);
    while written.is_none() || synced.is_none() {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            match cqe.user_data() {
                1 => written = Some(cqe.result()),
                2 => synced = Some(cqe.result()),
                other => return Err(io::Error::other(format!("unexpected completion {other}"))),
            }
        }
    }
    Ok((written.unwrap_or(-libc::EIO), synced.unwrap_or(-libc::EIO)))
}

/// pwrite of the iovecs' bytes from byte `skip` on (they are contiguous on disk from `offset`).
fn pwrite_iovecs(file: &File, offset: u64, iovecs: &[libc::iovec], skip: usize) -> io::Result<()> {
    let mut at = 0usize;
    for v in iovecs {
        // SAFETY: every iovec points into a frame or staging buffer that lives for this batch.
        let bytes = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
        if skip < at + bytes.len() {
            let from = skip.saturating_sub(at);
            file.write_all_at(&bytes[from..], offset + (at + from) as u64)?;
        }
        at += bytes.len();
    }
    Ok(())
}
