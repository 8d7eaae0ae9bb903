//! Loopback tests of the whole transport: mTLS, framing errors, reconnects, slow peers.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver};
use rustls::pki_types::ServerName;

use super::conn::{ConnectOptions, Connection};
use super::frame::{self, NetErrorCode, NetErrorFrame};
use super::tls::{self, ConsortiumCa, IssuedCert};
use super::*;

const WAIT: Duration = Duration::from_secs(5);

struct Pki {
    ca: ConsortiumCa,
    node0: IssuedCert,
    node1: IssuedCert,
    client5: IssuedCert,
}

fn pki() -> Pki {
    let ca = tls::generate_ca("Reckon Test Consortium").expect("ca");
    let sans = ["127.0.0.1".to_string(), "localhost".to_string()];
    Pki {
        node0: tls::issue_node_cert(&ca, 0, &sans).expect("node0"),
        node1: tls::issue_node_cert(&ca, 1, &sans).expect("node1"),
        client5: tls::issue_client_cert(&ca, 5).expect("client5"),
        ca,
    }
}

fn loopback() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1".to_string()).expect("ip server name")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn options() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(5),
        read_poll: Duration::from_millis(20),
        frame_payload_bytes_max: frame::FRAME_PAYLOAD_BYTES_MAX,
    }
}

fn server(
    ca_pem: &str,
    cert: &IssuedCert,
    connection: ConnectOptions,
) -> (Server, Receiver<Inbound>) {
    let (tx, rx) = channel::bounded(1024);
    let options = ServerOptions {
        connection,
        ..ServerOptions::default()
    };
    let config = tls::server_config(ca_pem, cert).expect("server config");
    (
        Server::bind(any_port(), config, options, tx).expect("bind"),
        rx,
    )
}

fn connect(addr: SocketAddr, ca_pem: &str, cert: &IssuedCert) -> Result<Connection, NetError> {
    let config = tls::client_config(ca_pem, cert).expect("client config");
    Connection::connect(addr, loopback(), config, &options())
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Serves one echo round: receive a frame, answer with the same kind and payload.
fn echo_once(inbound: &Receiver<Inbound>) -> Inbound {
    let request = inbound.recv_timeout(WAIT).expect("inbound frame");
    request
        .reply
        .send(request.frame.kind, &request.frame.payload)
        .expect("reply");
    request
}

#[test]
fn frames_round_trip_over_mutual_tls_with_identities() {
    let pki = pki();
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let mut client =
        connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5).expect("connect");
    assert_eq!(client.peer(), PeerIdentity::Node { validator: 0 });

    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    for (kind, payload) in [(1u8, b"hello".to_vec()), (2, Vec::new()), (3, big)] {
        client.send(kind, &payload).expect("send");
        let request = echo_once(&inbound);
        assert_eq!(request.peer, PeerIdentity::Institution { institution: 5 });
        let reply = client
            .recv_timeout(WAIT)
            .expect("recv")
            .expect("reply in time");
        assert_eq!((reply.kind, reply.payload), (kind, payload));
    }
    assert_eq!(server.stats().frames_in.load(Ordering::Relaxed), 3);
    client.close();
    server.shutdown();
}

#[test]
fn client_with_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let rogue_ca = tls::generate_ca("Rogue CA").expect("rogue ca");
    let rogue_client = tls::issue_client_cert(&rogue_ca, 5).expect("rogue client");
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, options());

    // TLS 1.3: the client may finish its side before the server judges its certificate, so the
    // refusal surfaces either from connect or from the first read.
    let outcome =
        connect(server.local_addr(), pki.ca.cert_pem(), &rogue_client).and_then(|mut client| {
            let _ = client.send(1, b"let me in");
            client.recv_timeout(WAIT)
        });
    match outcome {
        Err(NetError::RejectedByPeer { alert }) => assert_eq!(alert, "UnknownCA"),
        other => panic!("expected RejectedByPeer, got {other:?}"),
    }
    wait_until("server to count the refusal", || {
        server.stats().handshake_failed.load(Ordering::Relaxed) == 1
    });
    let error = server
        .stats()
        .last_error()
        .expect("server recorded the error");
    assert!(
        error.contains("not issued by the consortium CA") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(
        inbound.try_recv().is_err(),
        "no frame from a refused client reaches the node"
    );
}

