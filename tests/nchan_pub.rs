//! nchan's publisher, `/pub/{channel}` (NCHAN.md 3), over raw HTTP: 201/202 with the channel
//! info, the four info formats chosen by nchan's `Accept` scan byte for byte, GET info and
//! `404`, DELETE, `413` past `--max-message-bytes`, `403` for other methods and long ids,
//! preflights (deviation D5), CORS only with `Origin`, and the credentials patterns.

#[path = "nchan_support/mod.rs"]
mod nchan_support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nchan_support::*;

/// The exchange of NCHAN.md 3.1: no subscriber → `202 Accepted` and the plain info, with no
/// trailing newline; the message keeps its content type and event name.
#[test]
fn publish_without_subscribers_is_202_with_the_plain_info() {
    let server = start();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = publish(
        &server,
        "c1",
        &[
            ("Content-Type", "application/x-foo"),
            ("X-EventSource-Event", "evt"),
        ],
        b"line1\nline2",
    );
    assert!(
        r.head.starts_with(b"HTTP/1.1 202 Accepted\r\n"),
        "{}",
        r.show()
    );
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    let id = last_id(&r);
    let (time, _) = split_id(&id);
    assert!(
        time >= before && time <= before + 2,
        "TIME is wall-clock seconds: {id}"
    );
    let expected = info_plain(1, -1, 0, &id);
    assert_eq!(r.text(), expected);
    assert_eq!(
        r.header("Content-Length"),
        Some(expected.len().to_string().as_str())
    );

    // The message as a long-poll sees it: its content type, its id.
    let m = poll_now(&server, "/sub/c1", &[]);
    assert_message(&m, "line1\nline2", &id, Some("application/x-foo"));
    // And as EventSource: the event name before the id.
    let mut es = Sub::event_source(&server, "/sub/c1", &[]);
    es.expect(es_record(Some("evt"), &id, "line1\nline2").as_bytes());
}

/// `PUT` publishes like `POST`; a second message in the same channel gets a greater id; a
/// `Transfer-Encoding: chunked` request body is a message like any other.
#[test]
fn put_and_chunked_bodies_publish_with_increasing_ids() {
    let server = start();
    let mut c = server.connect();
    let r1 = c.request("PUT", "/pub/p", &[("Content-Type", "text/plain")], b"one");
    assert_eq!(r1.status, 202, "{}", r1.show());
    c.send(b"POST /pub/p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n2\r\n!!\r\n0\r\n\r\n");
    let r2 = c.read_response();
    assert_eq!(r2.status, 202, "{}", r2.show());
    let (a, b) = (last_id(&r1), last_id(&r2));
    assert!(seq_of(&b) > seq_of(&a), "{a} then {b}");
    assert_eq!(r2.text(), info_plain(2, -1, 0, &b));
    let m = poll_now(&server, "/sub/p", &[("If-None-Match", &a)]);
    assert_message(&m, "two!!", &b, None);
}

/// A waiting long-poll makes the publish `201 Created` with `active subscribers: 1`; the
/// long-poll gets the empty message (NCHAN.md 8). Repeated on fresh channels: the status
/// must not depend on whether the subscriber's worker already answered.
#[test]
fn publish_to_a_waiting_subscriber_is_201() {
    let server = start();
    for i in 0..30 {
        let ch = format!("w{i}");
        let mut sub = long_poll(&server, &format!("/sub/{ch}"), &[]);
        server.wait_parked(1);
        let r = publish(&server, &ch, &[], b"");
        assert!(
            r.head.starts_with(b"HTTP/1.1 201 Created\r\n"),
            "round {i}: {}",
            r.show()
        );
        let id = last_id(&r);
        assert_eq!(r.text(), info_plain(1, 0, 1, &id), "round {i}");
        let m = sub.read_response();
        assert_message(&m, "", &id, None);
        server.wait_parked(0);
    }
}

/// nchan's `Accept` scan (NCHAN.md 3.4): per comma-separated element, after `text/` or
/// `application/`, the first of plain, json, x-json, yaml, x-yaml, xml by prefix.
#[test]
fn info_formats_follow_nchans_accept_scan() {
    let server = start();
    let id = publish_id(&server, "fmt", "x");
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let cases: &[(Option<&str>, &str)] = &[
        (None, "plain"),
        (Some("*/*"), "plain"),
        (Some("text/plain"), "plain"),
        (Some("text/json"), "json"),
        (Some("application/json"), "json"),
        (Some("application/x-json"), "json"),
        (Some("text/yaml"), "yaml"),
        (Some("application/x-yaml"), "yaml"),
        (Some("text/xml"), "xml"),
        (Some("application/xml"), "xml"),
        (Some(browser), "xml"),
        (Some("text/html"), "plain"),
        (Some("image/png, text/yaml;q=0.1"), "yaml"),
        (Some("application/jsonp"), "json"),
        (Some("text/xml, text/json"), "xml"),
    ];
    for (accept, format) in cases {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let r = server.connect().request("GET", "/pub/fmt", &headers, b"");
        assert_eq!(r.status, 200, "{accept:?}: {}", r.show());
        let (ct, body) = match *format {
            "plain" => ("text/plain", info_plain(1, -1, 0, &id)),
            "json" => ("text/json", info_json(1, -1, 0, &id)),
            "yaml" => ("text/yaml", info_yaml(1, -1, 0, &id)),
            _ => ("text/xml", info_xml(1, -1, 0, &id)),
        };
        assert_eq!(r.header("Content-Type"), Some(ct), "{accept:?}");
        assert_eq!(show(&r.body), show(body.as_bytes()), "{accept:?}");
    }
    // The publish answer is chosen the same way.
    let r = publish(&server, "fmt", &[("Accept", "application/json")], b"y");
    assert_eq!(r.header("Content-Type"), Some("text/json"));
    assert_eq!(r.text(), info_json(2, -1, 0, &last_id_json(&r)));
}

