//! The `soak` worker process (hidden `soak-worker` subcommand): thousands of
//! client slots on one edge-triggered mio `Poll`. Each slot runs session after
//! session, each of a protocol picked at random (Talk stream or push, comet
//! get or put, QST producer or consumer), does a random number of requests and
//! then leaves cleanly, with an RST (`SO_LINGER` 0), in the middle of a
//! request, or while parked / streaming / waiting for a reply.
//!
//! The QST queues this worker owns (queue `k` belongs to worker `k % procs`)
//! are checked here: a ledger of every id this worker pushed, what the server
//! answered, which replies delivered it and when its acknowledgement was
//! confirmed. On `STOP` the worker hangs up everything, drains its queues with
//! one clean consumer and sends `DONE` with its counters (`key=value`, all
//! numbers, summed by the parent).

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream as StdStream;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::SockRef;

use crate::args::Args;
use crate::child::{
    connect_state, dispatch, open_socket, read_commands, send, wait, write_some, Common, Connect,
    COMMON_OPTIONS, PRINT_LIMIT,
};
use crate::chunked::ChunkParser;
use crate::comet_worker::{
    get_request, parse_get_reply, parse_time_reply, put_request, sync_request,
};
use crate::http::{
    escape, exchange, header, parse_response_head, pull_request as talk_pull_request,
    push_request as talk_push_request, HEADLESS_PULL_HEAD,
};
use crate::qst::{pulled_ids, push_request as qst_json_push, retry_after};
use crate::sys::now_ns;

pub use crate::soak_model::*;

mod reply;

/// The longest reply body a client accepts.
const MAX_BODY: usize = 4 << 20;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; the next session starts at `due`.
    Idle,
    Connecting,
    /// Writing `out` from `written`.
    Sending,
    /// Waiting for the reply to the request just written.
    Awaiting,
    /// A Talk stream, after its reply head.
    Streaming,
    /// Connected, between requests; the next one at `due`.
    Thinking,
    /// Wrote part of a request on purpose; hangs up at `due`.
    Partial,
    /// Not started (the worker is stopping).
    Off,
}

/// The request in flight and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    None,
    TalkPull,
    TalkPush,
    CometSync,
    CometGet,
    CometPut,
    /// The batch's ids.
    QstPush,
    /// The ids this pull acknowledges.
    QstPull(Vec<u64>),
}

impl Req {
    fn proto(&self) -> &'static str {
        match self {
            Req::None => "none",
            Req::TalkPull => "talk_pull",
            Req::TalkPush => "talk_push",
            Req::CometSync => "comet_sync",
            Req::CometGet => "comet_get",
            Req::CometPut => "comet_put",
            Req::QstPush => "qst_push",
            Req::QstPull(_) => "qst_pull",
        }
    }
}

struct Client {
    rng: Rng,
    session: u64,
    kind: Kind,
    phase: Phase,
    sock: Option<TcpStream>,
    /// The next timer of the phase (start, think, partial hang-up, reply timeout).
    due: u64,
    /// When the session hangs up, whatever it is doing (u64::MAX: it ends by itself).
    abort_at: u64,
    /// Hang up with an RST (`SO_LINGER` 0) rather than a FIN.
    rst: bool,
    /// Requests left in the session.
    left: u32,
    /// The last request is written in part only, then the client hangs up.
    partial_last: bool,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    req: Req,
    sent_ns: u64,
    channel: usize,
    name: String,
    parser: Option<ChunkParser>,
    cursor: u64,
    // QST
    json: bool,
    etag: Option<String>,
    /// Ids of the last reply, not acknowledged yet.
    unacked: Vec<u64>,
    /// The producer's batch (kept for a retry after 503).
    batch: Vec<u64>,
    max: usize,
}

pub struct Config {
    pub common: Common,
    pub run: String,
    /// Prefix of this run's QST ids: unique per run even when `run` (the
    /// channel names) is reused, since a channel stores an id only once.
    pub ids: String,
    pub seed: u64,
    pub procs: usize,
    pub queues: usize,
    pub talk_channels: usize,
    pub comet_channels: usize,
    pub mix: Vec<u64>,
    pub reply_timeout_ns: u64,
    pub think_scale: u64,
}

