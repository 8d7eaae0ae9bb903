//! At-rest encryption of block payloads (AEAD with a random nonce stored in every frame).
//!
//! A torn tail can be truncated and the same height rewritten with different content, so nonces
//! are never derived from (segment, height): each frame carries a fresh random nonce (192-bit for
//! XChaCha20-Poly1305, 96-bit for AES-256-GCM). The AAD binds the ciphertext to its height and
//! parent hash. The frame checksum covers the ciphertext.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use rand::RngCore;

use super::config::{Cipher, EncryptionConfig};
use super::error::StorageError;

pub const KEY_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
pub(crate) const AEAD_OVERHEAD_MAX: usize = 24 + TAG_BYTES;
pub(crate) const CIPHER_NONE: u32 = 0;
const KEY_CHECK_CONTEXT: &[u8] = b"reckon-storage-key-check-v1";

/// Reads a 32-byte key (raw, or 64 hex characters) from a file that only its owner may read.
pub fn load_key_file(path: &Path) -> Result<[u8; KEY_BYTES], StorageError> {
    let fail = |reason: String| StorageError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {mode:04o} lets group or others read it; run `chmod 600` on it"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    if bytes.len() == KEY_BYTES {
        return Ok(bytes.try_into().expect("length checked"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not 32 bytes and not hex".into()))?;
    let hex = text.trim();
    if hex.len() != 2 * KEY_BYTES || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(fail("expected 32 raw bytes or 64 hex characters".into()));
    }
    let mut key = [0u8; KEY_BYTES];
    for (i, out) in key.iter_mut().enumerate() {
        *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| fail(e.to_string()))?;
    }
    Ok(key)
}

enum Aead {
    XChaCha(Box<XChaCha20Poly1305>),
    AesGcm(Box<Aes256Gcm>),
}

pub(crate) struct FrameCipher {
    aead: Aead,
    key_check: [u8; 16],
}

impl FrameCipher {
    pub(crate) fn from_config(config: &EncryptionConfig) -> Result<FrameCipher, StorageError> {
        let key = load_key_file(&config.key_file)?;
        Ok(FrameCipher::new(config.cipher, &key))
    }

    pub(crate) fn new(cipher: Cipher, key: &[u8; KEY_BYTES]) -> FrameCipher {
        let aead = match cipher {
            Cipher::XChaCha20Poly1305 => {
                Aead::XChaCha(Box::new(XChaCha20Poly1305::new(key.into())))
            }
            Cipher::Aes256Gcm => Aead::AesGcm(Box::new(Aes256Gcm::new(key.into()))),
        };
        let check = blake3::keyed_hash(key, KEY_CHECK_CONTEXT);
        let key_check = check.as_bytes()[..16].try_into().expect("16 bytes");
        FrameCipher { aead, key_check }
    }

    /// The id stored in segment headers.
    pub(crate) fn id(&self) -> u32 {
        match self.aead {
            Aead::XChaCha(_) => 1,
            Aead::AesGcm(_) => 2,
        }
    }

    pub(crate) fn key_check(&self) -> [u8; 16] {
        self.key_check
    }

    fn nonce_bytes(&self) -> usize {
        match self.aead {
            Aead::XChaCha(_) => 24,
            Aead::AesGcm(_) => 12,
        }
    }

    /// Appends nonce || ciphertext || tag of `plaintext` to `buf` (the tests' shorthand for
    /// `seal_begin`, the plaintext, `seal_finish`).
    #[cfg(test)]
    pub(crate) fn seal_into(&self, buf: &mut Vec<u8>, aad: &[u8], plaintext: &[u8]) {
        let body_at = self.seal_begin(buf);
        buf.extend_from_slice(plaintext);
        self.seal_finish(buf, body_at, aad);
    }

    /// Appends a fresh nonce to `buf` and returns where the plaintext starts: the caller appends
    /// the plaintext straight into `buf`, then `seal_finish` encrypts it in place. So a payload
    /// written by its encoder needs no buffer of its own.
    pub(crate) fn seal_begin(&self, buf: &mut Vec<u8>) -> usize {
        let nonce_at = buf.len();
        let body_at = nonce_at + self.nonce_bytes();
        buf.resize(body_at, 0);
        rand::thread_rng().fill_bytes(&mut buf[nonce_at..]);
        body_at
    }

    /// Encrypts `buf[body_at..]` in place (`body_at` from `seal_begin`) and appends the tag.
    pub(crate) fn seal_finish(&self, buf: &mut Vec<u8>, body_at: usize, aad: &[u8]) {
        let (head, body) = buf.split_at_mut(body_at);
        let nonce = &head[body_at - self.nonce_bytes()..];
        let tag = match &self.aead {
            Aead::XChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, body),
            Aead::AesGcm(c) => c.encrypt_in_place_detached(nonce.into(), aad, body),
        }
        .expect("AEAD encryption of a bounded payload cannot fail");
        buf.extend_from_slice(&tag);
    }

    /// Decrypts nonce || ciphertext || tag; any mismatch is `Decrypt`.
    pub(crate) fn open(
        &self,
        stored: &[u8],
        aad: &[u8],
        height: u64,
    ) -> Result<Vec<u8>, StorageError> {
        let nonce_bytes = self.nonce_bytes();
        if stored.len() < nonce_bytes + TAG_BYTES {
            return Err(StorageError::Decrypt { height });
        }
        let (nonce, rest) = stored.split_at(nonce_bytes);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let mut plain = ciphertext.to_vec();
        let result = match &self.aead {
            Aead::XChaCha(c) => {
                c.decrypt_in_place_detached(nonce.into(), aad, &mut plain, tag.into())
            }
            Aead::AesGcm(c) => {
                c.decrypt_in_place_detached(nonce.into(), aad, &mut plain, tag.into())
            }
        };
        result.map_err(|_| StorageError::Decrypt { height })?;
        Ok(plain)
    }
}

/// The AAD of a frame: its height and parent hash.
pub(crate) fn frame_aad(height: u64, parent_hash: &[u8; 32]) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..8].copy_from_slice(&height.to_le_bytes());
    aad[8..].copy_from_slice(parent_hash);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let c = FrameCipher::new(cipher, &[7; KEY_BYTES]);
            let aad = frame_aad(9, &[1; 32]);
            let mut buf = vec![0xAA; 3];
            c.seal_into(&mut buf, &aad, b"secret payload");
            assert_eq!(buf.len(), 3 + c.nonce_bytes() + 14 + TAG_BYTES);
            let plain = c.open(&buf[3..], &aad, 9).expect("decrypts");
            assert_eq!(plain, b"secret payload");
            assert!(
                c.open(&buf[3..], &frame_aad(10, &[1; 32]), 10).is_err(),
                "AAD binds height"
            );
            let mut bad = buf.clone();
            bad[3 + c.nonce_bytes()] ^= 1;
            assert!(c.open(&bad[3..], &aad, 9).is_err());
            let other = FrameCipher::new(cipher, &[8; KEY_BYTES]);
            assert_ne!(other.key_check(), c.key_check());
        }
    }
}