fn last_id_json(r: &Response) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON info");
    v["last_message_id"].as_str().unwrap().to_string()
}

/// GET on a channel that does not exist: `404`, `Content-Length: 0`, nothing else. Once a
/// subscriber asked, `last requested` counts seconds instead of `-1`.
#[test]
fn get_info_and_404() {
    let server = start();
    let r = server.get("/pub/nothing");
    assert!(
        r.head.starts_with(b"HTTP/1.1 404 Not Found\r\n"),
        "{}",
        r.show()
    );
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert!(r.body.is_empty());
    let id = publish_id(&server, "info", "m");
    let r = server.get("/pub/info");
    assert_eq!(r.text(), info_plain(1, -1, 0, &id));
    let m = poll_now(&server, "/sub/info", &[]);
    assert_message(&m, "m", &id, None);
    // The long-poll found its message at once; nchan still counts it as a request.
    let r = server.get("/pub/info");
    assert_eq!(
        r.text(),
        info_plain(1, 0, 0, &id),
        "after a subscriber asked"
    );
    // A waiting one is counted as a subscriber.
    let _sub = long_poll(&server, "/sub/info", &hdrs(&after(&id)));
    server.wait_parked(1);
    let r = server.get("/pub/info");
    assert_eq!(r.text(), info_plain(1, 0, 1, &id));
}

