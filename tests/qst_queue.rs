//! QST queue state (PROTOCOLS.md 0.2, 1.3, 1.4): a full queue refuses a whole batch with `503`
//! and `Retry-After` and loses nothing; a queue keeps every unacknowledged message past the
//! channel's retention; `--qst-max-tries` caps deliveries.

mod qst_support;

use qst_support::*;

#[test]
fn a_full_queue_refuses_the_whole_batch_with_503_and_retry_after() {
    let server = start_with(|c| c.queue_capacity = 5);
    let mut c = server.connect();
    let r = c.push("q", "text/xml", &xml_batch(&["a", "b", "c"]));
    assert_eq!(r.status, 200, "{}", r.show());
    let r = c.push("q", "text/xml", &xml_batch(&["d", "e", "f"]));
    assert_eq!(r.status, 503, "3 + 3 > 5: {}", r.show());
    let retry = r
        .header("Retry-After")
        .unwrap_or_else(|| panic!("{}", r.show()));
    assert!(
        retry.trim().parse::<u64>().is_ok(),
        "Retry-After: {retry:?}"
    );
    assert!(
        r.header("Content-Type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{}",
        r.show()
    );
    assert_eq!(server.metrics().queue_full.get(), 1);
    // Nothing of the refused batch is stored; the pusher resumes from c.
    assert_eq!(c.pull("q", "max=100").ids(), ["a", "b", "c"]);
    assert_eq!(server.head_etag("q"), "c");
    // JSON is refused the same way.
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"d"},{"id":"e"},{"id":"f"}]"#,
    );
    assert_eq!(r.status, 503, "{}", r.show());
    // Acknowledging makes room: the same batch now goes in whole.
    assert_eq!(c.pull("q", "etag=b").ids(), ["c"]);
    let r = c.push("q", "text/xml", &xml_batch(&["d", "e", "f"]));
    assert_eq!(r.status, 200, "1 + 3 <= 5: {}", r.show());
    assert!(r.has_line("ETag: f"), "{}", r.show());
    assert_eq!(c.pull("q", "max=100").ids(), ["c", "d", "e", "f"]);
}

#[test]
fn a_queue_fills_exactly_to_its_capacity() {
    let server = start_with(|c| c.queue_capacity = 5);
    let mut c = server.connect();
    assert_eq!(
        c.push("q", "text/xml", &xml_batch(&["a", "b", "c"])).status,
        200
    );
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["d", "e"])).status, 200);
    let r = c.push("q", "text/xml", &xml_batch(&["f"]));
    assert_eq!(r.status, 503, "{}", r.show());
    assert!(r.header("Retry-After").is_some(), "{}", r.show());
    // A retried push of ids the queue already holds adds nothing and is still a success.
    let r = c.push("q", "text/xml", &xml_batch(&["d", "e"]));
    assert_eq!(
        r.status,
        200,
        "an idempotent retry into a full queue: {}",
        r.show()
    );
    assert_eq!(c.pull("q", "max=100").ids(), ["a", "b", "c", "d", "e"]);
}

#[test]
fn messages_from_other_protocols_count_and_are_refused_on_a_full_queue() {
    let server = start_with(|c| c.queue_capacity = 2);
    let mut c = server.connect();
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["a", "b"])).status, 200);
    let r = talk_push(&server, "name=alice&channel=q&message=overflow", None);
    assert_eq!(r.status, 503, "{}", r.show());
    assert!(r.header("Retry-After").is_some(), "{}", r.show());
    assert_eq!(c.pull("q", "").ids(), ["a", "b"]);
}

#[test]
fn a_queue_keeps_unacknowledged_messages_beyond_the_channel_capacity() {
    let server = start_with(|c| c.channel_capacity = 3);
    let mut c = server.connect();
    // The channel becomes a queue with its first push.
    let all = ids("m", 10);
    for id in &all[..4] {
        assert_eq!(c.push("q", "text/xml", &xml_batch(&[id])).status, 200);
    }
    assert_eq!(
        c.push("q", "text/xml", &xml_batch(&strs(&all[4..]))).status,
        200
    );
    let r = c.pull("q", "max=100");
    assert_eq!(r.ids(), all, "every unacknowledged message, in order");
    assert_eq!(server.metrics().messages_dropped_retention.get(), 0);
    // After acknowledging, they are all gone for the consumer.
    assert!(c.pull("q", "etag=m-10").ids().is_empty());
    assert_eq!(server.metrics().qst_acked.get(), 10);
}

#[test]
fn a_queue_that_was_pulled_first_keeps_later_messages_beyond_the_capacity() {
    let server = start_with(|c| c.channel_capacity = 3);
    let mut c = server.connect();
    // The consumer pulls first: the channel becomes a queue before anything arrives.
    assert!(c.pull("q", "").ids().is_empty());
    for i in 1..=10 {
        let r = talk_push(
            &server,
            &format!("name=alice&channel=q&message=talk-{i}"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.show());
    }
    let msgs = c.pull("q", "max=100").messages();
    let bodies: Vec<String> = msgs.iter().map(|m| m.body.clone().unwrap()).collect();
    let want: Vec<String> = (1..=10).map(|i| format!("talk-{i}")).collect();
    assert_eq!(bodies, want);
}

#[test]
fn max_tries_drops_a_message_after_that_many_deliveries() {
    let server = start_with(|c| c.qst_max_tries = 2);
    let mut c = server.connect();
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["a", "b"])).status, 200);
    assert_eq!(c.pull("q", "max=1").ids(), ["a"], "first delivery");
    assert_eq!(c.pull("q", "max=1").ids(), ["a"], "second delivery");
    assert_eq!(server.metrics().qst_expired.get(), 0);
    assert_eq!(
        c.pull("q", "max=1").ids(),
        ["b"],
        "a expired after 2 deliveries"
    );
    assert_eq!(server.metrics().qst_expired.get(), 1);
    assert_eq!(c.pull("q", "max=1&etag=b").ids(), Vec::<String>::new());
    assert_eq!(server.metrics().qst_acked.get(), 1);
    assert_eq!(server.metrics().qst_expired.get(), 1);
    // An expired message never comes back.
    assert!(c.pull("q", "max=100").ids().is_empty());
}

#[test]
fn max_tries_expires_a_whole_unacknowledged_batch() {
    let server = start_with(|c| c.qst_max_tries = 2);
    let mut c = server.connect();
    assert_eq!(
        c.push("q", "text/xml", &xml_batch(&["a", "b", "c"])).status,
        200
    );
    assert_eq!(c.pull("q", "").ids(), ["a", "b", "c"]);
    assert_eq!(c.pull("q", "").ids(), ["a", "b", "c"]);
    assert!(c.pull("q", "").ids().is_empty());
    assert_eq!(server.metrics().qst_expired.get(), 3);
    // The queue makes room again.
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["d"])).status, 200);
    assert_eq!(c.pull("q", "").ids(), ["d"]);
}

#[test]
fn without_max_tries_a_message_is_delivered_forever() {
    let server = start();
    let mut c = server.connect();
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["a"])).status, 200);
    for _ in 0..20 {
        assert_eq!(c.pull("q", "").ids(), ["a"]);
    }
    assert_eq!(server.metrics().qst_expired.get(), 0);
}