#[test]
fn server_with_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let rogue_ca = tls::generate_ca("Rogue CA").expect("rogue ca");
    let rogue_node =
        tls::issue_node_cert(&rogue_ca, 0, &["127.0.0.1".to_string()]).expect("rogue node");
    let (server, _inbound) = server(rogue_ca.cert_pem(), &rogue_node, options());

    match connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5) {
        Err(NetError::CertificateRejected { reason }) => {
            assert!(reason.contains("UnknownIssuer"), "{reason}")
        }
        Err(other) => panic!("expected CertificateRejected, got {other}"),
        Ok(_) => panic!("a server outside the consortium was accepted"),
    }
    wait_until("server to see the alert", || {
        server.stats().handshake_failed.load(Ordering::Relaxed) == 1
    });
    let error = server
        .stats()
        .last_error()
        .expect("server recorded the error");
    assert!(error.contains("TLS alert UnknownCA"), "{error}");
}

fn expect_net_error(connection: &mut Connection, code: NetErrorCode) {
    let reply = connection
        .recv_timeout(WAIT)
        .expect("recv")
        .expect("error frame in time");
    let error = NetErrorFrame::decode(&reply).expect("a net error frame");
    assert_eq!(error.code, code, "{}", error.reason);
    match connection.recv_timeout(WAIT) {
        Err(NetError::Closed) | Err(NetError::Io(_)) => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

#[test]
fn oversized_frame_gets_specific_error_and_other_connections_continue() {
    let pki = pki();
    let limited = ConnectOptions {
        frame_payload_bytes_max: 64 * 1024,
        ..options()
    };
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, limited);
    let mut good = connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5).expect("good");
    let mut bad = connect(server.local_addr(), pki.ca.cert_pem(), &pki.node1).expect("bad");

    good.send(1, b"before").expect("send");
    echo_once(&inbound);
    assert_eq!(
        good.recv_timeout(WAIT)
            .expect("recv")
            .expect("reply")
            .payload,
        b"before"
    );

    bad.writer()
        .send_encoded(&frame::encode_to_vec(1, &vec![7u8; 64 * 1024 + 1]))
        .expect("send big");
    expect_net_error(&mut bad, NetErrorCode::FrameTooLarge);
    let error = server.stats().last_error().expect("recorded");
    assert!(
        error.contains("65537 bytes exceeds the maximum of 65536"),
        "{error}"
    );

    good.send(1, b"after").expect("send");
    echo_once(&inbound);
    assert_eq!(
        good.recv_timeout(WAIT)
            .expect("recv")
            .expect("reply")
            .payload,
        b"after"
    );
    assert_eq!(server.stats().frame_errors.load(Ordering::Relaxed), 1);
}

#[test]
fn bad_version_and_reserved_kind_get_specific_errors() {
    let pki = pki();
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let mut bad = connect(server.local_addr(), pki.ca.cert_pem(), &pki.node1).expect("connect");
    let mut bytes = frame::encode_to_vec(1, b"payload");
    bytes[4] = 9;
    bad.writer().send_encoded(&bytes).expect("send");
    expect_net_error(&mut bad, NetErrorCode::FrameBadVersion);

    let mut reserved =
        connect(server.local_addr(), pki.ca.cert_pem(), &pki.node1).expect("connect");
    reserved
        .writer()
        .send_encoded(&frame::encode_to_vec(frame::FRAME_KIND_NET_ERROR, b"x"))
        .expect("send");
    expect_net_error(&mut reserved, NetErrorCode::ReservedKind);
    assert_eq!(server.stats().frame_errors.load(Ordering::Relaxed), 2);
    assert!(
        inbound.try_recv().is_err(),
        "malformed frames never reach the node"
    );
}

/// A link from node 1 to `addr`, expecting node 0 there.
fn link_from_node1(
    pki: &Pki,
    addr: SocketAddr,
    backoff_ms_min: u64,
    backoff_ms_max: u64,
) -> PeerLink {
    let config = tls::client_config(pki.ca.cert_pem(), &pki.node1).expect("client config");
    let peer_options = PeerOptions {
        backoff_ms_min,
        backoff_ms_max,
        connection: options(),
        expected: Some(PeerIdentity::Node { validator: 0 }),
        ..PeerOptions::default()
    };
    PeerLink::spawn(addr, loopback(), config, peer_options).expect("spawn")
}

/// A link from node 1 to a free loopback port where nothing listens yet (expects node 0 there).
fn link_to_free_port(
    pki: &Pki,
    backoff_ms_min: u64,
    backoff_ms_max: u64,
) -> (SocketAddr, PeerLink) {
    let addr = TcpListener::bind(any_port())
        .and_then(|l| l.local_addr())
        .expect("free port");
    (
        addr,
        link_from_node1(pki, addr, backoff_ms_min, backoff_ms_max),
    )
}

