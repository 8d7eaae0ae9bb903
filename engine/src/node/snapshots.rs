//! Snapshot writer: a background thread that encodes, seals (BLAKE3) and writes the ledger
//! snapshots whose state execute takes, so neither the encoding nor the disk stalls execution.
//!
//! Execute used to write each snapshot itself: every replica stopped executing at the same
//! height, every `snapshot_every_blocks` blocks, for 1.5 s at height 10,000 and up to 8.9 s at
//! 40,000 (docs/CAPACITY.md, session 15), and encoding alone, moved off the disk, still took
//! 1.5-3.1 s. Now execute only takes a `SnapshotSource` (the transfer tables' full segments
//! shared copy-on-write, the rest copied: `Ledger::snapshot_source`) and hands it over; this
//! thread, at a lower scheduling priority, encodes, hashes and writes it in chunks that are each
//! made durable before the next, at a paced rate (`storage::write_file_atomic_paced`), so the
//! page cache never holds a whole snapshot's dirty pages for the block log's fsync to wait behind.
//!
//! Invariant: at most one snapshot is in flight. One that falls due while the previous is still
//! being written is skipped (counted, logged): the log holds every block, so a skipped snapshot
//! only lengthens the replay after a restart, and the next one is taken K blocks later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{bounded, Sender, TrySendError};

use crate::ledger::{Ledger, SnapshotSource};
use crate::storage::SnapshotStore;

use super::state::Shared;

/// Scheduling niceness of the writer thread: below the pipeline's threads (nice 0).
pub const SNAPSHOT_WRITER_NICE: i32 = 10;

struct Job {
    height: u64,
    digest: [u8; 32],
    /// Encoded and sealed by the writer.
    source: SnapshotSource,
}

pub struct SnapshotWriter {
    /// Holds at most one job: `busy` admits one at a time.
    jobs: Option<Sender<Job>>,
    /// From a submit until the thread has written that snapshot.
    busy: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What `SnapshotWriter::submit` did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Handed to the writer thread.
    Writing,
    /// The previous snapshot is still being written: this one is dropped.
    Skipped,
    /// The writer thread is gone (it panicked): nothing more is written.
    WriterGone,
}

impl SnapshotWriter {
    /// `mib_per_s`: the write's average pace (`storage.snapshot_write_mib_per_s`; 0 unpaced).
    pub fn start(
        store: SnapshotStore,
        mib_per_s: u64,
        shared: Arc<Shared>,
    ) -> std::io::Result<SnapshotWriter> {
        let pace = (mib_per_s > 0).then_some(mib_per_s << 20);
        let (jobs, queue) = bounded::<Job>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let (metrics, done) = (shared.clone(), busy.clone());
        let thread = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                lower_priority();
                for job in queue {
                    write(&store, pace, &metrics, job);
                    done.store(false, Ordering::Release);
                }
            })?;
        Ok(SnapshotWriter {
            jobs: Some(jobs),
            busy,
            thread: Some(thread),
            shared,
        })
    }

    /// Hands a snapshot to the writer unless it is busy with the previous one.
    pub fn submit(&self, height: u64, digest: [u8; 32], source: SnapshotSource) -> Submitted {
        let Some(jobs) = &self.jobs else {
            return Submitted::WriterGone;
        };
        // A thread that panicked mid-write leaves `busy` set: without this, every later snapshot
        // would be reported as skipped rather than as never to be written.
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            tracing::error!(
                height,
                "ledger snapshot writer is gone; no snapshot written"
            );
            return Submitted::WriterGone;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            self.shared.metrics.snapshots_skipped.inc();
            tracing::warn!(
                height,
                "ledger snapshot skipped: the previous one is still being written"
            );
            return Submitted::Skipped;
        }
        match jobs.try_send(Job {
            height,
            digest,
            source,
        }) {
            Ok(()) => Submitted::Writing,
            // Not busy, so the queue is empty: only a thread that is gone leaves it full.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                tracing::error!(
                    height,
                    "ledger snapshot writer is gone; no snapshot written"
                );
                Submitted::WriterGone
            }
        }
    }

    /// Waits for the snapshot being written, if any, and stops the thread.
    pub fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("ledger snapshot writer panicked");
            }
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write(store: &SnapshotStore, pace: Option<u64>, shared: &Shared, job: Job) {
    let started = Instant::now();
    let bytes = Ledger::seal_snapshot(job.source.encode());
    match store.write_paced(job.height, job.digest, &bytes, pace) {
        Ok(()) => {
            let seconds = started.elapsed().as_secs_f64();
            let m = &shared.metrics;
            m.stage_latency_s
                .with_label_values(&["snapshot_write"])
                .observe(seconds);
            m.snapshot_height.set(job.height as i64);
            tracing::info!(
                height = job.height,
                mib = bytes.len() >> 20,
                ms = (seconds * 1e3) as u64,
                "ledger snapshot written"
            );
        }
        Err(error) => tracing::warn!(height = job.height, %error, "ledger snapshot failed"),
    }
}

