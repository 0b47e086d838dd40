//! The hidden `xmpp-worker` subcommand: one child process of `xmpp-idle` and
//! `xmpp-ping` that logs its share of the XMPP sessions in (header, SASL
//! PLAIN, restart, bind with resource `lt-<run>-<index>`, checked, session),
//! holds them with one mio `Poll`, and on request pings the server from every
//! session, one ping outstanding per session.
//!
//! Parent → worker (stdin), one command a line:
//!   `PING <t0_ns> <t1_ns>`  ping from now until t1; count the round trips sent at or
//!                          after t0 and answered by t1; then report
//!   `QUIT`                 report final counters and exit (also on stdin EOF)
//! Worker → parent (stdout), one message a line:
//!   `PROGRESS up=… failed=… inflight=… retries=…`   about once a second while logging in
//!   `READY up=… failed=… retries=… connect_ms=… hist=<login µs>`   every session is up or failed
//!   `PINGED sent=… answered=… counted=… errors=… unanswered=… hist=<round trip µs>`
//!   `BYE live=… closed=… unexpected=…`
//! Human-readable problems go to stderr, prefixed `[xmpp-worker N]`.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read};

use mio::event::Event as MioEvent;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Args;
use crate::bosh;
use crate::child::{
    backoff_ms, bump, connect_state, dispatch, open_socket, read_commands, reason_list, send,
    send_progress, wait, write_some, Common, Connect, StartQueue, COMMON_OPTIONS, PRINT_LIMIT,
};
use crate::fanout::{self, Expect, FanCmd};
use crate::hist::Hist;
use crate::http::escape;
use crate::sys::now_ns;
use crate::xmpp::{self, attr, name, Event, Login, Next, Splitter, Step};

pub struct Config {
    pub common: Common,
    pub user: String,
    pub password: String,
    pub domain: String,
    pub run_id: String,
    /// `--subscribe NODE`: each session subscribes to this PubSub node once
    /// bound, and watches for the fan-out events on it.
    pub subscribe: Option<String>,
    /// `--bosh-wait SECS`: over BOSH (`POST /http-bind` on an HTTP port) instead of
    /// a TCP stream, asking the server to hold a request this long.
    pub bosh_wait: Option<u64>,
}

impl Config {
    pub fn from_args(argv: &[String]) -> Result<Config, String> {
        let names = [
            &COMMON_OPTIONS[..],
            &[
                "sessions",
                "user",
                "password",
                "domain",
                "run-id",
                "subscribe",
                "bosh-wait",
            ],
        ]
        .concat();
        let a = Args::parse(argv, &names, &[])?;
        Ok(Config {
            common: Common::from_args(&a, "sessions")?,
            user: a.str_or("user", "user"),
            password: a.str_or("password", "secret"),
            domain: a.str_or("domain", "localhost"),
            run_id: a.str_or("run-id", "x"),
            subscribe: a.get("subscribe").map(str::to_string),
            bosh_wait: a.opt_num("bosh-wait")?,
        })
    }
}

