//! Fan-out: one message reaches every one of 1,000 Talk streams on one channel of a
//! two-worker server (the `SO_REUSEPORT` listeners spread the connections).

mod common;

use std::time::{Duration, Instant};

use common::*;

const STREAMS: usize = 1000;

#[test]
fn one_push_reaches_a_thousand_streams() {
    let limit = tidings::server::raise_open_file_limit().expect("raise the open-file limit");
    assert!(
        limit >= (2 * STREAMS + 100) as u64,
        "open-file limit {limit} is too low for {STREAMS} streams"
    );
    let server = start_with(|c| {
        c.workers = 2;
        // No keep-alive noop may slip in while the streams are set up.
        c.talk_keepalive = Duration::from_secs(60);
    });
    let t0 = Instant::now();
    let mut clients: Vec<Client> = (0..STREAMS).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(
            format!("GET /pull?name=s{i}&channel=crowd HTTP/1.1\r\nHead: less\r\n\r\n").as_bytes(),
        );
    }
    let mut greeting = HEADLESS_PULL_HEAD.to_vec();
    greeting.extend_from_slice(b"5\r\nnoop\0\r\n");
    for c in clients.iter_mut() {
        c.expect_bytes(&greeting);
    }
    let setup = t0.elapsed();
    assert_eq!(server.handle.metrics().streaming.get(), STREAMS as i64);
    server.wait_metric("tidings_connections_streaming", STREAMS as f64);

    let t1 = Instant::now();
    let r = server.get("/push?name=sender&channel=crowd&message=fanout-message");
    assert_eq!(r.status, 200);
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c
            .try_read_exact(b"f\r\nfanout-message\0\r\n".len(), TIMEOUT)
            .unwrap_or_else(|e| panic!("stream s{i}: {e}"));
        assert_eq!(
            show(&got),
            show(b"f\r\nfanout-message\0\r\n"),
            "stream s{i}"
        );
    }
    let fanout = t1.elapsed();
    assert_eq!(
        server.handle.metrics().messages_delivered.get(),
        STREAMS as u64
    );
    eprintln!("{STREAMS} streams: set up in {setup:?}, one push delivered to all in {fanout:?}");

    // A push from one of them reaches the other 999 and not itself.
    let r = server.get("/push?name=s0&channel=crowd&message=from-s0");
    assert_eq!(r.status, 200);
    for c in clients.iter_mut().skip(1) {
        c.expect_bytes(b"8\r\nfrom-s0\0\r\n");
    }
    clients[0].expect_silence(Duration::from_millis(100));
    drop(clients);
    assert!(
        wait_for(TIMEOUT, || server.handle.metrics().streaming.get() == 0),
        "streams closed when their clients left: {} left",
        server.handle.metrics().streaming.get()
    );
}
