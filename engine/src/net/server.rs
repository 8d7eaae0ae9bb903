//! The listener: accepts mutual-TLS connections, one thread per connection up to a named bound,
//! and hands every frame with the peer's authenticated identity to the caller's bounded channel.
//!
//! A framing error on one connection is reported to that peer (a `NetErrorFrame`) and closes that
//! connection only. Shutdown sets a flag, shuts every live socket down (waking blocked reads and
//! handshakes at once) and joins every thread.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{SendTimeoutError, Sender};
use rustls::ServerConfig;

use super::conn::{ConnectOptions, Connection, FrameWriter, Received};
use super::frame::{Frame, NetErrorCode, NetErrorFrame, FRAME_KIND_NET_ERROR};
use super::identity::PeerIdentity;
use super::NetError;

/// Most connections served at once; further connections are closed at accept.
pub const SERVER_CONNECTIONS_MAX: usize = 256;
/// Longest the accept loop waits in `poll(2)` on its listener before it looks at its shutdown
/// flag again. A connection wakes it at once, and so does `stop` (it connects to the listener),
/// so this bounds only how late a stop whose wake-up connection failed is noticed. It is also the
/// back-off after a failed accept.
pub const ACCEPT_POLL_MS: u64 = 100;
/// How long a served connection's read waits before it looks at the shutdown flag again. Shutdown
/// also shuts every live socket down, which wakes a blocked read at once, so this is only a
/// backstop; a short poll cost every idle connection 20 wake-ups a second.
pub const SERVER_READ_POLL_MS: u64 = 1_000;
/// How long a connection waits on a full inbound channel before answering `Busy`.
pub const INBOUND_WAIT_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub connections_max: usize,
    pub connection: ConnectOptions,
    pub inbound_wait: Duration,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            connections_max: SERVER_CONNECTIONS_MAX,
            connection: ConnectOptions {
                read_poll: Duration::from_millis(SERVER_READ_POLL_MS),
                ..ConnectOptions::default()
            },
            inbound_wait: Duration::from_millis(INBOUND_WAIT_MS),
        }
    }
}

/// One received frame, who sent it, and a handle to answer on the same connection.
pub struct Inbound {
    pub peer: PeerIdentity,
    pub connection_id: u64,
    pub frame: Frame,
    pub reply: FrameWriter,
    /// When the connection thread had the whole frame (before any queue).
    pub received_at: Instant,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub accepted: AtomicU64,
    pub refused_full: AtomicU64,
    pub handshake_failed: AtomicU64,
    pub frames_in: AtomicU64,
    pub frame_errors: AtomicU64,
    pub inbound_busy: AtomicU64,
    pub active: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ServerStats {
    /// The most recent connection-level error, as text.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    fn record(&self, connection_id: u64, error: &NetError) {
        tracing::warn!(connection_id, %error, "net: connection error");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }
}

pub struct Server {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    stats: Arc<ServerStats>,
}

struct Context {
    tls: Arc<ServerConfig>,
    options: ServerOptions,
    inbound: Sender<Inbound>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
}

struct Worker {
    handle: JoinHandle<()>,
    socket: TcpStream,
}

impl Server {
    /// Binds `addr` (port 0 for any) and starts accepting on a background thread.
    pub fn bind(
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        options: ServerOptions,
        inbound: Sender<Inbound>,
    ) -> Result<Server, NetError> {
        assert!(
            options.connections_max > 0,
            "a server must accept at least one connection"
        );
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServerStats::default());
        let context = Arc::new(Context {
            tls,
            options,
            inbound,
            shutdown: Arc::clone(&shutdown),
            stats: Arc::clone(&stats),
        });
        let acceptor = thread::Builder::new()
            .name("net-accept".to_string())
            .spawn(move || accept_loop(listener, context))?;
        Ok(Server {
            local_addr,
            shutdown,
            acceptor: Some(acceptor),
            stats,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            // Wakes the accept loop out of its poll now; if this fails it wakes within
            // `ACCEPT_POLL_MS` anyway.
            let _ = TcpStream::connect_timeout(
                &wake_address(self.local_addr),
                Duration::from_millis(ACCEPT_POLL_MS),
            );
            if acceptor.join().is_err() {
                tracing::error!("net: accept thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    let mut workers: Vec<Worker> = Vec::with_capacity(context.options.connections_max);
    let mut connection_id = 0u64;
    while !context.shutdown.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((tcp, _)) => {
                if context.shutdown.load(Ordering::Acquire) {
                    break; // most likely `stop`'s own wake-up connection
                }
                reap(&mut workers);
                connection_id += 1;
                if let Some(worker) = admit(tcp, &context, workers.len(), connection_id) {
                    workers.push(worker);
                }
                assert!(workers.len() <= context.options.connections_max);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                reap(&mut workers);
                wait_readable(&listener, ACCEPT_POLL_MS);
            }
            Err(e) => {
                tracing::warn!(error = %e, "net: accept failed");
                thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
            }
        }
    }
    drop(listener);
    for worker in &workers {
        let _ = worker.socket.shutdown(Shutdown::Both);
    }
    for worker in workers {
        if worker.handle.join().is_err() {
            tracing::error!("net: connection thread panicked");
        }
    }
}

/// Blocks until `listener` has a connection to accept (or an error to report), at most
/// `timeout_ms`. A failed poll sleeps the timeout instead: the caller polls again either way.
fn wait_readable(listener: &TcpListener, timeout_ms: u64) {
    use std::os::fd::AsRawFd;
    let mut pollfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for a descriptor `listener` keeps open during the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout) };
    if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
        thread::sleep(Duration::from_millis(timeout_ms));
    }
}

