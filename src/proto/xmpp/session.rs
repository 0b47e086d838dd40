//! The XMPP session machine (PROTOCOLS.md 4.1), sans-io: stanzas in, bytes and actions out.
//!
//! ```text
//! Connected ── header ──► Authenticating ── <success/> ──► Authenticated ── header ──► Open
//!                │ 3 failures / stanza before auth / stream error ──────────────► Closed
//! ```
//!
//! A session is fed what the connection read (`feed`); it finds stanzas with the tokenizer,
//! answers what it can at once into `out`, and asks its environment (`Env`) for what lives
//! elsewhere: users, binding a JID, routing a stanza to another session, urn:M queries.

use std::fmt::Write as _;

pub use super::pubsub::{ItemsIq, PubSubError};
use super::sasl::{self, Exchange, Step};
use super::stanza::{self, escape, Element};
use super::tokenizer::{Token, Tokenizer, XmlError};

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_URN_M: &str = "urn:M";
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// Failed authentications before the stream is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// What a session needs from the server around it.
pub trait Env {
    fn users(&self) -> &dyn sasl::Users;
    /// Binds a full JID to this session; an older session of the same full JID is told
    /// it was replaced (`conflict`).
    fn bind(&mut self, full_jid: &str);
    /// Delivers a stanza (already stamped with the sender) to the session(s) of `to`: a full
    /// JID → that session; a bare JID → every session of that user; nobody → dropped.
    fn route(&mut self, to: &str, stanza: String);
    /// Answers an IQ whose child is in `urn:M` (PROTOCOLS.md 4.2): the whole reply stanza.
    /// `None` when urn:M is not served here (the session answers `service-unavailable`).
    fn urn_m(&mut self, user: &str, iq: &Element, raw: &[u8]) -> Option<String>;
    /// PubSub (4.4): subscribes this session to the channel `node`; returns the subid.
    fn subscribe(&mut self, user: &str, node: &str) -> Result<String, PubSubError> {
        let _ = (user, node);
        Err(PubSubError::Unavailable)
    }
    /// Ends this session's subscription to `node`.
    fn unsubscribe(&mut self, node: &str) -> Result<(), PubSubError> {
        let _ = node;
        Err(PubSubError::Unavailable)
    }
    /// Publishes `payload` (XML) on `node` as `from`; returns the item id.
    fn publish(
        &mut self,
        user: &str,
        from: &str,
        node: &str,
        id: Option<&str>,
        payload: &str,
    ) -> Result<String, PubSubError> {
        let _ = (user, from, node, id, payload);
        Err(PubSubError::Unavailable)
    }
    /// Answers the publish just made: `stored` now, or, if the item is still being stored
    /// (`--redis`), once it is (`failed` if it could not be). Answers keep the order of
    /// their publishes.
    fn answer_published(&mut self, stored: String, failed: String, out: &mut String) {
        let _ = failed;
        out.push_str(&stored);
    }
    /// Answers an `items` request later (`--redis`: the items are Redis's): takes `answer`
    /// and returns `None`, writing to `out` only if it cannot even ask; or gives `answer`
    /// back for `items` to answer now.
    fn items_later(
        &mut self,
        user: &str,
        node: &str,
        max: usize,
        answer: ItemsIq,
        out: &mut String,
    ) -> Option<ItemsIq> {
        let _ = (user, node, max, out);
        Some(answer)
    }
    /// The last `max` retained messages of `node` as `<item>` elements.
    fn items(&mut self, user: &str, node: &str, max: usize) -> Result<String, PubSubError> {
        let _ = (user, node, max);
        Err(PubSubError::Unavailable)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client's stream header.
    Connected,
    /// Header exchanged, SASL offered.
    Authenticating,
    /// SASL succeeded: waiting for the restarted stream's header.
    Authenticated,
    /// Bind and session offered: stanzas flow.
    Open,
    /// Ended: nothing more is read.
    Closed,
}

/// What the connection must do after a `feed`.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// Keep reading; `consumed` bytes of the input were used up (drop them).
    More { consumed: usize },
    /// The stream is over (the closing bytes are in `out`): flush and close.
    Close,
}

