//! urn:M over XMPP (PROTOCOLS.md 4.2): an IQ whose child is in `urn:M` becomes a
//! `proto::message` request against the item store, and its outcome becomes the IQ reply,
//! with the reference's four debug log lines.

use std::fmt::Write as _;

use super::session::NS_STANZAS;
use super::stanza::{escape, Element};
use crate::debug;
use crate::proto::message::{self, py_repr};
use crate::store::{Publish, Store};

/// The reply stanza to a urn:M IQ from `user` (`raw` is the IQ as it arrived).
pub fn answer(
    store: &Store,
    publish: &dyn Publish,
    domain: &str,
    user: &str,
    iq: &Element,
    raw: &[u8],
) -> String {
    let id = iq.attr("id").unwrap_or("");
    debug!("READ: {}", py_repr(&String::from_utf8_lossy(raw)));
    let Some(child) = iq.first_child() else {
        return String::new();
    };
    let req = message::Request {
        name: child.local_name(),
        method: child.attr("method"),
        iq_type: iq.attr("type").unwrap_or(""),
        text: &child.text,
        message: iq.attr("message"),
        user,
    };
    let outcome = message::handle(store, publish, &req);
    debug!("{}", outcome.request_line(id));
    debug!("{}", outcome.result_line(id));
    let mut out = String::new();
    match &outcome.answer {
        Ok(result) => {
            write!(
                out,
                "<iq type='result' id='{}'><{name} xmlns='urn:M'",
                escape(id),
                name = escape(&result.name)
            )
            .ok();
            if let Some(md5) = &result.match_md5 {
                write!(out, " match='{md5}'").ok();
            }
            write!(out, ">{}</{}></iq>", result.base64, escape(&result.name)).ok();
        }
        Err(e) => {
            // The request's child, unchanged, then the error.
            let echo = raw
                .get(child.span.clone())
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            write!(
                out,
                "<iq type='error' id='{}' from='{}'>{echo}<error type='{}'><{} xmlns='{NS_STANZAS}'/>",
                escape(id),
                escape(domain),
                e.kind.as_str(),
                e.condition
            )
            .ok();
            if let Some(detail) = &e.detail {
                write!(out, "<text xmlns='{NS_STANZAS}'>{}</text>", escape(detail)).ok();
            }
            out.push_str("</error></iq>");
        }
    }
    debug!("WROTE: {}", py_repr(&out));
    out
}