/// DELETE (NCHAN.md 3.3): `404` for no channel; else `200` with the info (pre-delete
/// subscribers, 0 messages), and the messages are gone.
#[test]
fn delete_answers_the_info_then_the_channel_is_gone() {
    let server = start();
    let r = server.connect().request("DELETE", "/pub/neverx", &[], b"");
    assert!(
        r.head.starts_with(b"HTTP/1.1 404 Not Found\r\n"),
        "{}",
        r.show()
    );
    assert!(r.body.is_empty());
    publish_id(&server, "del", "a");
    let id = publish_id(&server, "del", "b");
    let mut waiting = long_poll(&server, "/sub/del", &hdrs(&after(&id)));
    server.wait_parked(1);
    let r = server
        .connect()
        .request("DELETE", "/pub/del", &[("Accept", "text/json")], b"");
    assert!(r.head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", r.show());
    assert_eq!(r.header("Content-Type"), Some("text/json"));
    assert_eq!(r.text(), info_json(0, 0, 1, &id));
    let gone = waiting.read_response();
    assert_eq!(gone.status, 410, "{}", gone.show());
    // The channel is gone, as nchan removes it: its info and a second DELETE are 404.
    assert_eq!(server.get("/pub/del").status, 404);
    let again = server.connect().request("DELETE", "/pub/del", &[], b"");
    assert_eq!(again.status, 404, "{}", again.show());
    // Nothing is left to read: a new subscriber waits for the next message.
    let mut fresh = long_poll(&server, "/sub/del", &[]);
    server.wait_parked(1);
    let id2 = publish_id(&server, "del", "after");
    assert_message(&fresh.read_response(), "after", &id2, None);
    assert_eq!(
        server.get("/pub/del").status,
        200,
        "a publish makes it again"
    );
}

/// A QST queue's messages leave only by acknowledgement: DELETE refuses it.
#[test]
fn delete_of_a_qst_queue_is_refused_with_409() {
    let server = start();
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?><messages><message id="q1"><text>hi</text></message></messages>"#;
    let r = server.request(&post("/qst/q", "text/xml", xml.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.show());
    let r = server.connect().request("DELETE", "/pub/q", &[], b"");
    assert_eq!(r.status, 409, "{}", r.show());
    assert_eq!(server.get("/qst/q").status, 200);
}

/// `413` past `--max-message-bytes` (deviation D9: a text/plain body); nothing is stored.
#[test]
fn a_message_over_the_limit_is_413_and_not_stored() {
    let server = start_with(|c| c.max_message_bytes = 16);
    let r = publish(&server, "big", &[], &[b'x'; 17]);
    assert_eq!(r.status, 413, "{}", r.show());
    assert!(r
        .header("Content-Type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert_eq!(server.get("/pub/big").status, 404, "nothing stored");
    let r = publish(&server, "big", &[], &[b'x'; 16]);
    assert_eq!(r.status, 202, "{}", r.show());
}

/// Other methods than GET/POST/PUT/DELETE/OPTIONS are `403` with an empty body; so is a
/// channel id over 1024 bytes, on both endpoints.
#[test]
fn other_methods_and_long_ids_are_403() {
    let server = start();
    for method in ["PATCH", "PROPFIND"] {
        let r = server.connect().request(method, "/pub/m", &[], b"");
        assert_eq!(r.status, 403, "{method}: {}", r.show());
        assert!(r.body.is_empty(), "{method}");
    }
    let long = "a".repeat(1025);
    for path in ["pub", "sub"] {
        let r = server.get(&format!("/{path}/{long}"));
        assert_eq!(r.status, 403, "{path}: {}", r.show());
        assert!(r.body.is_empty());
    }
    // Percent-decoded before it is measured: 1024 bytes encoded as 3072 is not too long.
    let r = publish(&server, &"%61".repeat(200), &[], b"x");
    assert_eq!(r.status, 202, "{}", r.show());
    assert_eq!(server.get(&format!("/pub/{}", "a".repeat(200))).status, 200);
}

/// `OPTIONS /pub/…` (NCHAN.md 4 with D5): `Allow` always; the CORS answer only with
/// `Origin`, which is echoed with credentials.
#[test]
fn preflight_on_pub() {
    let server = start();
    let r = server.connect().request("OPTIONS", "/pub/x", &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert!(r.has_line("Allow: GET, POST, PUT, DELETE"), "{}", r.show());
    for h in [
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Credentials",
        "Access-Control-Allow-Headers",
        "Access-Control-Allow-Methods",
    ] {
        assert_eq!(r.header(h), None, "{h} without Origin: {}", r.show());
    }
    let r = server.connect().request(
        "OPTIONS",
        "/pub/x",
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    for line in [
        "Allow: GET, POST, PUT, DELETE",
        "Access-Control-Allow-Origin: http://app.example",
        "Access-Control-Allow-Credentials: true",
        "Access-Control-Allow-Headers: Content-Type, X-EventSource-Event, Accept",
        "Access-Control-Allow-Methods: GET, POST, PUT, DELETE",
    ] {
        assert!(r.has_line(line), "{line}: {}", r.show());
    }
    assert_eq!(r.header_count("Access-Control-Allow-Origin"), 1);
    // The preflight creates nothing.
    assert_eq!(server.get("/pub/x").status, 404);
}

/// A publish with `Origin` echoes it with credentials; without `Origin` no CORS header at
/// all (nchan's default, not tidings' `*`).
#[test]
fn cors_on_publish_only_with_origin() {
    let server = start();
    let r = publish(&server, "o", &[("Origin", "https://a.example:8443")], b"m");
    assert!(
        r.has_line("Access-Control-Allow-Origin: https://a.example:8443"),
        "{}",
        r.show()
    );
    assert!(r.has_line("Access-Control-Allow-Credentials: true"));
    let r = publish(&server, "o", &[], b"m");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        None,
        "{}",
        r.show()
    );
    assert_eq!(r.header("Access-Control-Allow-Credentials"), None);
    let r = server.get("/pub/o");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        None,
        "{}",
        r.show()
    );
    let r = server.get("/pub/none-here");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        None,
        "404: {}",
        r.show()
    );
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

/// The credentials patterns guard `/pub/` and `/sub/`: no or wrong credentials → `401` with
/// the challenge and no side effect; the right ones publish and subscribe.
#[test]
fn credentials_guard_pub_and_sub() {
    let (server, _file) = start_with_credentials("alice:secret private/*\n", |_| {});
    let good = basic("alice", "secret");
    let bad = basic("alice", "wrong");
    for auth in [None, Some(bad.as_str())] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let r = publish(&server, "private/x", &headers, b"no");
        assert_eq!(r.status, 401, "{}", r.show());
        assert!(
            r.has_line("WWW-Authenticate: Basic realm=\"tidings\""),
            "{}",
            r.show()
        );
        let r = poll_now(&server, "/sub/private/x", &headers);
        assert_eq!(r.status, 401, "{}", r.show());
        let r = server
            .connect()
            .request("GET", "/pub/private/x", &headers, b"");
        assert_eq!(r.status, 401, "info: {}", r.show());
        let r = server
            .connect()
            .request("DELETE", "/pub/private/x", &headers, b"");
        assert_eq!(r.status, 401, "delete: {}", r.show());
    }
    let auth = [("Authorization", good.as_str())];
    let r = server
        .connect()
        .request("GET", "/pub/private/x", &auth, b"");
    assert_eq!(r.status, 404, "nothing was stored by the refused requests");
    let r = publish(&server, "private/x", &auth, b"yes");
    assert_eq!(r.status, 202, "{}", r.show());
    let id = last_id(&r);
    assert_message(
        &poll_now(&server, "/sub/private/x", &auth),
        "yes",
        &id,
        None,
    );
    // Channels outside the patterns stay open.
    assert_eq!(publish(&server, "public", &[], b"p").status, 202);
}
