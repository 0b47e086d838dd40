//! QST pull (PROTOCOLS.md 1.4, 1.2a): `max` and `format`, never `304`, the `ETag` of a reply,
//! at-least-once redelivery, cumulative acknowledgement by `etag` or `If-None-Match` in every
//! form, and unknown cursors.

mod qst_support;

use qst_support::*;

/// Pushes messages `{prefix}-1`…`{prefix}-{n}` into `channel`; returns their ids.
fn fill(server: &TestServer, channel: &str, prefix: &str, n: usize) -> Vec<String> {
    let ids = ids(prefix, n);
    let r = server.push_xml(channel, &xml_batch(&strs(&ids)));
    assert_eq!(r.status, 200, "{}", r.show());
    ids
}

#[test]
fn an_empty_queue_answers_an_empty_list_with_200() {
    let server = start();
    let mut c = server.connect();
    let r = c.pull("q", "");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        r.header("Content-Type").unwrap().starts_with("text/xml"),
        "{}",
        r.show()
    );
    assert!(r.text().contains("<messages/>"), "{}", r.text());
    assert!(r.messages().is_empty());
    assert!(r.has_line("ETag: "), "an empty ETag value: {}", r.show());
    let r = c.pull("q", "format=json");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.text().trim(), "[]");
    assert_eq!(r.etag(), "");
}

#[test]
fn max_defaults_to_10() {
    let server = start();
    let all = fill(&server, "q", "m", 15);
    let r = server.pull("q", "");
    assert_eq!(r.ids(), &all[..10]);
    assert!(r.has_line("ETag: m-10"), "{}", r.show());
    // Nothing was acknowledged: the same ten come again, then the rest after the cursor.
    assert_eq!(server.pull("q", "").ids(), &all[..10]);
    assert_eq!(server.pull("q", "etag=m-10").ids(), &all[10..]);
}

#[test]
fn max_limits_the_reply_from_1_to_1000() {
    let server = start();
    let all = fill(&server, "q", "m", 15);
    assert_eq!(server.pull("q", "max=1").ids(), &all[..1]);
    assert_eq!(server.pull("q", "max=3").ids(), &all[..3]);
    assert_eq!(server.pull("q", "max=12").ids(), &all[..12]);
    assert_eq!(server.pull("q", "max=1000").ids(), all);
}

#[test]
fn max_out_of_range_or_not_a_number_is_400_and_acknowledges_nothing() {
    let server = start();
    let all = fill(&server, "q", "m", 3);
    for max in [
        "0",
        "1001",
        "abc",
        "-1",
        "",
        "1.5",
        "99999999999999999999999",
    ] {
        let r = server.pull("q", &format!("max={max}&etag=m-3"));
        assert_eq!(r.status, 400, "max={max}: {}", r.show());
        assert!(
            r.header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{}",
            r.show()
        );
    }
    assert_eq!(
        server.pull("q", "").ids(),
        all,
        "a refused pull acknowledged"
    );
    assert_eq!(server.metrics().qst_acked.get(), 0);
}

#[test]
fn format_is_xml_or_json_else_400() {
    let server = start();
    fill(&server, "q", "m", 2);
    let r = server.pull("q", "format=xml");
    assert!(r.header("Content-Type").unwrap().starts_with("text/xml"));
    assert_eq!(r.ids(), ["m-1", "m-2"]);
    let r = server.pull("q", "format=json");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.ids(), ["m-1", "m-2"]);
    for f in ["yaml", "", "html", "xml2"] {
        let r = server.pull("q", &format!("format={f}&etag=m-2"));
        assert_eq!(r.status, 400, "format={f}: {}", r.show());
    }
    assert_eq!(server.pull("q", "").ids(), ["m-1", "m-2"]);
}

#[test]
fn a_pull_is_never_304() {
    let server = start();
    let mut c = server.connect();
    fill(&server, "q", "m", 2);
    let r = c.pull("q", "");
    assert_eq!(r.etag(), "m-2");
    // The client echoes the ETag: acknowledged, nothing new, still 200 with an empty list.
    for _ in 0..2 {
        let r = c.request("GET", "/qst/q", &[("If-None-Match", "m-2")], b"");
        assert_eq!(r.status, 200, "{}", r.show());
        assert!(r.messages().is_empty());
        assert!(r.has_line("ETag: m-2"), "{}", r.show());
    }
    // Quoted, as a browser would send back an RFC ETag: also 200.
    let r = c.request("GET", "/qst/q", &[("If-None-Match", "\"m-2\"")], b"");
    assert_eq!(r.status, 200, "{}", r.show());
}

