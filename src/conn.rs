//! One client connection: its socket, its phase, its read buffer (held only while a request
//! is being read), its output queue and its one deadline. Every phase change happens in this
//! module; `LIFECYCLE.md` beside it draws the state machine.
//!
//! Edge-triggered: reads and writes loop until `WouldBlock`, each loop capped by a named
//! constant; a capped loop puts the connection on the worker's `again` list for the next turn.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;

use crate::config::Config;
use crate::debug;
use crate::http::{self, DateCache, Head, HttpError, Method};
use crate::hub::{Hub, Message, Subscribe, WaiterRef};
use crate::metrics::{Metrics, Proto};
use crate::proto::{self, talk, Action, Ctx, Park, Reply, Request, StreamStart};

/// Bytes asked of the socket per read call.
const READ_CHUNK: usize = 16 * 1024;
/// Reads per readiness event before yielding to other connections.
const MAX_READS_PER_EVENT: usize = 32;
/// `writev` calls per flush before yielding to other connections.
const MAX_WRITES_PER_FLUSH: usize = 32;
/// Segments handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// How long a closing connection keeps draining its input so its last reply is not reset.
const LINGER_MS: u64 = 2000;
/// Read buffers kept for reuse per worker.
const POOL_MAX: usize = 256;
/// A read buffer larger than this is not returned to the pool.
const POOL_BUF_MAX: usize = 64 * 1024;

/// What the server owns and every worker shares.
pub struct Shared {
    pub config: Config,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub auth: proto::auth::Auth,
    pub open: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            hub: &self.hub,
            config: &self.config,
            metrics: &self.metrics,
            auth: &self.auth,
        }
    }
}

/// A token names a connection: its slab key, and a generation so a reused key does not
/// receive its predecessor's events or deadlines.
pub fn token(key: usize, gen: u32) -> usize {
    key | ((gen as usize) << 32)
}

/// The slab key and generation of a token.
pub fn untoken(token: usize) -> (usize, u32) {
    (token & 0xffff_ffff, (token >> 32) as u32)
}

/// One piece of output.
pub enum Seg {
    Static(&'static [u8]),
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    /// A chunk-size line, inline.
    Size(http::ChunkSize),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Static(b) => b,
            Seg::Owned(v) => v,
            Seg::Shared(a) => a,
            Seg::Size(line) => line.as_bytes(),
        }
    }
}

