//! Back-pressure and lifecycle tests: a stuck peer, connection limits, shutdown.

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use super::*;

/// Receive buffer forced onto the stuck peer's socket so its window fills quickly.
const SLOW_RCVBUF_BYTES: libc::c_int = 4096;

fn shrink_receive_buffer(listener: &TcpListener) {
    let size = SLOW_RCVBUF_BYTES;
    // SAFETY: valid fd owned by `listener`; the option value is a live c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

/// A peer that completes the TLS handshake and then never reads, until released.
fn stuck_peer(pki: &Pki) -> (SocketAddr, channel::Sender<()>, thread::JoinHandle<()>) {
    let listener = TcpListener::bind(any_port()).expect("bind");
    shrink_receive_buffer(&listener);
    let addr = listener.local_addr().expect("addr");
    let config = tls::server_config(pki.ca.cert_pem(), &pki.node1).expect("server config");
    let (release, released) = channel::bounded::<()>(1);
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let connection = Connection::accept(tcp, config, &options()).expect("handshake");
        let _ = released.recv_timeout(Duration::from_secs(30));
        drop(connection);
    });
    (addr, release, handle)
}

#[test]
fn slow_peer_does_not_block_sends_to_a_fast_peer() {
    const FRAMES: usize = 400;
    const FRAME_PAYLOAD_BYTES: usize = 64 * 1024;
    let pki = pki();
    let (fast_server, fast_inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let (slow_addr, release, slow_thread) = stuck_peer(&pki);
    let config = tls::client_config(pki.ca.cert_pem(), &pki.client5).expect("client config");
    let link = |addr, queue_frames_max| {
        let options = PeerOptions {
            queue_frames_max,
            connection: options(),
            ..PeerOptions::default()
        };
        PeerLink::spawn(addr, loopback(), Arc::clone(&config), options).expect("spawn")
    };
    let fast = link(fast_server.local_addr(), FRAMES);
    let slow = link(slow_addr, 16);
    wait_until("both links connected", || {
        fast.stats().connects.load(Ordering::Relaxed) == 1
            && slow.stats().connects.load(Ordering::Relaxed) == 1
    });

    let encoded: Arc<[u8]> = frame::encode_to_vec(9, &vec![0xAB; FRAME_PAYLOAD_BYTES]).into();
    let started = Instant::now();
    for _ in 0..FRAMES {
        assert_ne!(
            fast.send_encoded(Arc::clone(&encoded)),
            SendOutcome::Dropped
        );
        assert_ne!(
            slow.send_encoded(Arc::clone(&encoded)),
            SendOutcome::Dropped
        );
    }
    let send_elapsed = started.elapsed();
    assert!(
        send_elapsed < Duration::from_secs(2),
        "sends blocked for {send_elapsed:?}"
    );

    for received in 0..FRAMES {
        let inbound = fast_inbound
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("fast peer got only {received}"));
        assert_eq!(inbound.frame.payload.len(), FRAME_PAYLOAD_BYTES);
    }
    assert_eq!(fast.stats().dropped.load(Ordering::Relaxed), 0);
    wait_until("fast link to count all sent", || {
        fast.stats().sent.load(Ordering::Relaxed) == FRAMES as u64
    });

    let slow_stats = slow.stats();
    let (sent, dropped) = (
        slow_stats.sent.load(Ordering::Relaxed),
        slow_stats.dropped.load(Ordering::Relaxed),
    );
    assert!(
        dropped > 0,
        "the stuck peer's queue overflowed (sent {sent})"
    );
    // Every frame is sent, dropped, queued, or the one the writer is blocked on.
    let accounted = sent + dropped + slow.queued_now() as u64;
    assert!(
        FRAMES as u64 - accounted <= 1,
        "sent {sent} dropped {dropped} queued {}",
        slow.queued_now()
    );

    let stopping = Instant::now();
    slow.shutdown(); // unblocks the stuck write by shutting the socket down
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let _ = release.send(());
    slow_thread.join().expect("stuck peer thread");
    fast.shutdown();
    fast_server.shutdown();
}

#[test]
fn connections_beyond_the_limit_are_refused_and_others_keep_working() {
    let pki = pki();
    let (tx, inbound) = channel::bounded(16);
    let server_options = ServerOptions {
        connections_max: 1,
        connection: options(),
        ..ServerOptions::default()
    };
    let config = tls::server_config(pki.ca.cert_pem(), &pki.node0).expect("server config");
    let server = Server::bind(any_port(), config, server_options, tx).expect("bind");
    let mut first = connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5).expect("first");
    let second = connect(server.local_addr(), pki.ca.cert_pem(), &pki.node1);
    assert!(second.is_err(), "second connection must be refused");
    assert_eq!(server.stats().refused_full.load(Ordering::Relaxed), 1);
    first.send(1, b"still here").expect("send");
    echo_once(&inbound);
    assert_eq!(
        first
            .recv_timeout(WAIT)
            .expect("recv")
            .expect("reply")
            .payload,
        b"still here"
    );
}

#[test]
fn server_shutdown_closes_live_connections_promptly() {
    let pki = pki();
    let (server, _inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let mut client =
        connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5).expect("connect");
    wait_until("connection served", || {
        server.stats().active.load(Ordering::Relaxed) == 1
    });
    let started = Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(matches!(
        client.recv_timeout(WAIT),
        Err(NetError::Closed) | Err(NetError::Io(_))
    ));
}

