//! Node-to-node traffic: two outbound `PeerLink`s per other validator (a consensus lane and a
//! bulk lane for batches), and the dispatcher that routes frames arriving on the peer port to
//! consensus and dissemination.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rustls::pki_types::ServerName;

use crate::consensus::{Message, ValidatorIndex};
use crate::net::{frame, Inbound, PeerIdentity, PeerLink, PeerOptions};

use super::consensus_stage::ConsensusIn;
use super::dissemination::DisseminationIn;

/// Frame kinds on the peer port.
pub const PEER_KIND_CONSENSUS: u8 = 0x10;
pub const PEER_KIND_BATCH: u8 = 0x11;
pub const PEER_KIND_BATCH_FETCH: u8 = 0x12;
/// A fetch of committed batches, each digest with the height of the block that ordered it (so the
/// peer can serve it from its log however old the block is).
pub const PEER_KIND_BATCH_FETCH_COMMITTED: u8 = 0x13;
/// A peer counts as up when a frame from it arrived within this long.
pub const PEER_UP_WINDOW_MS: u64 = 5_000;
/// An empty frame each validator's consensus stage sends every peer every `PEER_HEARTBEAT_MS`:
/// a live peer is never silent for long, even with no load, so a silent one is hung or cut off.
pub const PEER_KIND_HEARTBEAT: u8 = 0x14;
/// How often the consensus stage sends `PEER_KIND_HEARTBEAT`.
pub const PEER_HEARTBEAT_MS: u64 = 100;
/// A peer counts as unreachable (consensus then waits for it only briefly:
/// `consensus.unreachable_leader_timeout_ms`) when this node's consensus link to it failed and
/// nothing arrived from it for this long.
pub const PEER_SILENT_MS: u64 = 200;
/// Default `consensus.peer_silence_ms`: a peer whose link looks up also counts as unreachable
/// when nothing (not even a heartbeat) arrived from it for this long while another peer was heard
/// within `PEER_HEARD_RECENTLY_MS`: a hung host or a cut cable, whose connections stay open and
/// whose kernel may still accept bytes, so no write fails for seconds. Relative to the other
/// peers, so a stall of this node itself (its frames wait unread in its sockets) flags no one.
pub const PEER_HUNG_MS: u64 = 500;
/// How recently another peer must have been heard for a silent peer to count as hung (two
/// heartbeat intervals).
pub const PEER_HEARD_RECENTLY_MS: u64 = 2 * PEER_HEARTBEAT_MS;
/// Most digests one fetch frame (either kind) may ask for.
pub const FETCH_DIGESTS_MAX: usize = 256;

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Outbound links to each other validator: two connections per peer, one per lane, so a vote
/// never waits behind megabytes of batches in one TCP stream (head-of-line blocking).
pub struct Peers {
    pub me: ValidatorIndex,
    /// Consensus messages and batch fetch requests: small and latency-critical.
    links: Vec<Option<PeerLink>>,
    /// Batches (disseminated and fetched): up to a frame each.
    bulk_links: Vec<Option<PeerLink>>,
    last_seen_ms: Vec<AtomicU64>,
    /// `consensus.peer_silence_ms` (None: off).
    silence_ms: Option<u64>,
}

/// Why a peer looks down from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// The consensus link's last connect or write failed (or the peer closed it), and nothing
    /// arrived from the peer for `PEER_SILENT_MS`.
    LinkDown,
    /// Nothing arrived for `consensus.peer_silence_ms` (default `PEER_HUNG_MS`) although the link
    /// looks up, while another peer was heard within `PEER_HEARD_RECENTLY_MS`.
    Silent,
}

/// The failure detector's rule for one peer: whether this node's consensus link to it is down,
/// how long ago its last frame came (u64::MAX: never), how long ago the most recently heard other
/// peer's did (None: there is no other peer), and `consensus.peer_silence_ms` (None: off).
pub fn judge(
    link_down: bool,
    silent_ms: u64,
    others_silent_ms: Option<u64>,
    silence_ms: Option<u64>,
) -> Option<Unreachable> {
    if link_down && silent_ms >= PEER_SILENT_MS {
        return Some(Unreachable::LinkDown);
    }
    let others_heard = others_silent_ms.is_some_and(|ms| ms <= PEER_HEARD_RECENTLY_MS);
    let silent = silence_ms.is_some_and(|limit| silent_ms >= limit);
    (silent && others_heard).then_some(Unreachable::Silent)
}

/// Which connection a frame kind travels on.
fn is_bulk(kind: u8) -> bool {
    kind == PEER_KIND_BATCH
}

