//! The HTTP/1.1 connection machine, sans-io: bytes, the time and hang-ups go in; bytes to
//! write (`out`) and what to do with the connection (`Next`, subscriptions, parking, a
//! stream) come out. It never touches a socket: the shell in `conn/mod.rs` reads and writes
//! for it, and a test can drive it with a virtual clock (see `sim.rs`).
//!
//! Every phase change of an HTTP connection happens in `HttpConn`'s methods, here and in
//! `streaming.rs` (a stream's start, records, end and WebSocket input), by replacing the
//! whole `Phase` (its types are in `conn/phase.rs`); `LIFECYCLE.md` beside `lib.rs` draws it.

mod streaming;

use std::sync::Arc;

use super::out::{self, Out};
pub use super::phase::{Forwarded, Parked, Phase, Syncing};
use super::phase::{Step, FORWARD_SLACK_MS};
use super::readbuf::ReadBuf;
use super::socket::SocketResult;
pub use super::{Input, Wrote};
use super::{Link, Next};
use crate::debug;
use crate::http::{self, HttpError, Method, Seg};
use crate::hub::{HubError, Mail, Subscribe, WaiterRef};
use crate::metrics::Proto;
use crate::proto::{self, Action, Form, ParkKind, Reply, Request};
use crate::storage::SyncState;
use crate::worker::Worker;

/// How long a closing connection keeps draining its input so its last reply is not reset.
pub const LINGER_MS: u64 = 2000;
/// Bytes a buffer may hold past one head and one body before reading stops.
const READ_SLACK: usize = 1024;
/// Requests answered for one connection in one reactor turn; then the other connections of
/// the worker are served before it gets another turn.
pub const MAX_REQUESTS_PER_TURN: usize = 64;

/// One HTTP/1.1 connection.
pub struct HttpConn {
    pub link: Link,
    phase: Phase,
    buf: Option<Box<ReadBuf>>,
    /// The buffer was taken from the pool for the read in progress.
    fresh: bool,
    pub out: Out,
    /// A request on this connection carried `Head:` (Talk's headless clients).
    headless: bool,
    /// The peer hung up (EPOLLRDHUP): read to the EOF, whatever the read sizes.
    pub peer_closed: bool,
    /// Reading stopped because the output passed `--max-output-bytes`; resumes once the
    /// client has read it.
    backpressured: bool,
    /// Accepted past `--max-connections` (into `--admin-connections`): only `/health` and
    /// `/metrics` are served.
    restricted: bool,
    /// A stream started and the shell has not yet sized its send buffer.
    stream_started: bool,
    /// The last `process` stopped at `MAX_REQUESTS_PER_TURN` with requests left.
    yielded: bool,
}

impl HttpConn {
    /// A new connection: it must send a request head within `--header-timeout`.
    pub fn new(key: usize, gen: u32, restricted: bool, w: &mut Worker) -> HttpConn {
        let mut c = HttpConn {
            link: Link::new(key, gen),
            phase: Phase::Head,
            buf: None,
            fresh: false,
            out: Out::default(),
            headless: false,
            peer_closed: false,
            backpressured: false,
            restricted,
            stream_started: false,
            yielded: false,
        };
        let t = w.after(w.shared.config.header_timeout);
        c.link.set_deadline(t, w);
        c
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// True once after a stream started: the shell then caps the socket's send buffer.
    pub fn take_stream_started(&mut self) -> bool {
        std::mem::take(&mut self.stream_started)
    }

    /// Whether the connection holds a read buffer.
    pub fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }

    /// What to do when the socket is readable.
    pub fn wants_input(&mut self, w: &Worker) -> Input {
        let config = &w.shared.config;
        if let Phase::Streaming(s) = &mut self.phase {
            if s.kind.websocket().is_some() {
                if self.out.len() > config.max_output_bytes {
                    // A client that sends pings and never reads the pongs.
                    self.backpressured = true;
                    return Input::Pause;
                }
                // A whole frame of the largest message fits.
                return Input::Read {
                    limit: config.max_message_bytes + crate::proto::websocket::MAX_HEADER,
                };
            }
        }
        if matches!(self.phase, Phase::Streaming(_) | Phase::Closing { .. }) {
            return Input::Discard;
        }
        if self.out.len() > config.max_output_bytes {
            // A pipelining client that does not read its answers: stop reading until it has.
            self.backpressured = true;
            return Input::Pause;
        }
        Input::Read {
            limit: config.max_head_bytes + config.max_body_bytes + READ_SLACK,
        }
    }