impl Config {
    pub fn from_args(argv: &[String]) -> Result<Config, String> {
        let mut valued: Vec<&str> = COMMON_OPTIONS.to_vec();
        valued.extend([
            "clients",
            "run",
            "ids",
            "seed",
            "procs",
            "queues",
            "talk-channels",
            "comet-channels",
            "mix",
            "reply-timeout",
            "think-pct",
        ]);
        let a = Args::parse(argv, &valued, &[])?;
        let common = Common::from_args(&a, "clients")?;
        Ok(Config {
            common,
            run: a.required("run")?.to_string(),
            ids: a.required("ids")?.to_string(),
            seed: a.num("seed", 1)?,
            procs: a.num::<usize>("procs", 1)?.max(1),
            queues: a.num::<usize>("queues", 1)?.max(1),
            talk_channels: a.num::<usize>("talk-channels", 1)?.max(1),
            comet_channels: a.num::<usize>("comet-channels", 1)?.max(1),
            mix: parse_mix(&a.str_or("mix", "20,10,20,10,15,25"))?,
            reply_timeout_ns: a.num::<u64>("reply-timeout", 40)? * SEC,
            think_scale: a.num::<u64>("think-pct", 100)?.max(1),
        })
    }

    pub fn talk_channel(&self, k: usize) -> String {
        format!("soak-{}-talk{k}", self.run)
    }
    pub fn comet_channel(&self, k: usize) -> String {
        format!("soak-{}-comet{k}", self.run)
    }
    pub fn queue_name(&self, k: usize) -> String {
        format!("soak-{}-q{k}", self.run)
    }
    /// The queues this worker owns.
    pub fn my_queues(&self) -> Vec<usize> {
        (0..self.queues)
            .filter(|k| k % self.procs == self.common.index % self.procs)
            .collect()
    }
}

struct Worker {
    cfg: Config,
    poll: Poll,
    clients: Vec<Client>,
    ledger: Ledger,
    my_queues: Vec<usize>,
    /// Counters reported in `DONE` (every value a number).
    n: BTreeMap<String, u64>,
    stopping: bool,
}

impl Worker {
    fn say(&self, msg: &str) {
        eprintln!("[soak-worker {}] {msg}", self.cfg.common.index);
    }

    fn count(&mut self, key: &str, by: u64) -> u64 {
        let v = self.n.entry(key.to_string()).or_insert(0);
        *v += by;
        *v
    }

    /// Counts an error of kind `key` (`err_…`); prints the first few.
    fn error(&mut self, idx: usize, key: &str, detail: &str) {
        if self.count(key, 1) <= PRINT_LIMIT as u64 {
            let c = &self.clients[idx];
            self.say(&format!(
                "{key}: client {} session {} ({}): {detail}",
                self.cfg.common.offset + idx,
                c.session,
                c.kind.name()
            ));
        }
    }

    fn think(&mut self, idx: usize, lo_ms: u64, hi_ms: u64) -> u64 {
        let scale = self.cfg.think_scale;
        self.clients[idx].rng.range(lo_ms, hi_ms) * MS * scale / 100
    }