/// One client's stream.
pub struct Session {
    state: State,
    tokenizer: Tokenizer,
    max_stanza: usize,
    /// Our stream header went out (a stream error must follow one).
    header_sent: bool,
    stream_id: String,
    user: Option<String>,
    jid: Option<String>,
    /// A SCRAM exchange under way: boxed, so an authenticated session (all but the first
    /// round trips of its life) does not carry its ~120 bytes.
    exchange: Option<Box<Exchange>>,
    failures: u32,
    /// SASL succeeded and the tokenizer was renewed: the next header restarts the stream.
    awaiting_restart: bool,
    /// Carried over BOSH (PROTOCOLS.md 4.5): the `<body>` wrappers frame the stream, so
    /// neither our stream header nor `</stream:stream>` is written.
    bosh: bool,
}

impl Session {
    pub fn new(max_stanza: usize) -> Session {
        Session {
            state: State::Connected,
            tokenizer: Tokenizer::new(max_stanza),
            max_stanza,
            header_sent: false,
            stream_id: String::new(),
            user: None,
            jid: None,
            exchange: None,
            failures: 0,
            awaiting_restart: false,
            bosh: false,
        }
    }

    /// A session carried over BOSH: the same machine, without the stream's own framing.
    /// Its connection feeds it a stream header at creation and at each `xmpp:restart`.
    pub fn for_bosh(max_stanza: usize) -> Session {
        Session {
            bosh: true,
            ..Session::new(max_stanza)
        }
    }

    /// The id of the current stream (BOSH's `authid`).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Whether the stream has ended.
    pub fn closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Ends the stream: `</stream:stream>`, unless BOSH frames it.
    fn write_close(&self, out: &mut String) {
        if !self.bosh {
            out.push_str("</stream:stream>");
        }
    }

    /// The bound full JID, once bound.
    pub fn jid(&self) -> Option<&str> {
        self.jid.as_deref()
    }

    /// Whether the client has authenticated (an idle timeout no longer applies).
    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Reads what `input` holds (everything the client sent and was not consumed yet),
    /// writing answers to `out`.
    pub fn feed(&mut self, input: &[u8], domain: &str, out: &mut String, env: &mut dyn Env) -> Fed {
        let mut consumed = 0;
        loop {
            if self.state == State::Closed {
                return Fed::Close;
            }
            let rest = &input[consumed..];
            let token = match self.tokenizer.next(rest) {
                Ok(Some(t)) => t,
                Ok(None) => return Fed::More { consumed },
                Err(e) => {
                    self.stream_error(xml_condition(e), domain, out);
                    return Fed::Close;
                }
            };
            let end = match token {
                Token::StreamOpen { end } => {
                    self.on_header(&rest[..end], domain, out);
                    end
                }
                Token::Stanza { start, end } => {
                    self.on_stanza(&rest[start..end], domain, out, env);
                    end
                }
                Token::EmptyRoot { .. } => {
                    // A stream that is over before it began.
                    self.stream_error("not-well-formed", domain, out);
                    return Fed::Close;
                }
                Token::StreamClose { end } => {
                    self.write_close(out);
                    self.state = State::Closed;
                    end
                }
            };
            consumed += end;
            self.tokenizer.consumed(end);
            if self.state == State::Authenticated && !self.header_sent {
                // The client restarts its stream after `<success/>` (RFC 6120 6.4.6): what
                // follows is a new document. (Set once: the new header sets `header_sent`.)
                self.tokenizer = Tokenizer::new(self.max_stanza);
                self.header_sent = true;
                self.awaiting_restart = true;
            }
        }
    }

    /// The server is stopping: close the stream.
    pub fn shutdown(&mut self, out: &mut String) {
        if self.state != State::Closed {
            if self.header_sent {
                out.push_str("<stream:error><system-shutdown xmlns='");
                out.push_str(NS_STREAMS);
                out.push_str("'/></stream:error>");
            }
            self.write_close(out);
            self.state = State::Closed;
        }
    }

    /// A newer session bound the same full JID: this one ends with `conflict`.
    pub fn replaced(&mut self, domain: &str, out: &mut String) {
        self.stream_error("conflict", domain, out);
    }

