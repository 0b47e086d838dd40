//! HTTP/1.x connection handling (PROTOCOLS.md 0.3): keep-alive, pipelining, HTTP/1.0,
//! HEAD, CORS, Date, `Expect: 100-continue`, chunked request bodies.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn several_requests_on_one_connection() {
    let server = start();
    let mut c = server.connect();
    for _ in 0..5 {
        c.send(&get("/health"));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"ok\n");
        assert_eq!(r.header("Content-Length"), Some("3"));
        assert_eq!(
            r.header("Connection"),
            None,
            "HTTP/1.1 keep-alive is implicit"
        );
    }
    c.send(&get("/nope"));
    assert_eq!(c.read_response().status, 404);
    c.send(&get("/health"));
    assert_eq!(c.read_response().status, 200, "a 404 keeps the connection");
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let server = start();
    let mut c = server.connect();
    let mut batch = Vec::new();
    batch.extend_from_slice(&get("/health"));
    batch.extend_from_slice(&get("/missing"));
    batch.extend_from_slice(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(&post_form("/push", "name=a&message=one"));
    batch.extend_from_slice(b"DELETE /pull HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(&get("/health"));
    c.send(&batch);

    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    let r = c.read_response();
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"not found\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("3"));
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"noop"[..]));
    let r = c.read_response();
    assert_eq!(r.status, 405);
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn pipelined_requests_split_at_odd_places() {
    let server = start();
    let mut c = server.connect();
    let mut batch = Vec::new();
    for _ in 0..3 {
        batch.extend_from_slice(&get("/health"));
    }
    // The first write ends in the middle of the second request's head.
    let cut = get("/health").len() + 7;
    c.send(&batch[..cut]);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    c.send(&batch[cut..]);
    for _ in 0..2 {
        let r = c.read_response();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    }
}

#[test]
fn http10_gets_connection_close_and_eof() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.header("Connection"), Some("close"));
    c.expect_closed();
}

#[test]
fn http11_connection_close_is_honoured() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    c.expect_closed();
}

#[test]
fn http10_with_keep_alive_stays_open() {
    let server = start();
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok\n");
        assert_eq!(r.header("Connection"), Some("keep-alive"));
    }
    // Without the token, the next HTTP/1.0 request closes.
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("Connection"), Some("close"));
    c.expect_closed();
}

