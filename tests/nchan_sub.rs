//! nchan's long-poll subscriber on `/sub/{channel}` and the cursor rules of NCHAN.md 5.2 that
//! every transport shares, over raw HTTP: `Last-Modified`/`Etag`/`Vary` on messages, the
//! cursor from `If-Modified-Since` + `If-None-Match`, `If-None-Match` alone, `Last-Event-ID`
//! over `last_event_id`, NchanSubscriber's `Etag` request header (D6), no cursor → the
//! oldest (or, with `--nchan-first-message newest`, the next), `400 Message ID invalid`,
//! `408` at `--nchan-subscriber-timeout`, `410` on DELETE, CORS and preflights, `403`.

#[path = "nchan_support/mod.rs"]
mod nchan_support;

use std::time::{Duration, Instant};

use nchan_support::*;

/// Three messages `a`, `b`, `c` on `ch`; their ids.
fn three(server: &TestServer, ch: &str) -> [String; 3] {
    ["a", "b", "c"].map(|b| publish_id(server, ch, b))
}

/// The exchange of NCHAN.md 5.3: no cursor → the oldest message with its id headers; the
/// headers of each answer bring the next; at the end the request waits for the next publish.
#[test]
fn long_poll_walks_the_channel_with_if_modified_since_and_if_none_match() {
    let server = start();
    let first = publish(
        &server,
        "lp",
        &[("Content-Type", "application/x-foo")],
        b"line1\nline2",
    );
    let id1 = last_id(&first);
    let id2 = publish_id(&server, "lp", "second");
    let r = poll_now(&server, "/sub/lp", &[]);
    assert_message(&r, "line1\nline2", &id1, Some("application/x-foo"));
    // nchan sends no Cache-Control and no CORS without Origin (NCHAN.md 4).
    for h in [
        "Access-Control-Allow-Origin",
        "Access-Control-Expose-Headers",
        "Access-Control-Allow-Credentials",
    ] {
        assert_eq!(r.header(h), None, "{h}: {}", r.show());
    }
    let r = poll_now(&server, "/sub/lp", &hdrs(&after(&id1)));
    assert_message(&r, "second", &id2, None);
    let mut waiting = long_poll(&server, "/sub/lp", &hdrs(&after(&id2)));
    server.wait_parked(1);
    let id3 = publish_id(&server, "lp", "third");
    assert_message(&waiting.read_response(), "third", &id3, None);
    // The same connection carries the next poll (keep-alive).
    waiting.send_request("GET", "/sub/lp", &hdrs(&after(&id3)), b"");
    server.wait_parked(1);
    let id4 = publish_id(&server, "lp", "");
    assert_message(&waiting.read_response(), "", &id4, None);
}

/// `If-None-Match` alone is an id when it has a `:`; without one it is ignored (→ oldest).
#[test]
fn if_none_match_alone() {
    let server = start();
    let [a, b, _] = three(&server, "inm");
    assert_message(
        &poll_now(&server, "/sub/inm", &[("If-None-Match", &a)]),
        "b",
        &b,
        None,
    );
    assert_message(
        &poll_now(&server, "/sub/inm", &[("If-None-Match", "5")]),
        "a",
        &a,
        None,
    );
}

/// `Last-Event-ID` and `?last_event_id=` (URL-decoded); the header wins over the query
/// (a browser's EventSource reconnects with the header and its original URL).
#[test]
fn last_event_id_header_wins_over_the_query() {
    let server = start();
    let [a, b, c] = three(&server, "lei");
    let enc = |id: &str| id.replace(':', "%3A");
    let r = poll_now(&server, &format!("/sub/lei?last_event_id={}", enc(&a)), &[]);
    assert_message(&r, "b", &b, None);
    let r = poll_now(&server, "/sub/lei", &[("Last-Event-ID", &b)]);
    assert_message(&r, "c", &c, None);
    let r = poll_now(
        &server,
        &format!("/sub/lei?last_event_id={}", enc(&a)),
        &[("Last-Event-ID", &b)],
    );
    assert_message(&r, "c", &c, None);
    // An empty header falls through to the query.
    let r = poll_now(
        &server,
        &format!("/sub/lei?x=1&last_event_id={}", enc(&a)),
        &[("Last-Event-ID", "")],
    );
    assert_message(&r, "b", &b, None);
}

