//! The streaming half of the HTTP machine: a stream's start, its records, its end, and a
//! WebSocket's client frames (Talk, nchan's EventSource, chunked, multipart and WebSocket
//! kinds). Every phase change still happens in `HttpConn` methods, here and in `mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::super::readbuf::ReadBuf;
use super::super::socket::SocketResult;
use super::super::stream::Stream;
use super::super::Next;
use super::{HttpConn, Phase};
use crate::debug;
use crate::http::Seg;
use crate::hub::{Message, Subscribe, WaiterRef};
use crate::metrics::Proto;
use crate::proto::stream::HeadEnv;
use crate::proto::{self, ParkKind, Reply, StreamStart};
use crate::worker::Worker;

impl HttpConn {
    /// Turns this connection into a stream: subscribe, queue the head and the first records
    /// (the greeting and any `since` backlog, in one batch).
    pub(super) fn start_stream(&mut self, start: StreamStart, w: &mut Worker) -> Result<(), Reply> {
        let shared = w.shared.clone();
        let (subscribed, channel) = if start.kind.listens() {
            let sub = Subscribe {
                worker: w.id,
                token: self.link.token(),
                since: start.since,
                talk_name: start.kind.name(),
            };
            let subscribed = shared.hub.subscribe(&start.channel, sub).map_err(|e| {
                shared.metrics.waiters_refused.inc();
                Reply::hub_error(e)
            })?;
            (subscribed, w.join_channel(&start.channel, self.link.key))
        } else {
            // A WebSocket publisher: it only sends.
            let none = crate::hub::Subscribed {
                cursor: 0,
                backlog: Vec::new(),
            };
            (none, Arc::from(start.channel.as_str()))
        };
        let env = HeadEnv {
            date: w.date.get(),
            cors_origin: &shared.config.cors_origin,
        };
        self.out.push(start.kind.head(&env));
        let stream_keepalive = start.kind.keepalive().is_some();
        let mut stream = Stream::new(channel, start.kind, subscribed.cursor, w.now);
        if let Some(greeting) = stream.kind.greeting() {
            stream.push(greeting);
        }
        for msg in &subscribed.backlog {
            stream.offer(msg, &shared.metrics);
        }
        self.phase = Phase::Streaming(Box::new(stream));
        self.stream_started = true;
        shared.metrics.streaming.inc();
        self.frame_records(w.now);
        let t = match (stream_keepalive, shared.config.nchan_subscriber_timeout) {
            (true, _) => w.after(shared.config.talk_keepalive),
            // A kind with no keep-alive keeps no timer, unless its subscribers time out.
            (false, Duration::ZERO) => crate::conn::NEVER,
            (false, timeout) => w.after(timeout),
        };
        if !stream_keepalive {
            if let Phase::Streaming(s) = &mut self.phase {
                s.expires_at = t;
            }
        }
        self.link.set_deadline(t, w);
        Ok(())
    }

    /// Frames a stream's waiting records into one batch, if the socket has taken everything
    /// before it (so a client reading the socket sees whole, batched chunks) and no
    /// coalescing hold is on.
    pub(super) fn frame_records(&mut self, now: u64) {
        let Phase::Streaming(s) = &mut self.phase else {
            return;
        };
        if !s.has_records() || !self.out.is_empty() || s.hold_until > now {
            return;
        }
        let out = &mut self.out;
        s.frame(&mut |seg| out.push(seg));
    }

    /// Hands a published message to this connection: a parked request re-checks; a stream
    /// queues its record. Closes a reader whose queued bytes pass `--max-output-bytes`.
    pub fn deliver(&mut self, msg: &Arc<Message>, w: &mut Worker) -> Next {
        if matches!(self.phase, Phase::Parked(_)) {
            return self.unpark(w, false);
        }
        let Phase::Streaming(s) = &mut self.phase else {
            return Next::Keep;
        };
        if msg.seq <= s.cursor {
            return Next::Keep;
        }
        s.cursor = msg.seq;
        let config = &w.shared.config;
        if !s.offer(msg, &w.shared.metrics) {
            return Next::Keep;
        }
        s.last_record = w.now;
        let queued = self.out.len() + s.pending_bytes();
        if queued > config.max_output_bytes {
            w.shared.metrics.slow_readers_closed.inc();
            debug!("closing a slow reader: {queued} bytes queued");
            return Next::Close;
        }
        let hold = config.talk_coalesce.as_millis() as u64;
        if hold > 0 {
            // Hold the burst this starts; the deadline sends it.
            if s.hold_until == 0 {
                s.hold_until = w.now + hold;
                let t = s.hold_until;
                self.link.set_deadline(t, w);
            }
            return Next::Keep;
        }
        self.link.mark_pending(w);
        Next::Keep
    }

