//! A worker thread's loop: one `mio::Poll`, its own `SO_REUSEPORT` listeners (each with the
//! connection kind its sockets get), a slab of connections, its mailbox and `Waker`; the
//! rest of the worker's state is a `worker::Worker` lent to each connection handler.
//!
//! The loop: poll → dispatch readiness → serve capped connections again → drain the mailbox
//! (deliveries) → expire timers → flush pending writes. Connections that must close are
//! closed where the handler says so. Only this module and `conn` make system calls.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::conn::bosh::BoshConn;
use crate::conn::{token, untoken, Conn, Kind, Next};
use crate::hub::{Mail, Mailbox, Notify};
use crate::worker::{Shared, Worker};
use crate::{debug, error, info, warn};

pub const WAKER: Token = Token(usize::MAX);
/// Listener `i` has the token `usize::MAX - 1 - i`.
const FIRST_LISTENER: usize = usize::MAX - 1;
/// Listeners one worker serves at most.
pub const MAX_LISTENERS: usize = 8;
/// Accepts per listener event before serving other work.
const MAX_ACCEPTS_PER_EVENT: usize = 512;
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// The whole answer to a connection past `--max-connections`.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n";
/// Connections written per reactor turn; the rest are written next turn, after the poll.
const MAX_FLUSHES_PER_TURN: usize = 1024;
/// How often worker 0 removes idle channels from the hub and, while the status page
/// watches, publishes a status snapshot (`status::Status::tick`).
const SWEEP_EVERY_MS: u64 = 1000;

/// Wakes a worker's poll from another thread.
pub struct WakerNotify(pub Waker);

impl Notify for WakerNotify {
    fn notify(&self) {
        if let Err(e) = self.0.wake() {
            error!("waking a worker failed: {e}");
        }
    }
}

/// A listening socket and the kind of connection its sockets get.
pub struct Listener {
    pub socket: TcpListener,
    pub kind: Kind,
    /// Hit its accept cap: accept again next turn.
    again: bool,
}

impl Listener {
    pub fn new(socket: TcpListener, kind: Kind) -> Listener {
        Listener {
            socket,
            kind,
            again: false,
        }
    }
}

pub struct Reactor {
    poll: Poll,
    /// Empty once shutdown began.
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    next_gen: u32,
    mailbox: Arc<Mailbox>,
    mail: Vec<Mail>,
    worker: Worker,
    epoch: Instant,
    /// Set once shutdown began: the time by which the worker exits.
    stop_by: Option<u64>,
    next_sweep: u64,
}

/// The generation of a new connection (never 0).
fn next_gen(counter: &mut u32) -> u32 {
    let gen = *counter;
    *counter = counter.wrapping_add(1).max(1);
    gen
}

