//! The XMPP connection machine, sans-io like the HTTP one: bytes, time and hang-ups in;
//! bytes to write and what to do out. The stream itself (stanzas, SASL, bind, routing
//! decisions) is `proto::xmpp::session`; this keeps the read buffer (only while a stanza is
//! partial), the output, the deadline and the session's place in the registry of JIDs.

use std::sync::Arc;

use super::out::{Out, Seg};
use super::readbuf::ReadBuf;
use super::socket::SocketResult;
use super::{Link, Next};
use crate::hub::{Draft, Mail, Message, Origin, Subscribe, WaiterRef};
use crate::proto;
use crate::proto::xmpp::pubsub;
use crate::proto::xmpp::sasl::Users;
use crate::proto::xmpp::session::{Env, Fed, ItemsIq, PubSubError, Session};
use crate::proto::xmpp::stanza::Element;
use crate::worker::{Shared, Worker};

pub use super::http::{Input, Wrote, LINGER_MS};

/// One XMPP client connection.
pub struct XmppConn {
    pub link: Link,
    /// The stream and the PubSub subscriptions, boxed: a connection pays a pointer.
    st: Box<SessionState>,
    buf: Option<Box<ReadBuf>>,
    pub out: Out,
    pub peer_closed: bool,
    /// The stream is over: write what is queued, then shut the write side and linger.
    closing: Option<bool>,
    /// Open sessions are counted once (gauge), from authentication to close.
    counted: bool,
}

/// A PubSub node must be a channel name the user may use (the credentials patterns).
fn node_allowed(shared: &Shared, user: &str, node: &str) -> Result<(), PubSubError> {
    proto::channel_name(node.as_bytes())
        .map_err(|r| PubSubError::BadNode(String::from_utf8_lossy(&r.body).trim().to_string()))?;
    if !shared.auth.user_allows(user, node) {
        shared.metrics.auth_failures.inc();
        return Err(PubSubError::Forbidden);
    }
    Ok(())
}

/// What an XMPP session keeps behind its one pointer, over TCP (`XmppConn`) or BOSH
/// (`super::bosh`): the session machine, its PubSub subscriptions, its event head.
pub(super) struct SessionState {
    pub session: Session,
    /// The hub channels this session subscribed to with PubSub.
    subs: Vec<Sub>,
    /// The head of this session's PubSub events (`<message from=… to='JID`), made on the
    /// first event and shared by every later one: a delivery allocates nothing.
    event_head: Option<Arc<[u8]>>,
    /// With `--redis`: the answers to PubSub publishes Redis has not stored yet, oldest
    /// first: (stored, failed).
    held: std::collections::VecDeque<(String, String)>,
}

/// A PubSub subscription: a place in the channel's waiter list, like a Talk stream's.
struct Sub {
    channel: Arc<str>,
    /// Highest `seq` sent; older mail is skipped.
    cursor: u64,
    subid: String,
}

impl SessionState {
    pub fn new(session: Session) -> Box<SessionState> {
        Box::new(SessionState {
            session,
            subs: Vec::new(),
            event_head: None,
            held: Default::default(),
        })
    }

    /// Redis answered this session's oldest held publish: the answer to send, if any.
    pub fn published(&mut self, stored: bool) -> Option<Arc<[u8]>> {
        let (ok, failed) = self.held.pop_front()?;
        let text = if stored { ok } else { failed };
        Some(Arc::from(text.into_bytes()))
    }

    /// Runs the session over `input` (what the client sent and was not consumed yet),
    /// writing its answers to `text`. `me` and `key` name the connection that holds it.
    pub fn feed(
        &mut self,
        input: &[u8],
        me: WaiterRef,
        key: usize,
        w: &mut Worker,
        text: &mut String,
    ) -> Fed {
        let shared = w.shared.clone();
        let SessionState {
            session,
            subs,
            held,
            ..
        } = self;
        let mut env = ConnEnv {
            shared: &shared,
            me,
            key,
            w,
            subs,
            held,
            holding: false,
        };
        session.feed(input, &shared.config.xmpp_domain, text, &mut env)
    }

