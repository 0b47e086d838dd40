//! Protocols: turn a parsed request into an `Action` (reply now, open a stream, park), and
//! render messages into each protocol's bytes. Pure functions over the hub: no sockets.

pub mod auth;
pub mod comet;
pub mod message;
pub mod nchan;
pub mod qst;
pub mod stream;
pub mod talk;
pub mod websocket;
pub mod xmlref;
pub mod xmpp;

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::http::{self, Head, Method};
use crate::hub::{Draft, Hub, HubError, Message, Origin, WaiterRef};
use crate::metrics::{Metrics, Proto};

/// What the server needs from its surroundings to answer a request.
pub struct Ctx<'a> {
    pub hub: &'a Hub,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    pub auth: &'a auth::Auth,
    /// Under `--fsync always`: the log position the answer must wait for (0: none). Set by
    /// `publish`; the connection reads it after `handle`.
    pub wait: Cell<crate::storage::Lsn>,
    /// The live figures of `/status.json`.
    pub status: &'a crate::status::Status,
    /// The connection answering, for an answer that comes later by mail (`--redis`).
    pub publisher: Cell<Option<WaiterRef>>,
    /// With `--redis`: what to answer once Redis has answered (a publish's `seq`, a QST
    /// pull), instead of the reply the handler returned (see `Ctx::redis_then`).
    pub then: Cell<Option<Then>>,
    /// Set by the connection: a publish may be answered behind its worker's deliveries
    /// (no request is pipelined behind it, whose messages would then go out one pass each
    /// instead of together).
    pub may_follow_fanout: Cell<bool>,
    /// The answer comes as `Mail::Synced` (Redis's answer, or the mail behind the worker's
    /// deliveries: `answer_after_fanout`): the connection holds the reply (or `then`) until
    /// it does.
    pub by_mail: Cell<bool>,
}

/// What a request waiting for Redis does with its answer: reply, or park (a QST
/// long-poll that found its queue empty).
pub type Then = Box<dyn FnOnce(crate::hub::Answer) -> Action + Send>;

