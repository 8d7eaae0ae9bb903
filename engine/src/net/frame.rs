//! Length-prefixed frames: the only thing `net` knows about the bytes it carries.
//!
//! Header, 8 bytes, little-endian:
//!
//! | offset | size | field     | meaning                                                      |
//! | ------ | ---- | --------- | ------------------------------------------------------------ |
//! | 0      | 4    | `len`     | payload length in bytes (header excluded), `<= max`          |
//! | 4      | 1    | `version` | `FRAME_VERSION`; anything else is `FrameError::BadVersion`   |
//! | 5      | 1    | `kind`    | opaque to `net`, except `FRAME_KIND_NET_ERROR` (reserved)    |
//! | 6      | 2    | `flags`   | reserved, must be zero; anything else is `FrameError::BadFlags` |
//! | 8      | len  | payload   | opaque bytes                                                 |
//!
//! Decoding never panics on bad bytes: every malformed input maps to a `FrameError` variant.

use thiserror::Error;

/// Size of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The only frame version this build speaks.
pub const FRAME_VERSION: u8 = 1;

/// Largest payload any frame may carry: a 1 MiB request body (`REQUEST_BODY_BYTES_MAX`) plus 4 KiB
/// for the request header, signature and framing of the layers above. Configurable lower.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = (1 << 20) + (4 << 10);

/// Frame kind reserved for `net`'s own error reports (see `NetErrorFrame`).
pub const FRAME_KIND_NET_ERROR: u8 = 0xFF;

const _: () = assert!(
    FRAME_PAYLOAD_BYTES_MAX as usize >= crate::types::REQUEST_BODY_BYTES_MAX + 1024,
    "a frame must carry a full request body plus its header"
);

/// Why a frame was rejected. Each variant is a precise, stable reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame payload of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("frame version {got} is not supported (expected {FRAME_VERSION})")]
    BadVersion { got: u8 },
    #[error("frame flags {got:#06x} are reserved and must be zero")]
    BadFlags { got: u16 },
    #[error("frame truncated: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
}

impl FrameError {
    /// Stable one-byte code sent to the peer in a `NetErrorFrame`.
    pub fn code(&self) -> NetErrorCode {
        match self {
            FrameError::TooLarge { .. } => NetErrorCode::FrameTooLarge,
            FrameError::BadVersion { .. } => NetErrorCode::FrameBadVersion,
            FrameError::BadFlags { .. } => NetErrorCode::FrameBadFlags,
            FrameError::Truncated { .. } => NetErrorCode::FrameTruncated,
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
}

/// One whole frame: kind + payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Encodes the header of a frame with `payload_len` bytes of payload.
pub fn encode_header(kind: u8, payload_len: usize) -> [u8; FRAME_HEADER_BYTES] {
    assert!(
        payload_len <= FRAME_PAYLOAD_BYTES_MAX as usize,
        "frame payload too large"
    );
    let len = payload_len as u32;
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = FRAME_VERSION;
    header[5] = kind;
    // header[6..8]: flags, zero.
    header
}

/// Appends one encoded frame (header + payload) to `out`.
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&encode_header(kind, payload.len()));
    out.extend_from_slice(payload);
    assert_eq!(out.len() - start, FRAME_HEADER_BYTES + payload.len());
}

/// Encodes one frame into a fresh buffer.
pub fn encode_to_vec(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    encode(kind, payload, &mut out);
    out
}

/// Decodes and checks a header. Version is checked first: a bad version means the length is
/// meaningless too.
pub fn decode_header(bytes: &[u8], payload_bytes_max: u32) -> Result<FrameHeader, FrameError> {
    debug_assert!(payload_bytes_max <= FRAME_PAYLOAD_BYTES_MAX);
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES,
            got: bytes.len(),
        });
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let version = header[4];
    let kind = header[5];
    let flags = u16::from_le_bytes([header[6], header[7]]);
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion { got: version });
    }
    if flags != 0 {
        return Err(FrameError::BadFlags { got: flags });
    }
    if len > payload_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: payload_bytes_max,
        });
    }
    Ok(FrameHeader { len, kind })
}

/// Decodes one frame from the front of `bytes`; returns it with the number of bytes consumed.
/// `Truncated` means "not enough bytes yet" to a streaming caller.
pub fn decode(bytes: &[u8], payload_bytes_max: u32) -> Result<(Frame, usize), FrameError> {
    let header = decode_header(bytes, payload_bytes_max)?;
    let total = FRAME_HEADER_BYTES + header.len as usize;
    let Some(payload) = bytes.get(FRAME_HEADER_BYTES..total) else {
        return Err(FrameError::Truncated {
            needed: total,
            got: bytes.len(),
        });
    };
    let frame = Frame {
        kind: header.kind,
        payload: payload.to_vec(),
    };
    debug_assert_eq!(frame.payload.len(), header.len as usize);
    Ok((frame, total))
}

/// Incremental decoder over a byte stream. Its buffer never holds more than one maximal frame
/// plus one pushed chunk: an oversized header is rejected before its payload is buffered.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    payload_bytes_max: u32,
}

