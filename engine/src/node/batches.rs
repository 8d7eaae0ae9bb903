//! Batches of verified requests: the unit of dissemination. A block orders batch digests; this
//! store resolves a digest to the request bytes. Bounded: the oldest batch leaves first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::consensus::Digest;
use crate::crypto::EncodedRequest;

/// Most batches held in memory (local, received and fetched). Older batches are evicted first;
/// they are in the block log once committed, and a laggard beyond this window catches up from a
/// peer that still holds them.
pub const BATCH_STORE_BATCHES_MAX: usize = 8192;
/// Most request bytes the batch store holds (a batch may carry up to 4 MiB, so the count bound
/// alone would allow 32 GiB). Oldest batches (committed long ago, kept only for lagging peers'
/// fetches) are evicted first.
pub const BATCH_STORE_BYTES_MAX: usize = 1 << 30;
/// Most requests in one batch on the wire (a peer sending more is refused).
pub const BATCH_REQUESTS_MAX: usize = 8192;
const BATCH_DIGEST_CONTEXT: &[u8] = b"reckon.v1.batch.digest";

/// A batch: the encoded signed requests, in order. Each carries its signing digest once this
/// node computed it (at ingress for requests submitted here, when a peer batch was verified, at
/// the first `apply_block` for batches read from the log); execute reuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub requests: Vec<EncodedRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDecodeError {
    #[error("batch truncated at byte {at}")]
    Truncated { at: usize },
    #[error("batch holds {count} requests (at most {BATCH_REQUESTS_MAX})")]
    TooMany { count: usize },
    #[error("batch digest does not match its contents")]
    DigestMismatch,
    #[error("batch of chain {got:#x}, this chain is {expected:#x}")]
    WrongChain { got: u64, expected: u64 },
    #[error("trailing bytes after the batch")]
    Trailing,
}

impl AsRef<Batch> for Batch {
    fn as_ref(&self) -> &Batch {
        self
    }
}

impl Batch {
    /// BLAKE3 over a context and every request with its length.
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(BATCH_DIGEST_CONTEXT);
        for request in &self.requests {
            hasher.update(&(request.len() as u32).to_le_bytes());
            hasher.update(request);
        }
        *hasher.finalize().as_bytes()
    }

    /// Bytes `encode_into` appends.
    pub fn encoded_len(&self) -> usize {
        4 + self.requests.iter().map(|r| 4 + r.len()).sum::<usize>()
    }

    /// `count u32 | (len u32 | request bytes)*`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.requests.len() as u32).to_le_bytes());
        for request in &self.requests {
            out.extend_from_slice(&(request.len() as u32).to_le_bytes());
            out.extend_from_slice(request);
        }
    }

    /// Decodes from `bytes[*at..]`, advancing `at`.
    pub fn decode_from(bytes: &[u8], at: &mut usize) -> Result<Batch, BatchDecodeError> {
        let count = read_u32(bytes, at)? as usize;
        if count > BATCH_REQUESTS_MAX {
            return Err(BatchDecodeError::TooMany { count });
        }
        let mut requests = Vec::with_capacity(count);
        for _ in 0..count {
            let len = read_u32(bytes, at)? as usize;
            let end = at.checked_add(len).filter(|end| *end <= bytes.len());
            let end = end.ok_or(BatchDecodeError::Truncated { at: *at })?;
            requests.push(EncodedRequest::new(Arc::from(&bytes[*at..end])));
            *at = end;
        }
        Ok(Batch { requests })
    }

    /// Peer frame payload: `chain u64 | digest [32] | batch`.
    pub fn encode_peer(&self, chain: u64, digest: &Digest) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.peer_encoded_len());
        self.encode_peer_into(chain, digest, &mut out);
        out
    }

    /// Bytes `encode_peer_into` appends.
    pub fn peer_encoded_len(&self) -> usize {
        40 + self.encoded_len()
    }

    /// Appends the peer frame payload to `out` (e.g. straight after a frame header).
    pub fn encode_peer_into(&self, chain: u64, digest: &Digest, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&chain.to_le_bytes());
        out.extend_from_slice(digest);
        self.encode_into(out);
        assert_eq!(out.len() - start, self.peer_encoded_len());
    }

    pub fn decode_peer(bytes: &[u8], chain: u64) -> Result<(Digest, Batch), BatchDecodeError> {
        if bytes.len() < 40 {
            return Err(BatchDecodeError::Truncated { at: bytes.len() });
        }
        let got = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if got != chain {
            return Err(BatchDecodeError::WrongChain {
                got,
                expected: chain,
            });
        }
        let digest: Digest = bytes[8..40].try_into().expect("32 bytes");
        let mut at = 40;
        let batch = Batch::decode_from(bytes, &mut at)?;
        if at != bytes.len() {
            return Err(BatchDecodeError::Trailing);
        }
        if batch.digest() != digest {
            return Err(BatchDecodeError::DigestMismatch);
        }
        Ok((digest, batch))
    }
}

