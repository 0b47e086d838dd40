//! QST and the other protocols on one hub (PROTOCOLS.md 0, 0.2): a QST push is streamed to
//! Talk clients and read by comet clients; Talk pushes, comet puts and messages published by
//! an embedding program are pulled from the QST queue, and wake a parked QST long-poll.

mod qst_support;

use std::time::{Duration, Instant};

use qst_support::*;
use tidings::Draft;

#[test]
fn a_qst_push_is_seen_by_a_talk_stream_on_the_same_channel() {
    let server = start();
    let mut stream = talk_stream(&server, "watcher", "q", None);
    let xml = xml_doc(&format!(
        "{}{}",
        xml_msg("x-1", "first"),
        xml_msg("x-2", "second &amp; more")
    ));
    assert_eq!(server.push_xml("q", &xml).status, 200);
    assert_eq!(stream.next_text(), "first");
    assert_eq!(stream.next_text(), "second & more");
    assert_eq!(
        server
            .push_json("q", r#"[{"id":"j-1","subject":"s","body":"from json"}]"#)
            .status,
        200
    );
    assert_eq!(stream.next_text(), "from json", "the record is the body");
}

#[test]
fn a_talk_push_is_pulled_by_qst_with_the_sender_as_from() {
    let server = start();
    let r = talk_push(&server, "name=alice&channel=q&message=hi+there", None);
    assert_eq!(r.status, 200, "{}", r.show());
    let r = talk_push(&server, "name=carol&channel=q&message=direct&to=bob", None);
    assert_eq!(r.status, 200, "{}", r.show());
    for format in ["xml", "json"] {
        let msgs = server.pull("q", &format!("format={format}")).messages();
        assert_eq!(msgs.len(), 2, "{format}");
        assert_eq!(msgs[0].body.as_deref(), Some("hi there"));
        assert_eq!(msgs[0].from, "alice");
        assert_eq!(msgs[0].to, "");
        assert!(!msgs[0].id.is_empty(), "a server id");
        assert!(is_utc_z(&msgs[0].when), "{:?}", msgs[0].when);
        assert_eq!(msgs[1].body.as_deref(), Some("direct"));
        assert_eq!(msgs[1].from, "carol");
        assert_eq!(msgs[1].to, "bob");
        assert_ne!(msgs[0].id, msgs[1].id);
    }
}

#[test]
fn a_talk_push_into_a_queue_is_kept_until_acknowledged() {
    let server = start();
    let mut c = server.connect();
    assert!(c.pull("q", "").ids().is_empty());
    let r = talk_push(&server, "name=alice&channel=q&message=queued", None);
    assert_eq!(r.status, 200, "{}", r.show());
    let r = c.pull("q", "");
    let ids = r.ids();
    assert_eq!(ids.len(), 1);
    assert_eq!(r.etag(), ids[0]);
    // HEAD names it as the last message pushed into the channel.
    assert_eq!(server.head_etag("q"), ids[0]);
    assert_eq!(c.pull("q", "").ids(), ids, "redelivered until acknowledged");
    assert!(c.pull("q", &format!("etag={}", ids[0])).ids().is_empty());
}

#[test]
fn a_comet_put_is_pulled_by_qst() {
    let server = start();
    let r = server
        .connect()
        .get("/comet?method=put&channel=q&message=hello");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.text().contains("\"time\":"), "{}", r.text());
    let msgs = server.pull("q", "").messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body.as_deref(), Some("hello"));
    assert_eq!((msgs[0].from.as_str(), msgs[0].to.as_str()), ("", ""));
    assert!(is_utc_z(&msgs[0].when));
}

#[test]
fn a_qst_push_is_read_by_a_comet_get() {
    let server = start();
    assert_eq!(
        server
            .push_xml("q", &xml_doc(&xml_msg("c-1", "for comet")))
            .status,
        200
    );
    let r = server.connect().get("/comet?method=get&channel=q&time=0");
    assert_eq!(r.status, 200, "{}", r.show());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["messages"][0]["data"], "for comet", "{v}");
}

#[test]
fn a_message_published_by_the_embedding_program_is_pulled_by_qst() {
    let server = start();
    server
        .handle
        .publish("q", Draft::with_body("door open"))
        .expect("publish");
    let msgs = server.pull("q", "").messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body.as_deref(), Some("door open"));
}

#[test]
fn talk_and_comet_pushes_wake_a_parked_qst_long_poll() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_secs(3));
    let mut waiter = server.connect();
    let mut cursor = String::new();
    for (i, how) in ["talk", "comet", "embedded"].into_iter().enumerate() {
        waiter.send_request(
            "GET",
            &format!("/qst/q?long-polling=true&etag={cursor}"),
            &[],
            b"",
        );
        assert!(
            wait_for(TIMEOUT, || server.metrics().parked.get() == 1),
            "the long-poll parks"
        );
        let t0 = Instant::now();
        let body = format!("via-{how}-{i}");
        match how {
            "talk" => {
                let r = talk_push(
                    &server,
                    &format!("name=alice&channel=q&message={body}"),
                    None,
                );
                assert_eq!(r.status, 200, "{}", r.show());
            }
            "comet" => {
                let r = server
                    .connect()
                    .get(&format!("/comet?method=put&channel=q&message={body}"));
                assert_eq!(r.status, 200, "{}", r.show());
            }
            _ => {
                server
                    .handle
                    .publish("q", Draft::with_body(body.clone()))
                    .unwrap();
            }
        }
        let r = waiter.read_response();
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{how}: answered only at the timeout"
        );
        let msgs = r.messages();
        assert_eq!(msgs.len(), 1, "{how}: {}", r.show());
        assert_eq!(msgs[0].body.as_deref(), Some(body.as_str()), "{how}");
        cursor = msgs[0].id.clone();
        assert_eq!(r.etag(), cursor);
    }
}

#[test]
fn a_talk_message_that_is_not_utf8_still_pulls_as_well_formed_xml_and_json() {
    let server = start();
    let r = talk_push(&server, "name=bin&channel=q&message=ok%FF%FEend", None);
    assert_eq!(r.status, 200, "{}", r.show());
    for format in ["xml", "json"] {
        let r = server.pull("q", &format!("format={format}"));
        // `messages` parses the reply strictly: well-formed, UTF-8, every field present.
        let msgs = r.messages();
        assert_eq!(msgs.len(), 1, "{format}");
        let body = msgs[0].body.as_deref().unwrap();
        assert!(
            body.starts_with("ok") && body.ends_with("end"),
            "{format}: {body:?}"
        );
        assert_eq!(msgs[0].from, "bin");
    }
}
