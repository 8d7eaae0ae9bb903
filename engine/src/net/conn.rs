//! One blocking mutual-TLS connection carrying frames.
//!
//! The socket is split: the owner of `Connection` reads (raw TCP reads without any lock), and any
//! number of `FrameWriter` clones write. The rustls state sits behind one mutex, held only to feed
//! it ciphertext or to encrypt and write one frame, so replies never wait for a blocked read.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use super::frame::{self, Frame, FrameDecoder, FrameError, NetErrorFrame, FRAME_PAYLOAD_BYTES_MAX};
use super::identity::{subject_common_name, PeerIdentity};
use super::NetError;

/// Bytes read from the socket per call: one maximal TLS record plus overhead.
pub const TLS_READ_CHUNK_BYTES: usize = 17 * 1024;

/// After reporting a framing error, read and discard what the peer already sent for at most this
/// long before closing, so the close does not turn into a reset that destroys our report.
pub const CLOSE_DRAIN_MS: u64 = 200;

/// Timeouts and limits of one connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// A write blocked longer than this (peer not reading) fails and the connection is dropped.
    pub write_timeout: Duration,
    /// How long one `recv` waits for bytes before returning `Received::Idle`.
    pub read_poll: Duration,
    pub frame_payload_bytes_max: u32,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            read_poll: Duration::from_millis(50),
            frame_payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
        }
    }
}

/// What one `recv` call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Frame(Frame),
    /// No whole frame arrived within `read_poll`.
    Idle,
    /// The peer closed the connection cleanly between frames.
    Closed,
}

struct Shared {
    tls: Mutex<rustls::Connection>,
    tcp: TcpStream,
    peer: PeerIdentity,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, rustls::Connection> {
        // rustls state is only mutated through its own methods; a panic elsewhere cannot tear it.
        self.tls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flush(&self, tls: &mut rustls::Connection) -> Result<usize, NetError> {
        let mut written = 0;
        while tls.wants_write() {
            let mut socket = &self.tcp;
            let n = tls.write_tls(&mut socket).map_err(NetError::from_io)?;
            if n == 0 {
                return Err(NetError::Closed);
            }
            written += n;
        }
        Ok(written)
    }

    fn write_parts(&self, parts: &[&[u8]]) -> Result<(), NetError> {
        let mut tls = self.lock();
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = tls.writer().write(rest).map_err(NetError::from_io)?;
                rest = &rest[n..];
                let flushed = self.flush(&mut tls)?;
                if n == 0 && flushed == 0 {
                    return Err(NetError::Closed);
                }
            }
        }
        self.flush(&mut tls).map(|_| ())
    }

    /// Feeds ciphertext to rustls and moves the plaintext into `decoder`. Returns true once the
    /// peer has sent close_notify.
    fn ingest(&self, mut input: &[u8], decoder: &mut FrameDecoder) -> Result<bool, NetError> {
        let mut closed = false;
        let mut tls = self.lock();
        while !input.is_empty() {
            tls.read_tls(&mut input).map_err(NetError::from_io)?;
            if let Err(error) = tls.process_new_packets() {
                let _ = self.flush(&mut tls); // deliver our alert, if any, before giving up
                return Err(NetError::from_tls(error));
            }
            closed |= drain_plaintext(&mut tls, decoder)?;
        }
        self.flush(&mut tls)?;
        Ok(closed)
    }
}

