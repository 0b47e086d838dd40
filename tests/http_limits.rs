//! Limits and client faults (PROTOCOLS.md 0.3, STYLE.md 4): 431, 413, 400, 404, 405, 501,
//! the header and idle timeouts, and `--max-connections`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidings::metrics::Proto;

/// Asserts an error response: status, `text/plain` body, `Connection: close`, then EOF.
fn expect_fatal(c: &mut Client, status: u16) -> Response {
    let r = c.read_response();
    assert_eq!(r.status, status, "{} {}", show(&r.head), show(&r.body));
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "error bodies are text/plain: {}",
        show(&r.head)
    );
    assert!(!r.body.is_empty(), "error bodies say what was wrong");
    assert_eq!(r.header("Connection"), Some("close"));
    c.expect_closed();
    r
}

#[test]
fn head_over_max_head_bytes_is_431() {
    let server = start_with(|c| c.max_head_bytes = 1024);
    let mut c = server.connect();
    let big = "x".repeat(2000);
    c.send(format!("GET /health HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let r = expect_fatal(&mut c, 431);
    assert_eq!(r.reason, "Request Header Fields Too Large");
    server.wait_metric("tidings_heads_too_large_total", 1.0);
    server.wait_metric(
        "tidings_requests_total{protocol=\"other\",status=\"431\"}",
        1.0,
    );
}

#[test]
fn unterminated_head_over_the_limit_is_431_without_waiting_for_its_end() {
    let server = start_with(|c| c.max_head_bytes = 1024);
    let mut c = server.connect();
    // A head that never ends: the server must answer once it passed the limit.
    let big = "y".repeat(3000);
    c.send(format!("GET /health HTTP/1.1\r\nX-Big: {big}").as_bytes());
    expect_fatal(&mut c, 431);
}

#[test]
fn head_just_under_the_limit_is_served() {
    let server = start_with(|c| c.max_head_bytes = 1024);
    let prefix = "GET /health HTTP/1.1\r\nX-Pad: ";
    let pad = "p".repeat(1024 - prefix.len() - 4);
    let req = format!("{prefix}{pad}\r\n\r\n");
    assert_eq!(req.len(), 1024);
    let r = server.request(req.as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn too_many_headers_is_431() {
    let server = start();
    let mut req = String::from("GET /health HTTP/1.1\r\n");
    for i in 0..200 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut c = server.connect();
    c.send(req.as_bytes());
    expect_fatal(&mut c, 431);
}

#[test]
fn content_length_over_max_body_is_413_before_the_body_is_sent() {
    let server = start_with(|c| c.max_body_bytes = 4096);
    let mut c = server.connect();
    // Only the head: the answer must not wait for 10 MB that will never come.
    c.send(b"POST /push HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
    let r = expect_fatal(&mut c, 413);
    assert_eq!(r.reason, "Content Too Large");
    server.wait_metric("tidings_bodies_too_large_total", 1.0);
}

#[test]
fn expect_continue_with_too_large_body_gets_413_and_no_100() {
    let server = start_with(|c| c.max_body_bytes = 4096);
    let mut c = server.connect();
    c.send(
        b"POST /push HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    );
    let head = c.read_until(b"\r\n", TIMEOUT);
    assert_eq!(
        show(&head),
        show(b"HTTP/1.1 413 Content Too Large\r\n"),
        "no 100 Continue for a body that will be refused"
    );
}

#[test]
fn chunked_body_over_max_body_is_413() {
    let server = start_with(|c| c.max_body_bytes = 4096);
    let mut c = server.connect();
    c.send(b"POST /push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n");
    c.send(&[b'a'; 0x2000]);
    expect_fatal(&mut c, 413);
}

#[test]
fn body_at_the_limit_is_accepted() {
    let server = start_with(|c| c.max_body_bytes = 4096);
    let mut body = String::from("name=a&message=");
    body.push_str(&"m".repeat(4096 - body.len()));
    assert_eq!(body.len(), 4096);
    let r = server.request(&post_form("/push", &body));
    assert_eq!(r.status, 200, "{}", r.body_str());
}

#[test]
fn garbage_is_400_and_closes() {
    let server = start();
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /push HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /push HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = server.connect();
        c.send(garbage);
        let r = c.read_response();
        assert_eq!(
            r.status,
            400,
            "{:?} got {} {}",
            show(garbage),
            show(&r.head),
            show(&r.body)
        );
        assert_eq!(r.header("Connection"), Some("close"));
        c.expect_closed();
    }
    server.wait_metric("tidings_bad_requests_total", 7.0);
}

#[test]
fn unknown_transfer_coding_is_501() {
    let server = start();
    let mut c = server.connect();
    c.send(b"POST /push HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    expect_fatal(&mut c, 501);
}

#[test]
fn unknown_path_is_404_and_keeps_the_connection() {
    let server = start();
    let mut c = server.connect();
    c.send(&get("/no/such/thing"));
    let r = c.read_response();
    assert_eq!(r.status, 404);
    assert_eq!(r.reason, "Not Found");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body, b"not found\n");
    c.send(&get("/health"));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn wrong_method_is_405_with_allow() {
    let server = start();
    let cases: [(&str, &str, &str); 4] = [
        ("DELETE", "/pull", "GET, OPTIONS"),
        ("POST", "/pull?name=a", "GET, OPTIONS"),
        ("PUT", "/push", "GET, POST, OPTIONS"),
        ("DELETE", "/health", "GET, HEAD, OPTIONS"),
    ];
    let mut c = server.connect();
    for (method, path, allow) in cases {
        c.send(format!("{method} {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.reason, "Method Not Allowed");
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
    }
    assert_eq!(
        server.metric("tidings_connections_streaming"),
        Some(0.0),
        "a POST /pull opened no stream"
    );
}

#[test]
fn header_timeout_closes_a_stalled_partial_head() {
    let server = start_with(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_secs(30);
    });
    let mut c = server.connect();
    let t0 = Instant::now();
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n");
    c.expect_closed();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290),
        "closed after {took:?}, before the header timeout"
    );
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    assert_eq!(server.handle.metrics().header_timeouts.get(), 1);
    server.wait_metric("tidings_header_timeouts_total", 1.0);
    server.wait_metric("tidings_idle_timeouts_total", 0.0);
}

#[test]
fn header_timeout_closes_a_stalled_body() {
    let server = start_with(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_secs(30);
    });
    let mut c = server.connect();
    c.send(b"POST /push HTTP/1.1\r\nContent-Length: 40\r\n\r\nname=a&mes");
    let took = c.expect_closed();
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    server.wait_metric("tidings_header_timeouts_total", 1.0);
}

#[test]
fn a_slow_but_steady_head_is_not_cut_while_within_the_timeout() {
    let server = start_with(|c| c.header_timeout = Duration::from_secs(2));
    let mut c = server.connect();
    c.send(b"GET /health HTTP/1.1\r\n");
    c.expect_silence(Duration::from_millis(100));
    c.send(b"Host: t\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let server = start_with(|c| {
        c.idle_timeout = Duration::from_millis(300);
        c.header_timeout = Duration::from_secs(30);
    });
    let mut c = server.connect();
    // Timed from before the request: the idle interval starts after its answer.
    let t0 = Instant::now();
    c.send(&get("/health"));
    assert_eq!(c.read_response().status, 200);
    c.expect_closed();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290),
        "closed after {took:?}, before the idle timeout"
    );
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    assert_eq!(server.handle.metrics().idle_timeouts.get(), 1);
    server.wait_metric("tidings_idle_timeouts_total", 1.0);
    server.wait_metric("tidings_header_timeouts_total", 0.0);
}

#[test]
fn each_request_restarts_the_idle_timeout() {
    let server = start_with(|c| {
        c.idle_timeout = Duration::from_millis(400);
        c.header_timeout = Duration::from_millis(300);
    });
    let mut c = server.connect();
    let t0 = Instant::now();
    // Keep the connection busy for well over one idle timeout.
    while t0.elapsed() < Duration::from_millis(900) {
        c.send(&get("/health"));
        assert_eq!(c.read_response().status, 200);
        c.expect_silence(Duration::from_millis(100));
    }
    assert_eq!(server.handle.metrics().idle_timeouts.get(), 0);
    assert_eq!(server.handle.metrics().header_timeouts.get(), 0);
}

#[test]
fn max_connections_refuses_the_next_connection() {
    // No admin reserve: the connection past the limit is refused at once (the reserve for
    // `/health` and `/metrics` is tested in tests/hardening.rs).
    let server = start_with(|c| {
        c.max_connections = 3;
        c.admin_connections = 0;
    });
    let metrics = server.handle.metrics();
    let mut held: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = server.connect();
            c.send(&get("/health"));
            assert_eq!(c.read_response().status, 200);
            c
        })
        .collect();
    assert_eq!(metrics.connections_open.get(), 3);

    // The kernel completes the handshake; the server accepts and closes at once, with at
    // most a short 503 saying why (never serving a request).
    let mut refused = server.connect();
    let said = refused.read_to_eof();
    if !said.is_empty() {
        let head_end = find(&said, b"\r\n\r\n").expect("a whole response head") + 4;
        let r = parse_head(said[..head_end].to_vec());
        assert_eq!(r.status, 503, "{}", show(&said));
        assert_eq!(r.header("Connection"), Some("close"));
    }
    assert_eq!(metrics.connections_refused.get(), 1);
    for c in held.iter_mut() {
        c.send(&get("/health"));
        assert_eq!(c.read_response().status, 200, "held connections still work");
    }

    // Once one leaves, a new connection is served again.
    drop(held.pop());
    assert!(
        wait_for(TIMEOUT, || metrics.connections_open.get() == 2),
        "the server noticed the hang-up"
    );
    let mut again = server.connect();
    again.send(&get("/health"));
    assert_eq!(again.read_response().status, 200);
    assert_eq!(metrics.connections_refused.get(), 1);
    let text = {
        again.send(&get("/metrics"));
        again.read_response().body_str().to_string()
    };
    assert_eq!(
        metric_value(&text, "tidings_connections_refused_total"),
        Some(1.0)
    );
}