/// Output waiting for the socket: segments, and how far into the first one was written.
#[derive(Default)]
pub struct Out {
    segs: VecDeque<Seg>,
    offset: usize,
    len: usize,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
enum Flushed {
    /// Everything queued was written.
    Empty,
    /// The socket would block; a writable event will come.
    Blocked,
    /// The write loop hit its cap; flush again next turn.
    Again,
}

impl Out {
    fn push(&mut self, seg: Seg) {
        let n = seg.bytes().len();
        if n > 0 {
            self.len += n;
            self.segs.push_back(seg);
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segs.front() else {
                break;
            };
            let left = front.bytes().len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.segs.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    fn write_to(&mut self, sock: &mut TcpStream, metrics: &Metrics) -> io::Result<Flushed> {
        for _ in 0..MAX_WRITES_PER_FLUSH {
            if self.segs.is_empty() {
                return Ok(Flushed::Empty);
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, seg) in self.segs.iter().take(MAX_IOVECS).enumerate() {
                let b = seg.bytes();
                iov[i] = IoSlice::new(if i == 0 { &b[self.offset..] } else { b });
                n = i + 1;
            }
            match sock.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    metrics.bytes_written.add(w as u64);
                    self.advance(w);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(if self.segs.is_empty() {
            Flushed::Empty
        } else {
            Flushed::Again
        })
    }
}

/// A read buffer: storage that is zeroed once, when it grows, and how much of it holds
/// input. Pooled buffers are reused without zeroing them again for every read.
#[derive(Default)]
pub struct ReadBuf {
    store: Vec<u8>,
    filled: usize,
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    /// The input read and not yet consumed.
    fn deref(&self) -> &[u8] {
        &self.store[..self.filled]
    }
}

impl ReadBuf {
    /// Room for at least `n` more bytes after the input.
    fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.store.len() < self.filled + n {
            self.store.resize(self.filled + n, 0);
        }
        &mut self.store[self.filled..]
    }

    /// Drops the first `n` bytes of input (a request that was answered).
    fn consume(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.store.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// A Talk stream: where it listens and what it has not yet written.
pub struct Stream {
    channel: Arc<str>,
    name: Box<str>,
    /// Highest `seq` queued to this stream; older mail is skipped.
    cursor: u64,
    /// Records waiting to be framed into the next chunk.
    pending: Vec<Arc<[u8]>>,
    pending_bytes: usize,
    /// When a record was last queued (ms since the worker started): the keep-alive `noop`
    /// is only for a stream quiet for a whole `--talk-keepalive`.
    last_record: u64,
}

/// A request held until its channel has something for it (comet `get`, QST long-poll).
pub struct Parked {
    channel: Arc<str>,
    park: Park,
    /// The request's method, version and keep-alive, for the answer's head.
    method: Method,
    minor: u8,
    keep_alive: bool,
}

/// The phase of a connection (see LIFECYCLE.md).
pub enum Phase {
    /// Waiting for a request head; idle keep-alive when it holds no buffer.
    Head,
    /// The head is parsed; waiting for the whole body.
    Body(Head),
    /// Holding a request; pipelined input waits in the buffer.
    Parked(Box<Parked>),
    /// A Talk stream: the response never ends while the server runs.
    Streaming(Box<Stream>),
    /// Write what is queued, then shut the socket and drain input until EOF or linger.
    Closing { lingering: bool },
}

/// What the caller must do with the connection after a handler ran.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
}

/// The worker's deadlines: a min-heap of (deadline, key, generation). Stale entries are
/// harmless: expiry re-checks the connection's generation and current deadline. A
/// connection keeps at most one entry per distinct earlier deadline (see `Local::arm`).
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, usize, u32)>>,
}

impl Timers {
    /// The earliest entry, if any.
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Pops an entry due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(usize, u32, u64)> {
        match self.heap.peek() {
            Some(Reverse((t, _, _))) if *t <= now => {
                let Reverse((t, k, g)) = self.heap.pop()?;
                Some((k, g, t))
            }
            _ => None,
        }
    }
}

/// A reply rendered for one parked request, reused for the others that wait on the same
/// channel with the same cursor and callback (DESIGN rule 3: render once, share).
pub struct WakeCache {
    channel: Arc<str>,
    cursor: u64,
    callback: Option<String>,
    reply: Reply,
}

/// A worker's state that connections use: everything but the slab of connections.
pub struct Local {
    pub worker: usize,
    pub shared: Arc<Shared>,
    /// Milliseconds since the worker started, read once per loop turn.
    pub now: u64,
    pub timers: Timers,
    /// Keys with output to flush this turn.
    pub pending: Vec<usize>,
    /// Keys whose read or write loop hit its cap: serve them again next turn.
    pub again: Vec<usize>,
    /// Channel → keys of this worker's waiters there.
    pub subs: HashMap<Arc<str>, HashSet<usize>>,
    pool: Vec<ReadBuf>,
    pub date: DateCache,
    pub shutting_down: bool,
    /// The answer given to the last woken comet `get`, for the others of the same
    /// delivery: the reactor clears it for every delivered message.
    pub wake_cache: Option<WakeCache>,
    /// The Talk `noop` record, shared by every stream of the worker.
    noop: Arc<[u8]>,
}

impl Local {
    pub fn new(worker: usize, shared: Arc<Shared>) -> Local {
        let noop = Arc::from(talk::noop_record(shared.config.talk_terminator.byte()));
        Local {
            worker,
            shared,
            now: 0,
            timers: Timers::default(),
            pending: Vec::new(),
            again: Vec::new(),
            subs: HashMap::new(),
            pool: Vec::new(),
            date: DateCache::default(),
            shutting_down: false,
            noop,
            wake_cache: None,
        }
    }

    fn take_buf(&mut self) -> ReadBuf {
        self.pool.pop().unwrap_or_default()
    }

    fn give_buf(&mut self, mut buf: ReadBuf) {
        if self.pool.len() < POOL_MAX && buf.store.len() <= POOL_BUF_MAX {
            buf.filled = 0;
            self.pool.push(buf);
        }
    }

    /// Adds a waiter to this worker's list for a channel; returns the shared channel name.
    fn join_channel(&mut self, channel: &str, key: usize) -> Arc<str> {
        let name = match self.subs.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Arc::from(channel),
        };
        self.subs.entry(name.clone()).or_default().insert(key);
        name
    }