impl Ctx<'_> {
    /// Publishes a batch through the hub (`Hub::publish`). Under `--fsync always` the
    /// batch's subscribers hear of it once it is on disk, and `wait` notes where the
    /// answer must wait for.
    pub fn publish(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
    ) -> Result<Vec<Arc<Message>>, HubError> {
        if self.hub.shared_in_redis(channel) {
            let publisher = self.publisher.get();
            let stored = self
                .hub
                .publish_redis(channel, drafts, origin, queue, publisher)?;
            self.wait_for_redis();
            return Ok(stored);
        }
        let posted = self.hub.publish_lsn(channel, drafts, origin, queue)?;
        self.wait_for(posted.lsn);
        let seq = posted.stored.last().map_or(0, |m| m.seq);
        self.answer_after_fanout(posted.workers, seq);
        Ok(posted.stored)
    }

    /// `Hub::publish_with_info` (nchan's `/pub/`), noting the record to wait for as
    /// `publish` does.
    pub fn publish_with_info(
        &self,
        channel: &str,
        draft: Draft,
        origin: Origin,
    ) -> Result<crate::hub::ChannelInfo, HubError> {
        if self.hub.shared_in_redis(channel) {
            let publisher = self.publisher.get();
            let info = self
                .hub
                .publish_redis_with_info(channel, draft, publisher)?;
            self.wait_for_redis();
            return Ok(info);
        }
        let (info, lsn, workers) = self.hub.publish_with_info(channel, draft, origin)?;
        self.wait_for(lsn);
        self.answer_after_fanout(workers, info.last_seq.unwrap_or(0));
        Ok(info)
    }

    /// A publisher whose own worker holds subscribers of the channel is answered after their
    /// deliveries, as nchan answers after its fan-out: its answer goes to its worker's
    /// mailbox behind the deliveries just posted there, so the connection is flushed after
    /// theirs. A back-to-back publisher then sends its next message once this one is out,
    /// rather than while the pass is still writing it (issue 12: with 10,000 subscribers,
    /// answering first made each pass carry a dozen messages and doubled the latency). Not
    /// with requests pipelined behind it: those are read at once and their messages share
    /// the subscribers' writes.
    fn answer_after_fanout(&self, workers: u64, seq: u64) {
        let Some(p) = self.publisher.get() else {
            return;
        };
        let here = workers & (1 << p.worker) != 0;
        if !here || !self.may_follow_fanout.get() || self.wait.get() != 0 {
            return;
        }
        let answer = Ok(crate::hub::Answer::Stored { seq });
        self.hub.send(
            p.worker,
            crate::hub::Mail::Synced {
                token: p.token,
                result: answer,
            },
        );
        self.by_mail.set(true);
    }

    /// With `--redis`, for a request whose answer is Redis's (a QST pull, a comet `sync`):
    /// the connection waits for it and answers what `then` makes of it. The action to
    /// reply to return from the handler: a placeholder, never sent.
    pub fn redis_then(&self, then: Then) -> Reply {
        self.then.set(Some(then));
        self.by_mail.set(true);
        Reply::new(200, "", Vec::new())
    }

    /// The connection to answer later, for a request that waits for Redis; `503` when
    /// there is none (a request not on a connection of its own).
    pub fn waiting_connection(&self) -> Result<WaiterRef, Reply> {
        self.publisher
            .get()
            .ok_or_else(|| Reply::hub_error(HubError::Redis))
    }

    /// With `--redis`, the answer waits for Redis's (when there is a connection to give it
    /// to).
    fn wait_for_redis(&self) {
        if self.publisher.get().is_some() {
            self.by_mail.set(true);
        }
    }

    /// Under `--fsync always`, the answer waits for the record ending at `lsn` too.
    fn wait_for(&self, lsn: crate::storage::Lsn) {
        if self.hub.waits_for_storage() {
            self.wait.set(self.wait.get().max(lsn));
        }
    }

    /// `Ok` if the request may use the channel; else the `401` to answer (and counted).
    /// Call before anything with a side effect.
    pub fn authorize(&self, channel: &str, req: &Request<'_>) -> Result<(), Reply> {
        let authorization = req.head.authorization.map(|s| s.of(req.buf));
        self.auth
            .check(channel, authorization)
            .inspect_err(|_| self.metrics.auth_failures.inc())
    }
}

/// One complete request: its head, the buffer the head's spans point into, and its body.
pub struct Request<'a> {
    pub head: &'a Head,
    pub buf: &'a [u8],
    pub body: &'a [u8],
    /// This request, or an earlier one on its connection, carried a `Head:` header.
    pub headless: bool,
}

impl<'a> Request<'a> {
    pub fn path(&self) -> &'a [u8] {
        self.head.path.of(self.buf)
    }

    pub fn query(&self) -> &'a [u8] {
        self.head.query.of(self.buf)
    }

    /// A parameter from the query string, or else from a form-encoded body.
    pub fn param(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        http::form_get(self.query(), name).or_else(|| {
            if self.is_form() || self.head.content_type.is_none() {
                http::form_get(self.body, name)
            } else {
                None
            }
        })
    }

    /// The value of a request header (the first of that name), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        http::header(self.buf.get(..self.head.len).unwrap_or(&[]), name)
    }

    fn is_form(&self) -> bool {
        self.head.content_type.is_some_and(|s| {
            let v = s.of(self.buf);
            v.len() >= 33 && v[..33].eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        })
    }
}

/// A response decided now.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
    pub headers: Vec<(&'static str, String)>,
    /// The body is the whole response, byte-exact, with no head added (Talk headless push).
    pub raw: bool,
    /// `Access-Control-Allow-Origin` instead of `--cors-origin` (empty: none), for
    /// nchan's endpoints, which echo the request's `Origin`.
    pub cors: Option<String>,
}