    /// A message on a channel: the head and tail of its PubSub event for this session, the
    /// tail rendered once per message and shared (PROTOCOLS.md 4.4); `None` when the session
    /// did not subscribe to the channel or already had the message.
    pub fn event(
        &mut self,
        channel: &Arc<str>,
        msg: &Arc<Message>,
        w: &Worker,
    ) -> Option<[Arc<[u8]>; 2]> {
        let jid = self.session.jid()?;
        let sub = self.subs.iter_mut().find(|s| s.channel == *channel)?;
        if msg.seq <= sub.cursor {
            return None;
        }
        sub.cursor = msg.seq;
        let head = self
            .event_head
            .get_or_insert_with(|| Arc::from(pubsub::event_head(&w.shared.config.xmpp_domain, jid)))
            .clone();
        w.shared.metrics.messages_delivered.inc();
        Some([head, pubsub::event_tail(msg, channel)])
    }

    /// A newer session bound this one's full JID: the stream error that ends it.
    pub fn replaced(&mut self, w: &Worker) -> String {
        let mut text = String::new();
        self.session
            .replaced(&w.shared.config.xmpp_domain, &mut text);
        text
    }

    /// Releases the session's JID and its subscriptions. Call once, when it ends.
    pub fn release(&mut self, me: WaiterRef, key: usize, w: &mut Worker) {
        if let Some(jid) = self.session.jid() {
            w.shared.xmpp.unbind(jid, me);
        }
        for sub in std::mem::take(&mut self.subs) {
            w.leave_channel(&sub.channel, key, me.token, None);
        }
    }
}

/// The users XMPP knows: the store's (those of `--credentials` and those made with
/// `set-user`), or the demo account `user`/`secret` while there are none (PROTOCOLS.md 4.1;
/// the server refuses to start with no users on a listener that is not loopback).
pub struct XmppUsers<'a>(&'a Shared);

impl Users for XmppUsers<'_> {
    fn password(&self, user: &str) -> Option<Vec<u8>> {
        if self.0.store.user_count() == 0 {
            return (user == "user").then(|| b"secret".to_vec());
        }
        self.0.store.password(user)
    }
}

/// The session's view of the server.
struct ConnEnv<'a> {
    shared: &'a Shared,
    me: WaiterRef,
    key: usize,
    w: &'a mut Worker,
    subs: &'a mut Vec<Sub>,
    held: &'a mut std::collections::VecDeque<(String, String)>,
    /// The publish just made went to Redis: its answer is held until Redis's.
    holding: bool,
}