    /// What a WebSocket's client sent: its frames are read (pings answered, closes echoed,
    /// messages published or refused); a partial frame keeps the buffer.
    pub(super) fn websocket_input(
        &mut self,
        mut buf: Box<ReadBuf>,
        result: SocketResult,
        w: &mut Worker,
    ) -> Next {
        let shared = w.shared.clone();
        let Phase::Streaming(s) = &mut self.phase else {
            w.pool.give(buf);
            return Next::Keep;
        };
        let Some(ws) = s.kind.websocket() else {
            w.pool.give(buf);
            return Next::Keep;
        };
        let mut answer = Vec::new();
        let ctx = shared.ctx();
        ctx.publisher.set(Some(WaiterRef {
            worker: w.id,
            token: self.link.token(),
        }));
        let read = ws.input(&ctx, &s.channel, &mut buf, &mut answer);
        buf.consume(read.consumed);
        if !answer.is_empty() {
            self.out.push(Seg::Owned(answer));
            self.link.mark_pending(w);
        }
        if buf.is_empty() {
            w.pool.give(buf);
        } else {
            buf.compact_if_worth();
            w.pool.note(&mut buf);
            self.buf = Some(buf);
        }
        if read.end {
            self.end_stream_with(Vec::new(), w);
            return Next::Keep;
        }
        match result {
            SocketResult::Error | SocketResult::Closed => Next::Close,
            SocketResult::Continue => {
                w.again.push(self.link.key);
                Next::Keep
            }
            // A frame larger than the read limit: the reader refuses it before that.
            SocketResult::Full => Next::Close,
            _ => Next::Keep,
        }
    }

    /// With `--redis`: Redis answered a WebSocket publisher's oldest message.
    pub(super) fn websocket_published(
        &mut self,
        result: Result<crate::hub::Answer, crate::hub::HubError>,
        w: &mut Worker,
    ) -> Next {
        let shared = w.shared.clone();
        let Phase::Streaming(s) = &mut self.phase else {
            return Next::Keep;
        };
        let Some(ws) = s.kind.websocket() else {
            return Next::Keep;
        };
        let mut answer = Vec::new();
        let end = ws.published(&shared.ctx(), &s.channel, result, &mut answer);
        if end {
            self.end_stream_with(answer, w);
            return Next::Keep;
        }
        if !answer.is_empty() {
            self.out.push(Seg::Owned(answer));
            self.link.mark_pending(w);
        }
        Next::Keep
    }

    /// The channel was deleted (nchan's `DELETE /pub/…`): an nchan subscriber ends with its
    /// `410 Gone`; other protocols' waiters keep waiting.
    pub fn channel_deleted(&mut self, w: &mut Worker) -> Next {
        match &mut self.phase {
            Phase::Parked(p) => {
                let ParkKind::Nchan(poll) = &p.park.kind else {
                    return Next::Keep;
                };
                let shared = w.shared.clone();
                let reply = proto::nchan::gone(&shared.ctx(), poll);
                shared.metrics.request(Proto::Nchan, reply.status);
                self.answer_parked(reply, w)
            }
            Phase::Streaming(s) => {
                if let Some(gone) = s.kind.gone() {
                    self.end_stream_with(gone, w);
                }
                Next::Keep
            }
            _ => Next::Keep,
        }
    }

    /// Ends a stream with these final bytes after its waiting records, then closes.
    pub(super) fn end_stream_with(&mut self, bytes: Vec<u8>, w: &mut Worker) {
        if let Phase::Streaming(s) = &mut self.phase {
            s.hold_until = 0;
        }
        self.frame_records(w.now);
        if !bytes.is_empty() {
            self.out.push(Seg::Owned(bytes));
        }
        self.leave_stream(w);
        self.phase = Phase::Closing { lingering: false };
        self.link.mark_pending(w);
    }

    /// Ends a stream replaced by a newer one of the same name: final bytes, close.
    pub fn end_stream(&mut self, w: &mut Worker) -> Next {
        if matches!(self.phase, Phase::Streaming(_)) {
            self.finish_stream(w);
        }
        Next::Keep
    }

    pub(super) fn finish_stream(&mut self, w: &mut Worker) {
        if let Phase::Streaming(s) = &mut self.phase {
            s.hold_until = 0;
        }
        self.frame_records(w.now);
        let Phase::Streaming(s) = &mut self.phase else {
            return;
        };
        // Records still waiting behind a blocked socket are dropped with the stream.
        s.drop_records();
        self.out.push(Seg::Static(s.kind.end()));
        self.leave_stream(w);
        self.phase = Phase::Closing { lingering: false };
        self.link.mark_pending(w);
    }

    /// Unsubscribes a stream from its channel, locally and in the hub.
    pub(super) fn leave_stream(&mut self, w: &mut Worker) {
        let Phase::Streaming(s) = &self.phase else {
            return;
        };
        if s.kind.listens() {
            w.leave_channel(&s.channel, self.link.key, self.link.token(), s.kind.name());
        }
        w.shared.metrics.streaming.dec();
    }
}
