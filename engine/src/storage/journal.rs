//! An append-only journal of small checksummed records with one `fdatasync` per group: the
//! consensus stage's safety state and voted blocks. It replaces a file per record (create, write,
//! fsync, rename, fsync the directory: two syncs and three metadata updates on every vote) with
//! one positional write and one `fdatasync` per group of records.
//!
//! Format: a sequence of records `len u32 LE | xxh3_64(payload) u64 LE | payload`, then zeros (space
//! written ahead). Appends are buffered; `sync` writes the buffer after the last record and
//! `fdatasync`s it. The file is extended `JOURNAL_PREALLOC_BYTES` at a time, with zeros written in
//! the same write as the records that need the room, so most syncs do not change the file's size
//! (meant to spare them a file-system metadata commit; on this VM's disk the mean sync time did
//! not measurably change: docs/CAPACITY.md, "End to end, session 4"). `rewrite`
//! replaces the whole file atomically (write a temporary file, fsync, rename, fsync the directory)
//! with a given set of records: compaction, done rarely.
//!
//! Recovery (`open`): records are read in order up to the first one that does not check. That
//! record is a torn tail, and the file is truncated there, when it claims to end at or past the end
//! of the file or when every byte after the end it claims is zero (a write into the space written
//! ahead that did not fully land). Zeros from the end of the records on are that space, not a tail.
//! Anything else (a bad record with more bytes after it) is corruption in the
//! middle and refuses to open: a lost safety record could let a node vote twice.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::snapshot::write_file_atomic_parts;

/// Bytes before each record's payload: length and checksum.
pub const JOURNAL_RECORD_HEADER_BYTES: usize = 12;
/// Largest record payload (a block with its payload digests is far below this).
pub const JOURNAL_RECORD_BYTES_MAX: usize = 16 << 20;
/// Bytes of zeros the file is extended by past the records that need room (one size change per
/// this much journal).
pub const JOURNAL_PREALLOC_BYTES: u64 = 1 << 20;

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of the file that hold complete, synced records.
    len: u64,
    /// Size of the file: the records, then zeros written ahead.
    allocated: u64,
    /// Records appended since the last `sync`, framed.
    pending: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// What `open` found.
#[derive(Debug)]
pub struct Opened {
    pub journal: Journal,
    /// Every intact record's payload, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes of a torn tail that were cut off (0 when the file ended cleanly).
    pub torn_bytes: u64,
}

fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= JOURNAL_RECORD_BYTES_MAX,
        "journal record of {} bytes",
        payload.len()
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `bytes` into intact records; returns them and the offset where intact data ends.
fn scan(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + JOURNAL_RECORD_HEADER_BYTES) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        let start = at + JOURNAL_RECORD_HEADER_BYTES;
        let Some(payload) = bytes.get(start..start + len) else {
            break;
        };
        if len == 0 || len > JOURNAL_RECORD_BYTES_MAX || xxhash_rust::xxh3::xxh3_64(payload) != sum
        {
            break;
        }
        records.push(payload.to_vec());
        at = start + len;
    }
    (records, at)
}

