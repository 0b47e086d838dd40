//! nchan's WebSocket transport (NCHAN.md 3.5, 6.2) over raw TCP: the handshake and its
//! refusals, plain and `ws+meta.nchan` frames, binary frames for
//! `application/octet-stream`, resume by `last_event_id`, ping/pong, close codes (client
//! close echoed, publishing on `/sub/` refused with 1008, protocol errors, DELETE's 1001
//! `410 Gone`), a fragmented and a masked client message, and the WebSocket publisher (also
//! through `--redis`, answered once Redis stored each message).

#[path = "common/mod.rs"]
mod common;
mod redis_support;

use std::time::Duration;

use common::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opens a WebSocket on `target` with these extra headers; returns the client after the
/// `101` head (checked) and the head's text.
fn open(server: &TestServer, target: &str, extra: &[(&str, &str)]) -> (Client, String) {
    let mut headers = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ];
    headers.extend_from_slice(extra);
    let mut c = server.connect();
    c.send(&request_bytes("GET", target, &headers, b""));
    let head = String::from_utf8(c.read_until(b"\r\n\r\n", TIMEOUT)).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nSec-WebSocket-Accept: {ACCEPT}\r\n")),
        "{head}"
    );
    (c, head)
}

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Reads one server frame: (first byte, payload).
fn read_frame(c: &mut Client) -> (u8, Vec<u8>) {
    let h = c.read_exact_bytes(2);
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => u16::from_be_bytes(c.read_exact_bytes(2).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(c.read_exact_bytes(8).try_into().unwrap()) as usize,
        n => n as usize,
    };
    (h[0], c.read_exact_bytes(len))
}

fn publish(server: &TestServer, channel: &str, content_type: &str, body: &[u8]) {
    let r = server.request(&post(&format!("/pub/{channel}"), content_type, body));
    assert!(matches!(r.status, 201 | 202), "{}", r.show());
}

#[test]
fn plain_and_meta_frames_with_binary_for_octet_stream() {
    let server = start();
    let (mut plain, head) = open(&server, "/sub/ws1", &[]);
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
    let (mut meta, head) = open(
        &server,
        "/sub/ws1",
        &[("Sec-WebSocket-Protocol", "foo, ws+meta.nchan")],
    );
    assert!(
        head.contains("\r\nSec-WebSocket-Protocol: ws+meta.nchan\r\n"),
        "{head}"
    );
    server.wait_metric("tidings_connections_streaming", 2.0);
    publish(&server, "ws1", "text/plain", b"hello");
    publish(&server, "ws1", "application/octet-stream", &[0, 1]);
    publish(&server, "ws1", "text/plain", b"");

    assert_eq!(read_frame(&mut plain), (0x81, b"hello".to_vec()));
    assert_eq!(read_frame(&mut plain), (0x82, vec![0, 1]));
    assert_eq!(read_frame(&mut plain), (0x81, Vec::new()));

    let (op, p) = read_frame(&mut meta);
    let text = String::from_utf8(p).unwrap();
    assert_eq!(op, 0x81);
    let id = text
        .strip_prefix("id: ")
        .and_then(|t| t.strip_suffix("\ncontent-type: text/plain\n\nhello"))
        .unwrap_or_else(|| panic!("{text:?}"));
    let (time, tag) = id.split_once(':').unwrap();
    assert!(time.parse::<u64>().unwrap() > 1_700_000_000 && tag.parse::<u16>().unwrap() < 1000);
    let (op, p) = read_frame(&mut meta);
    assert_eq!(op, 0x82);
    assert!(p.ends_with(b"\ncontent-type: application/octet-stream\n\n\x00\x01"));

    // Resume after the first message by its id: the rest comes again.
    let (mut resumed, _) = open(
        &server,
        &format!("/sub/ws1?last_event_id={}", id.replace(':', "%3A")),
        &[],
    );
    assert_eq!(read_frame(&mut resumed), (0x82, vec![0, 1]));
    assert_eq!(read_frame(&mut resumed), (0x81, Vec::new()));
}

#[test]
fn pings_closes_and_protocol_errors() {
    let server = start();
    let (mut c, _) = open(&server, "/sub/ws2", &[]);
    c.send(&client_frame(true, 0x9, b"are you there"));
    assert_eq!(read_frame(&mut c), (0x8a, b"are you there".to_vec()));
    // The client closes: the close is echoed, then the connection ends.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    c.send(&client_frame(true, 0x8, &close));
    assert_eq!(read_frame(&mut c), (0x88, close));
    c.expect_closed();

    // Publishing on a subscriber: 1008.
    let (mut c, _) = open(&server, "/sub/ws2", &[]);
    c.send(&client_frame(true, 0x1, b"hi"));
    let mut want = 1008u16.to_be_bytes().to_vec();
    want.extend_from_slice(b"Publishing not allowed.");
    assert_eq!(read_frame(&mut c), (0x88, want));
    c.expect_closed();

    // An unmasked frame: 1002.
    let (mut c, _) = open(&server, "/sub/ws2", &[]);
    c.send(&[0x89, 0x00]);
    let (op, p) = read_frame(&mut c);
    assert_eq!((op, &p[..2]), (0x88, &1002u16.to_be_bytes()[..]));
    c.expect_closed();

    // A control frame over 125 bytes: 1009.
    let (mut c, _) = open(&server, "/sub/ws2", &[]);
    c.send(&client_frame(true, 0x9, &[b'x'; 126]));
    let (op, p) = read_frame(&mut c);
    assert_eq!((op, &p[..2]), (0x88, &1009u16.to_be_bytes()[..]));
    c.expect_closed();
}

