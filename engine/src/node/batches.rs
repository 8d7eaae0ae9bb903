//! Batches of verified requests: the unit of dissemination. A block orders batch digests; this
//! store resolves a digest to the request bytes. Uncommitted batches stay until they are ordered
//! (bounded: the oldest leaves first); a committed batch stays only for a short window after its
//! block is durable in the log, and then only its digest's height is remembered (bounded) so a
//! fetch for it is served from the log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::consensus::{Digest, COMMITTED_WINDOW_MAX};
use crate::crypto::EncodedRequest;

/// Most batches held in memory (uncommitted and committed). Oldest inserted leave first.
pub const BATCH_STORE_BATCHES_MAX: usize = 8192;
/// Most request bytes held in memory (a batch may carry up to 4 MiB, so the count bound alone
/// would allow 32 GiB). Oldest inserted leave first. In steady state uncommitted batches (not
/// yet ordered) are the bulk of what is held; committed ones leave after the window below.
pub const BATCH_STORE_BYTES_MAX: usize = 1 << 30;
/// Committed batches stay in memory while their block is among the newest this many committed
/// blocks (and until the block is durable): peers a few rounds behind fetch them from memory.
pub const BATCH_STORE_COMMITTED_BLOCKS_MAX: u64 = 32;
/// Most request bytes of committed batches held in memory (about 1.5 s of commits at the e2e
/// benchmark's 20-25 MB/s per node); the oldest durable ones leave first. Small enough that the
/// allocator recycles the buffers of a steady stream of batches instead of touching fresh pages.
pub const BATCH_STORE_COMMITTED_BYTES_MAX: usize = 32 << 20;
/// Committed blocks whose batch digests are indexed (digest -> height) for fetches served from
/// the block log, by default: consensus' sync window (`BatchStore::with_index_blocks` sets the
/// node's configured one). Older batches are still served from the log when the fetch names the
/// block's height (a committed-batch fetch, `PEER_KIND_BATCH_FETCH_COMMITTED`).
pub const COMMITTED_INDEX_BLOCKS_MAX: u64 = COMMITTED_WINDOW_MAX as u64;
/// Most digests in that index, 16 per block of the window on average (about 100 bytes each with
/// the map and the eviction order: at most ~25 MiB; estimated from the entry sizes, not measured).
pub const COMMITTED_INDEX_DIGESTS_MAX: usize = 262_144;
/// Most news `BatchStore::defer_news` keeps for consensus.
pub const DEFERRED_NEWS_MAX: usize = 65_536;
/// Most digests `BatchStore::expect_certified` notes at once (a catching-up node's fetches).
pub const CERTIFIED_AWAITED_MAX: usize = 65_536;
/// Most requests in one batch on the wire (a peer sending more is refused).
pub const BATCH_REQUESTS_MAX: usize = 8192;
const BATCH_DIGEST_CONTEXT: &[u8] = b"reckon.v2.batch.digest";
/// Leaf tags of `Batch::digest`: a request that decodes, and bytes that do not.
const LEAF_REQUEST: u8 = 0;
const LEAF_RAW: u8 = 1;

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
    /// BLAKE3 over a context, the request count, and one leaf per request: its length, then
    /// for a request that decodes its signing digest and its signature bytes, for bytes that do
    /// not the BLAKE3 hash of the bytes (each leaf tagged). The signing digest covers the header
    /// and the body, and decoding is strict (the length, the header and the signature fix the
    /// layout), so a leaf binds every byte of its request, and a batch's digest binds its bytes.
    ///
    /// Why not hash the bytes: every request's signing digest is computed anyway (at ingress, or
    /// by the verifier for a peer's batch) and kept beside its bytes (`EncodedRequest`), so the
    /// digest of a verified batch costs 85 bytes of hashing per request, not a second pass over
    /// megabytes of request bodies.
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(BATCH_DIGEST_CONTEXT);
        hasher.update(&(self.requests.len() as u32).to_le_bytes());
        for request in &self.requests {
            hasher.update(&(request.len() as u32).to_le_bytes());
            match request.digested() {
                Ok(view) => {
                    hasher.update(&[LEAF_REQUEST]);
                    hasher.update(&view.digest());
                    hasher.update(view.view().signature());
                }
                Err(_) => {
                    hasher.update(&[LEAF_RAW]);
                    hasher.update(blake3::hash(request).as_bytes());
                }
            }
        }
        *hasher.finalize().as_bytes()
    }

    /// Whether `claimed` is this batch's digest (`DigestMismatch` if not). Cheap once the
    /// requests' signing digests are known (after the verifier checked them).
    pub fn check_digest(&self, claimed: &Digest) -> Result<(), BatchDecodeError> {
        if self.digest() == *claimed {
            Ok(())
        } else {
            Err(BatchDecodeError::DigestMismatch)
        }
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

    /// Decodes a peer frame payload into the digest it claims and the batch. The digest is NOT
    /// checked here: checking it hashes every request, which the verify stage does anyway, so it
    /// checks the digest there (`check_digest`) after the signatures, before the batch is held.
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

struct Held {
    batch: Arc<Batch>,
    /// Insertion sequence number (key in `Inner::order`).
    seq: u64,
    /// Height of the block that ordered it, once committed.
    committed: Option<u64>,
}

#[derive(Default)]
struct Inner {
    batches: HashMap<Digest, Held>,
    /// Every held batch by insertion order.
    order: BTreeMap<u64, Digest>,
    next_seq: u64,
    /// Request bytes of every held batch.
    bytes: usize,
    /// Held committed batches in commit order (entries whose batch already left are skipped).
    committed: VecDeque<(u64, Digest)>,
    /// Request bytes of held committed batches.
    committed_bytes: usize,
    /// Newest committed height seen.
    tip: u64,
    /// Committed batch digest -> height of the block that ordered it (bounded, oldest out).
    index: HashMap<Digest, u64>,
    index_order: VecDeque<(u64, Digest)>,
    /// Digests of batches that committed blocks order and execute is fetching
    /// (`expect_certified`): a copy that hashes to one of them needs no signature check.
    certified: HashSet<Digest>,
    /// News for consensus that found its queue full (`defer_news`): (digest, local batch).
    news: VecDeque<(Digest, bool)>,
}

impl Inner {
    fn remove(&mut self, digest: &Digest) {
        if let Some(held) = self.batches.remove(digest) {
            let bytes = held.batch.encoded_len();
            self.bytes -= bytes;
            if held.committed.is_some() {
                self.committed_bytes -= bytes;
            }
            self.order.remove(&held.seq);
        }
    }

    fn check(&self) {
        assert_eq!(self.batches.len(), self.order.len());
        assert!(self.committed_bytes <= self.bytes);
        assert!(self.index.len() <= self.index_order.len());
    }
}

/// Where a fetched digest can be served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    Memory(Arc<Batch>),
    /// Committed at this height; the batch left memory and is in the block log.
    Log(u64),
    Unknown,
}

