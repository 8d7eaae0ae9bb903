//! The client protocol: frame kinds and payload layouts on the client port (docs/PROTOCOL.md).
//!
//! All integers little-endian. Decoding never panics and every error names what was wrong.

/// Client → node: payload is a `SignedRequest` (crypto wire encoding) with a create operation.
pub const KIND_SUBMIT: u8 = 1;
/// Client → node: payload is a `SignedRequest` with a query operation.
pub const KIND_QUERY: u8 = 2;
/// Client → node: empty payload; answered with `KIND_STATUS_REPLY`.
pub const KIND_STATUS: u8 = 3;
/// Node → client: a request was committed and executed.
pub const KIND_COMMITTED: u8 = 0x81;
/// Node → client: a request was refused.
pub const KIND_REJECTED: u8 = 0x82;
/// Node → client: the answer to a query.
pub const KIND_QUERY_RESULT: u8 = 0x83;
/// Node → client: status JSON.
pub const KIND_STATUS_REPLY: u8 = 0x84;

/// Bytes before the reply in `Committed` and `QueryResult`.
pub const RESULT_HEADER_BYTES: usize = 44;
/// Bytes before the message in `Rejected`.
pub const REJECTED_HEADER_BYTES: usize = 34;
/// Longest rejection message (bytes, UTF-8, truncated at a char boundary).
pub const REJECT_MESSAGE_BYTES_MAX: usize = 512;

/// Why a request was refused. The numbers are stable wire codes; 1-6 equal `crypto::VerifyCode`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectCode {
    InvalidSignature = 1,
    UnknownInstitution = 2,
    WrongChainId = 3,
    MalformedSignature = 4,
    InfinitySignature = 5,
    BodyLength = 6,
    /// A bounded queue or the mempool is full; retry later.
    Busy = 7,
    /// The request bytes do not decode (header, lengths, reserved bytes).
    MalformedRequest = 8,
    /// The TLS client certificate names another institution than the request.
    IdentityMismatch = 9,
    /// Already committed: `height` says where. Idempotent retries land here.
    RequestReplayed = 10,
    /// The id was used before with a different request digest.
    RequestIdReused = 11,
    /// The same request is already waiting to commit.
    DuplicatePending = 12,
    /// The node is draining for shutdown.
    ShuttingDown = 13,
    /// The frame kind is unknown or its payload does not fit the kind.
    MalformedFrame = 14,
    /// A query sent as a submit or the reverse, or an unknown operation.
    WrongOperation = 15,
    /// Committed, but the ledger refused the request as a whole (e.g. a body that does not decode).
    RequestRefused = 16,
    /// The node failed internally (storage); the request may or may not commit.
    Internal = 17,
}

impl RejectCode {
    pub const ALL: [RejectCode; 17] = [
        RejectCode::InvalidSignature,
        RejectCode::UnknownInstitution,
        RejectCode::WrongChainId,
        RejectCode::MalformedSignature,
        RejectCode::InfinitySignature,
        RejectCode::BodyLength,
        RejectCode::Busy,
        RejectCode::MalformedRequest,
        RejectCode::IdentityMismatch,
        RejectCode::RequestReplayed,
        RejectCode::RequestIdReused,
        RejectCode::DuplicatePending,
        RejectCode::ShuttingDown,
        RejectCode::MalformedFrame,
        RejectCode::WrongOperation,
        RejectCode::RequestRefused,
        RejectCode::Internal,
    ];

    pub fn from_u32(value: u32) -> Option<RejectCode> {
        RejectCode::ALL.iter().copied().find(|c| *c as u32 == value)
    }

    pub fn from_verify(code: crate::crypto::VerifyCode) -> Option<RejectCode> {
        RejectCode::from_u32(code.code()).filter(|c| (*c as u32) <= 6)
    }

