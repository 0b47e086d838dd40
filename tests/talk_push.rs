//! Talk pushes (PROTOCOLS.md 3.2): byte-exact headless replies, unframed bodies, pipelining,
//! routing (broadcast, `to`, never the sender), decoding, errors, defaults, and messages
//! published by an embedding program.

mod common;

use std::time::Duration;

use common::*;
use tidings::Draft;

/// `GET /push?<query>` on a fresh connection; returns the response.
fn get_push(server: &TestServer, query: &str) -> Response {
    server.get(&format!("/push?{query}"))
}

#[test]
fn headless_push_reply_is_byte_exact_and_the_connection_stays_open() {
    let server = start();
    let mut s = server.pull("/pull?name=reader", true);
    let mut c = server.connect();
    for m in ["first", "second", "third"] {
        let body = format!("name=writer&message={m}");
        c.send(
            format!(
                "POST /push HTTP/1.1\r\nHead: less\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        c.expect_bytes(HEADLESS_PUSH_REPLY);
        assert_eq!(s.next_text(), m);
    }
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn headless_push_without_content_length_like_the_reference_clients() {
    let server = start();
    let mut s = server.pull("/pull?name=reader", true);
    let mut c = server.connect();
    c.send(&headless_push("name=writer&message=no+length"));
    c.expect_bytes(HEADLESS_PUSH_REPLY);
    assert_eq!(s.next_text(), "no length");
    // The connection takes the next push.
    c.send(&headless_push("name=writer&message=again"));
    c.expect_bytes(HEADLESS_PUSH_REPLY);
    assert_eq!(s.next_text(), "again");
}

#[test]
fn headless_push_with_head_and_body_in_separate_writes() {
    let server = start();
    let mut s = server.pull("/pull?name=reader", true);
    let mut c = server.connect();
    c.send(b"POST /push HTTP/1.1\r\nHead: less\r\n\r\n");
    // The server must wait for the body rather than answer an empty push.
    c.expect_silence(Duration::from_millis(100));
    c.send(b"name=writer&message=late+body");
    c.expect_bytes(HEADLESS_PUSH_REPLY);
    assert_eq!(s.next_text(), "late body");
}

#[test]
fn browser_push_gets_an_ordinary_200_with_content_length_4() {
    let server = start();
    let mut s = server.pull("/pull?name=reader", true);
    let mut c = server.connect();
    for m in ["one", "two"] {
        c.send(&post_form("/push", &format!("name=curl&message={m}")));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Length"), Some("4"));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
        assert!(r.header("Content-Type").is_some());
        assert_eq!(r.body, b"noop");
        assert_eq!(s.next_text(), m);
    }
}

#[test]
fn push_without_content_length_from_a_non_headless_client() {
    let server = start();
    let mut s = server.pull("/pull?name=reader", true);
    let mut c = server.connect();
    c.send(b"POST /push HTTP/1.1\r\nHost: t\r\n\r\nname=raw&message=unframed");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"noop");
    assert_eq!(s.next_text(), "unframed");
    // Still open for another push.
    c.send(b"POST /push HTTP/1.1\r\nHost: t\r\n\r\nname=raw&message=next");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(s.next_text(), "next");
}

#[test]
fn pipelined_headless_pushes_in_one_write_are_each_answered_in_order() {
    let server = start();
    let mut s = server.pull("/pull?name=reader&channel=pipe", true);
    let mut c = server.connect();
    let mut batch = Vec::new();
    for i in 1..=4 {
        batch.extend_from_slice(&headless_push(&format!(
            "name=writer&channel=pipe&message=m{i}"
        )));
    }
    c.send(&batch);
    c.expect_bytes(&HEADLESS_PUSH_REPLY.repeat(4));
    c.expect_silence(Duration::from_millis(100));
    for i in 1..=4 {
        assert_eq!(s.next_text(), format!("m{i}"));
    }
}

#[test]
fn pipelined_pushes_mixing_framed_and_unframed_bodies() {
    let server = start();
    let mut s = server.pull("/pull?name=reader&channel=mix", true);
    let mut c = server.connect();
    let framed = "name=w&channel=mix&message=framed";
    let mut batch = format!(
        "POST /push HTTP/1.1\r\nHead: less\r\nContent-Length: {}\r\n\r\n{framed}",
        framed.len()
    )
    .into_bytes();
    batch.extend_from_slice(&headless_push("name=w&channel=mix&message=unframed"));
    // An unframed body ends where the next `POST /push HTTP/1.` begins (PROTOCOLS.md 3.2).
    let third = "name=w&channel=mix&message=third";
    batch.extend_from_slice(
        format!(
            "POST /push HTTP/1.1\r\nContent-Length: {}\r\n\r\n{third}",
            third.len()
        )
        .as_bytes(),
    );
    c.send(&batch);
    c.expect_bytes(&HEADLESS_PUSH_REPLY.repeat(2));
    // The third request carries no `Head:` but the connection is headless already.
    c.expect_bytes(HEADLESS_PUSH_REPLY);
    for m in ["framed", "unframed", "third"] {
        assert_eq!(s.next_text(), m);
    }
}

#[test]
fn get_push_with_a_query_string() {
    let server = start();
    let mut s = server.pull("/pull?name=reader", true);
    let r = get_push(&server, "name=getter&message=via+get");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"noop");
    assert_eq!(s.next_text(), "via get");
}

#[test]
fn broadcast_reaches_other_streams_but_not_the_senders_own() {
    let server = start();
    let mut alice = server.pull("/pull?name=alice&channel=room", true);
    let mut bob = server.pull("/pull?name=bob&channel=room", true);
    let mut carol = server.pull("/pull?name=carol&channel=room", false);
    assert_eq!(
        get_push(&server, "name=alice&channel=room&message=hi+all").status,
        200
    );
    assert_eq!(bob.next_text(), "hi all");
    assert_eq!(carol.next_text(), "hi all");
    // Alice's next record is Bob's answer: her own message was not sent to her.
    assert_eq!(
        get_push(&server, "name=bob&channel=room&message=hi+alice").status,
        200
    );
    assert_eq!(alice.next_text(), "hi alice");
    assert_eq!(carol.next_text(), "hi alice");
    // And Bob never got his own.
    server
        .handle
        .publish("room", Draft::with_body("marker"))
        .unwrap();
    assert_eq!(bob.next_text(), "marker");
}

#[test]
fn to_reaches_only_the_named_stream() {
    let server = start();
    let mut a = server.pull("/pull?name=a&channel=dm", true);
    let mut b = server.pull("/pull?name=b&channel=dm", true);
    let mut c = server.pull("/pull?name=c&channel=dm", true);
    assert_eq!(
        get_push(&server, "name=a&to=c&channel=dm&message=psst").status,
        200
    );
    assert_eq!(c.next_text(), "psst");
    // A broadcast from c follows; a and b see it as their next record: no "psst" before.
    assert_eq!(
        get_push(&server, "name=c&channel=dm&message=everyone").status,
        200
    );
    assert_eq!(a.next_text(), "everyone");
    assert_eq!(b.next_text(), "everyone");
}

#[test]
fn unencoded_message_text_is_kept_as_sent() {
    let server = start();
    let mut s = server.pull("/pull?name=reader&channel=raw", true);
    let mut c = server.connect();
    for (sent, expected) in [
        ("hello world!", "hello world!"),
        ("100% sure", "100% sure"),
        ("50%off", "50%off"),
        ("a=b", "a=b"),
        ("ends with %", "ends with %"),
    ] {
        c.send(&headless_push(&format!(
            "name=writer&channel=raw&message={sent}"
        )));
        c.expect_bytes(HEADLESS_PUSH_REPLY);
        assert_eq!(s.next_text(), expected, "sent {sent:?}");
    }
}

#[test]
fn percent_encoded_text_is_decoded() {
    let server = start();
    let mut s = server.pull("/pull?name=reader&channel=enc", true);
    let mut me = server.pull("/pull?name=J%C3%BCrgen&channel=enc", true);
    let r = server.request(&post_form(
        "/push",
        "name=J%C3%BCrgen&channel=enc&message=caf%C3%A9+%26+cr%C3%A8me%21%0D",
    ));
    assert_eq!(r.status, 200);
    assert_eq!(s.next_text(), "café & crème!\r");
    // The decoded name is the sender: its own stream did not get the message.
    assert_eq!(
        get_push(&server, "name=other&channel=enc&message=next").status,
        200
    );
    assert_eq!(me.next_text(), "next");
}

#[test]
fn a_message_holding_the_terminator_is_400_and_not_stored() {
    let server = start();
    let mut s = server.pull("/pull?name=reader&channel=nul", true);
    let r = get_push(&server, "name=w&channel=nul&message=a%00b");
    assert_eq!(r.status, 400);
    assert!(r.body_str().contains("terminator"), "{}", r.body_str());
    // A headless client gets the 400 too.
    let mut c = server.connect();
    c.send(&headless_push("name=w&channel=nul&message=x%00"));
    assert_eq!(c.read_head().status, 400);
    assert_eq!(
        get_push(&server, "name=w&channel=nul&message=ok").status,
        200
    );
    assert_eq!(
        s.next_text(),
        "ok",
        "the refused messages were not delivered"
    );
    assert_eq!(server.handle.metrics().messages_published.get(), 1);
}

#[test]
fn missing_message_is_400() {
    let server = start();
    for q in ["name=w", "name=w&channel=talk", "name=w&msg=typo"] {
        let r = get_push(&server, q);
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.body, b"message is required\n");
    }
    let r = server.request(&post_form("/push", "name=w"));
    assert_eq!(r.status, 400);
    assert_eq!(server.handle.metrics().messages_published.get(), 0);
}

