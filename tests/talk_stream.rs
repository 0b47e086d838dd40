//! Talk pull streams (PROTOCOLS.md 3.1, 3.3): byte-exact heads and greeting, headless mode,
//! keep-alive `noop`s, `since` replay, replacement by name, chunking of records, the
//! terminator, and the end of a stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidings::config::Terminator;
use tidings::Draft;

/// `GET /push?<query>` on a fresh connection; asserts the ordinary 200 `noop` reply.
fn push(server: &TestServer, query: &str) {
    let r = server.get(&format!("/push?{query}"));
    assert_eq!(r.status, 200, "push {query}: {}", show(&r.body));
    assert_eq!(r.body, b"noop");
}

#[test]
fn headless_pull_head_and_greeting_are_byte_exact() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /pull?name=alice HTTP/1.1\r\nHead: less\r\n\r\n");
    c.expect_bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnoop\0\r\n");
    c.expect_silence(Duration::from_millis(100));
    assert_eq!(server.handle.metrics().streaming.get(), 1);
}

#[test]
fn browser_pull_has_the_usual_headers() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /pull?name=bob&channel=news HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(head.header("Cache-Control"), Some("no-cache"));
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(head.header("Content-Length"), None);
    assert_eq!(head.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(head.header("Date").is_some());
    c.expect_bytes(b"5\r\nnoop\0\r\n");
}

#[test]
fn headless_sticks_after_a_headless_push() {
    let server = start();
    let mut c = server.connect();
    // One reference client sends `Head: less` only on its first request.
    c.send(b"POST /push HTTP/1.1\r\nHead: less\r\nContent-Length: 21\r\n\r\nname=carol&message=hi");
    c.expect_bytes(HEADLESS_PUSH_REPLY);
    c.send(b"GET /pull?name=carol HTTP/1.1\r\nHost: t\r\n\r\n");
    c.expect_bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnoop\0\r\n");
}

#[test]
fn headless_sticks_after_any_headless_request() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /health HTTP/1.1\r\nHead: less\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    c.send(b"GET /pull?name=dave HTTP/1.1\r\n\r\n");
    c.expect_bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnoop\0\r\n");
}

#[test]
fn headless_does_not_leak_to_other_connections() {
    let server = start();
    let mut first = server.connect();
    first.send(b"GET /health HTTP/1.1\r\nHead: less\r\n\r\n");
    assert_eq!(first.read_response().status, 200);
    let s = server.pull("/pull?name=erin", false);
    assert!(
        s.head.header("Content-Type").is_some(),
        "{}",
        show(&s.head.head)
    );
}

#[test]
fn keepalive_noop_arrives_after_talk_keepalive() {
    let server = start_with(|c| c.talk_keepalive = Duration::from_millis(200));
    // Timed from before the request, so the server's interval starts after `t0`.
    let t0 = Instant::now();
    let mut s = server.pull("/pull?name=quiet", true);
    for i in 1..=2 {
        s.client.expect_bytes(b"5\r\nnoop\0\r\n");
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_millis(190 * i),
            "noop {i} after {at:?}: sooner than the keep-alive interval"
        );
        assert!(
            at < Duration::from_millis(2000 * i),
            "noop {i} only after {at:?}"
        );
    }
}

/// PROTOCOLS.md 3.1: the keep-alive `noop` is for an *otherwise quiet* stream. A stream that
/// receives a message every few milliseconds is never quiet for a whole interval.
#[test]
fn keepalive_noop_only_on_a_quiet_stream() {
    let server = start_with(|c| c.talk_keepalive = Duration::from_millis(200));
    let mut s = server.pull("/pull?name=busy&channel=busy", true);
    let t0 = Instant::now();
    let mut n = 0;
    // Lockstep: publish, wait for it, publish the next. Never 200 ms without a message.
    while t0.elapsed() < Duration::from_millis(700) {
        server
            .handle
            .publish("busy", Draft::with_body(format!("m{n}")))
            .unwrap();
        let recs: Vec<String> = s
            .next_records()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        assert_eq!(
            recs,
            vec![format!("m{n}")],
            "after {n} messages in {:?}, the stream got something other than the message",
            t0.elapsed()
        );
        n += 1;
    }
    assert!(n > 20, "only {n} round trips");
}

