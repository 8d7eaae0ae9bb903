//! The key file: a fixed 220-byte record, written with 0600 permissions.
//!
//! Layout (all integers little-endian):
//! `magic[8] = "RCKNKEY\0" | version u16 = 1 | kind u8 | reserved u8 = 0 | secret[32] (big-endian
//! scalar, as blst serialises it) | public[96] (compressed G2) | pop[48] (compressed G1) |
//! checksum[32] = blake3(all preceding bytes)`.

use super::keys::{KeyError, KeyPair, ValidatedPublicKey};
use super::{PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, SIGNATURE_BYTES};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const KEY_FILE_MAGIC: [u8; 8] = *b"RCKNKEY\0";
const KEY_FILE_VERSION: u16 = 1;
const CHECKSUM_BYTES: usize = 32;
const HEADER_BYTES: usize = 12;
/// Exact size of every key file.
pub const KEY_FILE_BYTES: usize =
    HEADER_BYTES + SECRET_KEY_BYTES + PUBLIC_KEY_BYTES + SIGNATURE_BYTES + CHECKSUM_BYTES;
/// Permission bits a key file may not have: any group or other access.
const KEY_FILE_MODE_FORBIDDEN: u32 = 0o077;
const KEY_FILE_MODE: u32 = 0o600;

const OFFSET_SECRET: usize = HEADER_BYTES;
const OFFSET_PUBLIC: usize = OFFSET_SECRET + SECRET_KEY_BYTES;
const OFFSET_POP: usize = OFFSET_PUBLIC + PUBLIC_KEY_BYTES;
const OFFSET_CHECKSUM: usize = OFFSET_POP + SIGNATURE_BYTES;

/// What the key is for; stored in the header so a validator key is never loaded as a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    Institution = 1,
    Validator = 2,
}

impl KeyKind {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Institution),
            2 => Some(Self::Validator),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} has mode {mode:o}: group/other access is refused, run chmod 600")]
    PermissionsTooOpen { path: String, mode: u32 },
    #[error("key file {path} is {len} bytes, expected {KEY_FILE_BYTES} (truncated or not a key)")]
    WrongLength { path: String, len: u64 },
    #[error("key file {path} has a wrong magic number: not a Reckon key file")]
    WrongMagic { path: String },
    #[error("key file {path} has version {version}, this build reads version {KEY_FILE_VERSION}")]
    UnsupportedVersion { path: String, version: u16 },
    #[error("key file {path} holds a {found:?} key, expected a {expected:?} key")]
    WrongKind {
        path: String,
        expected: KeyKind,
        found: Option<KeyKind>,
    },
    #[error("key file {path} is corrupt: checksum mismatch")]
    ChecksumMismatch { path: String },
    #[error("key file {path}: the stored public key does not belong to the secret key")]
    PublicKeyMismatch { path: String },
    #[error("key file {path}: {source}")]
    Key { path: String, source: KeyError },
}

fn encode(kind: KeyKind, pair: &KeyPair) -> [u8; KEY_FILE_BYTES] {
    let mut out = [0u8; KEY_FILE_BYTES];
    out[0..8].copy_from_slice(&KEY_FILE_MAGIC);
    out[8..10].copy_from_slice(&KEY_FILE_VERSION.to_le_bytes());
    out[10] = kind as u8;
    out[11] = 0;
    out[OFFSET_SECRET..OFFSET_PUBLIC].copy_from_slice(&pair.secret_bytes());
    out[OFFSET_PUBLIC..OFFSET_POP].copy_from_slice(&pair.public().to_bytes());
    out[OFFSET_POP..OFFSET_CHECKSUM].copy_from_slice(pair.pop());
    let checksum = blake3::hash(&out[..OFFSET_CHECKSUM]);
    out[OFFSET_CHECKSUM..].copy_from_slice(checksum.as_bytes());
    out
}