#[test]
fn message_over_max_message_bytes_is_413() {
    let server = start_with(|c| c.max_message_bytes = 100);
    let r = server.request(&post_form(
        "/push",
        &format!("name=w&message={}", "x".repeat(101)),
    ));
    assert_eq!(r.status, 413);
    let r = server.request(&post_form(
        "/push",
        &format!("name=w&message={}", "x".repeat(100)),
    ));
    assert_eq!(r.status, 200);
}

#[test]
fn a_name_with_no_stream_still_succeeds_and_the_message_is_stored() {
    let server = start();
    let before = server
        .handle
        .publish("solo", Draft::with_body("start"))
        .unwrap();
    let r = get_push(
        &server,
        "name=ghost&to=nobody&channel=solo&message=hello+nobody",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"noop");
    let r = get_push(&server, "name=ghost&channel=solo&message=to+no+one");
    assert_eq!(r.status, 200);
    assert_eq!(server.handle.metrics().messages_published.get(), 3);
    // When "nobody" connects later and asks for the backlog, its message is there.
    let mut s = StreamReader::open(
        server.connect(),
        &format!("/pull?name=nobody&channel=solo&since={before}"),
        true,
        0,
    );
    assert_eq!(
        s.next_records(),
        vec![
            b"noop".to_vec(),
            b"hello nobody".to_vec(),
            b"to no one".to_vec()
        ]
    );
}

