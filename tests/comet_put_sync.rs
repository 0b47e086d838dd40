//! Simple Comet `put` and `sync` (PROTOCOLS.md 0.1, 2.1, 2.2): defaults, the answers, the
//! channel clock, strictly increasing times, form-encoded bodies, required parameters, and
//! the headers every comet answer carries.

mod comet_support;

use comet_support::*;

#[test]
fn no_parameters_means_sync_on_channel_test() {
    let server = start();
    let before = server.sync("test");
    // No method and no channel: a sync of channel "test", which reads the same clock.
    let r = server.get("/comet");
    let t = time_of(&r, "bare /comet");
    assert!(t >= before, "the clock of channel test never goes back");
    // The message of a put without a channel goes to "test".
    let put = time_of(
        &server.comet("method=put&message=dflt"),
        "put without channel",
    );
    assert!(put > t);
    let v = server.get_after("test", t);
    assert_eq!(messages(&v), vec![(put, "dflt".into())]);
    // A method=sync without a channel reads the clock of "test" (now past the put).
    let s = time_of(&server.comet("method=sync"), "sync without channel");
    assert!(s >= put);
}

#[test]
fn put_answers_its_time_and_times_increase() {
    let server = start();
    let mut last = 0;
    for i in 0..20 {
        let t = server.put("p", &format!("m{i}"));
        assert!(t > last, "put {i}: {t} after {last}");
        last = t;
    }
    // Times look like milliseconds since the epoch (0.1).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        last + 60_000 > now_ms && last < now_ms + 60_000,
        "{last} vs {now_ms}"
    );
}

#[test]
fn sync_reads_the_clock_and_later_puts_are_after_it() {
    let server = start();
    let mut floor = 0;
    for i in 0..10 {
        let s = server.sync("clock");
        assert!(
            s >= floor,
            "sync {i}: the clock never goes back ({s} < {floor})"
        );
        let t = server.put("clock", "x");
        assert!(t > s, "a put ({t}) is after every earlier sync ({s})");
        let s2 = server.sync("clock");
        assert!(s2 >= t, "sync after a put reads at least its time");
        floor = s2;
    }
    // Puts in a burst outrun the millisecond clock; sync still answers their latest time.
    let mut t = 0;
    for _ in 0..50 {
        t = server.put("clock", "burst");
    }
    assert!(server.sync("clock") >= t);
}

#[test]
fn two_pipelined_puts_in_one_millisecond_are_both_kept() {
    let server = start();
    let s = server.sync("pipe");
    let mut c = server.connect();
    let mut both = get("/comet?method=put&channel=pipe&message=first");
    both.extend_from_slice(&get("/comet?method=put&channel=pipe&message=second"));
    c.send(&both);
    let t1 = time_of(&c.read_response(), "first put");
    let t2 = time_of(&c.read_response(), "second put");
    assert!(s < t1 && t1 < t2, "sync {s}, puts {t1} {t2}");
    let v = server.get_after("pipe", s);
    assert_eq!(
        messages(&v),
        vec![(t1, "first".into()), (t2, "second".into())]
    );
    assert_eq!(reply_time(&v), t2);
    assert!(!missed(&v));
}

#[test]
fn put_without_message_is_400_and_stores_nothing() {
    let server = start();
    let s = server.sync("nomsg");
    let r = server.comet("method=put&channel=nomsg");
    assert_eq!(r.status, 400);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    assert!(!r.body.is_empty(), "an error says what was wrong");
    // Only the next good put is in the channel.
    let t = server.put("nomsg", "ok");
    let v = server.get_after("nomsg", s);
    assert_eq!(messages(&v), vec![(t, "ok".into())]);
}

#[test]
fn unknown_method_is_400() {
    let server = start();
    for m in ["post", "PUT", "subscribe", ""] {
        let r = server.comet(&format!("method={m}&channel=u&message=x"));
        assert_eq!(r.status, 400, "method={m:?}: {}", show(&r.body));
        assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    }
    // Nothing was stored by any of them: the only message is the next good put.
    let t = server.put("u", "good");
    assert_eq!(
        messages(&server.get_after("u", 0)),
        vec![(t, "good".into())]
    );
}

#[test]
fn empty_message_is_a_message() {
    let server = start();
    let s = server.sync("empty");
    let t = server.put("empty", "");
    let v = server.get_after("empty", s);
    assert_eq!(messages(&v), vec![(t, "".into())]);
}

