//! Hostile clients answered in bounded cost (the findings of the hardening review). Each test
//! sends the finding's bytes, asserts the bounded answer, and checks that a normal client on
//! the same worker (`--workers 1`) is served meanwhile.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tidings::{Config, Server};

fn one_worker() -> impl FnOnce(&mut Config) {
    |c| c.workers = 1
}

/// A normal client: `/health` answered within the usual bound.
fn normal_client_is_served(server: &TestServer) {
    let r = server.get("/health");
    assert_eq!(r.status, 200, "a normal client is served: {}", r.show());
}

fn comet_put(server: &TestServer, channel: &str, message: &str) -> Response {
    let body = format!("method=put&channel={channel}&message={message}");
    server.request(&post_form("/comet", &body))
}

// Finding 1: a global budget for retained bytes, and a retention age.

#[test]
fn retained_messages_stay_within_the_budget_oldest_dropped_first() {
    let server = start_with(|c| {
        c.workers = 1;
        c.retained_bytes = 1 << 20;
    });
    let big = "x".repeat(60_000);
    // Anonymous 60 KB puts to new channels, 3 MB in all.
    for i in 0..50 {
        let r = comet_put(&server, &format!("fresh{i}"), &big);
        assert_eq!(r.status, 200, "put {i}: {}", r.show());
        if i % 10 == 0 {
            normal_client_is_served(&server);
        }
    }
    let retained = server.metric("tidings_retained_bytes").unwrap();
    assert!(retained <= (1 << 20) as f64, "retained {retained}");
    assert!(server.metric("tidings_messages_evicted_total").unwrap() >= 30.0);
    // The oldest went first: the first channel lost its message and says so.
    let r = server.get("/comet?method=get&channel=fresh0&time=0");
    assert!(r.body_str().contains("\"missed\":true"), "{}", r.show());
    assert!(r.body_str().contains("\"messages\":[]"), "{}", r.show());
    // The newest is still there.
    let r = server.get("/comet?method=get&channel=fresh49&time=0");
    assert!(r.body_str().contains("xxxxxxxx"), "{}", r.show());
}