    /// The buffer to read into (taken from the pool if the connection holds none).
    pub fn input_buf(&mut self, w: &mut Worker) -> &mut ReadBuf {
        if self.buf.is_none() {
            self.fresh = true;
        }
        self.buf.get_or_insert_with(|| w.pool.take())
    }

    /// Input was read into `input_buf` with this result: answer every complete request.
    pub fn received(&mut self, result: SocketResult, w: &mut Worker) -> Next {
        let fresh = std::mem::take(&mut self.fresh);
        let Some(buf) = self.buf.take() else {
            return Next::Keep;
        };
        if matches!(self.phase, Phase::Streaming(_)) {
            return self.websocket_input(buf, result, w);
        }
        let parked = matches!(
            self.phase,
            Phase::Parked(_) | Phase::Syncing(_) | Phase::Forwarded(_)
        );
        let (eof, capped) = match result {
            SocketResult::Error => {
                w.pool.give(buf);
                return Next::Close;
            }
            SocketResult::Closed => (true, false),
            SocketResult::Done | SocketResult::WouldBlock => (false, false),
            SocketResult::Continue => (false, true),
            // Full: read the rest once the requests in the buffer are answered (a parked
            // connection reads again when it is answered).
            SocketResult::Full if parked => {
                self.backpressured = true;
                (false, false)
            }
            SocketResult::Full => (false, true),
        };
        if buf.is_empty() {
            w.pool.give(buf);
        } else {
            if matches!(self.phase, Phase::Head) && fresh {
                // The first bytes of a request: it must now complete within the header timeout.
                let t = w.after(w.shared.config.header_timeout);
                self.link.set_deadline(t, w);
            }
            self.buf = Some(buf);
        }
        if parked {
            // A parked client that hangs up is dropped at once; anything it pipelined
            // waits in the buffer until the parked request is answered.
            if let Some(buf) = self.buf.as_mut() {
                w.pool.note(buf);
            }
            if capped {
                w.again.push(self.link.key);
            }
            if let Phase::Syncing(s) = &mut self.phase {
                s.keep_alive &= !eof; // a client that finished sending still gets its answer
                return Next::Keep;
            }
            return if eof { Next::Close } else { Next::Keep };
        }
        let mut next = self.process(w, !capped);
        if let Some(buf) = self.buf.as_mut() {
            buf.compact_if_worth();
            w.pool.note(buf);
        }
        let limit = w.shared.config.max_head_bytes + w.shared.config.max_body_bytes + READ_SLACK;
        let stuck = result == SocketResult::Full
            && !self.backpressured
            && !self.yielded
            && self.buf.as_ref().is_some_and(|b| b.len() >= limit);
        if stuck && next == Next::Keep && matches!(self.phase, Phase::Head | Phase::Body) {
            // The request in the full buffer cannot complete (a chunked body whose encoding
            // outgrew the buffer): refuse it rather than read nothing forever.
            let _ = self.fail(HttpError::BodyTooLarge, w);
            if let Some(buf) = self.buf.take() {
                w.pool.give(buf);
            }
            next = Next::Keep;
        } else if capped {
            w.again.push(self.link.key);
        }
        if eof && next == Next::Keep {
            // The client finished sending. Answer what it asked, then close.
            match self.phase {
                Phase::Head | Phase::Body if self.out.is_empty() => return Next::Close,
                Phase::Head | Phase::Body => self.phase = Phase::Closing { lingering: false },
                // A long-poll or stream whose client already hung up: the EOF has been
                // read, so no later event would tell; drop it now.
                Phase::Parked(_) | Phase::Forwarded(_) | Phase::Streaming(_) => return Next::Close,
                Phase::Syncing(_) | Phase::Closing { .. } => {}
            }
        }
        next
    }