    /// The stable snake_case name (metrics label, logs).
    pub fn name(self) -> &'static str {
        match self {
            RejectCode::InvalidSignature => "invalid_signature",
            RejectCode::UnknownInstitution => "unknown_institution",
            RejectCode::WrongChainId => "wrong_chain_id",
            RejectCode::MalformedSignature => "malformed_signature",
            RejectCode::InfinitySignature => "infinity_signature",
            RejectCode::BodyLength => "body_length",
            RejectCode::Busy => "busy",
            RejectCode::MalformedRequest => "malformed_request",
            RejectCode::IdentityMismatch => "identity_mismatch",
            RejectCode::RequestReplayed => "request_replayed",
            RejectCode::RequestIdReused => "request_id_reused",
            RejectCode::DuplicatePending => "duplicate_pending",
            RejectCode::ShuttingDown => "shutting_down",
            RejectCode::MalformedFrame => "malformed_frame",
            RejectCode::WrongOperation => "wrong_operation",
            RejectCode::RequestRefused => "request_refused",
            RejectCode::Internal => "internal",
        }
    }
}

/// `Committed` (kind 0x81) and `QueryResult` (kind 0x83) share this layout:
/// `institution u32 @0 | request_id u128 @4 | height u64 @20 | timestamp_ns u64 @28 |
/// operation u8 @36 | reserved [3] @37 | reply_bytes u32 @40 | reply @44`.
/// The reply is the ledger's encoding: 8-byte (index u32, code u32) results for creates, 128-byte
/// records for queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub institution: u32,
    pub request_id: u128,
    pub height: u64,
    pub timestamp_ns: u64,
    pub operation: u8,
    pub reply: Vec<u8>,
}

/// `Rejected` (kind 0x82): `institution u32 @0 | request_id u128 @4 | code u32 @20 |
/// height u64 @24 (the original height for request_replayed, else 0) | message_bytes u16 @32 |
/// message UTF-8 @34`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub institution: u32,
    pub request_id: u128,
    pub code: RejectCode,
    pub height: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{kind} payload is {len} bytes, at least {min} expected")]
    Truncated {
        kind: &'static str,
        len: usize,
        min: usize,
    },
    #[error("{kind} payload is {len} bytes, its header says {expected}")]
    LengthMismatch {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("unknown rejection code {0}")]
    UnknownCode(u32),
    #[error("rejection message is not UTF-8")]
    MessageNotUtf8,
    #[error("unknown frame kind {0:#x}")]
    UnknownKind(u8),
    #[error("status reply is not JSON: {0}")]
    StatusJson(String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn u128_at(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

/// Reads (institution, request_id) from the start of a request, if it is long enough; used to
/// address a rejection of an undecodable request.
pub fn request_key_prefix(payload: &[u8]) -> (u32, u128) {
    if payload.len() < 28 {
        return (0, 0);
    }
    (u32_at(payload, 0), u128_at(payload, 12))
}

impl Outcome {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RESULT_HEADER_BYTES + self.reply.len());
        out.extend_from_slice(&self.institution.to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ns.to_le_bytes());
        out.push(self.operation);
        out.extend_from_slice(&[0u8; 3]);
        out.extend_from_slice(&(self.reply.len() as u32).to_le_bytes());
        assert_eq!(out.len(), RESULT_HEADER_BYTES);
        out.extend_from_slice(&self.reply);
        out
    }

    pub fn decode(kind: &'static str, b: &[u8]) -> Result<Outcome, ProtocolError> {
        if b.len() < RESULT_HEADER_BYTES {
            return Err(ProtocolError::Truncated {
                kind,
                len: b.len(),
                min: RESULT_HEADER_BYTES,
            });
        }
        let reply_bytes = u32_at(b, 40) as usize;
        let expected = RESULT_HEADER_BYTES.saturating_add(reply_bytes);
        if b.len() != expected {
            return Err(ProtocolError::LengthMismatch {
                kind,
                len: b.len(),
                expected,
            });
        }
        Ok(Outcome {
            institution: u32_at(b, 0),
            request_id: u128_at(b, 4),
            height: u64_at(b, 20),
            timestamp_ns: u64_at(b, 28),
            operation: b[36],
            reply: b[RESULT_HEADER_BYTES..].to_vec(),
        })
    }
}

