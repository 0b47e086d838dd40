//! The hidden `comet-worker` subcommand: one child process of `comet-longpoll`
//! that runs its share of the comet clients on keep-alive connections, all
//! watched by one edge-triggered mio `Poll`. Each client sends `method=sync`,
//! then loops `method=get&time=<cursor>` and checks that it sees every put of
//! the publisher exactly once and in order; the put→delivery latency (the put
//! carries its `CLOCK_MONOTONIC` time) goes into a histogram.
//!
//! Parent → worker (stdin), one command a line:
//!   `COLLECT <accepted> <deadline_ns>`  report once every client has `accepted` puts, or at the deadline
//!   `QUIT`                              exit (also on stdin EOF)
//! Worker → parent (stdout), one message a line:
//!   `PROGRESS up=… failed=… inflight=… retries=…`   about once a second while connecting
//!   `READY up=… failed=… retries=… connect_ms=… cpu_ms=…`  every client is up (synced, first get sent) or failed
//!   `RESULT up=… complete=… received=… dups=… gaps=… … hist=<max;bucket:count,…>`
//! Problems go to stderr, prefixed `[comet-worker N]`.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Args;
use crate::child::{
    backoff_ms, bump, connect_state, dispatch, open_socket, read_commands, reason_list, send,
    send_progress, wait, write_some, Common, Connect, StartQueue, COMMON_OPTIONS, PRINT_LIMIT,
};
use crate::hist::Hist;
use crate::http::{escape, parse_response_head, pct};
use crate::json::{self, Value};
use crate::sys::{now_ns, self_cpu_ns};
/// The longest reply body a client accepts.
const MAX_BODY: usize = 4 << 20;

/// `GET /comet?method=sync` on a keep-alive connection.
pub fn sync_request(channel: &str) -> Vec<u8> {
    format!(
        "GET /comet?method=sync&channel={} HTTP/1.1\r\nHost: x\r\n\r\n",
        pct(channel)
    )
    .into_bytes()
}

/// `GET /comet?method=get&time=T` on a keep-alive connection.
pub fn get_request(channel: &str, time: u64) -> Vec<u8> {
    format!(
        "GET /comet?method=get&channel={}&time={time} HTTP/1.1\r\nHost: x\r\n\r\n",
        pct(channel)
    )
    .into_bytes()
}

/// `GET /comet?method=put&message=<seq>-<ns>` on a keep-alive connection.
pub fn put_request(channel: &str, seq: u64, ns: u64) -> Vec<u8> {
    format!(
        "GET /comet?method=put&channel={}&message={seq}-{ns} HTTP/1.1\r\nHost: x\r\n\r\n",
        pct(channel)
    )
    .into_bytes()
}

/// Which server the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// tidings' Simple Comet Protocol (PROTOCOLS.md 2): `sync`, then `get&time=`.
    Comet,
    /// nginx + nchan long-poll subscribers (`GET /sub?channel=C`, the next message
    /// asked for with `If-Modified-Since` / `If-None-Match` from the last reply),
    /// for comparison. One message per reply; the body is the message.
    Nchan,
    /// QST long-poll pulls (`GET /qst/C?format=json&long-polling=true`, PROTOCOLS.md
    /// 1.4), parked on an empty queue: for the memory per parked pull only (nothing
    /// is published; a timed-out pull's `[]` is an empty reply, asked again).
    Qst,
}

