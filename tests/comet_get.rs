//! Simple Comet `get` (PROTOCOLS.md 2.1, 2.2): immediate answers, parking and waking
//! (across workers), the cursor loop that never skips or repeats, the timeout answer,
//! `missed`, bounded replies, how `data` is rendered, byte lengths, bad cursors, and a parked
//! client that hangs up.

mod comet_support;

use std::time::{Duration, Instant};

use comet_support::*;
use serde_json::{json, Value};

/// A `get` request line for `channel` after `time`.
fn get_req(channel: &str, time: u64) -> Vec<u8> {
    get(&format!(
        "/comet?method=get&channel={}&time={time}",
        enc(channel)
    ))
}

#[test]
fn get_answers_at_once_when_messages_are_after_the_cursor() {
    let server = start(); // default 25 s long-poll: an answer in time proves no parking
    let s = server.sync("now");
    let t1 = server.put("now", "a");
    let t2 = server.put("now", "b");
    let t0 = Instant::now();
    let v = server.get_after("now", s);
    assert!(t0.elapsed() < Duration::from_secs(2), "answered at once");
    assert_eq!(messages(&v), vec![(t1, "a".into()), (t2, "b".into())]);
    assert_eq!(reply_time(&v), t2, "time is the last message's");
    // From t1 only b; the exact body.
    let r = server.comet(&format!("method=get&channel=now&time={t1}"));
    assert_eq!(
        r.text(),
        format!(r#"{{"time":{t2},"messages":[{{"time":{t2},"data":"b"}}]}}"#)
    );
    // time defaults to 0: everything retained.
    let r = server.comet("method=get&channel=now");
    assert_eq!(messages(&r.json()).len(), 2);
    assert!(
        !missed(&r.json()),
        "cursor 0 on a channel that never dropped"
    );
}

#[test]
fn parked_gets_on_both_workers_are_all_woken_by_a_put() {
    let server = start();
    let s = server.sync("wake");
    // Several connections, so that the kernel spreads them over both workers' listeners.
    let mut gets: Vec<Client> = (0..12)
        .map(|_| {
            let mut c = server.connect();
            c.send(&get_req("wake", s));
            c
        })
        .collect();
    server.wait_parked(12);
    gets[0].expect_silence(Duration::from_millis(50));
    // A put from another connection.
    let t = server.put("wake", "{\"hello\":\"all\"}");
    for (i, c) in gets.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.status, 200, "get {i}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("Cache-Control"), Some("no-cache"));
        let v = r.json();
        assert_eq!(messages(&v), vec![(t, json!({"hello": "all"}))], "get {i}");
        assert_eq!(reply_time(&v), t);
    }
    server.wait_parked(0);
    // The connections are kept alive and usable for the next get.
    let r = gets[5].roundtrip(&get_req("wake", s));
    assert_eq!(messages(&r.json()).len(), 1);
}

#[test]
fn parked_get_is_woken_by_an_embedded_publish() {
    let server = start();
    let s = server.sync("emb");
    let mut c = server.connect();
    c.send(&get_req("emb", s));
    server.wait_parked(1);
    let t = server
        .handle
        .publish("emb", tidings::Draft::with_body("[1,2,3]"))
        .unwrap();
    let v = c.read_response().json();
    assert_eq!(messages(&v), vec![(t, json!([1, 2, 3]))]);
}

#[test]
fn a_put_to_another_channel_does_not_wake_a_get() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_millis(400));
    let s = server.sync("quiet");
    let mut c = server.connect();
    c.send(&get_req("quiet", s));
    server.wait_parked(1);
    server.put("noisy", "x");
    let v = c.read_response().json();
    assert_eq!(messages(&v), vec![], "only the timeout answers it");
}

#[test]
fn cursor_loop_sees_each_of_1000_rapid_puts_once_in_order() {
    const N: usize = 1000;
    let server = start();
    let s = server.sync("loop");
    let addr = server.addr;
    let publisher = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let mut times = Vec::with_capacity(N);
        for i in 0..N {
            let r = c.roundtrip(&get(&format!("/comet?method=put&channel=loop&message={i}")));
            times.push(time_of(&r, "put"));
        }
        times
    });
    let mut c = server.connect();
    let mut cursor = s;
    let mut seen: Vec<(u64, Value)> = Vec::with_capacity(N);
    let mut replies = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < N {
        assert!(Instant::now() < deadline, "only {} of {N} seen", seen.len());
        let r = c.roundtrip(&get_req("loop", cursor));
        assert_eq!(r.status, 200);
        let v = r.json();
        assert!(!missed(&v), "nothing was dropped: {v}");
        let ms = messages(&v);
        assert!(
            !ms.is_empty(),
            "a get answers only with messages before its timeout"
        );
        assert!(ms.len() <= 100, "at most comet_max_messages per reply");
        assert_eq!(reply_time(&v), ms.last().unwrap().0);
        cursor = reply_time(&v);
        seen.extend(ms);
        replies += 1;
    }
    let times = publisher.join().expect("publisher");
    assert_eq!(seen.len(), N, "no message repeated past the end");
    for (i, (t, data)) in seen.iter().enumerate() {
        assert_eq!(*data, json!(i), "message {i} in order, once");
        assert_eq!(*t, times[i], "message {i} has the time its put answered");
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert!(replies >= 10, "{replies} replies of at most 100");
}