/// Where `stop` connects to wake the accept loop: the bound address, or loopback for a wildcard.
fn wake_address(bound: SocketAddr) -> SocketAddr {
    let mut address = bound;
    if address.ip().is_unspecified() {
        address.set_ip(match bound {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

fn reap(workers: &mut Vec<Worker>) {
    let mut index = 0;
    while index < workers.len() {
        if workers[index].handle.is_finished() {
            let _ = workers.swap_remove(index).handle.join();
        } else {
            index += 1;
        }
    }
}

fn admit(
    tcp: TcpStream,
    context: &Arc<Context>,
    live: usize,
    connection_id: u64,
) -> Option<Worker> {
    if live >= context.options.connections_max {
        context.stats.refused_full.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(live, "net: connection limit reached; refusing");
        return None;
    }
    let socket = tcp
        .set_nonblocking(false)
        .and_then(|()| tcp.try_clone())
        .ok()?;
    context.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let worker_context = Arc::clone(context);
    let handle = thread::Builder::new()
        .name(format!("net-conn-{connection_id}"))
        .spawn(move || serve(tcp, &worker_context, connection_id))
        .ok()?;
    Some(Worker { handle, socket })
}

fn serve(tcp: TcpStream, context: &Context, connection_id: u64) {
    let stats = &context.stats;
    let mut connection =
        match Connection::accept(tcp, Arc::clone(&context.tls), &context.options.connection) {
            Ok(connection) => connection,
            Err(error) => {
                stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                stats.record(connection_id, &error);
                return;
            }
        };
    stats.active.fetch_add(1, Ordering::Relaxed);
    while !context.shutdown.load(Ordering::Acquire) {
        match connection.recv() {
            Ok(Received::Idle) => {}
            Ok(Received::Closed) => break,
            Ok(Received::Frame(frame)) => {
                if !deliver(context, &mut connection, connection_id, frame) {
                    break;
                }
            }
            Err(NetError::Frame(error)) => {
                stats.frame_errors.fetch_add(1, Ordering::Relaxed);
                stats.record(connection_id, &NetError::Frame(error.clone()));
                connection.fail(&NetErrorFrame {
                    code: error.code(),
                    reason: error.to_string(),
                });
                break;
            }
            Err(error) => {
                stats.record(connection_id, &error);
                break;
            }
        }
    }
    connection.close();
    stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// Hands one frame to the caller. False if the connection should close.
fn deliver(
    context: &Context,
    connection: &mut Connection,
    connection_id: u64,
    frame: Frame,
) -> bool {
    let stats = &context.stats;
    if frame.kind == FRAME_KIND_NET_ERROR {
        stats.frame_errors.fetch_add(1, Ordering::Relaxed);
        let reason = "frame kind 0xFF is reserved for net".to_string();
        connection.fail(&NetErrorFrame {
            code: NetErrorCode::ReservedKind,
            reason,
        });
        return false;
    }
    stats.frames_in.fetch_add(1, Ordering::Relaxed);
    let inbound = Inbound {
        peer: connection.peer(),
        connection_id,
        frame,
        reply: connection.writer(),
        received_at: Instant::now(),
    };
    match context
        .inbound
        .send_timeout(inbound, context.options.inbound_wait)
    {
        Ok(()) => true,
        Err(SendTimeoutError::Timeout(_)) => {
            stats.inbound_busy.fetch_add(1, Ordering::Relaxed);
            let busy = NetErrorFrame {
                code: NetErrorCode::Busy,
                reason: "inbound queue full".to_string(),
            };
            connection.writer().send_net_error(&busy).is_ok()
        }
        Err(SendTimeoutError::Disconnected(_)) => false,
    }
}
