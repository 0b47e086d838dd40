//! nchan's publish and subscribe API (PROTOCOLS.md 5; the contract, byte for byte, is
//! NCHAN.md): `/pub/{channel}` publishes and reports, `/sub/{channel}` subscribes by
//! long-poll, EventSource, WebSocket, HTTP chunked or multipart/mixed, all over the same hub
//! as every other protocol.
//!
//! Message ids are the hub's `seq` as nchan's `TIME:TAG`: `TIME = seq div 1000`,
//! `TAG = seq mod 1000` (NCHAN.md 2.2). The streaming transports are stream kinds
//! (`streams.rs`), siblings of Talk.

pub mod streams;
pub mod websocket;

use std::fmt::Write as _;
use std::time::Duration;

use super::stream::StreamKind;
use super::{channel_name, Action, Ctx, Park, ParkKind, Reply, Request, StreamStart};
use crate::config::FirstMessage;
use crate::http::{self, Method};
use crate::hub::{Answer, ChannelInfo, Deleted, Draft, Message, Origin};
use crate::proto::websocket::{upgrade as websocket_upgrade, Upgrade};
use crate::redis::engine::Removed;
use streams::{EventSourceStream, PlainStream, Transport};
use websocket::WsStream;

/// Longer channel ids are refused with `403` (nchan's `nchan_max_channel_id_length`).
const MAX_ID_BYTES: usize = 1024;
/// Sent on every long-poll answer.
const VARY: &str = "If-None-Match, If-Modified-Since";
/// The headers a page may read from a message answer.
const EXPOSE: &str = "Last-Modified, Etag, Content-Type";

/// `TIME:TAG` of a `seq`.
pub fn message_id(seq: u64) -> String {
    let mut id = String::with_capacity(24);
    id.push_str(itoa::Buffer::new().format(seq / 1000));
    id.push(':');
    id.push_str(itoa::Buffer::new().format(seq % 1000));
    id
}

/// A cursor from a `TIME:TAG` id: the next message is the first with a greater `seq`.
/// `Ok(None)`: no cursor (`TIME ≤ 0`, or not an id). `Err`: `400 Message ID invalid`.
fn parse_id(v: &[u8]) -> Result<Option<u64>, Reply> {
    if v.iter().any(|b| matches!(b, b',' | b'[' | b']')) {
        // Multi-channel ids: nchan's multiplexed channels, not served here.
        return Err(invalid_id());
    }
    let Some(colon) = memchr::memchr(b':', v) else {
        return Ok(None);
    };
    let (time, tag) = (&v[..colon], &v[colon + 1..]);
    let Some(time) = std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
    else {
        return Err(invalid_id());
    };
    let tag = parse_tag(tag)?;
    Ok(cursor(time, tag))
}

/// A tag: a decimal, or `-` for −1.
fn parse_tag(v: &[u8]) -> Result<i64, Reply> {
    let v = std::str::from_utf8(v).map_err(|_| invalid_id())?.trim();
    if v == "-" {
        return Ok(-1);
    }
    v.parse::<i64>().map_err(|_| invalid_id())
}

fn cursor(time: i64, tag: i64) -> Option<u64> {
    if time <= 0 {
        return None;
    }
    let seq = (time as u64).saturating_mul(1000) as i64 + tag.clamp(-1, 999);
    Some(seq.max(0) as u64)
}

/// nchan's answer, byte for byte: `text/plain` with no charset, no newline (NCHAN.md 8).
fn invalid_id() -> Reply {
    Reply::new(400, "text/plain", &b"Message ID invalid"[..])
}

/// The subscriber's cursor (NCHAN.md 5.2, with deviation D6): `If-Modified-Since` with
/// `If-None-Match`, else `If-None-Match` as an id, else `Last-Event-ID`, else the
/// `last_event_id` argument, else NchanSubscriber's `Etag` request header.
fn subscriber_cursor(req: &Request<'_>) -> Result<Option<u64>, Reply> {
    if let Some(ims) = req.header("if-modified-since") {
        let Some(inm) = req.header("if-none-match") else {
            return Err(invalid_id());
        };
        if inm.iter().any(|b| matches!(b, b',' | b'[' | b']')) {
            return Err(invalid_id());
        }
        let tag = parse_tag(inm)?;
        return Ok(crate::time::parse_imf_fixdate(ims).and_then(|t| cursor(t, tag)));
    }
    if let Some(inm) = req.header("if-none-match") {
        return parse_id(inm);
    }
    if let Some(id) = req.header("last-event-id").filter(|v| !v.is_empty()) {
        return parse_id(id);
    }
    if let Some(id) = http::form_get(req.query(), "last_event_id").filter(|v| !v.is_empty()) {
        return parse_id(&id);
    }
    if let Some(id) = req.header("etag") {
        return parse_id(id);
    }
    Ok(None)
}