impl Dialect {
    pub fn parse(s: &str) -> Result<Dialect, String> {
        match s {
            "comet" => Ok(Dialect::Comet),
            "nchan" => Ok(Dialect::Nchan),
            "qst" => Ok(Dialect::Qst),
            other => Err(format!(
                "--dialect `{other}`: want `comet`, `nchan` or `qst`"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Comet => "comet",
            Dialect::Nchan => "nchan",
            Dialect::Qst => "qst",
        }
    }
}

/// An nchan long-poll request; `cursor` is `(Last-Modified, Etag)` of the last reply.
pub fn nchan_sub_request(channel: &str, cursor: Option<&(String, String)>) -> Vec<u8> {
    let mut r = format!("GET /sub?channel={} HTTP/1.1\r\nHost: x\r\n", pct(channel));
    if let Some((lm, etag)) = cursor {
        r.push_str(&format!(
            "If-Modified-Since: {lm}\r\nIf-None-Match: {etag}\r\n"
        ));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A QST long-poll pull that acknowledges nothing.
pub fn qst_pull_request(channel: &str) -> Vec<u8> {
    format!(
        "GET /qst/{}?format=json&long-polling=true HTTP/1.1\r\nHost: x\r\n\r\n",
        pct(channel)
    )
    .into_bytes()
}

/// An nchan publish of `<seq>-<ns>`.
pub fn nchan_pub_request(channel: &str, seq: u64, ns: u64) -> Vec<u8> {
    let body = format!("{seq}-{ns}");
    format!(
        "POST /pub?channel={} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        pct(channel),
        body.len()
    )
    .into_bytes()
}

/// A message's `data` as the publisher made it: `"<seq>-<monotonic ns>"`.
pub fn parse_put_data(v: &Value<'_>) -> Option<(u64, u64)> {
    let s = v.as_str()?;
    let (a, b) = s.split_once('-')?;
    let ok = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !ok(a) || !ok(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `(seq, ns)` of a put by the publisher.
    Put(u64, u64),
    /// Anything else (a short printable sample).
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CometMsg {
    pub time: u64,
    pub data: Data,
}

/// A `get` answer: `{"time":S,"messages":[{"time":t,"data":d},…]}` (+ `"missed":true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CometReply {
    pub time: u64,
    pub messages: Vec<CometMsg>,
    pub missed: bool,
}

/// `{"time":T}` (a `sync` or `put` answer).
pub fn parse_time_reply(body: &[u8]) -> Result<u64, String> {
    let v = json::parse(body)?;
    v.get("time")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no integer \"time\" in {:?}", escape(body, 120)))
}

pub fn parse_get_reply(body: &[u8]) -> Result<CometReply, String> {
    let v = json::parse(body)?;
    if !matches!(v, Value::Obj(_)) {
        return Err(format!("not a JSON object: {:?}", escape(body, 120)));
    }
    let time = v
        .get("time")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no integer \"time\" in {:?}", escape(body, 120)))?;
    let list = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no \"messages\" array in {:?}", escape(body, 120)))?;
    let mut messages = Vec::with_capacity(list.len());
    for m in list {
        let t = m.get("time").and_then(Value::as_u64).ok_or_else(|| {
            format!(
                "a message without an integer \"time\" in {:?}",
                escape(body, 120)
            )
        })?;
        let d = m
            .get("data")
            .ok_or_else(|| format!("a message without \"data\" in {:?}", escape(body, 120)))?;
        let data = match parse_put_data(d) {
            Some((seq, ns)) => Data::Put(seq, ns),
            None => Data::Other(format!("{d:?}").chars().take(80).collect()),
        };
        messages.push(CometMsg { time: t, data });
    }
    let missed = match v.get("missed") {
        None => false,
        Some(m) => m
            .as_bool()
            .ok_or_else(|| format!("\"missed\" is not a boolean: {m:?}"))?,
    };
    Ok(CometReply {
        time,
        messages,
        missed,
    })
}

/// What one client has seen: sequence checks over the publisher's puts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The next put sequence number expected (puts count from 1).
    pub next: u64,
    pub received: u64,
    /// A put seen again, or out of order (a lower seq after a higher one).
    pub dups: u64,
    /// Puts skipped over (a higher seq arrived first).
    pub gaps: u64,
}

impl Seen {
    pub fn new() -> Seen {
        Seen {
            next: 1,
            ..Seen::default()
        }
    }

    /// Notes put `seq`; true when it is new (first delivery).
    pub fn note(&mut self, seq: u64) -> bool {
        if seq == self.next {
            self.next += 1;
            self.received += 1;
            true
        } else if seq > self.next {
            self.gaps += seq - self.next;
            self.next = seq + 1;
            self.received += 1;
            true
        } else {
            self.dups += 1;
            false
        }
    }
}

