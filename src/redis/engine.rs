//! The engine: one thread that owns the command connection to Redis and runs every change
//! and read of a channel for its node, in the order they were submitted.
//!
//! Callers (the workers, later the hub's storage seam) never block on Redis: `submit` queues
//! an operation with a completion that the engine thread calls with the answer (the wiring
//! posts it to the worker's mailbox and wakes it). The thread takes every operation queued
//! since its last turn and sends them as one pipeline: one write and one round trip for a
//! burst of publishes, however many workers made it. `call` is the blocking form, for
//! start-up and tests.
//!
//! While Redis is unreachable every operation fails at once with `Error::Down` (the
//! publisher gets `503`), and the thread reconnects with exponential backoff on its own, so
//! `/health` turns green again without traffic. An operation whose pipeline broke may or may
//! not have been applied: it fails with `Down` all the same (a QST push retried with the
//! same ids is not stored twice).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::resp::{as_array, as_bytes, as_u64, Cmd, Value};
use super::scripts::{self, Script};
use super::{Entry, Error, Options, Status};

/// The most operations sent in one pipeline.
const MAX_BATCH: usize = 256;
/// With no operation for this long, the engine pings Redis (round-trip time, liveness).
const PING_EVERY: Duration = Duration::from_secs(1);

/// One operation: a script with its keys and arguments (the pub/sub command is put first by
/// the engine, which knows what the server supports), or a plain command.
pub enum Op {
    Script {
        script: &'static Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    },
    Cmd(Cmd),
}

type Done = Box<dyn FnOnce(Result<Value, Error>) + Send>;

struct Job {
    op: Op,
    done: Done,
}

/// What the engine thread shares with its handles: the numbers for `/metrics` and `/health`.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub up: AtomicBool,
    pub rtt_us: AtomicU64,
    pub connects: AtomicU64,
    pub failures: AtomicU64,
    pub sharded: AtomicBool,
}

impl Shared {
    pub fn status(&self) -> Status {
        Status {
            up: self.up.load(Ordering::Relaxed),
            rtt_us: self.rtt_us.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            sharded: self.sharded.load(Ordering::Relaxed),
        }
    }
}

/// A handle to the engine thread; clones share it. The thread ends when every handle is
/// dropped (after answering what was queued).
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Job>,
    shared: Arc<Shared>,
    opts: Arc<Options>,
    _thread: Arc<ThreadGuard>,
}

