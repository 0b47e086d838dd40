//! BOSH (XEP-0124 with XEP-0206; PROTOCOLS.md 4.5): XMPP sessions for web pages, over HTTP
//! requests to `/http-bind`. This is the pure half: reading a request's `<body>`, writing
//! the answers, the `rid` window, and the shared table of session ids. The session itself
//! lives on one worker as a connection without a socket (`conn::bosh`), running the same
//! `Session` machine as a TCP stream.

use crate::sync::lock;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::session::NS_STREAM;
use super::stanza::{self, escape};
use super::tokenizer::{Token, Tokenizer};
use crate::hub::WaiterRef;
use crate::proto::{Action, Ctx, Reply, Request as HttpRequest};

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// Requests a client may have at the server at once: also the width of the `rid` window.
pub const REQUESTS: u64 = 2;
/// Requests held at most with nothing to answer.
pub const HOLD: usize = 1;
/// The shortest interval between polls the client may use (`polling`).
pub const POLLING_SECS: u64 = 2;
/// Answers kept for a repeated `rid`: a client can only repeat one of its last `REQUESTS`.
/// (Each answer kept costs its bytes: four made an idle session 1 KB larger, RESULTS.md 14.)
const REPLAY: usize = REQUESTS as usize;
/// The largest `rid` (XEP-0124 §14: 2^53 - 1). A larger one is refused, so the window's
/// `rid + 1` and `rid + REQUESTS` cannot overflow.
pub const MAX_RID: u64 = (1 << 53) - 1;
/// The content type of every answer.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// One request's `<body>`: its attributes and the stanzas it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub sid: Option<String>,
    pub rid: u64,
    /// `type='terminate'`.
    pub terminate: bool,
    /// `xmpp:restart='true'`.
    pub restart: bool,
    /// The longest time (seconds) the client lets the server hold a request.
    pub wait: Option<u64>,
    pub hold: Option<u64>,
    pub to: Option<String>,
    /// The stanzas inside `<body>`, as they arrived.
    pub payload: Vec<u8>,
}

/// Reads a request body. `Err`: what is wrong with it (a `400`).
pub fn parse(body: &[u8], max_stanza: usize) -> Result<Request, &'static str> {
    // The tokenizer checks the restricted XML of RFC 6120, the nesting depth and each
    // stanza's size before anything is parsed into a tree.
    let mut tokenizer = Tokenizer::new(max_stanza);
    let mut open: Option<Range<usize>> = None;
    let mut payload = 0..0;
    let mut pos = 0;
    loop {
        let token = tokenizer
            .next(&body[pos..])
            .map_err(|_| "the body is not well-formed restricted XML")?;
        let Some(token) = token else {
            return Err("the body ends before </body>");
        };
        match token {
            Token::StreamOpen { end } => {
                open = Some(pos..pos + end);
                payload = pos + end..pos + end;
                pos += end;
                tokenizer.consumed(end);
            }
            Token::EmptyRoot { end } => {
                open = Some(pos..pos + end);
                pos += end;
                break;
            }
            Token::Stanza { end, .. } => {
                payload.end = pos + end;
                pos += end;
                tokenizer.consumed(end);
            }
            Token::StreamClose { end } => {
                pos += end;
                break;
            }
        }
    }
    if body[pos..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err("text after </body>");
    }
    let open = open.ok_or("no <body> element")?;
    let tag = std::str::from_utf8(&body[open.clone()]).map_err(|_| "the body is not UTF-8")?;
    let start = tag.rfind("<body").ok_or("the root element is not <body>")?;
    let tag = tag[start..]
        .trim_end_matches('>')
        .trim_end_matches('/')
        .to_string();
    let el = stanza::parse(format!("{tag}/>").as_bytes()).map_err(|_| "a bad <body> tag")?;
    if el.name != "body" {
        return Err("the root element is not <body>");
    }
    if el.ns() != Some(NS_HTTPBIND) {
        return Err("<body> is not in the httpbind namespace");
    }
    let number = |name: &str| -> Result<Option<u64>, &'static str> {
        el.attr(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| "a number attribute is not a number")
            })
            .transpose()
    };
    let rid = number("rid")?.ok_or("no rid")?;
    if rid > MAX_RID {
        return Err("rid is above 2^53 - 1");
    }
    let restart = el
        .attrs
        .iter()
        .any(|(k, v)| k.rsplit(':').next() == Some("restart") && k.contains(':') && v == "true");
    Ok(Request {
        sid: el.attr("sid").map(str::to_string),
        rid,
        terminate: el.attr("type") == Some("terminate"),
        restart,
        wait: number("wait")?,
        hold: number("hold")?,
        to: el.attr("to").map(str::to_string),
        payload: body[payload].to_vec(),
    })
}

/// `POST /http-bind`: a request for a session, answered by that session (`Action::Bosh`).
pub fn handle(ctx: &Ctx<'_>, req: &HttpRequest<'_>) -> Action {
    use crate::http::Method;
    if req.head.method != Method::Post {
        return Action::Reply(
            Reply::text(405, "method not allowed").header("Allow", "POST, OPTIONS"),
        );
    }
    match parse(req.body, ctx.config.max_message_bytes) {
        Ok(r) => Action::Bosh(Box::new(r)),
        Err(why) => {
            ctx.metrics.bad_requests.inc();
            Action::Reply(Reply::text(400, why))
        }
    }
}