/// The resource session `global` of run `run_id` binds.
pub fn resource(run_id: &str, global: usize) -> String {
    format!("lt-{run_id}-{global}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    /// Connected; logging in, waiting for this step.
    Login(Step),
    Up,
    /// Was up; the server ended it or the connection broke.
    Closed,
    Failed,
}

impl Phase {
    fn in_flight(self) -> bool {
        matches!(self, Phase::Connecting | Phase::Login(_))
    }
}

struct Conn {
    sock: Option<TcpStream>,
    phase: Phase,
    attempts: u32,
    started_ns: u64,
    split: Splitter,
    /// The full JID once bound (what a PubSub event's `to` must be).
    jid: Box<[u8]>,
    /// Over BOSH: the session's side of its HTTP connection.
    bosh: Option<Box<bosh::Link>>,
    /// Bytes to write, and how many of them are written.
    out: Vec<u8>,
    out_done: usize,
    /// The id of the ping in flight (0: none) and when it was written.
    ping_id: u64,
    ping_ns: u64,
}

/// The ping run under way.
struct Pinging {
    t0: u64,
    t1: u64,
    sent: u64,
    answered: u64,
    counted: u64,
    errors: u64,
    hist: Hist,
    /// Past t1: no new pings, waiting for the outstanding ones until this.
    drain_until: u64,
}

enum Cmd {
    Ping(u64, u64),
    Fan(FanCmd),
    Quit,
    Bad(String),
}

fn parse_cmd(line: &str) -> Cmd {
    if let Some(c) = fanout::parse_cmd(line) {
        return Cmd::Fan(c);
    }
    let mut w = line.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("PING"), Some(a), Some(b)) => match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) => Cmd::Ping(a, b),
            _ => Cmd::Bad(line.to_string()),
        },
        (Some("QUIT"), None, None) => Cmd::Quit,
        _ => Cmd::Bad(line.to_string()),
    }
}

/// The `rid` of a BOSH session's first request.
const FIRST_RID: u64 = 1_000;

/// How long outstanding pings may take after the end of a ping run.
const DRAIN_NS: u64 = 5_000_000_000;

struct Worker {
    cfg: Config,
    poll: Poll,
    conns: Vec<Conn>,
    queue: StartQueue,
    inflight: usize,
    up: usize,
    failed: usize,
    closed: usize,
    retries: usize,
    unexpected: usize,
    login_hist: Hist,
    fail_reasons: BTreeMap<String, usize>,
    retry_reasons: BTreeMap<String, usize>,
    close_reasons: BTreeMap<String, usize>,
    pinging: Option<Pinging>,
    /// The fan-out event being watched for (`--subscribe`).
    expect: Option<Expect>,
    next_ping_id: u64,
    started_ns: u64,
    ready_sent: bool,
}

impl Worker {
    fn new(cfg: Config) -> io::Result<Worker> {
        let conns = (0..cfg.common.count)
            .map(|_| Conn {
                sock: None,
                phase: Phase::Idle,
                attempts: 0,
                started_ns: 0,
                split: Splitter::new(),
                jid: Box::default(),
                bosh: None,
                out: Vec::new(),
                out_done: 0,
                ping_id: 0,
                ping_ns: 0,
            })
            .collect();
        Ok(Worker {
            queue: StartQueue::new(cfg.common.count),
            conns,
            poll: Poll::new()?,
            cfg,
            inflight: 0,
            up: 0,
            failed: 0,
            closed: 0,
            retries: 0,
            unexpected: 0,
            login_hist: Hist::new(),
            fail_reasons: BTreeMap::new(),
            retry_reasons: BTreeMap::new(),
            close_reasons: BTreeMap::new(),
            pinging: None,
            expect: None,
            next_ping_id: 1,
            started_ns: now_ns(),
            ready_sent: false,
        })
    }

    fn say(&self, msg: &str) {
        eprintln!("[xmpp-worker {}] {msg}", self.cfg.common.index);
    }

    fn global(&self, idx: usize) -> usize {
        self.cfg.common.offset + idx
    }

    fn start(&mut self, idx: usize) {
        let src = self.cfg.common.source(idx);
        self.conns[idx].attempts += 1;
        match open_socket(src, self.cfg.common.server) {
            Ok(mut sock) => {
                if let Err(e) = self.poll.registry().register(
                    &mut sock,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.attempt_failed(idx, &format!("register: {e}"), true);
                    return;
                }
                let c = &mut self.conns[idx];
                c.sock = Some(sock);
                c.phase = Phase::Connecting;
                c.started_ns = now_ns();
                c.split = Splitter::new();
                c.out.clear();
                c.out_done = 0;
                self.inflight += 1;
            }
            Err(e) => self.attempt_failed(idx, &format!("connect from {src}: {e}"), true),
        }
    }