impl FrameDecoder {
    pub fn new(payload_bytes_max: u32) -> FrameDecoder {
        assert!(
            payload_bytes_max <= FRAME_PAYLOAD_BYTES_MAX,
            "limit above FRAME_PAYLOAD_BYTES_MAX"
        );
        FrameDecoder {
            buffer: Vec::new(),
            payload_bytes_max,
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the first framing error
    /// (after which the stream is unusable and the connection should close).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match decode(&self.buffer, self.payload_bytes_max) {
            Ok((frame, used)) => {
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            Err(FrameError::Truncated { .. }) => {
                let bound = FRAME_HEADER_BYTES + self.payload_bytes_max as usize;
                debug_assert!(self.buffer.len() < bound);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// Stable codes `net` itself reports to a peer before closing or refusing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NetErrorCode {
    FrameTooLarge = 1,
    FrameBadVersion = 2,
    FrameBadFlags = 3,
    FrameTruncated = 4,
    /// The receiver's inbound queue stayed full; the frame was not delivered. Retry later.
    Busy = 5,
    /// The sender used `FRAME_KIND_NET_ERROR`, which is reserved for `net`.
    ReservedKind = 6,
    Unknown = 255,
}

impl NetErrorCode {
    fn from_u8(code: u8) -> NetErrorCode {
        match code {
            1 => NetErrorCode::FrameTooLarge,
            2 => NetErrorCode::FrameBadVersion,
            3 => NetErrorCode::FrameBadFlags,
            4 => NetErrorCode::FrameTruncated,
            5 => NetErrorCode::Busy,
            6 => NetErrorCode::ReservedKind,
            _ => NetErrorCode::Unknown,
        }
    }
}

/// Longest reason text carried in a `NetErrorFrame`.
pub const NET_ERROR_REASON_BYTES_MAX: usize = 200;

/// Payload of a `FRAME_KIND_NET_ERROR` frame: `[code: u8][reason: UTF-8, <= 200 bytes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetErrorFrame {
    pub code: NetErrorCode,
    pub reason: String,
}

impl NetErrorFrame {
    pub fn encode(&self) -> Vec<u8> {
        let mut reason_len = self.reason.len().min(NET_ERROR_REASON_BYTES_MAX);
        while !self.reason.is_char_boundary(reason_len) {
            reason_len -= 1;
        }
        let mut payload = Vec::with_capacity(1 + reason_len);
        payload.push(self.code as u8);
        payload.extend_from_slice(&self.reason.as_bytes()[..reason_len]);
        encode_to_vec(FRAME_KIND_NET_ERROR, &payload)
    }

    /// Parses a received frame; `None` if it is not a net error frame.
    pub fn decode(frame: &Frame) -> Option<NetErrorFrame> {
        if frame.kind != FRAME_KIND_NET_ERROR {
            return None;
        }
        let (&code, reason) = frame.payload.split_first()?;
        let reason = String::from_utf8_lossy(reason).into_owned();
        Some(NetErrorFrame {
            code: NetErrorCode::from_u8(code),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_layout_is_exact() {
        let bytes = encode_to_vec(7, &[1, 2, 3]);
        assert_eq!(bytes, vec![3, 0, 0, 0, FRAME_VERSION, 7, 0, 0, 1, 2, 3]);
        let (frame, used) = decode(&bytes, FRAME_PAYLOAD_BYTES_MAX).expect("valid frame");
        assert_eq!(used, 11);
        assert_eq!(
            frame,
            Frame {
                kind: 7,
                payload: vec![1, 2, 3]
            }
        );
    }

    #[test]
    fn bad_headers_get_specific_errors() {
        let mut bytes = encode_to_vec(1, &[9; 16]);
        assert_eq!(
            decode(&bytes, 15),
            Err(FrameError::TooLarge { len: 16, max: 15 })
        );
        assert_eq!(
            decode(&bytes[..12], 16),
            Err(FrameError::Truncated {
                needed: 24,
                got: 12
            })
        );
        assert_eq!(
            decode(&bytes[..3], 16),
            Err(FrameError::Truncated { needed: 8, got: 3 })
        );
        bytes[6] = 1;
        assert_eq!(decode(&bytes, 16), Err(FrameError::BadFlags { got: 1 }));
        bytes[4] = 2;
        assert_eq!(decode(&bytes, 16), Err(FrameError::BadVersion { got: 2 }));
    }

    #[test]
    fn decoder_streams_byte_by_byte() {
        let mut stream = encode_to_vec(1, b"hello");
        encode(2, b"", &mut stream);
        let mut decoder = FrameDecoder::new(64);
        let mut frames = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().expect("valid stream") {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, b"hello");
        assert_eq!((frames[1].kind, frames[1].payload.len()), (2, 0));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn net_error_frame_round_trips_and_truncates_reason() {
        let long = "é".repeat(300);
        let sent = NetErrorFrame {
            code: NetErrorCode::Busy,
            reason: long,
        };
        let (frame, _) = decode(&sent.encode(), FRAME_PAYLOAD_BYTES_MAX).expect("valid");
        let got = NetErrorFrame::decode(&frame).expect("net error frame");
        assert_eq!(got.code, NetErrorCode::Busy);
        assert!(got.reason.len() <= NET_ERROR_REASON_BYTES_MAX);
        assert!(got.reason.chars().all(|c| c == 'é'));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0u32..64) {
            let mut decoder = FrameDecoder::new(max);
            decoder.push(&bytes);
            let _ = decoder.next_frame();
            let _ = decode(&bytes, max);
        }

        #[test]
        fn encode_decode_round_trip(kind in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let bytes = encode_to_vec(kind, &payload);
            let (frame, used) = decode(&bytes, FRAME_PAYLOAD_BYTES_MAX).expect("round trip");
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(frame, Frame { kind, payload });
        }
    }
}
