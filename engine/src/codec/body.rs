//! Request bodies (`count × EVENT_BYTES`) and replies.

use super::{DecodeError, Record};
use crate::types::{EventResult, Reply, BATCH_EVENTS_MAX, EVENT_BYTES};

/// Checks a body's length: a whole number of events, at most `BATCH_EVENTS_MAX`.
pub fn body_events_count(body: &[u8]) -> Result<usize, DecodeError> {
    if !body.len().is_multiple_of(EVENT_BYTES) {
        return Err(DecodeError::BodyLength { bytes: body.len() });
    }
    let count = body.len() / EVENT_BYTES;
    if count > BATCH_EVENTS_MAX {
        return Err(DecodeError::BodyEventsMax { count });
    }
    Ok(count)
}

/// Decodes a request body of `count × EVENT_BYTES` into records, validating every one.
pub fn decode_body<R: Record>(body: &[u8]) -> Result<Vec<R>, DecodeError> {
    let count = body_events_count(body)?;
    let mut records = Vec::with_capacity(count);
    for (index, chunk) in body.chunks_exact(EVENT_BYTES).enumerate() {
        let Ok(bytes) = <&[u8; EVENT_BYTES]>::try_from(chunk) else {
            unreachable!("chunks_exact yields whole events");
        };
        let record = R::decode(bytes).map_err(|source| DecodeError::Event {
            index: index as u32,
            source,
        })?;
        records.push(record);
    }
    assert_eq!(records.len(), count);
    Ok(records)
}

/// Encodes records into a body of `records.len() × EVENT_BYTES`.
pub fn encode_body<R: Record>(records: &[R]) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.len() * EVENT_BYTES);
    for record in records {
        body.extend_from_slice(&record.to_bytes());
    }
    body
}

/// Encodes a reply: results as 8 bytes each (index u32, code u32), records as `EVENT_BYTES` each.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Results(results) => {
            let mut out = Vec::with_capacity(results.len() * 8);
            for result in results {
                out.extend_from_slice(&result.index.to_le_bytes());
                out.extend_from_slice(&(result.code as u32).to_le_bytes());
            }
            out
        }
        Reply::Accounts(records) => encode_body(records),
        Reply::Transfers(records) => encode_body(records),
        Reply::Positions(records) => encode_body(records),
        Reply::Reconciliations(records) => encode_body(records),
    }
}

/// Decodes the results of a create reply (for clients).
pub fn decode_results(bytes: &[u8]) -> Result<Vec<EventResult>, DecodeError> {
    if !bytes.len().is_multiple_of(8) || bytes.len() / 8 > BATCH_EVENTS_MAX {
        return Err(DecodeError::BodyLength { bytes: bytes.len() });
    }
    let mut results = Vec::with_capacity(bytes.len() / 8);
    for chunk in bytes.chunks_exact(8) {
        let index = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let value = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let code = crate::types::ResultCode::from_u32(value)
            .ok_or(DecodeError::ResultCodeUnknown { value })?;
        results.push(EventResult { index, code });
    }
    Ok(results)
}