    /// Removes a waiter from this worker's list and from the hub.
    fn leave_channel(
        &mut self,
        channel: &Arc<str>,
        key: usize,
        token: usize,
        talk_name: Option<&str>,
    ) {
        let mut last = false;
        if let Some(keys) = self.subs.get_mut(channel) {
            // A set, so that answering every waiter of a channel stays linear.
            keys.remove(&key);
            if keys.is_empty() {
                self.subs.remove(channel);
                last = true;
            }
        }
        let me = WaiterRef {
            worker: self.worker,
            token,
        };
        self.shared.hub.unsubscribe(channel, me, last, talk_name);
    }

    fn ms(d: std::time::Duration) -> u64 {
        d.as_millis().min(u64::MAX as u128) as u64
    }
}

/// One client connection.
pub struct Conn {
    sock: TcpStream,
    gen: u32,
    phase: Phase,
    buf: Option<ReadBuf>,
    out: Out,
    /// When the current phase times out (ms since the worker started).
    deadline: u64,
    /// The earliest deadline with an entry in the timer heap (0: none).
    armed: u64,
    /// A request on this connection carried `Head:` (Talk's headless clients).
    headless: bool,
    /// On `Local::pending` already.
    queued: bool,
    /// The peer hung up (EPOLLRDHUP): read to the EOF, whatever the read sizes.
    peer_closed: bool,
    /// Reading stopped because the output passed `--max-output-bytes`; resumes once the
    /// client has read it.
    backpressured: bool,
}

impl Conn {
    /// A new connection: it must send a request head within `--header-timeout`.
    pub fn new(sock: TcpStream, gen: u32, key: usize, local: &mut Local) -> Conn {
        let mut c = Conn {
            sock,
            gen,
            phase: Phase::Head,
            buf: None,
            out: Out::default(),
            deadline: 0,
            armed: 0,
            headless: false,
            queued: false,
            peer_closed: false,
            backpressured: false,
        };
        let t = local.now + Local::ms(local.shared.config.header_timeout);
        c.set_deadline(key, t, local);
        c
    }