impl Peers {
    /// `silence_ms`: `consensus.peer_silence_ms` (0: a silent peer with its link up is not
    /// flagged).
    pub fn spawn(
        me: ValidatorIndex,
        validators: usize,
        addrs: &[(u32, SocketAddr)],
        tls: Arc<rustls::ClientConfig>,
        silence_ms: u64,
    ) -> Result<Peers, String> {
        let lane = || -> Vec<Option<PeerLink>> { (0..validators).map(|_| None).collect() };
        let (mut links, mut bulk_links) = (lane(), lane());
        for (index, addr) in addrs {
            if *index as usize >= validators {
                return Err(format!("peer index {index} is not a genesis validator"));
            }
            for lane in [&mut links, &mut bulk_links] {
                let name = ServerName::from(addr.ip());
                let options = PeerOptions {
                    expected: Some(PeerIdentity::Node { validator: *index }),
                    ..PeerOptions::default()
                };
                let link = PeerLink::spawn(*addr, name, tls.clone(), options)
                    .map_err(|e| format!("peer {index} at {addr}: {e}"))?;
                lane[*index as usize] = Some(link);
            }
        }
        let last_seen_ms = (0..validators).map(|_| AtomicU64::new(0)).collect();
        Ok(Peers {
            me,
            links,
            bulk_links,
            last_seen_ms,
            silence_ms: (silence_ms > 0).then_some(silence_ms),
        })
    }

    fn lane(&self, kind: u8) -> &[Option<PeerLink>] {
        if is_bulk(kind) {
            &self.bulk_links
        } else {
            &self.links
        }
    }

    pub fn send(&self, to: ValidatorIndex, kind: u8, payload: &[u8]) {
        if let Some(Some(link)) = self.lane(kind).get(to as usize) {
            link.send(kind, payload);
        }
    }

    pub fn broadcast(&self, kind: u8, payload: &[u8]) {
        self.broadcast_encoded(kind, frame::encode_to_vec(kind, payload).into());
    }

    /// Sends one already encoded frame (header and payload) of `kind` to `to`.
    pub fn send_encoded(&self, to: ValidatorIndex, kind: u8, encoded: Arc<[u8]>) {
        if let Some(Some(link)) = self.lane(kind).get(to as usize) {
            link.send_encoded(encoded);
        }
    }

    /// Sends one already encoded frame of `kind` to every peer, sharing the buffer.
    pub fn broadcast_encoded(&self, kind: u8, encoded: Arc<[u8]>) {
        for link in self.lane(kind).iter().flatten() {
            link.send_encoded(encoded.clone());
        }
    }

    /// A frame from `from` arrived. If a link to it is down (in its reconnect backoff, up to
    /// 5 s), the peer is evidently back: the link retries now, so a restarted validator gets
    /// votes and batches again at once rather than after the backoff.
    pub fn seen(&self, from: ValidatorIndex) {
        if let Some(at) = self.last_seen_ms.get(from as usize) {
            at.store(wall_ms(), Ordering::Relaxed);
        }
        for lane in [&self.links, &self.bulk_links] {
            if let Some(Some(link)) = lane.get(from as usize) {
                if link.stats().down.load(Ordering::Acquire) {
                    link.retry_now();
                }
            }
        }
    }

    /// Other validators heard from within `PEER_UP_WINDOW_MS`.
    pub fn up(&self) -> Vec<ValidatorIndex> {
        let now = wall_ms();
        (0..self.last_seen_ms.len())
            .filter(|i| *i != self.me as usize)
            .filter(|i| {
                now.saturating_sub(self.last_seen_ms[*i].load(Ordering::Relaxed))
                    <= PEER_UP_WINDOW_MS
            })
            .map(|i| i as ValidatorIndex)
            .collect()
    }

    /// Whether validator `index` looks down from here, and why (`judge`). None for this node
    /// and for validators without a link.
    pub fn unreachable(&self, index: ValidatorIndex) -> Option<Unreachable> {
        let Some(Some(link)) = self.links.get(index as usize) else {
            return None;
        };
        let now = wall_ms();
        let silent_ms = |i: usize| now.saturating_sub(self.last_seen_ms[i].load(Ordering::Relaxed));
        let others_silent_ms = (0..self.last_seen_ms.len())
            .filter(|i| *i != index as usize && *i != self.me as usize)
            .map(silent_ms)
            .min();
        judge(
            link.stats().down.load(Ordering::Acquire),
            silent_ms(index as usize),
            others_silent_ms,
            self.silence_ms,
        )
    }

    /// Other validators that look down from here now (`unreachable`).
    pub fn unreachable_now(&self) -> Vec<ValidatorIndex> {
        (0..self.links.len() as ValidatorIndex)
            .filter(|v| self.unreachable(*v).is_some())
            .collect()
    }

