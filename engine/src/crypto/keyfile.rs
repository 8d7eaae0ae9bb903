//! Key files: a fixed-size record per kind, written with 0600 permissions.
//!
//! Layout (all integers little-endian):
//! `magic[8] = "RCKNKEY\0" | version u16 = 1 | kind u8 | reserved u8 = 0 | body | checksum[32] =
//! blake3(all preceding bytes)`, where the body depends on the kind:
//! - institution (1), BLS `min_sig`: `secret[32]` (big-endian scalar, as blst serialises it) |
//!   `public[96]` (compressed G2) | `pop[48]` (compressed G1): 220 bytes in all;
//! - validator (3), Ed25519: `seed[32]` (RFC 8032 secret) | `public[32]`: 108 bytes in all.
//!
//! Kind 2 was a BLS validator key (builds before validators signed with Ed25519); such a file is
//! refused with its own error.

use super::keys::{KeyError, KeyPair, ValidatedPublicKey};
use super::validator::{
    ValidatorKey, ValidatorKeyError, ValidatorPublicKey, VALIDATOR_PUBLIC_KEY_BYTES,
    VALIDATOR_SECRET_BYTES,
};
use super::{PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, SIGNATURE_BYTES};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const KEY_FILE_MAGIC: [u8; 8] = *b"RCKNKEY\0";
const KEY_FILE_VERSION: u16 = 1;
const CHECKSUM_BYTES: usize = 32;
const HEADER_BYTES: usize = 12;
/// The obsolete kind byte of a BLS validator key.
const KIND_BLS_VALIDATOR_OBSOLETE: u8 = 2;
/// Body bytes of an institution (BLS) key and of a validator (Ed25519) key.
const INSTITUTION_BODY_BYTES: usize = SECRET_KEY_BYTES + PUBLIC_KEY_BYTES + SIGNATURE_BYTES;
const VALIDATOR_BODY_BYTES: usize = VALIDATOR_SECRET_BYTES + VALIDATOR_PUBLIC_KEY_BYTES;
/// Exact size of an institution key file.
pub const KEY_FILE_BYTES: usize = HEADER_BYTES + INSTITUTION_BODY_BYTES + CHECKSUM_BYTES;
/// Exact size of a validator key file.
pub const VALIDATOR_KEY_FILE_BYTES: usize = HEADER_BYTES + VALIDATOR_BODY_BYTES + CHECKSUM_BYTES;
const _: () = assert!(KEY_FILE_BYTES == 220 && VALIDATOR_KEY_FILE_BYTES == 108);
/// Permission bits a key file may not have: any group or other access.
const KEY_FILE_MODE_FORBIDDEN: u32 = 0o077;
const KEY_FILE_MODE: u32 = 0o600;

/// What the key is for; stored in the header so a validator key is never loaded as a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    /// An institution's BLS request-signing key.
    Institution = 1,
    /// A validator's Ed25519 consensus key.
    Validator = 3,
}

impl KeyKind {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Institution),
            3 => Some(Self::Validator),
            _ => None,
        }
    }

    fn file_bytes(self) -> usize {
        match self {
            Self::Institution => KEY_FILE_BYTES,
            Self::Validator => VALIDATOR_KEY_FILE_BYTES,
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
    #[error("key file {path} is {len} bytes, expected {expected} (truncated or not a key)")]
    WrongLength {
        path: String,
        len: u64,
        expected: usize,
    },
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
    #[error(
        "key file {path} holds a BLS validator key from an older build: validators now sign \
         with Ed25519 keys; make the consortium's keys and genesis again with `reckon init`"
    )]
    ObsoleteValidatorKey { path: String },
    #[error("key file {path} is corrupt: checksum mismatch")]
    ChecksumMismatch { path: String },
    #[error("key file {path}: the stored public key does not belong to the secret key")]
    PublicKeyMismatch { path: String },
    #[error("key file {path}: {source}")]
    Key { path: String, source: KeyError },
    #[error("key file {path}: {source}")]
    ValidatorKey {
        path: String,
        source: ValidatorKeyError,
    },
}