pub struct Config {
    pub common: Common,
    pub channel: String,
    /// A get unanswered this long is counted stuck and its connection replaced.
    pub get_timeout_ns: u64,
    pub dialect: Dialect,
}

impl Config {
    pub fn from_args(argv: &[String]) -> Result<Config, String> {
        let names = [
            &COMMON_OPTIONS[..],
            &["clients", "channel", "get-timeout-ms", "dialect"],
        ]
        .concat();
        let a = Args::parse(argv, &names, &[])?;
        Ok(Config {
            common: Common::from_args(&a, "clients")?,
            channel: a.required("channel")?.to_string(),
            get_timeout_ns: a.num::<u64>("get-timeout-ms", 40_000)? * 1_000_000,
            dialect: Dialect::parse(&a.str_or("dialect", "comet"))?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket: not started, or waiting for a retry / reconnect.
    Idle,
    Connecting,
    /// Connected; this many request bytes written.
    Writing(usize),
    /// Request written; reading the reply.
    Waiting,
    /// Never came up.
    Failed,
}

struct Client {
    sock: Option<TcpStream>,
    phase: Phase,
    /// Connect attempts while coming up; consecutive reconnects once up.
    attempts: u32,
    /// When the current phase (connect, or the request) began.
    started_ns: u64,
    /// `None` until the `sync` answer arrived.
    cursor: Option<u64>,
    up: bool,
    inbuf: Vec<u8>,
    seen: Seen,
    /// nchan: `(Last-Modified, Etag)` of the last message.
    nchan: Option<Box<(String, String)>>,
}

struct Counters {
    up: usize,
    failed: usize,
    inflight: usize,
    retries: usize,
    reconnects: usize,
    http_errors: usize,
    proto_errors: usize,
    replies: u64,
    empty_replies: u64,
    messages: u64,
    missed: u64,
    stale: u64,
    unexpected: u64,
    stuck: u64,
    closed_by_server: u64,
}

struct Worker {
    cfg: Config,
    poll: Poll,
    clients: Vec<Client>,
    queue: StartQueue,
    n: Counters,
    hist: Hist,
    reasons: BTreeMap<String, usize>,
    collect: Option<(u64, u64)>,
    started_ns: u64,
    ready_sent: bool,
}

enum Cmd {
    Collect(u64, u64),
    Quit,
    Bad(String),
}

fn parse_cmd(line: &str) -> Cmd {
    let mut w = line.split_whitespace();
    match w.next() {
        Some("COLLECT") => {
            let a = w.next().and_then(|x| x.parse().ok());
            let d = w.next().and_then(|x| x.parse().ok());
            match (a, d) {
                (Some(a), Some(d)) => Cmd::Collect(a, d),
                _ => Cmd::Bad(line.to_string()),
            }
        }
        Some("QUIT") => Cmd::Quit,
        _ => Cmd::Bad(line.to_string()),
    }
}

impl Worker {
    fn new(cfg: Config) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let clients = (0..cfg.common.count)
            .map(|_| Client {
                sock: None,
                phase: Phase::Idle,
                attempts: 0,
                started_ns: 0,
                cursor: None,
                up: false,
                inbuf: Vec::new(),
                seen: Seen::new(),
                nchan: None,
            })
            .collect();
        Ok(Worker {
            queue: StartQueue::new(cfg.common.count),
            clients,
            poll,
            cfg,
            n: Counters {
                up: 0,
                failed: 0,
                inflight: 0,
                retries: 0,
                reconnects: 0,
                http_errors: 0,
                proto_errors: 0,
                replies: 0,
                empty_replies: 0,
                messages: 0,
                missed: 0,
                stale: 0,
                unexpected: 0,
                stuck: 0,
                closed_by_server: 0,
            },
            hist: Hist::new(),
            reasons: BTreeMap::new(),
            collect: None,
            started_ns: now_ns(),
            ready_sent: false,
        })
    }

    fn say(&self, msg: &str) {
        eprintln!("[comet-worker {}] {msg}", self.cfg.common.index);
    }

    /// Counts a problem; prints the first few of each kind.
    fn note(&mut self, idx: usize, why: &str) {
        if bump(&mut self.reasons, why) <= PRINT_LIMIT {
            self.say(&format!("client {}: {why}", self.cfg.common.offset + idx));
        }
    }

    fn request(&self, idx: usize) -> Vec<u8> {
        match self.cfg.dialect {
            Dialect::Nchan => {
                return nchan_sub_request(&self.cfg.channel, self.clients[idx].nchan.as_deref())
            }
            Dialect::Qst => return qst_pull_request(&self.cfg.channel),
            Dialect::Comet => {}
        }
        match self.clients[idx].cursor {
            None => sync_request(&self.cfg.channel),
            Some(t) => get_request(&self.cfg.channel, t),
        }
    }

    fn start(&mut self, idx: usize) {
        let src = self.cfg.common.source(idx);
        self.clients[idx].attempts += 1;
        if self.cfg.dialect != Dialect::Comet && self.clients[idx].cursor.is_none() {
            // nchan and QST have no sync: the first request waits for the next message.
            self.clients[idx].cursor = Some(0);
        }
        match open_socket(src, self.cfg.common.server) {
            Ok(mut sock) => {
                if let Err(e) = self.poll.registry().register(
                    &mut sock,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.lost(idx, &format!("register: {e}"), true);
                    return;
                }
                let c = &mut self.clients[idx];
                c.sock = Some(sock);
                c.phase = Phase::Connecting;
                c.started_ns = now_ns();
                c.inbuf.clear();
                if !c.up {
                    self.n.inflight += 1;
                }
            }
            Err(e) => self.lost(idx, &format!("connect from {src}: {e}"), true),
        }
    }

    fn drop_socket(&mut self, idx: usize) {
        if let Some(mut s) = self.clients[idx].sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        self.clients[idx].inbuf = Vec::new();
    }

    /// The connection of `idx` broke or was refused. A client that is up
    /// reconnects (with backoff) and resumes from its cursor; one coming up
    /// retries up to `--retries` times when `retryable`.
    fn lost(&mut self, idx: usize, why: &str, retryable: bool) {
        let had_socket = self.clients[idx].sock.is_some();
        self.drop_socket(idx);
        let c = &mut self.clients[idx];
        let was = c.phase;
        c.phase = Phase::Idle;
        if c.up {
            self.n.reconnects += 1;
            // 0 ms for the first reconnect, then 50, 100, … capped at 1 s
            // (half the backoff of a connect retry)
            let wait_ms = if c.attempts <= 1 {
                0
            } else {
                backoff_ms(c.attempts) / 2
            };
            self.queue.retry_at(now_ns() + wait_ms * 1_000_000, idx);
            self.note(idx, &format!("reconnecting: {why}"));
            return;
        }
        if had_socket && was != Phase::Idle {
            self.n.inflight -= 1;
        }
        if retryable && c.attempts <= self.cfg.common.retries {
            self.n.retries += 1;
            self.queue
                .retry_at(now_ns() + backoff_ms(c.attempts) * 1_000_000, idx);
            self.note(idx, &format!("retrying: {why}"));
        } else {
            self.clients[idx].phase = Phase::Failed;
            self.n.failed += 1;
            self.note(idx, &format!("FAILED: {why}"));
        }
    }

    fn on_event(&mut self, idx: usize, ev: &mio::event::Event, buf: &mut [u8]) {
        if idx >= self.clients.len() {
            return;
        }
        if self.clients[idx].phase == Phase::Connecting {
            let Some(sock) = self.clients[idx].sock.as_ref() else {
                return;
            };
            match connect_state(sock, ev) {
                Connect::Pending => return,
                Connect::Done => self.clients[idx].phase = Phase::Writing(0),
                Connect::Failed(why) => return self.lost(idx, &why, true),
            }
        }
        if let Phase::Writing(_) = self.clients[idx].phase {
            self.write(idx);
        }
        if self.clients[idx].phase == Phase::Waiting
            && (ev.is_readable() || ev.is_read_closed() || ev.is_error())
        {
            self.read_all(idx, buf);
        }
    }

    /// Writes the client's request from where it stopped.
    fn write(&mut self, idx: usize) {
        let Phase::Writing(mut done) = self.clients[idx].phase else {
            return;
        };
        let req = self.request(idx);
        let Some(sock) = self.clients[idx].sock.as_mut() else {
            return;
        };
        match write_some(sock, &req, &mut done) {
            Ok(true) => {}
            Ok(false) => {
                self.clients[idx].phase = Phase::Writing(done);
                return;
            }
            Err(e) => return self.lost(idx, &format!("write: {e}"), true),
        }
        let c = &mut self.clients[idx];
        c.phase = Phase::Waiting;
        c.started_ns = now_ns();
        if !c.up && c.cursor.is_some() {
            c.up = true;
            c.attempts = 0;
            self.n.up += 1;
            self.n.inflight -= 1;
        }
    }

    fn read_all(&mut self, idx: usize, buf: &mut [u8]) {
        loop {
            let Some(sock) = self.clients[idx].sock.as_mut() else {
                return;
            };
            match sock.read(buf) {
                Ok(0) => {
                    self.n.closed_by_server += u64::from(self.clients[idx].up);
                    return self.lost(idx, "server closed the connection", true);
                }
                Ok(n) => {
                    let now = now_ns();
                    self.clients[idx].inbuf.extend_from_slice(&buf[..n]);
                    if !self.take_replies(idx, now) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.lost(idx, &format!("read: {e}"), true),
            }
        }
    }

    /// Handles every complete reply in the client's buffer. False when the
    /// connection was dropped.
    fn take_replies(&mut self, idx: usize, now: u64) -> bool {
        loop {
            let head = match parse_response_head(&self.clients[idx].inbuf) {
                Ok(Some(h)) => h,
                Ok(None) => return true,
                Err(e) => {
                    self.n.proto_errors += 1;
                    self.lost(idx, &format!("protocol error: {e}"), false);
                    return false;
                }
            };
            if self.clients[idx].phase != Phase::Waiting {
                self.n.proto_errors += 1;
                self.lost(
                    idx,
                    "protocol error: a reply with no request outstanding",
                    false,
                );
                return false;
            }
            let Some(len) = head.content_length.filter(|_| !head.chunked) else {
                self.n.proto_errors += 1;
                self.lost(idx, "protocol error: reply without Content-Length", false);
                return false;
            };
            if len > MAX_BODY {
                self.n.proto_errors += 1;
                self.lost(idx, &format!("protocol error: {len}-byte reply"), false);
                return false;
            }
            if self.clients[idx].inbuf.len() < head.head_len + len {
                return true;
            }
            let rest = self.clients[idx].inbuf.split_off(head.head_len + len);
            let whole = std::mem::replace(&mut self.clients[idx].inbuf, rest);
            let body = &whole[head.head_len..];
            let nchan = self.cfg.dialect == Dialect::Nchan;
            let qst = self.cfg.dialect == Dialect::Qst;
            if (nchan && matches!(head.status, 304 | 408)) || (qst && head.status == 200) {
                // nchan's long-poll timeout, or QST's (`[]`): nothing new, ask again.
                self.n.replies += 1;
                self.n.empty_replies += 1;
                if qst && body != b"[]" {
                    self.n.unexpected += 1;
                }
            } else if head.status != 200 {
                self.n.http_errors += 1;
                let why = format!("status {} ({:?})", head.status, escape(body, 80));
                // A refusal while coming up is final; once up, reconnect.
                self.lost(idx, &why, false);
                return false;
            } else if nchan {
                self.nchan_message(idx, &whole[..head.head_len], body, now);
            } else if !self.handle_body(idx, body, now) {
                return false;
            }
            if self.clients[idx].up {
                self.clients[idx].attempts = 0;
            }
            if head.close {
                self.lost(idx, "server asked to close (Connection: close)", true);
                return false;
            }
            self.clients[idx].phase = Phase::Writing(0);
            self.write(idx);
            if self.clients[idx].phase != Phase::Waiting {
                // Still writing (WouldBlock) or lost: nothing more to read now.
                return self.clients[idx].sock.is_some();
            }
        }
    }

    /// One nchan long-poll answer: the body is the message.
    fn nchan_message(&mut self, idx: usize, head: &[u8], body: &[u8], now: u64) {
        self.n.replies += 1;
        self.n.messages += 1;
        let lm = crate::http::header(head, "last-modified").unwrap_or_default();
        let etag = crate::http::header(head, "etag").unwrap_or_default();
        self.clients[idx].nchan = Some(Box::new((lm, etag)));
        let text = String::from_utf8_lossy(body);
        match parse_put_data(&Value::Str(text.clone())) {
            Some((seq, ns)) => {
                if self.clients[idx].seen.note(seq) {
                    self.hist.record(now.saturating_sub(ns) / 1000);
                }
            }
            None => {
                self.n.unexpected += 1;
                let s = format!("unexpected message {:?}", escape(body, 60));
                self.note(idx, &s);
            }
        }
    }

    fn handle_body(&mut self, idx: usize, body: &[u8], now: u64) -> bool {
        let Some(cursor) = self.clients[idx].cursor else {
            return match parse_time_reply(body) {
                Ok(t) => {
                    self.clients[idx].cursor = Some(t);
                    true
                }
                Err(e) => {
                    self.n.proto_errors += 1;
                    self.lost(idx, &format!("protocol error: sync reply: {e}"), false);
                    false
                }
            };
        };
        let reply = match parse_get_reply(body) {
            Ok(r) => r,
            Err(e) => {
                self.n.proto_errors += 1;
                self.lost(idx, &format!("protocol error: get reply: {e}"), false);
                return false;
            }
        };
        self.n.replies += 1;
        if reply.missed {
            self.n.missed += 1;
        }
        if reply.messages.is_empty() {
            self.n.empty_replies += 1;
        }
        self.n.messages += reply.messages.len() as u64;
        let mut last = cursor;
        for m in &reply.messages {
            if m.time <= last {
                self.n.stale += 1;
            }
            last = last.max(m.time);
            match m.data {
                Data::Put(seq, ns) => {
                    if self.clients[idx].seen.note(seq) {
                        self.hist.record(now.saturating_sub(ns) / 1000);
                    }
                }
                Data::Other(ref sample) => {
                    self.n.unexpected += 1;
                    let s = format!("unexpected message data {sample}");
                    self.note(idx, &s);
                }
            }
        }
        if reply.time < cursor || (!reply.messages.is_empty() && reply.time != last) {
            self.n.stale += 1;
            self.note(
                idx,
                &format!(
                    "reply time {} after cursor {cursor} (last message {last})",
                    reply.time
                ),
            );
        }
        self.clients[idx].cursor = Some(reply.time.max(cursor));
        true
    }

    fn fill(&mut self) {
        let now = now_ns();
        let max = self.cfg.common.inflight;
        while let Some(idx) = {
            let clients = &self.clients;
            self.queue
                .next(now, self.n.inflight, max, |i| clients[i].up)
        } {
            self.start(idx);
        }
    }

    /// Connects and requests that have taken too long.
    fn check_timeouts(&mut self) {
        let now = now_ns();
        let late: Vec<(usize, bool)> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let limit = if c.up && c.phase == Phase::Waiting {
                    self.cfg.get_timeout_ns
                } else {
                    self.cfg.common.connect_timeout_ns
                };
                let busy = matches!(
                    c.phase,
                    Phase::Connecting | Phase::Writing(_) | Phase::Waiting
                );
                (busy && now.saturating_sub(c.started_ns) > limit).then_some((i, c.up))
            })
            .collect();
        for (idx, up) in late {
            if up {
                self.n.stuck += 1;
            }
            let what = match self.clients[idx].phase {
                Phase::Connecting => "connect timed out",
                Phase::Writing(_) => "request write timed out",
                _ if up => "get not answered in time",
                _ => "sync not answered in time",
            };
            self.lost(idx, what, true);
        }
    }

    fn connecting_done(&self) -> bool {
        self.queue.first_attempts_done()
            && self.n.inflight == 0
            && self
                .clients
                .iter()
                .all(|c| c.up || c.phase == Phase::Failed)
    }

    fn complete(&self, accepted: u64) -> usize {
        self.clients
            .iter()
            .filter(|c| c.up && c.seen.received >= accepted)
            .count()
    }

    /// Sends the result once every client has everything, or at the deadline.
    fn check_collect(&mut self) -> Option<u64> {
        let (accepted, deadline) = self.collect?;
        let now = now_ns();
        let complete = self.complete(accepted);
        if complete < self.n.up && now < deadline {
            return Some(deadline - now);
        }
        let mut received = 0u64;
        let mut dups = 0u64;
        let mut gaps = 0u64;
        let mut short_clients = 0usize;
        let mut min_received = u64::MAX;
        for c in self.clients.iter().filter(|c| c.up) {
            received += c.seen.received;
            dups += c.seen.dups;
            gaps += c.seen.gaps;
            min_received = min_received.min(c.seen.received);
            if c.seen.received < accepted {
                short_clients += 1;
            }
        }
        if min_received == u64::MAX {
            min_received = 0;
        }
        let n = &self.n;
        send(&format!(
            "RESULT up={} failed={} complete={complete} short_clients={short_clients} min_received={min_received} received={received} dups={dups} gaps={gaps} replies={} empty_replies={} messages={} missed={} stale={} unexpected={} reconnects={} closed_by_server={} stuck={} http_errors={} proto_errors={} cpu_ms={} hist={}",
            n.up,
            n.failed,
            n.replies,
            n.empty_replies,
            n.messages,
            n.missed,
            n.stale,
            n.unexpected,
            n.reconnects,
            n.closed_by_server,
            n.stuck,
            n.http_errors,
            n.proto_errors,
            self_cpu_ns() / 1_000_000,
            self.hist.encode()
        ));
        self.collect = None;
        None
    }

    fn print_reasons(&self) {
        if !self.reasons.is_empty() {
            self.say(&format!("problems: {}", reason_list(&self.reasons)));
        }
    }
}

pub fn run(argv: &[String]) -> i32 {
    crate::child::worker_main(
        argv,
        "comet-worker",
        "clients",
        Config::from_args,
        |c| &c.common,
        run_worker,
    )
}

fn run_worker(cfg: Config) -> io::Result<()> {
    let mut w = Worker::new(cfg)?;
    let rx = read_commands(&w.poll, parse_cmd, Cmd::Quit)?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_progress = now_ns();
    let mut last_scan = now_ns();
    loop {
        w.fill();
        let connecting = !w.ready_sent;
        let mut timeout_ns: u64 = if w.queue.has_retries() {
            5_000_000
        } else if connecting {
            100_000_000
        } else {
            500_000_000
        };
        if let Some(left) = w.check_collect() {
            timeout_ns = timeout_ns.min(left);
        }
        wait(&mut w.poll, &mut events, timeout_ns)?;
        let woke = dispatch(&events, |idx, ev| w.on_event(idx, ev, &mut buf));
        w.check_collect();
        if woke {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::Collect(a, d) => w.collect = Some((a, d)),
                    Cmd::Quit => {
                        w.print_reasons();
                        return Ok(());
                    }
                    Cmd::Bad(l) => w.say(&format!("unknown command {l:?}")),
                }
            }
        }
        let now = now_ns();
        let scan_every = if connecting {
            250_000_000
        } else {
            1_000_000_000
        };
        if now - last_scan > scan_every {
            last_scan = now;
            w.check_timeouts();
        }
        if connecting && now - last_progress > 1_000_000_000 {
            last_progress = now;
            send_progress(w.n.up, w.n.failed, w.n.inflight, w.n.retries);
        }
        if !w.ready_sent && w.connecting_done() {
            w.ready_sent = true;
            send(&format!(
                "READY up={} failed={} retries={} connect_ms={} cpu_ms={}",
                w.n.up,
                w.n.failed,
                w.n.retries,
                (now - w.started_ns) / 1_000_000,
                self_cpu_ns() / 1_000_000
            ));
            if w.n.failed > 0 || w.n.retries > 0 {
                w.print_reasons();
            }
        }
    }
}

#[cfg(test)]
mod tests;