    /// Whether this node's consensus link to `index` has ever connected and a frame from it has
    /// ever arrived (before both, a peer that looks unreachable is most likely still starting).
    pub fn ever_reached(&self, index: ValidatorIndex) -> bool {
        let heard = self
            .last_seen_ms
            .get(index as usize)
            .is_some_and(|at| at.load(Ordering::Relaxed) > 0);
        heard
            && matches!(self.links.get(index as usize), Some(Some(link))
            if link.stats().connects.load(Ordering::Relaxed) > 0)
    }

    /// Whether this node's consensus link to `index` is connected now.
    pub fn connected(&self, index: ValidatorIndex) -> bool {
        matches!(self.links.get(index as usize), Some(Some(link))
            if link.stats().connects.load(Ordering::Relaxed) > 0
                && !link.stats().down.load(Ordering::Acquire))
    }

    /// Size of the validator set (links are indexed by validator).
    pub fn validators(&self) -> usize {
        self.links.len()
    }

    /// Frames dropped on the way to validator `index` (both lanes).
    pub fn dropped(&self, index: usize) -> u64 {
        [&self.links, &self.bulk_links]
            .iter()
            .filter_map(|lane| lane.get(index)?.as_ref())
            .map(|link| link.stats().dropped.load(Ordering::Relaxed))
            .sum()
    }

    pub fn shutdown(self) {
        let links = self.links.into_iter().chain(self.bulk_links);
        for link in links.flatten() {
            link.shutdown();
        }
    }
}

pub fn encode_fetch(digests: &[[u8; 32]]) -> Vec<u8> {
    let digests = &digests[..digests.len().min(FETCH_DIGESTS_MAX)];
    digests.iter().flat_map(|d| d.iter().copied()).collect()
}

pub fn decode_fetch(payload: &[u8]) -> Option<Vec<[u8; 32]>> {
    if !payload.len().is_multiple_of(32) || payload.len() / 32 > FETCH_DIGESTS_MAX {
        return None;
    }
    Some(
        payload
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect(),
    )
}

/// A committed-batch fetch: `height u64 LE | digest [32]` per batch, at most `FETCH_DIGESTS_MAX`.
pub fn encode_fetch_committed(wanted: &[(u64, [u8; 32])]) -> Vec<u8> {
    let wanted = &wanted[..wanted.len().min(FETCH_DIGESTS_MAX)];
    let mut out = Vec::with_capacity(wanted.len() * FETCH_COMMITTED_ENTRY_BYTES);
    for (height, digest) in wanted {
        out.extend_from_slice(&height.to_le_bytes());
        out.extend_from_slice(digest);
    }
    out
}

const FETCH_COMMITTED_ENTRY_BYTES: usize = 8 + 32;

/// None when the payload is not whole entries or asks for more than `FETCH_DIGESTS_MAX`.
pub fn decode_fetch_committed(payload: &[u8]) -> Option<Vec<(u64, [u8; 32])>> {
    if !payload.len().is_multiple_of(FETCH_COMMITTED_ENTRY_BYTES)
        || payload.len() / FETCH_COMMITTED_ENTRY_BYTES > FETCH_DIGESTS_MAX
    {
        return None;
    }
    Some(
        payload
            .chunks_exact(FETCH_COMMITTED_ENTRY_BYTES)
            .map(|c| {
                let height = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
                (height, c[8..].try_into().expect("32 bytes"))
            })
            .collect(),
    )
}

/// The peer-port dispatcher thread: authenticated validator frames only.
pub fn run_dispatch(
    inbound: Receiver<Inbound>,
    peers: Arc<Peers>,
    consensus: Sender<ConsensusIn>,
    dissemination: Sender<DisseminationIn>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        let item = match inbound.recv_timeout(Duration::from_millis(100)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let PeerIdentity::Node { validator } = item.peer else {
            tracing::warn!(peer = %item.peer.common_name(), "peer port: not a validator; ignored");
            continue;
        };
        let Ok(from) = ValidatorIndex::try_from(validator) else {
            continue;
        };
        peers.seen(from);
        let payload = item.frame.payload;
        let outcome = match item.frame.kind {
            PEER_KIND_CONSENSUS => match Message::decode(&payload) {
                Ok(msg) => forward(&consensus, ConsensusIn::Peer { from, msg }),
                Err(error) => {
                    tracing::warn!(from, %error, "peer: consensus message does not decode");
                    true
                }
            },
            PEER_KIND_BATCH => {
                forward(&dissemination, DisseminationIn::PeerBatch { from, payload })
            }
            PEER_KIND_BATCH_FETCH => match decode_fetch(&payload) {
                Some(digests) => {
                    let wanted = digests.into_iter().map(|d| (d, None)).collect();
                    forward(&dissemination, DisseminationIn::PeerFetch { from, wanted })
                }
                None => {
                    tracing::warn!(from, bytes = payload.len(), "peer: malformed batch fetch");
                    true
                }
            },
            PEER_KIND_BATCH_FETCH_COMMITTED => match decode_fetch_committed(&payload) {
                Some(entries) => {
                    let wanted = entries.into_iter().map(|(h, d)| (d, Some(h))).collect();
                    forward(&dissemination, DisseminationIn::PeerFetch { from, wanted })
                }
                None => {
                    tracing::warn!(from, bytes = payload.len(), "peer: malformed batch fetch");
                    true
                }
            },
            // `seen` above is all a heartbeat is for.
            PEER_KIND_HEARTBEAT => true,
            kind => {
                tracing::warn!(from, kind, "peer: unknown frame kind");
                true
            }
        };
        if !outcome {
            return;
        }
    }
}