struct ThreadGuard(Option<JoinHandle<()>>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        // The sender is dropped with the last handle before this runs (field order), so
        // the thread sees the channel closed and ends.
        if let Some(t) = self.0.take() {
            // The last handle may be dropped by a completion, on the engine thread itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Engine {
    /// Starts the engine thread. It connects at once (the first `call` may still find it
    /// down: see `Status::up`).
    pub fn start(opts: Options) -> Engine {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let opts = Arc::new(opts);
        let thread = {
            let shared = shared.clone();
            let opts = opts.clone();
            std::thread::Builder::new()
                .name("redis-engine".into())
                .spawn(move || run(&opts, &shared, &rx))
                .expect("spawn the Redis engine thread")
        };
        Engine {
            tx,
            shared,
            opts,
            _thread: Arc::new(ThreadGuard(Some(thread))),
        }
    }

    /// The connection's state and round-trip time.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Queues `op`; the engine thread calls `done` with its answer (never on the caller's
    /// thread, never with a lock of the engine held).
    pub fn submit(&self, op: Op, done: impl FnOnce(Result<Value, Error>) + Send + 'static) {
        if let Err(mpsc::SendError(job)) = self.tx.send(Job {
            op,
            done: Box::new(done),
        }) {
            (job.done)(Err(Error::Down("the Redis engine stopped".into())));
        }
    }

    /// Runs `op` and waits for its answer (bounded by the engine's own timeouts).
    pub fn call(&self, op: Op) -> Result<Value, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(op, move |r| {
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(Error::Down("the Redis engine stopped".into())))
    }

    /// Queues `op` and calls `done` with its answer read by `parse` (one of the `parse_*`
    /// functions of this module), on the engine thread.
    pub fn submit_with<T: 'static>(
        &self,
        op: Op,
        parse: fn(Value) -> Result<T, Error>,
        done: impl FnOnce(Result<T, Error>) + Send + 'static,
    ) {
        self.submit(op, move |r| done(r.and_then(parse)));
    }

    /// Stores messages on `channel` (see `scripts::PUBLISH`); `queue` makes it a QST queue
    /// first. Each message gets its seq, or the seq of the message already holding its id
    /// (queues only).
    pub fn publish(
        &self,
        channel: &str,
        msgs: &[(&str, &[u8])],
        queue: bool,
    ) -> Result<Published, Error> {
        parse_published(self.call(self.publish_op(channel, msgs, queue))?)
    }

    /// The operation behind `publish` (answer: `parse_published`).
    pub fn publish_op(&self, channel: &str, msgs: &[(&str, &[u8])], queue: bool) -> Op {
        let owned = msgs
            .iter()
            .map(|(id, data)| (id.as_bytes().to_vec(), data.to_vec()));
        self.publish_op_owned(channel, owned, queue)
    }

    /// `publish_op` taking the ids and data it sends (the hub's encoded messages are moved
    /// into the command, not copied).
    pub fn publish_op_owned(
        &self,
        channel: &str,
        msgs: impl ExactSizeIterator<Item = (Vec<u8>, Vec<u8>)>,
        queue: bool,
    ) -> Op {
        let o = &self.opts;
        let mut args: Vec<Vec<u8>> = vec![
            scripts::topic(channel).into_bytes(),
            o.channel_capacity.to_string().into_bytes(),
            o.channel_bytes.to_string().into_bytes(),
            o.queue_capacity.to_string().into_bytes(),
            if queue { b"1".to_vec() } else { b"0".to_vec() },
            o.channel_ttl_ms.to_string().into_bytes(),
        ];
        args.reserve(2 * msgs.len());
        for (id, data) in msgs {
            args.push(id);
            args.push(data);
        }
        script(&scripts::PUBLISH, channel, 5, args)
    }

    /// Comet `sync`: moves the channel's clock to at least Redis's now and returns it.
    pub fn sync_clock(&self, channel: &str) -> Result<u64, Error> {
        parse_clock(self.call(sync_clock_op(channel))?)
    }

    /// Up to `max` messages of `channel` with `seq > after`, oldest first (catch-up).
    pub fn read_after(&self, channel: &str, after: u64, max: usize) -> Result<Log, Error> {
        parse_log(self.call(read_op(channel, after, max))?)
    }

    /// QST pull (see `scripts::TAKE`).
    pub fn take(&self, channel: &str, max: usize, max_tries: u32) -> Result<Taken, Error> {
        parse_taken(self.call(take_op(channel, max, max_tries))?)
    }

    /// QST acknowledgement (see `scripts::ACK`): cumulative up to `upto`, and v1 ids one by
    /// one.
    pub fn ack(
        &self,
        channel: &str,
        upto: Option<&str>,
        confirmed: &[&str],
        failed: &[&str],
    ) -> Result<Acked, Error> {
        parse_acked(self.call(ack_op(channel, upto, confirmed, failed))?)
    }
}

/// nchan's `DELETE` of a channel (see `scripts::DELETE`; answer: `parse_deleted`).
pub fn delete_op(channel: &str) -> Op {
    script(
        &scripts::DELETE,
        channel,
        2,
        vec![scripts::topic(channel).into_bytes()],
    )
}

/// What a `delete_op` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// The channel's retained messages (this many) were dropped.
    Messages(u64),
    /// Redis holds no such channel.
    Missing,
    /// A QST queue: refused.
    Queue,
}

pub fn parse_deleted(v: Value) -> Result<Removed, Error> {
    let a = as_array(&v).ok_or_else(|| bad("delete", &v))?;
    match (a.first().and_then(as_u64), a.get(1).and_then(as_u64)) {
        (Some(0), Some(n)) => Ok(Removed::Messages(n)),
        (Some(1), _) => Ok(Removed::Missing),
        (Some(2), _) => Ok(Removed::Queue),
        _ => Err(bad("delete", &v)),
    }
}