/// The answer to a session request: the session's parameters and the stream's features.
pub fn created(
    sid: &str,
    wait: u64,
    hold: usize,
    inactivity: u64,
    domain: &str,
    authid: &str,
    features: &str,
) -> Vec<u8> {
    let mut out = String::with_capacity(512 + features.len());
    write!(
        out,
        "<body sid='{sid}' wait='{wait}' requests='{REQUESTS}' hold='{hold}' inactivity='{inactivity}' polling='{POLLING_SECS}' ver='1.6' from='{}' authid='{}' xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{NS_STREAM}'>{features}</body>",
        escape(domain),
        escape(authid)
    )
    .ok();
    out.into_bytes()
}

/// An answer carrying these stanzas (none: an empty `<body/>`).
pub fn answer(stanzas: &[u8]) -> Vec<u8> {
    if stanzas.is_empty() {
        return format!("<body xmlns='{NS_HTTPBIND}'/>").into_bytes();
    }
    let head = format!("<body xmlns='{NS_HTTPBIND}' xmlns:stream='{NS_STREAM}'>");
    let mut out = Vec::with_capacity(head.len() + stanzas.len() + 7);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(stanzas);
    out.extend_from_slice(b"</body>");
    out
}

/// The answer that ends a session, with a condition (XEP-0124 17) and what was left to say.
pub fn terminate(condition: Option<&str>, stanzas: &[u8]) -> Vec<u8> {
    let mut head = String::from("<body type='terminate'");
    if let Some(c) = condition {
        write!(head, " condition='{c}'").ok();
    }
    write!(head, " xmlns='{NS_HTTPBIND}'").ok();
    if stanzas.is_empty() {
        head.push_str("/>");
        return head.into_bytes();
    }
    write!(head, " xmlns:stream='{NS_STREAM}'>").ok();
    let mut out = head.into_bytes();
    out.extend_from_slice(stanzas);
    out.extend_from_slice(b"</body>");
    out
}

/// Where a request's `rid` stands in its session.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// The next `rid`: run it now (then `drain_early`).
    Next,
    /// Ahead of a missing one, inside the window: it waits for the missing one.
    Early,
    /// Answered before: the same answer again.
    Replay(Arc<[u8]>),
    /// Run already and not answered yet (held): the new request takes its place.
    Held,
    /// Outside the window, or too old to replay: the session ends with `item-not-found`.
    Outside,
}

/// The `rid` bookkeeping of one session: what comes next, what arrived early, and the last
/// answers for a client that repeats a request whose answer it lost.
#[derive(Debug)]
pub struct Window<T> {
    /// The `rid` the session runs next.
    next: u64,
    early: BTreeMap<u64, T>,
    answered: VecDeque<(u64, Arc<[u8]>)>,
}

impl<T> Window<T> {
    /// A session whose creation request had `rid`.
    pub fn new(rid: u64) -> Window<T> {
        Window {
            next: rid.saturating_add(1),
            early: BTreeMap::new(),
            answered: VecDeque::new(),
        }
    }

    /// Places a request by its `rid`. `Next` counts it as run; an `Early` one must be given
    /// to `keep` until its turn.
    pub fn admit(&mut self, rid: u64) -> Admit {
        if rid == self.next {
            self.next += 1;
            return Admit::Next;
        }
        if rid < self.next {
            if let Some((_, body)) = self.answered.iter().find(|(r, _)| *r == rid) {
                return Admit::Replay(body.clone());
            }
            // Run but not answered: it is held (or the answer was dropped from the buffer).
            if rid + REQUESTS >= self.next {
                return Admit::Held;
            }
            return Admit::Outside;
        }
        if rid - self.next < REQUESTS {
            return Admit::Early;
        }
        Admit::Outside
    }

    /// Keeps an early request until its turn (a repeat replaces it).
    pub fn keep(&mut self, rid: u64, request: T) {
        self.early.insert(rid, request);
    }

    /// The early request whose turn has come, if any (counted as run).
    pub fn next_early(&mut self) -> Option<(u64, T)> {
        let request = self.early.remove(&self.next)?;
        let rid = self.next;
        self.next += 1;
        Some((rid, request))
    }

    /// Keeps the answer to `rid` for a repeat.
    pub fn answered(&mut self, rid: u64, body: Arc<[u8]>) {
        if self.answered.len() == REPLAY {
            self.answered.pop_front();
        }
        self.answered.push_back((rid, body));
    }

    /// Requests that arrived early.
    pub fn early(&self) -> impl Iterator<Item = &T> {
        self.early.values()
    }
}

/// Every BOSH session of the server by `sid`, and where it lives: shared by all workers, so
/// a request reaches its session on whatever worker took the connection.
#[derive(Default)]
pub struct Sessions {
    by_sid: Mutex<HashMap<Box<str>, WaiterRef>>,
}