impl Reply {
    pub fn new(
        status: u16,
        content_type: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            raw: false,
            cors: None,
        }
    }

    /// A short `text/plain` answer: the error bodies of every protocol.
    pub fn text(status: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        let mut body = match text.into() {
            Cow::Borrowed(s) => s.as_bytes().to_vec(),
            Cow::Owned(s) => s.into_bytes(),
        };
        body.push(b'\n');
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The answer to a refusal by the hub.
    pub fn hub_error(e: HubError) -> Reply {
        match e {
            HubError::Reserved => Reply::text(403, e.to_string()),
            _ => Reply::text(503, e.to_string()).header("Retry-After", "1"),
        }
    }
}

/// Open a stream on a channel.
#[derive(Debug)]
pub struct StreamStart {
    pub channel: String,
    /// Start with the retained messages after this `seq`.
    pub since: Option<u64>,
    pub kind: stream::StreamKind,
}

/// Hold a request until its channel has something for it, or its timeout.
#[derive(Debug)]
pub struct Park {
    pub channel: String,
    pub timeout: Duration,
    pub kind: ParkKind,
}

#[derive(Debug)]
pub enum ParkKind {
    /// A comet `get` after `cursor`.
    Comet {
        cursor: u64,
        callback: Option<String>,
    },
    /// A QST `long-polling=true` pull.
    Qst(qst::Pull),
    /// An nchan `/sub/` long-poll.
    Nchan(nchan::Poll),
}

impl Park {
    /// What the answer of a park depends on besides its channel, when that is all (a
    /// comet `get`: its cursor and callback; an nchan long-poll: its cursor and `Origin`):
    /// every such park woken by the same message gets the same bytes, so a worker renders
    /// them once. `None` for a QST pull (it changes the queue).
    pub fn shared_answer(&self) -> Option<SharedAnswer<'_>> {
        match &self.kind {
            ParkKind::Comet { cursor, callback } => Some(SharedAnswer {
                nchan: false,
                cursor: *cursor,
                text: callback.as_deref(),
            }),
            ParkKind::Nchan(poll) => Some(SharedAnswer {
                nchan: true,
                cursor: poll.cursor,
                text: poll.origin.as_deref(),
            }),
            ParkKind::Qst(_) => None,
        }
    }
}

/// The key of an answer shared by parks of one channel (see `Park::shared_answer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedAnswer<'a> {
    /// An nchan long-poll (else a comet `get`).
    pub nchan: bool,
    pub cursor: u64,
    /// The comet callback, or the nchan `Origin`.
    pub text: Option<&'a str>,
}

impl SharedAnswer<'_> {
    fn matches(&self, e: &WakeEntry) -> bool {
        e.nchan == self.nchan && e.cursor == self.cursor && e.text.as_deref() == self.text
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Action {
    Reply(Reply),
    Stream(StreamStart),
    Park(Park),
    /// A BOSH request (PROTOCOLS.md 4.5): its session answers it, now or when it has
    /// something to say.
    Bosh(Box<xmpp::bosh::Request>),
}

/// The answer to a parked request once its channel changed, or at its timeout (then
/// always `Some`). `None`: keep waiting. The connection subscribes before the first call,
/// so nothing published after the park was decided can be missed.
pub fn resume(ctx: &Ctx<'_>, park: &Park, timed_out: bool) -> Option<Reply> {
    match park.kind {
        ParkKind::Comet { .. } => comet::resume(ctx, park, timed_out),
        ParkKind::Qst(_) => qst::resume(ctx, park, timed_out),
        ParkKind::Nchan(ref poll) => nchan::resume(ctx, park, poll, timed_out),
    }
}

/// The answer last given to a parked request whose answer depends only on its channel,
/// cursor and callback (a comet `get`, an nchan long-poll), reused for the other such
/// requests woken by the same delivery (DESIGN rule 3: render once, share): as the same
/// response bytes for those whose request had the same form. A worker keeps one and clears
/// it before and after each delivered message (the cached `Date` is the same meanwhile).
#[derive(Default)]
pub struct WakeCache {
    entry: Option<WakeEntry>,
}

struct WakeEntry {
    channel: String,
    nchan: bool,
    cursor: u64,
    text: Option<String>,
    reply: Reply,
    /// `reply` encoded for requests of this form.
    encoded: Option<(Form, Arc<[u8]>)>,
}

/// What of a request its response's bytes depend on, besides the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Form {
    pub method: Method,
    pub minor: u8,
    pub keep_alive: bool,
}