/// Shared by dissemination (writes, serves fetches) and execute (reads, waits for missing
/// batches, marks batches committed).
pub struct BatchStore {
    inner: Mutex<Inner>,
    /// Whether `Inner::news` holds anything (checked without the lock every consensus turn).
    news_waiting: AtomicBool,
    arrived: Condvar,
    bytes_max: usize,
    committed_blocks_max: u64,
    committed_bytes_max: usize,
    /// Newest committed blocks whose digests stay indexed (at most `COMMITTED_INDEX_BLOCKS_MAX`).
    index_blocks_max: u64,
}

impl Default for BatchStore {
    fn default() -> Self {
        BatchStore::with_bounds(
            BATCH_STORE_BYTES_MAX,
            BATCH_STORE_COMMITTED_BLOCKS_MAX,
            BATCH_STORE_COMMITTED_BYTES_MAX,
        )
    }
}

impl BatchStore {
    pub fn with_bytes_max(bytes_max: usize) -> BatchStore {
        BatchStore::with_bounds(
            bytes_max,
            BATCH_STORE_COMMITTED_BLOCKS_MAX,
            BATCH_STORE_COMMITTED_BYTES_MAX,
        )
    }

    pub fn with_bounds(
        bytes_max: usize,
        committed_blocks_max: u64,
        committed_bytes_max: usize,
    ) -> BatchStore {
        BatchStore {
            inner: Mutex::default(),
            news_waiting: AtomicBool::new(false),
            arrived: Condvar::new(),
            bytes_max,
            committed_blocks_max,
            committed_bytes_max,
            index_blocks_max: COMMITTED_INDEX_BLOCKS_MAX,
        }
    }

