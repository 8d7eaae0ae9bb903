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
/// How often the accept loop polls its non-blocking listener (and its shutdown flag).
pub const ACCEPT_POLL_MS: u64 = 10;
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
            connection: ConnectOptions::default(),
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
                reap(&mut workers);
                connection_id += 1;
                if let Some(worker) = admit(tcp, &context, workers.len(), connection_id) {
                    workers.push(worker);
                }
                assert!(workers.len() <= context.options.connections_max);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                reap(&mut workers);
                thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
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
