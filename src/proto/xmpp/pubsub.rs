//! PubSub on the hub (PROTOCOLS.md 4.4, a XEP-0060 subset): every hub channel is a node of the
//! service at the domain. This renders what PubSub sends: an item's payload for any hub
//! message, and the event `<message>` a subscribed session gets, rendered once per message
//! (the tail after the per-session `to`) and shared by every session it goes to.

use std::fmt::Write as _;
use std::sync::Arc;

use super::stanza::escape;
use crate::hub::{Format, Message, Origin};

pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// The payload of a message as a PubSub item: the body itself when an XMPP publish made it
/// (it is XML), else `<message xmlns='urn:tidings' seq=… from=… to=… when=…>BODY</message>`
/// with the body escaped, and `content-type=…` and `event=…` when an nchan publisher gave
/// them.
pub fn payload(msg: &Message, out: &mut String) {
    let body = String::from_utf8_lossy(&msg.body);
    if msg.origin == Origin::Xmpp {
        out.push_str(&body);
        return;
    }
    write!(
        out,
        "<message xmlns='urn:tidings' seq='{}' from='{}' to='{}' when='",
        msg.seq,
        escape(&msg.from),
        escape(&msg.to)
    )
    .ok();
    crate::time::format_utc(msg.when, out);
    out.push('\'');
    if let Some(ct) = msg.content_type() {
        write!(out, " content-type='{}'", escape(ct)).ok();
    }
    if let Some(e) = msg.event() {
        write!(out, " event='{}'", escape(e)).ok();
    }
    out.push('>');
    out.push_str(&escape(&body));
    out.push_str("</message>");
}

/// `<item id='ID'>PAYLOAD</item>` for a message.
pub fn item(msg: &Message, out: &mut String) {
    write!(out, "<item id='{}'>", escape(&msg.id)).ok();
    payload(msg, out);
    out.push_str("</item>");
}

/// The shared tail of the event stanza for a message of channel `node`: everything after
/// `<message from='DOMAIN' to='FULL-JID'`. Rendered once per message.
pub fn event_tail(msg: &Message, node: &str) -> Arc<[u8]> {
    msg.rendered(Format::XmppEvent, |m| {
        let mut s = String::with_capacity(m.body.len() + 160);
        write!(
            s,
            "' id='{}'><event xmlns='{NS_PUBSUB_EVENT}'><items node='{}'>",
            escape(&m.id),
            escape(node)
        )
        .ok();
        item(m, &mut s);
        s.push_str("</items></event></message>");
        Some(Arc::from(s.into_bytes()))
    })
    .unwrap_or_else(|| Arc::from(&b"'/>"[..]))
}

/// The per-session head of an event stanza: `<message from='DOMAIN' to='JID` (the tail
/// closes the attribute).
pub fn event_head(domain: &str, jid: &str) -> Vec<u8> {
    format!("<message from='{}' to='{}", escape(domain), escape(jid)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Draft;

    fn msg(origin: Origin, body: &str) -> Message {
        let d = Draft {
            from: "sms://1".into(),
            to: "a&b".into(),
            ..Draft::with_body(body)
        };
        Message::new(42, "m1".into(), 1_262_387_933, origin, d)
    }

    #[test]
    fn payloads_by_origin() {
        let mut s = String::new();
        payload(&msg(Origin::Comet, "1 < 2"), &mut s);
        assert_eq!(
            s,
            "<message xmlns='urn:tidings' seq='42' from='sms://1' to='a&amp;b' when='2010-01-01T23:18:53Z'>1 &lt; 2</message>"
        );
        let mut s = String::new();
        payload(&msg(Origin::Xmpp, "<entry>hi</entry>"), &mut s);
        assert_eq!(s, "<entry>hi</entry>");
    }

    #[test]
    fn an_event_is_a_head_per_session_and_one_shared_tail() {
        let m = msg(Origin::Xmpp, "<x/>");
        let tail = event_tail(&m, "news");
        assert!(Arc::ptr_eq(&tail, &event_tail(&m, "news")), "rendered once");
        let mut whole = event_head("localhost", "u@localhost/r");
        whole.extend_from_slice(&tail);
        assert_eq!(
            String::from_utf8(whole).unwrap(),
            "<message from='localhost' to='u@localhost/r' id='m1'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='news'><item id='m1'><x/></item></items></event></message>"
        );
    }
}
