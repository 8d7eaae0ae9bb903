//! Scanning frames in a byte image (a mapped segment, or the simulator's in-memory log) and
//! deciding what a bad frame means: a torn tail, which is truncated, or mid-log corruption of a
//! block that was acknowledged, which refuses to open.
//!
//! The rule rests on one writer property: group commit k+1 is only written after the fdatasync of
//! group commit k completed. So a valid frame stamped with a *later* batch than a bad frame proves
//! that the bad frame's batch was durable, hence acknowledged. Without such a frame, the damage is
//! within the last batch, which may not have been acknowledged, and is truncated.

use super::crypt::{frame_aad, FrameCipher};
use super::frame::{
    self, BlockHash, FrameFault, FrameHeader, FLAG_ENCRYPTED, FRAME_ALIGN, FRAME_MAGIC,
};

pub(crate) struct ScanInput<'a> {
    /// The whole image; frames start at `start`.
    pub data: &'a [u8],
    pub start: usize,
    /// Height the first frame must have.
    pub first_height: u64,
    /// Hash the first frame's parent must equal (None: not checked).
    pub prev_hash: Option<BlockHash>,
    pub verify_checksum: bool,
    pub verify_chain: bool,
    pub cipher: Option<&'a FrameCipher>,
}

/// Where and why a scan stopped before the end of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stop {
    pub offset: usize,
    /// Height the frame at `offset` should have had.
    pub height: u64,
    pub reason: String,
    /// The header at `offset` is all zeros or cut short: nothing was written there.
    pub clean: bool,
}

pub(crate) struct ScanOutput {
    /// Offset of every valid frame, in height order.
    pub offsets: Vec<u32>,
    /// Offset just past the last valid frame.
    pub end: usize,
    /// Height and hash of the last valid frame (hash only if `verify_chain`).
    pub last: Option<(u64, Option<BlockHash>)>,
    pub stop: Stop,
}

/// What lies after a stop, within one group commit plus one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Nothing but zeros: the clean end of the log.
    Clean,
    /// Only damage or frames of the stopped frame's own batch: a torn tail of `bytes`.
    Torn {
        bytes: usize,
        height_max: Option<u64>,
    },
    /// A valid frame of a later batch: the stop is acknowledged data that was lost.
    LaterBatch { offset: usize, height: u64 },
}

/// Plaintext of a frame's stored payload.
pub(crate) fn plaintext<'a>(
    h: &FrameHeader,
    stored: &'a [u8],
    cipher: Option<&FrameCipher>,
) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    match (h.flags & FLAG_ENCRYPTED != 0, cipher) {
        (false, _) => Ok(std::borrow::Cow::Borrowed(stored)),
        (true, Some(c)) => c
            .open(stored, &frame_aad(h.height, &h.parent_hash), h.height)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| e.to_string()),
        (true, None) => Err("encrypted frame but no key configured".into()),
    }
}

/// Block hash of the valid frame at `offset`.
pub(crate) fn frame_hash(
    data: &[u8],
    offset: usize,
    cipher: Option<&FrameCipher>,
) -> Result<BlockHash, String> {
    let h = frame::header(&data[offset..]).map_err(|f| f.describe().to_string())?;
    let plain = plaintext(&h, frame::payload(&data[offset..], &h), cipher)?;
    Ok(frame::block_hash(h.height, &h.parent_hash, &plain))
}

fn check(
    input: &ScanInput,
    at: usize,
    height: u64,
    prev: Option<BlockHash>,
) -> Result<(FrameHeader, Option<BlockHash>), Stop> {
    let stop = |reason: String, clean: bool| Stop {
        offset: at,
        height,
        reason,
        clean,
    };
    let bytes = &input.data[at..];
    let parsed = if input.verify_checksum {
        frame::parse(bytes)
    } else {
        frame::header(bytes)
    };
    let h = parsed.map_err(|f| {
        stop(
            f.describe().into(),
            matches!(f, FrameFault::Zero | FrameFault::Short),
        )
    })?;
    if h.height != height {
        return Err(stop(
            format!("frame holds height {} where {height} belongs", h.height),
            false,
        ));
    }
    if h.batch_first_height > h.height {
        return Err(stop("batch stamp after own height".into(), false));
    }
    if !input.verify_chain {
        return Ok((h, None));
    }
    if prev.is_some_and(|p| p != h.parent_hash) {
        return Err(stop(
            "parent hash does not match the previous block".into(),
            false,
        ));
    }
    let plain =
        plaintext(&h, frame::payload(bytes, &h), input.cipher).map_err(|e| stop(e, false))?;
    Ok((h, Some(frame::block_hash(h.height, &h.parent_hash, &plain))))
}

/// Walks frames from `start` until the first one that is not valid (or the image ends).
pub(crate) fn scan(input: &ScanInput) -> ScanOutput {
    assert!(input.start.is_multiple_of(FRAME_ALIGN) && input.start <= input.data.len());
    let mut out = ScanOutput {
        offsets: Vec::new(),
        end: input.start,
        last: None,
        stop: Stop {
            offset: input.start,
            height: input.first_height,
            reason: String::new(),
            clean: true,
        },
    };
    let mut prev = input.prev_hash;
    loop {
        let height = input.first_height + out.offsets.len() as u64;
        match check(input, out.end, height, prev) {
            Ok((h, hash)) => {
                out.offsets
                    .push(u32::try_from(out.end).expect("segments are at most 4 GiB"));
                out.end += frame::frame_bytes(h.payload_bytes as usize);
                out.last = Some((h.height, hash));
                prev = hash.or(prev).filter(|_| input.verify_chain);
            }
            Err(stop) => {
                out.stop = stop;
                return out;
            }
        }
    }
}

/// Classifies what follows `stop` within `window` bytes (one group commit plus one frame).
pub(crate) fn after_stop(data: &[u8], stop: &Stop, window: usize) -> After {
    let limit = data.len().min(stop.offset.saturating_add(window));
    let mut height_max = None;
    let mut at = stop.offset + FRAME_ALIGN;
    while at + frame::FRAME_HEADER_BYTES <= limit {
        let magic = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        if magic != FRAME_MAGIC {
            at += FRAME_ALIGN;
            continue;
        }
        match frame::parse(&data[at..]) {
            Ok(h) if h.height >= stop.height && h.batch_first_height > stop.height => {
                return After::LaterBatch {
                    offset: at,
                    height: h.height,
                };
            }
            Ok(h) if h.height >= stop.height => {
                height_max = Some(h.height);
                at += frame::frame_bytes(h.payload_bytes as usize);
            }
            _ => at += FRAME_ALIGN,
        }
    }
    let region = &data[stop.offset..limit.max(stop.offset)];
    match region.iter().rposition(|&b| b != 0) {
        None => After::Clean,
        Some(last) => After::Torn {
            bytes: (last + 1).div_ceil(FRAME_ALIGN) * FRAME_ALIGN,
            height_max,
        },
    }
}