/// The request's `Origin`, echoed by nchan's CORS answers.
fn origin(req: &Request<'_>) -> Option<String> {
    let o = req.head.origin?.of(req.buf);
    let o = std::str::from_utf8(o).ok()?;
    (!o.is_empty() && !o.bytes().any(|b| b < 0x20 || b == 0x7f)).then(|| o.to_string())
}

/// nchan's CORS: only for a request with `Origin`, which is echoed (or `--cors-origin` when
/// it names one origin) with credentials allowed.
fn with_cors(mut reply: Reply, ctx: &Ctx<'_>, origin: Option<&str>) -> Reply {
    match origin {
        None => reply.cors = Some(String::new()),
        Some(o) => {
            let allow = match ctx.config.cors_origin.as_str() {
                "*" => o.to_string(),
                one => one.to_string(),
            };
            reply.cors = Some(allow);
            reply
                .headers
                .push(("Access-Control-Allow-Credentials", "true".into()));
        }
    }
    reply
}

/// Routes `/pub/…` and `/sub/…`; `None` for every other path.
pub fn handle(ctx: &Ctx<'_>, req: &Request<'_>) -> Option<Action> {
    let path = req.path();
    let (publisher, raw) = if let Some(rest) = path.strip_prefix(b"/pub/") {
        (true, rest)
    } else if let Some(rest) = path.strip_prefix(b"/sub/") {
        (false, rest)
    } else {
        return None;
    };
    let origin = origin(req);
    let origin = origin.as_deref();
    if req.head.method == Method::Options {
        return Some(Action::Reply(preflight(ctx, publisher, origin)));
    }
    let id = http::percent_decode_path(raw);
    if id.len() > MAX_ID_BYTES {
        return Some(Action::Reply(with_cors(forbidden(), ctx, origin)));
    }
    let channel = match channel_name(&id) {
        Ok(c) => c.to_string(),
        Err(r) => return Some(Action::Reply(with_cors(r, ctx, origin))),
    };
    if let Err(r) = ctx.authorize(&channel, req) {
        return Some(Action::Reply(with_cors(r, ctx, origin)));
    }
    Some(if publisher {
        publish(ctx, req, &channel, origin)
    } else {
        subscribe(ctx, req, channel, origin)
    })
}

fn forbidden() -> Reply {
    Reply::new(403, "", Vec::new())
}

/// `OPTIONS` (NCHAN.md 4, with deviation D5: the headers NchanSubscriber sends are allowed).
fn preflight(ctx: &Ctx<'_>, publisher: bool, origin: Option<&str>) -> Reply {
    let (allow, headers) = if publisher {
        (
            "GET, POST, PUT, DELETE",
            "Content-Type, X-EventSource-Event, Accept",
        )
    } else {
        (
            "GET",
            "If-None-Match, If-Modified-Since, Content-Type, Cache-Control, X-EventSource-Event, Etag, Last-Event-ID",
        )
    };
    let mut r = Reply::new(200, "", Vec::new()).header("Allow", allow);
    if origin.is_some() {
        r = r
            .header("Access-Control-Allow-Headers", headers)
            .header("Access-Control-Allow-Methods", allow);
    }
    with_cors(r, ctx, origin)
}

/// `DELETE` with `--redis`: Redis drops the messages and tells every node, whose nchan
/// subscribers end; the answer says how many this node had.
fn delete_in_redis(ctx: &Ctx<'_>, channel: &str, accept: Option<&[u8]>) -> Reply {
    let asked = ctx
        .waiting_connection()
        .and_then(|to| ctx.hub.delete_redis(channel, to).map_err(Reply::hub_error));
    if let Err(r) = asked {
        return r;
    }
    let here = ctx.hub.info(channel);
    let subscribers = here.as_ref().map_or(0, |i| i.subscribers);
    let last_seq = here.and_then(|i| i.last_seq);
    let format = info_format(accept);
    ctx.redis_then(Box::new(move |answer| {
        Action::Reply(match answer {
            Answer::Removed(Removed::Messages(_)) => {
                let info = ChannelInfo {
                    messages: 0,
                    subscribers,
                    requested: None,
                    last_seq,
                };
                let (content_type, body) = info_body(&info, format);
                Reply::new(200, content_type, body.into_bytes())
            }
            Answer::Removed(Removed::Missing) => Reply::new(404, "", Vec::new()),
            Answer::Removed(Removed::Queue) => queue_not_deleted(),
            _ => Reply::text(500, "internal error: not a delete"),
        })
    }))
}

