//! Outbound link to one peer: a bounded queue drained by one writer thread that (re)connects with
//! exponential backoff and jitter.
//!
//! `send` never blocks. When the queue is full the OLDEST queued frame is dropped (and counted) to
//! make room: consensus tolerates loss, and for HotStuff the newest message (latest round) is the
//! one worth delivering. Frames queued while the peer is down are delivered once it is reached;
//! the frame being written when a connection breaks is lost (and counted as dropped).
//!
//! The link only writes; it is fire-and-forget (node-to-node traffic flows over each node's own
//! outbound links, and replies, if any, come back as frames on the peer's link to us).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TrySendError};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::backoff::{Backoff, PEER_BACKOFF_MS_MAX, PEER_BACKOFF_MS_MIN};
use super::conn::{ConnectOptions, Connection};
use super::frame;
use super::identity::PeerIdentity;
use super::NetError;

/// Frames queued per peer before the oldest is dropped.
pub const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Encoded bytes queued per peer before the oldest frames are dropped (64 max-size frames).
pub const PEER_QUEUE_BYTES_MAX: u64 = 64 * frame::FRAME_PAYLOAD_BYTES_MAX as u64;
/// How often an idle writer thread checks its shutdown flag.
const PEER_POLL_MS: u64 = 50;
/// How often a connected writer looks, without blocking, whether the peer closed or reset the
/// connection (after a frame, or on the idle poll's wake-up: at most `PEER_POLL_MS` late, and no
/// wake-up of its own). The link only writes, so without this a peer that died is noticed only
/// when a write fails, which may be a round timer later (the peer's rounds are the ones nothing
/// is sent to).
const PEER_CLOSE_PROBE_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub queue_frames_max: usize,
    /// Encoded bytes queued before the oldest frames are dropped.
    pub queue_bytes_max: u64,
    pub backoff_ms_min: u64,
    pub backoff_ms_max: u64,
    pub connection: ConnectOptions,
    /// If set, a server presenting any other identity is treated as a failed connect.
    pub expected: Option<PeerIdentity>,
}

impl Default for PeerOptions {
    fn default() -> PeerOptions {
        PeerOptions {
            queue_frames_max: PEER_QUEUE_FRAMES_MAX,
            queue_bytes_max: PEER_QUEUE_BYTES_MAX,
            backoff_ms_min: PEER_BACKOFF_MS_MIN,
            backoff_ms_max: PEER_BACKOFF_MS_MAX,
            connection: ConnectOptions::default(),
            expected: None,
        }
    }
}

/// What happened to one `send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Queued,
    /// Queued after dropping the oldest queued frame.
    QueuedDroppedOldest,
    /// The link is shutting down; the frame was dropped.
    Dropped,
}

#[derive(Debug, Default)]
pub struct PeerStats {
    pub queued: AtomicU64,
    /// Encoded bytes in the queue now.
    pub queued_bytes: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub write_failures: AtomicU64,
    /// True from a failed connect or write until the next successful connect (false before the
    /// first attempt): the link's own evidence that the peer is down or cut off.
    pub down: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl PeerStats {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    fn record(&self, error: &NetError) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }
}

pub struct PeerLink {
    queue: Sender<Arc<[u8]>>,
    evict: Receiver<Arc<[u8]>>,
    queue_bytes_max: u64,
    stats: Arc<PeerStats>,
    shutdown: Arc<AtomicBool>,
    /// Set by `retry_now`: cuts a reconnect backoff short.
    retry: Arc<AtomicBool>,
    /// The live connection's socket, so `shutdown` can unblock a write to a peer that stopped reading.
    socket: Arc<Mutex<Option<TcpStream>>>,
    writer: Option<JoinHandle<()>>,
}

struct Target {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    options: PeerOptions,
    socket: Arc<Mutex<Option<TcpStream>>>,
    retry: Arc<AtomicBool>,
}