impl Env for ConnEnv<'_> {
    fn users(&self) -> &dyn Users {
        // A zero-sized view over the shared state.
        self
    }
    fn bind(&mut self, full_jid: &str) {
        self.shared.xmpp.bind(full_jid, self.me, &self.shared.hub);
    }
    fn route(&mut self, to: &str, stanza: String) {
        self.shared.xmpp.route(to, &stanza, &self.shared.hub);
    }
    fn subscribe(&mut self, user: &str, node: &str) -> Result<String, PubSubError> {
        let shared = self.shared;
        node_allowed(shared, user, node)?;
        if let Some(sub) = self.subs.iter().find(|s| &*s.channel == node) {
            return Ok(sub.subid.clone());
        }
        let sub = Subscribe {
            worker: self.me.worker,
            token: self.me.token,
            since: None,
            talk_name: None,
        };
        let subscribed = shared.hub.subscribe(node, sub).map_err(|e| {
            shared.metrics.waiters_refused.inc();
            PubSubError::Refused(e.to_string())
        })?;
        let channel = self.w.join_channel(node, self.key);
        let subid = shared.hub.new_id();
        self.subs.push(Sub {
            channel,
            cursor: subscribed.cursor,
            subid: subid.clone(),
        });
        Ok(subid)
    }

    fn unsubscribe(&mut self, node: &str) -> Result<(), PubSubError> {
        let Some(i) = self.subs.iter().position(|s| &*s.channel == node) else {
            return Ok(());
        };
        let sub = self.subs.swap_remove(i);
        self.w
            .leave_channel(&sub.channel, self.key, self.me.token, None);
        Ok(())
    }

    fn publish(
        &mut self,
        user: &str,
        from: &str,
        node: &str,
        id: Option<&str>,
        payload: &str,
    ) -> Result<String, PubSubError> {
        let shared = self.shared;
        node_allowed(shared, user, node)?;
        if payload.len() > shared.config.max_message_bytes {
            return Err(PubSubError::Refused(
                "payload larger than --max-message-bytes".into(),
            ));
        }
        let draft = Draft {
            id: id.filter(|i| !i.is_empty()).map(str::to_string),
            from: from.to_string(),
            ..Draft::with_body(payload.as_bytes().to_vec())
        };
        // Through Redis, the answer waits for Redis's (`answer_published`).
        self.holding = shared.hub.shared_in_redis(node);
        let stored = match self.holding {
            true => shared
                .hub
                .publish_redis(node, vec![draft], Origin::Xmpp, false, Some(self.me)),
            false => shared.hub.publish(node, vec![draft], Origin::Xmpp, false),
        }
        .map_err(|e| PubSubError::Refused(e.to_string()))?;
        Ok(stored
            .last()
            .map(|m| m.id.to_string())
            .or_else(|| id.map(str::to_string))
            .unwrap_or_default())
    }

    fn answer_published(&mut self, stored: String, failed: String, out: &mut String) {
        match std::mem::take(&mut self.holding) {
            true => self.held.push_back((stored, failed)),
            false => out.push_str(&stored),
        }
    }

    fn items_later(
        &mut self,
        user: &str,
        node: &str,
        max: usize,
        answer: ItemsIq,
        out: &mut String,
    ) -> Option<ItemsIq> {
        let shared = self.shared;
        if !shared.hub.shared_in_redis(node) || node_allowed(shared, user, node).is_err() {
            return Some(answer);
        }
        // The answer goes to this session as a stanza, like a routed one.
        let me = self.me;
        let render = answer.clone();
        let asked = shared.hub.read_redis(node, max, move |hub, read| {
            let items = read
                .map(|messages| {
                    let mut items = String::new();
                    for m in &messages {
                        pubsub::item(m, &mut items);
                    }
                    items
                })
                .map_err(|e| PubSubError::Refused(e.to_string()));
            let stanza: Arc<[u8]> = Arc::from(render.render(items).into_bytes());
            hub.send(
                me.worker,
                Mail::Stanza {
                    token: me.token,
                    stanza,
                },
            );
        });
        if let Err(e) = asked {
            out.push_str(&answer.render(Err(PubSubError::Refused(e.to_string()))));
        }
        None
    }

    fn items(&mut self, user: &str, node: &str, max: usize) -> Result<String, PubSubError> {
        let shared = self.shared;
        node_allowed(shared, user, node)?;
        let read = shared.hub.read(node, 0, usize::MAX);
        let skip = read.messages.len().saturating_sub(max);
        let mut out = String::new();
        for m in &read.messages[skip..] {
            pubsub::item(m, &mut out);
        }
        Ok(out)
    }

    fn urn_m(&mut self, user: &str, iq: &Element, raw: &[u8]) -> Option<String> {
        let shared = self.shared;
        Some(crate::proto::xmpp::urn::answer(
            &shared.store,
            &*shared.hub,
            &shared.config.xmpp_domain,
            user,
            iq,
            raw,
        ))
    }
}

impl Users for ConnEnv<'_> {
    fn password(&self, user: &str) -> Option<Vec<u8>> {
        XmppUsers(self.shared).password(user)
    }
}

impl XmppConn {
    /// A new connection: it must authenticate within `--header-timeout`.
    pub fn new(key: usize, gen: u32, w: &mut Worker) -> XmppConn {
        let mut c = XmppConn {
            link: Link::new(key, gen),
            st: SessionState::new(Session::new(w.shared.config.max_message_bytes)),
            buf: None,
            out: Out::default(),
            peer_closed: false,
            closing: None,
            counted: false,
        };
        let t = w.after(w.shared.config.header_timeout);
        c.link.set_deadline(t, w);
        c
    }

    fn me(&self, w: &Worker) -> WaiterRef {
        WaiterRef {
            worker: w.id,
            token: self.link.token(),
        }
    }

    pub fn wants_input(&mut self, w: &Worker) -> Input {
        if self.closing.is_some() {
            return Input::Discard;
        }
        if self.out.len() > w.shared.config.max_output_bytes {
            return Input::Pause;
        }
        Input::Read {
            limit: w.shared.config.max_message_bytes + 4096,
        }
    }

    pub fn input_buf(&mut self, w: &mut Worker) -> &mut ReadBuf {
        self.buf.get_or_insert_with(|| w.pool.take())
    }

