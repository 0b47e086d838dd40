//! QST (Queue State Transfer, v2 with v1 compatibility): PROTOCOLS.md section 1.
//!
//! `xml` and `json` are the sans-io batch codecs: bytes of a push body to drafts, stored
//! messages to the bytes of a pull reply.

pub mod json;
pub mod xml;

/// Why a QST body could not be decoded: a client fault, answered `400` with this text as the
/// `text/plain` body. Only made on the error path, so it may own its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl CodecError {
    pub(crate) fn new(reason: impl Into<String>) -> CodecError {
        CodecError(reason.into())
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Message builders shared by the codec tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::hub::{Draft, Message, Origin};

    /// 2010-01-01T23:18:53Z
    pub const WHEN: i64 = 1_262_387_933;

    pub fn draft(id: Option<&str>, from: &str, to: &str, when: Option<i64>) -> Draft {
        Draft {
            id: id.map(str::to_owned),
            from: from.to_owned(),
            to: to.to_owned(),
            when,
            ..Draft::default()
        }
    }

    pub fn with_body(mut d: Draft, subject: Option<&str>, body: &str) -> Draft {
        d.subject = subject.map(str::to_owned);
        d.body = body.as_bytes().to_vec();
        d
    }

    pub fn with_props(mut d: Draft, props: &[(&str, &str)]) -> Draft {
        d.properties = props
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        d
    }

    /// A stored message from a draft (seq 1; the draft's id and when, or defaults).
    pub fn message(d: Draft) -> Message {
        let id = d.id.clone().unwrap_or_default();
        let when = d.when.unwrap_or(WHEN);
        Message::new(1, id, when, Origin::Qst, d)
    }
}

use std::borrow::Cow;

use super::{channel_name, Action, Ctx, Park, ParkKind, Reply, Request, Then};
use crate::http::{self, Method};
use crate::hub::{Ack, Answer, HubError, Origin, Pulled};

/// Most messages one pull may ask for (`max`).
pub const MAX_PULL: usize = 1000;
/// Messages in a pull that names no `max`: a widely used client crashes on more than 10.
pub const DEFAULT_PULL: usize = 10;

/// The format of a pull reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// A pull held by `long-polling=true`, answered by `resume`.
#[derive(Clone, Copy, Debug)]
pub struct Pull {
    pub max: usize,
    pub format: Format,
    /// A v1 alias: XML output uses `<text>`.
    pub v1: bool,
}

/// Which QST endpoint a path names.
enum Endpoint {
    /// `/qst/{channel}`
    V2(String),
    /// `/{account}/qst/incoming[.xml]`
    Incoming(String),
    /// `/{account}/qst/outgoing[.xml]`
    Outgoing(String),
    /// `/{account}/qst/setaddress`
    SetAddress(String),
}

/// Routes a QST request; `None` when the path is not a QST endpoint.
pub fn handle(ctx: &Ctx<'_>, req: &Request<'_>) -> Option<Action> {
    let endpoint = match endpoint(req.path()) {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(reply) => return Some(Action::Reply(reply)),
    };
    let method = req.head.method;
    let allow = |methods: &'static str| {
        Action::Reply(Reply::text(405, "method not allowed").header("Allow", methods))
    };
    Some(match endpoint {
        Endpoint::V2(channel) => match method {
            Method::Post => Action::Reply(push(ctx, req, &channel)),
            Method::Get => pull(ctx, req, &channel, false),
            Method::Head => Action::Reply(last_id(ctx, req, &channel)),
            _ => allow("GET, HEAD, POST, OPTIONS"),
        },
        Endpoint::Incoming(channel) => match method {
            Method::Post => Action::Reply(push(ctx, req, &channel)),
            Method::Get | Method::Head => Action::Reply(last_id(ctx, req, &channel)),
            _ => allow("GET, HEAD, POST, OPTIONS"),
        },
        Endpoint::Outgoing(channel) => match method {
            Method::Get | Method::Post => pull(ctx, req, &channel, true),
            _ => allow("GET, POST, OPTIONS"),
        },
        Endpoint::SetAddress(account) => match method {
            Method::Get | Method::Post => Action::Reply(set_address(ctx, req, &account)),
            _ => allow("GET, POST, OPTIONS"),
        },
    })
}