/// The `409` of a `DELETE` on a QST queue.
fn queue_not_deleted() -> Reply {
    Reply::text(
        409,
        "the channel is a QST queue: its messages leave by acknowledgement",
    )
}

/// The publisher: `POST`/`PUT` publish, `GET` reports, `DELETE` deletes.
fn publish(ctx: &Ctx<'_>, req: &Request<'_>, channel: &str, origin: Option<&str>) -> Action {
    let accept = req.head.accept.map(|s| s.of(req.buf));
    match upgrade(req) {
        Upgrade::No => {}
        Upgrade::Refuse(why) => {
            return Action::Reply(refuse_upgrade(ctx, why, origin.map(str::to_string)))
        }
        Upgrade::Accept(a) => {
            let content_type = req
                .head
                .content_type
                .and_then(|s| std::str::from_utf8(s.of(req.buf)).ok())
                .map(str::to_string);
            let kind = StreamKind::WebSocket(Box::new(WsStream::publisher(
                a,
                origin.map(str::to_string),
                ctx.config.max_message_bytes,
                content_type,
                info_format(accept),
            )));
            return Action::Stream(StreamStart {
                channel: channel.to_string(),
                since: None,
                kind,
            });
        }
    }
    let reply = match req.head.method {
        Method::Post | Method::Put => {
            if req.body.len() > ctx.config.max_message_bytes {
                ctx.metrics.bodies_too_large.inc();
                Reply::text(413, "message larger than --max-message-bytes")
            } else {
                let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::to_string);
                let draft = Draft {
                    content_type: req.head.content_type.and_then(|s| text(s.of(req.buf))),
                    event: req
                        .head
                        .eventsource_event
                        .map(|s| s.of(req.buf))
                        .and_then(text),
                    ..Draft::with_body(req.body)
                };
                match ctx.publish_with_info(channel, draft, Origin::Nchan) {
                    Err(e) => Reply::hub_error(e),
                    Ok(info) => {
                        let status = if info.subscribers > 0 { 201 } else { 202 };
                        if ctx.hub.shared_in_redis(channel) {
                            // The message's id is Redis's answer.
                            let format = info_format(accept);
                            ctx.then.set(Some(Box::new(move |answer| {
                                let info = ChannelInfo {
                                    last_seq: Some(answer.seq()),
                                    ..info
                                };
                                let (content_type, body) = info_body(&info, format);
                                Action::Reply(Reply::new(status, content_type, body.into_bytes()))
                            })));
                        }
                        info_reply(status, &info, accept)
                    }
                }
            }
        }
        Method::Get | Method::Head => match ctx.hub.info(channel) {
            Some(info) => info_reply(200, &info, accept),
            None => Reply::new(404, "", Vec::new()),
        },
        Method::Delete if ctx.hub.shared_in_redis(channel) => delete_in_redis(ctx, channel, accept),
        Method::Delete => match ctx.hub.delete(channel) {
            Deleted::Done(info) => {
                let info = ChannelInfo {
                    messages: 0,
                    ..info
                };
                info_reply(200, &info, accept)
            }
            Deleted::Missing => Reply::new(404, "", Vec::new()),
            Deleted::Queue => queue_not_deleted(),
        },
        _ => forbidden(),
    };
    Action::Reply(with_cors(reply, ctx, origin))
}

/// The channel info formats `Accept` chooses from (NCHAN.md 3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoFormat {
    Plain,
    Json,
    Yaml,
    Xml,
}