    /// Input arrived: run the session over it.
    pub fn received(&mut self, result: SocketResult, w: &mut Worker) -> Next {
        let Some(mut buf) = self.buf.take() else {
            return Next::Keep;
        };
        if result == SocketResult::Error {
            w.pool.give(buf);
            return Next::Close;
        }
        if result == SocketResult::Continue {
            w.again.push(self.link.key);
        }
        let me = self.me(w);
        let key = self.link.key;
        let was_authenticated = self.st.session.authenticated();
        let mut text = String::new();
        let fed = self.st.feed(&buf, me, key, w, &mut text);
        if !text.is_empty() {
            self.out.push(Seg::Owned(text.into_bytes()));
            self.link.mark_pending(w);
        }
        if !was_authenticated && self.st.session.authenticated() {
            // Authenticated sessions have no idle timeout (like Talk streams).
            self.link.set_deadline(super::NEVER, w);
            w.shared.metrics.xmpp_sessions.inc();
            self.counted = true;
        }
        match fed {
            Fed::More { consumed } => {
                buf.consume(consumed);
                buf.compact_if_worth();
            }
            Fed::Close => {
                buf.clear();
                self.begin_closing(w);
            }
        }
        if buf.is_empty() {
            w.pool.give(buf);
        } else {
            w.pool.note(&mut buf);
            self.buf = Some(buf);
        }
        if result == SocketResult::Closed && self.closing.is_none() {
            // The client left without closing its stream.
            return Next::Close;
        }
        if result == SocketResult::Full && self.closing.is_none() {
            // A stanza larger than the buffer: the session's limit should have caught it.
            return Next::Close;
        }
        Next::Keep
    }

    fn begin_closing(&mut self, w: &mut Worker) {
        if self.closing.is_none() {
            self.closing = Some(false);
            self.link.set_deadline(w.now + LINGER_MS, w);
            self.link.mark_pending(w);
        }
    }

    pub fn output(&mut self, _w: &Worker) -> &mut Out {
        self.link.flushed();
        &mut self.out
    }

    pub fn wrote(&mut self, result: SocketResult, w: &mut Worker) -> Wrote {
        match result {
            SocketResult::Error | SocketResult::Closed => Wrote::Close,
            SocketResult::Continue => {
                self.link.mark_pending(w);
                Wrote::Keep
            }
            SocketResult::Done if self.closing == Some(false) => {
                self.closing = Some(true);
                Wrote::ShutdownWrite
            }
            _ => Wrote::Keep,
        }
    }

    pub fn on_timer(&mut self, entry: u64, w: &mut Worker) -> Next {
        if !self.link.due(entry, w) {
            return Next::Keep;
        }
        if self.closing.is_some() {
            return Next::Close;
        }
        // Not authenticated within --header-timeout.
        w.shared.metrics.header_timeouts.inc();
        Next::Close
    }

    /// A message on a channel this session subscribed to: one event stanza, its tail
    /// rendered once per message and shared (PROTOCOLS.md 4.4).
    pub fn deliver(&mut self, channel: &Arc<str>, msg: &Arc<Message>, w: &mut Worker) -> Next {
        if self.closing.is_some() {
            return Next::Keep;
        }
        let Some([head, tail]) = self.st.event(channel, msg, w) else {
            return Next::Keep;
        };
        self.out.push(Seg::Shared(head));
        self.out.push(Seg::Shared(tail));
        if self.out.len() > w.shared.config.max_output_bytes {
            w.shared.metrics.slow_readers_closed.inc();
            return Next::Close;
        }
        self.link.mark_pending(w);
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
        if self.closing.is_some() || self.st.session.jid().is_none() {
            return Next::Keep;
        }
        self.out.push(Seg::Shared(stanza.clone()));
        if self.out.len() > w.shared.config.max_output_bytes {
            w.shared.metrics.slow_readers_closed.inc();
            return Next::Close;
        }
        self.link.mark_pending(w);
        Next::Keep
    }

    /// A newer session took this one's full JID.
    pub fn replaced(&mut self, w: &mut Worker) -> Next {
        let text = self.st.replaced(w);
        self.out.push(Seg::Owned(text.into_bytes()));
        self.begin_closing(w);
        Next::Keep
    }

    /// The server is stopping: end the stream.
    pub fn begin_shutdown(&mut self, w: &mut Worker) -> Next {
        let mut text = String::new();
        self.st.session.shutdown(&mut text);
        self.out.push(Seg::Owned(text.into_bytes()));
        self.begin_closing(w);
        Next::Keep
    }

    /// Releases what the connection holds. Call once, when it leaves the slab.
    pub fn close(mut self, w: &mut Worker) {
        let me = self.me(w);
        self.st.release(me, self.link.key, w);
        if self.counted {
            w.shared.metrics.xmpp_sessions.dec();
        }
        if let Some(buf) = self.buf.take() {
            w.pool.give(buf);
        }
    }
}

super::io_by_inherent_methods!(XmppConn);
