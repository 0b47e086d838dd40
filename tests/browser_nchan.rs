//! Real nchan clients nobody here wrote, in a real headless Chromium: `NchanSubscriber` from
//! npm `nchan` 1.0.10 (vendored in `tests/browser/vendor/nchan/` with its licence) once per
//! transport (websocket with `ws+meta.nchan`, eventsource, longpoll), and the browser's own
//! `EventSource`, against `/sub/`.
//!
//! The page comes from a test-only HTTP server in this process on another port, so every
//! request to tidings is cross-origin: CORS, the exposed `Last-Modified`/`Etag` and the
//! preflights of NCHAN.md 4 (with D5: NchanSubscriber's `Etag` request header) are exercised
//! as in a real deployment. Each subscriber receives messages published over `/pub/`, Talk
//! (`/push`) and QST; `--nchan-subscriber-timeout 1` makes the server end every long-poll and
//! stream after a second, so the clients reconnect with their cursor again and again, and a
//! message published while one is disconnected must arrive once, in order.
//!
//! The browser set-up (chromedriver, headless Chromium, the watchdog, skipping when they are
//! missing unless `TIDINGS_BROWSER_TEST` is set) is `tests/browser_support`.

mod browser_support;
#[path = "nchan_support/mod.rs"]
mod nchan_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use browser_support::*;
use nchan_support::*;
use serde_json::{json, Value};

/// The longest the whole test may take; a watchdog kills the browser and fails it after.
const LIMIT: Duration = Duration::from_secs(120);
const READERS: &str = include_str!("browser/nchan.js");
const NCHAN_JS: &str = include_str!("browser/vendor/nchan/NchanSubscriber.js");
const PAGE: &str = "<!doctype html><html><head><meta charset='utf-8'><title>nchan test page</title><script src='/NchanSubscriber.js'></script></head><body></body></html>";

/// Serves the test page and NchanSubscriber.js on `127.0.0.1:0` from a thread; one request
/// per connection.
fn page_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.set_read_timeout(Some(TIMEOUT));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let path = line.split(' ').nth(1).unwrap_or("/");
            let (status, ct, body) = match path {
                "/" => ("200 OK", "text/html; charset=utf-8", PAGE),
                "/NchanSubscriber.js" => ("200 OK", "application/javascript", NCHAN_JS),
                _ => ("404 Not Found", "text/plain", "not here"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    });
    addr
}

/// The publishers of the hub: `/pub/`, a Talk push, a QST push.
#[derive(Clone, Copy, Debug)]
enum Via {
    Pub,
    Talk,
    Qst,
}

/// Publishes `text` on `ch` by `via`; returns the nchan id when `/pub/` says it.
fn send(server: &TestServer, via: Via, ch: &str, text: &str) -> Option<String> {
    match via {
        Via::Pub => {
            let r = publish(
                server,
                ch,
                &[("Content-Type", "text/x-test")],
                text.as_bytes(),
            );
            assert!(r.status == 201 || r.status == 202, "{}", r.show());
            Some(last_id(&r))
        }
        Via::Talk => {
            let q = text.replace(' ', "+");
            let r = server.get(&format!("/push?channel={ch}&name=talker&message={q}"));
            assert_eq!(r.status, 200, "{}", r.show());
            None
        }
        Via::Qst => {
            let xml = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><messages><message id="{}"><text>{text}</text></message></messages>"#,
                text.replace(' ', "-")
            );
            let r = server.request(&post(&format!("/qst/{ch}"), "text/xml", xml.as_bytes()));
            assert_eq!(r.status, 200, "{}", r.show());
            None
        }
    }
}

/// Waits until the subscriber `key` has heard `n` messages; returns its log.
fn wait_msgs(s: &Session, d: &Driver, key: &str, n: usize) -> Value {
    s.wait_until(
        d,
        &format!("{key}: {n} messages"),
        &format!("nchanLog({key:?}).msgs.length >= {n}"),
        &format!("nchanLog({key:?})"),
    )
}

/// Waits until the server has ended the connection of `key` more than `ends` times.
fn wait_ends(s: &Session, d: &Driver, key: &str, ends: u64) -> u64 {
    let log = s.wait_until(
        d,
        &format!("{key}: an end after {ends}"),
        &format!("nchanLog({key:?}).ends > {ends}"),
        &format!("nchanLog({key:?})"),
    );
    log["ends"].as_u64().unwrap()
}