    fn on_header(&mut self, bytes: &[u8], domain: &str, out: &mut String) {
        let header = match parse_header(bytes) {
            Ok(h) => h,
            Err(cond) => {
                self.stream_error(cond, domain, out);
                return;
            }
        };
        self.write_header(domain, out);
        if header.ns != NS_CLIENT || header.stream_ns != NS_STREAM {
            self.stream_error("invalid-namespace", domain, out);
            return;
        }
        if header.to.as_deref().is_some_and(|to| to != domain) {
            self.stream_error("host-unknown", domain, out);
            return;
        }
        match self.state {
            State::Connected => {
                out.push_str("<stream:features><mechanisms xmlns='");
                out.push_str(NS_SASL);
                out.push_str("'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>");
                self.state = State::Authenticating;
            }
            State::Authenticated => {
                write!(
                    out,
                    "<stream:features><bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'><optional/></session></stream:features>"
                )
                .ok();
                self.state = State::Open;
            }
            _ => self.stream_error("not-well-formed", domain, out),
        }
    }

    fn on_stanza(&mut self, bytes: &[u8], domain: &str, out: &mut String, env: &mut dyn Env) {
        let el = match stanza::parse(bytes) {
            Ok(el) => el,
            Err(e) => {
                self.stream_error(xml_condition(e), domain, out);
                return;
            }
        };
        match self.state {
            State::Authenticating => self.on_sasl(&el, domain, out, env),
            State::Open => self.on_open_stanza(&el, bytes, domain, out, env),
            _ => self.stream_error("not-authorized", domain, out),
        }
    }

    fn on_sasl(&mut self, el: &Element, domain: &str, out: &mut String, env: &mut dyn Env) {
        if el.ns() != Some(NS_SASL) {
            self.stream_error("not-authorized", domain, out);
            return;
        }
        let step = match el.local_name() {
            "auth" => {
                let Some(initial) = sasl::decode_payload(&el.text) else {
                    self.sasl_failure(sasl::Failure::MalformedRequest, out);
                    return;
                };
                let mechanism = el.attr("mechanism").unwrap_or("");
                let (step, exchange) = sasl::start(mechanism, &initial, env.users());
                self.exchange = exchange.map(Box::new);
                step
            }
            "response" => {
                let (Some(exchange), Some(data)) =
                    (self.exchange.take(), sasl::decode_payload(&el.text))
                else {
                    self.sasl_failure(sasl::Failure::MalformedRequest, out);
                    return;
                };
                exchange.respond(&data)
            }
            "abort" => {
                self.exchange = None;
                write!(out, "<failure xmlns='{NS_SASL}'><aborted/></failure>").ok();
                return;
            }
            _ => {
                self.stream_error("not-authorized", domain, out);
                return;
            }
        };
        match step {
            Step::Challenge(data) => {
                write!(
                    out,
                    "<challenge xmlns='{NS_SASL}'>{}</challenge>",
                    sasl::encode_payload(&data)
                )
                .ok();
            }
            Step::Success { user, data } => {
                if data.is_empty() {
                    write!(out, "<success xmlns='{NS_SASL}'/>").ok();
                } else {
                    write!(
                        out,
                        "<success xmlns='{NS_SASL}'>{}</success>",
                        sasl::encode_payload(&data)
                    )
                    .ok();
                }
                self.user = Some(user);
                self.state = State::Authenticated;
                self.header_sent = false;
                self.awaiting_restart = false;
            }
            Step::Fail(f) => self.sasl_failure(f, out),
        }
    }

    fn sasl_failure(&mut self, f: sasl::Failure, out: &mut String) {
        self.exchange = None;
        write!(
            out,
            "<failure xmlns='{NS_SASL}'><{}/></failure>",
            f.condition()
        )
        .ok();
        self.failures += 1;
        if self.failures >= MAX_AUTH_FAILURES {
            self.write_close(out);
            self.state = State::Closed;
        }
    }

    fn on_open_stanza(
        &mut self,
        el: &Element,
        raw: &[u8],
        domain: &str,
        out: &mut String,
        env: &mut dyn Env,
    ) {
        if el.ns().is_some_and(|ns| ns != NS_CLIENT) {
            self.stream_error("invalid-namespace", domain, out);
            return;
        }
        match el.name.as_str() {
            "iq" => self.on_iq(el, raw, domain, out, env),
            "message" => {
                let (Some(from), Some(to)) = (self.jid.as_deref(), el.attr("to")) else {
                    return;
                };
                let mut stamped = String::with_capacity(raw.len() + 64);
                stanza::write(el, Some(from), &mut stamped);
                env.route(to, stamped);
            }
            // Presence is accepted and not broadcast (no rosters).
            "presence" => {}
            _ => self.stream_error("unsupported-stanza-type", domain, out),
        }
    }

