//! `LogConfig`: every bound of the block log, named once, deserializable from the node's TOML.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::StorageError;
use super::frame::FRAME_HEADER_BYTES;
use super::segment::SEGMENT_HEADER_BYTES;

/// Frames within one segment are addressed with a `u32` offset in the index.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64 + 1;
/// One writev carries at most IOV_MAX (1024 on Linux) frames.
pub const BATCH_FRAMES_LIMIT: usize = 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteBackend {
    /// io_uring if `io_uring_setup` works, else pwrite + fdatasync (logged).
    #[default]
    Auto,
    /// Always pwrite + fdatasync (for tests and kernels without io_uring).
    Pwrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Cipher {
    /// XChaCha20-Poly1305 with a random 192-bit nonce per frame.
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// AES-256-GCM with a random 96-bit nonce per frame.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EncryptionConfig {
    /// 32 raw bytes or 64 hex characters; must not be readable by group or others (0600).
    pub key_file: PathBuf,
    pub cipher: Cipher,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Size of each preallocated segment file, header included.
    pub segment_bytes: u64,
    /// Largest block payload (plaintext) accepted by `append`.
    pub payload_bytes_max: usize,
    /// Capacity of the bounded queue from `append` into the writer thread, in frames.
    pub queue_frames_max: usize,
    /// Most frames one group commit (one writev + one fdatasync) covers.
    pub batch_frames_max: usize,
    /// Most bytes one group commit covers (a batch may exceed it by one frame).
    pub batch_bytes_max: usize,
    /// Write a ledger snapshot every this many blocks (0: never).
    pub snapshot_every_blocks: u64,
    /// Verify checksums of every frame of sealed (non-tail) segments on open.
    pub verify_sealed_checksums: bool,
    pub write_backend: WriteBackend,
    /// Write segments with O_DIRECT (staged through an aligned buffer) where the filesystem
    /// supports it; buffered writes otherwise.
    pub direct_io: bool,
    pub encryption: Option<EncryptionConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            payload_bytes_max: 16 << 20,
            queue_frames_max: 256,
            batch_frames_max: 512,
            batch_bytes_max: 32 << 20,
            snapshot_every_blocks: 10_000,
            verify_sealed_checksums: true,
            write_backend: WriteBackend::Auto,
            direct_io: true,
            encryption: None,
        }
    }
}

impl LogConfig {
    /// Small segments for tests: crosses segment boundaries after a few blocks.
    pub fn for_tests(segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            payload_bytes_max: (segment_bytes as usize) / 4,
            batch_bytes_max: (segment_bytes as usize) / 4,
            ..LogConfig::default()
        }
    }

    /// Largest frame on disk: header, AEAD nonce + tag, payload, padding.
    pub fn frame_bytes_max(&self) -> usize {
        FRAME_HEADER_BYTES + super::crypt::AEAD_OVERHEAD_MAX + self.payload_bytes_max + 8
    }

    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |m: &str| Err(StorageError::Config(m.to_string()));
        if self.segment_bytes > SEGMENT_BYTES_MAX || !self.segment_bytes.is_multiple_of(4096) {
            return bad("segment_bytes must be a multiple of 4096 and at most 4 GiB");
        }
        if (self.frame_bytes_max() as u64) + (SEGMENT_HEADER_BYTES as u64) > self.segment_bytes {
            return bad("payload_bytes_max does not fit in one segment");
        }
        if self.queue_frames_max == 0 || self.batch_frames_max == 0 || self.batch_bytes_max == 0 {
            return bad("queue_frames_max, batch_frames_max and batch_bytes_max must be > 0");
        }
        if self.batch_frames_max > BATCH_FRAMES_LIMIT {
            return bad("batch_frames_max must be at most 1024 (IOV_MAX)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_toml_with_defaults() {
        let text = r#"
            segment_bytes = 4194304
            payload_bytes_max = 1048576
            write_backend = "pwrite"
            [encryption]
            key_file = "/etc/reckon/log.key"
            cipher = "xchacha20-poly1305"
        "#;
        let cfg: LogConfig = toml::from_str(text).expect("parses");
        assert_eq!(cfg.segment_bytes, 4 << 20);
        assert_eq!(cfg.write_backend, WriteBackend::Pwrite);
        assert_eq!(cfg.queue_frames_max, LogConfig::default().queue_frames_max);
        assert_eq!(
            cfg.encryption.as_ref().map(|e| e.cipher),
            Some(Cipher::XChaCha20Poly1305)
        );
        cfg.validate().expect("valid");
        assert!(toml::from_str::<LogConfig>("segment_bytes = 4097")
            .expect("parses")
            .validate()
            .is_err());
        assert!(
            toml::from_str::<LogConfig>("typo_field = 1").is_err(),
            "unknown fields are refused"
        );
    }
}