/// Deviation D6: a request header `Etag: TIME:TAG` (NchanSubscriber's long-poll resume) is
/// a cursor when nothing else is; the others come first.
#[test]
fn etag_request_header_is_a_cursor_last() {
    let server = start();
    let [a, b, c] = three(&server, "et");
    assert_message(
        &poll_now(&server, "/sub/et", &[("Etag", &a)]),
        "b",
        &b,
        None,
    );
    let r = poll_now(&server, "/sub/et", &[("Etag", &a), ("Last-Event-ID", &b)]);
    assert_message(&r, "c", &c, None);
    let r = poll_now(&server, "/sub/et", &[("Etag", &b), ("If-None-Match", &a)]);
    assert_message(&r, "b", &b, None);
}

/// No cursor, an epoch or unparseable `If-Modified-Since`, or a cursor older than the
/// oldest retained message: the oldest. A cursor at or past the newest waits.
#[test]
fn cursor_edges() {
    let server = start();
    let [a, _, c] = three(&server, "edge");
    assert_message(&poll_now(&server, "/sub/edge", &[]), "a", &a, None);
    for ims in [
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Wed, 01 Jul 2015 10:00:00 GMT",
        "garbage",
    ] {
        let r = poll_now(
            &server,
            "/sub/edge",
            &[("If-Modified-Since", ims), ("If-None-Match", "0")],
        );
        assert_message(&r, "a", &a, None);
    }
    // A tag of `-` is −1: everything of that second (NCHAN.md 2.2).
    let (t, _) = split_id(&a);
    let r = poll_now(
        &server,
        "/sub/edge",
        &[("Last-Event-ID", &format!("{t}:-"))],
    );
    assert_eq!(r.status, 200, "{}", r.show());
    // A real nchan's tag above 999 is clamped: after everything in that second.
    let (tc, _) = split_id(&c);
    let mut w = long_poll(
        &server,
        "/sub/edge",
        &[("Last-Event-ID", &format!("{tc}:32000"))],
    );
    server.wait_parked(1);
    let future = format!("{}:0", tc + 3600);
    let mut w2 = long_poll(&server, "/sub/edge", &[("Last-Event-ID", &future)]);
    server.wait_parked(2);
    let d = publish_id(&server, "edge", "d");
    if split_id(&d).0 > tc {
        assert_message(&w.read_response(), "d", &d, None);
    }
    drop(w);
    assert!(
        w2.is_open_for(Duration::from_millis(50)),
        "a future cursor waits"
    );
}

/// `--nchan-first-message newest`: with no cursor a subscriber waits for the next message.
#[test]
fn first_message_newest_waits_for_the_next() {
    let server = start_with(|c| c.nchan_first_message = tidings::config::FirstMessage::Newest);
    let [a, b, _] = three(&server, "nw");
    let mut w = long_poll(&server, "/sub/nw", &[]);
    server.wait_parked(1);
    let d = publish_id(&server, "nw", "d");
    assert_message(&w.read_response(), "d", &d, None);
    // A cursor still reads the backlog.
    assert_message(
        &poll_now(&server, "/sub/nw", &[("Last-Event-ID", &a)]),
        "b",
        &b,
        None,
    );
}

/// Malformed cursors: `400`, `text/plain`, exactly `Message ID invalid` (NCHAN.md 8).
#[test]
fn invalid_message_ids_are_400() {
    let server = start();
    publish_id(&server, "bad", "x");
    let date = "Wed, 02 Dec 2026 02:06:41 GMT";
    let cases: &[&[(&str, &str)]] = &[
        &[("If-Modified-Since", date), ("If-None-Match", "[1],[2]")],
        &[("If-Modified-Since", date)],
        &[("If-Modified-Since", date), ("If-None-Match", "x")],
        &[("If-None-Match", "1796177201:0,1796177201:1")],
        &[("If-None-Match", "abc:1")],
        &[("Last-Event-ID", "1796177201:x")],
        &[("Last-Event-ID", "[1796177201:0]")],
    ];
    for headers in cases {
        let r = poll_now(&server, "/sub/bad", headers);
        assert!(
            r.head.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{headers:?}: {}",
            r.show()
        );
        assert_eq!(r.header("Content-Type"), Some("text/plain"), "{headers:?}");
        assert_eq!(r.header("Content-Length"), Some("18"));
        assert_eq!(r.text(), "Message ID invalid");
    }
    let r = poll_now(&server, "/sub/bad?last_event_id=1%3Ay", &[]);
    assert_eq!(r.status, 400, "{}", r.show());
}