/// Writes `pair` to `path` with mode 0600 (also tightening an existing file's mode), then fsyncs.
pub fn save_key_file(path: &Path, kind: KeyKind, pair: &KeyPair) -> Result<(), KeyFileError> {
    let name = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: name.clone(),
        source,
    };
    let mut bytes = encode(kind, pair);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(KEY_FILE_MODE))
        .map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    bytes.fill(0);
    Ok(())
}

/// Loads and fully validates a key file of the `expected` kind.
pub fn load_key_file(path: &Path, expected: KeyKind) -> Result<KeyPair, KeyFileError> {
    let name = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: name.clone(),
        source,
    };
    // Stat and read through one handle, so the checked file is the file read.
    let file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & KEY_FILE_MODE_FORBIDDEN != 0 {
        return Err(KeyFileError::PermissionsTooOpen { path: name, mode });
    }
    if metadata.len() != KEY_FILE_BYTES as u64 {
        return Err(KeyFileError::WrongLength {
            path: name,
            len: metadata.len(),
        });
    }
    // Read at most one byte more than a key file, whatever the file grew to meanwhile.
    let mut bytes = Vec::with_capacity(KEY_FILE_BYTES + 1);
    file.take(KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let outcome = decode(&name, &bytes, expected);
    bytes.fill(0);
    outcome
}

