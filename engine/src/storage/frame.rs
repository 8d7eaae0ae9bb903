//! The block frame: an 80-byte little-endian header followed by the stored payload, padded to 8.
//!
//! ```text
//! off size field
//!   0    4 magic               FRAME_MAGIC
//!   4    4 payload_bytes       stored bytes (ciphertext incl. nonce and tag when encrypted)
//!   8    8 height
//!  16    8 batch_first_height  first height of the group commit this frame was written in
//!  24   32 parent_hash         BLAKE3 hash of block height-1
//!  56    4 flags               bit 0: payload encrypted
//!  60    4 reserved            zero
//!  64   16 checksum            xxh3-128 of bytes 0..64 and the stored payload
//!  80    . payload, then zero padding to a multiple of 8
//! ```

use xxhash_rust::xxh3::Xxh3Default;

pub type BlockHash = [u8; 32];

pub const FRAME_HEADER_BYTES: usize = 80;
pub(crate) const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RFRM");
pub(crate) const FRAME_ALIGN: usize = 8;
pub(crate) const FLAG_ENCRYPTED: u32 = 1;

const OFF_MAGIC: usize = 0;
const OFF_PAYLOAD_BYTES: usize = 4;
const OFF_HEIGHT: usize = 8;
const OFF_BATCH_FIRST: usize = 16;
const OFF_PARENT: usize = 24;
const OFF_FLAGS: usize = 56;
const OFF_RESERVED: usize = 60;
const OFF_CHECKSUM: usize = 64;
const _: () = assert!(OFF_PARENT + 32 == OFF_FLAGS);
const _: () = assert!(OFF_RESERVED + 4 == OFF_CHECKSUM);
const _: () = assert!(OFF_CHECKSUM + 16 == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN));

/// Bytes a frame with `payload_bytes` of stored payload occupies on disk.
pub(crate) const fn frame_bytes(payload_bytes: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_bytes).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// The decoded header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub payload_bytes: u32,
    pub height: u64,
    pub batch_first_height: u64,
    pub parent_hash: BlockHash,
    pub flags: u32,
}

/// Why the bytes at an offset are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// The header is all zeros: nothing was ever written here (or it was zeroed).
    Zero,
    /// Fewer than a header's bytes remain.
    Short,
    BadMagic,
    /// The length runs past the end of the segment.
    Length,
    Checksum,
}

impl FrameFault {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FrameFault::Zero => "zeroed frame header",
            FrameFault::Short => "frame header cut short",
            FrameFault::BadMagic => "bad frame magic",
            FrameFault::Length => "frame length runs past the segment",
            FrameFault::Checksum => "xxh3-128 checksum mismatch",
        }
    }
}

/// Starts a frame in `buf` (cleared): header with checksum and batch fields left zero.
/// The caller appends the stored payload and then calls `finish`.
pub(crate) fn begin(buf: &mut Vec<u8>, height: u64, parent_hash: &BlockHash, flags: u32) {
    buf.clear();
    buf.resize(FRAME_HEADER_BYTES, 0);
    buf[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    buf[OFF_HEIGHT..OFF_HEIGHT + 8].copy_from_slice(&height.to_le_bytes());
    buf[OFF_PARENT..OFF_PARENT + 32].copy_from_slice(parent_hash);
    buf[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
}

/// Sets the payload length and pads the frame to `FRAME_ALIGN`.
pub(crate) fn finish(buf: &mut Vec<u8>) {
    assert!(buf.len() >= FRAME_HEADER_BYTES);
    let payload_bytes = u32::try_from(buf.len() - FRAME_HEADER_BYTES).expect("payload bounded");
    buf[OFF_PAYLOAD_BYTES..OFF_PAYLOAD_BYTES + 4].copy_from_slice(&payload_bytes.to_le_bytes());
    buf.resize(frame_bytes(payload_bytes as usize), 0);
}

/// Called by the writer once the group commit is known: stamps the batch and the checksum.
pub(crate) fn seal(frame: &mut [u8], batch_first_height: u64) {
    let header = header(frame).expect("writer seals only frames it encoded");
    assert!(batch_first_height <= header.height);
    frame[OFF_BATCH_FIRST..OFF_BATCH_FIRST + 8].copy_from_slice(&batch_first_height.to_le_bytes());
    let payload_end = FRAME_HEADER_BYTES + header.payload_bytes as usize;
    let sum = checksum(
        &frame[..OFF_CHECKSUM],
        &frame[FRAME_HEADER_BYTES..payload_end],
    );
    frame[OFF_CHECKSUM..OFF_CHECKSUM + 16].copy_from_slice(&sum.to_le_bytes());
}

fn checksum(head: &[u8], payload: &[u8]) -> u128 {
    debug_assert_eq!(head.len(), OFF_CHECKSUM);
    let mut hasher = Xxh3Default::new();
    hasher.update(head);
    hasher.update(payload);
    hasher.digest128()
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the header fields at the start of `bytes` without verifying the checksum.
pub(crate) fn header(bytes: &[u8]) -> Result<FrameHeader, FrameFault> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameFault::Short);
    }
    if le_u32(bytes, OFF_MAGIC) != FRAME_MAGIC {
        let zero = bytes[..FRAME_HEADER_BYTES].iter().all(|&b| b == 0);
        return Err(if zero {
            FrameFault::Zero
        } else {
            FrameFault::BadMagic
        });
    }
    let header = FrameHeader {
        payload_bytes: le_u32(bytes, OFF_PAYLOAD_BYTES),
        height: le_u64(bytes, OFF_HEIGHT),
        batch_first_height: le_u64(bytes, OFF_BATCH_FIRST),
        parent_hash: bytes[OFF_PARENT..OFF_PARENT + 32]
            .try_into()
            .expect("32 bytes"),
        flags: le_u32(bytes, OFF_FLAGS),
    };
    if frame_bytes(header.payload_bytes as usize) > bytes.len() {
        return Err(FrameFault::Length);
    }
    Ok(header)
}

