//! `net`: node-to-node and client transport over TCP with mutual TLS.
//!
//! Architecture invariant: `net` never interprets frame contents. It moves length-prefixed frames
//! (see `frame`) between authenticated peers; the only frames it writes itself are
//! `FRAME_KIND_NET_ERROR` reports about framing and back-pressure.
//!
//! - `tls`: the consortium CA (rcgen) and rustls configs that require a CA-issued peer certificate.
//! - `identity`: who a peer is, from its certificate's CN.
//! - `conn`: one blocking mTLS connection that reads and writes frames (split read/write).
//! - `server`: listener + a bounded set of connection threads feeding a caller's bounded channel.
//! - `peer`: an outbound link per peer: bounded queue, drop-oldest, reconnect with backoff.

pub mod backoff;
pub mod conn;
pub mod frame;
pub mod identity;
pub mod peer;
pub mod ports;
pub mod server;
#[cfg(test)]
mod tests;
pub mod tls;

use thiserror::Error;

pub use backoff::Backoff;
pub use conn::{ConnectOptions, Connection, FrameWriter, Received};
pub use frame::{Frame, FrameDecoder, FrameError, NetErrorCode, NetErrorFrame};
pub use identity::PeerIdentity;
pub use peer::{PeerLink, PeerOptions, PeerStats, SendOutcome};
pub use server::{Inbound, Server, ServerOptions, ServerStats};
pub use tls::{ConsortiumCa, IssuedCert, TlsError};

/// Everything that can go wrong on one connection. Each variant is specific enough for a log line
/// an operator can act on.
#[derive(Debug, Error)]
pub enum NetError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer certificate refused (not issued by the consortium CA, or invalid): {reason}")]
    CertificateRejected { reason: String },
    #[error("peer refused our certificate or the handshake: TLS alert {alert}")]
    RejectedByPeer { alert: String },
    #[error("TLS error: {0}")]
    Tls(rustls::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer certificate CN {common_name:?} does not follow the identity scheme")]
    BadIdentity { common_name: Option<String> },
    #[error("connected to {got} but expected {expected}")]
    UnexpectedPeer {
        expected: PeerIdentity,
        got: PeerIdentity,
    },
    #[error("TLS handshake did not finish within {ms} ms")]
    HandshakeTimeout { ms: u64 },
    #[error("connection closed")]
    Closed,
}

impl NetError {
    /// Maps a rustls error to the most specific variant.
    pub(crate) fn from_tls(error: rustls::Error) -> NetError {
        match error {
            rustls::Error::InvalidCertificate(reason) => NetError::CertificateRejected {
                reason: format!("{reason:?}"),
            },
            rustls::Error::NoCertificatesPresented => NetError::CertificateRejected {
                reason: "no certificate presented".to_string(),
            },
            rustls::Error::AlertReceived(alert) => NetError::RejectedByPeer {
                alert: format!("{alert:?}"),
            },
            other => NetError::Tls(other),
        }
    }

    /// Unwraps a rustls error that rustls' I/O helpers carry inside an `io::Error`.
    pub(crate) fn from_io(error: std::io::Error) -> NetError {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => NetError::from_tls(tls.clone()),
            None => NetError::Io(error),
        }
    }
}
