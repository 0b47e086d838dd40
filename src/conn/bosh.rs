//! A BOSH session (PROTOCOLS.md 4.5): a connection without a socket, in the slab of the
//! worker that opened it, running the same session machine as an XMPP stream
//! (`xmpp::SessionState`: SASL, bind, urn:M, PubSub and routing are written once).
//!
//! HTTP connections of any worker forward it their request bodies (`Mail::BoshRequest`)
//! and wait; it answers each of them (`Mail::BoshAnswer`) with a `<body>`:
//!
//! ```text
//!  POST /http-bind ─► HttpConn (any worker) ── BoshRequest ──► BoshConn (home worker)
//!                     waits, no read buffer ◄── BoshAnswer ───  rid window, held requests,
//!                                                               stanzas to send, deadline
//! ```
//!
//! Requests run in `rid` order. A run request is held until the session has something to
//! say or its `wait` passes; past `hold` held requests the oldest is answered empty (a
//! second request releases the first). What the session says between requests (answers,
//! PubSub events, routed stanzas) waits in `pending` for the next held request. With
//! nothing held for `inactivity` seconds, the session ends. It answers in `flush`, once per
//! reactor turn, so what arrives in one turn goes out in one answer.

use std::collections::VecDeque;
use std::sync::Arc;

use super::xmpp::SessionState;
use super::{Link, Next};
use crate::hub::{Mail, Message, WaiterRef};
use crate::proto::xmpp::bosh::{self, Admit, Request, Window};
use crate::proto::xmpp::session::{Fed, Session, NS_CLIENT, NS_STREAM};
use crate::worker::Worker;

/// A request that was run and waits for its answer.
struct Held {
    rid: u64,
    from: WaiterRef,
    since: u64,
}

/// One BOSH session.
pub struct BoshConn {
    pub link: Link,
    st: Box<SessionState>,
    sid: Arc<str>,
    wait_ms: u64,
    hold: usize,
    /// Requests that arrived ahead of a missing `rid`, and the last answers.
    window: Window<(WaiterRef, Request)>,
    held: VecDeque<Held>,
    /// Stanzas for the next answer.
    pending: Vec<u8>,
    /// Since when nothing is held (inactivity counts from it).
    idle_since: u64,
    /// The session is over: answer what is held with `terminate` (and this condition), then
    /// close.
    ending: Option<Option<&'static str>>,
}

/// The header the session machine reads at creation and at each `xmpp:restart`: over BOSH
/// the client sends none, the `<body>` attributes stand for it.
fn stream_header(domain: &str) -> String {
    format!(
        "<stream:stream to='{}' version='1.0' xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'>",
        crate::proto::xmpp::stanza::escape(domain)
    )
}

/// Sends an answer to the HTTP connection that forwarded a request.
fn answer_to(from: WaiterRef, status: u16, body: Arc<[u8]>, w: &mut Worker) {
    w.send(
        from,
        Mail::BoshAnswer {
            token: from.token,
            status,
            body,
        },
    );
}

/// The answer to a request for a session that does not exist (or no longer does).
pub fn unknown_session(from: WaiterRef, w: &mut Worker) {
    let body = bosh::terminate(Some("item-not-found"), b"");
    answer_to(from, 200, Arc::from(body), w);
}

impl BoshConn {
    /// A session request (no `sid`), forwarded by `from`: a new session in the slab entry
    /// `key`/`gen`, answered at once with its parameters and the stream's features. `None`
    /// when it cannot be opened (the answer is sent).
    pub fn open(
        key: usize,
        gen: u32,
        from: WaiterRef,
        body: &[u8],
        w: &mut Worker,
    ) -> Option<BoshConn> {
        let shared = w.shared.clone();
        let config = &shared.config;
        let Ok(req) = bosh::parse(body, config.max_message_bytes) else {
            answer_to(
                from,
                200,
                Arc::from(bosh::terminate(Some("bad-request"), b"")),
                w,
            );
            return None;
        };
        if req.to.as_deref().is_some_and(|to| to != config.xmpp_domain) {
            answer_to(
                from,
                200,
                Arc::from(bosh::terminate(Some("host-unknown"), b"")),
                w,
            );
            return None;
        }
        let link = Link::new(key, gen);
        let me = WaiterRef {
            worker: w.id,
            token: link.token(),
        };
        let Some(sid) = shared.bosh.insert(config.max_bosh_sessions, me) else {
            shared.metrics.bosh_sessions_refused.inc();
            answer_to(from, 503, Arc::from(&b"too many BOSH sessions\n"[..]), w);
            return None;
        };
        shared.metrics.bosh_sessions.inc();
        let max_wait = config.long_poll_timeout.as_secs();
        let wait = req.wait.map_or(max_wait, |w| w.min(max_wait));
        let hold = req
            .hold
            .map_or(bosh::HOLD, |h| (h as usize).min(bosh::HOLD));
        let mut c = BoshConn {
            link,
            st: SessionState::new(Session::for_bosh(config.max_message_bytes)),
            sid,
            wait_ms: wait * 1000,
            hold,
            window: Window::new(req.rid),
            held: VecDeque::new(),
            pending: Vec::new(),
            idle_since: w.now,
            ending: None,
        };
        let mut features = String::new();
        c.st.feed(
            stream_header(&config.xmpp_domain).as_bytes(),
            me,
            key,
            w,
            &mut features,
        );
        let created = bosh::created(
            &c.sid,
            wait,
            hold,
            config.bosh_inactivity.as_secs(),
            &config.xmpp_domain,
            c.st.session.stream_id(),
            &features,
        );
        let created: Arc<[u8]> = Arc::from(created);
        c.window.answered(req.rid, created.clone());
        answer_to(from, 200, created, w);
        c.set_deadline(w);
        Some(c)
    }