    fn drop_socket(&mut self, idx: usize) {
        if let Some(mut s) = self.conns[idx].sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        let c = &mut self.conns[idx];
        c.out = Vec::new();
        c.out_done = 0;
        c.split = Splitter::new();
        c.bosh = None;
    }

    fn attempt_failed(&mut self, idx: usize, why: &str, retryable: bool) {
        self.drop_socket(idx);
        let c = &mut self.conns[idx];
        if c.phase.in_flight() {
            self.inflight -= 1;
        }
        c.phase = Phase::Idle;
        let attempts = c.attempts;
        if retryable && attempts <= self.cfg.common.retries {
            self.retries += 1;
            self.queue
                .retry_at(now_ns() + backoff_ms(attempts) * 1_000_000, idx);
            if bump(&mut self.retry_reasons, why) <= 2 {
                self.say(&format!(
                    "session {} attempt {attempts} failed ({why}); retrying",
                    self.global(idx)
                ));
            }
        } else {
            self.conns[idx].phase = Phase::Failed;
            self.failed += 1;
            if bump(&mut self.fail_reasons, why) <= PRINT_LIMIT {
                self.say(&format!(
                    "session {} FAILED after {attempts} attempt(s): {why}",
                    self.global(idx)
                ));
            }
        }
    }

    fn session_closed(&mut self, idx: usize, why: &str) {
        if self.conns[idx].ping_id != 0 {
            self.conns[idx].ping_id = 0;
        }
        self.drop_socket(idx);
        self.conns[idx].phase = Phase::Closed;
        self.closed += 1;
        if let Some(x) = self.expect.as_mut() {
            x.closed(idx);
        }
        if bump(&mut self.close_reasons, why) <= PRINT_LIMIT {
            self.say(&format!("session {} (up) CLOSED: {why}", self.global(idx)));
        }
    }

    fn conn_lost(&mut self, idx: usize, why: &str) {
        match self.conns[idx].phase {
            Phase::Up => self.session_closed(idx, why),
            p if p.in_flight() => self.attempt_failed(idx, why, true),
            _ => {}
        }
    }

    /// Sends stanzas: as they are on a stream, in the next request over BOSH.
    fn send_payload(&mut self, idx: usize, payload: &[u8]) {
        match self.conns[idx].bosh.as_mut() {
            Some(link) => {
                let req = link.send(payload);
                self.send_bytes(idx, &req);
            }
            None => self.send_bytes(idx, payload),
        }
    }

    /// Queues `bytes` and writes what the socket takes.
    fn send_bytes(&mut self, idx: usize, bytes: &[u8]) {
        let c = &mut self.conns[idx];
        if c.out_done == c.out.len() {
            c.out.clear();
            c.out_done = 0;
        }
        c.out.extend_from_slice(bytes);
        self.flush(idx);
    }

    fn flush(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        if c.out_done == c.out.len() {
            return;
        }
        if let Err(e) = write_some(sock, &c.out, &mut c.out_done) {
            self.conn_lost(idx, &format!("write: {e}"));
        }
    }

    fn on_event(&mut self, idx: usize, ev: &MioEvent, buf: &mut [u8]) {
        if idx >= self.conns.len() {
            return;
        }
        if self.conns[idx].phase == Phase::Connecting {
            let Some(sock) = self.conns[idx].sock.as_ref() else {
                return;
            };
            match connect_state(sock, ev) {
                Connect::Pending => return,
                Connect::Done => {
                    self.conns[idx].phase = Phase::Login(Step::Features);
                    let first = match self.cfg.bosh_wait {
                        Some(wait) => {
                            let mut link = Box::new(bosh::Link::new(FIRST_RID));
                            let req = link.create(&self.cfg.domain, wait);
                            self.conns[idx].bosh = Some(link);
                            req
                        }
                        None => xmpp::header(&self.cfg.domain),
                    };
                    self.send_bytes(idx, &first);
                }
                Connect::Failed(why) => {
                    self.attempt_failed(idx, &why, true);
                    return;
                }
            }
        }
        if ev.is_writable() {
            self.flush(idx);
        }
        if matches!(self.conns[idx].phase, Phase::Login(_) | Phase::Up) {
            self.read_all(idx, buf);
        }
    }