fn read_u32(bytes: &[u8], at: &mut usize) -> Result<u32, BatchDecodeError> {
    let end = *at + 4;
    let slice = bytes
        .get(*at..end)
        .ok_or(BatchDecodeError::Truncated { at: *at })?;
    *at = end;
    Ok(u32::from_le_bytes(slice.try_into().expect("4 bytes")))
}

#[derive(Default)]
struct Inner {
    batches: HashMap<Digest, Arc<Batch>>,
    order: VecDeque<Digest>,
    /// Request bytes of every held batch.
    bytes: usize,
}

/// Shared by dissemination (writes) and execute (reads, waits for missing batches).
pub struct BatchStore {
    inner: Mutex<Inner>,
    arrived: Condvar,
    bytes_max: usize,
}

impl Default for BatchStore {
    fn default() -> Self {
        BatchStore::with_bytes_max(BATCH_STORE_BYTES_MAX)
    }
}

impl BatchStore {
    pub fn with_bytes_max(bytes_max: usize) -> BatchStore {
        BatchStore {
            inner: Mutex::default(),
            arrived: Condvar::new(),
            bytes_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a batch (idempotent); returns false when it was already held.
    pub fn insert(&self, digest: Digest, batch: Arc<Batch>) -> bool {
        let mut inner = self.lock();
        if inner.batches.contains_key(&digest) {
            return false;
        }
        let bytes = batch.encoded_len();
        while inner.order.len() >= BATCH_STORE_BATCHES_MAX
            || (!inner.order.is_empty() && inner.bytes + bytes > self.bytes_max)
        {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.batches.remove(&old) {
                inner.bytes -= evicted.encoded_len();
            }
        }
        inner.bytes += bytes;
        inner.batches.insert(digest, batch);
        inner.order.push_back(digest);
        assert_eq!(inner.batches.len(), inner.order.len());
        drop(inner);
        self.arrived.notify_all();
        true
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<Batch>> {
        self.lock().batches.get(digest).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().batches.len()
    }

    /// Request bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits up to `timeout` for every digest; returns the ones still missing.
    pub fn wait_for(&self, digests: &[Digest], timeout: Duration) -> Vec<Digest> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            let missing: Vec<Digest> = digests
                .iter()
                .filter(|d| !inner.batches.contains_key(*d))
                .copied()
                .collect();
            let now = Instant::now();
            if missing.is_empty() || now >= deadline {
                return missing;
            }
            inner = self
                .arrived
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_encoding_round_trips_and_refuses_damage() {
        let batch = Batch {
            requests: vec![vec![1u8, 2, 3].into(), vec![9u8; 40].into()],
        };
        let digest = batch.digest();
        let bytes = batch.encode_peer(7, &digest);
        assert_eq!(Batch::decode_peer(&bytes, 7), Ok((digest, batch.clone())));
        assert!(matches!(
            Batch::decode_peer(&bytes, 8),
            Err(BatchDecodeError::WrongChain { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(Batch::decode_peer(&bytes[..cut], 7).is_err());
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            Batch::decode_peer(&flipped, 7),
            Err(BatchDecodeError::DigestMismatch)
        );
        let store = BatchStore::default();
        assert!(store.insert(digest, Arc::new(batch)));
        assert!(store.wait_for(&[digest], Duration::ZERO).is_empty());
        assert_eq!(
            store.wait_for(&[[0; 32]], Duration::from_millis(1)).len(),
            1
        );
    }

    #[test]
    fn the_store_is_bounded_in_bytes_and_evicts_the_oldest_first() {
        let store = BatchStore::with_bytes_max(1 << 20);
        let big = |tag: u8| Batch {
            requests: vec![vec![tag; 96 << 10].into()],
        };
        let mut digests = Vec::new();
        for tag in 0..12u8 {
            let batch = big(tag);
            let digest = batch.digest();
            assert!(store.insert(digest, Arc::new(batch)));
            digests.push(digest);
            assert!(store.bytes() <= 1 << 20, "{}", store.bytes());
        }
        // 12 x 96 KiB > 1 MiB: the oldest went, the newest stayed.
        assert!(store.get(&digests[0]).is_none());
        assert!(store.get(&digests[11]).is_some());
        assert_eq!(store.bytes(), store.len() * big(0).encoded_len());
    }
}
