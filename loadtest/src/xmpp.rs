//! The XMPP client side of `xmpp-idle` and `xmpp-ping`, sans-io: the bytes a
//! client sends (stream header, SASL PLAIN, bind, session, ping), a splitter
//! that cuts the server's stream into its header, top-level stanzas and end,
//! and the login machine (header → features → PLAIN → `<success/>` → restart →
//! features → bind, checked against the JID asked for → session → up).
//!
//! The splitter is not an XML parser: it follows tags and quoted attribute
//! values well enough for what tidings and Prosody send (no CDATA or DTDs;
//! comments and declarations are skipped), which is all a load client needs.

/// The most a stanza may grow to before the splitter gives up.
pub const MAX_STANZA: usize = 1 << 20;

pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// The stream header a client opens (and reopens after `<success/>`) with.
pub fn header(domain: &str) -> Vec<u8> {
    format!("<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").into_bytes()
}

/// `<auth mechanism='PLAIN'>` with `\0user\0password` in base64.
pub fn auth_plain(user: &str, password: &str) -> Vec<u8> {
    let creds = base64(format!("\0{user}\0{password}").as_bytes());
    format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>").into_bytes()
}

pub fn bind(resource: &str) -> Vec<u8> {
    format!("<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>").into_bytes()
}

pub fn session() -> Vec<u8> {
    format!("<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>").into_bytes()
}

/// XEP-0060 subscription of `jid` to `node` at the service `domain`
/// (PROTOCOLS.md 4.4); `node` and `jid` must need no escaping.
pub fn subscribe(domain: &str, node: &str, jid: &str) -> Vec<u8> {
    format!("<iq type='set' to='{domain}' id='sub'><pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub></iq>").into_bytes()
}

/// The parts of a PubSub event `<message>` (PROTOCOLS.md 4.4) a subscriber checks.
#[derive(Debug, PartialEq, Eq)]
pub struct PubsubEvent<'a> {
    pub to: &'a [u8],
    pub node: &'a [u8],
    pub item_id: &'a [u8],
    /// The item's payload: for a message that did not come from an XMPP publish,
    /// the text of its `<message xmlns='urn:tidings' …>` (entities left as they are).
    pub body: &'a [u8],
}

/// The event in `stanza`, if it is one: a `<message>` with an `<event>` item.
pub fn pubsub_event(stanza: &[u8]) -> Option<PubsubEvent<'_>> {
    if name(stanza) != b"message"
        || !contains(
            stanza,
            "<event xmlns='http://jabber.org/protocol/pubsub#event'>",
        )
    {
        return None;
    }
    let items = after(stanza, "<items node='")?;
    let item_at = memchr::memmem::find(items, b"<item id='")?;
    let item = &items[item_at..];
    let body_start = tag_end(item)? + 1;
    let body_end = memchr::memmem::rfind(item, b"</item>")?;
    let mut body = item.get(body_start..body_end)?;
    if body.starts_with(b"<message xmlns='urn:tidings'") {
        let open = tag_end(body)? + 1;
        let close = memchr::memmem::rfind(body, b"</message>")?;
        body = body.get(open..close)?;
    }
    Some(PubsubEvent {
        to: attr(stanza, "to")?,
        node: quoted(items)?,
        item_id: quoted(&item[b"<item id='".len()..])?,
        body,
    })
}

/// What follows the first `pat` in `s`.
fn after<'a>(s: &'a [u8], pat: &str) -> Option<&'a [u8]> {
    memchr::memmem::find(s, pat.as_bytes()).map(|i| &s[i + pat.len()..])
}

/// `s` up to its first `'`.
fn quoted(s: &[u8]) -> Option<&[u8]> {
    memchr::memchr(b'\'', s).map(|i| &s[..i])
}

/// XEP-0199 ping to the server, exactly as the issue has it.
pub fn ping(id: u64) -> Vec<u8> {
    format!("<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>").into_bytes()
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// What the splitter finds in the server's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `<stream:stream …>`: a (new) stream header.
    Header,
    /// One complete top-level element, its bytes as sent.
    Stanza(Vec<u8>),
    /// `</stream:stream>`.
    End,
}