    /// Indexes the digests of the newest `blocks` committed blocks only (1..=
    /// `COMMITTED_INDEX_BLOCKS_MAX`): the node passes its configured committed window.
    pub fn with_index_blocks(mut self, blocks: u64) -> BatchStore {
        self.index_blocks_max = blocks.clamp(1, COMMITTED_INDEX_BLOCKS_MAX);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a batch (idempotent); returns false when it was already held, or was committed
    /// and left memory (it is in the log: keeping it again would only take memory).
    /// Notes that committed blocks order these batches and execute is fetching them: the
    /// verify stage stores a copy whose digest (`Batch::digest`, binding every byte) is one of
    /// these without checking its signatures again. Sound because the block is committed: a QC
    /// certified it, so at least one honest validator held every batch it orders, and a node
    /// holds a batch only after every signature in it verified. At most
    /// `CERTIFIED_AWAITED_MAX` are noted; past that a fetched batch is verified as any other.
    pub fn expect_certified(&self, digests: impl IntoIterator<Item = Digest>) {
        let mut inner = self.lock();
        for digest in digests {
            if inner.certified.len() >= CERTIFIED_AWAITED_MAX {
                break;
            }
            if !inner.batches.contains_key(&digest) {
                inner.certified.insert(digest);
            }
        }
    }

    /// Whether a committed block orders the batch `digest` names and execute awaits it
    /// (`expect_certified`). The caller must still check that the batch hashes to `digest`.
    pub fn is_certified(&self, digest: &Digest) -> bool {
        self.lock().certified.contains(digest)
    }

    /// Keeps news for consensus whose queue was full (`consensus_stage::tell_consensus`), so
    /// that no stage ever blocks on consensus: a stage that did could close a cycle (execute
    /// waits for a batch from verify, verify for consensus' queue, consensus for execute's).
    /// At most `DEFERRED_NEWS_MAX` are kept (past it the oldest news are the least useful: a
    /// proposal that needed them has timed out).
    pub fn defer_news(&self, digest: Digest, local: bool) {
        let mut inner = self.lock();
        if inner.news.len() >= DEFERRED_NEWS_MAX {
            inner.news.pop_front();
        }
        inner.news.push_back((digest, local));
        self.news_waiting.store(true, Ordering::Release);
    }

    /// The deferred news, oldest first (empty without taking the lock when there are none).
    pub fn take_news(&self) -> VecDeque<(Digest, bool)> {
        if !self.news_waiting.swap(false, Ordering::AcqRel) {
            return VecDeque::new();
        }
        std::mem::take(&mut self.lock().news)
    }

    pub fn insert(&self, digest: Digest, batch: Arc<Batch>) -> bool {
        let mut inner = self.lock();
        inner.certified.remove(&digest);
        if inner.batches.contains_key(&digest) || inner.index.contains_key(&digest) {
            return false;
        }
        let bytes = batch.encoded_len();
        while inner.order.len() >= BATCH_STORE_BATCHES_MAX
            || (!inner.order.is_empty() && inner.bytes + bytes > self.bytes_max)
        {
            let Some((_, &old)) = inner.order.first_key_value() else {
                break;
            };
            inner.remove(&old);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += bytes;
        inner.order.insert(seq, digest);
        inner.batches.insert(
            digest,
            Held {
                batch,
                seq,
                committed: None,
            },
        );
        inner.check();
        drop(inner);
        self.arrived.notify_all();
        true
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<Batch>> {
        self.lock().batches.get(digest).map(|h| h.batch.clone())
    }

    /// True when the batch is in memory or known committed (in the log).
    pub fn contains(&self, digest: &Digest) -> bool {
        let inner = self.lock();
        inner.batches.contains_key(digest) || inner.index.contains_key(digest)
    }

    /// Height of the block that ordered this batch, if indexed.
    pub fn committed_height(&self, digest: &Digest) -> Option<u64> {
        self.lock().index.get(digest).copied()
    }

    /// Where a fetch for `digest` is served from.
    pub fn locate(&self, digest: &Digest) -> Located {
        let inner = self.lock();
        if let Some(held) = inner.batches.get(digest) {
            return Located::Memory(held.batch.clone());
        }
        match inner.index.get(digest) {
            Some(height) => Located::Log(*height),
            None => Located::Unknown,
        }
    }

    /// Records that the block at `height` (appended to the log) ordered `digests`: they are
    /// indexed for log-served fetches, and the held ones start their committed window. Then
    /// evicts what the windows allow given the log's `durable` height.
    pub fn committed(&self, height: u64, digests: &[Digest], durable: u64) {
        let mut inner = self.lock();
        inner.tip = inner.tip.max(height);
        for digest in digests {
            if inner.index.get(digest) == Some(&height) {
                continue; // indexed already (idempotent)
            }
            inner.index.insert(*digest, height);
            inner.index_order.push_back((height, *digest));
            let newly = match inner.batches.get_mut(digest) {
                Some(held) if held.committed.is_none() => {
                    held.committed = Some(height);
                    Some(held.batch.encoded_len())
                }
                _ => None,
            };
            if let Some(bytes) = newly {
                inner.committed_bytes += bytes;
                inner.committed.push_back((height, *digest));
            }
        }
        self.evict_locked(&mut inner, durable);
    }

    /// Drops committed batches past the window whose block is durable (`durable` is the log's
    /// durable height), and index entries past theirs.
    pub fn evict_committed(&self, durable: u64) {
        let mut inner = self.lock();
        self.evict_locked(&mut inner, durable);
    }

    fn evict_locked(&self, inner: &mut Inner, durable: u64) {
        while let Some(&(height, digest)) = inner.committed.front() {
            let held_here = inner
                .batches
                .get(&digest)
                .is_some_and(|h| h.committed == Some(height));
            if held_here {
                let past_window = height + self.committed_blocks_max <= inner.tip
                    || inner.committed_bytes > self.committed_bytes_max;
                if !past_window || height > durable {
                    break;
                }
                inner.remove(&digest);
            }
            inner.committed.pop_front();
        }
        while let Some(&(height, digest)) = inner.index_order.front() {
            let past = height + self.index_blocks_max <= inner.tip
                || inner.index_order.len() > COMMITTED_INDEX_DIGESTS_MAX;
            if !past {
                break;
            }
            inner.index_order.pop_front();
            if inner.index.get(&digest) == Some(&height) {
                inner.index.remove(&digest);
                // A committed batch no longer indexed must not stay in memory for ever.
                if inner
                    .batches
                    .get(&digest)
                    .is_some_and(|h| h.committed.is_some())
                {
                    inner.remove(&digest);
                }
            }
        }
        inner.check();
    }

    pub fn len(&self) -> usize {
        self.lock().batches.len()
    }

    /// Request bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Request bytes of committed batches held.
    pub fn committed_bytes(&self) -> usize {
        self.lock().committed_bytes
    }

    /// Committed digests indexed (digest -> height).
    pub fn indexed(&self) -> usize {
        self.lock().index.len()
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

    /// A digest noted as certified is known until its batch is stored, a held batch is never
    /// noted, and the set stops growing at its bound.
    #[test]
    fn certified_digests_are_noted_until_their_batch_is_stored() {
        let store = BatchStore::default();
        let held = Batch {
            requests: vec![vec![1u8; 8].into()],
        };
        let awaited = Batch {
            requests: vec![vec![2u8; 8].into()],
        };
        assert!(store.insert(held.digest(), Arc::new(held.clone())));
        store.expect_certified([held.digest(), awaited.digest()]);
        assert!(
            !store.is_certified(&held.digest()),
            "already held: nothing to await"
        );
        assert!(store.is_certified(&awaited.digest()));
        assert!(store.insert(awaited.digest(), Arc::new(awaited.clone())));
        assert!(
            !store.is_certified(&awaited.digest()),
            "stored: no longer awaited"
        );
        let many = (0..CERTIFIED_AWAITED_MAX as u32 + 10).map(|i| {
            let mut digest = [0u8; 32];
            digest[..4].copy_from_slice(&i.to_le_bytes());
            digest
        });
        store.expect_certified(many);
        assert_eq!(store.lock().certified.len(), CERTIFIED_AWAITED_MAX);
    }

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
        // Decoding does not hash; the digest check (the verify stage's) refuses the damage.
        let (claimed, damaged) = Batch::decode_peer(&flipped, 7).expect("still decodes");
        assert_eq!(claimed, digest);
        assert_eq!(
            damaged.check_digest(&claimed),
            Err(BatchDecodeError::DigestMismatch)
        );
        assert_eq!(batch.check_digest(&digest), Ok(()));
        let store = BatchStore::default();
        assert!(store.insert(digest, Arc::new(batch)));
        assert!(store.wait_for(&[digest], Duration::ZERO).is_empty());
        assert_eq!(
            store.wait_for(&[[0; 32]], Duration::from_millis(1)).len(),
            1
        );
    }

    #[test]
    fn the_batch_digest_binds_every_request_byte_and_reuses_the_signing_digests() {
        use crate::crypto::{KeyPair, Request};
        use crate::types::EVENT_BYTES;
        let pair = KeyPair::generate();
        let wire = Request {
            institution: 1,
            chain_id: 7,
            request_id: 99,
            operation: 1,
            body: vec![5u8; 3 * EVENT_BYTES],
        }
        .sign(&pair)
        .expect("sign")
        .encode();
        let batch_of = |bytes: Vec<u8>| Batch {
            requests: vec![bytes.into()],
        };
        let batch = batch_of(wire.clone());
        assert!(batch.requests[0].known_digest().is_none());
        let digest = batch.digest();
        // The digest left the request's signing digest in its cell, for execute to reuse.
        assert!(batch.requests[0].known_digest().is_some());
        assert_eq!(
            batch_of(wire.clone()).digest(),
            digest,
            "a function of the bytes"
        );
        // Any changed byte (header, body, signature) changes the digest; so does a cut.
        for at in [0, 40, wire.len() - 1] {
            let mut changed = wire.clone();
            changed[at] ^= 1;
            assert_ne!(batch_of(changed).digest(), digest, "byte {at}");
        }
        let cut = batch_of(wire[..wire.len() - 1].to_vec());
        assert_ne!(cut.digest(), digest);
        // Bytes that do not decode still have a digest (hashed whole), and a distinct one.
        let raw = batch_of(vec![1, 2, 3]);
        assert_eq!(raw.digest(), batch_of(vec![1, 2, 3]).digest());
        assert_ne!(raw.digest(), batch_of(vec![1, 2, 4]).digest());
        // Order and count matter.
        let two = Batch {
            requests: vec![wire.clone().into(), vec![1, 2, 3].into()],
        };
        let swapped = Batch {
            requests: vec![vec![1, 2, 3].into(), wire.into()],
        };
        assert_ne!(two.digest(), swapped.digest());
        assert_ne!(two.digest(), digest);
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
    fn tagged(tag: u8, len: usize) -> (Digest, Arc<Batch>) {
        let batch = Batch {
            requests: vec![Arc::<[u8]>::from(vec![tag; len].into_boxed_slice()).into()],
        };
        (batch.digest(), Arc::new(batch))
    }

    #[test]
    fn committed_batches_leave_memory_past_the_window_and_uncommitted_ones_stay() {
        // A window of 4 blocks and 1 MiB of committed batches.
        let store = BatchStore::with_bounds(1 << 30, 4, 1 << 20);
        let pending: Vec<_> = (200..205u8).map(|t| tagged(t, 1000)).collect();
        for (digest, batch) in &pending {
            assert!(store.insert(*digest, batch.clone()));
        }
        let mut committed = Vec::new();
        for height in 1..=10u64 {
            let (digest, batch) = tagged(height as u8, 1000);
            assert!(store.insert(digest, batch));
            // Durable up to the block before: the newest block is never evicted undurable.
            store.committed(height, &[digest], height - 1);
            committed.push(digest);
        }
        // Blocks 7..=10 are in the window (tip 10, 4 blocks); 1..=6 left memory.
        for (i, digest) in committed.iter().enumerate() {
            let height = i as u64 + 1;
            let in_memory = store.get(digest).is_some();
            assert_eq!(in_memory, height > 6, "height {height}");
            assert_eq!(store.committed_height(digest), Some(height));
            assert!(store.contains(digest));
            if !in_memory {
                assert_eq!(store.locate(digest), Located::Log(height));
            }
        }
        // Uncommitted batches are untouched by the committed window.
        for (digest, batch) in &pending {
            assert_eq!(store.locate(digest), Located::Memory(batch.clone()));
        }
        assert_eq!(store.len(), 5 + 4);
        assert_eq!(store.committed_bytes(), 4 * pending[0].1.encoded_len());
        // A committed batch that left memory is not stored again when a peer re-sends it.
        let (d1, b1) = tagged(1, 1000);
        assert_eq!(d1, committed[0]);
        assert!(!store.insert(d1, b1));
        assert!(store.get(&d1).is_none());
        assert_eq!(store.locate(&[9; 32]), Located::Unknown);
    }

    #[test]
    fn committed_batches_wait_for_durability_and_respect_the_byte_window() {
        // 100 blocks of window but only 3 batches' worth of committed bytes.
        let one = tagged(0, 1000).1.encoded_len();
        let store = BatchStore::with_bounds(1 << 30, 100, 3 * one);
        let mut digests = Vec::new();
        for height in 1..=6u64 {
            let (digest, batch) = tagged(height as u8, 1000);
            store.insert(digest, batch);
            store.committed(height, &[digest], 0); // nothing durable yet
            digests.push(digest);
        }
        // Over the byte window, but not durable: all stay.
        assert_eq!(store.len(), 6);
        store.evict_committed(2);
        // Durable up to 2: only blocks 1 and 2 may leave, and the byte window wants 3 gone.
        assert_eq!(store.len(), 4);
        assert!(store.get(&digests[1]).is_none());
        store.evict_committed(6);
        assert_eq!(store.len(), 3);
        assert_eq!(store.committed_bytes(), 3 * one);
        assert!(store.get(&digests[5]).is_some());
    }

    #[test]
    fn the_committed_index_is_bounded_by_blocks() {
        let store = BatchStore::default();
        let digest_at = |h: u64| {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&h.to_le_bytes());
            d
        };
        let last = COMMITTED_INDEX_BLOCKS_MAX + 10;
        for height in 1..=last {
            store.committed(height, &[digest_at(height)], height);
        }
        assert_eq!(store.indexed() as u64, COMMITTED_INDEX_BLOCKS_MAX);
        assert_eq!(store.committed_height(&digest_at(10)), None);
        assert_eq!(store.committed_height(&digest_at(11)), Some(11));
        assert_eq!(store.committed_height(&digest_at(last)), Some(last));
        // A node configured with a small committed window indexes only that many blocks.
        let small = BatchStore::default().with_index_blocks(8);
        for height in 1..=20 {
            small.committed(height, &[digest_at(height)], height);
        }
        assert_eq!(small.indexed(), 8);
        assert_eq!(small.locate(&digest_at(12)), Located::Unknown);
        assert_eq!(small.locate(&digest_at(13)), Located::Log(13));
    }
}
