//! Segment files: `NNNNNNNNNN.seg`, preallocated to `segment_bytes`, a 4 KiB header page, frames.
//!
//! ```text
//! off size field
//!   0    8 magic           b"RCKNSEG\0"
//!   8    4 version         SEGMENT_VERSION
//!  12    4 cipher          0 none, 1 XChaCha20-Poly1305, 2 AES-256-GCM
//!  16    8 segment_index   equals the number in the file name
//!  24    8 first_height    height of the first frame in this segment
//!  32    8 segment_bytes   file size
//!  40   16 key_check       keyed BLAKE3 of a constant (zero when not encrypted)
//!  56    8 checksum        xxh3-64 of bytes 0..56
//!  64 4032 zero            frames start at SEGMENT_HEADER_BYTES
//! ```

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use xxhash_rust::xxh3::xxh3_64;

use super::error::StorageError;

pub const SEGMENT_HEADER_BYTES: usize = 4096;
const SEGMENT_MAGIC: [u8; 8] = *b"RCKNSEG\0";
const SEGMENT_VERSION: u32 = 1;
const HEADER_FIELDS_BYTES: usize = 64;
const _: () = assert!(8 + 4 + 4 + 8 + 8 + 8 + 16 + 8 == HEADER_FIELDS_BYTES);
const _: () = assert!(HEADER_FIELDS_BYTES <= SEGMENT_HEADER_BYTES);
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub cipher: u32,
    pub segment_index: u64,
    pub first_height: u64,
    pub segment_bytes: u64,
    pub key_check: [u8; 16],
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_FIELDS_BYTES] {
        let mut b = [0u8; HEADER_FIELDS_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.cipher.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_index.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_height.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        b[40..56].copy_from_slice(&self.key_check);
        let sum = xxh3_64(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8], path: &Path) -> Result<SegmentHeader, StorageError> {
        if b.len() < SEGMENT_HEADER_BYTES || b[0..8] != SEGMENT_MAGIC {
            return Err(StorageError::foreign(
                path,
                "bad segment magic (not a Reckon log segment)",
            ));
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if u64_at(56) != xxh3_64(&b[..56]) {
            return Err(StorageError::foreign(
                path,
                "segment header checksum mismatch",
            ));
        }
        if u32_at(8) != SEGMENT_VERSION {
            return Err(StorageError::foreign(
                path,
                format!("unknown segment version {}", u32_at(8)),
            ));
        }
        Ok(SegmentHeader {
            cipher: u32_at(12),
            segment_index: u64_at(16),
            first_height: u64_at(24),
            segment_bytes: u64_at(32),
            key_check: b[40..56].try_into().expect("16 bytes"),
        })
    }
}

pub(crate) fn segment_name(index: u64) -> String {
    format!("{index:010}{SEGMENT_SUFFIX}")
}

/// Parses `NNNNNNNNNN.seg`; None for any other name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// fsync of a directory, so that a create or rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
    d.sync_all().map_err(|e| StorageError::io(dir, e))
}

/// Preallocates `bytes` for `file` (fallocate; falls back to set_len where unsupported).
fn preallocate(file: &File, bytes: u64, path: &Path) -> Result<(), StorageError> {
    // SAFETY: plain syscall on an owned, open descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return file.set_len(bytes).map_err(|e| StorageError::io(path, e));
    }
    Err(StorageError::io(path, err))
}

/// Creates a segment atomically: temp file, fallocate, header, fsync, rename, fsync dir.
/// On any error the temp file is removed and no segment file appears.
pub(crate) fn create(dir: &Path, header: &SegmentHeader) -> Result<(File, PathBuf), StorageError> {
    let name = segment_name(header.segment_index);
    let path = dir.join(&name);
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StorageError::io(&temp, e))?;
        preallocate(&file, header.segment_bytes, &temp)?;
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| StorageError::io(&temp, e))?;
        file.sync_all().map_err(|e| StorageError::io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_dir(dir)?;
        Ok(file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    Ok((result?, path))
}

/// Opens an existing segment read-write and maps it read-only.
pub(crate) fn open(path: &Path) -> Result<(File, Mmap), StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    if len < SEGMENT_HEADER_BYTES as u64 {
        return Err(StorageError::foreign(
            path,
            format!("{len} bytes: shorter than a segment header"),
        ));
    }
    let map = map(&file, path)?;
    Ok((file, map))
}

/// A second descriptor opened with O_DIRECT for the writer; None if the filesystem refuses it.
pub(crate) fn open_direct(path: &Path) -> Result<Option<File>, StorageError> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::info!(path = %path.display(), "O_DIRECT not supported; buffered writes");
            Ok(None)
        }
        Err(e) => Err(StorageError::io(path, e)),
    }
}

pub(crate) fn map(file: &File, path: &Path) -> Result<Mmap, StorageError> {
    // SAFETY: the log only ever extends frames past the durable watermark, and readers only look
    // at durable frames; truncation (zeroing) of a torn tail happens before any reader exists.
    unsafe { MmapOptions::new().map(file) }.map_err(|e| StorageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_names() {
        let h = SegmentHeader {
            cipher: 1,
            segment_index: 42,
            first_height: 1000,
            segment_bytes: 1 << 20,
            key_check: [9; 16],
        };
        let mut page = vec![0u8; SEGMENT_HEADER_BYTES];
        page[..HEADER_FIELDS_BYTES].copy_from_slice(&h.encode());
        assert_eq!(
            SegmentHeader::decode(&page, Path::new("x")).expect("valid"),
            h
        );
        page[30] ^= 1;
        assert!(SegmentHeader::decode(&page, Path::new("x")).is_err());
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("0000000042.seg.tmp"), None);
        assert_eq!(parse_segment_name("42.seg"), None);
    }
}