/// The operation behind `Engine::sync_clock` (answer: `parse_clock`).
pub fn sync_clock_op(channel: &str) -> Op {
    script(&scripts::SYNC_CLOCK, channel, 2, vec![])
}

pub fn parse_clock(v: Value) -> Result<u64, Error> {
    as_u64(&v).ok_or_else(|| bad("sync_clock", &v))
}

/// The operation behind `Engine::read_after` (answer: `parse_log`).
pub fn read_op(channel: &str, after: u64, max: usize) -> Op {
    read_recent_op(channel, after, max, 0)
}

/// `read_op` that skips messages older than `ttl_ms` (0: none).
pub fn read_recent_op(channel: &str, after: u64, max: usize, ttl_ms: u64) -> Op {
    let args = vec![
        after.to_string().into_bytes(),
        max.to_string().into_bytes(),
        ttl_ms.to_string().into_bytes(),
    ];
    script(&scripts::READ, channel, 2, args)
}

pub fn parse_log(v: Value) -> Result<Log, Error> {
    let a = as_array(&v).ok_or_else(|| bad("read", &v))?;
    let (head, rest) = split(a, 3).ok_or_else(|| bad("read", &v))?;
    Ok(Log {
        clock: as_u64(&head[0]).ok_or_else(|| bad("read", &v))?,
        dropped: as_u64(&head[1]).ok_or_else(|| bad("read", &v))?,
        last_id: text(&head[2]).ok_or_else(|| bad("read", &v))?,
        entries: entries(rest).ok_or_else(|| bad("read", &v))?,
    })
}

/// The operation behind `Engine::take` (answer: `parse_taken`).
pub fn take_op(channel: &str, max: usize, max_tries: u32) -> Op {
    let args = vec![
        max.to_string().into_bytes(),
        max_tries.to_string().into_bytes(),
    ];
    script(&scripts::TAKE, channel, 6, args)
}

pub fn parse_taken(v: Value) -> Result<Taken, Error> {
    let a = as_array(&v).ok_or_else(|| bad("take", &v))?;
    let (head, rest) = split(a, 3).ok_or_else(|| bad("take", &v))?;
    Ok(Taken {
        acked_id: text(&head[0]).ok_or_else(|| bad("take", &v))?,
        expired: as_u64(&head[1]).ok_or_else(|| bad("take", &v))?,
        pending: as_u64(&head[2]).ok_or_else(|| bad("take", &v))?,
        entries: entries(rest).ok_or_else(|| bad("take", &v))?,
    })
}

/// The operation behind `Engine::ack` (answer: `parse_acked`).
pub fn ack_op(channel: &str, upto: Option<&str>, confirmed: &[&str], failed: &[&str]) -> Op {
    let mut args = vec![
        upto.unwrap_or("").as_bytes().to_vec(),
        confirmed.len().to_string().into_bytes(),
    ];
    args.extend(
        confirmed
            .iter()
            .chain(failed)
            .map(|s| s.as_bytes().to_vec()),
    );
    script(&scripts::ACK, channel, 6, args)
}

pub fn parse_acked(v: Value) -> Result<Acked, Error> {
    let a = as_array(&v).filter(|a| a.len() == 4);
    let a = a.ok_or_else(|| bad("ack", &v))?;
    let n = |i: usize| as_u64(&a[i]).ok_or_else(|| bad("ack", &v));
    Ok(Acked {
        acked: n(0)?,
        failed: n(1)?,
        pending: n(2)?,
        acked_id: text(&a[3]).ok_or_else(|| bad("ack", &v))?,
    })
}

/// A script operation on `channel`, with its first `nkeys` keys.
fn script(s: &'static Script, channel: &str, nkeys: usize, args: Vec<Vec<u8>>) -> Op {
    let mut keys = scripts::keys(channel).to_vec();
    keys.truncate(nkeys);
    Op::Script {
        script: s,
        keys,
        args,
    }
}

