//! XMPP over BOSH (XEP-0124, XEP-0206; PROTOCOLS.md 4.5) for `bosh-idle`, sans-io: the
//! `POST /http-bind` requests a client sends (session creation, a payload in a
//! `<body rid sid>`, `xmpp:restart`), and the answers taken off one keep-alive
//! connection and unwrapped into the stanzas the login machine of `xmpp.rs` reads.
//!
//! A session uses one HTTP connection and one request at a time: each login step is
//! one request and its answer; once bound, one empty request is held by the server
//! (parked like a long-poll) and, when the server answers it (at `wait`, or with a
//! stanza), the next one is sent.

use crate::http::{escape, parse_response_head};
use crate::xmpp::{attr, Event, Splitter, MAX_STANZA};

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const NS_XBOSH: &str = "urn:xmpp:xbosh";

/// `POST /http-bind` carrying `body`.
pub fn post(body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// The session creation request's body (4.5).
pub fn create(rid: u64, domain: &str, wait: u64) -> Vec<u8> {
    format!("<body rid='{rid}' to='{domain}' wait='{wait}' hold='1' ver='1.6' xml:lang='en' xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>").into_bytes()
}

/// A later request's body: `payload` (stanzas, or nothing) in session `sid`.
pub fn wrap(rid: u64, sid: &str, payload: &[u8]) -> Vec<u8> {
    if payload.is_empty() {
        return format!("<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>").into_bytes();
    }
    let mut b = format!("<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'>").into_bytes();
    b.extend_from_slice(payload);
    b.extend_from_slice(b"</body>");
    b
}

/// The stream restart after SASL success.
pub fn restart(rid: u64, sid: &str, domain: &str) -> Vec<u8> {
    format!("<body rid='{rid}' sid='{sid}' to='{domain}' xml:lang='en' xmpp:restart='true' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>").into_bytes()
}

/// One BOSH session's side of its HTTP connection: the next `rid`, the `sid` once the
/// server gave it, and the answer bytes not complete yet.
pub struct Link {
    rid: u64,
    sid: Option<String>,
    inbuf: Vec<u8>,
}

impl Link {
    /// A session whose first request will carry `rid`.
    pub fn new(rid: u64) -> Link {
        Link {
            rid,
            sid: None,
            inbuf: Vec::new(),
        }
    }

    fn next_rid(&mut self) -> u64 {
        let r = self.rid;
        self.rid += 1;
        r
    }

    /// The session creation request.
    pub fn create(&mut self, domain: &str, wait: u64) -> Vec<u8> {
        let rid = self.next_rid();
        post(&create(rid, domain, wait))
    }

    /// A request carrying `payload` (empty: a request for the server to hold).
    pub fn send(&mut self, payload: &[u8]) -> Vec<u8> {
        let rid = self.next_rid();
        post(&wrap(rid, self.sid.as_deref().unwrap_or(""), payload))
    }

    /// The restart request.
    pub fn restart(&mut self, domain: &str) -> Vec<u8> {
        let rid = self.next_rid();
        post(&restart(rid, self.sid.as_deref().unwrap_or(""), domain))
    }

    /// Takes bytes read; `on` gets the stanzas of every answer they complete, in order.
    /// Returns how many answers were complete. An answer that is not a `200` with a
    /// `<body>`, or that ends the session (`type='terminate'`), is an error.
    pub fn feed(&mut self, data: &[u8], mut on: impl FnMut(Event)) -> Result<usize, String> {
        self.inbuf.extend_from_slice(data);
        let mut answers = 0;
        loop {
            let Some(head) = parse_response_head(&self.inbuf)? else {
                return Ok(answers);
            };
            let Some(len) = head.content_length.filter(|_| !head.chunked) else {
                return Err("a BOSH answer without Content-Length".into());
            };
            if len > MAX_STANZA {
                return Err(format!("a {len}-byte BOSH answer"));
            }
            let end = head.head_len + len;
            if self.inbuf.len() < end {
                return Ok(answers);
            }
            let rest = self.inbuf.split_off(end);
            let whole = std::mem::replace(&mut self.inbuf, rest);
            let body = &whole[head.head_len..];
            if head.status != 200 {
                return Err(format!("status {} ({})", head.status, escape(body, 200)));
            }
            answers += 1;
            let inner = self.unwrap(body)?;
            let mut split = Splitter::new();
            split.feed(inner, &mut on)?;
            if head.close {
                return Err("the server closed the HTTP connection (Connection: close)".into());
            }
        }
    }

    /// The stanzas inside an answer's `<body>`; notes the `sid` of the first answer.
    fn unwrap<'a>(&mut self, body: &'a [u8]) -> Result<&'a [u8], String> {
        let bad = || format!("not a BOSH <body>: {}", escape(body, 200));
        let start = memchr::memmem::find(body, b"<body").ok_or_else(bad)?;
        let body = &body[start..];
        if attr(body, "type") == Some(b"terminate") {
            let cond = attr(body, "condition").unwrap_or(b"");
            return Err(format!(
                "the server ended the session (terminate {})",
                escape(cond, 60)
            ));
        }
        if self.sid.is_none() {
            let sid =
                attr(body, "sid").ok_or_else(|| format!("no sid in {}", escape(body, 200)))?;
            self.sid = Some(String::from_utf8_lossy(sid).into_owned());
        }
        let open = crate::xmpp::tag_end(body).ok_or_else(bad)?;
        if body[..=open].ends_with(b"/>") {
            return Ok(b"");
        }
        let close = memchr::memmem::rfind(body, b"</body>").ok_or_else(bad)?;
        Ok(&body[open + 1..close])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::{Login, Next, Step};

    fn answer(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// tidings' answers to a BOSH login (features, success, features after the restart,
    /// bind, session) and to the held request at `wait`.
    fn transcript() -> Vec<u8> {
        let features = "<body sid='5f0c' wait='25' requests='2' hold='1' inactivity='60' polling='2' ver='1.6' from='localhost' authid='a1' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' xmlns:stream='http://etherx.jabber.org/streams'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features></body>";
        let success = "<body xmlns='http://jabber.org/protocol/httpbind'><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></body>";
        let restarted = "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:stream='http://etherx.jabber.org/streams'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features></body>";
        let bind = "<body xmlns='http://jabber.org/protocol/httpbind'><iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@localhost/r1</jid></bind></iq></body>";
        let sess = "<body xmlns='http://jabber.org/protocol/httpbind'><iq type='result' id='sess'/></body>";
        let empty = "<body xmlns='http://jabber.org/protocol/httpbind'/>";
        [features, success, restarted, bind, sess, empty]
            .iter()
            .flat_map(|b| answer(b))
            .collect()
    }

    #[test]
    fn requests_are_exact() {
        assert_eq!(
            create(7, "localhost", 60),
            b"<body rid='7' to='localhost' wait='60' hold='1' ver='1.6' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>".to_vec()
        );
        assert_eq!(
            wrap(8, "s", b"<a/>"),
            b"<body rid='8' sid='s' xmlns='http://jabber.org/protocol/httpbind'><a/></body>"
                .to_vec()
        );
        assert_eq!(
            wrap(9, "s", b""),
            b"<body rid='9' sid='s' xmlns='http://jabber.org/protocol/httpbind'/>".to_vec()
        );
        let p = post(b"<body/>");
        assert!(p.starts_with(b"POST /http-bind HTTP/1.1\r\n"));
        assert!(p.ends_with(b"Content-Length: 7\r\n\r\n<body/>"));
    }

    #[test]
    fn a_login_runs_over_the_answers_split_anywhere() {
        let t = transcript();
        for cut in (0..t.len()).step_by(7).chain([t.len()]) {
            let mut link = Link::new(100);
            let first = link.create("localhost", 60);
            assert!(first.ends_with(&create(100, "localhost", 60)));
            let l = Login {
                user: "user",
                password: "secret",
                domain: "localhost",
                resource: "r1",
                subscribe: None,
            };
            let mut step = Step::Features;
            let mut sent = Vec::new();
            let mut up = false;
            let mut answers = 0;
            for part in [&t[..cut], &t[cut..]] {
                let mut evs = Vec::new();
                answers += link.feed(part, |e| evs.push(e)).expect("well formed");
                for e in evs {
                    match l.on(step, &e) {
                        Next::Send(b, s) => {
                            sent.push(if s == Step::Restarted {
                                link.restart("localhost")
                            } else {
                                link.send(&b)
                            });
                            step = s;
                        }
                        Next::Up => up = true,
                        Next::Wait => {}
                        Next::Fail(w) => panic!("{w}"),
                    }
                }
            }
            assert!(up, "cut at {cut}");
            assert_eq!(answers, 6, "the held request's answer too");
            assert_eq!(sent.len(), 4, "auth, restart, bind, session");
            assert!(sent[1].ends_with(&restart(102, "5f0c", "localhost")));
            assert!(sent[2].ends_with(&wrap(103, "5f0c", &crate::xmpp::bind("r1"))));
        }
    }

    #[test]
    fn errors_are_reported() {
        let mut link = Link::new(1);
        let term = answer("<body type='terminate' condition='item-not-found' xmlns='http://jabber.org/protocol/httpbind'/>");
        assert!(link
            .feed(&term, |_| {})
            .unwrap_err()
            .contains("item-not-found"));
        let mut link = Link::new(1);
        let refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
        assert!(link.feed(refused, |_| {}).unwrap_err().contains("503"));
        let mut link = Link::new(1);
        assert!(link.feed(&answer("hello"), |_| {}).is_err());
        let mut link = Link::new(1);
        assert!(link
            .feed(&answer("<body xmlns='x'/>"), |_| {})
            .unwrap_err()
            .contains("no sid"));
    }
}