/// Moves all plaintext rustls holds into `decoder`; true if the peer sent close_notify.
fn drain_plaintext(
    tls: &mut rustls::Connection,
    decoder: &mut FrameDecoder,
) -> Result<bool, NetError> {
    let mut plain = [0u8; 4096];
    loop {
        match tls.reader().read(&mut plain) {
            Ok(0) => return Ok(true),
            Ok(n) => decoder.push(&plain[..n]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(NetError::from_io(error)),
        }
    }
}

/// A cloneable handle that writes frames to one connection; safe to use from any thread.
#[derive(Clone)]
pub struct FrameWriter {
    shared: Arc<Shared>,
}

impl FrameWriter {
    pub fn peer(&self) -> PeerIdentity {
        self.shared.peer
    }

    /// Writes one frame. `kind` must not be `FRAME_KIND_NET_ERROR` (reserved for `net`).
    pub fn send(&self, kind: u8, payload: &[u8]) -> Result<(), NetError> {
        assert_ne!(
            kind,
            frame::FRAME_KIND_NET_ERROR,
            "frame kind 0xFF is reserved for net"
        );
        let header = frame::encode_header(kind, payload.len());
        self.shared.write_parts(&[&header, payload])
    }

    /// Writes bytes that already hold one or more whole encoded frames.
    pub(crate) fn send_encoded(&self, frames: &[u8]) -> Result<(), NetError> {
        self.shared.write_parts(&[frames])
    }

    pub(crate) fn send_net_error(&self, error: &NetErrorFrame) -> Result<(), NetError> {
        self.shared.write_parts(&[&error.encode()])
    }

    /// Sends close_notify and shuts the socket down; later writes fail.
    pub fn close(&self) {
        let mut tls = self.shared.lock();
        tls.send_close_notify();
        let _ = self.shared.flush(&mut tls);
        let _ = self.shared.tcp.shutdown(Shutdown::Both);
    }
}

/// The reading end of a connection (and a writer for convenience).
pub struct Connection {
    writer: FrameWriter,
    read: TcpStream,
    decoder: FrameDecoder,
    closed: bool,
}

impl Connection {
    /// Dials `addr`, verifies the server certificate against the consortium CA and `server_name`,
    /// and presents our own certificate.
    pub fn connect(
        addr: SocketAddr,
        server_name: ServerName<'static>,
        config: Arc<ClientConfig>,
        options: &ConnectOptions,
    ) -> Result<Connection, NetError> {
        let tcp = TcpStream::connect_timeout(&addr, options.connect_timeout)?;
        let tls = rustls::ClientConnection::new(config, server_name).map_err(NetError::from_tls)?;
        Connection::establish(tcp, tls.into(), options)
    }

    /// Runs the server side of the handshake on an accepted socket.
    pub fn accept(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        options: &ConnectOptions,
    ) -> Result<Connection, NetError> {
        let tls = rustls::ServerConnection::new(config).map_err(NetError::from_tls)?;
        Connection::establish(tcp, tls.into(), options)
    }

    fn establish(
        mut tcp: TcpStream,
        mut tls: rustls::Connection,
        options: &ConnectOptions,
    ) -> Result<Connection, NetError> {
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(options.write_timeout))?;
        if let Err(error) = handshake(&mut tls, &mut tcp, options.handshake_timeout) {
            // rustls already wrote its alert; let it reach the peer before the socket closes.
            drain_and_shut(&tcp);
            return Err(error);
        }
        let peer = peer_identity(&tls)?;
        tcp.set_read_timeout(Some(options.read_poll))?;
        // Application data that arrived with the peer's last handshake flight is already decrypted.
        let mut decoder = FrameDecoder::new(options.frame_payload_bytes_max);
        let closed = drain_plaintext(&mut tls, &mut decoder)?;
        let write = tcp.try_clone()?;
        let shared = Arc::new(Shared {
            tls: Mutex::new(tls),
            tcp: write,
            peer,
        });
        Ok(Connection {
            writer: FrameWriter { shared },
            read: tcp,
            decoder,
            closed,
        })
    }

    /// The authenticated identity of the other end.
    pub fn peer(&self) -> PeerIdentity {
        self.writer.peer()
    }

    pub fn writer(&self) -> FrameWriter {
        self.writer.clone()
    }

    pub fn send(&self, kind: u8, payload: &[u8]) -> Result<(), NetError> {
        self.writer.send(kind, payload)
    }

    /// Waits at most `read_poll` for the next frame. A framing error is final for this connection.
    pub fn recv(&mut self) -> Result<Received, NetError> {
        if let Some(frame) = self.decoder.next_frame()? {
            return Ok(Received::Frame(frame));
        }
        if self.closed {
            return self.closed_state();
        }
        let mut buffer = [0u8; TLS_READ_CHUNK_BYTES];
        let n = match (&self.read).read(&mut buffer) {
            Ok(0) => {
                self.closed = true;
                return self.closed_state();
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Received::Idle)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Received::Idle),
            Err(e) => return Err(NetError::Io(e)),
        };
        self.closed = self.writer.shared.ingest(&buffer[..n], &mut self.decoder)?;
        if let Some(frame) = self.decoder.next_frame()? {
            return Ok(Received::Frame(frame));
        }
        if self.closed {
            return self.closed_state();
        }
        Ok(Received::Idle)
    }

    fn closed_state(&self) -> Result<Received, NetError> {
        let buffered = self.decoder.buffered();
        if buffered > 0 {
            return Err(FrameError::Truncated {
                needed: buffered + 1,
                got: buffered,
            }
            .into());
        }
        Ok(Received::Closed)
    }

    /// Waits up to `timeout` for a frame; `Ok(None)` on timeout, `Err(Closed)` if the peer closed.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Frame>, NetError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv()? {
                Received::Frame(frame) => return Ok(Some(frame)),
                Received::Closed => return Err(NetError::Closed),
                Received::Idle if Instant::now() >= deadline => return Ok(None),
                Received::Idle => {}
            }
        }
    }

    /// Reports a net-level error to the peer, then closes after a bounded drain.
    pub(crate) fn fail(&mut self, error: &NetErrorFrame) {
        let _ = self.writer.send_net_error(error);
        {
            let mut tls = self.writer.shared.lock();
            tls.send_close_notify();
            let _ = self.writer.shared.flush(&mut tls);
        }
        drain_and_shut(&self.read);
        self.close();
    }

    pub fn close(&self) {
        self.writer.close();
    }

    /// A handle on the socket, so another thread can shut it down to unblock a stuck write.
    pub(crate) fn socket(&self) -> io::Result<TcpStream> {
        self.read.try_clone()
    }
}