fn bad(what: &str, v: &Value) -> Error {
    Error::Protocol(format!("unexpected {what} answer: {v:?}"))
}

fn split(a: &[Value], n: usize) -> Option<(&[Value], &[Value])> {
    (a.len() >= n).then(|| a.split_at(n))
}

fn text(v: &Value) -> Option<String> {
    as_bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `seq, id, data` triples.
fn entries(a: &[Value]) -> Option<Vec<Entry>> {
    if !a.len().is_multiple_of(3) {
        return None;
    }
    a.chunks(3)
        .map(|e| {
            Some(Entry {
                seq: as_u64(&e[0])?,
                id: text(&e[1])?,
                data: as_bytes(&e[2])?.to_vec(),
            })
        })
        .collect()
}

/// What a publish stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// Per message: its seq, and whether it is new (`false`: a queue already held its id).
    Stored(Vec<(u64, bool)>),
    /// The queue holds this many pending messages; nothing was stored.
    Full(u64),
}

/// Reads the answer of a `publish_op`.
pub fn parse_published(v: Value) -> Result<Published, Error> {
    let a = as_array(&v).ok_or_else(|| bad("publish", &v))?;
    match a.first().and_then(as_u64) {
        Some(1) => Ok(Published::Full(
            a.get(1)
                .and_then(as_u64)
                .ok_or_else(|| bad("publish", &v))?,
        )),
        Some(0) if !a.len().is_multiple_of(2) => a[1..]
            .chunks(2)
            .map(|p| Some((as_u64(&p[0])?, as_u64(&p[1])? == 1)))
            .collect::<Option<Vec<_>>>()
            .map(Published::Stored)
            .ok_or_else(|| bad("publish", &v)),
        _ => Err(bad("publish", &v)),
    }
}

/// A catch-up read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// The channel's clock (the last seq handed out).
    pub clock: u64,
    /// The highest seq that retention dropped: above the `after` asked for, messages were
    /// lost to that reader.
    pub dropped: u64,
    /// The id of the newest message in the log (QST `HEAD`'s `ETag`; empty: none).
    pub last_id: String,
    pub entries: Vec<Entry>,
}

/// A QST pull.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The `ETag` of an empty pull (empty: nothing acknowledged yet).
    pub acked_id: String,
    /// Messages that left the queue by running out of tries in this pull.
    pub expired: u64,
    /// Pending messages, after expiry (those returned included).
    pub pending: u64,
    pub entries: Vec<Entry>,
}

/// An acknowledgement's effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acked {
    /// Messages acknowledged by this call (never counted by another).
    pub acked: u64,
    pub failed: u64,
    /// Pending messages left.
    pub pending: u64,
    pub acked_id: String,
}

/// The engine thread's connection and what it learnt about the server.
struct Link {
    conn: Conn,
    pubcmd: &'static str,
}

fn connect(opts: &Options, shared: &Shared) -> Result<Link, Error> {
    let mut conn = Conn::connect(&opts.url, opts.timeout)?;
    // Sharded pub/sub (Redis 7): `COMMAND INFO` answers a null for an unknown command.
    let info = conn.call(&Cmd::new("COMMAND").with("INFO").with("SPUBLISH"))?;
    let sharded = as_array(&info).is_some_and(|a| a.first().is_some_and(|v| *v != Value::Null));
    let mut load = Vec::new();
    for s in scripts::ALL {
        load.push(Cmd::new("SCRIPT").with("LOAD").with(s.src));
    }
    for (s, v) in scripts::ALL.iter().zip(conn.pipeline(&load)?) {
        if as_bytes(&v) != Some(s.sha().as_bytes()) {
            return Err(Error::Reply(format!("SCRIPT LOAD {}: {v:?}", s.name)));
        }
    }
    shared.sharded.store(sharded, Ordering::Relaxed);
    shared.connects.fetch_add(1, Ordering::Relaxed);
    shared.up.store(true, Ordering::Relaxed);
    Ok(Link {
        conn,
        pubcmd: if sharded { "SPUBLISH" } else { "PUBLISH" },
    })
}

