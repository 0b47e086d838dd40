//! The subscriber: one thread holding the node's pub/sub connection to Redis, which hears
//! every message published on the channels this node has subscribers for, from any node.
//!
//! `subscribe`/`unsubscribe` only note the request and wake the thread (a `mio::Waker`),
//! which sends `SSUBSCRIBE`/`SUNSUBSCRIBE` (or the unsharded forms before Redis 7). Events go
//! to the callback given to `start`, on the subscriber thread, in the order Redis sent them:
//!
//! - `Message`: a message stored on a subscribed channel (its notification carries it whole);
//! - `Subscribed`: a subscription asked for while connected took effect: what is published
//!   from now on arrives as `Message`, what came before is in the log (`Engine::read_after`);
//! - `Down`: the connection broke; nothing arrives until `Up`;
//! - `Up`: (re)connected and resubscribed to every channel, which are listed: messages
//!   stored while down are in the log only, so each must be caught up by seq. A message may
//!   arrive both ways (read back and notified): a reader drops seqs it has already seen.
//!
//! Reconnection uses the engine's backoff. A connection silent for three pings is taken for
//! dead (a partition sends no reset).

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::Conn;
use super::resp::{self, as_array, as_bytes, Cmd, Value};
use super::{scripts, Entry, Error, Options};

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// An idle connection is pinged this often; one silent for three pings is dropped.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Reads per readable event before other work gets a turn.
const MAX_READS: usize = 64;
/// Bytes per read.
const READ_CHUNK: usize = 64 << 10;
/// Past this many undecoded bytes (a notification is one message), the stream is corrupt.
const MAX_BUFFERED: usize = 256 << 20;

/// What the subscriber reports (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message { channel: String, entry: Entry },
    Subscribed(String),
    Down(String),
    Up { catch_up: Vec<String> },
}

enum Request {
    Subscribe(String),
    Unsubscribe(String),
}

struct Shared {
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
    up: AtomicBool,
}

/// The handle of the subscriber thread; dropping it stops the thread.
pub struct Subscriber {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Starts the thread, which connects at once and then calls `on` for every event.
    pub fn start(opts: Options, on: impl FnMut(Event) + Send + 'static) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            up: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("redis-subscriber".into())
            .spawn(move || Thread::new(opts, s, poll, Box::new(on)).run())?;
        Ok(Subscriber {
            shared,
            waker,
            thread: Some(thread),
        })
    }

    fn request(&self, r: Request) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
        let _ = self.waker.wake();
    }

    /// Asks for a channel's messages (kept across reconnections until `unsubscribe`).
    pub fn subscribe(&self, channel: &str) {
        self.request(Request::Subscribe(channel.to_string()));
    }

    pub fn unsubscribe(&self, channel: &str) {
        self.request(Request::Unsubscribe(channel.to_string()));
    }

    /// Whether the pub/sub connection is up and resubscribed.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The open pub/sub connection.
struct Link {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    sharded: bool,
    last_read: Instant,
    last_ping: Instant,
}

struct Thread {
    opts: Options,
    shared: Arc<Shared>,
    poll: Poll,
    on: Box<dyn FnMut(Event) + Send>,
    /// The channels wanted, connected or not.
    channels: BTreeSet<String>,
    link: Option<Link>,
    /// Resubscriptions not yet confirmed since the last connect (then `Up`).
    awaiting: HashSet<String>,
    /// Connected, and `Up` not reported yet.
    resubscribing: bool,
    catch_up: Vec<String>,
    backoff: Duration,
    next_try: Instant,
}

/// The channel of a topic (`tidings:{C}`).
fn channel_of(topic: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(topic).ok()?;
    Some(t.strip_prefix("tidings:{")?.strip_suffix('}')?.to_string())
}

/// A notification: `SEQ SP IDLEN SP ID DATA`.
pub fn parse_notification(p: &[u8]) -> Option<Entry> {
    let sp = p.iter().position(|&b| b == b' ')?;
    let seq = std::str::from_utf8(&p[..sp]).ok()?.parse().ok()?;
    let rest = &p[sp + 1..];
    let sp = rest.iter().position(|&b| b == b' ')?;
    let idlen: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
    let rest = &rest[sp + 1..];
    let id = rest.get(..idlen)?;
    Some(Entry {
        seq,
        id: String::from_utf8(id.to_vec()).ok()?,
        data: rest[idlen..].to_vec(),
    })
}

