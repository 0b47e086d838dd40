//! Talk, the comet stream protocol (PROTOCOLS.md 3): `GET /pull` opens a chunked stream of
//! terminated records, `/push` publishes. The byte-exact pieces of the wire format live here;
//! the connection code only frames records into chunks.

use std::sync::Arc;

use super::stream::{HeadEnv, Pick, StreamKind};
use super::{channel_name, Action, Ctx, Reply, Request, StreamStart};
use crate::http::{self, Seg};
use crate::hub::{Draft, Format, Message, Origin};

/// The reply head of a headless pull, byte-exact.
pub const HEADLESS_PULL_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
/// The whole reply to a headless push, byte-exact: no header at all.
pub const HEADLESS_PUSH_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nnoop";
/// The final chunk that ends a stream.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The channel of a pull or push that names none.
pub const DEFAULT_CHANNEL: &str = "talk";

/// The `noop` record (greeting and keep-alive) for a terminator.
pub fn noop_record(terminator: u8) -> &'static [u8] {
    if terminator == 0 {
        b"noop\0"
    } else {
        b"noop\n"
    }
}

/// The record of a message: its body and the terminator, made once per message and
/// terminator and shared by every stream. `None` when the body holds the terminator and
/// cannot be framed.
pub fn record(msg: &Message, terminator: u8) -> Option<Arc<[u8]>> {
    let render = |msg: &Message| {
        if memchr::memchr(terminator, &msg.body).is_some() {
            return None;
        }
        let mut r = Vec::with_capacity(msg.body.len() + 1);
        r.extend_from_slice(&msg.body);
        r.push(terminator);
        Some(Arc::from(r))
    };
    match terminator {
        0 => msg.rendered(Format::TalkNul, render),
        b'\n' => msg.rendered(Format::TalkNewline, render),
        // No terminator the configuration can name; made each time, not cached.
        _ => render(msg),
    }
}

/// Whether the stream named `name` receives `msg`: a Talk push goes to every stream but
/// its sender's, or with `to` only to the stream of that name; messages from other
/// protocols go to every stream (their `to` is not a Talk name).
pub fn wants(msg: &Message, name: &str) -> bool {
    if msg.origin != Origin::Talk {
        return true;
    }
    if !msg.to.is_empty() {
        return msg.to == name;
    }
    msg.from != name
}

/// A Talk subscriber: its name, whether it asked for no headers, and the terminator.
#[derive(Debug)]
pub struct TalkStream {
    name: Box<str>,
    headless: bool,
    terminator: u8,
}

impl TalkStream {
    pub fn new(name: &str, headless: bool, terminator: u8) -> TalkStream {
        TalkStream {
            name: name.into(),
            headless,
            terminator,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reply head: byte-exact for headless clients, a full chunked head otherwise.
    pub fn head(&self, env: &HeadEnv<'_>) -> Seg {
        if self.headless {
            return Seg::Static(HEADLESS_PULL_HEAD);
        }
        let headers = [("Cache-Control", "no-cache".to_string())];
        env.chunked_head(env.cors_origin, "text/plain; charset=utf-8", &headers)
    }

    /// The message's record if this stream receives it (see `wants`).
    pub fn pick(&self, msg: &Message) -> Pick {
        if !wants(msg, &self.name) {
            return Pick::Skip;
        }
        match record(msg, self.terminator) {
            Some(r) => Pick::Take(Seg::Shared(r)),
            None => Pick::Unframeable,
        }
    }

    /// The `noop` record: greeting and keep-alive.
    pub fn keepalive(&self) -> Seg {
        Seg::Static(noop_record(self.terminator))
    }
}

/// Frames records into one chunk: `size CRLF records CRLF` (PROTOCOLS.md 3.3), so a client
/// reading the socket sees whole, batched chunks.
pub fn frame(records: &mut Vec<Seg>, bytes: usize, out: &mut dyn FnMut(Seg)) {
    if records.is_empty() {
        return;
    }
    out(Seg::Size(http::chunk_size_line(bytes)));
    for r in records.drain(..) {
        out(r);
    }
    out(Seg::Static(b"\r\n"));
}

fn text_param(req: &Request<'_>, key: &str) -> Result<Option<String>, Reply> {
    match req.param(key) {
        None => Ok(None),
        Some(v) => String::from_utf8(v.into_owned())
            .map(Some)
            .map_err(|_| Reply::text(400, format!("{key} is not UTF-8"))),
    }
}

fn channel(req: &Request<'_>) -> Result<String, Reply> {
    match req.param("channel") {
        None => Ok(DEFAULT_CHANNEL.to_string()),
        Some(raw) => channel_name(&raw).map(str::to_string),
    }
}

/// `GET /pull?name=N[&channel=C][&since=S]`: opens a stream.
pub fn pull(ctx: &Ctx<'_>, req: &Request<'_>) -> Action {
    let start = || -> Result<StreamStart, Reply> {
        let name = text_param(req, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Reply::text(400, "name is required"))?;
        if name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Reply::text(
                400,
                "name must be 1 to 255 bytes without control characters",
            ));
        }
        let since = match text_param(req, "since")? {
            None => None,
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| Reply::text(400, "since must be a non-negative integer"))?,
            ),
        };
        let channel = channel(req)?;
        ctx.authorize(&channel, req)?;
        let terminator = ctx.config.talk_terminator.byte();
        Ok(StreamStart {
            channel,
            since,
            kind: StreamKind::Talk(TalkStream::new(&name, req.headless, terminator)),
        })
    };
    match start() {
        Ok(s) => Action::Stream(s),
        Err(r) => Action::Reply(r),
    }
}