/// `--nchan-subscriber-timeout 1`: a waiting long-poll gets `408` with `Vary`, no id
/// headers (NCHAN.md 5.4); a subscriber with a cursor keeps it for the next poll.
#[test]
fn subscriber_timeout_is_408() {
    let server = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let t0 = Instant::now();
    let r = poll_now(&server, "/sub/slow", &[("Origin", "http://o.example")]);
    let waited = t0.elapsed();
    assert!(
        r.head.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{}",
        r.show()
    );
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert!(r.has_line("Vary: If-None-Match, If-Modified-Since"));
    assert_eq!(r.header("Last-Modified"), None);
    assert_eq!(r.header("Etag"), None);
    assert!(r.has_line("Access-Control-Allow-Origin: http://o.example"));
    assert!(r.has_line("Access-Control-Allow-Credentials: true"));
}

/// DELETE answers a waiting long-poll `410 Gone` with `Vary` (and CORS with `Origin`).
#[test]
fn delete_answers_a_waiting_long_poll_410() {
    let server = start();
    let id = publish_id(&server, "gone", "x");
    let mut plain = long_poll(&server, "/sub/gone", &hdrs(&after(&id)));
    let mut cors = long_poll(
        &server,
        "/sub/gone",
        &[("Origin", "http://o.example"), ("Last-Event-ID", &id)],
    );
    server.wait_parked(2);
    assert_eq!(
        server
            .connect()
            .request("DELETE", "/pub/gone", &[], b"")
            .status,
        200
    );
    for (c, origin) in [(&mut plain, false), (&mut cors, true)] {
        let r = c.read_response();
        assert!(r.head.starts_with(b"HTTP/1.1 410 Gone\r\n"), "{}", r.show());
        assert_eq!(r.header("Content-Length"), Some("0"));
        assert!(
            r.has_line("Vary: If-None-Match, If-Modified-Since"),
            "{}",
            r.show()
        );
        assert_eq!(r.header("Last-Modified"), None);
        assert_eq!(
            r.has_line("Access-Control-Allow-Origin: http://o.example"),
            origin,
            "{}",
            r.show()
        );
        assert_eq!(r.header("Access-Control-Allow-Origin").is_some(), origin);
    }
}

/// CORS on a message (NCHAN.md 4): the `Origin` echoed, credentials, and the headers a page
/// needs to resume exposed.
#[test]
fn cors_on_messages_only_with_origin() {
    let server = start();
    let id = publish_id(&server, "cors", "m");
    let r = poll_now(&server, "/sub/cors", &[("Origin", "http://x.example")]);
    assert_message(&r, "m", &id, None);
    for line in [
        "Access-Control-Allow-Origin: http://x.example",
        "Access-Control-Allow-Credentials: true",
        "Access-Control-Expose-Headers: Last-Modified, Etag, Content-Type",
    ] {
        assert!(r.has_line(line), "{line}: {}", r.show());
    }
    assert_eq!(r.header_count("Access-Control-Allow-Origin"), 1);
}