/// Half-closes, then reads and discards what the peer already sent (bounded by `CLOSE_DRAIN_MS`),
/// so closing with unread bytes does not reset the connection and destroy our last words.
fn drain_and_shut(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(CLOSE_DRAIN_MS / 4)));
    let deadline = Instant::now() + Duration::from_millis(CLOSE_DRAIN_MS);
    let mut sink = [0u8; TLS_READ_CHUNK_BYTES];
    while Instant::now() < deadline {
        match (&*socket).read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}

fn handshake(
    tls: &mut rustls::Connection,
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<(), NetError> {
    const POLL: Duration = Duration::from_millis(20);
    let deadline = Instant::now() + timeout;
    tcp.set_read_timeout(Some(POLL))?;
    while tls.is_handshaking() {
        if Instant::now() >= deadline {
            return Err(NetError::HandshakeTimeout {
                ms: timeout.as_millis() as u64,
            });
        }
        match tls.complete_io(tcp) {
            Ok((0, 0)) if tls.is_handshaking() => return Err(NetError::Closed),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(NetError::from_io(e)),
        }
    }
    while tls.wants_write() {
        tls.write_tls(tcp).map_err(NetError::from_io)?;
    }
    Ok(())
}

fn peer_identity(tls: &rustls::Connection) -> Result<PeerIdentity, NetError> {
    let Some(cert) = tls.peer_certificates().and_then(|certs| certs.first()) else {
        return Err(NetError::CertificateRejected {
            reason: "no certificate presented".to_string(),
        });
    };
    let common_name = subject_common_name(cert);
    match common_name
        .as_deref()
        .and_then(PeerIdentity::from_common_name)
    {
        Some(identity) => Ok(identity),
        None => Err(NetError::BadIdentity { common_name }),
    }
}
