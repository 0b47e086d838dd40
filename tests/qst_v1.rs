//! QST v1 compatibility (PROTOCOLS.md 1.1, 1.2, 1.4, 1.4a): the exact cycle of InSTEDD's Java
//! gateway on one keep-alive connection with preemptive Basic credentials, the Crystal
//! simulator's `.xml` URLs, `<text>` output, and v1 `{"confirmed":…,"failed":…}` bodies.

mod qst_support;

use qst_support::*;

const CREDENTIALS: &str = "# the gateway's account\nacme:s3cret acme/*\n";

fn acme() -> String {
    basic("acme", "s3cret")
}

/// A request on the gateway's connection, with its preemptive `Authorization`.
fn gw(
    c: &mut Client,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let auth = acme();
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let r = c.request(method, target, &all, body.as_bytes());
    assert!(
        r.header("Connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close")),
        "the gateway's keep-alive connection was closed: {}",
        r.show()
    );
    r
}

/// What the Java gateway posts: `standalone="yes"`, `to` before `from`, `<text>`.
fn gateway_incoming(msgs: &[(&str, &str)]) -> String {
    let mut s = String::from(GATEWAY_DECL);
    s.push_str("<messages>");
    for (id, text) in msgs {
        s.push_str(&format!(
            r#"<message id="{id}" to="sms://app" from="sms://5550002" when="2010-01-01T23:18:53Z"><text>{text}</text></message>"#
        ));
    }
    s.push_str("</messages>");
    s
}

#[test]
fn the_java_gateway_cycle_on_one_keep_alive_connection() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    let auth = acme();
    let app_auth = [("Authorization", auth.as_str())];
    let mut app = server.connect();

    // The application queues three messages for the gateway: with subject and body, body
    // only, and neither.
    let outgoing = xml_doc(
        r#"<message id="mt-1" from="sms://app" to="sms://5550002"><subject>Subj</subject><body>Hello</body></message>
           <message id="mt-2" from="sms://app" to="sms://5550003"><body>Plain &amp; simple</body></message>
           <message id="mt-3"/>"#,
    );
    let r = app.request(
        "POST",
        "/qst/acme/outgoing",
        &[app_auth[0], ("Content-Type", "text/xml")],
        outgoing.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());

    // The gateway's cycle, request by request, on one connection.
    let mut g = server.connect();
    let r = gw(
        &mut g,
        "GET",
        "/acme/qst/setaddress?address=sms://5550001",
        &[],
        "",
    );
    assert_eq!(r.status, 200, "setaddress: {}", r.show());

    let r = gw(&mut g, "HEAD", "/acme/qst/incoming", &[], "");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: "), "nothing pushed yet: {}", r.show());
    assert!(r.body.is_empty());

    let incoming = gateway_incoming(&[("mo-1", "hello"), ("mo-2", "second &amp; last")]);
    let r = gw(
        &mut g,
        "POST",
        "/acme/qst/incoming",
        &[("Content-Type", "text/xml")],
        &incoming,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        r.has_line("ETag: mo-2"),
        "the gateway deletes up to this raw value: {}",
        r.show()
    );

    let r = gw(&mut g, "GET", "/acme/qst/outgoing?max=10", &[], "");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.header("Content-Type").unwrap().starts_with("text/xml"));
    assert!(
        !r.text().contains("<body"),
        "v1 output has no <body>: {}",
        r.text()
    );
    let msgs = r.messages();
    assert_eq!(
        msgs.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["mt-1", "mt-2", "mt-3"]
    );
    let texts: Vec<&str> = msgs.iter().map(|m| m.text.as_deref().unwrap()).collect();
    assert_eq!(texts, ["Subj - Hello", "Plain & simple", ""]);
    assert_eq!(msgs[0].from, "sms://app");
    assert_eq!(msgs[0].to, "sms://5550002");
    for m in &msgs {
        assert!(is_utc_z(&m.when), "{:?}", m.when);
        assert_eq!((m.subject.as_ref(), m.body.as_ref()), (None, None));
    }
    assert_eq!(msgs[2].from, "");
    assert_eq!(msgs[2].to, "");
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());

    let r = gw(
        &mut g,
        "GET",
        "/acme/qst/outgoing?max=10",
        &[("If-None-Match", "mt-3")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.messages().is_empty());
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());
    assert_eq!(server.metrics().qst_acked.get(), 3);

    // The application reads what the gateway pushed, as v2.
    let r = app.request("GET", "/qst/acme/incoming", &app_auth, b"");
    let msgs = r.messages();
    assert_eq!(msgs.len(), 2, "{}", r.show());
    assert_eq!(msgs[0].id, "mo-1");
    assert_eq!(msgs[0].body.as_deref(), Some("hello"));
    assert_eq!(msgs[0].text, None);
    assert_eq!(msgs[0].from, "sms://5550002");
    assert_eq!(msgs[0].to, "sms://app");
    assert_eq!(msgs[0].when, "2010-01-01T23:18:53Z");
    assert_eq!(msgs[1].body.as_deref(), Some("second & last"));
    let r = app.request("GET", "/qst/acme/incoming?etag=mo-2", &app_auth, b"");
    assert!(r.messages().is_empty());

    // The next cycle: the gateway resumes after mo-2 and finds nothing to deliver.
    let r = gw(
        &mut g,
        "GET",
        "/acme/qst/setaddress?address=sms://5550001",
        &[],
        "",
    );
    assert_eq!(r.status, 200);
    let r = gw(&mut g, "HEAD", "/acme/qst/incoming", &[], "");
    assert!(r.has_line("ETag: mo-2"), "{}", r.show());
    let r = gw(
        &mut g,
        "POST",
        "/acme/qst/incoming",
        &[("Content-Type", "text/xml")],
        &gateway_incoming(&[("mo-3", "third")]),
    );
    assert!(r.has_line("ETag: mo-3"), "{}", r.show());
    let r = gw(&mut g, "GET", "/acme/qst/outgoing?max=10", &[], "");
    assert!(r.messages().is_empty());
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());
    let r = app.request("GET", "/qst/acme/incoming", &app_auth, b"");
    assert_eq!(r.ids(), ["mo-3"]);
}