/// `OPTIONS /sub/…` (NCHAN.md 4 with D5: `Etag` and `Last-Event-ID` allowed too).
#[test]
fn preflight_on_sub() {
    let server = start();
    let r = server.connect().request("OPTIONS", "/sub/x", &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert!(r.has_line("Allow: GET"), "{}", r.show());
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        None,
        "{}",
        r.show()
    );
    assert_eq!(r.header("Access-Control-Allow-Headers"), None);
    let r = server.connect().request(
        "OPTIONS",
        "/sub/x",
        &[
            ("Origin", "http://page.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "etag, if-none-match"),
        ],
        b"",
    );
    for line in [
        "Allow: GET",
        "Access-Control-Allow-Origin: http://page.example",
        "Access-Control-Allow-Credentials: true",
        "Access-Control-Allow-Headers: If-None-Match, If-Modified-Since, Content-Type, Cache-Control, X-EventSource-Event, Etag, Last-Event-ID",
        "Access-Control-Allow-Methods: GET",
    ] {
        assert!(r.has_line(line), "{line}: {}", r.show());
    }
}

/// Anything but GET on `/sub/` is `403` with an empty body, and subscribes nobody.
#[test]
fn non_get_on_sub_is_403() {
    let server = start();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = server.connect().request(method, "/sub/m", &[], b"body");
        assert!(
            r.head.starts_with(b"HTTP/1.1 403 Forbidden\r\n"),
            "{method}: {}",
            r.show()
        );
        assert!(r.body.is_empty(), "{method}");
    }
    assert_eq!(server.get("/pub/m").status, 404, "nothing created");
}

/// A client that leaves while waiting is dropped; the channel then has no subscriber.
#[test]
fn a_client_that_leaves_is_dropped() {
    let server = start();
    let id = publish_id(&server, "bye", "x");
    let c = long_poll(&server, "/sub/bye", &hdrs(&after(&id)));
    server.wait_parked(1);
    c.hang_up();
    server.wait_parked(0);
    let r = publish(&server, "bye", &[], b"y");
    assert_eq!(r.status, 202, "{}", r.show());
}

/// Channel ids are percent-decoded: `/sub/a%20b` and `/pub/a b`-as-`a%20b` are one channel.
#[test]
fn channel_ids_are_percent_decoded() {
    let server = start();
    let id = publish_id(&server, "a%20b%2Fc", "x");
    assert_message(&poll_now(&server, "/sub/a%20b/c", &[]), "x", &id, None);
    // The longest channel name of the hub (PROTOCOLS.md 0.3).
    let long = "L".repeat(255);
    let id = publish_id(&server, &long, "y");
    assert_message(
        &poll_now(&server, &format!("/sub/{long}"), &[]),
        "y",
        &id,
        None,
    );
}

/// One publish wakes long-polls whose requests differ in form: each answer is the same
/// message under the head its own request asks for (the woken parks share one rendered
/// answer per form): keep-alive or `Connection: close`, HTTP/1.0, CORS with `Origin`. A
/// keep-alive connection then serves its next long-poll.
#[test]
fn one_publish_answers_each_form_of_long_poll_with_its_own_head() {
    let server = start();
    let mut plain = [
        long_poll(&server, "/sub/forms", &[]),
        long_poll(&server, "/sub/forms", &[]),
    ];
    let mut close = long_poll(&server, "/sub/forms", &[("Connection", "close")]);
    let mut old = server.connect();
    old.send(b"GET /sub/forms HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut cors = long_poll(&server, "/sub/forms", &[("Origin", "http://x.example")]);
    server.wait_parked(5);
    let id = publish_id(&server, "forms", "m");
    for c in &mut plain {
        let r = c.read_response();
        assert_message(&r, "m", &id, None);
        assert!(!r.has_line("Connection: close"), "{}", r.show());
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            None,
            "{}",
            r.show()
        );
    }
    for c in [&mut close, &mut old] {
        let r = c.read_response();
        assert_message(&r, "m", &id, None);
        assert!(r.has_line("Connection: close"), "{}", r.show());
        c.expect_closed();
    }
    let r = cors.read_response();
    assert_message(&r, "m", &id, None);
    assert!(
        r.has_line("Access-Control-Allow-Origin: http://x.example"),
        "{}",
        r.show()
    );
    // The keep-alive connections go on: a long-poll after `m` waits for the next message.
    let [first, _] = &mut plain;
    let cursor = after(&id);
    first.send_request("GET", "/sub/forms", &hdrs(&cursor), b"");
    server.wait_parked(1);
    let id2 = publish_id(&server, "forms", "n");
    assert_message(&first.read_response(), "n", &id2, None);
}