/// `POST /push` (form body, or no framing at all from headless clients) or `GET /push?…`:
/// stores `message` from `name` in the channel, for every stream but the sender's.
pub fn push(ctx: &Ctx<'_>, req: &Request<'_>) -> Reply {
    let publish = || -> Result<(), Reply> {
        let channel = channel(req)?;
        ctx.authorize(&channel, req)?;
        let message = req
            .param("message")
            .ok_or_else(|| Reply::text(400, "message is required"))?;
        if message.len() > ctx.config.max_message_bytes {
            return Err(Reply::text(413, "message too large"));
        }
        if memchr::memchr(ctx.config.talk_terminator.byte(), &message).is_some() {
            return Err(Reply::text(400, "message holds the stream terminator"));
        }
        let from = text_param(req, "name")?.unwrap_or_default();
        let to = text_param(req, "to")?.unwrap_or_default();
        let draft = Draft {
            from,
            to,
            ..Draft::with_body(message.into_owned())
        };
        ctx.publish(&channel, vec![draft], Origin::Talk, false)
            .map_err(Reply::hub_error)?;
        Ok(())
    };
    match publish() {
        Ok(()) if req.headless => {
            let mut r = Reply::new(200, "", HEADLESS_PUSH_REPLY);
            r.raw = true;
            r
        }
        Ok(()) => Reply::new(200, "text/plain; charset=utf-8", &b"noop"[..]),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Draft;

    fn msg(origin: Origin, from: &str, to: &str, body: &str) -> Message {
        let d = Draft {
            from: from.into(),
            to: to.into(),
            ..Draft::with_body(body)
        };
        Message::new(1, "id".into(), 0, origin, d)
    }

    #[test]
    fn routing_rules() {
        let broadcast = msg(Origin::Talk, "alice", "", "hi");
        assert!(wants(&broadcast, "bob"));
        assert!(!wants(&broadcast, "alice"));
        let direct = msg(Origin::Talk, "alice", "bob", "hi");
        assert!(wants(&direct, "bob"));
        assert!(!wants(&direct, "carol"));
        let sms = msg(Origin::Qst, "sms://1", "sms://2", "hi");
        assert!(wants(&sms, "carol"));
    }

    #[test]
    fn a_batch_is_one_chunk() {
        let mut records = vec![
            Seg::Static(b"noop\0"),
            Seg::Shared(Arc::from(&b"hello\0"[..])),
        ];
        let mut out = Vec::new();
        frame(&mut records, 11, &mut |s| out.extend_from_slice(s.bytes()));
        assert_eq!(out, b"b\r\nnoop\0hello\0\r\n");
        assert!(records.is_empty());
        frame(&mut records, 0, &mut |_| {
            panic!("an empty batch frames nothing")
        });
    }

    #[test]
    fn records_are_shared_and_refuse_the_terminator() {
        let m = msg(Origin::Talk, "a", "", "hello");
        let r1 = record(&m, 0).unwrap();
        let r2 = record(&m, 0).unwrap();
        assert_eq!(&*r1, b"hello\0");
        assert!(Arc::ptr_eq(&r1, &r2));
        let bad = msg(Origin::Qst, "a", "", "a\0b");
        assert!(record(&bad, 0).is_none());
        let nl = msg(Origin::Qst, "a", "", "two\nlines");
        assert!(record(&nl, b'\n').is_none());
        // One message, two terminators: each has its own record.
        assert_eq!(&*record(&nl, 0).unwrap(), b"two\nlines\0");
        assert!(record(&nl, b'\n').is_none());
        let both = msg(Origin::Talk, "a", "", "hi");
        assert_eq!(&*record(&both, b'\n').unwrap(), b"hi\n");
        assert_eq!(&*record(&both, 0).unwrap(), b"hi\0");
    }
}
