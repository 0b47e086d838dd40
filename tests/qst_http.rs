//! The HTTP rules of PROTOCOLS.md 0.3 on the QST endpoints: channel names, message and body
//! limits (nothing stored by a 4xx), pipelining (also behind a parked long-poll),
//! `Expect: 100-continue`, HTTP/1.0, CORS, and replies of 1000 messages.

mod qst_support;

use std::time::Duration;

use qst_support::*;

#[test]
fn channel_names_are_1_to_255_bytes_of_utf8_without_control_characters() {
    let server = start();
    let mut c = server.connect();
    let longest = "n".repeat(255);
    let r = c.push(&longest, "text/xml", &xml_batch(&["ok"]));
    assert_eq!(r.status, 200, "255 bytes: {}", r.show());
    assert_eq!(c.pull(&longest, "").ids(), ["ok"]);
    // Counted after percent-decoding: 127 × "é" is 254 bytes.
    let accented = "%C3%A9".repeat(127);
    assert_eq!(
        c.push(&accented, "text/xml", &xml_batch(&["é"])).status,
        200
    );
    assert_eq!(c.pull(&"é".repeat(127), "").ids(), ["é"]);
    let bad = [
        "n".repeat(256),
        "%C3%A9".repeat(128),
        "%01".to_string(),
        "a%0Ab".to_string(),
        "%FF".to_string(),
        "a%C3".to_string(),
        "%7F".to_string(),
    ];
    for name in &bad {
        let r = c.push(name, "text/xml", &xml_batch(&["bad"]));
        assert_eq!(r.status, 400, "push to {name:?}: {}", r.show());
        let r = c.pull(name, "");
        assert_eq!(r.status, 400, "pull from {name:?}: {}", r.show());
    }
    let r = c.push("", "text/xml", &xml_batch(&["bad"]));
    assert_eq!(r.status, 400, "empty name: {}", r.show());
    assert_eq!(server.metrics().messages_published.get(), 2);
}

#[test]
fn a_message_over_the_message_limit_is_413_and_nothing_of_the_batch_is_stored() {
    let server = start_with(|c| c.max_message_bytes = 1000);
    let mut c = server.connect();
    let big = "x".repeat(2000);
    let xml = xml_doc(&format!(
        "{}{}",
        xml_msg("s-1", "small"),
        xml_msg("b-1", &big)
    ));
    let r = c.push("q", "text/xml", &xml);
    assert_eq!(r.status, 413, "{}", r.show());
    let json = format!(r#"[{{"id":"s-1","body":"small"}},{{"id":"b-1","body":"{big}"}}]"#);
    let r = c.push("q", "application/json", &json);
    assert_eq!(r.status, 413, "{}", r.show());
    assert!(c.pull("q", "").ids().is_empty());
    assert_eq!(server.head_etag("q"), "");
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["s-1"])).status, 200);
}

#[test]
fn a_body_over_the_body_limit_is_413_and_stores_nothing() {
    let server = start_with(|c| c.max_body_bytes = 4096);
    let mut c = server.connect();
    let all = ids("m", 100);
    let xml = xml_batch(&strs(&all));
    assert!(xml.len() > 4096);
    let r = c.push("q", "text/xml", &xml);
    assert_eq!(r.status, 413, "{}", r.show());
    let mut c = server.connect();
    assert!(c.pull("q", "").ids().is_empty());
    assert_eq!(server.metrics().messages_published.get(), 0);
}

#[test]
fn pipelined_qst_requests_are_answered_in_order() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_batch(&["p-1", "p-2"]);
    let raw = format!(
        "POST /qst/q HTTP/1.1\r\nHost: t\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{xml}\
         GET /qst/q HTTP/1.1\r\nHost: t\r\n\r\n\
         HEAD /qst/q HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /qst/q?etag=p-1&format=json HTTP/1.1\r\nHost: t\r\n\r\n",
        xml.len()
    );
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: p-2"), "{}", r.show());
    assert_eq!(c.read_response().ids(), ["p-1", "p-2"]);
    let r = c.read_head_response();
    assert!(r.has_line("ETag: p-2"), "{}", r.show());
    let r = c.read_response();
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.ids(), ["p-2"]);
}

