//! PubSub on the hub for XMPP sessions (PROTOCOLS.md 4.4), over raw TCP: every hub channel is
//! a node; a message from any protocol reaches a subscribed session as one event; an XMPP
//! publish reaches Talk streams and comet gets; forbidden nodes change nothing; items are
//! retrieved; unsubscribing stops the events.

#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tidings::Draft;
use xmpp_support::*;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

fn subscribe(c: &mut Client, node: &str, jid: &str) -> String {
    c.send(format!("<iq type='set' to='localhost' id='s-{node}'><pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub></iq>").as_bytes());
    text(c.read_until(b"</iq>", TIMEOUT))
}

/// The next event stanza's item payload, checking the event's frame.
fn next_event(c: &mut Client, node: &str, jid: &str) -> (String, String) {
    let ev = text(c.read_until(b"</event></message>", TIMEOUT));
    let head = format!("<message from='localhost' to='{jid}' id='");
    assert!(ev.starts_with(&head), "{ev}");
    let frame = format!(
        "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{node}'><item id='"
    );
    let after = ev
        .split(&frame)
        .nth(1)
        .unwrap_or_else(|| panic!("no items frame: {ev}"));
    let (id, rest) = after.split_once("'>").unwrap();
    let payload = rest
        .strip_suffix("</item></items></event></message>")
        .unwrap();
    (id.to_string(), payload.to_string())
}

#[test]
fn a_message_from_every_protocol_reaches_a_subscriber() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    let r = subscribe(&mut c, "news", "user@localhost/r");
    assert!(r.starts_with(&format!("<iq type='result' id='s-news' from='localhost'><pubsub xmlns='{PUBSUB}'><subscription node='news' jid='user@localhost/r' subid='")), "{r}");
    assert!(
        r.ends_with("' subscription='subscribed'/></pubsub></iq>"),
        "{r}"
    );
    let jid = "user@localhost/r";

    assert_eq!(
        server
            .get("/comet?method=put&channel=news&message=from%20comet")
            .status,
        200
    );
    let (_, p) = next_event(&mut c, "news", jid);
    assert!(
        p.starts_with("<message xmlns='urn:tidings' seq='")
            && p.ends_with("'>from comet</message>"),
        "{p}"
    );

    assert_eq!(
        server
            .get("/push?channel=news&name=talker&message=a%3Cb")
            .status,
        200
    );
    let (_, p) = next_event(&mut c, "news", jid);
    assert!(
        p.contains(" from='talker' ") && p.ends_with(">a&lt;b</message>"),
        "escaped: {p}"
    );

    let xml = r#"<?xml version="1.0" encoding="UTF-8"?><messages><message id="q-1" from="sms://1" to="sms://2"><text>from qst</text></message></messages>"#;
    assert_eq!(
        server
            .request(&post("/qst/news", "text/xml", xml.as_bytes()))
            .status,
        200
    );
    let (id, p) = next_event(&mut c, "news", jid);
    assert_eq!(id, "q-1");
    assert!(
        p.contains(" from='sms://1' to='sms://2' ") && p.ends_with(">from qst</message>"),
        "{p}"
    );

    server
        .handle
        .publish("news", Draft::with_body("embedded"))
        .unwrap();
    let (_, p) = next_event(&mut c, "news", jid);
    assert!(p.ends_with(">embedded</message>"), "{p}");
}

#[test]
fn an_item_store_change_reaches_a_subscriber() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    subscribe(&mut c, "message/items", "user@localhost");
    let set = B64.encode(r#"[{"method": "create", "data": {"_path": "/hello", "_kind": "Page"}}]"#);
    c.send(format!("<iq type='set' id='m1'><item xmlns='urn:M'>{set}</item></iq>").as_bytes());
    // The IQ result and the event may come in either order.
    let got = text(c.read_until(b"</event></message>", TIMEOUT));
    assert!(
        got.contains("<items node='message/items'>") && got.contains("/hello"),
        "{got}"
    );
}