    /// Reads until `WouldBlock` (mio is edge-triggered).
    fn read_all(&mut self, idx: usize, buf: &mut [u8]) {
        loop {
            let Some(sock) = self.conns[idx].sock.as_mut() else {
                return;
            };
            match sock.read(buf) {
                Ok(0) => {
                    let why = match self.conns[idx].phase {
                        Phase::Login(s) => format!("closed by the server at {s:?}"),
                        _ => "closed by the server".to_string(),
                    };
                    self.conn_lost(idx, &why);
                    return;
                }
                Ok(n) => {
                    let now = now_ns();
                    let mut evs = Vec::new();
                    let c = &mut self.conns[idx];
                    let res = match c.bosh.as_mut() {
                        Some(link) => link.feed(&buf[..n], |e| evs.push(e)),
                        None => c.split.feed(&buf[..n], |e| evs.push(e)).map(|()| 0),
                    };
                    for e in evs {
                        if !self.on_xmpp(idx, e, now) {
                            return;
                        }
                    }
                    match res {
                        Err(why) => {
                            self.fail_or_close(idx, &format!("unreadable stream: {why}"));
                            return;
                        }
                        // The held request was answered (or, just up, the login's last
                        // one): the next one for the server to hold.
                        Ok(answers) if answers > 0 && self.conns[idx].phase == Phase::Up => {
                            self.send_payload(idx, b"");
                        }
                        Ok(_) => {}
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn_lost(idx, &e.to_string());
                    return;
                }
            }
        }
    }

    /// A failure the server's answer caused: final while logging in.
    fn fail_or_close(&mut self, idx: usize, why: &str) {
        match self.conns[idx].phase {
            Phase::Up => self.session_closed(idx, why),
            p if p.in_flight() => self.attempt_failed(idx, why, false),
            _ => {}
        }
    }

    /// One event of session `idx`'s stream; false once it is no longer open.
    fn on_xmpp(&mut self, idx: usize, ev: Event, now: u64) -> bool {
        match self.conns[idx].phase {
            Phase::Login(step) => {
                let res = resource(&self.cfg.run_id, self.global(idx));
                let login = Login {
                    user: &self.cfg.user,
                    password: &self.cfg.password,
                    domain: &self.cfg.domain,
                    resource: &res,
                    subscribe: self.cfg.subscribe.as_deref(),
                };
                match login.on(step, &ev) {
                    Next::Send(bytes, next) => {
                        self.conns[idx].phase = Phase::Login(next);
                        match self.conns[idx].bosh.as_mut() {
                            // over BOSH a stream restart is a request attribute
                            Some(link) if next == Step::Restarted => {
                                let req = link.restart(&self.cfg.domain);
                                self.send_bytes(idx, &req);
                            }
                            _ => self.send_payload(idx, &bytes),
                        }
                    }
                    Next::Wait => {}
                    Next::Up => {
                        let jid = login.jid().into_bytes().into_boxed_slice();
                        let c = &mut self.conns[idx];
                        c.phase = Phase::Up;
                        c.jid = jid;
                        self.login_hist.record((now - c.started_ns) / 1000);
                        self.up += 1;
                        self.inflight -= 1;
                    }
                    Next::Fail(why) => {
                        self.attempt_failed(idx, &why, false);
                        return false;
                    }
                }
                matches!(self.conns[idx].phase, Phase::Login(_) | Phase::Up)
            }
            Phase::Up => match ev {
                Event::Header => true,
                Event::End => {
                    self.session_closed(idx, "the server ended the stream");
                    false
                }
                Event::Stanza(st) => {
                    let c = &self.conns[idx];
                    let is_ping_reply = name(&st) == b"iq"
                        && c.ping_id != 0
                        && attr(&st, "id") == Some(c.ping_id.to_string().as_bytes());
                    if is_ping_reply {
                        self.ping_answered(idx, attr(&st, "type") == Some(b"result"), now);
                    } else if self.is_fanout_event(idx, &st, now) {
                        // noted for the fan-out result
                    } else if name(&st) == b"stream:error" {
                        self.session_closed(idx, &format!("stream error: {}", escape(&st, 200)));
                        return false;
                    } else {
                        self.unexpected += 1;
                        if self.unexpected <= PRINT_LIMIT {
                            self.say(&format!(
                                "session {}: unexpected {}",
                                self.global(idx),
                                escape(&st, 200)
                            ));
                        }
                    }
                    self.conns[idx].phase == Phase::Up
                }
            },
            _ => false,
        }
    }

    /// Whether `st` is the watched fan-out event for session `idx` (noted as
    /// arrived at `now`): on the subscribed node, to this session's JID.
    fn is_fanout_event(&mut self, idx: usize, st: &[u8], now: u64) -> bool {
        let (Some(x), Some(node)) = (self.expect.as_mut(), self.cfg.subscribe.as_deref()) else {
            return false;
        };
        let Some(ev) = xmpp::pubsub_event(st) else {
            return false;
        };
        if ev.body != x.token.as_slice() || ev.node != node.as_bytes() {
            return false;
        }
        if ev.to != &*self.conns[idx].jid {
            return false;
        }
        x.hit(idx, now);
        true
    }

    fn send_ping(&mut self, idx: usize, now: u64) {
        let id = self.next_ping_id;
        self.next_ping_id += 1;
        let c = &mut self.conns[idx];
        c.ping_id = id;
        c.ping_ns = now;
        if let Some(p) = self.pinging.as_mut() {
            p.sent += 1;
        }
        self.send_payload(idx, &xmpp::ping(id));
    }

    fn ping_answered(&mut self, idx: usize, ok: bool, now: u64) {
        let sent_ns = self.conns[idx].ping_ns;
        self.conns[idx].ping_id = 0;
        let Some(p) = self.pinging.as_mut() else {
            return;
        };
        p.answered += 1;
        if !ok {
            p.errors += 1;
            return;
        }
        if sent_ns >= p.t0 && now <= p.t1 {
            p.counted += 1;
            p.hist.record((now - sent_ns) / 1000);
        }
        if now < p.t1 {
            self.send_ping(idx, now);
        }
    }

    /// Reports the ping run once every ping is answered or the drain is over;
    /// returns the time left to wait.
    fn check_pinging(&mut self) -> Option<u64> {
        let p = self.pinging.as_mut()?;
        let now = now_ns();
        if now < p.t1 {
            return Some(p.t1 - now);
        }
        if p.drain_until == 0 {
            p.drain_until = now + DRAIN_NS;
        }
        let outstanding = self
            .conns
            .iter()
            .filter(|c| c.phase == Phase::Up && c.ping_id != 0)
            .count();
        if outstanding > 0 && now < p.drain_until {
            return Some(p.drain_until - now);
        }
        send(&format!(
            "PINGED sent={} answered={} counted={} errors={} unanswered={outstanding} hist={}",
            p.sent,
            p.answered,
            p.counted,
            p.errors,
            p.hist.encode()
        ));
        self.pinging = None;
        None
    }

    fn fill(&mut self) {
        let now = now_ns();
        let max = self.cfg.common.inflight;
        while let Some(idx) = self.queue.next(now, self.inflight, max, |_| false) {
            self.start(idx);
        }
    }

    fn check_timeouts(&mut self) {
        let now = now_ns();
        let limit = self.cfg.common.connect_timeout_ns;
        let late: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.phase.in_flight() && now.saturating_sub(c.started_ns) > limit)
            .map(|(i, _)| i)
            .collect();
        for idx in late {
            let what = match self.conns[idx].phase {
                Phase::Connecting => "connect timed out".to_string(),
                Phase::Login(s) => format!("no answer in time at {s:?}"),
                _ => "timed out".to_string(),
            };
            self.attempt_failed(idx, &what, true);
        }
    }