impl Thread {
    fn new(
        opts: Options,
        shared: Arc<Shared>,
        poll: Poll,
        on: Box<dyn FnMut(Event) + Send>,
    ) -> Thread {
        let backoff = opts.backoff_min;
        Thread {
            opts,
            shared,
            poll,
            on,
            channels: BTreeSet::new(),
            link: None,
            awaiting: HashSet::new(),
            resubscribing: false,
            catch_up: Vec::new(),
            backoff,
            next_try: Instant::now(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(8);
        let mut more = false;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            if self.link.is_none() && Instant::now() >= self.next_try {
                if let Err(e) = self.connect() {
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
                    crate::debug!("redis subscriber: cannot connect: {e}");
                }
            }
            self.take_requests();
            let r = self.flush().and_then(|()| self.keepalive());
            if let Err(e) = r {
                self.lost(e);
                continue;
            }
            let timeout = match &self.link {
                Some(_) if more => Duration::ZERO,
                Some(_) => PING_EVERY,
                None => self.next_try.saturating_duration_since(Instant::now()),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::error!("redis subscriber: poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            if more || events.iter().any(|e| e.token() == SOCKET) {
                match self.read() {
                    Ok(m) => more = m,
                    Err(e) => {
                        more = false;
                        self.lost(e);
                    }
                }
            }
        }
    }

    fn connect(&mut self) -> Result<(), Error> {
        let mut conn = Conn::connect(&self.opts.url, self.opts.timeout)?;
        let info = conn.call(&Cmd::new("COMMAND").with("INFO").with("SSUBSCRIBE"))?;
        let sharded = as_array(&info).is_some_and(|a| a.first().is_some_and(|v| *v != Value::Null));
        let (std_stream, rest) = conn.into_parts();
        let io = |e: io::Error| Error::Down(e.to_string());
        std_stream.set_nonblocking(true).map_err(io)?;
        let mut stream = TcpStream::from_std(std_stream);
        self.poll
            .registry()
            .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(io)?;
        let now = Instant::now();
        let mut link = Link {
            stream,
            rbuf: rest,
            wbuf: Vec::new(),
            sharded,
            last_read: now,
            last_ping: now,
        };
        for c in &self.channels {
            subscribe_cmd(&mut link, c, true);
        }
        self.awaiting = self.channels.iter().cloned().collect();
        self.catch_up = self.channels.iter().cloned().collect();
        self.link = Some(link);
        self.backoff = self.opts.backoff_min;
        self.resubscribing = true;
        crate::info!("redis subscriber: connected to {}", self.opts.url);
        self.maybe_up();
        Ok(())
    }

    /// Reports `Up` once every resubscription since the connect is confirmed, listing the
    /// channels still wanted.
    fn maybe_up(&mut self) {
        if !self.resubscribing || !self.awaiting.is_empty() {
            return;
        }
        self.resubscribing = false;
        self.shared.up.store(true, Ordering::Relaxed);
        let mut catch_up = std::mem::take(&mut self.catch_up);
        catch_up.retain(|c| self.channels.contains(c));
        (self.on)(Event::Up { catch_up });
    }

    fn lost(&mut self, e: Error) {
        if let Some(mut l) = self.link.take() {
            let _ = self.poll.registry().deregister(&mut l.stream);
        }
        self.shared.up.store(false, Ordering::Relaxed);
        self.awaiting.clear();
        self.resubscribing = false;
        self.next_try = Instant::now() + self.backoff;
        crate::warn!("redis subscriber: connection lost: {e}");
        (self.on)(Event::Down(e.to_string()));
    }

    fn take_requests(&mut self) {
        let reqs = std::mem::take(
            &mut *self
                .shared
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for r in reqs {
            match r {
                Request::Subscribe(c) => {
                    if self.channels.insert(c.clone()) {
                        if let Some(l) = &mut self.link {
                            subscribe_cmd(l, &c, true);
                        }
                    }
                }
                Request::Unsubscribe(c) => {
                    if self.channels.remove(&c) {
                        self.awaiting.remove(&c);
                        if let Some(l) = &mut self.link {
                            subscribe_cmd(l, &c, false);
                        }
                        self.maybe_up();
                    }
                }
            }
        }
    }

    /// Writes what is queued until done or the socket is full.
    fn flush(&mut self) -> Result<(), Error> {
        let Some(l) = &mut self.link else {
            return Ok(());
        };
        while !l.wbuf.is_empty() {
            match l.stream.write(&l.wbuf) {
                Ok(0) => return Err(Error::Down("write returned 0".into())),
                Ok(n) => {
                    l.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Down(e.to_string())),
            }
        }
        Ok(())
    }

    /// Pings an idle connection; drops one that stayed silent for three pings.
    fn keepalive(&mut self) -> Result<(), Error> {
        let Some(l) = &mut self.link else {
            return Ok(());
        };
        if l.last_read.elapsed() > PING_EVERY * 3 {
            return Err(Error::Down("Redis stopped answering pings".into()));
        }
        if l.last_ping.elapsed() >= PING_EVERY && l.last_read.elapsed() >= PING_EVERY {
            Cmd::new("PING").write_to(&mut l.wbuf);
            l.last_ping = Instant::now();
            return self.flush();
        }
        Ok(())
    }

    /// Reads and handles what arrived; `Ok(true)` when the read cap stopped it before the
    /// socket was drained (edge-triggered readiness will not say so again).
    fn read(&mut self) -> Result<bool, Error> {
        for _ in 0..MAX_READS {
            let Some(l) = &mut self.link else {
                return Ok(false);
            };
            let len = l.rbuf.len();
            l.rbuf.resize(len + READ_CHUNK, 0);
            let r = l.stream.read(&mut l.rbuf[len..]);
            l.rbuf.truncate(len + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return Err(Error::Down("Redis closed the connection".into())),
                Ok(_) => {
                    l.last_read = Instant::now();
                    self.decode()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Down(e.to_string())),
            }
        }
        Ok(true)
    }

    fn decode(&mut self) -> Result<(), Error> {
        let mut used = 0;
        loop {
            let Some(l) = &self.link else {
                return Ok(());
            };
            match resp::decode(&l.rbuf[used..]).map_err(|e| Error::Protocol(e.0))? {
                Some((v, n)) => {
                    used += n;
                    self.handle(v)?;
                }
                None => break,
            }
        }
        if let Some(l) = &mut self.link {
            l.rbuf.drain(..used);
            if l.rbuf.len() > MAX_BUFFERED {
                return Err(Error::Protocol("a notification over 256 MiB".into()));
            }
        }
        Ok(())
    }

    fn handle(&mut self, v: Value) -> Result<(), Error> {
        let parts = as_array(&v).unwrap_or(&[]);
        let kind = parts.first().and_then(as_bytes).unwrap_or(b"");
        let topic = parts.get(1).and_then(as_bytes);
        match kind {
            b"message" | b"smessage" => {
                let channel = topic.and_then(channel_of);
                let entry = parts.get(2).and_then(as_bytes).and_then(parse_notification);
                match (channel, entry) {
                    (Some(channel), Some(entry)) => (self.on)(Event::Message { channel, entry }),
                    _ => crate::error!("redis subscriber: a malformed notification: {v:?}"),
                }
            }
            b"subscribe" | b"ssubscribe" => {
                if let Some(c) = topic.and_then(channel_of) {
                    if self.awaiting.remove(&c) {
                        self.maybe_up();
                    } else if self.channels.contains(&c) {
                        (self.on)(Event::Subscribed(c));
                    }
                }
            }
            b"unsubscribe" | b"sunsubscribe" | b"pong" => {}
            _ => {
                if let Value::Error(e) = &v {
                    return Err(Error::Reply(e.clone()));
                }
                crate::debug!("redis subscriber: ignored {v:?}");
            }
        }
        Ok(())
    }
}

fn subscribe_cmd(l: &mut Link, channel: &str, on: bool) {
    let name = match (l.sharded, on) {
        (true, true) => "SSUBSCRIBE",
        (true, false) => "SUNSUBSCRIBE",
        (false, true) => "SUBSCRIBE",
        (false, false) => "UNSUBSCRIBE",
    };
    Cmd::new(name)
        .with(scripts::topic(channel))
        .write_to(&mut l.wbuf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications() {
        let e = parse_notification(b"1700000000123 3 a bdata with spaces").unwrap();
        assert_eq!(
            (e.seq, e.id.as_str(), &e.data[..]),
            (1700000000123, "a b", &b"data with spaces"[..])
        );
        assert_eq!(parse_notification(b"5 0 ").unwrap().data, b"");
        for bad in [&b""[..], b"5", b"x 1 a", b"5 9 short", b"5 1"] {
            assert_eq!(parse_notification(bad), None, "{bad:?}");
        }
        assert_eq!(channel_of(b"tidings:{a}b}"), Some("a}b".to_string()));
        assert_eq!(channel_of(b"other"), None);
    }
}
