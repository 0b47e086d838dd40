//! The status page (`GET /`) and its figures (`GET /status.json`, and the snapshots worker 0
//! publishes once a second on `tidings/status` while that channel has waiters), over raw
//! sockets. The page in a real browser is `tests/browser_status.rs`.

mod common;

use common::*;
use serde_json::Value;

const CHANNEL: &str = "tidings/status";

fn snapshot(server: &TestServer) -> Value {
    let r = server.get("/status.json");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.show()))
}

#[test]
fn the_page_is_served_from_the_binary_with_no_external_asset() {
    let server = start();
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(page.contains("<title>tidings status</title>"));
    for link in [
        "href=\"/metrics\"",
        "href=\"/demo/\"",
        "href=\"/demo/xmpp.html\"",
        "href=\"/status.json\"",
        "new EventSource('/sub/tidings/status')",
        "fetch('/status.json'",
    ] {
        assert!(page.contains(link), "the page has {link}");
    }
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(
            !page.contains(external),
            "the page loads nothing else: {external}"
        );
    }
    let mut c = server.connect();
    c.send(b"HEAD / HTTP/1.1\r\n\r\n");
    let head = c.read_head_response();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(&*r.body.len().to_string())
    );
    let r = server.request(&post_form("/", "x=1"));
    assert_eq!(r.status, 405);
}

#[test]
fn status_json_has_the_figures_and_they_move() {
    let server = start();
    let v = snapshot(&server);
    assert_eq!(v["server"], "tidings");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["http"], server.addr.to_string());
    assert_eq!(v["xmpp"], Value::Null, "the test servers run without XMPP");
    for key in [
        "uptime_s",
        "time",
        "open",
        "parked",
        "streaming",
        "xmpp_sessions",
        "bosh_sessions",
        "channels",
        "published",
        "delivered",
    ] {
        assert!(v[key].is_number(), "{key} in {v}");
    }
    assert!(v["resident_bytes"].as_u64().unwrap() > 0);
    assert!(
        v["open"].as_i64().unwrap() >= 1,
        "this request's connection"
    );
    let before = v["published"].as_u64().unwrap();

    let mut stream = server.pull("/pull?name=w&channel=room", false);
    for i in 0..3 {
        let r = server.request(&post_form("/push", &format!("channel=room&message=m{i}")));
        assert_eq!(r.status, 200);
        stream.next_message();
    }
    let v = snapshot(&server);
    assert_eq!(v["published"].as_u64(), Some(before + 3), "{v}");
    assert!(v["delivered"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["streaming"], 1);
    assert_eq!(v["channels"], 1);

    let r = server.request(&post_form("/status.json", ""));
    assert_eq!(r.status, 405);
}

#[test]
fn snapshots_go_to_the_status_channel_while_it_is_watched_and_are_not_counted() {
    let server = start();
    // Any waiter on the channel watches it; the page's EventSource is one, a Talk stream too.
    let mut watcher = server.pull(&format!("/pull?name=w&channel={CHANNEL}"), false);
    let first: Value = serde_json::from_slice(&watcher.next_message()).expect("JSON snapshot");
    let second: Value = serde_json::from_slice(&watcher.next_message()).expect("JSON snapshot");
    assert_eq!(first["server"], "tidings");
    let (t1, t2) = (
        first["time"].as_u64().unwrap(),
        second["time"].as_u64().unwrap(),
    );
    assert!(
        (500..5000).contains(&(t2 - t1)),
        "about one a second: {t1} then {t2}"
    );
    assert_eq!(second["streaming"], 1, "the watcher itself");
    assert_eq!(
        second["published"], 0,
        "the snapshots are not counted as traffic: {second}"
    );
    assert_eq!(second["delivered"], 0, "{second}");
    // Nothing of it shows in /status.json either, while /metrics counts every message.
    let v = snapshot(&server);
    assert_eq!(v["published"], 0, "{v}");
    assert!(server.metric("tidings_messages_published_total").unwrap() >= 2.0);
    // The channel retains the latest snapshot only.
    let r = server.get(&format!("/comet?method=get&channel={CHANNEL}&time=0"));
    assert_eq!(r.status, 200);
    let got: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(1), "{got}");
    // An nchan long-poll gets it at once, as JSON.
    let r = server.get(&format!("/sub/{CHANNEL}"));
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).expect("JSON snapshot");
    assert_eq!(v["server"], "tidings");
}

/// The data of the next EventSource frame on `c` (skipping comments), as JSON.
fn next_event(c: &mut Client) -> Value {
    loop {
        let frame = c.read_until(b"\n\n", TIMEOUT);
        let text = String::from_utf8(frame).expect("UTF-8 frame");
        if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
            return serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        }
    }
}

#[test]
fn the_page_s_event_stream_gets_the_latest_snapshot_then_one_a_second() {
    let server = start();
    let subscribe = || {
        let mut c = server.connect();
        c.send(&request_bytes(
            "GET",
            &format!("/sub/{CHANNEL}"),
            &[("Accept", "text/event-stream")],
            b"",
        ));
        let head = c.read_head();
        assert_eq!(head.status, 200, "{}", head.show());
        c
    };
    let mut a = subscribe();
    let first = next_event(&mut a);
    assert_eq!(first["server"], "tidings");
    // A second page gets the retained snapshot at once (nchan's first message: the oldest
    // retained, here the only one), then the next ones.
    let mut b = subscribe();
    let retained = next_event(&mut b);
    assert!(
        retained["time"].as_u64() >= first["time"].as_u64(),
        "{retained}"
    );
    let next = next_event(&mut b);
    assert!(next["time"].as_u64() > retained["time"].as_u64(), "{next}");
    assert_eq!(next["published"], 0, "{next}");
}

#[test]
fn only_the_server_publishes_on_its_reserved_channels() {
    let server = start();
    for req in [
        post_form("/push", "name=x&channel=tidings/status&message=fake"),
        post("/pub/tidings/status", "application/json", b"{\"fake\":1}"),
        get("/comet?method=put&channel=tidings/status&message=fake"),
    ] {
        let r = server.request(&req);
        assert_eq!(r.status, 403, "{}", r.show());
        assert!(r.body_str().contains("reserved"), "{}", r.show());
    }
    assert_eq!(server.metrics().messages_published.get(), 0);
}