    fn on_iq(
        &mut self,
        iq: &Element,
        raw: &[u8],
        domain: &str,
        out: &mut String,
        env: &mut dyn Env,
    ) {
        let id = iq.attr("id").unwrap_or("");
        let kind = iq.attr("type").unwrap_or("");
        if !matches!(kind, "get" | "set") {
            // Results and errors addressed to the server need no answer.
            return;
        }
        let Some(child) = iq.first_child() else {
            iq_error(
                out,
                id,
                domain,
                "",
                "modify",
                "not-acceptable",
                Some("GET or SET must have a child element."),
            );
            return;
        };
        let to_server = iq
            .attr("to")
            .is_none_or(|to| to == domain || self.jid.as_deref() == Some(to));
        let ns = child.ns().unwrap_or("");
        if !to_server {
            iq_error(out, id, domain, "", "cancel", "service-unavailable", None);
            return;
        }
        match (kind, child.local_name(), ns) {
            ("set", "bind", NS_BIND) => {
                let Some(user) = self.user.clone() else {
                    return;
                };
                let resource = child
                    .children
                    .iter()
                    .find(|c| c.local_name() == "resource")
                    .map(|c| c.text.trim().to_string())
                    .filter(|r| !r.is_empty() && r.len() <= 256 && !r.chars().any(char::is_control))
                    .unwrap_or_else(|| format!("tidings-{}", new_stream_id()));
                let jid = format!("{user}@{domain}/{resource}");
                env.bind(&jid);
                write!(
                    out,
                    "<iq type='result' id='{}'><bind xmlns='{NS_BIND}'><jid>{}</jid></bind></iq>",
                    escape(id),
                    escape(&jid)
                )
                .ok();
                self.jid = Some(jid);
            }
            ("set", "session", NS_SESSION) | ("get", "ping", NS_PING) => {
                write!(out, "<iq type='result' id='{}'/>", escape(id)).ok();
            }
            ("get", "query", NS_ROSTER) => {
                write!(
                    out,
                    "<iq type='result' id='{}'><query xmlns='{NS_ROSTER}'/></iq>",
                    escape(id)
                )
                .ok();
            }
            ("get", "query", NS_DISCO_INFO) => {
                write!(
                    out,
                    "<iq type='result' id='{}' from='{}'><query xmlns='{NS_DISCO_INFO}'><identity category='server' type='im' name='tidings'/><feature var='{NS_URN_M}'/><feature var='{NS_PUBSUB}'/><feature var='{NS_PING}'/><feature var='{NS_DISCO_INFO}'/></query></iq>",
                    escape(id),
                    escape(domain)
                )
                .ok();
            }
            (_, "pubsub", NS_PUBSUB) => {
                let who = (self.user.clone(), self.jid.clone());
                super::pubsub::request(kind, id, child, raw, domain, who, out, env)
            }
            (_, _, NS_URN_M) => {
                let user = self.user.clone().unwrap_or_default();
                match env.urn_m(&user, iq, raw) {
                    Some(reply) => out.push_str(&reply),
                    None => iq_error(out, id, domain, "", "cancel", "service-unavailable", None),
                }
            }
            _ => iq_error(out, id, domain, "", "cancel", "service-unavailable", None),
        }
    }

    /// Writes our stream header, with a fresh stream id.
    fn write_header(&mut self, domain: &str, out: &mut String) {
        self.stream_id = new_stream_id();
        self.header_sent = true;
        if self.bosh {
            return;
        }
        write!(
            out,
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}' id='{}' from='{}' version='1.0' xml:lang='en'>",
            self.stream_id,
            escape(domain)
        )
        .ok();
    }

    /// Writes a stream error (after our header, if it did not go out yet) and ends the
    /// stream.
    fn stream_error(&mut self, condition: &str, domain: &str, out: &mut String) {
        if self.state == State::Closed {
            return;
        }
        if !self.header_sent {
            self.write_header(domain, out);
        }
        write!(
            out,
            "<stream:error><{condition} xmlns='{NS_STREAMS}'/></stream:error>"
        )
        .ok();
        self.write_close(out);
        self.state = State::Closed;
    }
}

/// What an element holds, as XML: its child elements' bytes as they arrived (from the first
/// child's start to the last one's end), or its text escaped when it has no child.
pub(super) fn inner_xml(el: &Element, raw: &[u8]) -> String {
    match (el.children.first(), el.children.last()) {
        (Some(first), Some(last)) => raw
            .get(first.span.start..last.span.end)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
        _ => escape(&el.text).into_owned(),
    }
}