#[test]
fn ca_reloaded_from_pem_issues_certificates_that_chain_to_the_original() {
    let pki = pki();
    let reloaded = ConsortiumCa::from_pem(pki.ca.cert_pem(), &pki.ca.key_pem()).expect("reload");
    let late_client = tls::issue_client_cert(&reloaded, 8).expect("issue");
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let client = connect(server.local_addr(), pki.ca.cert_pem(), &late_client).expect("connect");
    client.send(1, b"x").expect("send");
    let request = inbound.recv_timeout(WAIT).expect("frame");
    assert_eq!(request.peer, PeerIdentity::Institution { institution: 8 });
}

/// A measurement of one mTLS connection on loopback, not a criterion benchmark. Run:
/// `cargo test --release -p reckon-engine --lib net::tests::slow::measure -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn measure_loopback_frame_throughput() {
    let pki = pki();
    let (server, inbound) = server(pki.ca.cert_pem(), &pki.node0, options());
    let client = connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5).expect("connect");
    for (payload_bytes, frames) in [(256usize, 200_000usize), (64 * 1024, 8_000), (1 << 20, 500)] {
        let payload = vec![0x5A; payload_bytes];
        let writer = client.writer();
        let started = Instant::now();
        let sender = thread::spawn(move || {
            for _ in 0..frames {
                writer.send(1, &payload).expect("send");
            }
        });
        for _ in 0..frames {
            inbound
                .recv_timeout(Duration::from_secs(30))
                .expect("frame");
        }
        sender.join().expect("sender");
        let seconds = started.elapsed().as_secs_f64();
        let megabytes = (payload_bytes * frames) as f64 / 1e6;
        println!(
            "NET SUMMARY: payload {payload_bytes} B x {frames}: {:.0} frames/s, {:.0} MB/s",
            frames as f64 / seconds,
            megabytes / seconds
        );
    }
}

#[test]
fn queue_to_a_down_peer_is_bounded_in_frames_and_bytes_dropping_oldest() {
    let pki = pki();
    let addr = TcpListener::bind(any_port())
        .and_then(|l| l.local_addr())
        .expect("free port");
    let config = tls::client_config(pki.ca.cert_pem(), &pki.node1).expect("client config");
    let frame_bytes = frame::FRAME_HEADER_BYTES as u64 + 1000;
    let options = PeerOptions {
        queue_frames_max: 5,
        queue_bytes_max: 3 * frame_bytes,
        backoff_ms_min: 1000,
        backoff_ms_max: 1000,
        connection: options(),
        ..PeerOptions::default()
    };
    let link = PeerLink::spawn(addr, loopback(), config, options).expect("spawn");
    let outcomes: Vec<SendOutcome> = (0..10u8).map(|i| link.send(i, &[i; 1000])).collect();
    assert_eq!(&outcomes[..3], &[SendOutcome::Queued; 3]);
    assert!(
        outcomes[3..]
            .iter()
            .all(|o| *o == SendOutcome::QueuedDroppedOldest),
        "{outcomes:?}"
    );
    assert_eq!(link.queued_now(), 3);
    assert_eq!(
        link.stats().queued_bytes.load(Ordering::Relaxed),
        3 * frame_bytes
    );
    assert_eq!(link.stats().dropped.load(Ordering::Relaxed), 7);
    let small = link.send(20, &[]);
    assert_eq!(
        small,
        SendOutcome::QueuedDroppedOldest,
        "count bound is 5, bytes bound still applies"
    );
    assert!(link.stats().queued_bytes.load(Ordering::Relaxed) <= 3 * frame_bytes);
}

#[test]
fn full_inbound_channel_answers_busy_and_keeps_the_connection() {
    let pki = pki();
    let (tx, inbound) = channel::bounded(1);
    let server_options = ServerOptions {
        connection: options(),
        inbound_wait: Duration::from_millis(20),
        ..ServerOptions::default()
    };
    let config = tls::server_config(pki.ca.cert_pem(), &pki.node0).expect("server config");
    let server = Server::bind(any_port(), config, server_options, tx).expect("bind");
    let mut client =
        connect(server.local_addr(), pki.ca.cert_pem(), &pki.client5).expect("connect");
    for i in 0..3u8 {
        client.send(1, &[i]).expect("send");
    }
    for _ in 0..2 {
        let reply = client
            .recv_timeout(WAIT)
            .expect("recv")
            .expect("busy in time");
        let error = NetErrorFrame::decode(&reply).expect("net error frame");
        assert_eq!(error.code, NetErrorCode::Busy);
    }
    assert_eq!(server.stats().inbound_busy.load(Ordering::Relaxed), 2);
    let first = inbound.recv_timeout(WAIT).expect("the frame that fit");
    assert_eq!(first.frame.payload, [0]);
    client.send(1, b"later").expect("send after busy");
    let later = echo_once(&inbound);
    assert_eq!(later.frame.payload, b"later");
    assert_eq!(
        client
            .recv_timeout(WAIT)
            .expect("recv")
            .expect("echo")
            .payload,
        b"later"
    );
}