    /// Starts a new session on an idle slot.
    fn start(&mut self, idx: usize, now: u64) {
        let mix = self.cfg.mix.clone();
        let (talk_n, comet_n) = (self.cfg.talk_channels, self.cfg.comet_channels);
        let nq = self.my_queues.len();
        let c = &mut self.clients[idx];
        c.session += 1;
        c.kind = KINDS[c.rng.weighted(&mix)];
        c.rst = c.rng.chance(50);
        c.partial_last = false;
        c.abort_at = u64::MAX;
        c.inbuf.clear();
        c.parser = None;
        c.etag = None;
        c.unacked.clear();
        c.batch.clear();
        c.req = Req::None;
        c.cursor = 0;
        c.json = c.rng.chance(50);
        c.max = [1, 5, 10, 10, 50, 100][c.rng.range(0, 5) as usize];
        // How the session ends: 35 % hang up at a random moment (parked,
        // streaming, waiting for a reply, between requests), 15 % in the
        // middle of their last request, the rest after their last reply.
        let ending = c.rng.range(0, 99);
        let (left, life_ms) = match c.kind {
            Kind::TalkStream => (1, c.rng.range(500, 60_000)),
            Kind::TalkPush => (c.rng.range(1, 20) as u32, c.rng.range(100, 20_000)),
            Kind::CometGet => (c.rng.range(2, 30) as u32, c.rng.range(500, 40_000)),
            Kind::CometPut => (c.rng.range(1, 20) as u32, c.rng.range(100, 20_000)),
            Kind::QstProducer => (c.rng.range(1, 30) as u32, c.rng.range(100, 30_000)),
            Kind::QstConsumer => (c.rng.range(1, 40) as u32, c.rng.range(100, 40_000)),
        };
        c.left = left;
        if c.kind == Kind::TalkStream {
            // A stream ends only by hanging up (or in the middle of its pull).
            if ending < 10 {
                c.partial_last = true;
            } else {
                c.abort_at = now + life_ms * MS;
            }
        } else if ending < 35 {
            c.abort_at = now + life_ms * MS;
        } else if ending < 50 {
            c.partial_last = true;
        }
        c.channel = match c.kind {
            Kind::TalkStream | Kind::TalkPush => c.rng.range(0, talk_n as u64 - 1) as usize,
            Kind::CometGet | Kind::CometPut => c.rng.range(0, comet_n as u64 - 1) as usize,
            Kind::QstProducer | Kind::QstConsumer => c.rng.range(0, nq as u64 - 1) as usize,
        };
        c.name = format!(
            "{}-{}-{}-{}",
            self.cfg.run, self.cfg.common.index, idx, c.session
        );
        let kind = c.kind.name();
        self.count(&format!("sessions_{kind}"), 1);
        let src = self.cfg.common.source(idx);
        match open_socket(src, self.cfg.common.server) {
            Ok(mut sock) => {
                if let Err(e) = self.poll.registry().register(
                    &mut sock,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.error(idx, "err_register", &e.to_string());
                    return self.idle(idx, now, 1000);
                }
                let c = &mut self.clients[idx];
                c.sock = Some(sock);
                c.phase = Phase::Connecting;
                c.due = now + self.cfg.common.connect_timeout_ns;
            }
            Err(e) => {
                self.error(idx, "err_connect", &format!("from {src}: {e}"));
                self.idle(idx, now, 500);
            }
        }
    }