/// An IQ error: `<iq type='error' id='ID' from='DOMAIN'>ECHO<error type='TYPE'><COND/>[<text>…</text>]</error></iq>`.
pub fn iq_error(
    out: &mut String,
    id: &str,
    domain: &str,
    echo: &str,
    kind: &str,
    condition: &str,
    text: Option<&str>,
) {
    write!(
        out,
        "<iq type='error' id='{}' from='{}'>{echo}<error type='{kind}'><{condition} xmlns='{NS_STANZAS}'/>",
        escape(id),
        escape(domain)
    )
    .ok();
    if let Some(text) = text {
        write!(out, "<text xmlns='{NS_STANZAS}'>{}</text>", escape(text)).ok();
    }
    out.push_str("</error></iq>");
}

fn xml_condition(e: XmlError) -> &'static str {
    match e {
        XmlError::NotWellFormed => "not-well-formed",
        XmlError::RestrictedXml => "restricted-xml",
        XmlError::PolicyViolation => "policy-violation",
    }
}

struct Header {
    ns: String,
    stream_ns: String,
    to: Option<String>,
}

/// Reads the client's stream header (an XML declaration may precede it).
fn parse_header(bytes: &[u8]) -> Result<Header, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not-well-formed")?;
    let start = text.rfind("<stream").ok_or("not-well-formed")?;
    let tag = &text[start..];
    let tag = tag.strip_suffix('>').ok_or("not-well-formed")?;
    // Parse the open tag as an empty element.
    let as_empty = format!("{tag}/>");
    let el = stanza::parse(as_empty.as_bytes()).map_err(|_| "not-well-formed")?;
    if el.local_name() != "stream" {
        return Err("invalid-namespace");
    }
    Ok(Header {
        ns: el.attr("xmlns").unwrap_or("").to_string(),
        stream_ns: el
            .attr(&format!(
                "xmlns:{}",
                el.name.split(':').next().unwrap_or("stream")
            ))
            .unwrap_or("")
            .to_string(),
        to: el.attr("to").map(str::to_string),
    })
}