/// Whether the bad data from `at` on can only be a torn last write.
fn torn_tail(bytes: &[u8], at: usize) -> bool {
    let rest = &bytes[at..];
    if rest.iter().all(|b| *b == 0) {
        return true;
    }
    let Some(header) = rest.get(..JOURNAL_RECORD_HEADER_BYTES) else {
        return true; // not even a whole header
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let claimed_end = JOURNAL_RECORD_HEADER_BYTES.saturating_add(len);
    claimed_end >= rest.len() || rest[claimed_end..].iter().all(|b| *b == 0)
}

impl Journal {
    /// Opens (creating if missing) the journal at `dir/name` and reads its records.
    pub fn open(dir: &Path, name: &str) -> Result<Opened, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let bytes = std::fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
        let (records, end) = scan(&bytes);
        let mut torn_bytes = 0;
        let mut allocated = bytes.len() as u64;
        let written_ahead = bytes[end..].iter().all(|b| *b == 0);
        if !written_ahead {
            if !torn_tail(&bytes, end) {
                return Err(StorageError::JournalCorrupt {
                    path: path.clone(),
                    offset: end as u64,
                    reason: "journal record fails its checksum with intact data after it".into(),
                });
            }
            torn_bytes = (bytes.len() - end) as u64;
            file.set_len(end as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| StorageError::io(&path, e))?;
            allocated = end as u64;
        }
        Ok(Opened {
            journal: Journal {
                path,
                file,
                len: end as u64,
                allocated,
                pending: Vec::new(),
            },
            records,
            torn_bytes,
        })
    }

    /// Queues a record; it is durable after the next `sync`.
    pub fn append(&mut self, payload: &[u8]) {
        frame_into(&mut self.pending, payload);
    }

    /// Whether records are queued that `sync` has not written.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes of synced records in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.pending.is_empty()
    }

    /// Writes every queued record and waits until it is on disk (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = self.pending.len() as u64;
        let end = self.len + records;
        if end > self.allocated {
            // Zeros after the records, in the same write: the next syncs keep the file's size.
            let allocated = end + JOURNAL_PREALLOC_BYTES;
            self.pending.resize((allocated - self.len) as usize, 0);
            self.allocated = allocated;
        }
        self.file
            .write_all_at(&self.pending, self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.len = end;
        self.pending.clear();
        Ok(())
    }

    /// Replaces the journal with exactly `records` (queued ones included only if passed), atomically.
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        for record in records {
            frame_into(&mut bytes, record);
        }
        let dir = self.path.parent().expect("journal path has a directory");
        let name = self
            .path
            .file_name()
            .expect("journal path has a file name")
            .to_string_lossy()
            .to_string();
        write_file_atomic_parts(dir, &name, &[&bytes])?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.len = bytes.len() as u64;
        self.allocated = self.len;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(dir: &Path) -> Opened {
        Journal::open(dir, "j.bin").expect("opens")
    }

    #[test]
    fn records_survive_reopen_in_order_and_unsynced_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = reopen(dir.path()).journal;
        j.append(b"one");
        j.append(b"two");
        j.sync().unwrap();
        j.append(b"lost");
        drop(j);
        let opened = reopen(dir.path());
        assert_eq!(opened.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(opened.torn_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = reopen(dir.path()).journal;
        j.append(b"kept");
        j.sync().unwrap();
        j.append(b"torn record");
        j.sync().unwrap();
        let path = dir.path().join("j.bin");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(j.len() - 3).unwrap();
        drop(j);
        let mut opened = reopen(dir.path());
        assert_eq!(opened.records, vec![b"kept".to_vec()]);
        assert_eq!(opened.torn_bytes, (12 + 11 - 3) as u64);
        opened.journal.append(b"after");
        opened.journal.sync().unwrap();
        assert_eq!(
            reopen(dir.path()).records,
            vec![b"kept".to_vec(), b"after".to_vec()]
        );
    }

    #[test]
    fn the_file_is_written_ahead_and_its_zeros_are_free_space_not_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.bin");
        let mut j = reopen(dir.path()).journal;
        j.append(b"kept");
        j.sync().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, j.len() + JOURNAL_PREALLOC_BYTES);
        j.append(b"more");
        j.sync().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            size,
            "no size change"
        );
        drop(j);
        let mut opened = reopen(dir.path());
        assert_eq!(opened.records, vec![b"kept".to_vec(), b"more".to_vec()]);
        assert_eq!(opened.torn_bytes, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "not cut");
        opened.journal.append(b"after");
        opened.journal.sync().unwrap();
        let records = reopen(dir.path()).records;
        assert_eq!(
            records,
            vec![b"kept".to_vec(), b"more".to_vec(), b"after".to_vec()]
        );
    }

    #[test]
    fn the_file_grows_again_when_its_written_ahead_space_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.bin");
        let mut j = reopen(dir.path()).journal;
        let record = vec![7u8; 100_000];
        let mut count = 0;
        while j.len() <= JOURNAL_PREALLOC_BYTES {
            j.append(&record);
            j.sync().unwrap();
            count += 1;
        }
        assert!(std::fs::metadata(&path).unwrap().len() > j.len());
        drop(j);
        let opened = reopen(dir.path());
        assert_eq!(opened.records.len(), count);
        assert_eq!(opened.torn_bytes, 0);
    }

    #[test]
    fn a_record_torn_inside_the_written_ahead_space_is_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = reopen(dir.path()).journal;
        j.append(b"kept");
        j.sync().unwrap();
        let kept_end = j.len();
        j.append(b"this record loses its last bytes");
        j.sync().unwrap();
        drop(j);
        let path = dir.path().join("j.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let torn_end = kept_end as usize + 12 + 33;
        bytes[torn_end - 5..torn_end].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let mut opened = reopen(dir.path());
        assert_eq!(opened.records, vec![b"kept".to_vec()]);
        assert!(opened.torn_bytes > 0);
        opened.journal.append(b"after");
        opened.journal.sync().unwrap();
        let records = reopen(dir.path()).records;
        assert_eq!(records, vec![b"kept".to_vec(), b"after".to_vec()]);
    }

    #[test]
    fn a_bad_record_in_the_middle_refuses_to_open_and_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = reopen(dir.path()).journal;
        j.append(b"first");
        j.append(b"second");
        j.append(b"third");
        j.sync().unwrap();
        drop(j);
        let path = dir.path().join("j.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let second_payload = 12 + 5 + 12;
        bytes[second_payload] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Journal::open(dir.path(), "j.bin").unwrap_err().to_string();
        assert!(err.contains("offset 17"), "{err}");
        assert!(err.contains("checksum"), "{err}");
        // The file is left as it was for an operator to inspect.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn rewrite_replaces_everything_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = reopen(dir.path()).journal;
        for i in 0..50u32 {
            j.append(&i.to_le_bytes());
        }
        j.sync().unwrap();
        j.rewrite([&b"safety"[..], &b"block"[..]]).unwrap();
        assert_eq!(j.len(), (12 + 6 + 12 + 5) as u64);
        j.append(b"next");
        j.sync().unwrap();
        assert_eq!(
            reopen(dir.path()).records,
            vec![b"safety".to_vec(), b"block".to_vec(), b"next".to_vec()]
        );
    }
}