impl WakeCache {
    /// Forgets the cached answer (the channel changed since).
    pub fn clear(&mut self) {
        self.entry = None;
    }

    /// `resume` through the cache, as the response's status and bytes (`encode` makes them
    /// from a reply): a woken comet `get` or nchan long-poll whose channel and key
    /// (`Park::shared_answer`) match the cached answer gets its bytes, shared when its
    /// request had the same form; the first one renders and fills it. A timeout is always
    /// answered fresh.
    pub fn answer(
        &mut self,
        ctx: &Ctx<'_>,
        park: &Park,
        timed_out: bool,
        form: Form,
        encode: impl FnOnce(&Reply) -> Vec<u8>,
    ) -> Option<(u16, http::Seg)> {
        let key = if timed_out {
            None
        } else {
            park.shared_answer()
        };
        let Some(key) = key else {
            let reply = resume(ctx, park, timed_out)?;
            return Some((reply.status, http::Seg::Owned(encode(&reply))));
        };
        let hit = self
            .entry
            .as_mut()
            .filter(|e| e.channel == park.channel && key.matches(e));
        let e = match hit {
            Some(e) => {
                if key.nchan {
                    // Counted per answer, as `nchan::resume` counts the first.
                    ctx.metrics.messages_delivered.inc();
                }
                e
            }
            None => self.entry.insert(WakeEntry {
                channel: park.channel.clone(),
                nchan: key.nchan,
                cursor: key.cursor,
                text: key.text.map(str::to_string),
                reply: resume(ctx, park, timed_out)?,
                encoded: None,
            }),
        };
        let bytes = match &e.encoded {
            Some((f, bytes)) if *f == form => bytes.clone(),
            _ => {
                let bytes: Arc<[u8]> = Arc::from(encode(&e.reply));
                e.encoded = Some((form, bytes.clone()));
                bytes
            }
        };
        Some((e.reply.status, http::Seg::Shared(bytes)))
    }
}

