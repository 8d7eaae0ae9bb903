//! The writer thread: drains a bounded queue of encoded frames, groups contiguous frames into one
//! writev + fdatasync (linked with IO_LINK on io_uring, or pwrite + fdatasync), and only then
//! publishes the new durable height, which fires the tickets.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};
use io_uring::{opcode, squeue, types, IoUring};

use super::config::{LogConfig, WriteBackend};
use super::direct::Stager;
use super::error::StorageError;
use super::frame::{self, BlockHash};

/// Submission queue entries: one writev and one fsync per group commit.
const RING_ENTRIES: u32 = 8;

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

/// The durable watermark shared by the writer, the log and every ticket.
pub(crate) struct Durability {
    /// Durable height + 1 (0: nothing durable); read lock-free by `BlockLog::read`.
    durable_next: AtomicU64,
    /// Group commits (fdatasyncs) completed since open.
    group_commits: AtomicU64,
    failed: Mutex<Option<String>>,
    cond: Condvar,
}

impl Durability {
    pub(crate) fn new(durable_height: Option<u64>) -> Arc<Durability> {
        Arc::new(Durability {
            durable_next: AtomicU64::new(durable_height.map_or(0, |h| h + 1)),
            group_commits: AtomicU64::new(0),
            failed: Mutex::new(None),
            cond: Condvar::new(),
        })
    }

    pub(crate) fn durable_height(&self) -> Option<u64> {
        self.durable_next.load(Ordering::Acquire).checked_sub(1)
    }

    fn publish(&self, height: u64) {
        let guard = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.durable_next.swap(height + 1, Ordering::AcqRel);
        assert!(previous <= height, "durable height moves forward only");
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        self.cond.notify_all();
    }

    fn fail(&self, message: String) {
        tracing::error!(error = %message, "block log writer failed");
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        self.cond.notify_all();
    }

    pub(crate) fn group_commits(&self) -> u64 {
        self.group_commits.load(Ordering::Relaxed)
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Blocks until `height` is durable or the writer failed.
    pub(crate) fn wait(&self, height: u64) -> Result<(), StorageError> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.durable_next.load(Ordering::Acquire) > height {
                return Ok(());
            }
            if let Some(message) = failed.as_ref() {
                return Err(StorageError::WriterFailed(message.clone()));
            }
            failed = self.cond.wait(failed).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Fires once its block is durable (on disk after fdatasync).
#[derive(Clone)]
pub struct Ticket {
    pub(crate) height: u64,
    pub(crate) hash: BlockHash,
    pub(crate) durability: Arc<Durability>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("height", &self.height).field("durable", &self.is_durable()).finish()
    }
}

impl Ticket {
    pub fn height(&self) -> u64 {
        self.height
    }
    pub fn hash(&self) -> BlockHash {
        self.hash
    }
    pub fn is_durable(&self) -> bool {
        self.durability.durable_height().is_some_and(|h| h >= self.height)
    }
    /// Blocks until the block is durable; an error means the writer failed and it may not be.
    pub fn wait(&self) -> Result<(), StorageError> {
        self.durability.wait(self.height)
    }
}

pub(crate) struct Writer {
    tx: Option<Sender<WriteJob>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) durability: Arc<Durability>,
    pub(crate) path: WritePath,
    queue_frames_max: usize,
}

struct Io {
    /// None: pwrite + fdatasync.
    ring: Option<IoUring>,
    iovecs: Vec<libc::iovec>,
    stager: Stager,
}

// SAFETY: the iovecs only hold pointers while a batch is in flight on the writer thread.
unsafe impl Send for Io {}

fn choose_backend(config: &LogConfig) -> Io {
    let ring = if config.write_backend == WriteBackend::Pwrite {
        tracing::info!("block log write path: pwrite + fdatasync (forced by config)");
        None
    } else {
        match IoUring::new(RING_ENTRIES) {
            Ok(ring) => {
                tracing::info!("block log write path: io_uring writev + linked fdatasync");
                Some(ring)
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; block log write path: pwrite + fdatasync");
                None
            }
        }
    };
    Io { ring, iovecs: Vec::with_capacity(config.batch_frames_max), stager: Stager::default() }
}

