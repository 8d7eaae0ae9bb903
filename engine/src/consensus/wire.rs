//! Canonical little-endian byte encoding helpers. Decoding never panics: every read is bounds-checked
//! and every length prefix is checked against a named maximum before anything is allocated.

use thiserror::Error;

/// Why a byte string is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message truncated")]
    Truncated,
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    #[error("length {len} exceeds maximum {max}")]
    TooLong { len: usize, max: usize },
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
    #[error("field out of range: {0}")]
    OutOfRange(&'static str),
}

/// Appends fixed-size little-endian fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.bytes.extend_from_slice(v);
    }
    /// A length prefix (u32); the caller has already bounded `len`.
    pub fn len(&mut self, len: usize, max: usize) {
        assert!(len <= max, "encoding a length above its bound");
        self.u32(len as u32);
    }
}

/// Reads fields back; every method returns `DecodeError::Truncated` instead of panicking.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    /// A length prefix, rejected before allocation when above `max`.
    pub fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { len, max });
        }
        Ok(len)
    }
    /// Ok only when every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        let rest = self.bytes.len() - self.at;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes(rest));
        }
        Ok(())
    }
}