    fn connecting_done(&self) -> bool {
        self.queue.is_empty() && self.inflight == 0
    }

    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Ping(t0, t1) => {
                self.pinging = Some(Pinging {
                    t0,
                    t1,
                    sent: 0,
                    answered: 0,
                    counted: 0,
                    errors: 0,
                    hist: Hist::new(),
                    drain_until: 0,
                });
                let now = now_ns();
                let up: Vec<usize> = (0..self.conns.len())
                    .filter(|&i| self.conns[i].phase == Phase::Up)
                    .collect();
                for idx in up {
                    self.send_ping(idx, now);
                }
            }
            Cmd::Quit => {
                if !self.close_reasons.is_empty() {
                    self.say(&format!("closed: {}", reason_list(&self.close_reasons)));
                }
                send(&format!(
                    "BYE live={} closed={} unexpected={}",
                    self.up - self.closed,
                    self.closed,
                    self.unexpected
                ));
                return false;
            }
            Cmd::Fan(c) => {
                let up = self.conns.iter().map(|c| c.phase == Phase::Up);
                fanout::handle(&mut self.expect, c, up);
            }
            Cmd::Bad(line) => self.say(&format!("unknown command {line:?}")),
        }
        true
    }
}

/// Runs a worker; returns the process exit code.
pub fn run(argv: &[String]) -> i32 {
    crate::child::worker_main(
        argv,
        "xmpp-worker",
        "sessions",
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
    let mut last_timeout_scan = now_ns();
    loop {
        w.fill();
        let connecting = !w.connecting_done();
        let mut timeout_ns: u64 = if connecting {
            if w.queue.has_retries() {
                5_000_000
            } else {
                100_000_000
            }
        } else {
            500_000_000
        };
        if let Some(left) = w.check_pinging() {
            timeout_ns = timeout_ns.min(left);
        }
        if let Some(left) = fanout::check(&mut w.expect, now_ns()) {
            timeout_ns = timeout_ns.min(left);
        }
        wait(&mut w.poll, &mut events, timeout_ns)?;
        let woke = dispatch(&events, |idx, ev| w.on_event(idx, ev, &mut buf));
        fanout::check(&mut w.expect, now_ns());
        if woke {
            while let Ok(cmd) = rx.try_recv() {
                if !w.handle(cmd) {
                    return Ok(());
                }
            }
        }
        let now = now_ns();
        if connecting {
            if now - last_timeout_scan > 250_000_000 {
                last_timeout_scan = now;
                w.check_timeouts();
            }
            if now - last_progress > 1_000_000_000 {
                last_progress = now;
                send_progress(w.up, w.failed, w.inflight, w.retries);
            }
        }
        if !w.ready_sent && w.connecting_done() {
            w.ready_sent = true;
            send(&format!(
                "READY up={} failed={} retries={} connect_ms={} hist={}",
                w.up,
                w.failed,
                w.retries,
                (now - w.started_ns) / 1_000_000,
                w.login_hist.encode()
            ));
            for (what, map) in [("failures", &w.fail_reasons), ("retried", &w.retry_reasons)] {
                if !map.is_empty() {
                    w.say(&format!("{what}: {}", reason_list(map)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert!(matches!(parse_cmd("PING 5 9"), Cmd::Ping(5, 9)));
        assert!(matches!(parse_cmd("PING 5"), Cmd::Bad(_)));
        assert!(matches!(parse_cmd("PING x 9"), Cmd::Bad(_)));
        assert!(matches!(parse_cmd("QUIT"), Cmd::Quit));
        assert!(matches!(parse_cmd("HELLO"), Cmd::Bad(_)));
    }

    #[test]
    fn resources_are_unique() {
        assert_eq!(resource("ab", 7), "lt-ab-7");
        assert_ne!(resource("ab", 7), resource("ab", 70));
    }
}