#[test]
fn an_xmpp_publish_reaches_talk_comet_and_subscribers() {
    let server = xmpp(|_| {});
    let mut stream = server.pull("/pull?name=watcher&channel=board", true);
    let mut sub = session(&server, "user", "secret", "sub");
    subscribe(&mut sub, "board", "user@localhost/sub");
    let mut publisher = session(&server, "user", "secret", "pub");
    publisher.send(format!("<iq type='set' to='localhost' id='p1'><pubsub xmlns='{PUBSUB}'><publish node='board'><item id='it-1'><entry xmlns='urn:x'>hi &amp; bye</entry></item></publish></pubsub></iq>").as_bytes());
    assert_eq!(
        text(publisher.read_until(b"</iq>", TIMEOUT)),
        format!("<iq type='result' id='p1' from='localhost'><pubsub xmlns='{PUBSUB}'><publish node='board'><item id='it-1'/></publish></pubsub></iq>")
    );
    assert_eq!(
        stream.next_text(),
        "<entry xmlns='urn:x'>hi &amp; bye</entry>"
    );
    let (id, p) = next_event(&mut sub, "board", "user@localhost/sub");
    assert_eq!(
        (id.as_str(), p.as_str()),
        ("it-1", "<entry xmlns='urn:x'>hi &amp; bye</entry>")
    );
    let r = server.get("/comet?method=get&channel=board&time=0");
    assert!(
        r.body_str()
            .contains("<entry xmlns='urn:x'>hi &amp; bye</entry>"),
        "{}",
        r.show()
    );
    // A QST pull of the channel gets it as a message (XML payload escaped as text).
    let r = server.get("/qst/board");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        r.body_str().contains("id=\"it-1\"")
            && r.body_str()
                .contains("&lt;entry xmlns='urn:x'&gt;hi &amp;amp; bye&lt;/entry&gt;"),
        "{}",
        r.show()
    );
    // Retrieve: the last item.
    sub.send(format!("<iq type='get' to='localhost' id='i1'><pubsub xmlns='{PUBSUB}'><items node='board' max_items='1'/></pubsub></iq>").as_bytes());
    assert_eq!(
        text(sub.read_until(b"</iq>", TIMEOUT)),
        format!("<iq type='result' id='i1' from='localhost'><pubsub xmlns='{PUBSUB}'><items node='board'><item id='it-1'><entry xmlns='urn:x'>hi &amp; bye</entry></item></items></pubsub></iq>")
    );
}

#[test]
fn forbidden_nodes_and_foreign_jids_change_nothing() {
    let dir = std::env::temp_dir().join(format!("tidings-pubsub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(&file, "alice:a private/*\nbob:b public\n").unwrap();
    let server = xmpp(|c| c.credentials = Some(file.clone()));
    let mut bob = session(&server, "bob", "b", "r");
    let r = subscribe(&mut bob, "private/x", "bob@localhost/r");
    assert_eq!(r, "<iq type='error' id='s-private/x' from='localhost'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    bob.send(format!("<iq type='set' to='localhost' id='p'><pubsub xmlns='{PUBSUB}'><publish node='private/x'><item><x/></item></publish></pubsub></iq>").as_bytes());
    assert!(text(bob.read_until(b"</iq>", TIMEOUT)).contains("<forbidden "));
    let r = subscribe(&mut bob, "public", "alice@localhost");
    assert!(r.contains("<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><invalid-jid xmlns='http://jabber.org/protocol/pubsub#errors'/>"), "{r}");
    // Nothing was stored on the forbidden node (nor anywhere), and nobody waits there.
    assert_eq!(server.metrics().messages_published.get(), 0);
    assert_eq!(server.metrics().channels.get(), 0);
}

#[test]
fn unsubscribing_stops_the_events() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    subscribe(&mut c, "ticks", "user@localhost/r");
    server
        .handle
        .publish("ticks", Draft::with_body("one"))
        .unwrap();
    next_event(&mut c, "ticks", "user@localhost/r");
    c.send(format!("<iq type='set' to='localhost' id='u'><pubsub xmlns='{PUBSUB}'><unsubscribe node='ticks' jid='user@localhost/r'/></pubsub></iq>").as_bytes());
    assert_eq!(
        text(c.read_until(b"/>", TIMEOUT)),
        "<iq type='result' id='u' from='localhost'/>"
    );
    server
        .handle
        .publish("ticks", Draft::with_body("two"))
        .unwrap();
    c.send(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        text(c.read_until(b"/>", TIMEOUT)),
        "<iq type='result' id='p'/>",
        "no event before the ping's answer"
    );
    server.wait_parked(0);
}