#[test]
fn since_replays_retained_messages_after_that_seq() {
    let server = start();
    let seqs: Vec<u64> = ["one", "two", "three"]
        .iter()
        .map(|m| {
            server
                .handle
                .publish("replay", Draft::with_body(*m))
                .unwrap()
        })
        .collect();
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2]);

    let mut s = StreamReader::open(
        server.connect(),
        &format!("/pull?name=late&channel=replay&since={}", seqs[0]),
        true,
        0,
    );
    // The greeting and the backlog are pending together: one chunk.
    assert_eq!(
        s.next_records(),
        vec![b"noop".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    // Then live messages, without repeats.
    server
        .handle
        .publish("replay", Draft::with_body("four"))
        .unwrap();
    assert_eq!(s.next_text(), "four");

    // since=0: everything retained.
    let mut all = StreamReader::open(
        server.connect(),
        "/pull?name=all&channel=replay&since=0",
        false,
        0,
    );
    assert_eq!(
        all.next_records(),
        vec![
            b"noop".to_vec(),
            b"one".to_vec(),
            b"two".to_vec(),
            b"three".to_vec(),
            b"four".to_vec()
        ]
    );
    // since = the last seq: nothing to replay.
    let mut none = server.pull(
        &format!(
            "/pull?name=none&channel=replay&since={}",
            seqs[2] + 1_000_000
        ),
        true,
    );
    none.expect_no_message(Duration::from_millis(100));
}

#[test]
fn without_since_a_stream_starts_at_now() {
    let server = start();
    server
        .handle
        .publish("fresh", Draft::with_body("old"))
        .unwrap();
    let mut s = server.pull("/pull?name=n&channel=fresh", true);
    server
        .handle
        .publish("fresh", Draft::with_body("new"))
        .unwrap();
    assert_eq!(s.next_text(), "new", "no backlog without since");
}

/// PROTOCOLS.md 3.2: a Talk push "goes to every stream on the channel except the sender's
/// own; with to=T, only to the stream named T". A `since` replay is a delivery too: it must
/// not hand a stream another client's direct message, or echo the stream's own pushes.
#[test]
fn since_replay_respects_talk_routing() {
    let server = start();
    let first = server
        .handle
        .publish("dm", Draft::with_body("start"))
        .unwrap();
    push(
        &server,
        "channel=dm&name=alice&to=bob&message=secret-for-bob",
    );
    push(&server, "channel=dm&name=mallory&message=own-message");
    push(&server, "channel=dm&name=alice&message=for-everyone");

    let mut mallory = StreamReader::open(
        server.connect(),
        &format!("/pull?name=mallory&channel=dm&since={first}"),
        true,
        0,
    );
    let replay = mallory.next_records();
    assert_eq!(
        replay,
        vec![b"noop".to_vec(), b"for-everyone".to_vec()],
        "replay to mallory: got {:?}",
        replay
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn invalid_since_is_400() {
    let server = start();
    for q in ["since=abc", "since=-1", "since="] {
        let r = server.get(&format!("/pull?name=x&{q}"));
        assert_eq!(r.status, 400, "{q}");
    }
}

#[test]
fn pull_parameter_errors_are_400() {
    let server = start();
    let long = "n".repeat(300);
    for q in [
        "",
        "name=",
        "channel=talk",
        "name=a&channel=",
        "name=a%01b",
        &format!("name={long}"),
    ] {
        let r = server.get(&format!("/pull?{q}"));
        assert_eq!(r.status, 400, "/pull?{q}: {}", show(&r.body));
        assert!(r.body.ends_with(b"\n"));
    }
    assert_eq!(server.handle.metrics().streaming.get(), 0);
}

#[test]
fn second_pull_with_the_same_name_replaces_the_first() {
    let server = start();
    let mut old = server.pull("/pull?name=zed&channel=room", true);
    let mut other = server.pull("/pull?name=ann&channel=room", true);
    let mut new = server.pull("/pull?name=zed&channel=room", true);
    // The old stream ends cleanly: the last chunk, then EOF.
    old.expect_end();
    assert_eq!(old.chunks.last(), Some(&Chunk::Last));
    assert!(wait_for(TIMEOUT, || server
        .handle
        .metrics()
        .streaming
        .get()
        == 2));
    assert_eq!(server.handle.metrics().streams_replaced.get(), 1);

    server
        .handle
        .publish("room", Draft::with_body("after"))
        .unwrap();
    assert_eq!(new.next_text(), "after");
    assert_eq!(other.next_text(), "after", "other names are untouched");
    server.wait_metric("tidings_streams_replaced_total", 1.0);
}

#[test]
fn the_same_name_on_another_channel_is_another_stream() {
    let server = start();
    let mut a = server.pull("/pull?name=same&channel=one", true);
    let mut b = server.pull("/pull?name=same&channel=two", true);
    a.client.expect_silence(Duration::from_millis(100));
    server.handle.publish("one", Draft::with_body("1")).unwrap();
    server.handle.publish("two", Draft::with_body("2")).unwrap();
    assert_eq!(a.next_text(), "1");
    assert_eq!(b.next_text(), "2");
    assert_eq!(server.handle.metrics().streams_replaced.get(), 0);
}

#[test]
fn streams_only_hear_their_own_channel() {
    let server = start();
    let mut a = server.pull("/pull?name=x&channel=red", true);
    let mut b = server.pull("/pull?name=x&channel=blue", true);
    server
        .handle
        .publish("red", Draft::with_body("r1"))
        .unwrap();
    server
        .handle
        .publish("blue", Draft::with_body("b1"))
        .unwrap();
    assert_eq!(a.next_text(), "r1");
    assert_eq!(b.next_text(), "b1");
}

#[test]
fn records_pending_together_share_one_chunk() {
    // One worker: the pushes and the stream are served by the same loop turn, so all five
    // messages are pending when the stream is written.
    let server = start_with(|c| c.workers = 1);
    let mut s = server.pull("/pull?name=reader&channel=batch", true);
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 1..=5 {
        batch.extend_from_slice(&post_form(
            "/push",
            &format!("name=writer&channel=batch&message=m{i}"),
        ));
    }
    c.send(&batch);
    for _ in 1..=5 {
        assert_eq!(c.read_response().status, 200);
    }
    let recs = s.next_records();
    assert_eq!(
        recs,
        ["m1", "m2", "m3", "m4", "m5"]
            .iter()
            .map(|m| m.as_bytes().to_vec())
            .collect::<Vec<_>>(),
        "every pending record in one chunk"
    );
}

#[test]
fn chunk_size_is_lowercase_hex() {
    let server = start();
    let mut s = server.pull("/pull?name=hex&channel=hex", true);
    // 170 bytes + the terminator = 171 = 0xab.
    let body = "h".repeat(170);
    server
        .handle
        .publish("hex", Draft::with_body(body.clone()))
        .unwrap();
    let mut expected = b"ab\r\n".to_vec();
    expected.extend_from_slice(body.as_bytes());
    expected.extend_from_slice(b"\0\r\n");
    s.client.expect_bytes(&expected);
}

#[test]
fn newline_terminator() {
    let server = start_with(|c| c.talk_terminator = Terminator::Newline);
    let mut c = server.connect();
    c.send(b"GET /pull?name=nl&channel=lines HTTP/1.1\r\nHead: less\r\n\r\n");
    c.expect_bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnoop\n\r\n");
    let mut s = StreamReader::headless_after_greeting(c, b'\n');
    push(&server, "channel=lines&name=w&message=hello");
    s.client.expect_bytes(b"6\r\nhello\n\r\n");
    // A NUL is an ordinary byte under the newline terminator.
    push(&server, "channel=lines&name=w&message=a%00b");
    s.client.expect_bytes(b"4\r\na\0b\n\r\n");
    // A newline cannot be framed: 400, and nothing is stored or sent.
    let r = server.get("/push?channel=lines&name=w&message=two%0Alines");
    assert_eq!(r.status, 400);
    push(&server, "channel=lines&name=w&message=after");
    assert_eq!(s.next_text(), "after");
}

#[test]
fn a_message_holding_the_terminator_from_another_protocol_is_skipped() {
    let server = start();
    let mut s = server.pull("/pull?name=t&channel=mixed", true);
    server
        .handle
        .publish("mixed", Draft::with_body(&b"bad\0record"[..]))
        .unwrap();
    server
        .handle
        .publish("mixed", Draft::with_body("good"))
        .unwrap();
    assert_eq!(s.next_text(), "good");
    assert_eq!(server.handle.metrics().messages_unframeable.get(), 1);
}

#[test]
fn never_an_empty_chunk_before_shutdown() {
    let server = start_with(|c| c.talk_keepalive = Duration::from_millis(100));
    let mut s = server.pull("/pull?name=e&channel=empty", true);
    // An empty message is a record of just the terminator: a 1-byte chunk, not a 0 one.
    push(&server, "channel=empty&name=w&message=");
    s.client.expect_bytes(b"1\r\n\0\r\n");
    server
        .handle
        .publish("empty", Draft::with_body(""))
        .unwrap();
    s.client.expect_bytes(b"1\r\n\0\r\n");
    // Several keep-alives, and never a chunk of size 0 among them.
    let mut noops = 0;
    while noops < 3 {
        match s.next_chunk() {
            Chunk::Data(d) => {
                assert_eq!(d, b"noop\0");
                noops += 1;
            }
            Chunk::Last => panic!("the stream ended before shutdown"),
        }
    }
    server.handle.shutdown();
    s.expect_end();
}

#[test]
fn the_stream_ignores_what_its_client_sends_after_the_pull() {
    let server = start();
    let mut s = server.pull("/pull?name=chatty&channel=noise", true);
    s.client
        .send(b"GET /health HTTP/1.1\r\n\r\nrandom bytes\r\n");
    s.client.expect_silence(Duration::from_millis(100));
    server
        .handle
        .publish("noise", Draft::with_body("still here"))
        .unwrap();
    assert_eq!(s.next_text(), "still here");
}

#[test]
fn streams_are_not_cut_by_the_idle_or_header_timeouts() {
    let server = start_with(|c| {
        c.idle_timeout = Duration::from_millis(150);
        c.header_timeout = Duration::from_millis(150);
        c.talk_keepalive = Duration::from_secs(60);
    });
    let mut s = server.pull("/pull?name=long&channel=lived", true);
    s.client.expect_silence(Duration::from_millis(400));
    server
        .handle
        .publish("lived", Draft::with_body("still open"))
        .unwrap();
    assert_eq!(s.next_text(), "still open");
    assert_eq!(server.handle.metrics().idle_timeouts.get(), 0);
    assert_eq!(server.handle.metrics().header_timeouts.get(), 0);
}

#[test]
fn push_then_pull_pipelined_on_one_connection() {
    let server = start();
    let mut watcher = server.pull("/pull?name=w&channel=pp", true);
    let mut c = server.connect();
    let body = "name=me&channel=pp&message=hello";
    let mut batch = format!(
        "POST /push HTTP/1.1\r\nHead: less\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    batch.extend_from_slice(b"GET /pull?name=me&channel=pp HTTP/1.1\r\n\r\n");
    c.send(&batch);
    let mut expected = HEADLESS_PUSH_REPLY.to_vec();
    expected.extend_from_slice(HEADLESS_PULL_HEAD);
    expected.extend_from_slice(b"5\r\nnoop\0\r\n");
    c.expect_bytes(&expected);
    assert_eq!(watcher.next_text(), "hello");
    let mut me = StreamReader::headless_after_greeting(c, 0);
    server
        .handle
        .publish("pp", Draft::with_body("to both"))
        .unwrap();
    assert_eq!(me.next_text(), "to both");
    assert_eq!(watcher.next_text(), "to both");
}

#[test]
fn max_streams_per_channel_refuses_with_503() {
    let server = start_with(|c| c.max_streams_per_channel = 2);
    let a = server.pull("/pull?name=a&channel=small", true);
    let _b = server.pull("/pull?name=b&channel=small", true);
    let r = server.get("/pull?name=c&channel=small");
    assert_eq!(r.status, 503, "{}", show(&r.body));
    assert!(r.header("Retry-After").is_some());
    assert_eq!(server.handle.metrics().waiters_refused.get(), 1);
    // Other channels are not affected.
    let _d = server.pull("/pull?name=d&channel=big", true);
    // When a stream leaves, there is room again.
    drop(a);
    assert!(wait_for(TIMEOUT, || server
        .handle
        .metrics()
        .streaming
        .get()
        == 2));
    let mut c = server.pull("/pull?name=c&channel=small", true);
    server
        .handle
        .publish("small", Draft::with_body("room"))
        .unwrap();
    assert_eq!(c.next_text(), "room");
}