    /// The output to write now (a stream's waiting records are framed into it first).
    pub fn output(&mut self, w: &Worker) -> &mut Out {
        self.link.flushed();
        self.frame_records(w.now);
        &mut self.out
    }

    /// The output was written with this result.
    pub fn wrote(&mut self, result: SocketResult, w: &mut Worker) -> Wrote {
        match result {
            SocketResult::Error | SocketResult::Closed => return Wrote::Close,
            SocketResult::WouldBlock | SocketResult::Full => return Wrote::Keep,
            SocketResult::Continue => {
                self.link.mark_pending(w);
                return Wrote::Keep;
            }
            SocketResult::Done => {}
        }
        if std::mem::take(&mut self.backpressured) {
            w.again.push(self.link.key);
        }
        match &mut self.phase {
            Phase::Streaming(s) if s.has_records() && s.hold_until <= w.now => Wrote::More,
            Phase::Closing { lingering } if !*lingering => {
                *lingering = true;
                self.link.set_deadline(w.now + LINGER_MS, w);
                Wrote::ShutdownWrite
            }
            _ => Wrote::Keep,
        }
    }

    /// A timer entry for this connection came due.
    pub fn on_timer(&mut self, entry: u64, w: &mut Worker) -> Next {
        if !self.link.due(entry, w) {
            return Next::Keep;
        }
        let shared = w.shared.clone();
        let m = &shared.metrics;
        match &mut self.phase {
            Phase::Head if self.buf.is_none() => {
                m.idle_timeouts.inc();
                Next::Close
            }
            Phase::Head | Phase::Body => {
                m.header_timeouts.inc();
                debug!("closing a connection: request not complete within the header timeout");
                Next::Close
            }
            Phase::Streaming(s) => {
                let interval = shared.config.talk_keepalive.as_millis() as u64;
                if s.hold_until != 0 && s.hold_until <= w.now {
                    // The coalescing hold is over: send the burst.
                    s.hold_until = 0;
                    let t = match s.kind.keepalive() {
                        Some(_) => s.last_record + interval,
                        None => s.expires_at,
                    };
                    self.link.set_deadline(t, w);
                    self.link.mark_pending(w);
                    return Next::Keep;
                }
                if s.kind.keepalive().is_none() && w.now < s.expires_at {
                    // Not the subscriber timeout (a stale entry): wait for it.
                    let t = s.expires_at;
                    self.link.set_deadline(t, w);
                    return Next::Keep;
                }
                if s.kind.keepalive().is_some() && w.now < s.last_record + interval {
                    let t = s.last_record + interval;
                    self.link.set_deadline(t, w);
                    return Next::Keep;
                }
                let Some(keepalive) = s.kind.keepalive() else {
                    // A kind without keep-alive has a deadline only for nchan's
                    // `--nchan-subscriber-timeout`: it ends.
                    if let Some(bytes) = s.kind.expired() {
                        m.long_poll_timeouts.inc();
                        self.end_stream_with(bytes, w);
                    }
                    return Next::Keep;
                };
                s.push(keepalive);
                s.last_record = w.now;
                self.link.set_deadline(w.now + interval, w);
                self.link.mark_pending(w);
                Next::Keep
            }
            Phase::Parked(_) => {
                m.long_poll_timeouts.inc();
                self.unpark(w, true)
            }
            // Not stored in time (disk or Redis): 503.
            Phase::Syncing(_) => {
                let e = match w.shared.hub.redis_mode() {
                    true => HubError::Redis,
                    false => HubError::Storage,
                };
                self.synced(Err(e), w)
            }
            Phase::Forwarded(_) => {
                // The session never answered (it ended as the request went to it).
                let body = proto::xmpp::bosh::terminate(Some("item-not-found"), b"");
                self.forwarded_answer(200, &Arc::from(body), w)
            }
            Phase::Closing { .. } => Next::Close,
        }
    }