    /// Closes the slot's socket: FIN unless `rst`.
    fn close(&mut self, idx: usize, rst: bool) {
        if let Some(mut s) = self.clients[idx].sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
            if !rst {
                // open_socket set SO_LINGER 0; a clean close needs it off.
                let _ = SockRef::from(&s).set_linger(None);
            }
        }
        let c = &mut self.clients[idx];
        if c.inbuf.capacity() > 64 * 1024 {
            c.inbuf = Vec::new();
        }
        c.inbuf.clear();
        c.parser = None;
    }

    /// Ends the session; the slot waits up to `gap_ms` before the next one.
    fn idle(&mut self, idx: usize, now: u64, gap_ms: u64) {
        // A consumer that leaves holding an unacknowledged reply: those
        // messages must come again to another consumer.
        let un = std::mem::take(&mut self.clients[idx].unacked);
        if !un.is_empty() {
            self.ledger.vanished(&un);
            self.count("qst_consumer_left_unacked", 1);
        }
        // A push written whole and never answered was marked `Maybe` when
        // its last byte went out; one written in part stays unsent.
        if self.clients[idx].sock.is_some() {
            let rst = self.clients[idx].rst;
            self.close(idx, rst);
        }
        let gap = self.think(idx, 0, gap_ms);
        let c = &mut self.clients[idx];
        c.req = Req::None;
        c.phase = if self.stopping {
            Phase::Off
        } else {
            Phase::Idle
        };
        c.due = now + gap;
    }

    /// Hangs up on purpose; `what` says while doing what.
    fn hang_up(&mut self, idx: usize, now: u64, what: &str) {
        let how = if self.clients[idx].rst { "rst" } else { "fin" };
        let kind = self.clients[idx].kind.name();
        self.count(&format!("hangup_{how}_{what}"), 1);
        self.count(&format!("hangups_{kind}"), 1);
        self.idle(idx, now, 300);
    }

    /// A failure not caused by the client: counted as an error of `kind`.
    fn fail(&mut self, idx: usize, now: u64, key: &str, detail: &str) {
        let proto = self.clients[idx].req.proto();
        let key = format!("err_{key}_{proto}");
        self.error(idx, &key, detail);
        self.clients[idx].rst = true;
        self.idle(idx, now, 500);
    }

    fn build_request(&mut self, idx: usize) -> (Vec<u8>, Req) {
        let kind = self.clients[idx].kind;
        let ch = self.clients[idx].channel;
        match kind {
            Kind::TalkStream => (
                talk_pull_request(&self.clients[idx].name, &self.cfg.talk_channel(ch)),
                Req::TalkPull,
            ),
            Kind::TalkPush => {
                let c = &mut self.clients[idx];
                let msg = format!("soak {} {} & ünï", c.name, c.left);
                let headless = false;
                (
                    talk_push_request(&c.name, &self.cfg.talk_channel(ch), &msg, headless),
                    Req::TalkPush,
                )
            }
            Kind::CometGet => {
                let name = self.cfg.comet_channel(ch);
                if self.clients[idx].req == Req::None {
                    (sync_request(&name), Req::CometSync)
                } else {
                    (get_request(&name, self.clients[idx].cursor), Req::CometGet)
                }
            }
            Kind::CometPut => {
                let c = &mut self.clients[idx];
                c.cursor += 1;
                (
                    put_request(&self.cfg.comet_channel(ch), c.cursor, now_ns()),
                    Req::CometPut,
                )
            }
            Kind::QstProducer => {
                let q = self.my_queues[ch];
                if self.clients[idx].batch.is_empty() {
                    let size = self.clients[idx].rng.range(1, 20);
                    let batch: Vec<u64> = (0..size).map(|_| self.ledger.alloc(q)).collect();
                    self.clients[idx].batch = batch;
                }
                let ids: Vec<String> = self.clients[idx]
                    .batch
                    .iter()
                    .map(|&n| qst_id(&self.cfg.ids, self.cfg.common.index, n))
                    .collect();
                let name = self.cfg.queue_name(q);
                let req = if self.clients[idx].json {
                    qst_json_push(&name, &json_batch(&ids, q))
                } else {
                    qst_xml_push(&name, &xml_batch(&ids, q))
                };
                (req, Req::QstPush)
            }
            Kind::QstConsumer => {
                let q = self.my_queues[ch];
                let c = &mut self.clients[idx];
                let long_poll = !c.rng.chance(10);
                let in_header = c.rng.chance(20);
                let acks = c.unacked.clone();
                (
                    qst_pull(
                        &self.cfg.queue_name(q),
                        c.max,
                        long_poll,
                        c.json,
                        c.etag.as_deref(),
                        in_header,
                    ),
                    Req::QstPull(acks),
                )
            }
        }
    }

    /// Sends the session's next request, or ends it.
    fn next_request(&mut self, idx: usize, now: u64) {
        if self.clients[idx].left == 0 {
            self.count(&format!("clean_end_{}", self.clients[idx].kind.name()), 1);
            self.clients[idx].rst = false;
            return self.idle(idx, now, 300);
        }
        let (out, req) = self.build_request(idx);
        let c = &mut self.clients[idx];
        c.left -= 1;
        c.req = req;
        c.written = 0;
        if c.left == 0 && c.partial_last {
            // Part of the request (head cut short, or the body cut short).
            let cut = c.rng.range(1, out.len() as u64 - 1) as usize;
            c.out = out[..cut].to_vec();
            c.phase = Phase::Partial;
            c.due = now + c.rng.range(0, 200) * MS;
        } else {
            c.out = out;
            c.phase = Phase::Sending;
        }
        self.write(idx, now);
    }

    fn write(&mut self, idx: usize, now: u64) {
        let c = &mut self.clients[idx];
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        let mut done = c.written;
        let res = write_some(sock, &c.out, &mut done);
        c.written = done;
        match res {
            Ok(false) => {}
            Ok(true) => {
                if c.phase == Phase::Sending {
                    c.phase = Phase::Awaiting;
                    c.sent_ns = now_ns();
                    c.due = now + self.cfg.reply_timeout_ns;
                    match &c.req {
                        Req::QstPush => {
                            let b = c.batch.clone();
                            self.ledger.set(&b, Sent::Maybe);
                        }
                        Req::QstPull(acks) => {
                            let a = acks.clone();
                            self.ledger.ack_written(&a);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                if self.clients[idx].phase == Phase::Partial {
                    self.hang_up(idx, now, "mid_request");
                } else {
                    self.fail(idx, now, "write", &e.to_string());
                }
            }
        }
    }

    fn on_event(&mut self, idx: usize, ev: &mio::event::Event, buf: &mut [u8]) {
        if idx >= self.clients.len() || self.clients[idx].sock.is_none() {
            return;
        }
        let now = now_ns();
        if self.clients[idx].phase == Phase::Connecting {
            let sock = self.clients[idx].sock.as_ref().expect("checked");
            match connect_state(sock, ev) {
                Connect::Pending => return,
                Connect::Done => {
                    self.count("connects", 1);
                    self.next_request(idx, now);
                }
                Connect::Failed(why) => {
                    self.clients[idx].req = Req::None;
                    let key = "err_connect";
                    self.error(idx, key, &why);
                    return self.idle(idx, now, 1000);
                }
            }
        }
        if matches!(self.clients[idx].phase, Phase::Sending | Phase::Partial)
            && self.clients[idx].written < self.clients[idx].out.len()
        {
            self.write(idx, now);
        }
        if self.clients[idx].sock.is_some()
            && (ev.is_readable() || ev.is_read_closed() || ev.is_error())
        {
            self.read_all(idx, buf);
        }
    }

    fn read_all(&mut self, idx: usize, buf: &mut [u8]) {
        loop {
            let Some(sock) = self.clients[idx].sock.as_mut() else {
                return;
            };
            match sock.read(buf) {
                Ok(0) => {
                    let now = now_ns();
                    let phase = self.clients[idx].phase;
                    if phase == Phase::Partial {
                        // The server gave up on the cut request: fine.
                        return self.hang_up(idx, now, "mid_request");
                    }
                    let what = match phase {
                        Phase::Streaming => "closed_while_streaming",
                        Phase::Thinking => "closed_while_idle",
                        _ => "closed",
                    };
                    return self.fail(idx, now, what, "the server closed the connection");
                }
                Ok(n) => {
                    self.clients[idx].inbuf.extend_from_slice(&buf[..n]);
                    if !self.take_input(idx) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let now = now_ns();
                    if self.clients[idx].phase == Phase::Partial {
                        return self.hang_up(idx, now, "mid_request");
                    }
                    return self.fail(idx, now, "reset", &e.to_string());
                }
            }
        }
    }

    /// Handles what arrived. False when the session ended.
    fn take_input(&mut self, idx: usize) -> bool {
        let now = now_ns();
        match self.clients[idx].phase {
            Phase::Streaming => return self.stream_input(idx, now),
            Phase::Awaiting => {}
            Phase::Partial => {
                // An error reply to the cut request (e.g. 400): fine, hang up.
                self.hang_up(idx, now, "mid_request");
                return false;
            }
            _ => {
                self.fail(idx, now, "unsolicited", "bytes with no request outstanding");
                return false;
            }
        }
        if self.clients[idx].req == Req::TalkPull {
            let c = &mut self.clients[idx];
            if c.inbuf.len() < HEADLESS_PULL_HEAD.len() {
                if !HEADLESS_PULL_HEAD.starts_with(&c.inbuf) {
                    let got = escape(&c.inbuf, 200);
                    self.fail(idx, now, "status", &format!("pull reply {got}"));
                    return false;
                }
                return true;
            }
            if !c.inbuf.starts_with(HEADLESS_PULL_HEAD) {
                let got = escape(&c.inbuf, 200);
                self.fail(idx, now, "status", &format!("pull reply {got}"));
                return false;
            }
            c.inbuf.drain(..HEADLESS_PULL_HEAD.len());
            c.parser = Some(ChunkParser::new(0));
            c.phase = Phase::Streaming;
            self.count("replies_talk_pull", 1);
            self.count("status_200_talk_pull", 1);
            return self.stream_input(idx, now);
        }
        let head = match parse_response_head(&self.clients[idx].inbuf) {
            Ok(Some(h)) => h,
            Ok(None) => return true,
            Err(e) => {
                self.fail(idx, now, "proto", &e);
                return false;
            }
        };
        let Some(len) = head.content_length.filter(|_| !head.chunked) else {
            self.fail(idx, now, "proto", "reply without Content-Length");
            return false;
        };
        if len > MAX_BODY {
            self.fail(idx, now, "proto", &format!("{len}-byte reply"));
            return false;
        }
        if self.clients[idx].inbuf.len() < head.head_len + len {
            return true;
        }
        if self.clients[idx].inbuf.len() > head.head_len + len {
            self.fail(idx, now, "proto", "bytes after the reply");
            return false;
        }
        let whole = std::mem::take(&mut self.clients[idx].inbuf);
        let (h, body) = whole.split_at(head.head_len);
        let proto = self.clients[idx].req.proto();
        self.count(&format!("replies_{proto}"), 1);
        let st = head.status;
        let status_key = if matches!(st, 200 | 503) {
            format!("status_{st}_{proto}")
        } else {
            format!("status_other_{proto}")
        };
        self.count(&status_key, 1);
        let ok = self.handle_reply(idx, now, st, h, body);
        if ok && head.close {
            self.fail(idx, now, "server_close", "Connection: close");
            return false;
        }
        ok
    }

    /// Between requests: the next one after `wait_ns`.
    fn pause(&mut self, idx: usize, now: u64, wait_ns: u64) -> bool {
        if wait_ns == 0 {
            self.next_request(idx, now);
            return self.clients[idx].sock.is_some();
        }
        let c = &mut self.clients[idx];
        c.phase = Phase::Thinking;
        c.due = now + wait_ns;
        true
    }

    fn stream_input(&mut self, idx: usize, now: u64) -> bool {
        let c = &mut self.clients[idx];
        let data = std::mem::take(&mut c.inbuf);
        let mut records = 0u64;
        let mut noops = 0u64;
        let res = c.parser.as_mut().expect("streaming").feed(&data, |_, rec| {
            if rec == b"noop" {
                noops += 1;
            } else {
                records += 1;
            }
        });
        self.count("talk_records", records);
        self.count("talk_noops", noops);
        match res {
            Ok(crate::chunked::Status::Open) => true,
            Ok(crate::chunked::Status::Ended) => {
                self.fail(idx, now, "stream_ended", "the server ended the stream");
                false
            }
            Err(e) => {
                self.fail(idx, now, "proto", &e.0);
                false
            }
        }
    }

    /// Runs the timers that are due; returns the earliest one left.
    fn timers(&mut self, now: u64) -> u64 {
        let mut next = u64::MAX;
        for idx in 0..self.clients.len() {
            let c = &self.clients[idx];
            if c.phase == Phase::Off {
                continue;
            }
            if c.sock.is_some() && c.abort_at <= now {
                let what = match c.phase {
                    Phase::Connecting => "connecting",
                    Phase::Sending => "sending",
                    Phase::Awaiting => match c.req {
                        Req::QstPull(_) | Req::CometGet => "parked_or_awaiting",
                        _ => "awaiting_reply",
                    },
                    Phase::Streaming => "streaming",
                    Phase::Thinking => "between_requests",
                    Phase::Partial => "mid_request",
                    Phase::Idle | Phase::Off => "idle",
                };
                self.hang_up(idx, now, what);
            } else if self.clients[idx].due <= now {
                match self.clients[idx].phase {
                    Phase::Idle => {
                        if !self.stopping {
                            self.start(idx, now)
                        }
                    }
                    Phase::Thinking => self.next_request(idx, now),
                    Phase::Partial => self.hang_up(idx, now, "mid_request"),
                    Phase::Connecting => self.fail(idx, now, "connect_timeout", "no connection"),
                    Phase::Awaiting => self.fail(idx, now, "timeout", "no reply in time"),
                    Phase::Sending => self.fail(idx, now, "timeout", "request not written in time"),
                    Phase::Streaming | Phase::Off => {
                        self.clients[idx].due = u64::MAX;
                    }
                }
            }
            let c = &self.clients[idx];
            if c.phase != Phase::Off {
                next = next.min(c.due);
                if c.sock.is_some() {
                    next = next.min(c.abort_at);
                }
            }
        }
        next
    }

    fn progress_line(&self, elapsed_s: u64) -> String {
        let active = self.clients.iter().filter(|c| c.sock.is_some()).count();
        let streaming = self
            .clients
            .iter()
            .filter(|c| c.phase == Phase::Streaming)
            .count();
        let parked = self
            .clients
            .iter()
            .filter(|c| {
                c.phase == Phase::Awaiting && matches!(c.req, Req::QstPull(_) | Req::CometGet)
            })
            .count();
        let replies: u64 = self
            .n
            .iter()
            .filter(|(k, _)| k.starts_with("replies_"))
            .map(|(_, v)| v)
            .sum();
        let errors: u64 = self
            .n
            .iter()
            .filter(|(k, _)| k.starts_with("err_"))
            .map(|(_, v)| v)
            .sum();
        let sessions: u64 = self
            .n
            .iter()
            .filter(|(k, _)| k.starts_with("sessions_"))
            .map(|(_, v)| v)
            .sum();
        format!(
            "PROGRESS t={elapsed_s} connected={active} streaming={streaming} waiting={parked} sessions={sessions} replies={replies} errors={errors} qst_ids={}",
            self.ledger.recs.len()
        )
    }

    /// The final consumer: pulls each of this worker's queues with no
    /// long-poll until it is empty, acknowledging every reply.
    fn drain(&mut self) {
        let server = self.cfg.common.server;
        for q in self.my_queues.clone() {
            let name = self.cfg.queue_name(q);
            let mut sock: Option<StdStream> = None;
            let mut etag: Option<String> = None;
            let mut acks: Vec<u64> = Vec::new();
            let mut empty_in_a_row = 0;
            let mut pulls = 0u64;
            let deadline = now_ns() + 120 * SEC;
            while empty_in_a_row < 2 && now_ns() < deadline {
                let req = qst_pull(&name, 1000, false, true, etag.as_deref(), false);
                let sent = now_ns();
                let r = match exchange(server, &mut sock, &req, Duration::from_secs(30)) {
                    Ok(r) => r,
                    Err(e) => {
                        *self.n.entry("err_drain".into()).or_insert(0) += 1;
                        self.say(&format!("drain of queue {q}: {e}"));
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                pulls += 1;
                if r.status != 200 {
                    *self.n.entry("err_drain".into()).or_insert(0) += 1;
                    self.say(&format!("drain of queue {q}: status {}", r.status));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                self.ledger.acked(&acks, now_ns());
                let ids = match pulled_ids(&r.body) {
                    Ok(ids) => ids,
                    Err(e) => {
                        *self.n.entry("err_drain".into()).or_insert(0) += 1;
                        self.say(&format!("drain of queue {q}: {e}"));
                        break;
                    }
                };
                let (run, w) = (self.cfg.ids.clone(), self.cfg.common.index);
                let ns: Vec<Option<u64>> = ids.iter().map(|i| parse_qst_id(i, &run, w)).collect();
                acks = self.ledger.delivered(q, sent, &ns);
                let hdr = header(&r.head, "etag").unwrap_or_default();
                if !hdr.is_empty() {
                    etag = Some(hdr);
                }
                if ids.is_empty() {
                    empty_in_a_row += 1;
                    std::thread::sleep(Duration::from_millis(500));
                } else {
                    empty_in_a_row = 0;
                    *self.n.entry("qst_drained_msgs".into()).or_insert(0) += ids.len() as u64;
                }
            }
            *self.n.entry("qst_drain_pulls".into()).or_insert(0) += pulls;
            if !acks.is_empty() {
                *self.n.entry("err_drain_unacked".into()).or_insert(0) += 1;
            }
        }
    }
}

enum Cmd {
    Stop,
    Other(String),
}

fn parse_cmd(line: &str) -> Cmd {
    if line == "STOP" {
        Cmd::Stop
    } else {
        Cmd::Other(line.to_string())
    }
}

pub fn run(argv: &[String]) -> i32 {
    crate::child::worker_main(
        argv,
        "soak-worker",
        "clients",
        Config::from_args,
        |c| &c.common,
        work,
    )
}

fn work(cfg: Config) -> io::Result<()> {
    let poll = Poll::new()?;
    let rx = read_commands(&poll, parse_cmd, Cmd::Stop)?;
    let base = cfg.seed.wrapping_mul(1_000_003) ^ ((cfg.common.index as u64) << 40);
    let my_queues = cfg.my_queues();
    if my_queues.is_empty() {
        return Err(io::Error::other(
            "this worker owns no queue (--queues < --procs)",
        ));
    }
    let clients = (0..cfg.common.count)
        .map(|i| {
            let mut rng = Rng::new(base ^ (cfg.common.offset + i) as u64);
            // Spread the first sessions over the first two seconds.
            let due = now_ns() + rng.range(0, 2000) * MS;
            Client {
                rng,
                session: 0,
                kind: Kind::TalkStream,
                phase: Phase::Idle,
                sock: None,
                due,
                abort_at: u64::MAX,
                rst: false,
                left: 0,
                partial_last: false,
                out: Vec::new(),
                written: 0,
                inbuf: Vec::new(),
                req: Req::None,
                sent_ns: 0,
                channel: 0,
                name: String::new(),
                parser: None,
                cursor: 0,
                json: false,
                etag: None,
                unacked: Vec::new(),
                batch: Vec::new(),
                max: 10,
            }
        })
        .collect();
    let mut w = Worker {
        cfg,
        poll,
        clients,
        ledger: Ledger::default(),
        my_queues,
        n: BTreeMap::new(),
        stopping: false,
    };
    send(&format!("READY up={} failed=0", w.clients.len()));
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let start = now_ns();
    let mut next_progress = start + 5 * SEC;
    let mut next_timer = 0u64;
    loop {
        let now = now_ns();
        if now >= next_timer {
            next_timer = w.timers(now).max(now + 2 * MS);
        }
        if now >= next_progress {
            next_progress = now + 5 * SEC;
            send(&w.progress_line((now - start) / SEC));
        }
        let timeout = next_timer.min(next_progress).saturating_sub(now_ns());
        wait(&mut w.poll, &mut events, timeout.min(100 * MS))?;
        let woke = dispatch(&events, |idx, ev| w.on_event(idx, ev, &mut buf));
        if woke {
            let mut stop = false;
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::Stop => stop = true,
                    Cmd::Other(l) => w.say(&format!("unknown command {l:?}")),
                }
            }
            if stop {
                break;
            }
        }
    }
    // Every client leaves: half with an RST, half with a FIN, whatever it was doing.
    w.stopping = true;
    let now = now_ns();
    for idx in 0..w.clients.len() {
        if w.clients[idx].sock.is_some() {
            let r = w.clients[idx].rng.chance(50);
            w.clients[idx].rst = r;
            w.hang_up(idx, now, "at_stop");
        }
        w.clients[idx].phase = Phase::Off;
    }
    drop(events);
    // Let the server finish what it read before the hang-ups, then drain.
    std::thread::sleep(Duration::from_millis(1000));
    w.drain();
    let mut line = String::from("DONE");
    let mut all = w.n.clone();
    for (k, v) in w.ledger.totals() {
        all.insert(k.to_string(), v);
    }
    for (k, v) in &all {
        line.push_str(&format!(" {k}={v}"));
    }
    send(&line);
    Ok(())
}