/// Cuts a stream into header, top-level stanzas and end, across reads split
/// anywhere.
#[derive(Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Where scanning resumes in `buf`.
    pos: usize,
    /// Depth inside the current stanza (0: between stanzas).
    depth: u32,
    /// Where the current stanza starts in `buf`.
    start: usize,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Takes bytes read; `on` gets each event completed by them.
    pub fn feed(&mut self, data: &[u8], mut on: impl FnMut(Event)) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        loop {
            let Some(lt) = memchr::memchr(b'<', &self.buf[self.pos..]).map(|i| self.pos + i) else {
                if self.depth == 0 {
                    // whitespace keep-alives between stanzas
                    self.buf.clear();
                    self.pos = 0;
                } else {
                    self.pos = self.buf.len();
                }
                break;
            };
            if self.depth == 0 {
                if let Some(&c) = self.buf[self.pos..lt]
                    .iter()
                    .find(|c| !c.is_ascii_whitespace())
                {
                    return Err(format!("text {:?} between stanzas", c as char));
                }
            }
            let rest = &self.buf[lt..];
            let end = if rest.starts_with(b"<!--") {
                memchr::memmem::find(rest, b"-->").map(|i| lt + i + 2)
            } else {
                tag_end(rest).map(|i| lt + i)
            };
            let Some(gt) = end else {
                // the tag is not complete yet
                if self.depth == 0 {
                    self.buf.drain(..lt);
                    self.pos = 0;
                } else {
                    self.pos = lt;
                }
                break;
            };
            let tag = &self.buf[lt..=gt];
            self.pos = gt + 1;
            if tag.starts_with(b"<?") || tag.starts_with(b"<!--") {
                continue;
            }
            if tag.starts_with(b"<!") {
                return Err("a DTD or CDATA in the stream".into());
            }
            if tag.starts_with(b"</") {
                if self.depth == 0 {
                    if tag.starts_with(b"</stream:stream") {
                        on(Event::End);
                        continue;
                    }
                    return Err(format!(
                        "closing tag {} outside a stanza",
                        String::from_utf8_lossy(tag)
                    ));
                }
                self.depth -= 1;
                if self.depth == 0 {
                    on(Event::Stanza(self.buf[self.start..=gt].to_vec()));
                }
                continue;
            }
            let empty = tag.ends_with(b"/>");
            if self.depth == 0 {
                if tag.starts_with(b"<stream:stream") && !empty {
                    on(Event::Header);
                    continue;
                }
                if empty {
                    on(Event::Stanza(tag.to_vec()));
                    continue;
                }
                self.start = lt;
            }
            if !empty {
                self.depth += 1;
            }
        }
        if self.depth > 0 && self.start > 0 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        if self.buf.len() > MAX_STANZA {
            return Err(format!("a stanza over {MAX_STANZA} bytes"));
        }
        Ok(())
    }
}

/// The index of the `>` that ends the tag `t` starts with (quotes honoured).
pub fn tag_end(t: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &c) in t.iter().enumerate().skip(1) {
        match (quote, c) {
            (None, b'\'' | b'"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The element name of a stanza (`iq`, `stream:features`, …).
pub fn name(stanza: &[u8]) -> &[u8] {
    let s = stanza.strip_prefix(b"<").unwrap_or(stanza);
    let end = s
        .iter()
        .position(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/')
        .unwrap_or(s.len());
    &s[..end]
}

/// The value of attribute `key` of the stanza's first tag (entities left as they are).
pub fn attr<'a>(stanza: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let end = tag_end(stanza)?;
    let mut s = &stanza[1 + name(stanza).len()..end];
    loop {
        let i = s.iter().position(|c| !c.is_ascii_whitespace())?;
        s = &s[i..];
        let eq = s.iter().position(|&c| c == b'=')?;
        let k = s[..eq].trim_ascii();
        let rest = s[eq + 1..].trim_ascii_start();
        let q = *rest.first()?;
        if q != b'\'' && q != b'"' {
            return None;
        }
        let close = rest[1..].iter().position(|&c| c == q)?;
        if k == key.as_bytes() {
            return Some(&rest[1..1 + close]);
        }
        s = &rest[close + 2..];
    }
}

/// The text of the first `<tag>…</tag>` inside `stanza`.
pub fn inner<'a>(stanza: &'a [u8], tag: &str) -> Option<&'a [u8]> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let a = memchr::memmem::find(stanza, open.as_bytes())? + open.len();
    let b = memchr::memmem::find(&stanza[a..], close.as_bytes())?;
    Some(&stanza[a..a + b])
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr::memmem::find(hay, needle.as_bytes()).is_some()
}

/// Where a login stands: what the client waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first header and SASL features.
    Features,
    /// `<success/>` after PLAIN.
    Auth,
    /// The header and features after the restart.
    Restarted,
    /// The bind result.
    Bind,
    /// The session result.
    Session,
    /// The PubSub subscription result.
    Subscribe,
}