impl Rejected {
    pub fn new(key: (u32, u128), code: RejectCode, message: impl Into<String>) -> Rejected {
        Rejected {
            institution: key.0,
            request_id: key.1,
            code,
            height: 0,
            message: message.into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.message.len().min(REJECT_MESSAGE_BYTES_MAX);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &self.message.as_bytes()[..end];
        let mut out = Vec::with_capacity(REJECTED_HEADER_BYTES + message.len());
        out.extend_from_slice(&self.institution.to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&(self.code as u32).to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&(message.len() as u16).to_le_bytes());
        assert_eq!(out.len(), REJECTED_HEADER_BYTES);
        out.extend_from_slice(message);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Rejected, ProtocolError> {
        if b.len() < REJECTED_HEADER_BYTES {
            return Err(ProtocolError::Truncated {
                kind: "rejected",
                len: b.len(),
                min: REJECTED_HEADER_BYTES,
            });
        }
        let message_bytes = u16::from_le_bytes([b[32], b[33]]) as usize;
        if b.len() != REJECTED_HEADER_BYTES + message_bytes {
            return Err(ProtocolError::LengthMismatch {
                kind: "rejected",
                len: b.len(),
                expected: REJECTED_HEADER_BYTES + message_bytes,
            });
        }
        let value = u32_at(b, 20);
        let code = RejectCode::from_u32(value).ok_or(ProtocolError::UnknownCode(value))?;
        let message = std::str::from_utf8(&b[REJECTED_HEADER_BYTES..])
            .map_err(|_| ProtocolError::MessageNotUtf8)?;
        Ok(Rejected {
            institution: u32_at(b, 0),
            request_id: u128_at(b, 4),
            code,
            height: u64_at(b, 24),
            message: message.to_string(),
        })
    }
}

/// Any frame a node sends to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeFrame {
    Committed(Outcome),
    Rejected(Rejected),
    QueryResult(Outcome),
    Status(serde_json::Value),
}

impl NodeFrame {
    pub fn decode(kind: u8, payload: &[u8]) -> Result<NodeFrame, ProtocolError> {
        match kind {
            KIND_COMMITTED => Outcome::decode("committed", payload).map(NodeFrame::Committed),
            KIND_REJECTED => Rejected::decode(payload).map(NodeFrame::Rejected),
            KIND_QUERY_RESULT => {
                Outcome::decode("query_result", payload).map(NodeFrame::QueryResult)
            }
            KIND_STATUS_REPLY => serde_json::from_slice(payload)
                .map(NodeFrame::Status)
                .map_err(|e| ProtocolError::StatusJson(e.to_string())),
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bytes_are_specific_errors() {
        let outcome = Outcome {
            institution: 3,
            request_id: 77,
            height: 9,
            timestamp_ns: 11,
            operation: 3,
            reply: vec![1, 2, 3, 4, 5, 6, 7, 8],
        };
        let bytes = outcome.encode();
        assert_eq!(Outcome::decode("committed", &bytes), Ok(outcome));
        for cut in 0..bytes.len() {
            assert!(Outcome::decode("committed", &bytes[..cut]).is_err());
        }
        let rejected = Rejected {
            height: 5,
            ..Rejected::new((2, 99), RejectCode::RequestReplayed, "already committed")
        };
        let bytes = rejected.encode();
        assert_eq!(Rejected::decode(&bytes), Ok(rejected));
        let mut bad = bytes.clone();
        bad[20] = 200;
        assert_eq!(Rejected::decode(&bad), Err(ProtocolError::UnknownCode(200)));
        for code in RejectCode::ALL {
            assert_eq!(RejectCode::from_u32(code as u32), Some(code));
        }
        assert_eq!(
            NodeFrame::decode(0x99, &[]),
            Err(ProtocolError::UnknownKind(0x99))
        );
    }
}