/// One NchanSubscriber on its own channel with `transport`, through three publishers and two
/// reconnections (one with a message published while it was disconnected).
fn subscriber_through_reconnects(s: &Session, d: &Driver, server: &TestServer, transport: &str) {
    let t0 = Instant::now();
    let ch = format!("nc-{transport}");
    let key = transport;
    let first = send(server, Via::Pub, &ch, "m1 over pub").unwrap();
    let url = format!("http://{}/sub/{ch}", server.addr);
    let name = s.exec(
        d,
        "return nchanStart(arguments[0], arguments[1], arguments[2]);",
        json!([key, url, transport]),
    );
    assert_eq!(name, json!(transport), "NchanSubscriber picked {name}");
    let log = wait_msgs(s, d, key, 1);
    let m1 = &log["msgs"][0];
    assert_eq!(m1["text"], "m1 over pub", "{log}");
    assert_eq!(m1["id"], json!(first), "the id is TIME:TAG: {log}");
    if transport != "eventsource" {
        // EventSource does not carry it (NCHAN.md 6.1); ws+meta.nchan and long-poll do.
        assert_eq!(m1["ct"], "text/x-test", "the content type: {log}");
    }
    send(server, Via::Talk, &ch, "m2 over talk");
    wait_msgs(s, d, key, 2);
    send(server, Via::Qst, &ch, "m3 over qst");
    let log = wait_msgs(s, d, key, 3);
    // The server ends the connection at the subscriber timeout; while the client waits to
    // reconnect, a message is published. It must arrive once, after the others.
    let ends = log["ends"].as_u64().unwrap();
    let ends = wait_ends(s, d, key, ends);
    send(server, Via::Pub, &ch, "m4 while disconnected");
    wait_msgs(s, d, key, 4);
    wait_ends(s, d, key, ends);
    send(server, Via::Talk, &ch, "m5 after another reconnect");
    let log = wait_msgs(s, d, key, 5);
    let texts: Vec<&str> = log["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "m1 over pub",
            "m2 over talk",
            "m3 over qst",
            "m4 while disconnected",
            "m5 after another reconnect"
        ],
        "{transport}: {log}"
    );
    let seqs: Vec<u64> = log["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| seq_of(m["id"].as_str().unwrap_or_else(|| panic!("no id: {log}"))))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{transport}: ids increase: {log}"
    );
    eprintln!(
        "browser nchan: {transport} checked in {:?} ({} ends)",
        t0.elapsed(),
        log["ends"]
    );
}

#[test]
fn nchan_subscriber_and_event_source_in_chromium() {
    let t0 = Instant::now();
    let Some((_watchdog, mut d)) = launch(LIMIT) else {
        return;
    };
    let server = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let page = page_server();
    let s = d.session("nchan", READERS);
    s.navigate(&d, &format!("http://{page}/"));
    let title = s.exec(&d, "return document.title;", json!([]));
    assert_eq!(title, json!("nchan test page"));
    eprintln!("browser nchan: page up after {:?}", t0.elapsed());

    // The browser's own EventSource, cross-origin: framing as a browser parses it.
    let url = format!("http://{}/sub/raw-es", server.addr);
    s.exec(&d, "esStart('raw', arguments[0]);", json!([url]));
    s.wait_until(
        &d,
        "EventSource open",
        "esLog('raw').opens >= 1",
        "esLog('raw')",
    );
    let a = send(&server, Via::Pub, "raw-es", "a\nb\n").unwrap();
    let r = publish(&server, "raw-es", &[("X-EventSource-Event", "tick")], b"");
    let tick = last_id(&r);
    let cr = send(&server, Via::Pub, "raw-es", "x\ry").unwrap();
    let log = s.wait_until(
        &d,
        "three events",
        "esLog('raw').events.length >= 3",
        "esLog('raw')",
    );
    assert_eq!(
        log["events"],
        json!([
            {"type": "message", "data": "a\nb\n", "id": a},
            {"type": "tick", "data": "", "id": tick},
            {"type": "message", "data": "x\ny", "id": cr},
        ]),
        "{log}"
    );
    // The server ends the stream at the subscriber timeout; the browser reconnects with
    // `Last-Event-ID` and gets what was published meanwhile, once.
    s.wait_until(
        &d,
        "EventSource ended",
        "esLog('raw').errors >= 1",
        "esLog('raw')",
    );
    let gap = send(&server, Via::Pub, "raw-es", "in the gap").unwrap();
    let log = s.wait_until(
        &d,
        "the gap's message",
        "esLog('raw').events.length >= 4",
        "esLog('raw')",
    );
    assert_eq!(
        log["events"][3],
        json!({"type": "message", "data": "in the gap", "id": gap})
    );
    eprintln!(
        "browser nchan: EventSource checked after {:?}",
        t0.elapsed()
    );

    for transport in ["websocket", "eventsource", "longpoll"] {
        subscriber_through_reconnects(&s, &d, &server, transport);
    }
    let log = s.exec(&d, "return esLog('raw');", json!([]));
    assert_eq!(
        log["events"].as_array().unwrap().len(),
        4,
        "no duplicate: {log}"
    );
    eprintln!("browser nchan: done after {:?}", t0.elapsed());
}