/// nchan's scan of `Accept`: in each element, after `text/` or `application/`, the first
/// subtype prefix among plain, json, x-json, yaml, x-yaml, xml.
pub fn info_format(accept: Option<&[u8]>) -> InfoFormat {
    let Some(accept) = accept else {
        return InfoFormat::Plain;
    };
    for element in accept.split(|&b| b == b',') {
        let after = ["text/", "application/"].iter().find_map(|t| {
            memchr::memmem::find(element, t.as_bytes()).map(|i| &element[i + t.len()..])
        });
        let Some(sub) = after else {
            continue;
        };
        for (prefix, format) in [
            (&b"plain"[..], InfoFormat::Plain),
            (b"json", InfoFormat::Json),
            (b"x-json", InfoFormat::Json),
            (b"yaml", InfoFormat::Yaml),
            (b"x-yaml", InfoFormat::Yaml),
            (b"xml", InfoFormat::Xml),
        ] {
            if sub.starts_with(prefix) {
                return format;
            }
        }
    }
    InfoFormat::Plain
}

/// The channel info body in a format, with its content type (NCHAN.md 3.4, byte-exact).
pub fn info_body(info: &ChannelInfo, format: InfoFormat) -> (&'static str, String) {
    // Pieces pushed, not `format!`: this is rendered for every publish.
    let requested = info.requested.map_or(-1, |d| d.as_secs() as i64);
    // `0:0` before any message, as `message_id` otherwise.
    let seq = info.last_seq.unwrap_or(0);
    let mut t = itoa::Buffer::new();
    let t = t.format(seq / 1000);
    let mut g = itoa::Buffer::new();
    let g = g.format(seq % 1000);
    let mut m = itoa::Buffer::new();
    let m = m.format(info.messages);
    let mut r = itoa::Buffer::new();
    let r = r.format(requested);
    let mut s = itoa::Buffer::new();
    let s = s.format(info.subscribers);
    let (content_type, parts): (&'static str, [&str; 11]) = match format {
        InfoFormat::Plain => (
            "text/plain",
            [
                "queued messages: ",
                m,
                "\r\nlast requested: ",
                r,
                " sec. ago\r\nactive subscribers: ",
                s,
                "\r\nlast message id: ",
                t,
                ":",
                g,
                "",
            ],
        ),
        InfoFormat::Json => (
            "text/json",
            [
                "{\"messages\": ",
                m,
                ", \"requested\": ",
                r,
                ", \"subscribers\": ",
                s,
                ", \"last_message_id\": \"",
                t,
                ":",
                g,
                "\" }",
            ],
        ),
        InfoFormat::Yaml => (
            "text/yaml",
            [
                "---\r\nmessages: ",
                m,
                "\r\nrequested: ",
                r,
                "\r\nsubscribers: ",
                s,
                "\r\nlast_message_id: \"",
                t,
                ":",
                g,
                "\"\r\n\r\n",
            ],
        ),
        InfoFormat::Xml => (
            "text/xml",
            [
                "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<channel>\r\n  <messages>",
                m,
                "</messages>\r\n  <requested>",
                r,
                "</requested>\r\n  <subscribers>",
                s,
                "</subscribers>\r\n  <last_message_id>",
                t,
                ":",
                g,
                "</last_message_id>\r\n</channel>",
            ],
        ),
    };
    (content_type, parts.concat())
}

fn info_reply(status: u16, info: &ChannelInfo, accept: Option<&[u8]>) -> Reply {
    let (content_type, body) = info_body(info, info_format(accept));
    Reply::new(status, content_type, body.into_bytes())
}

/// A long-poll subscriber (NCHAN.md 5.3).
#[derive(Debug)]
pub struct Poll {
    /// The answer is the first message with a greater `seq`.
    pub cursor: u64,
    pub origin: Option<String>,
}

/// The subscriber: picks the transport (NCHAN.md 5.1) and where it starts (5.2).
fn subscribe(ctx: &Ctx<'_>, req: &Request<'_>, channel: String, origin: Option<&str>) -> Action {
    if req.head.method != Method::Get {
        return Action::Reply(with_cors(forbidden(), ctx, origin));
    }
    let cursor = match subscriber_cursor(req) {
        Ok(c) => c,
        Err(r) => return Action::Reply(with_cors(r, ctx, origin)),
    };
    // With no cursor: from the oldest retained message, or from the next one.
    let since = match (cursor, ctx.config.nchan_first_message) {
        (Some(c), _) => Some(c),
        (None, FirstMessage::Oldest) => Some(0),
        (None, FirstMessage::Newest) => None,
    };
    let origin = origin.map(str::to_string);
    let transport = match upgrade(req) {
        Upgrade::Accept(accept) => {
            let ws = WsStream::subscriber(accept, origin, ctx.config.max_message_bytes);
            return Action::Stream(StreamStart {
                channel,
                since,
                kind: StreamKind::WebSocket(Box::new(ws)),
            });
        }
        Upgrade::Refuse(why) => return Action::Reply(refuse_upgrade(ctx, why, origin)),
        Upgrade::No => streams::transport(req),
    };
    let kind = match transport {
        Transport::LongPoll => return subscribe_poll(ctx, channel, since, origin),
        Transport::EventSource => StreamKind::EventSource(EventSourceStream::new(origin)),
        Transport::Chunked => StreamKind::Chunked(PlainStream::chunked(origin)),
        Transport::Multipart => StreamKind::Multipart(PlainStream::multipart(origin)),
    };
    Action::Stream(StreamStart {
        channel,
        since,
        kind,
    })
}