impl Writer {
    pub(crate) fn start(config: &LogConfig, durable_height: Option<u64>) -> Result<Writer, StorageError> {
        let backend = choose_backend(config);
        let path = if backend.ring.is_some() { WritePath::IoUring } else { WritePath::Pwrite };
        let durability = Durability::new(durable_height);
        let (tx, rx) = bounded(config.queue_frames_max);
        let limits = (config.batch_frames_max, config.batch_bytes_max);
        let shared = durability.clone();
        let thread = std::thread::Builder::new()
            .name("reckon-log-writer".into())
            .spawn(move || run(rx, backend, shared, limits))
            .map_err(|e| StorageError::WriterFailed(format!("cannot spawn writer thread: {e}")))?;
        let queue_frames_max = config.queue_frames_max;
        Ok(Writer { tx: Some(tx), thread: Some(thread), durability, path, queue_frames_max })
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
            TrySendError::Full(_) => StorageError::QueueFull { capacity: self.queue_frames_max },
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

fn run(rx: Receiver<WriteJob>, mut backend: Io, durability: Arc<Durability>, limits: (usize, usize)) {
    let (frames_max, bytes_max) = limits;
    let mut batch: Vec<WriteJob> = Vec::with_capacity(frames_max);
    let mut pending: Option<WriteJob> = None;
    loop {
        let first = match pending.take().map_or_else(|| rx.recv().ok(), Some) {
            Some(job) => job,
            None => return,
        };
        batch.clear();
        let mut bytes = first.frame.len();
        batch.push(first);
        while batch.len() < frames_max && bytes < bytes_max {
            let Ok(job) = rx.try_recv() else { break };
            let last = batch.last().expect("batch is not empty");
            let contiguous = job.offset == last.offset + last.frame.len() as u64;
            if !Arc::ptr_eq(&job.file, &last.file) || !contiguous {
                pending = Some(job);
                break;
            }
            assert_eq!(job.height, last.height + 1, "frames queue in height order");
            bytes += job.frame.len();
            batch.push(job);
        }
        let batch_first_height = batch[0].height;
        for job in batch.iter_mut() {
            frame::seal(&mut job.frame, batch_first_height);
        }
        let last_height = batch.last().expect("batch is not empty").height;
        match backend.write_batch(&batch) {
            Ok(()) => durability.publish(last_height),
            Err(e) => return durability.fail(format!("group commit up to height {last_height}: {e}")),
        }
    }
}

impl Io {
    /// Points `iovecs` at the batch (or its aligned staging copy); returns the file offset.
    fn prepare(&mut self, batch: &[WriteJob]) -> io::Result<u64> {
        self.iovecs.clear();
        if !batch[0].direct {
            self.iovecs.extend(batch.iter().map(|j| libc::iovec {
                iov_base: j.frame.as_ptr() as *mut libc::c_void,
                iov_len: j.frame.len(),
            }));
            return Ok(batch[0].offset);
        }
        let (offset, staged) = self.stager.stage(batch)?;
        let iovec = libc::iovec { iov_base: staged.as_ptr() as *mut libc::c_void, iov_len: staged.len() };
        self.iovecs.push(iovec);
        Ok(offset)
    }

    fn write_batch(&mut self, batch: &[WriteJob]) -> io::Result<()> {
        let offset = self.prepare(batch)?;
        let total: usize = self.iovecs.iter().map(|v| v.iov_len).sum();
        assert!(total <= i32::MAX as usize, "a group commit fits one io_uring result");
        let file = &batch[0].file;
        let Some(ring) = self.ring.as_mut() else {
            pwrite_iovecs(file, offset, &self.iovecs, 0)?;
            return file.sync_data();
        };
        let fd = types::Fd(file.as_raw_fd());
        let write = opcode::Writev::new(fd, self.iovecs.as_ptr(), self.iovecs.len() as u32)
            .offset(offset)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(1);
        let sync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(2);
        // SAFETY: the iovecs and the buffers they point to outlive the two completions we wait for.
        unsafe { ring.submission().push_multiple(&[write, sync]) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        let (written, synced) = reap_two(ring)?;
        if written < 0 {
            return Err(io::Error::from_raw_os_error(-written));
        }
        if (written as usize) < total {
            // Short write: the linked fsync was cancelled; finish synchronously.
            pwrite_iovecs(file, offset, &self.iovecs, written as usize)?;
            return file.sync_data();
        }
        if synced < 0 {
            return Err(io::Error::from_raw_os_error(-synced));
        }
        Ok(())
    }
}

/// Waits for the writev (user_data 1) and fsync (user_data 2) completions.
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

/// pwrite of the iovecs' bytes from byte `skip` onward (they are contiguous on disk from `offset`).
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