/// A fresh, unguessable stream id (128 random bits, hex).
fn new_stream_id() -> String {
    let mut b = [0u8; 16];
    if !sasl::fill_random(&mut b) {
        // Only unique is left: std's per-process random hash keys over a counter.
        use std::hash::BuildHasher;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let h = std::collections::hash_map::RandomState::new().hash_one(n);
        b[..8].copy_from_slice(&h.to_le_bytes());
        b[8..].copy_from_slice(&n.to_le_bytes());
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
    use base64::Engine as _;

    struct TestEnv {
        bound: Vec<String>,
        routed: Vec<(String, String)>,
    }

    struct Users;
    impl sasl::Users for Users {
        fn password(&self, user: &str) -> Option<Vec<u8>> {
            (user == "user").then(|| b"secret".to_vec())
        }
    }

    impl Env for TestEnv {
        fn users(&self) -> &dyn sasl::Users {
            &Users
        }
        fn bind(&mut self, jid: &str) {
            self.bound.push(jid.to_string());
        }
        fn route(&mut self, to: &str, stanza: String) {
            self.routed.push((to.to_string(), stanza));
        }
        fn urn_m(&mut self, _: &str, _: &Element, _: &[u8]) -> Option<String> {
            None
        }
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

    struct Client {
        s: Session,
        env: TestEnv,
        pending: Vec<u8>,
        closed: bool,
    }

    impl Client {
        fn new() -> Client {
            Client {
                s: Session::new(65536),
                env: TestEnv {
                    bound: vec![],
                    routed: vec![],
                },
                pending: vec![],
                closed: false,
            }
        }

        /// Sends bytes; returns what the server wrote.
        fn send(&mut self, bytes: &str) -> String {
            self.pending.extend_from_slice(bytes.as_bytes());
            let mut out = String::new();
            match self
                .s
                .feed(&self.pending, "localhost", &mut out, &mut self.env)
            {
                Fed::More { consumed } => {
                    self.pending.drain(..consumed);
                }
                Fed::Close => self.closed = true,
            }
            out
        }

        fn login(&mut self) {
            let r = self.send(HEADER);
            assert!(
                r.contains("<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>"),
                "{r}"
            );
            let auth = base64::engine::general_purpose::STANDARD.encode(b"\0user\0secret");
            let r = self.send(&format!(
                "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{auth}</auth>"
            ));
            assert_eq!(r, format!("<success xmlns='{NS_SASL}'/>"));
            let r = self.send(HEADER);
            assert!(
                r.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
                "{r}"
            );
        }
    }

    #[test]
    fn a_whole_session_plain_bind_ping_roster_disco_message_end() {
        let mut c = Client::new();
        c.login();
        let r = c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>");
        assert_eq!(r, "<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@localhost/phone</jid></bind></iq>");
        assert_eq!(c.env.bound, ["user@localhost/phone"]);
        assert_eq!(c.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"), "<iq type='result' id='s1'/>");
        assert_eq!(
            c.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"),
            "<iq type='result' id='p1'/>"
        );
        assert_eq!(
            c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"),
            "<iq type='result' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
        );
        let disco = c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
        assert!(
            disco.contains("<identity category='server' type='im'")
                && disco.contains("<feature var='urn:M'/>"),
            "{disco}"
        );
        assert_eq!(c.send("<presence/>"), "");
        assert_eq!(
            c.send("<message to='bob@localhost' from='forged'><body>hi</body></message>"),
            ""
        );
        assert_eq!(
            c.env.routed,
            [(
                "bob@localhost".to_string(),
                "<message from='user@localhost/phone' to='bob@localhost'><body>hi</body></message>"
                    .to_string()
            )]
        );
        let r = c.send("<iq type='get' id='e1'/>");
        assert_eq!(r, "<iq type='error' id='e1' from='localhost'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>GET or SET must have a child element.</text></error></iq>");
        assert_eq!(c.send("</stream:stream>"), "</stream:stream>");
        assert!(c.closed);
    }

    #[test]
    fn three_failures_close_the_stream() {
        let mut c = Client::new();
        c.send(HEADER);
        let bad = base64::engine::general_purpose::STANDARD.encode(b"\0user\0wrong");
        for i in 0..3 {
            let r = c.send(&format!(
                "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{bad}</auth>"
            ));
            assert!(
                r.starts_with(&format!(
                    "<failure xmlns='{NS_SASL}'><not-authorized/></failure>"
                )),
                "{r}"
            );
            assert_eq!(c.closed, i == 2, "closed after the third");
        }
    }

    #[test]
    fn stream_errors() {
        let cases = [
            ("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>", true, "not-authorized"),
            ("<stream:stream to='elsewhere' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", false, "host-unknown"),
            ("<stream:stream to='localhost' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>", false, "invalid-namespace"),
            ("<!DOCTYPE x>", false, "restricted-xml"),
            ("\u{0}garbage<<<", false, "not-well-formed"),
        ];
        for (input, after_header, cond) in cases {
            let mut c = Client::new();
            if after_header {
                c.send(HEADER);
            }
            let r = c.send(input);
            if !after_header {
                assert!(
                    r.contains("<stream:stream xmlns='jabber:client'"),
                    "a header before the error: {r}"
                );
            }
            assert!(
                r.ends_with(&format!(
                    "<stream:error><{cond} xmlns='{NS_STREAMS}'/></stream:error></stream:stream>"
                )),
                "{input}: {r}"
            );
            assert!(c.closed);
        }
    }

    #[test]
    fn scram_through_the_session() {
        let mut c = Client::new();
        c.send(HEADER);
        let b64 = base64::engine::general_purpose::STANDARD;
        let r = c.send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{}</auth>",
            b64.encode("n,,n=user,r=abcdef")
        ));
        let challenge = r
            .strip_prefix(&format!("<challenge xmlns='{NS_SASL}'>"))
            .and_then(|r| r.strip_suffix("</challenge>"))
            .expect(&r);
        let server_first = String::from_utf8(b64.decode(challenge).unwrap()).unwrap();
        assert!(
            server_first.starts_with("r=abcdef") && server_first.contains(",i=4096"),
            "{server_first}"
        );
        // A wrong proof fails; the stream stays open for another try.
        let nonce = server_first.split(',').next().unwrap();
        let r = c.send(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            b64.encode(format!("c=biws,{nonce},p={}", b64.encode([0u8; 20])))
        ));
        assert!(r.contains("<not-authorized/>"), "{r}");
        assert!(!c.closed);
    }
}