/// Forwards without blocking (a full stage queue drops the message: consensus and dissemination
/// tolerate loss and retry). Returns false when the stage is gone.
fn forward<T>(to: &Sender<T>, item: T) -> bool {
    match to.try_send(item) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            tracing::debug!("peer: stage queue full; message dropped");
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default silence limit, on.
    const ON: Option<u64> = Some(PEER_HUNG_MS);

    #[test]
    fn a_peer_whose_link_failed_is_unreachable_once_silent_for_a_moment() {
        assert_eq!(
            judge(true, PEER_SILENT_MS, None, ON),
            Some(Unreachable::LinkDown)
        );
        assert_eq!(
            judge(true, u64::MAX, Some(10), ON),
            Some(Unreachable::LinkDown)
        );
        // A frame from it just now outweighs a failed write: it is back.
        assert_eq!(judge(true, PEER_SILENT_MS - 1, None, ON), None);
        assert_eq!(judge(false, PEER_SILENT_MS, Some(10), ON), None);
    }

    #[test]
    fn a_silent_peer_with_its_link_up_is_unreachable_only_while_the_others_are_heard() {
        // Hung or cut off: its connection looks fine, but nothing came, not even a heartbeat.
        assert_eq!(
            judge(false, PEER_HUNG_MS, Some(0), ON),
            Some(Unreachable::Silent)
        );
        assert_eq!(
            judge(false, u64::MAX, Some(PEER_HEARD_RECENTLY_MS), ON),
            Some(Unreachable::Silent)
        );
        // A few heartbeats late is not hung.
        assert_eq!(judge(false, PEER_HUNG_MS - 1, Some(0), ON), None);
        // Every peer silent: this node itself stalled (its frames wait unread), or a clock
        // step; no one is flagged.
        assert_eq!(
            judge(false, PEER_HUNG_MS * 4, Some(PEER_HUNG_MS * 4), ON),
            None
        );
        assert_eq!(
            judge(false, PEER_HUNG_MS, Some(PEER_HEARD_RECENTLY_MS + 1), ON),
            None
        );
        // No other peer to compare with.
        assert_eq!(judge(false, u64::MAX, None, ON), None);
        // `consensus.peer_silence_ms`: another limit, or off (then only a failed link flags).
        assert_eq!(judge(false, 999, Some(0), Some(1_000)), None);
        assert_eq!(
            judge(false, 1_000, Some(0), Some(1_000)),
            Some(Unreachable::Silent)
        );
        assert_eq!(judge(false, u64::MAX, Some(0), None), None);
        assert_eq!(
            judge(true, PEER_SILENT_MS, Some(0), None),
            Some(Unreachable::LinkDown)
        );
    }

    #[test]
    fn committed_fetches_round_trip_and_malformed_ones_are_refused() {
        let wanted: Vec<(u64, [u8; 32])> =
            (0..5u8).map(|i| (1 + i as u64 * 70_000, [i; 32])).collect();
        let payload = encode_fetch_committed(&wanted);
        assert_eq!(payload.len(), 5 * 40);
        assert_eq!(decode_fetch_committed(&payload), Some(wanted.clone()));
        assert_eq!(decode_fetch_committed(&[]), Some(Vec::new()));
        // Not whole entries: refused, not truncated.
        assert_eq!(decode_fetch_committed(&payload[..payload.len() - 1]), None);
        assert_eq!(decode_fetch_committed(&payload[..39]), None);
        // More than a frame may ask: refused on decode, capped on encode.
        let many: Vec<(u64, [u8; 32])> = (0..FETCH_DIGESTS_MAX as u64 + 1)
            .map(|h| (h, [1; 32]))
            .collect();
        let too_big: Vec<u8> = many
            .iter()
            .flat_map(|(h, d)| h.to_le_bytes().into_iter().chain(d.iter().copied()))
            .collect();
        assert_eq!(decode_fetch_committed(&too_big), None);
        assert_eq!(encode_fetch_committed(&many).len(), FETCH_DIGESTS_MAX * 40);
        // The digest-only kind is a different layout: 40 digests' bytes are not 32-multiples
        // of entries there, and vice versa.
        assert_eq!(decode_fetch(&payload).map(|d| d.len()), None);
    }
}