    /// The poller reported that the peer closed its side.
    pub fn note_read_closed(&mut self) {
        self.peer_closed = true;
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    pub fn gen(&self) -> u32 {
        self.gen
    }

    fn token(&self, key: usize) -> usize {
        token(key, self.gen)
    }

    fn set_deadline(&mut self, key: usize, t: u64, local: &mut Local) {
        self.deadline = t;
        if self.armed == 0 || t < self.armed {
            local.timers.heap.push(Reverse((t, key, self.gen)));
            self.armed = t;
        }
    }

    fn mark_pending(&mut self, key: usize, local: &mut Local) {
        if !self.queued {
            self.queued = true;
            local.pending.push(key);
        }
    }

    /// A timer entry for this connection came due. Fires the deadline if it has passed,
    /// or re-arms the entry for a later deadline.
    pub fn on_timer(&mut self, key: usize, entry: u64, local: &mut Local) -> Next {
        if entry == self.armed {
            self.armed = 0;
        }
        if self.deadline > local.now {
            if self.armed == 0 {
                let t = self.deadline;
                self.set_deadline(key, t, local);
            }
            return Next::Keep;
        }
        self.on_deadline(key, local)
    }

    fn on_deadline(&mut self, key: usize, local: &mut Local) -> Next {
        let m = &local.shared.metrics;
        match &mut self.phase {
            Phase::Head if self.buf.is_none() => {
                m.idle_timeouts.inc();
                Next::Close
            }
            Phase::Head | Phase::Body(_) => {
                m.header_timeouts.inc();
                debug!("closing a connection: request not complete within the header timeout");
                Next::Close
            }
            Phase::Streaming(s) => {
                let interval = Local::ms(local.shared.config.talk_keepalive);
                if local.now < s.last_record + interval {
                    let t = s.last_record + interval;
                    self.set_deadline(key, t, local);
                    return Next::Keep;
                }
                s.pending.push(local.noop.clone());
                s.pending_bytes += local.noop.len();
                s.last_record = local.now;
                self.set_deadline(key, local.now + interval, local);
                self.mark_pending(key, local);
                Next::Keep
            }
            Phase::Parked(_) => {
                m.long_poll_timeouts.inc();
                self.unpark(key, local, true)
            }
            Phase::Closing { .. } => Next::Close,
        }
    }

    /// The socket is readable (or its peer hung up).
    pub fn on_readable(&mut self, key: usize, local: &mut Local) -> Next {
        match self.phase {
            Phase::Streaming(_) | Phase::Closing { .. } => return self.discard_input(key, local),
            Phase::Head | Phase::Body(_) | Phase::Parked(_) => {}
        }
        if self.out.len > local.shared.config.max_output_bytes {
            // A pipelining client that does not read its answers: stop reading (TCP
            // pushes back on it) until it has read them.
            self.backpressured = true;
            return Next::Keep;
        }
        let limit = local.shared.config.max_head_bytes + local.shared.config.max_body_bytes + 1024;
        let was_idle = self.buf.is_none();
        let mut buf = self.buf.take().unwrap_or_else(|| local.take_buf());
        let mut eof = false;
        let mut capped = true;
        for _ in 0..MAX_READS_PER_EVENT {
            if buf.len() >= limit {
                // Full: read the rest once the requests in the buffer are answered (a
                // parked connection reads again when it is answered).
                capped = !matches!(self.phase, Phase::Parked(_));
                self.backpressured |= !capped;
                break;
            }
            match self.sock.read(buf.spare(READ_CHUNK)) {
                Ok(0) => {
                    eof = true;
                    capped = false;
                    break;
                }
                Ok(n) if n < READ_CHUNK && !self.peer_closed => {
                    // A short read took all there was: data arriving later raises a new
                    // edge, so asking again would only return EAGAIN. (After a hang-up
                    // there is no later edge, so then read on to the EOF.)
                    buf.filled += n;
                    capped = false;
                    break;
                }
                Ok(n) => buf.filled += n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        capped = false;
                        break;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        local.give_buf(buf);
                        return Next::Close;
                    }
                },
            }
        }
        if capped {
            local.again.push(key);
        }
        if buf.is_empty() {
            local.give_buf(buf);
        } else {
            if matches!(self.phase, Phase::Head) && was_idle {
                // The first bytes of a request: it must now complete within the header timeout.
                let t = local.now + Local::ms(local.shared.config.header_timeout);
                self.set_deadline(key, t, local);
            }
            self.buf = Some(buf);
        }
        if matches!(self.phase, Phase::Parked(_)) {
            // A parked client that hangs up is dropped at once; anything it pipelined
            // waits in the buffer until the parked request is answered.
            return if eof { Next::Close } else { Next::Keep };
        }
        let next = self.process(key, local, !capped);
        if eof && next == Next::Keep {
            // The client finished sending. Answer what it asked, then close.
            match self.phase {
                Phase::Head | Phase::Body(_) if self.out.is_empty() => return Next::Close,
                Phase::Head | Phase::Body(_) => self.phase = Phase::Closing { lingering: false },
                // A long-poll or stream whose client already hung up: the EOF has been
                // read, so no later event would tell; drop it now.
                Phase::Parked(_) | Phase::Streaming(_) => return Next::Close,
                Phase::Closing { .. } => {}
            }
        }
        next
    }