/// Header, body and checksum of a `kind` key file.
fn encode(kind: KeyKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.file_bytes());
    out.extend_from_slice(&KEY_FILE_MAGIC);
    out.extend_from_slice(&KEY_FILE_VERSION.to_le_bytes());
    out.extend_from_slice(&[kind as u8, 0]);
    out.extend_from_slice(body);
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    assert_eq!(out.len(), kind.file_bytes());
    out
}

/// Writes an institution's BLS key to `path` with mode 0600 (also tightening an existing file's
/// mode), then fsyncs.
pub fn save_institution_key(path: &Path, pair: &KeyPair) -> Result<(), KeyFileError> {
    let mut body = Vec::with_capacity(INSTITUTION_BODY_BYTES);
    body.extend_from_slice(&pair.secret_bytes());
    body.extend_from_slice(&pair.public().to_bytes());
    body.extend_from_slice(pair.pop());
    let outcome = write(path, encode(KeyKind::Institution, &body));
    body.fill(0);
    outcome
}

/// Writes a validator's Ed25519 key to `path` with mode 0600, then fsyncs.
pub fn save_validator_key(path: &Path, key: &ValidatorKey) -> Result<(), KeyFileError> {
    let mut body = Vec::with_capacity(VALIDATOR_BODY_BYTES);
    body.extend_from_slice(&key.secret_bytes());
    body.extend_from_slice(&key.public().to_bytes());
    let outcome = write(path, encode(KeyKind::Validator, &body));
    body.fill(0);
    outcome
}

fn write(path: &Path, mut bytes: Vec<u8>) -> Result<(), KeyFileError> {
    let name = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: name.clone(),
        source,
    };
    let outcome = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(KEY_FILE_MODE)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(KEY_FILE_MODE))?;
        file.write_all(&bytes)?;
        file.sync_all()
    })()
    .map_err(io);
    bytes.fill(0);
    outcome
}

/// Loads and fully validates an institution's BLS key file.
pub fn load_institution_key(path: &Path) -> Result<KeyPair, KeyFileError> {
    let name = path.display().to_string();
    let mut body = read(path, KeyKind::Institution)?;
    let outcome = institution_from_body(&name, &body);
    body.fill(0);
    outcome
}

/// Loads and fully validates a validator's Ed25519 key file.
pub fn load_validator_key(path: &Path) -> Result<ValidatorKey, KeyFileError> {
    let name = path.display().to_string();
    let mut body = read(path, KeyKind::Validator)?;
    let outcome = validator_from_body(&name, &body);
    body.fill(0);
    outcome
}

/// The body of a `expected` key file at `path`, after the mode, length, header and checksum
/// checks.
fn read(path: &Path, expected: KeyKind) -> Result<Vec<u8>, KeyFileError> {
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
    // Read at most one byte more than the longest key file, whatever the file grew to meanwhile.
    let limit = KEY_FILE_BYTES.max(VALIDATOR_KEY_FILE_BYTES) as u64 + 1;
    let mut bytes = Vec::with_capacity(limit as usize);
    file.take(limit).read_to_end(&mut bytes).map_err(io)?;
    let outcome = check(&name, &bytes, expected).map(|body| body.to_vec());
    bytes.fill(0);
    outcome
}