fn decode(name: &str, bytes: &[u8], expected: KeyKind) -> Result<KeyPair, KeyFileError> {
    let path = name.to_string();
    if bytes.len() != KEY_FILE_BYTES {
        return Err(KeyFileError::WrongLength {
            path,
            len: bytes.len() as u64,
        });
    }
    if bytes[0..8] != KEY_FILE_MAGIC {
        return Err(KeyFileError::WrongMagic { path });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != KEY_FILE_VERSION {
        return Err(KeyFileError::UnsupportedVersion { path, version });
    }
    let found = KeyKind::from_u8(bytes[10]);
    if found != Some(expected) || bytes[11] != 0 {
        return Err(KeyFileError::WrongKind {
            path,
            expected,
            found,
        });
    }
    if blake3::hash(&bytes[..OFFSET_CHECKSUM]).as_bytes()[..] != bytes[OFFSET_CHECKSUM..] {
        return Err(KeyFileError::ChecksumMismatch { path });
    }
    let key_error = |source| KeyFileError::Key {
        path: path.clone(),
        source,
    };
    let pair =
        KeyPair::from_secret_bytes(&bytes[OFFSET_SECRET..OFFSET_PUBLIC]).map_err(key_error)?;
    let stored = ValidatedPublicKey::new(
        &bytes[OFFSET_PUBLIC..OFFSET_POP],
        &bytes[OFFSET_POP..OFFSET_CHECKSUM],
    )
    .map_err(key_error)?;
    if stored != *pair.public() {
        return Err(KeyFileError::PublicKeyMismatch { path });
    }
    assert_eq!(
        &pair.public().to_bytes()[..],
        &bytes[OFFSET_PUBLIC..OFFSET_POP]
    );
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &tempfile::TempDir) -> (std::path::PathBuf, KeyPair, Vec<u8>) {
        let path = dir.path().join("key");
        let pair = KeyPair::generate();
        save_key_file(&path, KeyKind::Validator, &pair).expect("save");
        let bytes = std::fs::read(&path).expect("read back");
        (path, pair, bytes)
    }

    fn rewrite(path: &Path, bytes: &[u8], fix_checksum: bool) {
        let mut bytes = bytes.to_vec();
        if fix_checksum && bytes.len() == KEY_FILE_BYTES {
            let checksum = blake3::hash(&bytes[..OFFSET_CHECKSUM]);
            bytes[OFFSET_CHECKSUM..].copy_from_slice(checksum.as_bytes());
        }
        std::fs::write(path, &bytes).expect("rewrite");
    }

    #[test]
    fn round_trip_with_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, pair, bytes) = saved(&dir);
        assert_eq!(bytes.len(), KEY_FILE_BYTES);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_key_file(&path, KeyKind::Validator).expect("load");
        assert_eq!(loaded.public(), pair.public());
        let wrong_kind = load_key_file(&path, KeyKind::Institution);
        assert!(matches!(
            wrong_kind,
            Err(KeyFileError::WrongKind {
                found: Some(KeyKind::Validator),
                ..
            })
        ));
    }

    #[test]
    fn header_and_length_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _pair, bytes) = saved(&dir);
        let load = || load_key_file(&path, KeyKind::Validator);
        let mut magic = bytes.clone();
        magic[0] ^= 0xff;
        rewrite(&path, &magic, true);
        assert!(matches!(load(), Err(KeyFileError::WrongMagic { .. })));
        rewrite(&path, &bytes[..KEY_FILE_BYTES - 1], false);
        assert!(
            matches!(load(), Err(KeyFileError::WrongLength { len, .. }) if len == KEY_FILE_BYTES as u64 - 1)
        );
        rewrite(&path, &[], false);
        assert!(matches!(
            load(),
            Err(KeyFileError::WrongLength { len: 0, .. })
        ));
        let mut version = bytes.clone();
        version[8] = 9;
        rewrite(&path, &version, true);
        assert!(matches!(
            load(),
            Err(KeyFileError::UnsupportedVersion { version: 9, .. })
        ));
    }

    #[test]
    fn corrupt_key_bytes_and_bad_pop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _pair, bytes) = saved(&dir);
        let load = || load_key_file(&path, KeyKind::Validator);
        let mut flipped = bytes.clone();
        flipped[OFFSET_SECRET + 5] ^= 1;
        rewrite(&path, &flipped, false);
        assert!(matches!(load(), Err(KeyFileError::ChecksumMismatch { .. })));
        // Same flip with a recomputed checksum: the secret no longer matches the public key.
        rewrite(&path, &flipped, true);
        assert!(matches!(
            load(),
            Err(KeyFileError::PublicKeyMismatch { .. })
        ));
        let mut garbage_public = bytes.clone();
        garbage_public[OFFSET_PUBLIC..OFFSET_POP].fill(0x11);
        rewrite(&path, &garbage_public, true);
        assert!(matches!(
            load(),
            Err(KeyFileError::Key {
                source: KeyError::PublicKeyMalformed,
                ..
            })
        ));
        let other = KeyPair::generate();
        let mut bad_pop = bytes.clone();
        bad_pop[OFFSET_POP..OFFSET_CHECKSUM].copy_from_slice(other.pop());
        rewrite(&path, &bad_pop, true);
        assert!(matches!(
            load(),
            Err(KeyFileError::Key {
                source: KeyError::PopInvalid,
                ..
            })
        ));
        let mut zero_secret = bytes.clone();
        zero_secret[OFFSET_SECRET..OFFSET_PUBLIC].fill(0);
        rewrite(&path, &zero_secret, true);
        assert!(matches!(
            load(),
            Err(KeyFileError::Key {
                source: KeyError::SecretKeyInvalid,
                ..
            })
        ));
    }

    #[test]
    fn group_or_world_readable_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, pair, _bytes) = saved(&dir);
        for mode in [0o644u32, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let outcome = load_key_file(&path, KeyKind::Validator);
            assert!(
                matches!(outcome, Err(KeyFileError::PermissionsTooOpen { mode: m, .. }) if m == mode)
            );
        }
        // Saving again tightens the mode back to 0600.
        save_key_file(&path, KeyKind::Validator, &pair).expect("save");
        assert!(load_key_file(&path, KeyKind::Validator).is_ok());
        let missing = load_key_file(&dir.path().join("absent"), KeyKind::Validator);
        assert!(matches!(missing, Err(KeyFileError::Io { .. })));
    }
}