/// Node 0's server on `addr` (a port reserved by `link_to_free_port`).
fn node0_server_at(pki: &Pki, addr: SocketAddr) -> (Server, Receiver<Inbound>) {
    let (tx, rx) = channel::bounded(16);
    let server_config = tls::server_config(pki.ca.cert_pem(), &pki.node0).expect("server config");
    let options = ServerOptions {
        connection: options(),
        ..ServerOptions::default()
    };
    let server = Server::bind(addr, server_config, options, tx).expect("bind the reserved port");
    (server, rx)
}

#[test]
fn peer_that_is_down_is_reached_after_reconnect_backoff() {
    let pki = pki();
    let (addr, link) = link_to_free_port(&pki, 10, 100);
    assert_eq!(link.send(4, b"queued while down"), SendOutcome::Queued);
    wait_until("two failed connects", || {
        link.stats().connect_failures.load(Ordering::Relaxed) >= 2
    });
    assert!(link
        .stats()
        .last_error()
        .is_some_and(|e| e.contains("I/O error")));

    let (server, inbound) = node0_server_at(&pki, addr);
    let inbound = inbound
        .recv_timeout(WAIT)
        .expect("frame delivered after reconnect");
    assert_eq!(
        (inbound.peer, inbound.frame.payload.as_slice()),
        (
            PeerIdentity::Node { validator: 1 },
            &b"queued while down"[..]
        )
    );
    assert_eq!(link.stats().connects.load(Ordering::Relaxed), 1);
    // The server can see the frame before the writer thread counts it as sent.
    wait_until("sent counted", || {
        link.stats().sent.load(Ordering::Relaxed) == 1
    });
    link.shutdown();
    server.shutdown();
}

#[test]
fn link_refuses_a_server_with_an_unexpected_identity() {
    let pki = pki();
    let (server, _inbound) = server(pki.ca.cert_pem(), &pki.node1, options());
    let config = tls::client_config(pki.ca.cert_pem(), &pki.node0).expect("client config");
    let peer_options = PeerOptions {
        backoff_ms_min: 10,
        backoff_ms_max: 50,
        connection: options(),
        expected: Some(PeerIdentity::Node { validator: 2 }),
        ..PeerOptions::default()
    };
    let link =
        PeerLink::spawn(server.local_addr(), loopback(), config, peer_options).expect("spawn");
    wait_until("a refused connect", || {
        link.stats().connect_failures.load(Ordering::Relaxed) >= 1
    });
    let error = link.stats().last_error().expect("recorded");
    assert!(
        error.contains("connected to reckon-node-1 but expected reckon-node-2"),
        "{error}"
    );
    assert_eq!(link.stats().connects.load(Ordering::Relaxed), 0);
}

#[path = "tests_slow.rs"]
mod slow;

#[test]
fn a_link_notices_a_peer_that_went_away_without_a_write_failing() {
    let pki = pki();
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let link = link_from_node1(&pki, server.local_addr(), 10, 50);
    assert!(
        !link.stats().down.load(Ordering::Acquire),
        "not down before any attempt"
    );
    link.send(4, b"hello");
    inbound.recv_timeout(WAIT).expect("frame delivered");
    assert!(!link.stats().down.load(Ordering::Acquire), "connected");
    // The peer goes away while this link has nothing to write.
    server.shutdown();
    wait_until("the link marked down", || {
        link.stats().down.load(Ordering::Acquire)
    });
    assert_eq!(
        link.stats().write_failures.load(Ordering::Relaxed),
        0,
        "noticed by the close probe, not by a failed write"
    );
    wait_until("a refused reconnect", || {
        link.stats().connect_failures.load(Ordering::Relaxed) >= 1
    });
    assert!(link.stats().down.load(Ordering::Acquire), "still down");
    link.shutdown();
}

#[test]
fn retry_now_ends_a_reconnect_backoff_at_once() {
    let pki = pki();
    // Far longer than the test waits: only `retry_now` can bring the frame over in time.
    let (addr, link) = link_to_free_port(&pki, 60_000, 60_000);
    link.send(4, b"queued while down");
    wait_until("a failed connect", || {
        link.stats().connect_failures.load(Ordering::Relaxed) >= 1
    });
    assert!(link.stats().down.load(Ordering::Acquire));
    let (server, inbound) = node0_server_at(&pki, addr);
    link.retry_now();
    let inbound = inbound
        .recv_timeout(WAIT)
        .expect("delivered after retry_now");
    assert_eq!(inbound.frame.payload.as_slice(), b"queued while down");
    assert!(
        !link.stats().down.load(Ordering::Acquire),
        "connected again"
    );
    link.shutdown();
    server.shutdown();
}