#[test]
fn form_encoded_post_body_carries_the_parameters() {
    let server = start();
    let s = server.sync("form");
    let long = "x".repeat(20_000) + " & = + done";
    let mut c = server.connect();
    let r = c.roundtrip(&post_form(
        "/comet",
        &format!("method=put&channel=form&message={}", enc(&long)),
    ));
    let t1 = time_of(&r, "form put");
    // Method in the query string, the rest in the body.
    let r = c.roundtrip(&post_form(
        "/comet?method=put",
        "channel=form&message=hello+world%21",
    ));
    let t2 = time_of(&r, "mixed put");
    // A form-encoded sync.
    let r = c.roundtrip(&post_form("/comet", "method=sync&channel=form"));
    let s2 = time_of(&r, "form sync");
    assert!(s < t1 && t1 < t2 && t2 <= s2);
    // A form-encoded get.
    let r = c.roundtrip(&post_form(
        "/comet",
        &format!("method=get&channel=form&time={s}"),
    ));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        messages(&v),
        vec![(t1, long.as_str().into()), (t2, "hello world!".into())]
    );
}

#[test]
fn answers_are_json_no_cache_with_cors() {
    let server = start();
    let s = server.sync("hdr");
    let t = server.put("hdr", "x");
    for (what, q) in [
        ("sync", "method=sync&channel=hdr".to_string()),
        ("put", "method=put&channel=hdr&message=y".to_string()),
        ("get", format!("method=get&channel=hdr&time={s}")),
    ] {
        let r = server.comet(&q);
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
        assert_eq!(r.header("Cache-Control"), Some("no-cache"), "{what}");
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"), "{what}");
        assert_eq!(
            r.header("Content-Length")
                .map(|v| v.parse::<usize>().unwrap()),
            Some(r.body.len()),
            "{what}"
        );
    }
    let v = server.get_after("hdr", s);
    assert_eq!(messages(&v)[0], (t, "x".into()));
}

#[test]
fn cors_header_on_errors_and_configured_origin() {
    let server = start_with(|c| c.cors_origin = "https://chat.example".into());
    let cases: &[&[u8]] = &[
        b"GET /comet?method=sync&channel=c HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /comet?method=nope HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /comet?method=put HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /comet?method=get&time=abc HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /comet?callback=alert(1) HTTP/1.1\r\nHost: t\r\n\r\n",
        b"DELETE /comet HTTP/1.1\r\nHost: t\r\n\r\n",
        b"OPTIONS /comet HTTP/1.1\r\nHost: t\r\nOrigin: https://chat.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    ];
    for raw in cases {
        let mut c = server.connect();
        let r = c.roundtrip(raw);
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            Some("https://chat.example"),
            "{} -> {}",
            show(raw),
            r.status
        );
    }
}

#[test]
fn non_ascii_put_and_sync_keep_byte_lengths() {
    let server = start();
    let s = server.sync("ü");
    let text = "héllo ✓ 日本語 🎉";
    let t = server.put("ü", text);
    assert!(t > s);
    // Content-Length counts bytes; the connection stays in step for the next request.
    let mut c = server.connect();
    let q = format!("/comet?method=get&channel={}&time={s}", enc("ü"));
    let r = c.roundtrip(&get(&q));
    assert_eq!(
        r.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );
    assert_eq!(messages(&r.json()), vec![(t, text.into())]);
    let again = c.roundtrip(&get(&q));
    assert_eq!(
        again.body, r.body,
        "the next response on the connection parses"
    );
}

#[test]
fn bad_channel_names_are_400() {
    let server = start();
    let long = "a".repeat(256);
    for ch in ["", "%0A", "a%00b", &long, "%FF"] {
        let r = server.comet(&format!("method=put&channel={ch}&message=x"));
        assert_eq!(r.status, 400, "channel {ch:?}");
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    }
    // A slash is allowed (0.3).
    assert!(server.put("acme/incoming", "ok") > 0);
}

#[test]
fn a_message_over_the_limit_is_413_and_not_stored() {
    let server = start_with(|c| c.max_message_bytes = 100);
    let s = server.sync("big");
    let r = server.comet(&format!(
        "method=put&channel=big&message={}",
        "x".repeat(101)
    ));
    assert_eq!(r.status, 413, "{}", show(&r.body));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let t = server.put("big", &"y".repeat(100));
    let v = server.get_after("big", s);
    assert_eq!(messages(&v), vec![(t, "y".repeat(100).into())]);
}

#[test]
fn browser_form_content_type_with_charset_is_a_form() {
    // What fetch() sends for a URLSearchParams body.
    let server = start();
    let s = server.sync("fetch");
    let mut c = server.connect();
    let r = c.roundtrip(&post(
        "/comet",
        "application/x-www-form-urlencoded;charset=UTF-8",
        b"method=put&channel=fetch&message=%7B%22from%22%3A%22a%22%7D",
    ));
    let t = time_of(&r, "fetch-style put");
    let v = server.get_after("fetch", s);
    assert_eq!(messages(&v), vec![(t, serde_json::json!({"from": "a"}))]);
}