/// Best effort: a thread that cannot lower its priority still writes, at the pipeline's.
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id; no memory is passed.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, SNAPSHOT_WRITER_NICE)
    };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "snapshot writer keeps the default priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerConfig;
    use crate::mempool::{Mempool, MempoolConfig};
    use crate::node::metrics::Metrics;

    fn writer(dir: &std::path::Path) -> (SnapshotWriter, Arc<Shared>, SnapshotStore) {
        let store = SnapshotStore::open(dir).expect("store");
        let mempool = Mempool::new(MempoolConfig::with_institutions(1));
        let metrics = Metrics::new("node-t").expect("metrics");
        let shared = Arc::new(Shared::new(mempool, metrics));
        let writer = SnapshotWriter::start(store.clone(), 0, shared.clone()).expect("start");
        (writer, shared, store)
    }

    /// The writer seals and writes what execute encoded: the stored snapshot decodes to the same
    /// ledger, and finish waits for it.
    #[test]
    fn a_submitted_snapshot_is_written_sealed_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut writer, shared, store) = writer(dir.path());
        let mut ledger = Ledger::new(LedgerConfig::new(0));
        let digest = [7u8; 32];
        assert_eq!(
            writer.submit(10, digest, ledger.snapshot_source()),
            Submitted::Writing
        );
        writer.finish();
        let loaded = store.load_latest().expect("load").expect("a snapshot");
        assert_eq!((loaded.height, loaded.digest), (10, digest));
        assert_eq!(loaded.bytes, ledger.snapshot_bytes());
        let restored = Ledger::from_snapshot_bytes(&loaded.bytes).expect("decodes");
        assert_eq!(restored.digest(), ledger.digest());
        assert_eq!(shared.metrics.snapshot_height.get(), 10);
        // After finish nothing more is accepted, and nothing panics.
        assert_eq!(
            writer.submit(20, digest, ledger.snapshot_source()),
            Submitted::WriterGone
        );
    }

    /// A writer thread that died (panicked) mid-write is reported gone, not busy.
    #[test]
    fn a_writer_that_died_mid_write_is_reported_gone_not_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut writer, shared, _store) = self::writer(dir.path());
        writer.finish();
        // What a panic mid-write leaves: the flag set, the thread finished, the queue open.
        let (jobs, _queue) = bounded::<Job>(1);
        let thread = std::thread::spawn(|| {});
        while !thread.is_finished() {
            std::thread::yield_now();
        }
        writer.jobs = Some(jobs);
        writer.thread = Some(thread);
        writer.busy.store(true, Ordering::Release);
        let mut ledger = Ledger::new(LedgerConfig::new(0));
        assert_eq!(
            writer.submit(10, [1; 32], ledger.snapshot_source()),
            Submitted::WriterGone
        );
        assert_eq!(
            shared.metrics.snapshots_skipped.get(),
            0,
            "not counted as skipped"
        );
    }

    /// A snapshot due while the previous one is still being written is skipped and counted; the
    /// next one after the writer is free is taken.
    #[test]
    fn a_snapshot_due_while_one_is_written_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut writer, shared, store) = writer(dir.path());
        let mut ledger = Ledger::new(LedgerConfig::new(0));
        writer.busy.store(true, Ordering::Release); // as if a write were in progress
        assert_eq!(
            writer.submit(10, [1; 32], ledger.snapshot_source()),
            Submitted::Skipped
        );
        assert_eq!(shared.metrics.snapshots_skipped.get(), 1);
        writer.busy.store(false, Ordering::Release); // that write finished
        assert_eq!(
            writer.submit(20, [2; 32], ledger.snapshot_source()),
            Submitted::Writing
        );
        writer.finish();
        assert_eq!(store.heights().expect("heights"), vec![20]);
    }
}
