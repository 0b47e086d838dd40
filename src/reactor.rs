//! A worker thread: one `mio::Poll`, its own `SO_REUSEPORT` listener, a slab of connections,
//! its timers, its mailbox and `Waker`.
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

use crate::conn::{token, untoken, Conn, Local, Next, Shared};
use crate::hub::{Mail, Mailbox, Notify};
use crate::{debug, error, info, warn};

const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);
/// Accepts per listener event before serving other work.
const MAX_ACCEPTS_PER_EVENT: usize = 512;
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// The whole answer to a connection past `--max-connections`.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n";
/// How often worker 0 removes idle channels from the hub.
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

pub struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    next_gen: u32,
    mailbox: Arc<Mailbox>,
    mail: Vec<Mail>,
    local: Local,
    epoch: Instant,
    /// Set once shutdown began: the time by which the worker exits.
    stop_by: Option<u64>,
    /// The listener hit its accept cap: accept again next turn.
    accept_again: bool,
    next_sweep: u64,
}

impl Worker {
    pub fn new(
        id: usize,
        poll: Poll,
        mut listener: TcpListener,
        mailbox: Arc<Mailbox>,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Worker {
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            next_gen: 1,
            mailbox,
            mail: Vec::new(),
            local: Local::new(id, shared),
            epoch: Instant::now(),
            stop_by: None,
            accept_again: false,
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
            self.local.now = self.epoch.elapsed().as_millis() as u64;
            self.local.date.update();

            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
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
                                c.on_readable(key, l)
                            });
                        }
                        if event.is_writable() {
                            self.with_conn(key, |c, l| c.flush(key, l));
                        }
                    }
                }
            }
            if self.accept_again {
                self.accept();
            }
            for key in std::mem::take(&mut self.local.again) {
                self.with_conn(key, |c, l| c.on_readable(key, l));
            }
            self.drain_mailbox();
            self.expire_timers();
            self.flush_pending();

            if self.local.worker == 0 && self.local.now >= self.next_sweep {
                self.next_sweep = self.local.now + SWEEP_EVERY_MS;
                self.local.shared.hub.sweep();
            }
            if let Some(stop_by) = self.stop_by {
                if self.conns.is_empty() || self.local.now >= stop_by {
                    debug!(
                        "worker {} stops with {} connections",
                        self.local.worker,
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
        if self.accept_again || !self.local.again.is_empty() || !self.local.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut next = self.local.timers.next();
        if self.local.worker == 0 {
            next = Some(next.map_or(self.next_sweep, |t| t.min(self.next_sweep)));
        }
        if let Some(stop_by) = self.stop_by {
            next = Some(next.map_or(stop_by, |t| t.min(stop_by)));
        }
        next.map(|t| Duration::from_millis(t.saturating_sub(now)))
    }

    /// Runs a handler on a live connection and closes it if the handler says so.
    fn with_conn(&mut self, key: usize, f: impl FnOnce(&mut Conn, &mut Local) -> Next) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if f(conn, &mut self.local) == Next::Close {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(conn.socket());
            conn.close(key, &mut self.local);
        }
    }

    fn accept(&mut self) {
        self.accept_again = false;
        let shared = self.local.shared.clone();
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let sock = match listener.accept() {
                Ok((sock, _)) => sock,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; try next turn.
                    warn!("accept failed: {e}");
                    return;
                }
            };
            if shared.open.load(std::sync::atomic::Ordering::Relaxed)
                >= shared.config.max_connections
            {
                shared.metrics.connections_refused.inc();
                debug!("refusing a connection: --max-connections reached");
                // Best effort: a fresh socket's send buffer is empty, so this never blocks.
                let _ = (&sock).write(REFUSED);
                drop(sock);
                continue;
            }
            self.register(sock);
        }
        self.accept_again = true;
    }

    fn register(&mut self, mut sock: TcpStream) {
        let shared = &self.local.shared;
        let _ = sock.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key > u32::MAX as usize {
            return;
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
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
        let conn = Conn::new(sock, gen, key, &mut self.local);
        entry.insert(conn);
    }

    fn drain_mailbox(&mut self) {
        let mut mail = std::mem::take(&mut self.mail);
        self.mailbox.take(&mut mail);
        for m in mail.drain(..) {
            match m {
                Mail::Deliver { channel, msg } => {
                    let Some(keys) = self.local.subs.get(&channel) else {
                        continue;
                    };
                    let keys: Vec<usize> = keys.iter().copied().collect();
                    self.local.wake_cache = None;
                    // Iterating a copy: a slow reader closed here leaves the list at once
                    // (and no new connection can take its key during the drain).
                    for key in keys {
                        self.with_conn(key, |c, l| c.deliver(key, &msg, l));
                    }
                    self.local.wake_cache = None;
                }
                Mail::EndStream { token } => {
                    let (key, gen) = untoken(token);
                    if self.conns.get(key).is_some_and(|c| c.gen() == gen) {
                        self.with_conn(key, |c, l| c.end_stream(key, l));
                    }
                }
                Mail::Shutdown => self.begin_shutdown(),
            }
        }
        self.mail = mail;
    }

    fn begin_shutdown(&mut self) {
        if self.stop_by.is_some() {
            return;
        }
        info!("worker {} shutting down", self.local.worker);
        self.local.shutting_down = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.stop_by =
            Some(self.local.now + self.local.shared.config.shutdown_grace.as_millis() as u64);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.with_conn(key, |c, l| c.begin_shutdown(key, l));
        }
    }

    fn expire_timers(&mut self) {
        while let Some((key, gen, entry)) = self.local.timers.pop_due(self.local.now) {
            if self.conns.get(key).is_some_and(|c| c.gen() == gen) {
                self.with_conn(key, |c, l| c.on_timer(key, entry, l));
            }
        }
    }

    fn flush_pending(&mut self) {
        // A flush may re-queue a connection whose write loop hit its cap: take the list
        // first so that one is served next turn, not in an endless loop now.
        let pending = std::mem::take(&mut self.local.pending);
        for key in pending {
            self.with_conn(key, |c, l| c.flush(key, l));
        }
    }
}