#[test]
fn head_has_headers_but_no_body() {
    let server = start();
    let mut c = server.connect();
    c.send(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some("3"),
        "HEAD announces the GET length"
    );
    assert!(r.header("Content-Type").is_some());
    // No body follows: the next bytes on the connection are the next response.
    c.send(&get("/health"));
    let next = c.read_exact_bytes(b"HTTP/1.1 200 OK\r\n".len());
    assert_eq!(show(&next), show(b"HTTP/1.1 200 OK\r\n"));

    c.send(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    // Drain the rest of the GET /health response first.
    let rest = c.read_until(b"ok\n", TIMEOUT);
    assert!(rest.ends_with(b"\r\n\r\nok\n"));
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert!(len > 100, "metrics text is long: {len}");
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn options_preflight_is_204_with_cors_headers() {
    let server = start();
    let mut c = server.connect();
    c.send(
        b"OPTIONS /push HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\
          Access-Control-Request-Method: POST\r\n\
          Access-Control-Request-Headers: Content-Type, Head\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 204);
    assert_eq!(r.reason, "No Content");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let methods = r
        .header("Access-Control-Allow-Methods")
        .expect("Allow-Methods");
    for m in ["GET", "POST", "OPTIONS"] {
        assert!(methods.contains(m), "{m} in {methods:?}");
    }
    assert_eq!(
        r.header("Access-Control-Allow-Headers"),
        Some("Content-Type, Head")
    );
    assert_eq!(
        r.header("Content-Length"),
        None,
        "204 has no Content-Length"
    );
    assert!(r.body.is_empty());
    // The connection is still usable: a 204 has no body to skip.
    c.send(&get("/health"));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn options_preflight_without_requested_headers_lists_defaults() {
    let server = start();
    let r = server.request(
        b"OPTIONS /qst/acme HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    let allowed = r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .to_string();
    for h in ["Authorization", "Content-Type"] {
        assert!(allowed.contains(h), "{h} in {allowed:?}");
    }
}

#[test]
fn normal_responses_carry_the_cors_header() {
    let server = start();
    for path in ["/health", "/metrics", "/nope", "/push?name=a&message=x"] {
        let r = server.get(path);
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            Some("*"),
            "{path}: {}",
            show(&r.head)
        );
        assert_eq!(r.header_count("Access-Control-Allow-Origin"), 1);
    }
}

#[test]
fn cors_origin_is_configurable() {
    let server = start_with(|c| c.cors_origin = "https://dash.example".into());
    let r = server.get("/health");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://dash.example")
    );
    let r = server.request(b"OPTIONS /pull HTTP/1.1\r\nOrigin: https://dash.example\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://dash.example")
    );
}

#[test]
fn date_header_is_an_imf_fixdate() {
    let server = start();
    let r = server.get("/health");
    let date = r.header("Date").expect("Date header");
    // `Sun, 06 Nov 1994 08:49:37 GMT`
    let b = date.as_bytes();
    assert_eq!(b.len(), 29, "{date:?}");
    assert!(
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&&date[..3]),
        "{date:?}"
    );
    assert_eq!(&date[3..5], ", ");
    assert!(b[5].is_ascii_digit() && b[6].is_ascii_digit(), "{date:?}");
    assert!(date.ends_with(" GMT"), "{date:?}");
    let year: u32 = date[12..16].parse().expect("year");
    assert!(year >= 2024, "{date:?}");
    // Every response has exactly one.
    let r = server.get("/nope");
    assert_eq!(r.header_count("Date"), 1);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = start();
    let mut stream = server.pull("/pull?name=watcher&channel=expect", false);
    let mut c = server.connect();
    let body = "name=poster&channel=expect&message=after+continue";
    c.send(
        format!(
            "POST /push HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // The interim response arrives while the body is still unsent.
    c.expect_bytes(b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(body.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"noop");
    assert_eq!(stream.next_text(), "after continue");
}

#[test]
fn expect_100_continue_with_the_body_already_sent() {
    let server = start();
    let mut c = server.connect();
    let body = "name=p&message=x";
    c.send(
        format!(
            "POST /push HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    // Either form is valid HTTP, but the server must not send a stray 100 after the final
    // response; read one response and check nothing follows.
    let mut r = c.read_response();
    if r.status == 100 {
        r = c.read_response();
    }
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"noop");
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn chunked_request_body_is_decoded() {
    let server = start();
    let mut stream = server.pull("/pull?name=reader&channel=chunky", false);
    let mut c = server.connect();
    // A form body in three chunks, one with an extension, and a trailer.
    c.send(
        b"POST /push HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\r\n\
          b\r\nname=writer\r\n\
          f;ext=1\r\n&channel=chunky\r\n\
          1C\r\n&message=hello%20in%20chunks\r\n\
          0\r\nX-Trailer: yes\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body, b"noop");
    assert_eq!(stream.next_text(), "hello in chunks");

    // A chunked body that arrives in pieces, on the same connection.
    let parts: [&[u8]; 4] = [
        b"POST /push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n23\r\nname=wri",
        b"ter&channel=chunky&mess",
        b"age=\r\n6\r\nsecond\r\n",
        b"0\r\n\r\n",
    ];
    for p in parts {
        c.send(p);
    }
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(stream.next_text(), "second");
}

#[test]
fn malformed_chunked_body_is_400_and_closes() {
    let server = start();
    let mut c = server.connect();
    c.send(b"POST /push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nname=a\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Connection"), Some("close"));
    c.expect_closed();
}

#[test]
fn chunked_body_followed_by_a_pipelined_request() {
    let server = start();
    let mut c = server.connect();
    c.send(
        b"POST /push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
          10\r\nname=a&message=x\r\n0\r\n\r\n\
          GET /health HTTP/1.1\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"noop"[..]));
    let r = c.read_response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
}

#[test]
fn absolute_form_target_is_served() {
    let server = start();
    let r = server.request(b"GET http://example.com/health HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
}