/// Decodes and verifies the frame at the start of `bytes` (which may run past the frame).
pub(crate) fn parse(bytes: &[u8]) -> Result<FrameHeader, FrameFault> {
    let header = header(bytes)?;
    let payload_end = FRAME_HEADER_BYTES + header.payload_bytes as usize;
    let stored = u128::from_le_bytes(
        bytes[OFF_CHECKSUM..OFF_CHECKSUM + 16]
            .try_into()
            .expect("16"),
    );
    if checksum(
        &bytes[..OFF_CHECKSUM],
        &bytes[FRAME_HEADER_BYTES..payload_end],
    ) != stored
    {
        return Err(FrameFault::Checksum);
    }
    Ok(header)
}

/// The stored payload of a frame whose header was already decoded.
pub(crate) fn payload<'a>(bytes: &'a [u8], header: &FrameHeader) -> &'a [u8] {
    &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.payload_bytes as usize]
}

const HASH_PREFIX_BYTES: usize = 64;
const HASH_DOMAIN: &[u8; 16] = b"reckon-block-v1\0";

fn hash_prefix(
    height: u64,
    parent_hash: &BlockHash,
    plaintext_bytes: usize,
) -> [u8; HASH_PREFIX_BYTES] {
    let mut prefix = [0u8; HASH_PREFIX_BYTES];
    prefix[..16].copy_from_slice(HASH_DOMAIN);
    prefix[16..24].copy_from_slice(&height.to_le_bytes());
    prefix[24..32].copy_from_slice(&(plaintext_bytes as u64).to_le_bytes());
    prefix[32..].copy_from_slice(parent_hash);
    prefix
}

/// The block hash: BLAKE3 over (domain, height, plaintext length, parent hash) and the plaintext
/// payload. It does not depend on encryption, batching or placement, so every node computes the
/// same hash. It is computed on the calling thread (the execute thread, pinned): an earlier
/// version hashed payloads of 512 KiB or more as two subtrees on a scoped thread, which spawned
/// and tore down an OS thread per large block, pinned to the caller's one core by inheritance,
/// so it ran no faster and cost a thread stack's map and unmap each time (docs/CAPACITY.md,
/// session 12).
pub fn block_hash(height: u64, parent_hash: &BlockHash, plaintext: &[u8]) -> BlockHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&hash_prefix(height, parent_hash, plaintext.len()));
    hasher.update(plaintext);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_checksum_catches_flips() {
        let mut buf = Vec::new();
        begin(&mut buf, 7, &[3; 32], 0);
        buf.extend_from_slice(b"hello block");
        finish(&mut buf);
        seal(&mut buf, 5);
        assert_eq!(buf.len(), frame_bytes(11));
        assert_eq!(buf.len() % FRAME_ALIGN, 0);
        let h = parse(&buf).expect("valid frame");
        assert_eq!(
            (h.height, h.batch_first_height, h.payload_bytes),
            (7, 5, 11)
        );
        assert_eq!(payload(&buf, &h), b"hello block");
        for i in 0..FRAME_HEADER_BYTES + 11 {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(parse(&bad).is_err(), "flip at {i} undetected");
        }
        assert_eq!(header(&[0u8; 80]), Err(FrameFault::Zero));
    }

    #[test]
    fn block_hash_is_blake3_of_the_prefix_and_payload() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for len in [0, 1, 1023, 1024, 1025, (1 << 20) - 64, 1 << 20, 2_999_999] {
            let mut plain = blake3::Hasher::new();
            plain
                .update(HASH_DOMAIN)
                .update(&9u64.to_le_bytes())
                .update(&(len as u64).to_le_bytes())
                .update(&[4; 32])
                .update(&data[..len]);
            assert_eq!(
                block_hash(9, &[4; 32], &data[..len]),
                *plain.finalize().as_bytes(),
                "length {len}"
            );
        }
        assert_ne!(
            block_hash(9, &[4; 32], &data[..64]),
            block_hash(10, &[4; 32], &data[..64])
        );
        assert_ne!(
            block_hash(9, &[4; 32], &data[..64]),
            block_hash(9, &[5; 32], &data[..64])
        );
    }
}