    fn me(&self, w: &Worker) -> WaiterRef {
        WaiterRef {
            worker: w.id,
            token: self.link.token(),
        }
    }

    /// A request for this session, forwarded by `from`.
    pub fn request(&mut self, from: WaiterRef, body: &[u8], w: &mut Worker) -> Next {
        let Ok(req) = bosh::parse(body, w.shared.config.max_message_bytes) else {
            // The HTTP side read it already; this does not happen.
            answer_to(
                from,
                200,
                Arc::from(bosh::terminate(Some("bad-request"), b"")),
                w,
            );
            return Next::Keep;
        };
        if self.ending.is_some() {
            self.held.push_back(Held {
                rid: req.rid,
                from,
                since: w.now,
            });
            self.link.mark_pending(w);
            return Next::Keep;
        }
        let rid = req.rid;
        match self.window.admit(rid) {
            Admit::Next => {
                self.run(rid, from, req, w);
                while let Some((rid, (from, req))) = self.window.next_early() {
                    self.run(rid, from, req, w);
                }
            }
            // It waits in the window for the request before it.
            Admit::Early => self.window.keep(rid, (from, req)),
            Admit::Replay(body) => answer_to(from, 200, body, w),
            Admit::Held => {
                // The client lost the connection of a held request and sent it again.
                match self.held.iter_mut().find(|h| h.rid == rid) {
                    Some(h) => h.from = from,
                    None => answer_to(from, 200, Arc::from(bosh::answer(b"")), w),
                }
            }
            Admit::Outside => {
                self.held.push_back(Held {
                    rid,
                    from,
                    since: w.now,
                });
                self.end(Some("item-not-found"), w);
            }
        }
        self.link.mark_pending(w);
        Next::Keep
    }

    /// Runs a request in its turn: its stanzas go to the session, and it is held.
    fn run(&mut self, rid: u64, from: WaiterRef, req: Request, w: &mut Worker) {
        let me = self.me(w);
        let key = self.link.key;
        let mut text = String::new();
        let mut fed = Fed::More { consumed: 0 };
        if req.restart {
            let header = stream_header(&w.shared.config.xmpp_domain);
            fed = self.st.feed(header.as_bytes(), me, key, w, &mut text);
        }
        if fed != Fed::Close && !req.payload.is_empty() {
            fed = self.st.feed(&req.payload, me, key, w, &mut text);
        }
        self.pending.extend_from_slice(text.as_bytes());
        self.held.push_back(Held {
            rid,
            from,
            since: w.now,
        });
        if req.terminate {
            self.end(None, w);
        } else if fed == Fed::Close || self.st.session.closed() {
            let condition = text
                .contains("<stream:error>")
                .then_some("remote-stream-error");
            self.end(condition, w);
        } else if let Fed::More { consumed } = fed {
            if consumed < req.payload.len() {
                // A stanza cut off inside the body: `bosh::parse` keeps only whole ones.
                self.end(Some("bad-request"), w);
            }
        }
    }

    fn end(&mut self, condition: Option<&'static str>, w: &mut Worker) {
        if self.ending.is_none() {
            self.ending = Some(condition);
        }
        self.link.mark_pending(w);
    }