#[test]
fn a_request_pipelined_behind_a_long_poll_waits_for_its_answer() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_secs(3));
    let mut c = server.connect();
    c.send(
        b"GET /qst/q?long-polling=true HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /qst/q?max=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert!(wait_for(TIMEOUT, || server.metrics().parked.get() == 1));
    c.expect_silence(Duration::from_millis(50));
    assert_eq!(
        server.push_xml("q", &xml_batch(&["w-1", "w-2"])).status,
        200
    );
    assert_eq!(c.read_response().ids(), ["w-1", "w-2"]);
    assert_eq!(c.read_response().ids(), ["w-1"]);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_batch(&["e-1"]);
    c.send(
        format!(
            "POST /qst/q HTTP/1.1\r\nHost: t\r\nContent-Type: text/xml\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            xml.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(show(&r.head), show(b"HTTP/1.1 100 Continue\r\n\r\n"));
    c.send(xml.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: e-1"), "{}", r.show());
    assert_eq!(c.pull("q", "").ids(), ["e-1"]);
}

#[test]
fn an_http_1_0_push_is_answered_and_closed() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_batch(&["h-1"]);
    c.send(
        format!(
            "POST /qst/q HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{xml}",
            xml.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: h-1"), "{}", r.show());
    assert_eq!(r.header("Connection"), Some("close"), "{}", r.show());
    c.expect_closed();
    assert_eq!(server.pull("q", "").ids(), ["h-1"]);
}

#[test]
fn qst_replies_carry_cors_and_preflights_are_answered() {
    let server = start();
    let mut c = server.connect();
    let r = c.push("q", "text/xml", &xml_batch(&["c-1"]));
    assert!(r.has_line("Access-Control-Allow-Origin: *"), "{}", r.show());
    let r = c.pull("q", "");
    assert!(r.has_line("Access-Control-Allow-Origin: *"), "{}", r.show());
    let r = c.request(
        "OPTIONS",
        "/qst/q",
        &[
            ("Origin", "http://example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert!(r.status == 204 || r.status == 200, "{}", r.show());
    assert!(r.has_line("Access-Control-Allow-Origin: *"), "{}", r.show());
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{}",
        r.show()
    );
    // The preflight changed nothing.
    assert_eq!(c.pull("q", "").ids(), ["c-1"]);
}

#[test]
fn a_pull_of_1000_messages_comes_whole() {
    let server = start();
    let mut c = server.connect();
    let all = ids("big", 1200);
    for part in all.chunks(600) {
        let r = c.push("q", "text/xml", &xml_batch(&strs(part)));
        assert_eq!(r.status, 200, "{}", r.show());
    }
    let r = c.pull("q", "max=1000");
    assert_eq!(r.ids(), &all[..1000]);
    assert!(r.has_line("ETag: big-1000"), "{}", r.show());
    let r = c.pull("q", "max=1000&format=json");
    assert_eq!(r.ids(), &all[..1000]);
    assert_eq!(c.pull("q", "max=1000&etag=big-1000").ids(), &all[1000..]);
}

#[test]
fn a_chunked_push_is_accepted() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_batch(&["ch-1", "ch-2"]);
    let (a, b) = xml.split_at(xml.len() / 2);
    c.send(
        format!(
            "POST /qst/q HTTP/1.1\r\nHost: t\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: ch-2"), "{}", r.show());
    assert_eq!(c.pull("q", "").ids(), ["ch-1", "ch-2"]);
}

#[test]
fn a_pull_reply_larger_than_the_output_limit_is_still_delivered_whole() {
    // The output limit is for readers that do not keep up, not for one big answer.
    let server = start_with(|c| c.max_output_bytes = 16 * 1024);
    let mut c = server.connect();
    let body = "y".repeat(2000);
    let all = ids("o", 40);
    let xml = xml_doc(&all.iter().map(|id| xml_msg(id, &body)).collect::<String>());
    assert_eq!(c.push("q", "text/xml", &xml).status, 200);
    let r = c.pull("q", "max=40");
    assert!(r.body.len() > 64 * 1024, "{} bytes", r.body.len());
    let msgs = r.messages();
    assert_eq!(msgs.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), all);
    assert!(msgs
        .iter()
        .all(|m| m.body.as_deref() == Some(body.as_str())));
    assert_eq!(server.metrics().slow_readers_closed.get(), 0);
    // The connection goes on.
    assert!(c.pull("q", "etag=o-40").ids().is_empty());
}