#[test]
fn get_incoming_reports_the_last_id_like_head() {
    let server = start();
    let mut c = server.connect();
    let r = c.get("/acme/qst/incoming");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: "), "{}", r.show());
    let r = c.request(
        "POST",
        "/acme/qst/incoming",
        &[("Content-Type", "text/xml")],
        gateway_incoming(&[("mo-7", "x")]).as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = c.get("/acme/qst/incoming");
    assert!(r.has_line("ETag: mo-7"), "{}", r.show());
    let r = c.request("HEAD", "/acme/qst/incoming.xml", &[], b"");
    assert!(r.has_line("ETag: mo-7"), "{}", r.show());
    assert_eq!(server.head_etag("acme/incoming"), "mo-7");
}

#[test]
fn the_crystal_simulator_urls() {
    let server = start();
    let mut sim = server.connect();
    // Pushes without `when`: the server's time.
    let body = format!(
        r#"{GATEWAY_DECL}<messages><message id="cr-1" from="sms://1" to="sms://2"><text>no time</text></message></messages>"#
    );
    let before = unix_now();
    let r = sim.request(
        "POST",
        "/acme/qst/incoming.xml",
        &[("Content-Type", "text/xml")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: cr-1"), "{}", r.show());
    let after = unix_now();
    let m = &server.pull("acme/incoming", "").messages()[0];
    assert_eq!(m.body.as_deref(), Some("no time"));
    let t = utc_z_to_unix(&m.when);
    assert!(before <= t && t <= after, "{before} <= {t} <= {after}");

    // Pulls up to 100 at once.
    let all = ids("mt", 15);
    assert_eq!(
        server
            .push_xml("acme/outgoing", &xml_batch(&strs(&all)))
            .status,
        200
    );
    let r = sim.get("/acme/qst/outgoing.xml?max=100");
    assert_eq!(r.status, 200, "{}", r.show());
    let msgs = r.messages();
    assert_eq!(msgs.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), all);
    for m in &msgs {
        assert_eq!(
            m.text.as_deref(),
            Some(format!("body of {}", m.id).as_str())
        );
        assert_eq!(
            (m.from.as_str(), m.to.as_str()),
            ("sms://1000", "sms://2000")
        );
    }
    let r = sim.request(
        "GET",
        "/acme/qst/outgoing.xml?max=100",
        &[("If-None-Match", "mt-15")],
        b"",
    );
    assert!(r.messages().is_empty());
}

#[test]
fn a_v1_pull_defaults_to_10_messages() {
    let server = start();
    let all = ids("mt", 15);
    assert_eq!(
        server
            .push_xml("acme/outgoing", &xml_batch(&strs(&all)))
            .status,
        200
    );
    let r = server.connect().get("/acme/qst/outgoing");
    assert_eq!(r.ids(), &all[..10]);
}

#[test]
fn v1_confirmed_and_failed_ids_leave_the_queue() {
    let server = start();
    let all = ids("mt", 4);
    assert_eq!(
        server
            .push_xml("acme/outgoing", &xml_batch(&strs(&all)))
            .status,
        200
    );
    let mut g = server.connect();
    assert_eq!(g.get("/acme/qst/outgoing").ids(), all);
    let r = g.request(
        "POST",
        "/acme/qst/outgoing",
        &[("Content-Type", "application/json")],
        br#"{"confirmed":["mt-1","mt-3"],"failed":["mt-2"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.ids(), ["mt-4"], "the reply is the next pull");
    assert_eq!(server.metrics().qst_acked.get(), 2);
    assert_eq!(server.metrics().qst_failed.get(), 1);
    assert_eq!(g.get("/acme/qst/outgoing").ids(), ["mt-4"]);
    // Confirming an id twice, or an unknown one, changes nothing.
    let r = g.request(
        "POST",
        "/acme/qst/outgoing.xml",
        &[],
        br#"{"confirmed":["mt-1","nope"]}"#,
    );
    assert_eq!(r.ids(), ["mt-4"]);
    assert_eq!(server.metrics().qst_acked.get(), 2);
    let r = g.request("POST", "/acme/qst/outgoing", &[], br#"{"failed":["mt-4"]}"#);
    assert!(r.ids().is_empty());
    assert_eq!(server.metrics().qst_failed.get(), 2);
    assert!(server.pull("acme/outgoing", "").ids().is_empty());
}

/// PROTOCOLS.md 1.4: an empty pull carries the id of the last acknowledged message, and a v1
/// `confirmed` id is acknowledged as much as a cumulative `etag` is. A failed id is not.
#[test]
fn after_v1_confirmations_an_empty_pull_still_carries_the_last_acknowledged_id() {
    let server = start();
    let all = ids("mt", 4);
    assert_eq!(
        server
            .push_xml("acme/outgoing", &xml_batch(&strs(&all)))
            .status,
        200
    );
    let mut g = server.connect();
    assert_eq!(g.get("/acme/qst/outgoing").ids(), all);
    let r = g.request(
        "POST",
        "/acme/qst/outgoing",
        &[("Content-Type", "application/json")],
        br#"{"confirmed":["mt-1","mt-2","mt-3"],"failed":["mt-4"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.ids().is_empty(), "{}", r.show());
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());
    // The next empty pull, with no acknowledgement at all, says the same.
    let r = g.get("/acme/qst/outgoing");
    assert!(r.ids().is_empty(), "{}", r.show());
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());
    // Echoing it back (as the Java gateway does with If-None-Match) changes nothing.
    let r = g.request(
        "GET",
        "/acme/qst/outgoing",
        &[("If-None-Match", "mt-3")],
        b"",
    );
    assert!(r.ids().is_empty(), "{}", r.show());
    assert!(r.has_line("ETag: mt-3"), "{}", r.show());
    assert_eq!(server.metrics().qst_acked.get(), 3);
    assert_eq!(server.metrics().qst_failed.get(), 1);

    // Confirmed out of order: the last acknowledged message is the latest in the queue.
    let more = ids("mu", 3);
    server.push_xml("acme/outgoing", &xml_batch(&strs(&more)));
    let r = g.request(
        "POST",
        "/acme/qst/outgoing",
        &[],
        br#"{"confirmed":["mu-3","mu-1"]}"#,
    );
    assert_eq!(r.ids(), ["mu-2"], "{}", r.show());
    assert!(r.has_line("ETag: mu-2"), "{}", r.show());
    let r = g.request(
        "POST",
        "/acme/qst/outgoing",
        &[],
        br#"{"confirmed":["mu-2"]}"#,
    );
    assert!(r.ids().is_empty(), "{}", r.show());
    assert!(r.has_line("ETag: mu-3"), "{}", r.show());
}

#[test]
fn a_malformed_confirmations_body_is_400_and_acknowledges_nothing() {
    let server = start();
    let all = ids("mt", 3);
    assert_eq!(
        server
            .push_xml("acme/outgoing", &xml_batch(&strs(&all)))
            .status,
        200
    );
    let mut g = server.connect();
    for body in [
        "not json",
        r#"{"confirmed":"mt-1"}"#,
        r#"{"confirmed":[1,2]}"#,
        r#"["mt-1"]"#,
        r#"{"confirmed":["mt-1"],"failed":["mt-2"]"#,
    ] {
        let r = g.request(
            "POST",
            "/acme/qst/outgoing",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.show());
        assert!(
            r.header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{}",
            r.show()
        );
    }
    assert_eq!(g.get("/acme/qst/outgoing").ids(), all);
    assert_eq!(server.metrics().qst_acked.get(), 0);
    assert_eq!(server.metrics().qst_failed.get(), 0);
}

#[test]
fn v1_and_v2_endpoints_share_one_channel() {
    let server = start();
    let mut c = server.connect();
    // A v2 push to acme/incoming is a v1 incoming message, and the other way round.
    assert_eq!(
        c.push("acme/incoming", "text/xml", &xml_batch(&["v2-1"]))
            .status,
        200
    );
    let r = c.request(
        "POST",
        "/acme/qst/incoming",
        &[("Content-Type", "text/xml")],
        gateway_incoming(&[("v1-1", "t")]).as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(c.pull("acme/incoming", "").ids(), ["v2-1", "v1-1"]);
    // A percent-encoded slash names the same channel.
    assert_eq!(c.pull("acme%2Fincoming", "").ids(), ["v2-1", "v1-1"]);
}