/// Header, kind, length and checksum of a key file's bytes; its body on success.
fn check<'a>(name: &str, bytes: &'a [u8], expected: KeyKind) -> Result<&'a [u8], KeyFileError> {
    let path = name.to_string();
    let wrong_length = |path| KeyFileError::WrongLength {
        path,
        len: bytes.len() as u64,
        expected: expected.file_bytes(),
    };
    if bytes.len() < HEADER_BYTES {
        return Err(wrong_length(path));
    }
    if bytes[0..8] != KEY_FILE_MAGIC {
        return Err(KeyFileError::WrongMagic { path });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != KEY_FILE_VERSION {
        return Err(KeyFileError::UnsupportedVersion { path, version });
    }
    if expected == KeyKind::Validator && bytes[10] == KIND_BLS_VALIDATOR_OBSOLETE {
        return Err(KeyFileError::ObsoleteValidatorKey { path });
    }
    let found = KeyKind::from_u8(bytes[10]);
    if found != Some(expected) || bytes[11] != 0 {
        return Err(KeyFileError::WrongKind {
            path,
            expected,
            found,
        });
    }
    if bytes.len() != expected.file_bytes() {
        return Err(wrong_length(path));
    }
    let checksum_at = bytes.len() - CHECKSUM_BYTES;
    if blake3::hash(&bytes[..checksum_at]).as_bytes()[..] != bytes[checksum_at..] {
        return Err(KeyFileError::ChecksumMismatch { path });
    }
    Ok(&bytes[HEADER_BYTES..checksum_at])
}

fn institution_from_body(name: &str, body: &[u8]) -> Result<KeyPair, KeyFileError> {
    assert_eq!(body.len(), INSTITUTION_BODY_BYTES);
    let key_error = |source| KeyFileError::Key {
        path: name.to_string(),
        source,
    };
    let (secret, rest) = body.split_at(SECRET_KEY_BYTES);
    let (public, pop) = rest.split_at(PUBLIC_KEY_BYTES);
    let pair = KeyPair::from_secret_bytes(secret).map_err(key_error)?;
    let stored = ValidatedPublicKey::new(public, pop).map_err(key_error)?;
    if stored != *pair.public() {
        return Err(KeyFileError::PublicKeyMismatch {
            path: name.to_string(),
        });
    }
    assert_eq!(&pair.public().to_bytes()[..], public);
    Ok(pair)
}