impl PeerLink {
    /// Starts the link's writer thread; it connects in the background.
    pub fn spawn(
        addr: SocketAddr,
        server_name: ServerName<'static>,
        tls: Arc<ClientConfig>,
        options: PeerOptions,
    ) -> Result<PeerLink, NetError> {
        let queue_bytes_max = options.queue_bytes_max;
        assert!(
            queue_bytes_max > 0,
            "peer queue must hold at least one byte"
        );
        assert!(
            options.queue_frames_max > 0,
            "peer queue must hold at least one frame"
        );
        let (queue, frames) = channel::bounded(options.queue_frames_max);
        let evict = frames.clone();
        let stats = Arc::new(PeerStats::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let socket = Arc::new(Mutex::new(None));
        let retry = Arc::new(AtomicBool::new(false));
        let target = Target {
            addr,
            server_name,
            tls,
            options,
            socket: Arc::clone(&socket),
            retry: Arc::clone(&retry),
        };
        let (thread_stats, thread_shutdown) = (Arc::clone(&stats), Arc::clone(&shutdown));
        let writer = thread::Builder::new()
            .name(format!("net-peer-{addr}"))
            .spawn(move || run(target, frames, thread_stats, thread_shutdown))?;
        Ok(PeerLink {
            queue,
            evict,
            queue_bytes_max,
            stats,
            shutdown,
            retry,
            socket,
            writer: Some(writer),
        })
    }

    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// Ends a reconnect backoff now, if the link is in one: the caller has news that the peer is
    /// back (a frame from it arrived), so the next attempt need not wait up to
    /// `backoff_ms_max`. At most one attempt per `PEER_POLL_MS` however often it is called.
    pub fn retry_now(&self) {
        self.retry.store(true, Ordering::Release);
    }

    /// Frames waiting in the queue.
    pub fn queued_now(&self) -> usize {
        self.queue.len()
    }

    /// Encodes and queues one frame. Never blocks.
    pub fn send(&self, kind: u8, payload: &[u8]) -> SendOutcome {
        assert_ne!(
            kind,
            frame::FRAME_KIND_NET_ERROR,
            "frame kind 0xFF is reserved for net"
        );
        self.send_encoded(frame::encode_to_vec(kind, payload).into())
    }

    /// Queues an already encoded frame; share one `Arc` to broadcast without copying. Never blocks.
    pub fn send_encoded(&self, encoded: Arc<[u8]>) -> SendOutcome {
        debug_assert!(frame::decode_header(&encoded, frame::FRAME_PAYLOAD_BYTES_MAX).is_ok());
        let bytes = encoded.len() as u64;
        let mut evicted = self.evict_for_bytes(bytes);
        self.stats.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        let mut pending = encoded;
        // Second attempt after evicting one frame; if another sender took the slot, drop this one.
        for _ in 0..2 {
            match self.queue.try_send(pending) {
                Ok(()) => {
                    self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    return if evicted {
                        SendOutcome::QueuedDroppedOldest
                    } else {
                        SendOutcome::Queued
                    };
                }
                Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) => {
                    pending = back;
                    evicted |= self.evict_oldest();
                }
            }
        }
        self.stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        SendOutcome::Dropped
    }

    fn evict_oldest(&self) -> bool {
        let Ok(oldest) = self.evict.try_recv() else {
            return false;
        };
        self.stats
            .queued_bytes
            .fetch_sub(oldest.len() as u64, Ordering::AcqRel);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Drops oldest frames until `bytes` more fit under `queue_bytes_max` (or the queue is empty:
    /// a single frame larger than the bound is still queued alone).
    fn evict_for_bytes(&self, bytes: u64) -> bool {
        let mut evicted = false;
        while self.stats.queued_bytes.load(Ordering::Acquire) + bytes > self.queue_bytes_max {
            if !self.evict_oldest() {
                break;
            }
            evicted = true;
        }
        evicted
    }

    /// Stops the writer thread (queued frames are discarded) and joins it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(socket) = self.socket.lock().ok().and_then(|mut s| s.take()) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("net: peer writer thread panicked");
            }
        }
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    target: Target,
    frames: Receiver<Arc<[u8]>>,
    stats: Arc<PeerStats>,
    shutdown: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new(target.options.backoff_ms_min, target.options.backoff_ms_max);
    while !shutdown.load(Ordering::Acquire) {
        match connect(&target) {
            Ok(connection) => {
                backoff.reset();
                stats.down.store(false, Ordering::Release);
                stats.connects.fetch_add(1, Ordering::Relaxed);
                set_socket(&target.socket, connection.socket().ok());
                let clean = pump(&connection, &frames, &stats, &shutdown);
                set_socket(&target.socket, None);
                if !clean {
                    stats.down.store(true, Ordering::Release);
                }
                if clean {
                    connection.close();
                } else if let Ok(socket) = connection.socket() {
                    // No close_notify: its write could block on the same stuck peer.
                    let _ = socket.shutdown(Shutdown::Both);
                }
            }
            Err(error) => {
                stats.down.store(true, Ordering::Release);
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                stats.record(&error);
                tracing::debug!(addr = %target.addr, %error, "net: peer connect failed");
                sleep_unless(backoff.next_delay(), &shutdown, &target.retry);
                target.retry.store(false, Ordering::Release);
            }
        }
    }
}