/// DESIGN.md rule 4 and STYLE.md 4: output a connection cannot take is bounded. A client
/// that pipelines requests and never reads their answers is a slow reader like any other:
/// the server must stop reading from it (or close it) once `--max-output-bytes` are
/// queued, not render every answer into memory.
#[test]
fn a_pipelining_client_that_never_reads_cannot_grow_output_without_bound() {
    const REQUESTS: u64 = 8000;
    let server = start_with(|c| c.max_output_bytes = 64 * 1024);
    let metrics = server.handle.metrics();
    let size = server.get("/metrics").body.len() + 200;
    let before = metrics.requests(Proto::Other, 200);

    let c = Client::connect_small_window(server.addr);
    let batch = get("/metrics").repeat(REQUESTS as usize);
    let mut writer = c.stream.try_clone().unwrap();
    writer.set_write_timeout(Some(TIMEOUT)).unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        // A server that stops reading makes this time out; that is fine.
        let _ = writer.write_all(&batch);
    });
    // The negative proof: within a second, the server has not answered them all.
    let answered = || metrics.requests(Proto::Other, 200) - before;
    let all = wait_for(Duration::from_secs(1), || answered() >= REQUESTS);
    let n = answered();
    assert!(
        !all,
        "the server answered all {n} pipelined requests of a client that reads nothing: \
         about {} bytes rendered for it with --max-output-bytes at {}",
        n as usize * size,
        64 * 1024
    );
    c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    let _ = sender.join();
}