/// A long-poll: parked until a message after `since` (or, with none, after now).
fn subscribe_poll(
    ctx: &Ctx<'_>,
    channel: String,
    since: Option<u64>,
    origin: Option<String>,
) -> Action {
    let cursor = match since {
        Some(c) => c,
        // Now: only what is published from here on.
        None => ctx.hub.clock_now(&channel),
    };
    let timeout = match ctx.config.nchan_subscriber_timeout {
        Duration::ZERO => Duration::MAX,
        t => t,
    };
    Action::Park(Park {
        channel,
        timeout,
        kind: ParkKind::Nchan(Poll { cursor, origin }),
    })
}

/// The WebSocket handshake's decision on a request.
fn upgrade(req: &Request<'_>) -> Upgrade {
    let head = req.buf.get(..req.head.len).unwrap_or(&[]);
    websocket_upgrade(req.head.method, req.head.minor, http::headers(head))
}

/// A WebSocket request that cannot be accepted: `400` with nchan's exact text.
fn refuse_upgrade(ctx: &Ctx<'_>, why: &'static str, origin: Option<String>) -> Reply {
    let r = Reply::new(400, "text/plain", why.as_bytes());
    with_cors(r, ctx, origin.as_deref())
}

/// A parked long-poll re-checks its channel: the next message after its cursor, or at its
/// timeout `408`.
pub fn resume(ctx: &Ctx<'_>, park: &Park, poll: &Poll, timed_out: bool) -> Option<Reply> {
    let read = ctx.hub.read(&park.channel, poll.cursor, 1);
    let origin = poll.origin.as_deref();
    if let Some(msg) = read.messages.first() {
        ctx.metrics.messages_delivered.inc();
        return Some(with_cors(message_reply(msg, origin), ctx, origin));
    }
    if timed_out {
        let r = Reply::new(408, "", Vec::new()).header("Vary", VARY);
        return Some(with_cors(r, ctx, origin));
    }
    None
}

/// A long-poll's answer with one message: its bytes, its content type, its id as
/// `Last-Modified` and an unquoted `Etag` (NCHAN.md 4, 5.3).
fn message_reply(msg: &Message, origin: Option<&str>) -> Reply {
    let mut r = Reply::new(200, "", msg.body.to_vec());
    if let Some(ct) = content_type(msg) {
        r = r.header("Content-Type", ct);
    }
    let date = crate::http::imf_fixdate(msg.seq / 1000);
    r = r
        .header("Last-Modified", String::from_utf8_lossy(&date).into_owned())
        .header("Etag", (msg.seq % 1000).to_string());
    if origin.is_some() {
        r = r.header("Access-Control-Expose-Headers", EXPOSE);
    }
    r.header("Vary", VARY)
}

/// A message's content type on `/sub/`: its publisher's, none for an nchan publish without
/// one (as nchan), and `text/plain` for the messages of the other protocols.
pub fn content_type(msg: &Message) -> Option<&str> {
    match (msg.content_type(), msg.origin) {
        (Some(ct), _) => Some(ct),
        (None, Origin::Nchan) => None,
        (None, _) => Some("text/plain"),
    }
}

/// `410 Gone` for a long-poll whose channel was deleted.
pub fn gone(ctx: &Ctx<'_>, poll: &Poll) -> Reply {
    let r = Reply::new(410, "", Vec::new()).header("Vary", VARY);
    with_cors(r, ctx, poll.origin.as_deref())
}

/// The id of a message, for a stream record.
fn write_id(out: &mut String, seq: u64) {
    write!(out, "{}:{}", seq / 1000, seq % 1000).ok();
}

#[cfg(test)]
mod tests;