    /// Answers every complete request in the buffer, in order.
    /// `drained`: the socket had no more data when the buffer was last filled.
    fn process(&mut self, w: &mut Worker, drained: bool) -> Next {
        let mut answered = 0;
        self.yielded = false;
        loop {
            if self.out.len() > w.shared.config.max_output_bytes {
                self.backpressured = true;
                return Next::Keep;
            }
            if answered >= MAX_REQUESTS_PER_TURN && self.buf.is_some() {
                // Fair to the others on this worker: the rest waits for the next turn.
                w.again.push(self.link.key);
                self.yielded = true;
                return Next::Keep;
            }
            let Some(mut buf) = self.buf.take() else {
                return Next::Keep;
            };
            let had_request = matches!(self.phase, Phase::Body);
            let step = self.step(&mut buf, w, drained);
            if matches!(self.phase, Phase::Streaming(_) | Phase::Closing { .. }) {
                // Nothing after a stream or a closing answer will be served.
                buf.clear();
            }
            let answered_one = had_request && !matches!(self.phase, Phase::Body);
            answered += usize::from(answered_one);
            if buf.is_empty() {
                w.pool.give(buf);
                if matches!(self.phase, Phase::Head) {
                    let t = w.after(w.shared.config.idle_timeout);
                    self.link.set_deadline(t, w);
                }
            } else {
                if answered_one && matches!(self.phase, Phase::Head) {
                    // The next request has begun: the header timeout is for it, not for the
                    // connection, so a busy pipelining client is never cut off.
                    let t = w.after(w.shared.config.header_timeout);
                    self.link.set_deadline(t, w);
                }
                self.buf = Some(buf);
            }
            match step {
                Step::Continue => continue,
                Step::Wait => return Next::Keep,
                Step::Close => return Next::Close,
            }
        }
    }