impl Sessions {
    /// Registers a new session; `None` past `max` sessions.
    pub fn insert(&self, max: usize, at: WaiterRef) -> Option<Arc<str>> {
        let mut by_sid = lock(&self.by_sid);
        if by_sid.len() >= max {
            return None;
        }
        let sid: Arc<str> = Arc::from(new_sid());
        by_sid.insert(Box::from(&*sid), at);
        Some(sid)
    }

    pub fn find(&self, sid: &str) -> Option<WaiterRef> {
        lock(&self.by_sid).get(sid).copied()
    }

    pub fn remove(&self, sid: &str) {
        lock(&self.by_sid).remove(sid);
    }

    pub fn len(&self) -> usize {
        lock(&self.by_sid).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 128 random bits, hex: unguessable.
fn new_sid() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // The OS always has randomness here; a failure is a broken host.
        panic!("no randomness from the operating system");
    }
    let mut s = String::with_capacity(32);
    for x in b {
        write!(s, "{x:02x}").ok();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65536;

    #[test]
    fn reads_a_session_request_and_an_empty_body() {
        let r = parse(b"<body rid='1573741820' to='localhost' wait='60' hold='1' ver='1.6' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>", MAX).unwrap();
        assert_eq!(r.rid, 1573741820);
        let top = parse(
            b"<body rid='9007199254740991' xmlns='http://jabber.org/protocol/httpbind'/>",
            MAX,
        );
        assert_eq!(top.map(|r| r.rid), Ok(MAX_RID));
        assert_eq!(r.sid, None);
        assert_eq!(r.wait, Some(60));
        assert_eq!(r.hold, Some(1));
        assert_eq!(r.to.as_deref(), Some("localhost"));
        assert!(r.payload.is_empty());
        assert!(!r.terminate && !r.restart);
    }

    #[test]
    fn reads_stanzas_restart_and_terminate() {
        let body = b"<?xml version='1.0'?><body rid='7' sid='abc' xmlns='http://jabber.org/protocol/httpbind'>\n<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq><presence/></body>\n";
        let r = parse(body, MAX).unwrap();
        assert_eq!(r.sid.as_deref(), Some("abc"));
        assert_eq!(
            r.payload,
            b"\n<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq><presence/>"
        );
        let r = parse(b"<body rid='8' sid='abc' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh' xmlns='http://jabber.org/protocol/httpbind'/>", MAX).unwrap();
        assert!(r.restart);
        let r = parse(
            b"<body rid='9' sid='abc' type='terminate' xmlns='http://jabber.org/protocol/httpbind'><presence type='unavailable'/></body>",
            MAX,
        )
        .unwrap();
        assert!(r.terminate);
        assert_eq!(r.payload, b"<presence type='unavailable'/>");
    }

    #[test]
    fn refuses_what_is_not_a_body() {
        for bad in [
            &b""[..],
            b"hello",
            b"<body rid='1'/>",
            b"<body xmlns='http://jabber.org/protocol/httpbind'/>",
            b"<body rid='x' xmlns='http://jabber.org/protocol/httpbind'/>",
            b"<body rid='9007199254740992' xmlns='http://jabber.org/protocol/httpbind'/>",
            b"<body rid='18446744073709551615' xmlns='http://jabber.org/protocol/httpbind'/>",
            b"<bodyx rid='1' xmlns='http://jabber.org/protocol/httpbind'/>",
            b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><iq>",
            b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'></body>junk",
            b"<!DOCTYPE x><body rid='1' xmlns='http://jabber.org/protocol/httpbind'/>",
            b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><a>&lol;</a></body>",
        ] {
            assert!(
                parse(bad, MAX).is_err(),
                "{:?} was read",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_window_orders_replays_and_refuses() {
        let mut w: Window<&str> = Window::new(10);
        assert_eq!(w.admit(11), Admit::Next);
        // 13 is early (12 is missing); 14 is outside the window of 2.
        assert_eq!(w.admit(13), Admit::Early);
        w.keep(13, "c");
        assert_eq!(w.next_early(), None);
        assert_eq!(w.admit(14), Admit::Outside);
        assert_eq!(w.admit(12), Admit::Next);
        assert_eq!(w.next_early(), Some((13, "c")));
        assert_eq!(w.next_early(), None);
        // 13 ran and is not answered: held. Answered rids replay.
        assert_eq!(w.admit(13), Admit::Held);
        w.answered(12, Arc::from(&b"<body/>"[..]));
        assert_eq!(w.admit(12), Admit::Replay(Arc::from(&b"<body/>"[..])));
        assert_eq!(w.admit(3), Admit::Outside);
    }

    #[test]
    fn answers_are_framed() {
        assert_eq!(
            answer(b""),
            b"<body xmlns='http://jabber.org/protocol/httpbind'/>"
        );
        assert_eq!(
            terminate(Some("item-not-found"), b""),
            b"<body type='terminate' condition='item-not-found' xmlns='http://jabber.org/protocol/httpbind'/>"
        );
        let sids: std::collections::HashSet<String> = (0..100).map(|_| new_sid()).collect();
        assert_eq!(sids.len(), 100);
        assert!(sids.iter().all(|s| s.len() == 32));
    }
}