#[test]
fn the_default_channel_is_talk() {
    let server = start();
    let mut implicit = server.pull("/pull?name=i", true);
    let mut explicit = server.pull("/pull?name=e&channel=talk", true);
    let mut elsewhere = server.pull("/pull?name=x&channel=elsewhere", true);
    assert_eq!(get_push(&server, "name=w&message=default").status, 200);
    assert_eq!(implicit.next_text(), "default");
    assert_eq!(explicit.next_text(), "default");
    server
        .handle
        .publish("elsewhere", Draft::with_body("own channel"))
        .unwrap();
    assert_eq!(elsewhere.next_text(), "own channel");
    server
        .handle
        .publish("talk", Draft::with_body("via handle"))
        .unwrap();
    assert_eq!(implicit.next_text(), "via handle");
}

#[test]
fn an_empty_channel_name_is_400() {
    let server = start();
    let r = get_push(&server, "name=w&channel=&message=x");
    assert_eq!(r.status, 400);
    let r = get_push(
        &server,
        &format!("name=w&channel={}&message=x", "c".repeat(256)),
    );
    assert_eq!(r.status, 400);
    assert_eq!(server.handle.metrics().messages_published.get(), 0);
}

#[test]
fn messages_published_through_the_handle_reach_streams() {
    let server = start();
    let mut a = server.pull("/pull?name=bob&channel=app", true);
    let mut b = server.pull("/pull?name=sue&channel=app", false);
    let seq = server
        .handle
        .publish("app", Draft::with_body("from the app"))
        .unwrap();
    assert!(seq > 0);
    assert_eq!(a.next_text(), "from the app");
    assert_eq!(b.next_text(), "from the app");
    // `from`/`to` of a message from another source are not Talk names: everyone gets it,
    // even the stream called like its sender.
    let d = Draft {
        from: "bob".into(),
        to: "sms://5550001".into(),
        ..Draft::with_body("sms text")
    };
    server.handle.publish("app", d).unwrap();
    assert_eq!(a.next_text(), "sms text");
    assert_eq!(b.next_text(), "sms text");
}

#[test]
fn push_counts_as_a_talk_request() {
    let server = start();
    assert_eq!(get_push(&server, "name=w&message=1").status, 200);
    assert_eq!(get_push(&server, "name=w").status, 400);
    server.wait_metric(
        "tidings_requests_total{protocol=\"talk\",status=\"200\"}",
        1.0,
    );
    server.wait_metric(
        "tidings_requests_total{protocol=\"talk\",status=\"400\"}",
        1.0,
    );
}