    /// One step of reading a request: parse the head, or complete the body and answer.
    fn step(&mut self, buf: &mut ReadBuf, w: &mut Worker, drained: bool) -> Step {
        let shared = w.shared.clone();
        let config = &shared.config;
        match std::mem::replace(&mut self.phase, Phase::Head) {
            Phase::Head => match http::parse_head(buf, config.max_head_bytes) {
                Ok(None) => Step::Wait,
                Ok(Some(head)) => {
                    self.headless |= head.headless;
                    if head
                        .content_length
                        .is_some_and(|n| n > config.max_body_bytes as u64)
                    {
                        return self.fail(HttpError::BodyTooLarge, w);
                    }
                    let body_due = head.chunked || head.content_length.is_some_and(|n| n > 0);
                    if head.expect_continue && body_due && buf.len() == head.len {
                        self.out.push(Seg::Static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                        self.link.mark_pending(w);
                    }
                    buf.head = Some(head);
                    self.phase = Phase::Body;
                    Step::Continue
                }
                Err(e) => self.fail(e, w),
            },
            Phase::Body => {
                let Some(head) = buf.head else {
                    shared.metrics.internal_errors.inc();
                    crate::error!("a connection reading a body has no head");
                    return Step::Close;
                };
                let (body_range, consumed) = if let Some(n) = head.content_length {
                    let end = head.len + n as usize;
                    if buf.len() < end {
                        self.phase = Phase::Body;
                        return Step::Wait;
                    }
                    (head.len..end, end)
                } else if head.chunked {
                    match buf.feed_chunked(head.len, config.max_body_bytes) {
                        Ok(None) => {
                            self.phase = Phase::Body;
                            return Step::Wait;
                        }
                        Ok(Some(n)) => (0..buf.chunked.body.len(), head.len + n),
                        Err(e) => return self.fail(e, w),
                    }
                } else if http::is_unframed_push(&head, buf) {
                    // Talk's headless push: the body is what the client has sent, up to the
                    // start of its next push. Wait for more only while the socket may still
                    // hold some, or while there is nothing at all and no message in the query.
                    let rest = &buf[head.len..];
                    let end = http::unframed_push_len(rest);
                    let waiting =
                        end == 0 && http::form_get(head.query.of(buf), "message").is_none();
                    if waiting || (!drained && end == rest.len()) {
                        if rest.len() > config.max_body_bytes {
                            return self.fail(HttpError::BodyTooLarge, w);
                        }
                        self.phase = Phase::Body;
                        return Step::Wait;
                    }
                    if end > config.max_body_bytes {
                        return self.fail(HttpError::BodyTooLarge, w);
                    }
                    (head.len..head.len + end, head.len + end)
                } else {
                    (head.len..head.len, head.len)
                };
                let body: &[u8] = if head.chunked {
                    &buf.chunked.body[body_range]
                } else {
                    &buf[body_range]
                };
                let pipelined = buf.len() > consumed;
                let next = self.answer(&head, buf, body, pipelined, w);
                buf.head = None;
                buf.chunked.reset();
                buf.consume(consumed);
                match next {
                    Next::Close => Step::Close,
                    Next::Keep if matches!(self.phase, Phase::Head) => Step::Continue,
                    Next::Keep => Step::Wait,
                }
            }
            other => {
                self.phase = other;
                Step::Wait
            }
        }
    }

    /// Answers a client fault: the status, a short reason, and close.
    fn fail(&mut self, e: HttpError, w: &mut Worker) -> Step {
        debug!("client fault: {} {}", e.status(), e.reason());
        let m = &w.shared.metrics;
        match e {
            HttpError::HeadTooLarge => m.heads_too_large.inc(),
            HttpError::BodyTooLarge => m.bodies_too_large.inc(),
            HttpError::Malformed(_) | HttpError::NotImplemented(_) => m.bad_requests.inc(),
        }
        m.request(Proto::Other, e.status());
        let reply = Reply::text(e.status(), e.reason());
        self.out.push_reply(reply, Method::Get, 1, false, w);
        self.phase = Phase::Closing { lingering: false };
        self.link.mark_pending(w);
        Step::Wait
    }

    /// Routes one complete request and queues its answer.
    /// `pipelined`: another request follows in the buffer.
    fn answer(
        &mut self,
        head: &http::Head,
        buf: &[u8],
        body: &[u8],
        pipelined: bool,
        w: &mut Worker,
    ) -> Next {
        let shared = w.shared.clone();
        if self.restricted && !matches!(head.path.of(buf), b"/health" | b"/metrics") {
            // A connection of the admin reserve: the server is full for everything else.
            shared.metrics.connections_refused.inc();
            shared.metrics.request(Proto::Other, 503);
            let reply = Reply::text(503, "too many connections").header("Retry-After", "1");
            self.out
                .push_reply(reply, head.method, head.minor, false, w);
            self.phase = Phase::Closing { lingering: false };
            self.link.mark_pending(w);
            return Next::Keep;
        }
        let ctx = shared.ctx();
        ctx.publisher.set(Some(WaiterRef {
            worker: w.id,
            token: self.link.token(),
        }));
        ctx.may_follow_fanout.set(!pipelined);
        let req = Request {
            head,
            buf,
            body,
            headless: self.headless,
        };
        let (proto, action) = proto::handle(&ctx, &req);
        let keep_alive = head.keep_alive && !w.shutting_down;
        let mut next = Next::Keep;
        let wait = ctx.wait.get();
        let reply_now = match action {
            Action::Reply(reply) if ctx.by_mail.get() => {
                // Answered when its mail comes (`synced`).
                let then = ctx.then.take();
                self.hold(reply, then, proto, (head.method, head.minor), keep_alive, w);
                return Next::Keep;
            }
            Action::Reply(reply) if wait > 0 && reply.status < 300 => {
                match shared.hub.await_durable(wait, w.id, self.link.token()) {
                    SyncState::Durable => Some(reply),
                    SyncState::Failed => Some(Reply::hub_error(HubError::Storage)),
                    SyncState::Pending => {
                        self.hold(reply, None, proto, (head.method, head.minor), keep_alive, w);
                        return Next::Keep;
                    }
                }
            }
            Action::Reply(reply) => Some(reply),
            Action::Stream(start) => match self.start_stream(start, w) {
                Ok(()) => {
                    shared.metrics.request(proto, 200);
                    None
                }
                Err(reply) => Some(reply),
            },
            Action::Bosh(request) => {
                self.forward(&request, body, head, keep_alive, w);
                None
            }
            Action::Park(park) => {
                let parked = Parked::new(park, head.method, head.minor, keep_alive);
                match self.park(parked, w) {
                    Ok(()) => {
                        // Answered at once if a message slipped in before the subscription.
                        next = self.unpark(w, false);
                        None
                    }
                    Err(reply) => Some(reply),
                }
            }
        };
        if let Some(reply) = reply_now {
            shared.metrics.request(proto, reply.status);
            self.out
                .push_reply(reply, head.method, head.minor, keep_alive, w);
            self.phase = if keep_alive {
                Phase::Head
            } else {
                Phase::Closing { lingering: false }
            };
        }
        self.link.mark_pending(w);
        next
    }

    /// Holds a request's answer until its `Mail::Synced` (`synced`), or the long-poll timeout.
    fn hold(
        &mut self,
        reply: Reply,
        then: Option<proto::Then>,
        proto: Proto,
        (method, minor): (Method, u8),
        keep_alive: bool,
        w: &mut Worker,
    ) {
        self.phase = Phase::Syncing(Syncing::new(reply, then, proto, method, minor, keep_alive));
        let t = w.after(w.shared.config.long_poll_timeout);
        self.link.set_deadline(t, w);
    }

    /// Subscribes a held request to its channel and parks the connection.
    fn park(&mut self, mut parked: Parked, w: &mut Worker) -> Result<(), Reply> {
        let shared = w.shared.clone();
        let sub = Subscribe {
            worker: w.id,
            token: self.link.token(),
            since: None,
            talk_name: None,
        };
        shared
            .hub
            .subscribe(&parked.park.channel, sub)
            .map_err(|e| {
                shared.metrics.waiters_refused.inc();
                Reply::hub_error(e)
            })?;
        parked.channel = w.join_channel(&parked.park.channel, self.link.key);
        let t = w.after(parked.park.timeout);
        self.phase = Phase::Parked(Box::new(parked));
        shared.metrics.parked.inc();
        self.link.set_deadline(t, w);
        Ok(())
    }

    /// Re-checks a parked request (its channel changed, or it timed out) and answers it
    /// when there is something to say.
    fn unpark(&mut self, w: &mut Worker, timed_out: bool) -> Next {
        let shared = w.shared.clone();
        let Phase::Parked(p) = &self.phase else {
            return Next::Keep;
        };
        if matches!(p.park.kind, ParkKind::Qst(_)) && shared.hub.shared_in_redis(&p.park.channel) {
            return self.pull_again_via_redis(w, timed_out);
        }
        let form = Form {
            method: p.method,
            minor: p.minor,
            keep_alive: p.keep_alive && !w.shutting_down,
        };
        let (cache, date) = (&mut w.wake_cache, w.date.get());
        let cors = shared.config.cors_origin.as_str();
        let encode = |reply: &Reply| out::encode_reply(reply, form, date, cors);
        let Some((status, answer)) = cache.answer(&shared.ctx(), &p.park, timed_out, form, encode)
        else {
            return Next::Keep;
        };
        let proto = match p.park.kind {
            ParkKind::Comet { .. } => Proto::Comet,
            ParkKind::Qst(_) => Proto::Qst,
            ParkKind::Nchan(_) => Proto::Nchan,
        };
        shared.metrics.request(proto, status);
        if self.leave_park(w).is_none() {
            return Next::Keep;
        }
        self.out.push(answer);
        self.answered(form.keep_alive, w)
    }

    /// With `--redis`, a parked QST pull woken or timed out: it leaves its channel and waits
    /// for Redis's answer to a new pull (`synced`), which may park it again.
    fn pull_again_via_redis(&mut self, w: &mut Worker, timed_out: bool) -> Next {
        let Phase::Parked(p) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return Next::Keep;
        };
        w.leave_channel(&p.channel, self.link.key, self.link.token(), None);
        w.shared.metrics.parked.dec();
        let shared = w.shared.clone();
        let ctx = shared.ctx();
        ctx.publisher.set(Some(WaiterRef {
            worker: w.id,
            token: self.link.token(),
        }));
        let Parked {
            park,
            method,
            minor,
            keep_alive,
            ..
        } = *p;
        match proto::qst::resume_redis(&ctx, park, timed_out) {
            Ok(then) => {
                let placeholder = Reply::new(200, "", Vec::new());
                let asked = (method, minor);
                self.hold(placeholder, Some(then), Proto::Qst, asked, keep_alive, w);
                Next::Keep
            }
            Err(reply) => {
                shared.metrics.request(Proto::Qst, reply.status);
                self.answer_held(reply, method, minor, keep_alive, w)
            }
        }
    }

