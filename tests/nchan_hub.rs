//! nchan's `/pub/` and `/sub/` on the one hub (PROTOCOLS.md 5), over raw TCP: a `/pub/`
//! message reaches a Talk stream, a comet get, a QST pull and an XMPP PubSub subscriber of
//! the channel; messages from Talk, comet and QST reach `/sub/` subscribers as
//! `text/plain` (they have no content type of their own).

#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use xmpp_support::*;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// `POST /pub/{ch}`; the message id from the plain info.
fn nchan_publish(server: &TestServer, ch: &str, headers: &[(&str, &str)], body: &str) -> String {
    let r = server.request(&request_bytes(
        "POST",
        &format!("/pub/{ch}"),
        headers,
        body.as_bytes(),
    ));
    assert!(r.status == 201 || r.status == 202, "{}", r.show());
    r.text()
        .rsplit("last message id: ")
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_pub_message_reaches_talk_comet_qst_and_xmpp() {
    let server = xmpp(|c| c.long_poll_timeout = std::time::Duration::from_secs(2));
    // An XMPP session subscribed to the node `hub`.
    let jid = "user@localhost/r";
    let mut x = session(&server, "user", "secret", "r");
    x.send(format!("<iq type='set' to='localhost' id='s1'><pubsub xmlns='{PUBSUB}'><subscribe node='hub' jid='{jid}'/></pubsub></iq>").as_bytes());
    let r = text(x.read_until(b"</iq>", TIMEOUT));
    assert!(r.contains("subscription='subscribed'"), "{r}");
    // A Talk stream and a parked comet get.
    let mut talk = server.pull("/pull?name=t&channel=hub", true);
    let clock = {
        let r = server.get("/comet?method=sync&channel=hub");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["time"].as_u64().unwrap()
    };
    let mut comet = server.connect();
    comet.send(&get(&format!("/comet?method=get&channel=hub&time={clock}")));
    server.wait_parked(1);

    let id = nchan_publish(
        &server,
        "hub",
        &[("Content-Type", "text/plain"), ("X-EventSource-Event", "e")],
        "from nchan <&>",
    );
    assert_eq!(talk.next_text(), "from nchan <&>");
    let r = comet.read_response();
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("comet JSON");
    assert_eq!(v["messages"][0]["data"], "from nchan <&>", "{v}");
    let (time, tag) = id.split_once(':').unwrap();
    let seq = time.parse::<u64>().unwrap() * 1000 + tag.parse::<u64>().unwrap();
    assert_eq!(
        v["messages"][0]["time"], seq,
        "comet's time is the hub seq: {v}"
    );
    let ev = text(x.read_until(b"</event></message>", TIMEOUT));
    assert!(ev.contains(">from nchan &lt;&amp;&gt;</message>"), "{ev}");
    // QST pulls it from the retained messages (the channel becomes a queue).
    let r = server.get("/qst/hub");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        r.text().contains("from nchan &lt;&amp;&gt;"),
        "{}",
        r.text()
    );
}

/// Talk, comet and QST messages reach `/sub/` long-poll and EventSource subscribers; they
/// have no content type, so the long-poll answer says `text/plain` (issue 12).
#[test]
fn talk_comet_and_qst_messages_reach_sub() {
    let server = start();
    let mut es = server.connect();
    es.send_request("GET", "/sub/x", &[("Accept", "text/event-stream")], b"");
    let head = es.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(es.read_chunk(), Some(b": hi\n\n".to_vec()));

    let sources: [(&str, Vec<u8>); 3] = [
        ("talk", get("/push?channel=x&name=talker&message=from+talk")),
        ("comet", get("/comet?method=put&channel=x&message=from%20comet")),
        (
            "qst",
            post(
                "/qst/x",
                "text/xml",
                br#"<?xml version="1.0" encoding="UTF-8"?><messages><message id="m1"><text>from qst</text></message></messages>"#,
            ),
        ),
    ];
    let mut cursor: Option<(String, String)> = None;
    for (what, req) in sources {
        let mut lp = server.connect();
        let headers: Vec<(&str, &str)> = cursor
            .iter()
            .flat_map(|(lm, etag)| {
                [
                    ("If-Modified-Since", lm.as_str()),
                    ("If-None-Match", etag.as_str()),
                ]
            })
            .collect();
        lp.send_request("GET", "/sub/x", &headers, b"");
        server.wait_parked(1);
        assert_eq!(server.request(&req).status, 200, "{what}");
        let r = lp.read_response();
        let body = format!("from {what}");
        assert_eq!(r.status, 200, "{what}: {}", r.show());
        assert_eq!(r.text(), body);
        assert_eq!(
            r.header("Content-Type"),
            Some("text/plain"),
            "{what}: {}",
            r.show()
        );
        let lm = r
            .header("Last-Modified")
            .expect("Last-Modified")
            .to_string();
        let etag = r.header("Etag").expect("Etag").to_string();
        let record = String::from_utf8(es.read_chunk().unwrap()).unwrap();
        assert!(
            record.starts_with("id: ") && record.ends_with(&format!("\ndata: {body}\n\n")),
            "{what}: {record:?}"
        );
        assert!(
            record.contains(&format!(":{etag}\n")),
            "{what}: the same id: {record:?}"
        );
        cursor = Some((lm, etag));
    }
}
