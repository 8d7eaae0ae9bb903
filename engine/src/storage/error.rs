//! Storage errors: one precise variant per failure an operator or the node must tell apart.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("data directory {path} does not exist")]
    DirMissing { path: PathBuf },
    #[error("{path} is not a directory (or a path component is a regular file)")]
    NotADirectory { path: PathBuf },
    #[error("permission denied on {path}: {source}")]
    PermissionDenied { path: PathBuf, source: io::Error },
    #[error("disk full while writing {path}; nothing was written past the last durable block")]
    DiskFull { path: PathBuf },
    #[error("foreign or damaged file {path} in the log directory: {reason}")]
    ForeignFile { path: PathBuf, reason: String },
    #[error(
        "corrupt block in segment {segment} at offset {offset} (height {height}): {reason}; a later \
         group commit is durable, so this block was acknowledged: refusing to open"
    )]
    MidLogCorruption {
        segment: u64,
        offset: u64,
        height: u64,
        reason: String,
    },
    #[error("corrupt journal {path} at offset {offset}: {reason}; refusing to open")]
    JournalCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("block at height {height} is not the next height {expected}")]
    HeightNotNext { height: u64, expected: u64 },
    #[error("parent hash of height {height} does not match the hash of block {}", height - 1)]
    ParentMismatch { height: u64 },
    #[error("payload of {bytes} bytes exceeds the maximum of {bytes_max} bytes")]
    PayloadTooLarge { bytes: usize, bytes_max: usize },
    #[error("writer queue is full ({capacity} frames); retry later")]
    QueueFull { capacity: usize },
    #[error("height {height} is not in the log (or not yet durable)")]
    NotFound { height: u64 },
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("decryption failed at height {height}: wrong key or tampered ciphertext")]
    Decrypt { height: u64 },
    #[error("invalid storage config: {0}")]
    Config(String),
    #[error("log writer failed, the log is read-only until reopened: {0}")]
    WriterFailed(String),
    #[error("log directory {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl StorageError {
    /// Maps an io::Error on `path` to the precise variant (ENOSPC, EACCES, ENOENT, ENOTDIR).
    pub(crate) fn io(path: &Path, source: io::Error) -> StorageError {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                StorageError::DiskFull { path }
            }
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                StorageError::PermissionDenied { path, source }
            }
            Some(libc::ENOENT) => StorageError::DirMissing { path },
            Some(libc::ENOTDIR) => StorageError::NotADirectory { path },
            _ => StorageError::Io { path, source },
        }
    }

    pub(crate) fn foreign(path: &Path, reason: impl Into<String>) -> StorageError {
        StorageError::ForeignFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