    /// The held push is stored (its record durable, or Redis's answer with its last `seq`)
    /// or failed (`503`): answer it (`answer_held`).
    pub fn synced(&mut self, result: Result<crate::hub::Answer, HubError>, w: &mut Worker) -> Next {
        if matches!(self.phase, Phase::Streaming(_)) {
            return self.websocket_published(result, w);
        }
        if !matches!(self.phase, Phase::Syncing(_)) {
            return Next::Keep;
        }
        let Phase::Syncing(s) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return Next::Keep;
        };
        let reply = match (result, s.then) {
            (Ok(answer), Some(then)) => match then(answer) {
                Action::Reply(reply) => reply,
                Action::Park(park) => {
                    let parked = Parked::new(park, s.method, s.minor, s.keep_alive);
                    // Not re-checked at once (Redis was just asked): the channel's news wakes
                    // it, or its timeout.
                    return match self.park(parked, w) {
                        Ok(()) => Next::Keep,
                        Err(reply) => self.answer_held(reply, s.method, s.minor, s.keep_alive, w),
                    };
                }
                _ => Reply::text(500, "internal error: an answer from Redis opened a stream"),
            },
            (Ok(_), None) => s.reply,
            (Err(e), _) => Reply::hub_error(e),
        };
        w.shared.metrics.request(s.proto, reply.status);
        self.answer_held(reply, s.method, s.minor, s.keep_alive, w)
    }

    /// Answers a held request (parked, syncing, forwarded; the phase already left) and
    /// returns the connection to reading requests (`serve_pipelined`).
    fn answer_held(
        &mut self,
        reply: Reply,
        method: Method,
        minor: u8,
        keep_alive: bool,
        w: &mut Worker,
    ) -> Next {
        let keep_alive = keep_alive && !w.shutting_down;
        self.out.push_reply(reply, method, minor, keep_alive, w);
        self.answered(keep_alive, w)
    }

    /// A held request's answer is queued: the connection waits for the next request (or
    /// closes after this one) and serves what was pipelined.
    fn answered(&mut self, keep_alive: bool, w: &mut Worker) -> Next {
        if keep_alive {
            let t = w.after(w.shared.config.idle_timeout);
            self.link.set_deadline(t, w);
        } else {
            self.phase = Phase::Closing { lingering: false };
        }
        self.link.mark_pending(w);
        self.serve_pipelined(w)
    }

    /// A held request was answered: serve whatever the client pipelined behind it; if
    /// reading stopped while it was held (a full buffer), read the rest next turn.
    fn serve_pipelined(&mut self, w: &mut Worker) -> Next {
        if std::mem::take(&mut self.backpressured) {
            w.again.push(self.link.key);
        }
        let next = self.process(w, true);
        if let Some(buf) = self.buf.as_mut() {
            buf.compact_if_worth();
            w.pool.note(buf);
        }
        next
    }

    /// Hands a BOSH request to its session, here or on another worker (a request without a
    /// `sid` opens one on this worker), and waits for its answer.
    fn forward(
        &mut self,
        request: &proto::xmpp::bosh::Request,
        body: &[u8],
        head: &http::Head,
        keep_alive: bool,
        w: &mut Worker,
    ) {
        let from = WaiterRef {
            worker: w.id,
            token: self.link.token(),
        };
        let (to, token) = match &request.sid {
            None => (from, None),
            Some(sid) => match w.shared.bosh.find(sid) {
                Some(at) => (at, Some(at.token)),
                None => {
                    super::bosh::unknown_session(from, w);
                    (from, None)
                }
            },
        };
        if token.is_some() || request.sid.is_none() {
            let body = Box::from(body);
            w.send(to, Mail::BoshRequest { token, from, body });
        }
        self.phase = Phase::Forwarded(Box::new(Forwarded {
            method: head.method,
            minor: head.minor,
            keep_alive,
        }));
        // A held request like a long-poll: counted with them.
        w.shared.metrics.parked.inc();
        let t = w.after(w.shared.config.long_poll_timeout) + FORWARD_SLACK_MS;
        self.link.set_deadline(t, w);
    }

    /// The answer to a forwarded request came: send it, and serve what was pipelined.
    pub fn forwarded_answer(&mut self, status: u16, body: &Arc<[u8]>, w: &mut Worker) -> Next {
        let Phase::Forwarded(f) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return Next::Keep;
        };
        w.shared.metrics.parked.dec();
        let reply = match status {
            200 => Reply::new(200, proto::xmpp::bosh::CONTENT_TYPE, body.to_vec()),
            _ => Reply::text(status, String::from_utf8_lossy(body).trim().to_string())
                .header("Retry-After", "1"),
        };
        w.shared.metrics.request(Proto::Other, reply.status);
        self.answer_held(reply, f.method, f.minor, f.keep_alive, w)
    }

    /// Answers the parked request and returns the connection to reading requests.
    fn answer_parked(&mut self, reply: Reply, w: &mut Worker) -> Next {
        let Some(p) = self.leave_park(w) else {
            return Next::Keep;
        };
        self.answer_held(reply, p.method, p.minor, p.keep_alive, w)
    }

    /// A parked request leaves its channel: the connection reads requests again.
    fn leave_park(&mut self, w: &mut Worker) -> Option<Box<Parked>> {
        let Phase::Parked(p) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return None;
        };
        w.leave_channel(&p.channel, self.link.key, self.link.token(), None);
        w.shared.metrics.parked.dec();
        Some(p)
    }

    /// The server is stopping: end streams with their final bytes, answer parked requests,
    /// close idle connections, let replies in flight finish.
    pub fn begin_shutdown(&mut self, w: &mut Worker) -> Next {
        match &mut self.phase {
            Phase::Syncing(s) => {
                s.keep_alive = false; // answered once its record is durable, then closed
                Next::Keep
            }
            Phase::Streaming(_) => {
                self.finish_stream(w);
                Next::Keep
            }
            Phase::Head | Phase::Body if self.out.is_empty() => Next::Close,
            Phase::Head | Phase::Body => {
                self.phase = Phase::Closing { lingering: false };
                Next::Keep
            }
            Phase::Parked(_) => {
                let next = self.unpark(w, true);
                if next == Next::Keep && !matches!(self.phase, Phase::Closing { .. }) {
                    self.phase = Phase::Closing { lingering: false };
                }
                next
            }
            Phase::Forwarded(_) => {
                let body = proto::xmpp::bosh::terminate(Some("system-shutdown"), b"");
                let next = self.forwarded_answer(200, &Arc::from(body), w);
                if !matches!(self.phase, Phase::Closing { .. }) {
                    self.phase = Phase::Closing { lingering: false };
                }
                next
            }
            Phase::Closing { .. } => Next::Keep,
        }
    }

    /// Releases what the connection holds. Call once, when the connection leaves the slab.
    pub fn close(mut self, w: &mut Worker) {
        match &self.phase {
            Phase::Streaming(_) => self.leave_stream(w),
            Phase::Parked(p) => {
                w.leave_channel(&p.channel, self.link.key, self.link.token(), None);
                w.shared.metrics.parked.dec();
            }
            Phase::Forwarded(_) => w.shared.metrics.parked.dec(),
            _ => {}
        }
        if let Some(buf) = self.buf.take() {
            w.pool.give(buf);
        }
    }
}