fn set_socket(slot: &Mutex<Option<TcpStream>>, socket: Option<TcpStream>) {
    if let Ok(mut slot) = slot.lock() {
        *slot = socket;
    }
}

fn connect(target: &Target) -> Result<Connection, NetError> {
    let connection = Connection::connect(
        target.addr,
        target.server_name.clone(),
        Arc::clone(&target.tls),
        &target.options.connection,
    )?;
    match target.options.expected {
        Some(expected) if expected != connection.peer() => {
            connection.close();
            Err(NetError::UnexpectedPeer {
                expected,
                got: connection.peer(),
            })
        }
        _ => Ok(connection),
    }
}

/// Writes queued frames until the connection breaks (false) or the link shuts down (true).
fn pump(
    connection: &Connection,
    frames: &Receiver<Arc<[u8]>>,
    stats: &PeerStats,
    shutdown: &AtomicBool,
) -> bool {
    let writer = connection.writer();
    let probe = connection.socket().ok();
    let mut next_probe = Instant::now() + Duration::from_millis(PEER_CLOSE_PROBE_MS);
    while !shutdown.load(Ordering::Acquire) {
        // Between frames, or on the idle poll's wake-up: no wake-up of its own.
        if let Some(socket) = probe.as_ref().filter(|_| Instant::now() >= next_probe) {
            next_probe = Instant::now() + Duration::from_millis(PEER_CLOSE_PROBE_MS);
            if let Some(error) = peer_closed(socket) {
                stats.record(&error);
                return false;
            }
        }
        match frames.recv_timeout(Duration::from_millis(PEER_POLL_MS)) {
            Ok(encoded) => {
                stats
                    .queued_bytes
                    .fetch_sub(encoded.len() as u64, Ordering::AcqRel);
                if let Err(error) = writer.send_encoded(&encoded) {
                    stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    stats.record(&error);
                    return false;
                }
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
    true
}

/// Whether the peer closed (EOF) or reset the connection, looked at without blocking. Bytes the
/// peer sent are discarded: the link never reads, so they can only be TLS records it has no use
/// for (session tickets), and left unread they would hide a later EOF.
fn peer_closed(socket: &TcpStream) -> Option<NetError> {
    use std::os::fd::AsRawFd;
    let mut buffer = [0u8; 4096];
    for _ in 0..64 {
        // SAFETY: `socket` owns a live descriptor for the whole call, and the buffer is a live,
        // writable local of the stated length. MSG_DONTWAIT makes this one call non-blocking
        // without touching the descriptor's flags (the writer's blocking writes share them).
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return Some(NetError::Closed),
            n if n > 0 => continue,
            _ => {
                let error = std::io::Error::last_os_error();
                return match error.kind() {
                    std::io::ErrorKind::WouldBlock => None,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => Some(NetError::Io(error)),
                };
            }
        }
    }
    None // a peer sending this much to a write-only link is alive, if odd
}

/// Sleeps `delay`, in steps of at most `PEER_POLL_MS`, until shutdown or a `retry_now`.
fn sleep_unless(delay: Duration, shutdown: &AtomicBool, retry: &AtomicBool) {
    let deadline = Instant::now() + delay;
    while !shutdown.load(Ordering::Acquire) && !retry.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(PEER_POLL_MS)));
    }
}