#[test]
fn the_etag_is_the_last_id_of_the_reply_or_the_last_acknowledged_one() {
    let server = start();
    let mut c = server.connect();
    fill(&server, "q", "m", 5);
    let r = c.pull("q", "max=2");
    assert!(r.has_line("ETag: m-2"), "{}", r.show());
    let r = c.pull("q", "max=2&etag=m-2");
    assert_eq!(r.ids(), ["m-3", "m-4"]);
    assert!(r.has_line("ETag: m-4"), "{}", r.show());
    let r = c.pull("q", "max=10&etag=m-4");
    assert_eq!(r.ids(), ["m-5"]);
    assert!(r.has_line("ETag: m-5"), "{}", r.show());
    let r = c.pull("q", "etag=m-5");
    assert!(r.ids().is_empty());
    assert!(
        r.has_line("ETag: m-5"),
        "empty reply: last acknowledged id: {}",
        r.show()
    );
    // Still so on the next pull without a cursor, in JSON too.
    let r = c.pull("q", "format=json");
    assert!(r.ids().is_empty());
    assert!(r.has_line("ETag: m-5"), "{}", r.show());
}

#[test]
fn unacknowledged_messages_are_redelivered_until_acknowledged() {
    let server = start();
    let mut c = server.connect();
    let all = fill(&server, "q", "m", 3);
    for _ in 0..3 {
        assert_eq!(c.pull("q", "").ids(), all);
    }
    assert_eq!(server.metrics().qst_acked.get(), 0);
    assert!(c.pull("q", "etag=m-3").ids().is_empty());
    assert_eq!(server.metrics().qst_acked.get(), 3);
    assert!(c.pull("q", "").ids().is_empty());
    // Later messages are delivered after the acknowledged ones, in order.
    let more = fill(&server, "q", "n", 2);
    assert_eq!(c.pull("q", "").ids(), more);
}

#[test]
fn a_cursor_in_the_middle_of_a_batch_acknowledges_only_up_to_it() {
    let server = start();
    let mut c = server.connect();
    let all = fill(&server, "q", "m", 5);
    assert_eq!(c.pull("q", "").ids(), all);
    let r = c.pull("q", "etag=m-3");
    assert_eq!(r.ids(), ["m-4", "m-5"]);
    assert_eq!(server.metrics().qst_acked.get(), 3);
    // m-4 and m-5 are still pending.
    assert_eq!(c.pull("q", "").ids(), ["m-4", "m-5"]);
    // An id below the cursor changes nothing.
    assert_eq!(c.pull("q", "etag=m-1").ids(), ["m-4", "m-5"]);
    assert_eq!(server.metrics().qst_acked.get(), 3);
}

#[test]
fn an_unknown_cursor_is_ignored() {
    let server = start();
    let mut c = server.connect();
    let all = fill(&server, "q", "m", 3);
    let r = c.pull("q", "etag=no-such-id");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.ids(), all);
    let r = c.request("GET", "/qst/q", &[("If-None-Match", "W/\"nope\"")], b"");
    assert_eq!(r.ids(), all);
    assert_eq!(server.metrics().qst_acked.get(), 0);
}

#[test]
fn if_none_match_acknowledges_in_bare_quoted_and_weak_forms() {
    let server = start();
    let mut c = server.connect();
    fill(&server, "q", "m", 4);
    let r = c.request("GET", "/qst/q", &[("If-None-Match", "m-1")], b"");
    assert_eq!(r.ids(), ["m-2", "m-3", "m-4"], "bare");
    let r = c.request("GET", "/qst/q", &[("If-None-Match", "\"m-2\"")], b"");
    assert_eq!(r.ids(), ["m-3", "m-4"], "quoted");
    let r = c.request("GET", "/qst/q", &[("If-None-Match", "W/\"m-3\"")], b"");
    assert_eq!(r.ids(), ["m-4"], "weak");
    assert_eq!(server.metrics().qst_acked.get(), 3);
}

#[test]
fn the_etag_parameter_accepts_quoted_and_weak_forms() {
    let server = start();
    let mut c = server.connect();
    fill(&server, "q", "m", 3);
    assert_eq!(
        c.pull("q", "etag=%22m-1%22").ids(),
        ["m-2", "m-3"],
        "quoted"
    );
    assert_eq!(c.pull("q", "etag=W%2F%22m-2%22").ids(), ["m-3"], "weak");
    assert!(c.pull("q", "etag=m-3").ids().is_empty(), "bare");
}

#[test]
fn pulls_keep_order_across_pushes_and_serve_on_one_keep_alive_connection() {
    let server = start();
    let mut c = server.connect();
    let mut expected = Vec::new();
    for batch in 0..4 {
        let ids = ids(&format!("b{batch}"), 3);
        let r = c.push("q", "text/xml", &xml_batch(&strs(&ids)));
        assert_eq!(r.status, 200);
        expected.extend(ids);
    }
    let mut got = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = c.pull("q", &format!("max=5&etag={cursor}"));
        let ids = r.ids();
        if ids.is_empty() {
            break;
        }
        cursor = r.etag().to_string();
        assert_eq!(&cursor, ids.last().unwrap());
        got.extend(ids);
    }
    assert_eq!(got, expected);
    assert_eq!(server.metrics().qst_acked.get(), 12);
}
