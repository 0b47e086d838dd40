//! nchan's streaming subscribers on `/sub/{channel}` (NCHAN.md 6), over raw HTTP:
//! EventSource framing (multi-line and empty bodies, `event:`, `\r` per D3, resume by
//! `Last-Event-ID`), HTTP chunked (empty messages skipped, D2's `TE: chunked, trailers`),
//! multipart/mixed (boundary, per-part headers), how DELETE and `--nchan-subscriber-timeout`
//! end each, transport selection, and CORS on a stream's head. tidings frames each body with
//! `Transfer-Encoding: chunked` (D4); `Sub` reads through that framing.

#[path = "nchan_support/mod.rs"]
mod nchan_support;

use std::time::{Duration, Instant};

use nchan_support::*;

/// The probe of NCHAN.md 6.1: `a\nb\n`, then an empty body with event `tick`, then `bin`.
#[test]
fn event_source_framing() {
    let server = start();
    let mut es = Sub::event_source(&server, "/sub/es", &[]);
    assert_eq!(es.head.header("Content-Length"), None);
    assert_eq!(es.head.header("Access-Control-Allow-Origin"), None);
    let a = publish_id(&server, "es", "a\nb\n");
    let r = publish(&server, "es", &[("X-EventSource-Event", "tick")], b"");
    let tick = last_id(&r);
    let bin = publish_id(&server, "es", "bin");
    let expected = format!(
        "id: {a}\ndata: a\ndata: b\ndata: \n\nevent: tick\nid: {tick}\ndata: \n\nid: {bin}\ndata: bin\n\n"
    );
    es.expect(expected.as_bytes());
    // Deviation D3: `\r\n` and a bare `\r` end lines as a browser's parser ends them; the
    // message's content type is not sent.
    let cr = publish(
        &server,
        "es",
        &[("Content-Type", "text/x-cr")],
        b"x\ry\r\nz\r",
    );
    let cr = last_id(&cr);
    es.expect(format!("id: {cr}\ndata: x\ndata: y\ndata: z\ndata: \n\n").as_bytes());
    // An event name cannot smuggle a field in.
    let ev = publish(
        &server,
        "es",
        &[("X-EventSource-Event", "one\tdata: two")],
        b"m",
    );
    let ev = last_id(&ev);
    es.expect(es_record(Some("one\tdata: two"), &ev, "m").as_bytes());
}

/// The backlog on subscribe follows the cursor rules: none → everything from the oldest;
/// `Last-Event-ID` (a browser's reconnect) wins over `?last_event_id=` (its original URL).
#[test]
fn event_source_resumes_by_last_event_id() {
    let server = start();
    let ids: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|b| publish_id(&server, "res", b))
        .collect();
    let mut all = Sub::event_source(&server, "/sub/res", &[]);
    for (id, b) in ids.iter().zip(["1", "2", "3"]) {
        all.expect(es_record(None, id, b).as_bytes());
    }
    let target = format!("/sub/res?last_event_id={}", ids[0].replace(':', "%3A"));
    let mut q = Sub::event_source(&server, &target, &[]);
    q.expect(es_record(None, &ids[1], "2").as_bytes());
    q.expect(es_record(None, &ids[2], "3").as_bytes());
    let mut h = Sub::event_source(&server, &target, &[("Last-Event-ID", &ids[1])]);
    h.expect(es_record(None, &ids[2], "3").as_bytes());
    h.expect_nothing(Duration::from_millis(50));
    let four = publish_id(&server, "res", "4");
    for s in [&mut all, &mut q, &mut h] {
        s.expect(es_record(None, &four, "4").as_bytes());
    }
}

/// DELETE ends an EventSource stream with `:410: 410 Gone\n\n`, then the body ends and the
/// connection closes (NCHAN.md 3.3).
#[test]
fn event_source_ends_with_410_on_delete() {
    let server = start();
    let id = publish_id(&server, "esd", "x");
    let mut es = Sub::event_source(&server, "/sub/esd", &[("Origin", "http://o.example")]);
    assert!(
        es.head
            .has_line("Access-Control-Allow-Origin: http://o.example"),
        "{}",
        es.head.show()
    );
    assert!(es.head.has_line("Access-Control-Allow-Credentials: true"));
    es.expect(es_record(None, &id, "x").as_bytes());
    assert_eq!(
        server
            .connect()
            .request("DELETE", "/pub/esd", &[], b"")
            .status,
        200
    );
    es.expect(b":410: 410 Gone\n\n");
    es.expect_end();
}