impl Reactor {
    pub fn new(
        id: usize,
        poll: Poll,
        mut listeners: Vec<Listener>,
        mailbox: Arc<Mailbox>,
        shared: Arc<Shared>,
    ) -> io::Result<Reactor> {
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::other("too many listeners"));
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Token(FIRST_LISTENER - i),
                Interest::READABLE,
            )?;
        }
        Ok(Reactor {
            poll,
            listeners,
            conns: Slab::new(),
            next_gen: 1,
            mailbox,
            mail: Vec::new(),
            worker: Worker::new(id, shared),
            epoch: Instant::now(),
            stop_by: None,
            next_sweep: SWEEP_EVERY_MS,
        })
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("poll failed: {e}");
                    return;
                }
            }
            self.worker.now = self.epoch.elapsed().as_millis() as u64;
            self.worker.date.update();

            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t > FIRST_LISTENER - MAX_LISTENERS => {
                        self.accept(FIRST_LISTENER - t)
                    }
                    Token(t) => {
                        let (key, gen) = untoken(t);
                        if self.conns.get(key).is_none_or(|c| c.gen() != gen) {
                            continue;
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let closed = event.is_read_closed() || event.is_error();
                            self.with_conn(key, |c, l| {
                                if closed {
                                    c.note_read_closed();
                                }
                                c.on_readable(l)
                            });
                        }
                        if event.is_writable() {
                            self.with_conn(key, |c, l| c.flush(l));
                        }
                    }
                }
            }
            for i in 0..self.listeners.len() {
                if self.listeners[i].again {
                    self.accept(i);
                }
            }
            for key in std::mem::take(&mut self.worker.again) {
                self.with_conn(key, |c, l| c.on_readable(l));
            }
            self.drain_mailbox();
            self.expire_timers();
            self.flush_pending();

            if self.worker.id == 0 && self.worker.now >= self.next_sweep {
                self.next_sweep = self.worker.now + SWEEP_EVERY_MS;
                let shared = &self.worker.shared;
                shared.hub.sweep();
                if self.stop_by.is_none() {
                    shared.status.tick(&shared.hub, &shared.metrics);
                }
            }
            if let Some(stop_by) = self.stop_by {
                if self.conns.is_empty() || self.worker.now >= stop_by {
                    debug!(
                        "worker {} stops with {} connections",
                        self.worker.id,
                        self.conns.len()
                    );
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.close(key);
                    }
                    return;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let accept_again = self.listeners.iter().any(|l| l.again);
        if accept_again
            || !self.worker.again.is_empty()
            || !self.worker.pending.is_empty()
            || !self.worker.local.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut next = self.worker.timers.next();
        if self.worker.id == 0 {
            next = Some(next.map_or(self.next_sweep, |t| t.min(self.next_sweep)));
        }
        if let Some(stop_by) = self.stop_by {
            next = Some(next.map_or(stop_by, |t| t.min(stop_by)));
        }
        next.map(|t| Duration::from_millis(t.saturating_sub(now)))
    }

    /// Runs a handler on a live connection and closes it if the handler says so.
    fn with_conn(&mut self, key: usize, f: impl FnOnce(&mut Conn, &mut Worker) -> Next) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if f(conn, &mut self.worker) == Next::Close {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if let Some(sock) = conn.socket() {
                let _ = self.poll.registry().deregister(sock);
            }
            conn.close(&mut self.worker);
        }
    }

    /// Accepts on listener `i` until it would block or the accept cap.
    fn accept(&mut self, i: usize) {
        let Some(listener) = self.listeners.get_mut(i) else {
            return;
        };
        listener.again = false;
        let kind = listener.kind;
        let shared = self.worker.shared.clone();
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            let sock = match listener.socket.accept() {
                Ok((sock, _)) => sock,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; try next turn.
                    warn!("accept failed: {e}");
                    return;
                }
            };
            let open = shared.open.load(std::sync::atomic::Ordering::Relaxed);
            let limit = shared.config.max_connections;
            // The admin reserve is for HTTP's `/health` and `/metrics` only.
            let reserve = match kind {
                Kind::Http => shared.config.admin_connections,
                Kind::Xmpp => 0,
            };
            if open >= limit + reserve {
                shared.metrics.connections_refused.inc();
                debug!("refusing a connection: --max-connections reached");
                if kind == Kind::Http {
                    // Best effort: a fresh socket's send buffer is empty, so this never blocks.
                    let _ = (&sock).write(REFUSED);
                }
                drop(sock);
                continue;
            }
            // Past the limit, a connection of the admin reserve: `/health` and `/metrics`.
            let restricted = open >= limit;
            self.register(sock, kind, restricted);
        }
        if let Some(listener) = self.listeners.get_mut(i) {
            listener.again = true;
        }
    }

    fn register(&mut self, mut sock: TcpStream, kind: Kind, restricted: bool) {
        let shared = &self.worker.shared;
        let _ = sock.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key > u32::MAX as usize {
            return;
        }
        let gen = next_gen(&mut self.next_gen);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(token(key, gen)), interest)
        {
            shared.metrics.internal_errors.inc();
            error!("registering a connection failed: {e}");
            return;
        }
        shared
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.metrics.connections_open.inc();
        shared.metrics.connections_accepted.inc();
        let conn = Conn::new(kind, sock, key, gen, restricted, &mut self.worker);
        entry.insert(conn);
    }

    /// Serves the mail of other threads, then this worker's own (which serving may add to).
    fn drain_mailbox(&mut self) {
        let mut mail = std::mem::take(&mut self.mail);
        self.mailbox.take(&mut mail);
        loop {
            self.serve_mail(&mut mail);
            if self.worker.local.is_empty() {
                break;
            }
            std::mem::swap(&mut mail, &mut self.worker.local);
        }
        self.mail = mail;
    }

    /// The connection `token` names, if it is still there.
    fn live(&self, token: usize) -> Option<usize> {
        let (key, gen) = untoken(token);
        self.conns
            .get(key)
            .is_some_and(|c| c.gen() == gen)
            .then_some(key)
    }

    fn serve_mail(&mut self, mail: &mut Vec<Mail>) {
        for m in mail.drain(..) {
            match m {
                Mail::Deliver { channel, msg } => {
                    let Some((name, keys)) = self.worker.begin_delivery(&channel) else {
                        continue;
                    };
                    self.worker.wake_cache.clear();
                    // No connection can take a key of the set during the delivery: accepts
                    // happen elsewhere in the loop.
                    for &key in &keys {
                        self.with_conn(key, |c, w| c.deliver(&name, &msg, w));
                    }
                    self.worker.wake_cache.clear();
                    self.worker.end_delivery(name, keys);
                }
                Mail::Deleted { channel } => {
                    let Some((name, keys)) = self.worker.begin_delivery(&channel) else {
                        continue;
                    };
                    for &key in &keys {
                        self.with_conn(key, |c, w| c.channel_deleted(w));
                    }
                    self.worker.end_delivery(name, keys);
                }
                Mail::EndStream { token } => {
                    if let Some(key) = self.live(token) {
                        self.with_conn(key, |c, l| c.end_stream(l));
                    }
                }
                Mail::Stanza { token, stanza } => {
                    if let Some(key) = self.live(token) {
                        self.with_conn(key, |c, w| c.deliver_stanza(&stanza, w));
                    }
                }
                Mail::Synced { token, result } => {
                    let (key, gen) = untoken(token);
                    if self.conns.get(key).is_some_and(|c| c.gen() == gen) {
                        self.with_conn(key, |c, w| c.synced(result, w));
                    }
                }
                Mail::Replaced { token } => {
                    if let Some(key) = self.live(token) {
                        self.with_conn(key, |c, w| c.replaced(w));
                    }
                }
                Mail::BoshRequest {
                    token: None,
                    from,
                    body,
                } => self.open_bosh(from, &body),
                Mail::BoshRequest {
                    token: Some(token),
                    from,
                    body,
                } => match self.live(token) {
                    Some(key) => self.with_conn(key, |c, w| c.bosh_request(from, &body, w)),
                    None => crate::conn::bosh::unknown_session(from, &mut self.worker),
                },
                Mail::BoshAnswer {
                    token,
                    status,
                    body,
                } => {
                    if let Some(key) = self.live(token) {
                        self.with_conn(key, |c, w| c.bosh_answer(status, &body, w));
                    }
                }
                Mail::Shutdown => self.begin_shutdown(),
            }
        }
    }

    /// A BOSH session request: the session gets a place in this worker's slab.
    fn open_bosh(&mut self, from: crate::hub::WaiterRef, body: &[u8]) {
        if self.stop_by.is_some() {
            let body = crate::proto::xmpp::bosh::terminate(Some("system-shutdown"), b"");
            let answer = Mail::BoshAnswer {
                token: from.token,
                status: 200,
                body: Arc::from(body),
            };
            self.worker.send(from, answer);
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key > u32::MAX as usize {
            return;
        }
        let gen = next_gen(&mut self.next_gen);
        if let Some(session) = BoshConn::open(key, gen, from, body, &mut self.worker) {
            entry.insert(Conn::bosh(session));
        }
    }

    fn begin_shutdown(&mut self) {
        if self.stop_by.is_some() {
            return;
        }
        info!("worker {} shutting down", self.worker.id);
        self.worker.shutting_down = true;
        for mut l in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut l.socket);
        }
        self.stop_by =
            Some(self.worker.now + self.worker.shared.config.shutdown_grace.as_millis() as u64);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.with_conn(key, |c, l| c.begin_shutdown(l));
        }
    }

    fn expire_timers(&mut self) {
        while let Some((key, gen, entry)) = self.worker.timers.pop_due(self.worker.now) {
            if self.conns.get(key).is_some_and(|c| c.gen() == gen) {
                self.with_conn(key, |c, l| c.on_timer(entry, l));
            }
        }
    }

    /// Writes what connections have queued, at most `MAX_FLUSHES_PER_TURN` of them: a long
    /// fan-out pass gives way to the sockets that became readable meanwhile, so a message
    /// published during the pass joins the writes not done yet (a stream frames every record
    /// pending for it into one write) instead of waiting for the whole pass.
    fn flush_pending(&mut self) {
        // A flush may re-queue a connection whose write loop hit its cap: take the list
        // first so that one is served next turn, not in an endless loop now.
        let mut pending = std::mem::take(&mut self.worker.pending);
        let rest = if pending.len() > MAX_FLUSHES_PER_TURN {
            pending.split_off(MAX_FLUSHES_PER_TURN)
        } else {
            Vec::new()
        };
        for key in pending {
            self.with_conn(key, |c, l| c.flush(l));
        }
        if !rest.is_empty() {
            // The rest go first next turn (they stay marked pending), before what this
            // turn's flushes queued again.
            let requeued = std::mem::replace(&mut self.worker.pending, rest);
            self.worker.pending.extend(requeued);
        }
    }
}