fn endpoint(path: &[u8]) -> Result<Option<Endpoint>, Reply> {
    if let Some(rest) = path.strip_prefix(b"/qst/") {
        let name = http::percent_decode_path(rest);
        return Ok(Some(Endpoint::V2(channel_name(&name)?.to_string())));
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return Ok(None);
    };
    let Some(slash) = memchr::memchr(b'/', rest) else {
        return Ok(None);
    };
    let (account, tail) = (&rest[..slash], &rest[slash..]);
    let Some(op) = tail.strip_prefix(b"/qst/") else {
        return Ok(None);
    };
    if account.is_empty() {
        return Ok(None);
    }
    let account = http::percent_decode_path(account);
    let account = channel_name(&account)?.to_string();
    let channel = |suffix: &str| -> Result<String, Reply> {
        let name = format!("{account}/{suffix}");
        channel_name(name.as_bytes()).map(str::to_string)
    };
    Ok(Some(match op {
        b"incoming" | b"incoming.xml" => Endpoint::Incoming(channel("incoming")?),
        b"outgoing" | b"outgoing.xml" => Endpoint::Outgoing(channel("outgoing")?),
        b"setaddress" | b"setaddress.xml" => Endpoint::SetAddress(account),
        _ => return Ok(None),
    }))
}

/// The `Content-Type` of a request without parameters, lower-cased.
fn media_type(req: &Request<'_>) -> Option<String> {
    let value = req.head.content_type?.of(req.buf);
    let essence = value.split(|&b| b == b';').next().unwrap_or(b"");
    Some(String::from_utf8_lossy(essence).trim().to_ascii_lowercase())
}

/// `POST`: stores a batch, all or nothing, and answers with the `ETag` of its last message.
fn push(ctx: &Ctx<'_>, req: &Request<'_>, channel: &str) -> Reply {
    if let Err(r) = ctx.authorize(channel, req) {
        return r;
    }
    let first = req.body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let format = match media_type(req).as_deref() {
        Some("text/xml" | "application/xml") => Format::Xml,
        Some("application/json") => Format::Json,
        None if first == Some(b'<') => Format::Xml,
        None if first == Some(b'[') => Format::Json,
        None if first.is_none() => return Reply::text(200, "").header("ETag", ""),
        _ => return Reply::text(415, "use text/xml, application/xml or application/json"),
    };
    let decoded = match format {
        Format::Xml => xml::decode(req.body),
        Format::Json => json::decode(req.body),
    };
    let mut drafts = match decoded {
        Ok(d) => d,
        Err(e) => return Reply::text(400, format!("bad message batch: {e}")),
    };
    // Ids travel back in `ETag` headers: a line break there would forge a header.
    let control = |id: &String| id.chars().any(char::is_control);
    if drafts.iter().any(|d| d.id.as_ref().is_some_and(control)) {
        return Reply::text(
            400,
            "bad message batch: a message id holds a control character",
        );
    }
    if drafts
        .iter()
        .any(|d| d.size() > ctx.config.max_message_bytes)
    {
        return Reply::text(413, "a message is larger than the message limit");
    }
    for d in drafts.iter_mut() {
        if d.id.is_none() {
            d.id = Some(ctx.hub.new_id());
        }
    }
    let etag = drafts.last().and_then(|d| d.id.clone()).unwrap_or_default();
    match ctx.publish(channel, drafts, Origin::Qst, true) {
        Ok(_) => Reply::new(200, "text/plain; charset=utf-8", Vec::new()).header("ETag", etag),
        Err(HubError::QueueFull) => {
            Reply::text(503, "queue full: retry later").header("Retry-After", "1")
        }
        Err(e) => Reply::hub_error(e),
    }
}

/// `HEAD` (and v1 `GET incoming`): the id of the last message pushed, as `ETag`.
fn last_id(ctx: &Ctx<'_>, req: &Request<'_>, channel: &str) -> Reply {
    if let Err(r) = ctx.authorize(channel, req) {
        return r;
    }
    let answer =
        |id: String| Reply::new(200, "text/plain; charset=utf-8", Vec::new()).header("ETag", id);
    if ctx.hub.shared_in_redis(channel) {
        let asked = ctx
            .waiting_connection()
            .and_then(|to| ctx.hub.last_id_redis(channel, to).map_err(Reply::hub_error));
        return match asked {
            Ok(()) => {
                let then: Then = Box::new(move |a| match a {
                    Answer::LastId(id) => Action::Reply(answer(id)),
                    _ => Action::Reply(Reply::text(500, "internal error: not an id")),
                });
                ctx.redis_then(then)
            }
            Err(r) => r,
        };
    }
    answer(ctx.hub.last_id(channel).unwrap_or_default())
}