    /// Answers what can be answered: called once per turn after the session changed.
    pub fn flush(&mut self, w: &mut Worker) -> Next {
        self.link.flushed();
        if let Some(condition) = self.ending {
            let pending = std::mem::take(&mut self.pending);
            let mut first = true;
            while let Some(h) = self.held.pop_front() {
                let said = if first { &pending[..] } else { b"" };
                first = false;
                self.answer(h, bosh::terminate(condition, said), w);
            }
            return Next::Close;
        }
        if !self.pending.is_empty() {
            if let Some(h) = self.held.pop_front() {
                let body = bosh::answer(&std::mem::take(&mut self.pending));
                self.answer(h, body, w);
            } else if self.pending.len() > w.shared.config.max_output_bytes {
                // Nobody polls and the session keeps being told things.
                w.shared.metrics.slow_readers_closed.inc();
                self.ending = Some(Some("policy-violation"));
                return Next::Close;
            }
        }
        while self.held.len() > self.hold {
            if let Some(h) = self.held.pop_front() {
                self.answer(h, bosh::answer(b""), w);
            }
        }
        self.set_deadline(w);
        Next::Keep
    }

    fn answer(&mut self, h: Held, body: Vec<u8>, w: &mut Worker) {
        let body: Arc<[u8]> = Arc::from(body);
        self.window.answered(h.rid, body.clone());
        answer_to(h.from, 200, body, w);
        if self.held.is_empty() {
            self.idle_since = w.now;
        }
    }

    /// The one deadline: the oldest held request's `wait`, or the end of inactivity.
    fn set_deadline(&mut self, w: &mut Worker) {
        let t = match self.held.front() {
            Some(h) => h.since + self.wait_ms,
            None => self.idle_since + w.shared.config.bosh_inactivity.as_millis() as u64,
        };
        self.link.set_deadline(t, w);
    }

    pub fn on_timer(&mut self, entry: u64, w: &mut Worker) -> Next {
        if !self.link.due(entry, w) {
            return Next::Keep;
        }
        if self.held.is_empty() {
            w.shared.metrics.bosh_inactive.inc();
            return Next::Close;
        }
        // The oldest held request waited `wait`: it is answered empty.
        while self
            .held
            .front()
            .is_some_and(|h| h.since + self.wait_ms <= w.now)
        {
            if let Some(h) = self.held.pop_front() {
                self.answer(h, bosh::answer(b""), w);
            }
        }
        self.set_deadline(w);
        Next::Keep
    }

    /// A message on a channel this session subscribed to with PubSub.
    pub fn deliver(&mut self, channel: &Arc<str>, msg: &Arc<Message>, w: &mut Worker) -> Next {
        if self.ending.is_some() {
            return Next::Keep;
        }
        if let Some([head, tail]) = self.st.event(channel, msg, w) {
            self.pending.extend_from_slice(&head);
            self.pending.extend_from_slice(&tail);
            self.link.mark_pending(w);
        }
        Next::Keep
    }

    /// A stanza routed here from another session.
    /// Redis answered the oldest PubSub publish this session holds an answer for.
    pub fn published(&mut self, stored: bool, w: &mut Worker) -> Next {
        match self.st.published(stored) {
            Some(answer) => self.deliver_stanza(&answer, w),
            None => Next::Keep,
        }
    }

    pub fn deliver_stanza(&mut self, stanza: &Arc<[u8]>, w: &mut Worker) -> Next {
        if self.ending.is_some() || self.st.session.jid().is_none() {
            return Next::Keep;
        }
        self.pending.extend_from_slice(stanza);
        self.link.mark_pending(w);
        Next::Keep
    }

    /// A newer session took this one's full JID.
    pub fn replaced(&mut self, w: &mut Worker) -> Next {
        let text = self.st.replaced(w);
        self.pending.extend_from_slice(text.as_bytes());
        self.end(Some("remote-stream-error"), w);
        Next::Keep
    }

    /// The server is stopping.
    pub fn begin_shutdown(&mut self, w: &mut Worker) -> Next {
        self.end(Some("system-shutdown"), w);
        Next::Keep
    }

    /// Releases what the session holds; requests still waiting are told it ended. Call
    /// once, when it leaves the slab.
    pub fn close(mut self, w: &mut Worker) {
        let condition = self.ending.flatten();
        let waiting: Vec<WaiterRef> = self
            .held
            .drain(..)
            .map(|h| h.from)
            .chain(self.window.early().map(|(from, _)| *from))
            .collect();
        for from in waiting {
            answer_to(from, 200, Arc::from(bosh::terminate(condition, b"")), w);
        }
        let me = self.me(w);
        self.st.release(me, self.link.key, w);
        w.shared.bosh.remove(&self.sid);
        w.shared.metrics.bosh_sessions.dec();
    }
}