#[test]
fn timeout_answers_the_clock_and_an_empty_list() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_millis(300));
    let s = server.sync("to");
    let mut c = server.connect();
    let t0 = Instant::now();
    let r = c.roundtrip(&get_req("to", s));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let v = r.json();
    let clock = reply_time(&v);
    assert_eq!(r.text(), format!(r#"{{"time":{clock},"messages":[]}}"#));
    assert!(clock >= s, "the clock never goes back");
    assert!(clock <= server.sync("to"), "the clock, not the future");
    // A later message is after the timeout's time: the loop with it loses nothing.
    let t = server.put("to", "after");
    assert!(t > clock);
    let v = c.roundtrip(&get_req("to", clock)).json();
    assert_eq!(messages(&v), vec![(t, "after".into())]);
}

#[test]
fn timeout_on_a_channel_that_does_not_exist_yet() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_millis(300));
    let before = server.sync("other");
    let v = server.get_after("fresh", 0);
    assert_eq!(messages(&v), vec![]);
    let clock = reply_time(&v);
    assert!(clock >= before, "a clock like sync's, not 0: {clock}");
    let t = server.put("fresh", "x");
    assert!(t > clock);
}

#[test]
fn missed_when_retention_dropped_messages_after_the_cursor() {
    let server = start_with(|c| {
        c.channel_capacity = 3;
        c.long_poll_timeout = Duration::from_millis(300);
    });
    // A channel that never dropped: cursor 0 is not "missed".
    let a = server.put("keep", "1");
    let b = server.put("keep", "2");
    let v = server.get_after("keep", 0);
    assert_eq!(messages(&v), vec![(a, json!(1)), (b, json!(2))]);
    assert!(!missed(&v));

    let t: Vec<u64> = (1..=5)
        .map(|i| server.put("drop", &i.to_string()))
        .collect();
    // Retained: 3, 4, 5. Dropped: 1, 2.
    for cursor in [0, t[0]] {
        let v = server.get_after("drop", cursor);
        assert!(missed(&v), "cursor {cursor}: message 2 was dropped: {v}");
        assert_eq!(
            messages(&v),
            vec![(t[2], json!(3)), (t[3], json!(4)), (t[4], json!(5))]
        );
        assert_eq!(reply_time(&v), t[4]);
    }
    // A cursor at the last dropped message missed nothing.
    let v = server.get_after("drop", t[1]);
    assert!(!missed(&v), "{v}");
    assert_eq!(messages(&v).len(), 3);
    let v = server.get_after("drop", t[3]);
    assert!(!missed(&v));
    assert_eq!(messages(&v), vec![(t[4], json!(5))]);
    // Caught up: a plain timeout, not missed.
    let v = server.get_after("drop", t[4]);
    assert!(!missed(&v));
    assert_eq!(messages(&v), vec![]);
}

#[test]
fn replies_are_bounded_and_the_loop_continues() {
    let server = start_with(|c| c.comet_max_messages = 5);
    let s = server.sync("bound");
    let t: Vec<u64> = (0..12)
        .map(|i| server.put("bound", &i.to_string()))
        .collect();
    let mut cursor = s;
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    while all.len() < 12 {
        let v = server.get_after("bound", cursor);
        let ms = messages(&v);
        sizes.push(ms.len());
        cursor = reply_time(&v);
        assert_eq!(cursor, ms.last().unwrap().0);
        all.extend(ms);
    }
    assert_eq!(sizes, vec![5, 5, 2]);
    let want: Vec<(u64, Value)> = t.iter().enumerate().map(|(i, &t)| (t, json!(i))).collect();
    assert_eq!(all, want);
}