/// An entity tag as clients send it back: bare, quoted or weak (`W/"…"`).
pub fn strip_etag(raw: &[u8]) -> &[u8] {
    let mut v = raw;
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    if let Some(rest) = v.strip_prefix(b"W/") {
        v = rest;
    }
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        v = &v[1..v.len() - 1];
    }
    v
}

/// A v1 `{"confirmed":[ids],"failed":[ids]}` body.
fn confirmations(body: &[u8]) -> Result<(Vec<String>, Vec<String>), Reply> {
    #[derive(Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        confirmed: Vec<String>,
        #[serde(default)]
        failed: Vec<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), Vec::new()));
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        Reply::text(
            400,
            format!("body must be {{\"confirmed\":[ids],\"failed\":[ids]}}: {e}"),
        )
    })?;
    Ok((b.confirmed, b.failed))
}

/// `GET`: acknowledges up to `etag`, then answers the pending messages (or parks).
fn pull(ctx: &Ctx<'_>, req: &Request<'_>, channel: &str, v1: bool) -> Action {
    match decide_pull(ctx, req, channel, v1) {
        Ok(a) => a,
        Err(r) => Action::Reply(r),
    }
}

fn decide_pull(ctx: &Ctx<'_>, req: &Request<'_>, channel: &str, v1: bool) -> Result<Action, Reply> {
    ctx.authorize(channel, req)?;
    let query = req.query();
    let text = |name: &str| http::form_get(query, name);
    let max = match text("max") {
        None => DEFAULT_PULL,
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| (1..=MAX_PULL).contains(n))
            .ok_or_else(|| Reply::text(400, "max must be an integer from 1 to 1000"))?,
    };
    let format = match text("format").as_deref() {
        None | Some(b"xml") => Format::Xml,
        Some(b"json") => Format::Json,
        Some(_) => return Err(Reply::text(400, "format must be xml or json")),
    };
    let long_poll = match text("long-polling").as_deref() {
        None | Some(b"false") => false,
        Some(b"true") => true,
        Some(_) => return Err(Reply::text(400, "long-polling must be true or false")),
    };
    let cursor: Option<Cow<'_, [u8]>> =
        text("etag").or_else(|| req.head.if_none_match.map(|s| Cow::Borrowed(s.of(req.buf))));
    let cursor = cursor
        .map(|c| String::from_utf8_lossy(strip_etag(&c)).into_owned())
        .filter(|c| !c.is_empty());
    let (confirmed, failed) = if v1 && req.head.method == Method::Post {
        confirmations(req.body)?
    } else {
        (Vec::new(), Vec::new())
    };
    let ack = Ack {
        upto: cursor.as_deref(),
        confirmed: &confirmed,
        failed: &failed,
    };
    let pull = Pull { max, format, v1 };
    if ctx.hub.shared_in_redis(channel) {
        let to = ctx.waiting_connection()?;
        ctx.hub
            .qst_pull_redis(channel, Some(&ack), max, to)
            .map_err(Reply::hub_error)?;
        let park = long_poll.then(|| Park {
            channel: channel.to_string(),
            timeout: ctx.config.long_poll_timeout,
            kind: ParkKind::Qst(pull),
        });
        return Ok(Action::Reply(ctx.redis_then(pulled_from_redis(park, pull))));
    }
    let pulled = ctx
        .hub
        .qst_pull(channel, Some(&ack), max)
        .map_err(Reply::hub_error)?;
    if pulled.messages.is_empty() && long_poll {
        let kind = ParkKind::Qst(pull);
        return Ok(Action::Park(Park {
            channel: channel.to_string(),
            timeout: ctx.config.long_poll_timeout,
            kind,
        }));
    }
    Ok(Action::Reply(reply(&pulled, &pull)))
}

/// The `200` of a pull: the messages in the asked format, `ETag` per PROTOCOLS.md 1.4.
fn reply(pulled: &Pulled, pull: &Pull) -> Reply {
    let msgs: Vec<&crate::hub::Message> = pulled.messages.iter().map(|m| &**m).collect();
    let mut body = Vec::with_capacity(256 + msgs.len() * 256);
    let content_type = match pull.format {
        Format::Xml => {
            xml::encode(&msgs, pull.v1, &mut body);
            "text/xml; charset=utf-8"
        }
        Format::Json => {
            json::encode(&msgs, &mut body);
            "application/json"
        }
    };
    Reply::new(200, content_type, body)
        .header("ETag", pulled.etag.clone().unwrap_or_default())
        .header("Cache-Control", "no-cache")
}