/// `--nchan-subscriber-timeout` ends an EventSource stream with
/// `:408: 408 Request Timeout\n\n` (NCHAN.md 5.4), at that timeout (not at the next
/// Talk keep-alive tick, 5 s by default).
#[test]
fn event_source_ends_with_408_at_the_subscriber_timeout() {
    let server = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let t0 = Instant::now();
    let mut es = Sub::event_source(&server, "/sub/est", &[]);
    let id = publish_id(&server, "est", "m");
    es.expect(es_record(None, &id, "m").as_bytes());
    es.expect(b":408: 408 Request Timeout\n\n");
    es.expect_end();
    assert_timed_out(t0);
}

/// Asserts a stream opened at `t0` ended at the 1 s subscriber timeout.
fn assert_timed_out(t0: Instant) {
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "ended after {took:?}"
    );
}

/// With `--talk-coalesce-ms` (which holds every stream's burst) and no subscriber timeout,
/// an nchan stream stays open after its burst is sent: the hold's end is not a timeout.
#[test]
fn a_coalesced_burst_does_not_end_an_nchan_stream() {
    let server = start_with(|c| {
        c.talk_coalesce = Duration::from_millis(20);
        c.talk_keepalive = Duration::from_millis(100);
    });
    let mut es = Sub::event_source(&server, "/sub/co", &[]);
    let mut ch = Sub::open(&server, "/sub/co", &[("TE", "chunked")]);
    let id = publish_id(&server, "co", "burst");
    es.expect(es_record(None, &id, "burst").as_bytes());
    assert_eq!(ch.next_chunk(), Some(b"burst".to_vec()));
    es.expect_nothing(Duration::from_millis(400));
    ch.expect_nothing(Duration::from_millis(10));
}

/// HTTP chunked (NCHAN.md 6.3): no content type, one chunk per message, empty messages
/// skipped; DELETE ends the body with the last chunk.
#[test]
fn chunked_framing_and_delete() {
    let server = start();
    let mut s = Sub::open(&server, "/sub/ch", &[("TE", "chunked")]);
    assert_eq!(s.head.header("Content-Type"), None, "{}", s.head.show());
    publish_id(&server, "ch", "a\nb\n");
    publish_id(&server, "ch", "");
    publish(
        &server,
        "ch",
        &[("Content-Type", "application/octet-stream")],
        b"bin",
    );
    assert_eq!(s.next_chunk(), Some(b"a\nb\n".to_vec()));
    assert_eq!(s.next_chunk(), Some(b"bin".to_vec()));
    assert_eq!(
        server
            .connect()
            .request("DELETE", "/pub/ch", &[], b"")
            .status,
        200
    );
    s.expect_end();
}

/// Deviation D2: any `chunked` token with q > 0 asks for chunked; `q=0` does not.
#[test]
fn te_parsing() {
    let server = start();
    let id = publish_id(&server, "te", "m");
    for te in [
        "chunked, trailers",
        "trailers, chunked",
        "Chunked;q=0.5",
        "chunked",
    ] {
        let mut s = Sub::open(&server, "/sub/te", &[("TE", te)]);
        assert_eq!(s.next_chunk(), Some(b"m".to_vec()), "TE: {te}");
    }
    for te in ["chunked;q=0", "gzip"] {
        let r = poll_now(&server, "/sub/te", &[("TE", te)]);
        assert_message(&r, "m", &id, None);
    }
}

/// The subscriber timeout ends a chunked stream with the last chunk.
#[test]
fn chunked_ends_at_the_subscriber_timeout() {
    let server = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let t0 = Instant::now();
    let mut s = Sub::open(&server, "/sub/cht", &[("TE", "chunked")]);
    s.expect_end();
    assert_timed_out(t0);
}

