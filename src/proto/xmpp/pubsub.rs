//! PubSub on the hub (PROTOCOLS.md 4.4, a XEP-0060 subset): every hub channel is a node of the
//! service at the domain. This renders what PubSub sends: an item's payload for any hub
//! message, and the event `<message>` a subscribed session gets, rendered once per message
//! (the tail after the per-session `to`) and shared by every session it goes to; and it
//! answers a session's PubSub requests (`request`), asking its `Env` for the hub's part.

use std::fmt::Write as _;
use std::sync::Arc;

use super::session::{inner_xml, iq_error, Env, NS_PUBSUB, NS_STANZAS};
use super::stanza::{escape, Element};
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

/// A PubSub request (PROTOCOLS.md 4.4) to the service at the domain, from the session of
/// `user` bound as `jid` (`None` before binding: refused).
#[allow(clippy::too_many_arguments)]
pub fn request(
    kind: &str,
    id: &str,
    pubsub: &Element,
    raw: &[u8],
    domain: &str,
    (user, jid): (Option<String>, Option<String>),
    out: &mut String,
    env: &mut dyn Env,
) {
    let (Some(user), Some(jid)) = (user, jid) else {
        iq_error(out, id, domain, "", "cancel", "not-allowed", None);
        return;
    };
    let bare = jid.split('/').next().unwrap_or("").to_string();
    let Some(op) = pubsub.first_child() else {
        iq_error(out, id, domain, "", "modify", "bad-request", None);
        return;
    };
    let node = op.attr("node").unwrap_or("");
    let refuse = |out: &mut String, e: PubSubError| pubsub_refusal(out, id, domain, e);
    let open = |out: &mut String| {
        write!(
            out,
            "<iq type='result' id='{}' from='{}'><pubsub xmlns='{NS_PUBSUB}'>",
            escape(id),
            escape(domain)
        )
        .ok();
    };
    match (kind, op.local_name()) {
        ("set", "subscribe") => {
            let asked = op.attr("jid").unwrap_or("");
            if asked.split('/').next() != Some(bare.as_str()) {
                write!(
                    out,
                    "<iq type='error' id='{}' from='{}'><error type='modify'><bad-request xmlns='{NS_STANZAS}'/><invalid-jid xmlns='{}'/></error></iq>",
                    escape(id),
                    escape(domain),
                    NS_PUBSUB_ERRORS
                )
                .ok();
                return;
            }
            match env.subscribe(&user, node) {
                Ok(subid) => {
                    open(out);
                    write!(
                        out,
                        "<subscription node='{}' jid='{}' subid='{}' subscription='subscribed'/></pubsub></iq>",
                        escape(node),
                        escape(asked),
                        escape(&subid)
                    )
                    .ok();
                }
                Err(e) => refuse(out, e),
            }
        }
        ("set", "unsubscribe") => match env.unsubscribe(node) {
            Ok(()) => {
                write!(
                    out,
                    "<iq type='result' id='{}' from='{}'/>",
                    escape(id),
                    escape(domain)
                )
                .ok();
            }
            Err(e) => refuse(out, e),
        },
        ("set", "publish") => {
            let item = op.children.iter().find(|c| c.local_name() == "item");
            let item_id = item.and_then(|i| i.attr("id"));
            let payload = item.map(|i| inner_xml(i, raw)).unwrap_or_default();
            match env.publish(&user, &bare, node, item_id, &payload) {
                Ok(stored) => {
                    let mut answer = String::new();
                    open(&mut answer);
                    write!(
                        answer,
                        "<publish node='{}'><item id='{}'/></publish></pubsub></iq>",
                        escape(node),
                        escape(&stored)
                    )
                    .ok();
                    let mut failed = String::new();
                    refuse(&mut failed, PubSubError::Refused("not stored".into()));
                    env.answer_published(answer, failed, out);
                }
                Err(e) => refuse(out, e),
            }
        }
        ("get", "items") => {
            let max = op
                .attr("max_items")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let answer = ItemsIq {
                id: id.to_string(),
                domain: domain.to_string(),
                node: node.to_string(),
            };
            if let Some(answer) = env.items_later(&user, node, max, answer, out) {
                out.push_str(&answer.render(env.items(&user, node, max)));
            }
        }
        _ => iq_error(
            out,
            id,
            domain,
            "",
            "cancel",
            "feature-not-implemented",
            None,
        ),
    }
}

/// The answer to a PubSub `items` request, rendered once its items are known (now, or when
/// Redis answers: `Env::items_later`).
#[derive(Debug, Clone)]
pub struct ItemsIq {
    id: String,
    domain: String,
    node: String,
}

impl ItemsIq {
    /// The whole `<iq>`: the items (`<item>` elements), or the refusal.
    pub fn render(&self, items: Result<String, PubSubError>) -> String {
        let mut out = String::new();
        match items {
            Ok(items) => {
                write!(
                    out,
                    "<iq type='result' id='{}' from='{}'><pubsub xmlns='{NS_PUBSUB}'><items node='{}'>{items}</items></pubsub></iq>",
                    escape(&self.id),
                    escape(&self.domain),
                    escape(&self.node)
                )
                .ok();
            }
            Err(e) => pubsub_refusal(&mut out, &self.id, &self.domain, e),
        }
        out
    }
}

/// The `<iq type='error'>` of a refused PubSub request.
fn pubsub_refusal(out: &mut String, id: &str, domain: &str, e: PubSubError) {
    match e {
        PubSubError::Forbidden => iq_error(out, id, domain, "", "auth", "forbidden", None),
        PubSubError::BadNode(why) => {
            iq_error(out, id, domain, "", "modify", "bad-request", Some(&why))
        }
        PubSubError::Refused(why) => iq_error(
            out,
            id,
            domain,
            "",
            "wait",
            "resource-constraint",
            Some(&why),
        ),
        PubSubError::Unavailable => {
            iq_error(out, id, domain, "", "cancel", "service-unavailable", None)
        }
    }
}

/// Why a PubSub request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubError {
    /// The credentials patterns guard the node from this user: `auth`/`forbidden`.
    Forbidden,
    /// Not a channel name (or no node): `modify`/`bad-request`.
    BadNode(String),
    /// The hub refused (limits): `wait`/`resource-constraint`.
    Refused(String),
    /// Not served here: `cancel`/`service-unavailable`.
    Unavailable,
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