fn validator_from_body(name: &str, body: &[u8]) -> Result<ValidatorKey, KeyFileError> {
    assert_eq!(body.len(), VALIDATOR_BODY_BYTES);
    let (secret, public) = body.split_at(VALIDATOR_SECRET_BYTES);
    let stored =
        ValidatorPublicKey::from_bytes(public).map_err(|source| KeyFileError::ValidatorKey {
            path: name.to_string(),
            source,
        })?;
    let secret: &[u8; VALIDATOR_SECRET_BYTES] = secret.try_into().expect("split at 32");
    let key = ValidatorKey::from_secret_bytes(secret);
    if stored != *key.public() {
        return Err(KeyFileError::PublicKeyMismatch {
            path: name.to_string(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFSET_SECRET: usize = HEADER_BYTES;
    const OFFSET_PUBLIC: usize = OFFSET_SECRET + SECRET_KEY_BYTES;
    const OFFSET_POP: usize = OFFSET_PUBLIC + PUBLIC_KEY_BYTES;

    fn saved(dir: &tempfile::TempDir) -> (std::path::PathBuf, KeyPair, Vec<u8>) {
        let path = dir.path().join("key");
        let pair = KeyPair::generate();
        save_institution_key(&path, &pair).expect("save");
        let bytes = std::fs::read(&path).expect("read back");
        (path, pair, bytes)
    }

    fn saved_validator(dir: &tempfile::TempDir) -> (std::path::PathBuf, ValidatorKey, Vec<u8>) {
        let path = dir.path().join("validator-key");
        let key = ValidatorKey::generate();
        save_validator_key(&path, &key).expect("save");
        let bytes = std::fs::read(&path).expect("read back");
        (path, key, bytes)
    }

    /// Writes `bytes`, with the trailing checksum recomputed when `fix_checksum`.
    fn rewrite(path: &Path, bytes: &[u8], fix_checksum: bool) {
        let mut bytes = bytes.to_vec();
        if fix_checksum && bytes.len() > CHECKSUM_BYTES {
            let at = bytes.len() - CHECKSUM_BYTES;
            let checksum = blake3::hash(&bytes[..at]);
            bytes[at..].copy_from_slice(checksum.as_bytes());
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
        let loaded = load_institution_key(&path).expect("load");
        assert_eq!(loaded.public(), pair.public());
        let wrong_kind = load_validator_key(&path);
        assert!(matches!(
            wrong_kind,
            Err(KeyFileError::WrongKind {
                found: Some(KeyKind::Institution),
                expected: KeyKind::Validator,
                ..
            })
        ));
    }

    #[test]
    fn validator_keys_round_trip_and_are_never_loaded_as_institution_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, key, bytes) = saved_validator(&dir);
        assert_eq!(bytes.len(), VALIDATOR_KEY_FILE_BYTES);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_validator_key(&path).expect("load");
        assert_eq!(loaded.public(), key.public());
        assert_eq!(loaded.sign(b"m"), key.sign(b"m"));
        assert!(matches!(
            load_institution_key(&path),
            Err(KeyFileError::WrongKind {
                found: Some(KeyKind::Validator),
                ..
            })
        ));
        // The stored public key must belong to the seed.
        let mut other_public = bytes.clone();
        let other = ValidatorKey::generate().public().to_bytes();
        other_public[HEADER_BYTES + VALIDATOR_SECRET_BYTES..][..32].copy_from_slice(&other);
        rewrite(&path, &other_public, true);
        assert!(matches!(
            load_validator_key(&path),
            Err(KeyFileError::PublicKeyMismatch { .. })
        ));
        // A weak public key is refused by name.
        let mut weak = bytes.clone();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        weak[HEADER_BYTES + VALIDATOR_SECRET_BYTES..][..32].copy_from_slice(&identity);
        rewrite(&path, &weak, true);
        assert!(matches!(
            load_validator_key(&path),
            Err(KeyFileError::ValidatorKey {
                source: ValidatorKeyError::Weak,
                ..
            })
        ));
    }

    #[test]
    fn a_bls_validator_key_from_an_older_build_is_refused_with_its_own_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _pair, bytes) = saved(&dir);
        let mut old = bytes.clone();
        old[10] = KIND_BLS_VALIDATOR_OBSOLETE;
        rewrite(&path, &old, true);
        let error = load_validator_key(&path).expect_err("obsolete");
        assert!(matches!(error, KeyFileError::ObsoleteValidatorKey { .. }));
        assert!(error.to_string().contains("reckon init"), "{error}");
        assert!(matches!(
            load_institution_key(&path),
            Err(KeyFileError::WrongKind { found: None, .. })
        ));
    }

    #[test]
    fn header_and_length_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _pair, bytes) = saved(&dir);
        let load = || load_institution_key(&path);
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
        let mut longer = bytes.clone();
        longer.push(0);
        rewrite(&path, &longer, true);
        assert!(matches!(
            load(),
            Err(KeyFileError::WrongLength { len, expected: KEY_FILE_BYTES, .. }) if len == KEY_FILE_BYTES as u64 + 1
        ));
    }

    #[test]
    fn corrupt_key_bytes_and_bad_pop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _pair, bytes) = saved(&dir);
        let load = || load_institution_key(&path);
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
        bad_pop[OFFSET_POP..OFFSET_POP + SIGNATURE_BYTES].copy_from_slice(other.pop());
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
        let (validator_path, key, _) = saved_validator(&dir);
        for mode in [0o644u32, 0o640, 0o604, 0o620] {
            for file in [&path, &validator_path] {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            let outcome = load_institution_key(&path);
            assert!(
                matches!(outcome, Err(KeyFileError::PermissionsTooOpen { mode: m, .. }) if m == mode)
            );
            let outcome = load_validator_key(&validator_path);
            assert!(
                matches!(outcome, Err(KeyFileError::PermissionsTooOpen { mode: m, .. }) if m == mode)
            );
        }
        // Saving again tightens the mode back to 0600.
        save_institution_key(&path, &pair).expect("save");
        assert!(load_institution_key(&path).is_ok());
        save_validator_key(&validator_path, &key).expect("save");
        assert!(load_validator_key(&validator_path).is_ok());
        let missing = load_institution_key(&dir.path().join("absent"));
        assert!(matches!(missing, Err(KeyFileError::Io { .. })));
    }
}