    /// Reads and drops input: a stream's client has nothing more to say; a closing
    /// connection drains until its peer's EOF.
    fn discard_input(&mut self, key: usize, local: &mut Local) -> Next {
        let mut scratch = [0u8; 4096];
        for _ in 0..MAX_READS_PER_EVENT {
            match self.sock.read(&mut scratch) {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        local.again.push(key);
        Next::Keep
    }

    /// Answers every complete request in the buffer, in order.
    /// `drained`: the socket had no more data when the buffer was last filled.
    fn process(&mut self, key: usize, local: &mut Local, drained: bool) -> Next {
        loop {
            if self.out.len > local.shared.config.max_output_bytes {
                self.backpressured = true;
                return Next::Keep;
            }
            let Some(mut buf) = self.buf.take() else {
                return Next::Keep;
            };
            let step = self.step(key, &mut buf, local, drained);
            if matches!(self.phase, Phase::Streaming(_) | Phase::Closing { .. }) {
                // Nothing after a stream or a closing answer will be served.
                buf.filled = 0;
            }
            if buf.is_empty() {
                local.give_buf(buf);
                if matches!(self.phase, Phase::Head) {
                    let t = local.now + Local::ms(local.shared.config.idle_timeout);
                    self.set_deadline(key, t, local);
                }
            } else {
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
    fn step(&mut self, key: usize, buf: &mut ReadBuf, local: &mut Local, drained: bool) -> Step {
        let config = &local.shared.config;
        match std::mem::replace(&mut self.phase, Phase::Head) {
            Phase::Head => match http::parse_head(buf, config.max_head_bytes) {
                Ok(None) => Step::Wait,
                Ok(Some(head)) => {
                    self.headless |= head.headless;
                    if head
                        .content_length
                        .is_some_and(|n| n > config.max_body_bytes as u64)
                    {
                        return self.fail(key, HttpError::BodyTooLarge, local);
                    }
                    let body_due = head.chunked || head.content_length.is_some_and(|n| n > 0);
                    if head.expect_continue && body_due && buf.len() == head.len {
                        self.out.push(Seg::Static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                        self.mark_pending(key, local);
                    }
                    self.phase = Phase::Body(head);
                    Step::Continue
                }
                Err(e) => self.fail(key, e, local),
            },
            Phase::Body(head) => {
                let mut decoded = Vec::new();
                let (body_range, consumed) = if let Some(n) = head.content_length {
                    let end = head.len + n as usize;
                    if buf.len() < end {
                        self.phase = Phase::Body(head);
                        return Step::Wait;
                    }
                    (head.len..end, end)
                } else if head.chunked {
                    match http::decode_chunked(
                        &buf[head.len..],
                        config.max_body_bytes,
                        &mut decoded,
                    ) {
                        Ok(None) => {
                            self.phase = Phase::Body(head);
                            return Step::Wait;
                        }
                        Ok(Some(n)) => (0..decoded.len(), head.len + n),
                        Err(e) => return self.fail(key, e, local),
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
                            return self.fail(key, HttpError::BodyTooLarge, local);
                        }
                        self.phase = Phase::Body(head);
                        return Step::Wait;
                    }
                    if end > config.max_body_bytes {
                        return self.fail(key, HttpError::BodyTooLarge, local);
                    }
                    (head.len..head.len + end, head.len + end)
                } else {
                    (head.len..head.len, head.len)
                };
                let body: &[u8] = if head.chunked {
                    &decoded[body_range]
                } else {
                    &buf[body_range]
                };
                let next = self.answer(key, &head, buf, body, local);
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
    fn fail(&mut self, key: usize, e: HttpError, local: &mut Local) -> Step {
        debug!("client fault: {} {}", e.status(), e.reason());
        let m = &local.shared.metrics;
        match e {
            HttpError::HeadTooLarge => m.heads_too_large.inc(),
            HttpError::BodyTooLarge => m.bodies_too_large.inc(),
            HttpError::Malformed(_) | HttpError::NotImplemented(_) => m.bad_requests.inc(),
        }
        local.shared.metrics.request(Proto::Other, e.status());
        let reply = Reply::text(e.status(), e.reason());
        self.queue_reply(reply, Method::Get, 1, false, local);
        self.phase = Phase::Closing { lingering: false };
        self.mark_pending(key, local);
        Step::Wait
    }

    /// Routes one complete request and queues its answer.
    fn answer(
        &mut self,
        key: usize,
        head: &Head,
        buf: &[u8],
        body: &[u8],
        local: &mut Local,
    ) -> Next {
        let shared = local.shared.clone();
        let ctx = shared.ctx();
        let req = Request {
            head,
            buf,
            body,
            headless: self.headless,
        };
        let (proto, action) = proto::handle(&ctx, &req);
        let keep_alive = head.keep_alive && !local.shutting_down;
        let mut next = Next::Keep;
        let reply_now = match action {
            Action::Reply(reply) => Some(reply),
            Action::Stream(start) => match self.start_stream(key, start, local) {
                Ok(()) => {
                    shared.metrics.request(proto, 200);
                    None
                }
                Err(reply) => Some(reply),
            },
            Action::Park(park) => {
                let (method, minor) = (head.method, head.minor);
                let parked = Parked {
                    channel: Arc::from(""),
                    park,
                    method,
                    minor,
                    keep_alive,
                };
                match self.park(key, parked, local) {
                    Ok(()) => {
                        // Answered at once if a message slipped in before the subscription.
                        next = self.unpark(key, local, false);
                        None
                    }
                    Err(reply) => Some(reply),
                }
            }
        };
        if let Some(reply) = reply_now {
            shared.metrics.request(proto, reply.status);
            self.queue_reply(reply, head.method, head.minor, keep_alive, local);
            self.phase = if keep_alive {
                Phase::Head
            } else {
                Phase::Closing { lingering: false }
            };
        }
        self.mark_pending(key, local);
        next
    }

    /// Subscribes a held request to its channel and parks the connection.
    fn park(&mut self, key: usize, mut parked: Parked, local: &mut Local) -> Result<(), Reply> {
        let shared = local.shared.clone();
        let sub = Subscribe {
            worker: local.worker,
            token: self.token(key),
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
        parked.channel = local.join_channel(&parked.park.channel, key);
        let t = local.now + Local::ms(parked.park.timeout);
        self.phase = Phase::Parked(Box::new(parked));
        shared.metrics.parked.inc();
        self.set_deadline(key, t, local);
        Ok(())
    }

    /// Re-checks a parked request (its channel changed, or it timed out) and answers it
    /// when there is something to say.
    fn unpark(&mut self, key: usize, local: &mut Local, timed_out: bool) -> Next {
        let shared = local.shared.clone();
        let Phase::Parked(p) = &self.phase else {
            return Next::Keep;
        };
        let shared_key = if timed_out {
            None
        } else {
            p.park.shared_answer()
        };
        let cached = shared_key.and_then(|(cursor, callback)| {
            local.wake_cache.as_ref().and_then(|c| {
                let same = *c.channel == *p.channel && c.cursor == cursor;
                (same && c.callback.as_deref() == callback).then(|| c.reply.clone())
            })
        });
        let reply = match cached {
            Some(reply) => reply,
            None => {
                let Some(reply) = proto::resume(&shared.ctx(), &p.park, timed_out) else {
                    return Next::Keep;
                };
                if let Some((cursor, callback)) = shared_key {
                    local.wake_cache = Some(WakeCache {
                        channel: p.channel.clone(),
                        cursor,
                        callback: callback.map(str::to_string),
                        reply: reply.clone(),
                    });
                }
                reply
            }
        };
        let proto = match p.park.kind {
            proto::ParkKind::Comet { .. } => Proto::Comet,
            proto::ParkKind::Qst(_) => Proto::Qst,
        };
        shared.metrics.request(proto, reply.status);
        self.answer_parked(key, reply, local);
        self.mark_pending(key, local);
        // Serve whatever the client pipelined behind the parked request; if reading
        // stopped while parked (a full buffer), read the rest next turn.
        if std::mem::take(&mut self.backpressured) {
            local.again.push(key);
        }
        self.process(key, local, true)
    }

    /// Answers the parked request and returns the connection to reading requests.
    fn answer_parked(&mut self, key: usize, reply: Reply, local: &mut Local) {
        let Phase::Parked(p) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return;
        };
        local.leave_channel(&p.channel, key, self.token(key), None);
        local.shared.metrics.parked.dec();
        let keep_alive = p.keep_alive && !local.shutting_down;
        self.queue_reply(reply, p.method, p.minor, keep_alive, local);
        if keep_alive {
            let t = local.now + Local::ms(local.shared.config.idle_timeout);
            self.set_deadline(key, t, local);
        } else {
            self.phase = Phase::Closing { lingering: false };
        }
    }

    /// Renders a reply into the output queue.
    fn queue_reply(
        &mut self,
        reply: Reply,
        method: Method,
        minor: u8,
        keep_alive: bool,
        local: &Local,
    ) {
        if reply.raw {
            self.out.push(match reply.body {
                std::borrow::Cow::Borrowed(b) => Seg::Static(b),
                std::borrow::Cow::Owned(v) => Seg::Owned(v),
            });
            return;
        }
        let mut out = Vec::with_capacity(192 + reply.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(reply.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(http::reason(reply.status).as_bytes());
        out.extend_from_slice(b"\r\nServer: tidings\r\nDate: ");
        out.extend_from_slice(local.date.get());
        out.extend_from_slice(b"\r\nAccess-Control-Allow-Origin: ");
        out.extend_from_slice(local.shared.config.cors_origin.as_bytes());
        if !reply.content_type.is_empty() {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(reply.content_type.as_bytes());
        }
        if reply.status != 204 && reply.status >= 200 {
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(reply.body.len()).as_bytes());
        }
        for (name, value) in &reply.headers {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            // No control byte may reach a header value (it could end the header early).
            out.extend(
                value
                    .bytes()
                    .map(|b| if b < 0x20 || b == 0x7f { b' ' } else { b }),
            );
        }
        if !keep_alive {
            out.extend_from_slice(b"\r\nConnection: close");
        } else if minor == 0 {
            out.extend_from_slice(b"\r\nConnection: keep-alive");
        }
        out.extend_from_slice(b"\r\n\r\n");
        if method != Method::Head && reply.status != 204 {
            out.extend_from_slice(&reply.body);
        }
        self.out.push(Seg::Owned(out));
    }

    /// Turns this connection into a Talk stream: subscribe, send the head and the `noop`
    /// greeting (with any `since` backlog in the same chunk).
    fn start_stream(
        &mut self,
        key: usize,
        start: StreamStart,
        local: &mut Local,
    ) -> Result<(), Reply> {
        let shared = local.shared.clone();
        let sub = Subscribe {
            worker: local.worker,
            token: self.token(key),
            since: start.since,
            talk_name: Some(&start.name),
        };
        let subscribed = shared.hub.subscribe(&start.channel, sub).map_err(|e| {
            shared.metrics.waiters_refused.inc();
            Reply::hub_error(e)
        })?;
        let channel = local.join_channel(&start.channel, key);
        if self.headless {
            self.out.push(Seg::Static(talk::HEADLESS_PULL_HEAD));
        } else {
            let mut h = Vec::with_capacity(256);
            h.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: tidings\r\nDate: ");
            h.extend_from_slice(local.date.get());
            h.extend_from_slice(b"\r\nAccess-Control-Allow-Origin: ");
            h.extend_from_slice(shared.config.cors_origin.as_bytes());
            h.extend_from_slice(
                b"\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            self.out.push(Seg::Owned(h));
        }
        let term = shared.config.talk_terminator.byte();
        let mut stream = Stream {
            channel,
            name: start.name.into_boxed_str(),
            cursor: subscribed.cursor,
            pending: vec![local.noop.clone()],
            pending_bytes: local.noop.len(),
            last_record: local.now,
        };
        for msg in &subscribed.backlog {
            if talk::wants(msg, &stream.name) {
                stream.push(msg, term, &shared.metrics);
            }
        }
        self.phase = Phase::Streaming(Box::new(stream));
        shared.metrics.streaming.inc();
        self.frame_pending();
        let t = local.now + Local::ms(shared.config.talk_keepalive);
        self.set_deadline(key, t, local);
        Ok(())
    }

    /// Frames every pending record of a stream into one chunk, if the socket has taken
    /// everything before it (so a client reading the socket sees whole, batched chunks).
    fn frame_pending(&mut self) {
        let Phase::Streaming(s) = &mut self.phase else {
            return;
        };
        if s.pending.is_empty() || !self.out.is_empty() {
            return;
        }
        self.out
            .push(Seg::Size(http::chunk_size_line(s.pending_bytes)));
        for r in s.pending.drain(..) {
            self.out.push(Seg::Shared(r));
        }
        s.pending_bytes = 0;
        self.out.push(Seg::Static(b"\r\n"));
    }

    /// Queues a published message to this connection if it is a stream that wants it.
    /// Closes a reader whose queued bytes pass `--max-output-bytes`.
    pub fn deliver(&mut self, key: usize, msg: &Arc<Message>, local: &mut Local) -> Next {
        if matches!(self.phase, Phase::Parked(_)) {
            return self.unpark(key, local, false);
        }
        let Phase::Streaming(s) = &mut self.phase else {
            return Next::Keep;
        };
        if msg.seq <= s.cursor {
            return Next::Keep;
        }
        s.cursor = msg.seq;
        if !talk::wants(msg, &s.name) {
            return Next::Keep;
        }
        let term = local.shared.config.talk_terminator.byte();
        if !s.push(msg, term, &local.shared.metrics) {
            return Next::Keep;
        }
        s.last_record = local.now;
        if self.out.len + s.pending_bytes > local.shared.config.max_output_bytes {
            local.shared.metrics.slow_readers_closed.inc();
            debug!(
                "closing a slow reader: {} bytes queued",
                self.out.len + s.pending_bytes
            );
            return Next::Close;
        }
        self.mark_pending(key, local);
        Next::Keep
    }

    /// Ends a Talk stream replaced by a newer one of the same name: final chunk, close.
    pub fn end_stream(&mut self, key: usize, local: &mut Local) -> Next {
        if !matches!(self.phase, Phase::Streaming(_)) {
            return Next::Keep;
        }
        self.finish_stream(key, local);
        Next::Keep
    }

    fn finish_stream(&mut self, key: usize, local: &mut Local) {
        self.frame_pending();
        if let Phase::Streaming(s) = &mut self.phase {
            // Records still pending behind a blocked socket are dropped with the stream.
            s.pending.clear();
        }
        self.out.push(Seg::Static(talk::LAST_CHUNK));
        self.leave_stream(key, local);
        self.phase = Phase::Closing { lingering: false };
        self.mark_pending(key, local);
    }

    /// Unsubscribes a stream from its channel, locally and in the hub.
    fn leave_stream(&mut self, key: usize, local: &mut Local) {
        let Phase::Streaming(s) = &self.phase else {
            return;
        };
        local.leave_channel(&s.channel, key, self.token(key), Some(&s.name));
        local.shared.metrics.streaming.dec();
    }

    /// The server is stopping: end streams with their final chunk, close idle connections,
    /// let replies in flight finish.
    pub fn begin_shutdown(&mut self, key: usize, local: &mut Local) -> Next {
        match self.phase {
            Phase::Streaming(_) => {
                self.finish_stream(key, local);
                Next::Keep
            }
            Phase::Head | Phase::Body(_) if self.out.is_empty() => Next::Close,
            Phase::Head | Phase::Body(_) => {
                self.phase = Phase::Closing { lingering: false };
                Next::Keep
            }
            Phase::Parked(_) => {
                let next = self.unpark(key, local, true);
                if next == Next::Keep && !matches!(self.phase, Phase::Closing { .. }) {
                    self.phase = Phase::Closing { lingering: false };
                }
                next
            }
            Phase::Closing { .. } => Next::Keep,
        }
    }

    /// Writes what is queued (framing a stream's pending records first).
    pub fn flush(&mut self, key: usize, local: &mut Local) -> Next {
        self.queued = false;
        loop {
            self.frame_pending();
            match self.out.write_to(&mut self.sock, &local.shared.metrics) {
                Err(_) => return Next::Close,
                Ok(Flushed::Blocked) => return Next::Keep,
                Ok(Flushed::Again) => {
                    self.mark_pending(key, local);
                    return Next::Keep;
                }
                Ok(Flushed::Empty) => {
                    if std::mem::take(&mut self.backpressured) {
                        local.again.push(key);
                    }
                    let more = matches!(&self.phase, Phase::Streaming(s) if !s.pending.is_empty());
                    if more {
                        continue;
                    }
                    break;
                }
            }
        }
        if let Phase::Closing { lingering } = &mut self.phase {
            if !*lingering {
                *lingering = true;
                let _ = self.sock.shutdown(std::net::Shutdown::Write);
                let t = local.now + LINGER_MS;
                self.set_deadline(key, t, local);
                return self.discard_input(key, local);
            }
        }
        Next::Keep
    }

    /// Releases what the connection holds. Call once, when the connection leaves the slab.
    pub fn close(mut self, key: usize, local: &mut Local) {
        match &self.phase {
            Phase::Streaming(_) => self.leave_stream(key, local),
            Phase::Parked(p) => {
                local.leave_channel(&p.channel, key, self.token(key), None);
                local.shared.metrics.parked.dec();
            }
            _ => {}
        }
        if let Some(buf) = self.buf.take() {
            local.give_buf(buf);
        }
        local.shared.metrics.connections_open.dec();
        local
            .shared
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Stream {
    /// Adds a message's record; false (and counted) when it cannot be framed.
    fn push(&mut self, msg: &Message, term: u8, metrics: &Metrics) -> bool {
        match talk::record(msg, term) {
            Some(r) => {
                self.pending_bytes += r.len();
                self.pending.push(r);
                metrics.messages_delivered.inc();
                true
            }
            None => {
                metrics.messages_unframeable.inc();
                false
            }
        }
    }
}

enum Step {
    Continue,
    Wait,
    Close,
}