/// Checks a channel name (PROTOCOLS.md 0.3): 1–255 bytes of UTF-8 without control characters.
pub fn channel_name(raw: &[u8]) -> Result<&str, Reply> {
    let name =
        std::str::from_utf8(raw).map_err(|_| Reply::text(400, "channel name is not UTF-8"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(Reply::text(400, "channel name must be 1 to 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(Reply::text(400, "channel name holds a control character"));
    }
    Ok(name)
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Reply::text(405, "method not allowed").header("Allow", allow)
}

/// Routes a request to its protocol. Returns the protocol (for metrics) and the action.
pub fn handle(ctx: &Ctx<'_>, req: &Request<'_>) -> (Proto, Action) {
    let path = req.path();
    let method = req.head.method;
    if let Some(action) = nchan::handle(ctx, req) {
        return (Proto::Nchan, action);
    }
    if method == Method::Options {
        return (Proto::Other, Action::Reply(preflight(ctx, req)));
    }
    if let Some(action) = qst::handle(ctx, req) {
        return (Proto::Qst, action);
    }
    let reply = match path {
        b"/pull" => {
            return (
                Proto::Talk,
                match method {
                    Method::Get => talk::pull(ctx, req),
                    _ => Action::Reply(method_not_allowed("GET, OPTIONS")),
                },
            )
        }
        b"/push" => {
            return (
                Proto::Talk,
                Action::Reply(match method {
                    Method::Get | Method::Post => talk::push(ctx, req),
                    _ => method_not_allowed("GET, POST, OPTIONS"),
                }),
            )
        }
        b"/comet" => {
            return (
                Proto::Comet,
                match method {
                    Method::Get | Method::Post | Method::Head => comet::handle(ctx, req),
                    _ => Action::Reply(method_not_allowed("GET, HEAD, POST, OPTIONS")),
                },
            )
        }
        b"/http-bind" | b"/bosh" | b"/bosh/http-bind" => {
            return (Proto::Other, xmpp::bosh::handle(ctx, req))
        }
        b"/" => static_file(method, "text/html; charset=utf-8", STATUS_HTML),
        b"/status.json" => match method {
            Method::Get | Method::Head => {
                let body = ctx.status.snapshot(ctx.metrics);
                Reply::new(200, "application/json", body.into_bytes())
                    .header("Cache-Control", "no-store")
            }
            _ => method_not_allowed("GET, HEAD, OPTIONS"),
        },
        b"/tidings.js" => static_file(method, "application/javascript; charset=utf-8", TIDINGS_JS),
        b"/demo" | b"/demo/" => static_file(method, "text/html; charset=utf-8", CHAT_HTML),
        b"/demo/xmpp.html" => static_file(method, "text/html; charset=utf-8", XMPP_HTML),
        b"/demo/demo.css" => static_file(method, "text/css; charset=utf-8", DEMO_CSS),
        b"/demo/strophe.js" => {
            static_file(method, "application/javascript; charset=utf-8", STROPHE_JS)
        }
        b"/health" => match method {
            Method::Get | Method::Head => match ctx.hub.redis_up() {
                // Serving what it can: parked and streaming clients stay, publishes get 503.
                Some(false) => Reply::text(200, "degraded: Redis is unreachable"),
                _ => Reply::text(200, "ok"),
            },
            _ => method_not_allowed("GET, HEAD, OPTIONS"),
        },
        b"/metrics" => match method {
            Method::Get | Method::Head => {
                Reply::new(200, "text/plain; version=0.0.4; charset=utf-8", {
                    let mut text = ctx.metrics.render();
                    ctx.hub.render_redis_metrics(&mut text);
                    text.into_bytes()
                })
            }
            _ => method_not_allowed("GET, HEAD, OPTIONS"),
        },
        _ => Reply::text(404, "not found"),
    };
    (Proto::Other, Action::Reply(reply))
}

/// The browser comet client, compiled into the binary.
pub const TIDINGS_JS: &[u8] = include_bytes!("../../web/tidings.js");
/// The chat demo page, compiled into the binary.
pub const CHAT_HTML: &[u8] = include_bytes!("../../web/chat.html");
/// The status page served at `/` (live figures from `/sub/tidings/status` or
/// `/status.json`), compiled into the binary.
pub const STATUS_HTML: &[u8] = include_bytes!("../../web/status.html");
/// The XMPP demo page (BOSH, urn:M, PubSub with strophe.js), compiled into the binary.
pub const XMPP_HTML: &[u8] = include_bytes!("../../web/xmpp.html");
/// The style sheet both demo pages share.
pub const DEMO_CSS: &[u8] = include_bytes!("../../web/demo.css");
/// strophe.js's browser build, vendored from its npm package (README: "The XMPP demo page").
pub const STROPHE_JS: &[u8] = include_bytes!("../../web/vendor/strophe.umd.min.js");

fn static_file(method: Method, content_type: &'static str, body: &'static [u8]) -> Reply {
    match method {
        Method::Get | Method::Head => {
            Reply::new(200, content_type, body).header("Cache-Control", "public, max-age=300")
        }
        _ => method_not_allowed("GET, HEAD, OPTIONS"),
    }
}

/// The answer to a CORS preflight (`OPTIONS`).
fn preflight(ctx: &Ctx<'_>, req: &Request<'_>) -> Reply {
    let _ = ctx;
    let mut r = Reply::new(204, "", Vec::new())
        .header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
        .header("Access-Control-Max-Age", "86400");
    let asked = req.head.request_headers.map(|s| s.of(req.buf)).filter(|v| {
        v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b",- _".contains(&b))
    });
    let allow = match asked {
        Some(v) if !v.is_empty() => String::from_utf8_lossy(v).into_owned(),
        _ => "Authorization, Content-Type, If-None-Match, Head".to_string(),
    };
    r.headers.push(("Access-Control-Allow-Headers", allow));
    r
}