/// multipart/mixed (NCHAN.md 6.4): a 32-letter boundary; the body starts with `--B`; each
/// part carries `Last-Modified`, `Etag` and its content type when it has one, and ends with
/// the next boundary without a newline; DELETE completes the last boundary with `--\r\n`.
#[test]
fn multipart_framing_and_delete() {
    let server = start();
    let mut s = Sub::open(&server, "/sub/mp", &[("Accept", "multipart/mixed")]);
    let ct = s.head.header("Content-Type").unwrap_or("").to_string();
    let boundary = ct
        .strip_prefix("multipart/mixed; boundary=")
        .unwrap_or_else(|| panic!("{}", s.head.show()))
        .to_string();
    assert_eq!(boundary.len(), 32, "{boundary}");
    assert!(
        boundary.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{boundary}"
    );
    s.expect(format!("--{boundary}").as_bytes());
    let r = publish(&server, "mp", &[("Content-Type", "text/plain")], b"a\nb\n");
    let a = last_id(&r);
    let e = publish_id(&server, "mp", "");
    for (id, ct, body) in [(&a, Some("text/plain"), "a\nb\n"), (&e, None, "")] {
        let (lm, etag) = id_headers(id);
        let ct = ct
            .map(|c| format!("Content-Type: {c}\r\n"))
            .unwrap_or_default();
        s.expect(
            format!("\r\nLast-Modified: {lm}\r\nEtag: {etag}\r\n{ct}\r\n{body}\r\n--{boundary}")
                .as_bytes(),
        );
    }
    assert_eq!(
        server
            .connect()
            .request("DELETE", "/pub/mp", &[], b"")
            .status,
        200
    );
    s.expect(b"--\r\n");
    s.expect_end();
}

/// The subscriber timeout ends a multipart stream with `--\r\n`.
#[test]
fn multipart_ends_at_the_subscriber_timeout() {
    let server = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let t0 = Instant::now();
    let mut s = Sub::open(&server, "/sub/mpt", &[("Accept", "multipart/mixed")]);
    let ct = s.head.header("Content-Type").unwrap().to_string();
    let boundary = ct.strip_prefix("multipart/mixed; boundary=").unwrap();
    s.expect(format!("--{boundary}").as_bytes());
    s.expect(b"--\r\n");
    s.expect_end();
    assert_timed_out(t0);
}

/// nchan's order (NCHAN.md 5.1): EventSource before chunked before multipart before
/// long-poll.
#[test]
fn transport_selection_order() {
    let server = start();
    publish_id(&server, "sel", "m");
    let s = Sub::event_source(&server, "/sub/sel", &[("TE", "chunked")]);
    drop(s);
    let both = [("Accept", "multipart/mixed, text/event-stream")];
    let _ = Sub::event_source(&server, "/sub/sel", &both);
    let mut s = Sub::open(
        &server,
        "/sub/sel",
        &[("Accept", "multipart/mixed"), ("TE", "chunked")],
    );
    assert_eq!(
        s.head.header("Content-Type"),
        None,
        "chunked: {}",
        s.head.show()
    );
    assert_eq!(s.next_chunk(), Some(b"m".to_vec()));
    let r = poll_now(&server, "/sub/sel", &[("Accept", "text/html, */*")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Transfer-Encoding"),
        None,
        "long-poll: {}",
        r.show()
    );
}

/// Every kind of subscriber on a channel gets the same message, and the publisher's answer
/// counts them all.
#[test]
fn one_publish_reaches_every_transport() {
    let server = start();
    let id0 = publish_id(&server, "all", "old");
    let mut es = Sub::event_source(&server, "/sub/all", &[("Last-Event-ID", &id0)]);
    let mut ch = Sub::open(
        &server,
        "/sub/all",
        &[("TE", "chunked"), ("Last-Event-ID", &id0)],
    );
    let mut mp = Sub::open(
        &server,
        "/sub/all",
        &[("Accept", "multipart/mixed"), ("Last-Event-ID", &id0)],
    );
    let mut lp = long_poll(&server, "/sub/all", &hdrs(&after(&id0)));
    server.wait_parked(1);
    let r = publish(&server, "all", &[], b"new");
    assert_eq!(r.status, 201, "{}", r.show());
    let id = last_id(&r);
    assert_eq!(r.text(), info_plain(2, 0, 4, &id));
    es.expect(es_record(None, &id, "new").as_bytes());
    assert_eq!(ch.next_chunk(), Some(b"new".to_vec()));
    let boundary = mp
        .head
        .header("Content-Type")
        .unwrap()
        .rsplit('=')
        .next()
        .unwrap()
        .to_string();
    let (lm, etag) = id_headers(&id);
    mp.expect(
        format!("--{boundary}\r\nLast-Modified: {lm}\r\nEtag: {etag}\r\n\r\nnew\r\n--{boundary}")
            .as_bytes(),
    );
    assert_message(&lp.read_response(), "new", &id, None);
}