fn encode(op: &Op, pubcmd: &str, by_sha: bool) -> Cmd {
    match op {
        Op::Cmd(c) => c.clone(),
        Op::Script { script, keys, args } => {
            let mut c = if by_sha {
                Cmd::new("EVALSHA").with(script.sha())
            } else {
                Cmd::new("EVAL").with(script.src)
            };
            c.int(keys.len());
            for k in keys {
                c.arg(k);
            }
            c.arg(pubcmd);
            for a in args {
                c.arg(a);
            }
            c
        }
    }
}

/// Sends a batch as one pipeline; a script that Redis forgot (`SCRIPT FLUSH`) is sent again
/// whole. `Err`: the connection is lost.
fn run_batch(link: &mut Link, jobs: &[Job]) -> Result<Vec<Value>, Error> {
    let cmds: Vec<Cmd> = jobs
        .iter()
        .map(|j| encode(&j.op, link.pubcmd, true))
        .collect();
    let mut out = link.conn.pipeline(&cmds)?;
    for (j, v) in jobs.iter().zip(out.iter_mut()) {
        if matches!(v, Value::Error(e) if e.starts_with("NOSCRIPT")) {
            *v = link
                .conn
                .pipeline(&[encode(&j.op, link.pubcmd, false)])?
                .pop()
                .unwrap_or(Value::Null);
        }
    }
    Ok(out)
}

fn answer(jobs: Vec<Job>, results: Result<Vec<Value>, Error>) {
    match results {
        Ok(vs) => {
            for (j, v) in jobs.into_iter().zip(vs) {
                let r = match v {
                    Value::Error(e) => Err(Error::Reply(e)),
                    v => Ok(v),
                };
                (j.done)(r);
            }
        }
        Err(e) => {
            for j in jobs {
                (j.done)(Err(e.clone()));
            }
        }
    }
}

/// The engine thread: take a batch, run it (or fail it while down), reconnect on schedule.
fn run(opts: &Options, shared: &Shared, rx: &Receiver<Job>) {
    let mut link: Option<Link> = None;
    let mut backoff = opts.backoff_min;
    let mut next_try = Instant::now();
    let mut last_io = Instant::now();
    loop {
        if link.is_none() && Instant::now() >= next_try {
            match connect(opts, shared) {
                Ok(l) => {
                    crate::info!("redis: connected to {}", opts.url);
                    link = Some(l);
                    backoff = opts.backoff_min;
                    last_io = Instant::now();
                }
                Err(e) => {
                    shared.up.store(false, Ordering::Relaxed);
                    if backoff == opts.backoff_min {
                        crate::warn!("redis: cannot connect to {}: {e}", opts.url);
                    }
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(opts.backoff_max);
                }
            }
        }
        let wait = match &link {
            Some(_) => PING_EVERY.saturating_sub(last_io.elapsed()),
            None => next_try.saturating_duration_since(Instant::now()),
        };
        let first = match rx.recv_timeout(wait) {
            Ok(j) => Some(j),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut jobs: Vec<Job> = first.into_iter().collect();
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let Some(l) = link.as_mut() else {
            answer(
                jobs,
                Err(Error::Down(format!("Redis at {} is down", opts.url))),
            );
            continue;
        };
        if jobs.is_empty() {
            jobs.push(Job {
                op: Op::Cmd(Cmd::new("PING")),
                done: Box::new(|_| {}),
            });
        }
        let t0 = Instant::now();
        let results = run_batch(l, &jobs);
        last_io = Instant::now();
        match &results {
            Ok(_) => {
                let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                shared.rtt_us.store(us, Ordering::Relaxed);
            }
            Err(e) => {
                crate::warn!("redis: connection to {} lost: {e}", opts.url);
                shared.up.store(false, Ordering::Relaxed);
                shared.failures.fetch_add(1, Ordering::Relaxed);
                link = None;
                next_try = Instant::now() + backoff;
            }
        }
        answer(jobs, results);
    }
}