#[test]
fn data_is_parsed_json_or_a_json_string() {
    let server = start();
    let s = server.sync("data");
    let inputs = [
        (
            r#"{"a":[1,2],"b":{"c":null}}"#,
            json!({"a": [1, 2], "b": {"c": null}}),
        ),
        ("123", json!(123)),
        ("-4.5e3", json!(-4.5e3)),
        ("true", json!(true)),
        ("null", Value::Null),
        (r#""quoted""#, json!("quoted")),
        ("  [1, 2]  ", json!([1, 2])),
        ("hello world", json!("hello world")),
        ("{broken", json!("{broken")),
        (r#"say "hi"\n</script>"#, json!("say \"hi\"\\n</script>")),
        ("1 2", json!("1 2")),
        ("", json!("")),
        ("tab\there", json!("tab\there")),
    ];
    for (msg, _) in &inputs {
        server.put("data", msg);
    }
    let v = server.get_after("data", s);
    let got: Vec<Value> = messages(&v).into_iter().map(|(_, d)| d).collect();
    let want: Vec<Value> = inputs.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn non_ascii_get_reply_counts_bytes() {
    let server = start();
    let s = server.sync("utf8");
    let text = "Grüße, 世界 — 🚀";
    let t1 = server.put("utf8", text);
    let t2 = server.put("utf8", &format!("{{\"t\":\"{text}\"}}"));
    let mut c = server.connect();
    let r = c.roundtrip(&get_req("utf8", s));
    let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len());
    assert!(
        len > r.text().chars().count(),
        "non-ASCII: bytes, not characters"
    );
    assert_eq!(
        messages(&r.json()),
        vec![(t1, text.into()), (t2, json!({ "t": text }))]
    );
    // The connection is still in step.
    let again = c.roundtrip(&get_req("utf8", t1));
    assert_eq!(messages(&again.json()), vec![(t2, json!({ "t": text }))]);
}

#[test]
fn bad_cursors_are_400() {
    let server = start();
    for time in ["abc", "-1", "", "1.5", "+5", "0x10", "1e3", "%201"] {
        let t0 = Instant::now();
        let r = server.comet(&format!("method=get&channel=bad&time={time}"));
        assert_eq!(r.status, 400, "time={time:?}: {}", show(&r.body));
        assert!(t0.elapsed() < Duration::from_secs(2), "answered at once");
        assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    }
    assert_eq!(server.handle.metrics().parked.get(), 0);
}

#[test]
fn a_parked_client_that_hangs_up_is_dropped_at_once() {
    // The default 25 s long-poll: the count must fall long before it.
    let server = start();
    let s = server.sync("gone");
    let conns: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = server.connect();
            c.send(&get_req("gone", s));
            c
        })
        .collect();
    server.wait_metric("tidings_connections_parked", 4.0);
    for c in conns {
        c.hang_up();
    }
    let took = server.wait_metric_within("tidings_connections_parked", 0.0, Duration::from_secs(3));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(server.handle.metrics().parked.get(), 0);
    // The channel still works for the next client.
    let mut c = server.connect();
    c.send(&get_req("gone", s));
    server.wait_parked(1);
    let t = server.put("gone", "x");
    assert_eq!(messages(&c.read_response().json()), vec![(t, "x".into())]);
}

#[test]
fn a_parked_get_with_pipelined_requests_answers_them_in_order() {
    let server = start();
    let s = server.sync("pipeline");
    let mut c = server.connect();
    let mut bytes = get_req("pipeline", s);
    bytes.extend_from_slice(&get("/comet?method=sync&channel=pipeline"));
    c.send(&bytes);
    server.wait_parked(1);
    c.expect_silence(Duration::from_millis(50));
    let t = server.put("pipeline", "p");
    let first = c.read_response();
    assert_eq!(messages(&first.json()), vec![(t, "p".into())]);
    let second = time_of(&c.read_response(), "pipelined sync");
    assert!(second >= t);
}

#[test]
fn head_get_answers_headers_only() {
    let server = start();
    let s = server.sync("head");
    server.put("head", "x");
    let mut c = server.connect();
    c.send(
        format!("HEAD /comet?method=get&channel=head&time={s} HTTP/1.1\r\nHost: t\r\n\r\n")
            .as_bytes(),
    );
    let head = c.read_until(b"\r\n\r\n", TIMEOUT);
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    c.expect_silence(Duration::from_millis(50));
}

#[test]
fn missed_when_the_byte_budget_dropped_messages() {
    let server = start_with(|c| c.channel_bytes = 300);
    let s = server.sync("bytes");
    let body = "z".repeat(120);
    let t: Vec<u64> = (0..4).map(|_| server.put("bytes", &body)).collect();
    let v = server.get_after("bytes", s);
    assert!(missed(&v), "the oldest did not fit in 300 bytes: {v}");
    let ms = messages(&v);
    assert!(!ms.is_empty() && ms.len() < 4, "{} retained", ms.len());
    assert_eq!(ms.last().unwrap().0, t[3], "the newest is kept");
    assert_eq!(reply_time(&v), t[3]);
}

#[test]
fn a_get_whose_client_hangs_up_right_after_sending_is_not_left_parked() {
    // The request and the FIN reach the server together (one read sees both). The client is
    // gone before the get is parked; it must be dropped at once like any parked client that
    // hangs up, not held until the 25 s long-poll timeout.
    const N: u64 = 10;
    let server = start();
    let s = server.sync("race");
    let m = server.handle.metrics();
    // Start from no open connection (the sync's is closed), so "all closed" below cannot
    // hold before the server has read and handled every hang-up.
    assert!(wait_for(TIMEOUT, || m.connections_open.get() == 0));
    let accepted = m.connections_accepted.get();
    for _ in 0..N {
        let mut c = server.connect();
        c.send(&get_req("race", s));
        c.hang_up();
    }
    assert!(
        wait_for(TIMEOUT, || m.connections_accepted.get() >= accepted + N),
        "the server accepted the connections"
    );
    let mut last = (0, 0);
    let dropped = wait_for(Duration::from_secs(3), || {
        last = (m.parked.get(), m.connections_open.get());
        last == (0, 0)
    });
    assert!(
        dropped,
        "3 s after {N} clients sent a get and hung up: {} still parked, {} connections open \
         /metrics says tidings_connections_parked {:?}",
        last.0,
        last.1,
        server.metric("tidings_connections_parked")
    );
}