#[test]
fn when_only_queue_messages_are_left_publishes_get_503() {
    let server = start_with(|c| {
        c.workers = 1;
        c.retained_bytes = 256 << 10;
    });
    let body = "q".repeat(10_000);
    let xml = |i: usize| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><messages><message id="m{i}" from="a" to="b"><text>{body}</text></message></messages>"#
        )
    };
    let mut refused = None;
    for i in 0..100 {
        let r = server.request(&post("/qst/inbox", "text/xml", xml(i).as_bytes()));
        if r.status == 503 {
            assert_eq!(r.header("Retry-After"), Some("1"), "{}", r.show());
            refused = Some(i);
            break;
        }
        assert_eq!(r.status, 200, "push {i}: {}", r.show());
    }
    let refused = refused.expect("the budget refuses queue messages it cannot drop");
    assert!(
        refused >= 15,
        "the budget was used before refusing ({refused})"
    );
    assert_eq!(server.metric("tidings_memory_refusals_total"), Some(1.0));
    normal_client_is_served(&server);
    // Nothing accepted was lost: every pushed message is still in the queue.
    let r = server.get(&format!("/qst/inbox?max={refused}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str().matches("<message ").count(), refused);
}

#[test]
fn messages_past_the_channel_ttl_expire_and_their_channel_goes() {
    let server = start_with(|c| {
        c.workers = 1;
        c.channel_ttl = Duration::from_millis(500);
        c.channel_idle = Duration::from_millis(500);
    });
    assert_eq!(comet_put(&server, "short-lived", "hello").status, 200);
    server.wait_metric("tidings_messages_expired_total", 1.0);
    server.wait_metric("tidings_channels", 0.0);
    server.wait_metric("tidings_retained_bytes", 0.0);
}

// Finding 2: a second server on the same address.

#[test]
fn a_second_server_on_the_same_address_is_refused() {
    let first = start();
    let config = Config {
        listen: first.addr,
        ..test_config()
    };
    let err = match Server::start(config) {
        Ok(_) => panic!("a second server started on {}", first.addr),
        Err(e) => e,
    };
    assert!(err.to_string().contains("already in use"), "{err}");
    normal_client_is_served(&first);
}

// Finding 3: a chunked body trickled a few bytes at a time.

#[test]
fn a_trickled_chunked_body_is_decoded_as_it_comes() {
    let server = start_with(one_worker());
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_nodelay(true).unwrap();
    let prefix = "method=put&channel=trickle&message=";
    c.write_all(
        format!(
            "POST /comet HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{prefix}\r\n",
            prefix.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let n = 4000;
    for i in 0..n {
        c.write_all(b"1\r\na\r\n").unwrap();
        if i % 1000 == 0 {
            normal_client_is_served(&server);
        }
    }
    c.write_all(b"0\r\n\r\n").unwrap();
    let mut client = Client::from_stream(c);
    let r = client.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    let r = server.get("/comet?method=get&channel=trickle&time=0");
    assert!(r
        .body_str()
        .contains(&format!("\"data\":\"{}\"", "a".repeat(n))));
}

// Finding 4: continuous pipelining.

#[test]
fn a_pipelining_client_yields_to_the_others_on_its_worker() {
    let server = start_with(one_worker());
    let n = 60_000;
    let stream = TcpStream::connect(server.addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let batch = b"GET /health HTTP/1.1\r\n\r\n".repeat(1000);
        for _ in 0..n / 1000 {
            writer.write_all(&batch).unwrap();
        }
    });
    let mut c = Client::from_stream(stream);
    // While the flood is answered, another client is served.
    let first = c.read_response();
    assert_eq!(first.status, 200);
    let t0 = Instant::now();
    normal_client_is_served(&server);
    assert!(t0.elapsed() < TIMEOUT);
    for i in 1..n {
        let r = c.read_response();
        assert_eq!(r.status, 200, "answer {i}");
    }
    sender.join().unwrap();
}

// Finding 5: the header timeout between pipelined requests.

#[test]
fn a_busy_pipelining_client_is_not_cut_off() {
    let server = start_with(|c| {
        c.workers = 1;
        c.header_timeout = Duration::from_secs(1);
    });
    let mut c = server.connect();
    // Always a request begun behind the one answered, for 2.5 header timeouts.
    c.send(b"GET /health HTTP/1.1\r\n\r\nGET /hea");
    let mut answered = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        assert_eq!(c.read_response().status, 200);
        answered += 1;
        std::thread::sleep(Duration::from_millis(250));
        c.send(b"lth HTTP/1.1\r\n\r\nGET /hea");
    }
    assert_eq!(c.read_response().status, 200);
    assert!(answered >= 9);
    normal_client_is_served(&server);
    // A head that stops coming is still cut off.
    c.expect_closed_within(Duration::from_secs(3));
}

// Finding 6: HTTP/1.0, keep-alive and a chunked body.

#[test]
fn http10_keep_alive_with_a_chunked_body_closes_after_it() {
    let server = start_with(one_worker());
    let mut c = server.connect();
    let body = "method=sync&channel=c10";
    c.send(
        format!(
            "POST /comet HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    let rest = c.read_to_eof();
    assert!(
        rest.is_empty(),
        "the bytes after the body are no request: {}",
        show(&rest)
    );
    normal_client_is_served(&server);
}

// Finding 7: connections that sent one byte and left.

#[test]
fn one_byte_connections_hold_little_and_give_it_back() {
    let server = start_with(one_worker());
    let n = 1000;
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"G").unwrap();
        slow.push(s);
    }
    server.wait_metric("tidings_connections_open", n as f64 + 1.0);
    normal_client_is_served(&server);
    let held = server.metric("tidings_read_buffer_bytes").unwrap();
    assert!(
        held <= (n * 64) as f64,
        "{n} one-byte requests hold {held} bytes"
    );
    drop(slow);
    server.wait_metric("tidings_connections_open", 1.0);
    let pooled = server.metric("tidings_read_buffer_bytes").unwrap();
    assert!(
        pooled <= (256 * 4096) as f64,
        "the pool keeps {pooled} bytes"
    );
}

// Finding 8: the smaller ones.

#[test]
fn a_501_is_counted_as_501() {
    let server = start_with(one_worker());
    let r = server.request(b"POST /comet HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(r.status, 501);
    assert_eq!(
        server.metric("tidings_requests_total{protocol=\"other\",status=\"501\"}"),
        Some(1.0)
    );
}

#[test]
fn a_comet_message_that_is_not_utf8_is_refused() {
    let server = start_with(one_worker());
    let r = server.get("/comet?method=put&channel=bytes&message=%ff%fe");
    assert_eq!(r.status, 400, "{}", r.show());
    assert!(r.body_str().contains("UTF-8"));
    assert_eq!(
        server
            .get("/comet?method=put&channel=bytes&message=fine")
            .status,
        200
    );
    let r = server.get("/comet?method=get&channel=bytes&time=0");
    assert_eq!(r.body_str().matches("\"data\"").count(), 1, "{}", r.show());
    assert!(
        r.body_str().contains("\"data\":\"fine\""),
        "nothing else stored: {}",
        r.show()
    );
    normal_client_is_served(&server);
}

#[test]
fn a_stream_that_never_reads_is_closed_within_its_output_limit() {
    let server = start_with(|c| {
        c.workers = 1;
        c.max_output_bytes = 64 << 10;
        c.stream_send_buffer = 16 << 10;
    });
    let mut reader = Client::connect_small_window(server.addr);
    reader.send(b"GET /pull?name=sleepy&channel=flood HTTP/1.1\r\nHead: less\r\n\r\n");
    server.wait_metric("tidings_connections_streaming", 1.0);
    let message = "m".repeat(1000);
    let mut pushes = 0;
    let mut c = server.connect();
    while server.metrics().slow_readers_closed.get() == 0 {
        let r = c.get(&format!("/push?channel=flood&name=w&message={message}"));
        assert_eq!(r.status, 200);
        pushes += 1;
        assert!(
            pushes < 400,
            "a reader that never reads was not closed after {pushes} KB"
        );
    }
    // The user-space limit plus a send buffer capped at 16 KiB (the kernel doubles it)
    // and the reader's small window: far below what an uncapped buffer takes (megabytes).
    assert!(pushes <= 250, "{pushes} KB went out before the close");
    normal_client_is_served(&server);
}

#[test]
fn health_and_metrics_answer_at_max_connections() {
    let server = start_with(|c| {
        c.workers = 1;
        c.max_connections = 3;
        c.admin_connections = 2;
    });
    let idle: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    assert!(wait_for(TIMEOUT, || server
        .metrics()
        .connections_open
        .get()
        == 3));
    // Past the limit: /health and /metrics are answered, anything else gets 503.
    let mut admin = server.connect();
    assert_eq!(admin.get("/health").status, 200);
    let mut other = server.connect();
    let r = other.get("/comet?method=sync");
    assert_eq!(r.status, 503, "{}", r.show());
    assert_eq!(r.header("Retry-After"), Some("1"));
    other.expect_closed();
    let text = {
        let r = admin.get("/metrics");
        assert_eq!(r.status, 200);
        r.body_str().to_string()
    };
    assert!(
        text.contains("tidings_connections_refused_total 1"),
        "{text}"
    );
    drop(idle);
}