/// What the client does after an event of the login.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send these bytes and wait for the next step.
    Send(Vec<u8>, Step),
    /// Nothing to do yet (a header, a stanza that changes nothing).
    Wait,
    /// The session is bound and established.
    Up,
    /// The login failed (not worth a retry: the server answered).
    Fail(String),
}

/// One login's settings. A login starts with `header(domain)` once
/// connected, at `Step::Features`.
pub struct Login<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub domain: &'a str,
    pub resource: &'a str,
    /// A node to subscribe to after the session (the session is up once subscribed).
    pub subscribe: Option<&'a str>,
}

impl Login<'_> {
    /// The JID bind must return.
    pub fn jid(&self) -> String {
        format!("{}@{}/{}", self.user, self.domain, self.resource)
    }

    /// The next move at `step` after `ev`.
    pub fn on(&self, step: Step, ev: &Event) -> Next {
        let st = match ev {
            Event::Header => return Next::Wait,
            Event::End => return Next::Fail(format!("the server ended the stream at {step:?}")),
            Event::Stanza(s) => s.as_slice(),
        };
        let short = || crate::http::escape(st, 300);
        if name(st) == b"stream:error" {
            return Next::Fail(format!("stream error at {step:?}: {}", short()));
        }
        match step {
            Step::Features if name(st) == b"stream:features" => {
                if contains(st, "<mechanism>PLAIN</mechanism>") {
                    Next::Send(auth_plain(self.user, self.password), Step::Auth)
                } else {
                    Next::Fail(format!("no PLAIN among the mechanisms: {}", short()))
                }
            }
            Step::Auth => match name(st) {
                b"success" => Next::Send(header(self.domain), Step::Restarted),
                b"failure" => Next::Fail(format!("SASL PLAIN refused: {}", short())),
                _ => Next::Fail(format!("unexpected while authenticating: {}", short())),
            },
            Step::Restarted if name(st) == b"stream:features" => {
                if contains(st, NS_BIND) {
                    Next::Send(bind(self.resource), Step::Bind)
                } else {
                    Next::Fail(format!("no bind feature after the restart: {}", short()))
                }
            }
            Step::Bind if name(st) == b"iq" && attr(st, "id") == Some(b"bind") => {
                let jid = inner(st, "jid");
                if attr(st, "type") != Some(b"result") {
                    Next::Fail(format!("bind refused: {}", short()))
                } else if jid != Some(self.jid().as_bytes()) {
                    Next::Fail(format!("bound to the wrong JID: {}", short()))
                } else {
                    Next::Send(session(), Step::Session)
                }
            }
            Step::Session if name(st) == b"iq" && attr(st, "id") == Some(b"sess") => {
                match (attr(st, "type"), self.subscribe) {
                    (Some(b"result"), None) => Next::Up,
                    (Some(b"result"), Some(node)) => {
                        Next::Send(subscribe(self.domain, node, &self.jid()), Step::Subscribe)
                    }
                    _ => Next::Fail(format!("session refused: {}", short())),
                }
            }
            Step::Subscribe if name(st) == b"iq" && attr(st, "id") == Some(b"sub") => {
                let want = format!(
                    "<subscription node='{}' jid='{}'",
                    self.subscribe.unwrap_or(""),
                    self.jid()
                );
                if attr(st, "type") == Some(b"result")
                    && contains(st, &want)
                    && contains(st, "subscription='subscribed'")
                {
                    Next::Up
                } else {
                    Next::Fail(format!("subscription refused: {}", short()))
                }
            }
            _ => Next::Fail(format!("unexpected at {step:?}: {}", short())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tidings' answers to a login, as tests/xmpp_stream.rs has them.
    const TIDINGS: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='ab30d745aec970c960a1a3db4f6e6eb3' from='localhost' version='1.0' xml:lang='en'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='e47c1163e8043fa533d4b88c58e60176' from='localhost' version='1.0' xml:lang='en'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>\
<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@localhost/r1</jid></bind></iq>\
<iq type='result' id='sess'/> \n<iq type='result' id='7'/></stream:stream>";

    /// Prosody 0.12.3's, recorded with bench/prosody/prosody.cfg.lua.
    const PROSODY: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' version='1.0' id='2d4f2b95-9a7b-461a-95c2-a2971256f706' from='localhost'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>\
<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' version='1.0' id='4cadab42-01a9-4fd7-84f0-dbae45e1ba62' from='localhost'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session><sub xmlns='urn:xmpp:features:pre-approval'/><c xmlns='http://jabber.org/protocol/caps' ver='wBr6DNC6Vxj+iDPS/AmhkECMTr8=' node='http://prosody.im' hash='sha-1'/><ver xmlns='urn:xmpp:features:rosterver'/></stream:features>\
<iq id='bind' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@localhost/r1</jid></bind></iq>\
<iq to='user@localhost/r1' id='sess' type='result'/><iq to='user@localhost/r1' id='7' type='result'/></stream:stream>";

    fn split_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut sp = Splitter::new();
        let mut evs = Vec::new();
        for c in chunks {
            sp.feed(c, |e| evs.push(e)).expect("well formed");
        }
        evs
    }

    fn login() -> Login<'static> {
        Login {
            user: "user",
            password: "secret",
            domain: "localhost",
            resource: "r1",
            subscribe: None,
        }
    }

    /// Runs the login machine over a transcript; returns the bytes sent and
    /// the events left after `Up`.
    fn run(evs: Vec<Event>) -> (Vec<Vec<u8>>, usize) {
        let l = login();
        let mut step = Step::Features;
        let mut sent = vec![header(l.domain)];
        let mut it = evs.into_iter();
        for ev in it.by_ref() {
            match l.on(step, &ev) {
                Next::Send(b, s) => {
                    sent.push(b);
                    step = s;
                }
                Next::Wait => {}
                Next::Up => return (sent, it.count()),
                Next::Fail(why) => panic!("{why}"),
            }
        }
        panic!("never up")
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"\0user\0secret"), "AHVzZXIAc2VjcmV0");
    }

    #[test]
    fn requests_are_exact() {
        assert_eq!(
            ping(7),
            b"<iq type='get' id='7'><ping xmlns='urn:xmpp:ping'/></iq>".to_vec()
        );
        assert_eq!(
            auth_plain("user", "secret"),
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHVzZXIAc2VjcmV0</auth>".to_vec()
        );
        assert!(header("localhost").ends_with(b"xmlns:stream='http://etherx.jabber.org/streams'>"));
    }

    #[test]
    fn both_transcripts_log_in() {
        for t in [TIDINGS, PROSODY] {
            let evs = split_all(&[t.as_bytes()]);
            assert_eq!(evs.iter().filter(|e| **e == Event::Header).count(), 2);
            assert_eq!(evs.last(), Some(&Event::End));
            let (sent, left) = run(evs);
            assert_eq!(sent.len(), 5, "header, auth, header, bind, session");
            assert_eq!(sent[3], bind("r1"));
            assert_eq!(left, 2, "the ping result and the end");
        }
    }

    #[test]
    fn every_split_gives_the_same_events() {
        for t in [TIDINGS, PROSODY] {
            let b = t.as_bytes();
            let whole = split_all(&[b]);
            for i in 0..b.len() {
                assert_eq!(split_all(&[&b[..i], &b[i..]]), whole, "split at {i}");
            }
            let bytes: Vec<&[u8]> = b.chunks(1).collect();
            assert_eq!(split_all(&bytes), whole);
        }
    }

    #[test]
    fn attributes_and_names() {
        let s = b"<iq to='user@localhost/r1' id=\"7\" type='result'/>";
        assert_eq!(name(s), b"iq");
        assert_eq!(attr(s, "id"), Some(&b"7"[..]));
        assert_eq!(attr(s, "type"), Some(&b"result"[..]));
        assert_eq!(attr(s, "to"), Some(&b"user@localhost/r1"[..]));
        assert_eq!(attr(s, "from"), None);
        let q = b"<iq type='result' id='a>b'><x/></iq>";
        assert_eq!(attr(q, "id"), Some(&b"a>b"[..]));
        assert_eq!(split_all(&[q]), vec![Event::Stanza(q.to_vec())]);
        assert_eq!(name(b"<stream:features>"), b"stream:features");
    }

    /// tidings' answer to a subscription and an event for a Talk push, as sent.
    const SUBSCRIBED: &str = "<iq type='result' id='sub' from='localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscription node='c1' jid='user@localhost/r1' subid='c8abcae7-25dc-42bb-90e0-21f2ca000000' subscription='subscribed'/></pubsub></iq>";
    const EVENT: &str = "<message from='localhost' to='user@localhost/r1' id='c8abcae7-25dc-42bb-a1f5-131b59000001'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='c1'><item id='c8abcae7-25dc-42bb-a1f5-131b59000001'><message xmlns='urn:tidings' seq='1796300886395' from='loadtest' to='' when='2026-12-03T12:28:06Z'>tok-1</message></item></items></event></message>";

    #[test]
    fn a_subscribing_login_is_up_once_subscribed() {
        let l = Login {
            subscribe: Some("c1"),
            ..login()
        };
        let sess = Event::Stanza(b"<iq type='result' id='sess'/>".to_vec());
        let sub = subscribe("localhost", "c1", "user@localhost/r1");
        assert_eq!(
            l.on(Step::Session, &sess),
            Next::Send(sub.clone(), Step::Subscribe)
        );
        assert_eq!(
            sub,
            b"<iq type='set' to='localhost' id='sub'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='c1' jid='user@localhost/r1'/></pubsub></iq>".to_vec()
        );
        let ok = Event::Stanza(SUBSCRIBED.as_bytes().to_vec());
        assert_eq!(l.on(Step::Subscribe, &ok), Next::Up);
        let other_node = Event::Stanza(SUBSCRIBED.replace("'c1'", "'c2'").into_bytes());
        assert!(matches!(l.on(Step::Subscribe, &other_node), Next::Fail(_)));
        let refused = Event::Stanza(b"<iq type='error' id='sub'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>".to_vec());
        assert!(matches!(l.on(Step::Subscribe, &refused), Next::Fail(w) if w.contains("refused")));
        assert_eq!(
            login().on(Step::Session, &sess),
            Next::Up,
            "no subscription asked"
        );
    }

    #[test]
    fn events_are_read() {
        let ev = pubsub_event(EVENT.as_bytes()).expect("an event");
        assert_eq!(ev.to, b"user@localhost/r1");
        assert_eq!(ev.node, b"c1");
        assert_eq!(ev.item_id, b"c8abcae7-25dc-42bb-a1f5-131b59000001");
        assert_eq!(ev.body, b"tok-1");
        // an XMPP publish's payload is the item's content itself
        let own = "<message from='localhost' to='u@localhost/r' id='i'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><item id='i'><entry>x</entry></item></items></event></message>";
        assert_eq!(
            pubsub_event(own.as_bytes()).unwrap().body,
            b"<entry>x</entry>"
        );
        assert_eq!(
            pubsub_event(b"<message to='a'><body>x</body></message>"),
            None
        );
        assert_eq!(pubsub_event(SUBSCRIBED.as_bytes()), None);
        // the splitter hands the event over whole, split anywhere
        let b = EVENT.as_bytes();
        for i in 0..b.len() {
            assert_eq!(
                split_all(&[&b[..i], &b[i..]]),
                vec![Event::Stanza(b.to_vec())],
                "split at {i}"
            );
        }
    }

    #[test]
    fn failures_are_reported() {
        let l = login();
        let fail = Event::Stanza(
            b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
                .to_vec(),
        );
        assert!(matches!(l.on(Step::Auth, &fail), Next::Fail(_)));
        let wrong = Event::Stanza(
            b"<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@localhost/other</jid></bind></iq>".to_vec(),
        );
        assert!(matches!(l.on(Step::Bind, &wrong), Next::Fail(w) if w.contains("wrong JID")));
        let err = Event::Stanza(b"<iq type='error' id='bind'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>".to_vec());
        assert!(matches!(l.on(Step::Bind, &err), Next::Fail(w) if w.contains("refused")));
        let se = Event::Stanza(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>".to_vec());
        assert!(matches!(l.on(Step::Session, &se), Next::Fail(w) if w.contains("stream error")));
        assert!(matches!(l.on(Step::Bind, &Event::End), Next::Fail(_)));
        let mut sp = Splitter::new();
        assert!(sp.feed(b"hello<a/>", |_| {}).is_err());
    }
}