#[test]
fn deleting_the_channel_closes_with_410_gone() {
    let server = start();
    let (mut c, _) = open(&server, "/sub/ws3", &[]);
    server.wait_metric("tidings_connections_streaming", 1.0);
    let r = server.request(&request_bytes("DELETE", "/pub/ws3", &[], b""));
    assert_eq!(r.status, 200, "{}", r.show());
    let (op, p) = read_frame(&mut c);
    assert_eq!((op, p), (0x88, b"\x03\xe9410 Gone".to_vec()));
    c.expect_closed();
}

#[test]
fn the_subscriber_timeout_closes_with_408() {
    let server = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let (mut c, _) = open(&server, "/sub/ws4", &[]);
    let (op, p) = read_frame(&mut c);
    assert_eq!((op, p), (0x88, b"\x03\xe8408 408 Request Timeout".to_vec()));
    c.expect_closed();
}

#[test]
fn a_websocket_publisher_publishes_fragmented_and_masked_messages() {
    let server = start();
    let (mut listener, _) = open(&server, "/sub/ws5", &[]);
    server.wait_metric("tidings_connections_streaming", 1.0);
    let (mut p, _) = open(
        &server,
        "/pub/ws5",
        &[("Content-Type", "text/x-demo"), ("Accept", "text/json")],
    );
    // A text message in two fragments, with a ping between them.
    p.send(&client_frame(false, 0x1, b"frag"));
    p.send(&client_frame(true, 0x9, b""));
    p.send(&client_frame(true, 0x0, b"mented"));
    assert_eq!(read_frame(&mut p), (0x8a, Vec::new()));
    let (op, info) = read_frame(&mut p);
    let info = String::from_utf8(info).unwrap();
    assert_eq!(op, 0x81);
    assert!(
        info.starts_with("{\"messages\": 1, \"requested\": ")
            && info.contains("\"subscribers\": 1,"),
        "{info}"
    );
    assert_eq!(read_frame(&mut listener), (0x81, b"fragmented".to_vec()));
    // A binary message is published as application/octet-stream.
    p.send(&client_frame(true, 0x2, &[9, 8, 7]));
    read_frame(&mut p);
    assert_eq!(read_frame(&mut listener), (0x82, vec![9, 8, 7]));
    let r = server.get("/sub/ws5?last_event_id=1%3A0");
    assert_eq!(r.header("Content-Type"), Some("text/x-demo"));
    assert_eq!(r.body, b"fragmented");
}

#[test]
fn bad_handshakes_get_nchans_400s() {
    let server = start();
    for (headers, body) in [
        (
            vec![
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", KEY),
            ],
            "No Sec-Websocket-Version header present",
        ),
        (
            vec![
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "8"),
                ("Sec-WebSocket-Key", KEY),
            ],
            "Unsupported websocket protocol version (only version 13 is supported)",
        ),
        (
            vec![
                ("Connection", "keep-alive, Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
            ],
            "No Sec-Websocket-Key header present",
        ),
    ] {
        let r = server.request(&request_bytes("GET", "/sub/x", &headers, b""));
        assert_eq!((r.status, r.body_str()), (400, body), "{}", r.show());
    }
}

#[test]
fn a_websocket_publisher_through_redis_is_answered_once_stored() {
    let Some(redis) = redis_support::RedisServer::start("ws_publisher") else {
        return;
    };
    let url = tidings::redis::Url::parse(&redis.url()).unwrap();
    let a = start_with(|c| c.redis = Some(url.clone()));
    let b = start_with(|c| c.redis = Some(url));
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    let (mut listener, _) = open(&b, "/sub/wsr", &[]);
    b.wait_metric("tidings_connections_streaming", 1.0);
    let (mut p, _) = open(&a, "/pub/wsr", &[("Accept", "text/json")]);
    assert_eq!(redis.command("CLIENT PAUSE 500 WRITE"), "+OK");
    p.send(&client_frame(true, 0x1, b"one"));
    p.send(&client_frame(true, 0x1, b"two"));
    p.expect_silence(Duration::from_millis(250));
    for _ in 0..2 {
        let (op, info) = read_frame(&mut p);
        let info = String::from_utf8(info).unwrap();
        assert_eq!(op, 0x81);
        assert!(info.contains("\"last_message_id\": \""), "{info}");
    }
    // On the other node, in order.
    assert_eq!(read_frame(&mut listener), (0x81, b"one".to_vec()));
    assert_eq!(read_frame(&mut listener), (0x81, b"two".to_vec()));
}