/// What a pull through Redis answers: the messages, or, when there are none and `park` is
/// given (a long-poll), a park until the channel has news.
fn pulled_from_redis(park: Option<Park>, pull: Pull) -> Then {
    Box::new(move |answer| match answer {
        Answer::Pulled(pulled) => match park {
            Some(park) if pulled.messages.is_empty() => Action::Park(park),
            _ => Action::Reply(reply(&pulled, &pull)),
        },
        _ => Action::Reply(Reply::text(500, "internal error: not a pull")),
    })
}

/// With `--redis`: a parked long-poll woken (its channel has news) or timed out pulls
/// again through Redis; the connection waits for that answer (`Then`). Woken and still
/// empty (another gateway took the messages), it parks again.
pub fn resume_redis(ctx: &Ctx<'_>, park: Park, timed_out: bool) -> Result<Then, Reply> {
    let ParkKind::Qst(pull) = park.kind else {
        return Err(Reply::text(500, "internal error: not a QST pull"));
    };
    let to = ctx.waiting_connection()?;
    ctx.hub
        .qst_pull_redis(&park.channel, None, pull.max, to)
        .map_err(Reply::hub_error)?;
    let again = (!timed_out).then_some(Park {
        channel: park.channel,
        timeout: park.timeout,
        kind: ParkKind::Qst(pull),
    });
    Ok(pulled_from_redis(again, pull))
}

/// A parked long-poll: answers once the queue has messages, or empty at the timeout.
pub fn resume(ctx: &Ctx<'_>, park: &Park, timed_out: bool) -> Option<Reply> {
    let ParkKind::Qst(pull) = &park.kind else {
        return None;
    };
    let pulled = match ctx.hub.qst_pull(&park.channel, None, pull.max) {
        Ok(p) => p,
        Err(e) => return Some(Reply::hub_error(e)),
    };
    if pulled.messages.is_empty() && !timed_out {
        return None;
    }
    Some(reply(&pulled, pull))
}

/// v1 `setaddress?address=…`: stores the address the gateway reports.
fn set_address(ctx: &Ctx<'_>, req: &Request<'_>, account: &str) -> Reply {
    if let Err(r) = ctx.authorize(&format!("{account}/incoming"), req) {
        return r;
    }
    // Gateways send the address unencoded (`sms://+5550001`): `+` is not a space here.
    let address = http::form_pairs(req.query())
        .find(|(k, _)| *k == b"address")
        .map(|(_, v)| http::percent_decode_path(v).into_owned());
    let Some(address) = address.filter(|a| !a.is_empty()) else {
        return Reply::text(400, "address is required");
    };
    let Ok(address) = String::from_utf8(address) else {
        return Reply::text(400, "address is not UTF-8");
    };
    match ctx.hub.set_address(account, &address) {
        Ok(()) => Reply::text(200, "ok"),
        Err(e) => Reply::hub_error(e),
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn etags_in_every_form() {
        assert_eq!(strip_etag(b"mo-2"), b"mo-2");
        assert_eq!(strip_etag(b"\"mo-2\""), b"mo-2");
        assert_eq!(strip_etag(b"W/\"mo-2\""), b"mo-2");
        assert_eq!(strip_etag(b" mo-2 "), b"mo-2");
        assert_eq!(strip_etag(b"\""), b"\"");
    }

    #[test]
    fn endpoints() {
        let name = |p: &[u8]| match endpoint(p) {
            Ok(Some(Endpoint::V2(c) | Endpoint::Incoming(c) | Endpoint::Outgoing(c))) => c,
            Ok(Some(Endpoint::SetAddress(a))) => format!("address:{a}"),
            Ok(None) => "none".into(),
            Err(r) => format!("error:{}", r.status),
        };
        assert_eq!(name(b"/qst/acme%2Fincoming"), "acme/incoming");
        assert_eq!(name(b"/qst/acme/incoming"), "acme/incoming");
        assert_eq!(name(b"/acme/qst/incoming"), "acme/incoming");
        assert_eq!(name(b"/acme/qst/incoming.xml"), "acme/incoming");
        assert_eq!(name(b"/acme/qst/outgoing.xml"), "acme/outgoing");
        assert_eq!(name(b"/acme/qst/setaddress"), "address:acme");
        assert_eq!(name(b"/acme/qst/other"), "none");
        assert_eq!(name(b"/qst/"), "error:400");
        assert_eq!(name(b"/pull"), "none");
    }
}
