//! QST long-polling (PROTOCOLS.md 1.4, `long-polling=true`): a pull with nothing pending is
//! held until a message arrives (then answered at once) or the long-poll timeout passes (then
//! answered `200` with an empty list, never `304`); a push racing a long-poll is never lost.

mod qst_support;

use std::time::{Duration, Instant};

use qst_support::*;

/// A long-poll timeout long enough that "answered at once" and "answered at the timeout" are
/// far apart even on a loaded machine; tests using it end as soon as the push arrives.
const LONG: Duration = Duration::from_secs(3);
/// What "answered at once" allows: well below `LONG`.
const PROMPT: Duration = Duration::from_millis(1500);

#[test]
fn a_long_poll_is_held_until_a_push_arrives_from_another_connection() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    let mut waiter = server.connect();
    waiter.send_request("GET", "/qst/q?long-polling=true", &[], b"");
    server.wait_parked(1);
    waiter.expect_silence(Duration::from_millis(50));
    let pushed = Instant::now();
    let r = server.push_xml("q", &xml_batch(&["lp-1", "lp-2"]));
    assert_eq!(r.status, 200, "{}", r.show());
    let r = waiter.read_response();
    let took = pushed.elapsed();
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.ids(), ["lp-1", "lp-2"]);
    assert!(r.has_line("ETag: lp-2"), "{}", r.show());
    assert!(
        took < PROMPT,
        "answered {took:?} after the push, not at once"
    );
    assert_eq!(server.metrics().parked.get(), 0);
    // The connection is back to serving requests; the messages are still unacknowledged.
    assert_eq!(waiter.pull("q", "").ids(), ["lp-1", "lp-2"]);
}

#[test]
fn a_push_racing_a_long_poll_is_never_lost() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    let mut waiter = server.connect();
    let mut pusher = server.connect();
    let mut cursor = String::new();
    for i in 0..50 {
        let id = format!("race-{i}");
        let t0 = Instant::now();
        waiter.send_request(
            "GET",
            &format!("/qst/q?long-polling=true&etag={cursor}"),
            &[],
            b"",
        );
        let r = pusher.push("q", "text/xml", &xml_batch(&[&id]));
        assert_eq!(r.status, 200, "{}", r.show());
        let r = waiter.read_response();
        let took = t0.elapsed();
        assert_eq!(r.status, 200, "round {i}: {}", r.show());
        assert_eq!(r.ids(), [id.as_str()], "round {i}");
        assert!(
            took < PROMPT,
            "round {i}: the push was only seen at the long-poll timeout ({took:?})"
        );
        cursor = id;
    }
    assert_eq!(server.metrics().qst_acked.get(), 49);
}

#[test]
fn a_long_poll_with_nothing_arriving_answers_an_empty_list_at_the_timeout() {
    let timeout = Duration::from_millis(400);
    let server = start_with(|c| c.long_poll_timeout = timeout);
    let mut c = server.connect();
    let t0 = Instant::now();
    let r = c.pull("q", "long-polling=true");
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "never 304: {}", r.show());
    assert!(r.text().contains("<messages/>"), "{}", r.text());
    assert!(r.messages().is_empty());
    assert!(r.has_line("ETag: "), "{}", r.show());
    assert!(
        took >= timeout - Duration::from_millis(50),
        "answered after {took:?}, before the {timeout:?} timeout"
    );
    assert!(took < TIMEOUT, "{took:?}");
    // JSON, on the same keep-alive connection.
    let t0 = Instant::now();
    let r = c.pull("q", "long-polling=true&format=json");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.text().trim(), "[]");
    assert!(t0.elapsed() >= timeout - Duration::from_millis(50));
    assert!(server.metrics().long_poll_timeouts.get() >= 2);
    assert_eq!(server.metrics().parked.get(), 0);
}

#[test]
fn a_timed_out_long_poll_reports_the_last_acknowledged_id() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_millis(300));
    let mut c = server.connect();
    assert_eq!(server.push_xml("q", &xml_batch(&["a", "b"])).status, 200);
    assert_eq!(c.pull("q", "").ids(), ["a", "b"]);
    let r = c.pull("q", "long-polling=true&etag=b");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.messages().is_empty());
    assert!(r.has_line("ETag: b"), "{}", r.show());
}

#[test]
fn a_long_poll_with_messages_pending_answers_at_once() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    assert_eq!(server.push_xml("q", &xml_batch(&["a"])).status, 200);
    let t0 = Instant::now();
    let r = server.pull("q", "long-polling=true");
    assert_eq!(r.ids(), ["a"]);
    assert!(t0.elapsed() < PROMPT, "{:?}", t0.elapsed());
}

#[test]
fn a_long_poll_acknowledges_then_waits_for_the_next_message() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    assert_eq!(server.push_xml("q", &xml_batch(&["a", "b"])).status, 200);
    let mut waiter = server.connect();
    assert_eq!(waiter.pull("q", "").ids(), ["a", "b"]);
    waiter.send_request(
        "GET",
        "/qst/q?long-polling=true&etag=b&format=json",
        &[],
        b"",
    );
    server.wait_parked(1);
    assert_eq!(server.metrics().qst_acked.get(), 2);
    assert_eq!(
        server
            .push_json("q", r#"[{"id":"c","body":"next"}]"#)
            .status,
        200
    );
    let r = waiter.read_response();
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let msgs = r.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].id, "c");
    assert_eq!(msgs[0].body.as_deref(), Some("next"));
    assert!(r.has_line("ETag: c"), "{}", r.show());
}

#[test]
fn a_long_poll_answers_with_at_most_max_messages() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    let mut waiter = server.connect();
    waiter.send_request("GET", "/qst/q?long-polling=true&max=2", &[], b"");
    server.wait_parked(1);
    let all = ids("m", 5);
    assert_eq!(server.push_xml("q", &xml_batch(&strs(&all))).status, 200);
    let r = waiter.read_response();
    assert_eq!(r.ids(), &all[..2]);
}

#[test]
fn a_client_leaving_a_long_poll_loses_nothing() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    let mut waiter = server.connect();
    waiter.send_request("GET", "/qst/q?long-polling=true", &[], b"");
    server.wait_parked(1);
    drop(waiter);
    server.wait_parked(0);
    assert_eq!(server.push_xml("q", &xml_batch(&["kept"])).status, 200);
    assert_eq!(server.pull("q", "").ids(), ["kept"]);
}

#[test]
fn a_v1_long_poll_answers_in_the_v1_format() {
    let server = start_with(|c| c.long_poll_timeout = LONG);
    let mut gateway = server.connect();
    gateway.send_request("GET", "/acme/qst/outgoing?long-polling=true", &[], b"");
    server.wait_parked(1);
    let xml = xml_doc(
        r#"<message id="mt-1" from="sms://app" to="sms://1"><subject>S</subject><body>B</body></message>"#,
    );
    assert_eq!(server.push_xml("acme/outgoing", &xml).status, 200);
    let r = gateway.read_response();
    let msgs = r.messages();
    assert_eq!(msgs.len(), 1, "{}", r.show());
    assert_eq!(msgs[0].text.as_deref(), Some("S - B"), "{}", r.text());
    assert_eq!(msgs[0].body, None);
}
