//! The hidden `worker` subcommand: one child process that opens its share of
//! the idle Talk streams, watches them all with one mio `Poll`, and notes when
//! each stream receives the fan-out messages the parent announces.
//!
//! Parent → worker (stdin), one command a line:
//!   `ARM <token>`                      start watching for a record equal to `<token>`
//!   `COLLECT <token> <t0_ns> <deadline_ns>`  report once every armed stream has it, or at the deadline
//!   `SERIES <total>`, `SCOLLECT <deadline_ns>`  the same for a back-to-back series (`series`)
//!   `QUIT`                             report final counters and exit (also on stdin EOF)
//! Worker → parent (stdout), one message a line:
//!   `PROGRESS up=… failed=… inflight=… retries=…`        about once a second while connecting
//!   `READY up=… failed=… head_notes=… retries=… connect_ms=…`   every stream is up or has failed
//!   `ARMED <token> expected=…`
//!   `RESULT <token> expected=… received=… gone=… dups=… lat_us=<comma-separated>`
//!   `ARMED series expected=…`, `SRESULT expected=… deliveries=… lost=… dups=… … hist=…`
//!   `BYE live=… closed=… keepalives=… min_keepalives=… unexpected=… proto_errors=…`
//! Human-readable problems go to stderr, prefixed `[worker N]`.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Args;
use crate::child::{
    backoff_ms, bump, connect_state, dispatch, open_socket, read_commands, reason_list, send,
    send_progress, wait, write_some, Common, Connect, StartQueue, COMMON_OPTIONS, PRINT_LIMIT,
};
use crate::chunked::{ChunkParser, Status};
use crate::fanout::{self, Expect, FanCmd};
use crate::http::{
    check_pull_head, escape, head_end, nchan_chunked_request, pull_request, MAX_HEAD,
};
use crate::nchan_sub::{sub_request, SubParser, Transport};
use crate::series::{self, Series, SeriesCmd};
use crate::sys::now_ns;

pub struct Config {
    pub common: Common,
    pub channel: String,
    pub run_id: String,
    pub term: u8,
    /// `--dialect nchan`: nginx + nchan `http-chunked` subscribers instead of
    /// Talk streams (for comparison; see `talk_idle`'s usage).
    pub nchan: bool,
    /// `--transport`: subscribers of nchan's `/sub/{channel}` API (tidings and
    /// nginx + nchan alike) over this transport instead of Talk or `/pull` streams.
    pub transport: Option<Transport>,
}

impl Config {
    pub fn from_args(argv: &[String]) -> Result<Config, String> {
        let names = [
            &COMMON_OPTIONS[..],
            &[
                "streams",
                "channel",
                "run-id",
                "terminator",
                "dialect",
                "transport",
            ],
        ]
        .concat();
        let a = Args::parse(argv, &names, &[])?;
        Ok(Config {
            common: Common::from_args(&a, "streams")?,
            channel: a.str_or("channel", "loadtest"),
            run_id: a.str_or("run-id", "x"),
            term: crate::parse_terminator(&a.str_or("terminator", "nul"))?,
            nchan: crate::idle::parse_dialect(&a.str_or("dialect", "talk"))?,
            transport: a.get("transport").map(Transport::parse).transpose()?,
        })
    }
}

/// The name of stream `global` of run `run_id`.
pub fn stream_name(run_id: &str, global: usize) -> String {
    format!("lt-{run_id}-{global}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started, or waiting for a retry.
    Idle,
    Connecting,
    /// Connected; this many request bytes written.
    Writing(usize),
    /// Reading the reply head.
    Head,
    /// Head read; waiting for the first `noop` record.
    FirstNoop,
    Up,
    /// Was up; the server ended it or the connection broke.
    Closed,
    /// Never came up.
    Failed,
}

impl Phase {
    fn in_flight(self) -> bool {
        matches!(
            self,
            Phase::Connecting | Phase::Writing(_) | Phase::Head | Phase::FirstNoop
        )
    }
}

struct Conn {
    sock: Option<TcpStream>,
    phase: Phase,
    attempts: u32,
    started_ns: u64,
    /// Reply head bytes gathered over several reads (rare).
    head: Vec<u8>,
    parser: ChunkParser,
    /// With `--transport`: the `/sub/` reader, used instead of `parser`.
    sub: Option<SubParser>,
    /// Keep-alive `noop` records after the first one.
    noops: u32,
}

enum Cmd {
    Fan(FanCmd),
    Series(SeriesCmd),
    Quit,
    Bad(String),
}

fn parse_cmd(line: &str) -> Cmd {
    if let Some(c) = fanout::parse_cmd(line) {
        return Cmd::Fan(c);
    }
    if let Some(c) = series::parse_cmd(line) {
        return Cmd::Series(c);
    }
    match line.trim() {
        "QUIT" => Cmd::Quit,
        _ => Cmd::Bad(line.to_string()),
    }
}

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
    head_notes: usize,
    proto_errors: usize,
    unexpected: usize,
    fail_reasons: BTreeMap<String, usize>,
    retry_reasons: BTreeMap<String, usize>,
    close_reasons: BTreeMap<String, usize>,
    expect: Option<Expect>,
    series: Option<Series>,
    started_ns: u64,
    ready_sent: bool,
}

fn reason(e: &io::Error) -> String {
    e.to_string()
}

impl Worker {
    fn new(cfg: Config) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let conns = (0..cfg.common.count)
            .map(|_| Conn {
                sock: None,
                phase: Phase::Idle,
                attempts: 0,
                started_ns: 0,
                head: Vec::new(),
                parser: ChunkParser::new(cfg.term),
                sub: None,
                noops: 0,
            })
            .collect();
        Ok(Worker {
            queue: StartQueue::new(cfg.common.count),
            conns,
            poll,
            cfg,
            inflight: 0,
            up: 0,
            failed: 0,
            closed: 0,
            retries: 0,
            head_notes: 0,
            proto_errors: 0,
            unexpected: 0,
            fail_reasons: BTreeMap::new(),
            retry_reasons: BTreeMap::new(),
            close_reasons: BTreeMap::new(),
            expect: None,
            series: None,
            started_ns: now_ns(),
            ready_sent: false,
        })
    }

    fn say(&self, msg: &str) {
        eprintln!("[worker {}] {msg}", self.cfg.common.index);
    }

    fn request(&self, idx: usize) -> Vec<u8> {
        let name = stream_name(&self.cfg.run_id, self.cfg.common.offset + idx);
        if let Some(t) = self.cfg.transport {
            // nchan's API has no stream names
            sub_request(t, &self.cfg.channel)
        } else if self.cfg.nchan {
            nchan_chunked_request(&name, &self.cfg.channel)
        } else {
            pull_request(&name, &self.cfg.channel)
        }
    }

    fn live(&self) -> usize {
        self.up - self.closed
    }

    /// Starts (or restarts) the connect of stream `idx`.
    fn start(&mut self, idx: usize) {
        let src = self.cfg.common.source(idx);
        let server = self.cfg.common.server;
        self.conns[idx].attempts += 1;
        match open_socket(src, server) {
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
                c.head.clear();
                c.parser = ChunkParser::new(self.cfg.term);
                c.sub = self
                    .cfg
                    .transport
                    .map(|t| SubParser::new(t, &self.cfg.channel));
                self.inflight += 1;
            }
            Err(e) => {
                self.attempt_failed(idx, &format!("connect from {src}: {}", reason(&e)), true)
            }
        }
    }

    fn drop_socket(&mut self, idx: usize) {
        if let Some(mut s) = self.conns[idx].sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    /// An attempt to bring stream `idx` up failed.
    fn attempt_failed(&mut self, idx: usize, why: &str, retryable: bool) {
        self.drop_socket(idx);
        let c = &mut self.conns[idx];
        if c.phase.in_flight() {
            self.inflight -= 1;
        }
        c.phase = Phase::Idle;
        if retryable && c.attempts <= self.cfg.common.retries {
            self.retries += 1;
            self.queue
                .retry_at(now_ns() + backoff_ms(c.attempts) * 1_000_000, idx);
            if bump(&mut self.retry_reasons, why) <= 2 {
                self.say(&format!(
                    "stream {} attempt {} failed ({why}); retrying",
                    self.cfg.common.offset + idx,
                    self.conns[idx].attempts
                ));
            }
        } else {
            self.conns[idx].phase = Phase::Failed;
            self.failed += 1;
            if bump(&mut self.fail_reasons, why) <= PRINT_LIMIT {
                self.say(&format!(
                    "stream {} FAILED after {} attempt(s): {why}",
                    self.cfg.common.offset + idx,
                    self.conns[idx].attempts
                ));
            }
        }
    }

    /// A stream that was up ended.
    fn stream_closed(&mut self, idx: usize, why: &str) {
        self.drop_socket(idx);
        self.conns[idx].phase = Phase::Closed;
        self.closed += 1;
        if let Some(x) = self.expect.as_mut() {
            x.closed(idx);
        }
        if let Some(s) = self.series.as_mut() {
            s.closed(idx);
        }
        if bump(&mut self.close_reasons, why) <= PRINT_LIMIT {
            self.say(&format!(
                "stream {} (up) CLOSED: {why}",
                self.cfg.common.offset + idx
            ));
        }
    }

    /// Something went wrong on the connection of `idx`: retry if it was
    /// still coming up, count it closed if it was up.
    fn conn_lost(&mut self, idx: usize, why: &str) {
        match self.conns[idx].phase {
            Phase::Up => self.stream_closed(idx, why),
            p if p.in_flight() => self.attempt_failed(idx, why, true),
            _ => {}
        }
    }

    /// A protocol violation on `idx`: not retried.
    fn proto_error(&mut self, idx: usize, why: &str) {
        self.proto_errors += 1;
        match self.conns[idx].phase {
            Phase::Up => self.stream_closed(idx, &format!("protocol error: {why}")),
            _ => self.attempt_failed(idx, &format!("protocol error: {why}"), false),
        }
    }

    fn on_event(&mut self, idx: usize, ev: &Event, buf: &mut [u8]) {
        if idx >= self.conns.len() {
            return;
        }
        if self.conns[idx].phase == Phase::Connecting {
            let Some(sock) = self.conns[idx].sock.as_ref() else {
                return;
            };
            match connect_state(sock, ev) {
                Connect::Pending => return,
                Connect::Done => self.conns[idx].phase = Phase::Writing(0),
                Connect::Failed(why) => {
                    self.attempt_failed(idx, &why, true);
                    return;
                }
            }
        }
        if let Phase::Writing(done) = self.conns[idx].phase {
            let req = self.request(idx);
            let mut done = done;
            let sock = self.conns[idx]
                .sock
                .as_mut()
                .expect("socket of a connected stream");
            let outcome = write_some(sock, &req, &mut done).and_then(|complete| {
                if complete {
                    self.poll
                        .registry()
                        .reregister(sock, Token(idx), Interest::READABLE)?;
                }
                Ok(complete)
            });
            match outcome {
                Ok(true) => {
                    // The re-registration reports data that is already there.
                    // A `/sub/` reader checks its reply heads itself.
                    self.conns[idx].phase = if self.conns[idx].sub.is_some() {
                        Phase::FirstNoop
                    } else {
                        Phase::Head
                    };
                }
                Ok(false) => self.conns[idx].phase = Phase::Writing(done),
                Err(e) => self.attempt_failed(idx, &format!("write: {}", reason(&e)), true),
            }
            return;
        }
        match self.conns[idx].phase {
            Phase::Head | Phase::FirstNoop | Phase::Up => self.read_all(idx, buf),
            _ => {}
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
                        Phase::Up => "server closed the connection",
                        Phase::Head => "closed before the reply head",
                        _ => "closed before the first noop",
                    };
                    self.conn_lost(idx, why);
                    return;
                }
                Ok(n) => {
                    let now = now_ns();
                    if !self.absorb(idx, &buf[..n], now) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn_lost(idx, &reason(&e));
                    return;
                }
            }
        }
    }

    /// Takes bytes read from stream `idx`. Returns false when the stream is
    /// no longer readable (failed or closed).
    fn absorb(&mut self, idx: usize, data: &[u8], now: u64) -> bool {
        if self.conns[idx].phase != Phase::Head {
            return self.feed(idx, data, now);
        }
        let c = &mut self.conns[idx];
        let (head, rest): (Vec<u8>, Vec<u8>);
        if c.head.is_empty() {
            match head_end(data) {
                Some(end) => {
                    head = data[..end].to_vec();
                    rest = data[end..].to_vec();
                }
                None => {
                    c.head.extend_from_slice(data);
                    return true;
                }
            }
        } else {
            c.head.extend_from_slice(data);
            match head_end(&c.head) {
                Some(end) => {
                    rest = c.head[end..].to_vec();
                    c.head.truncate(end);
                    head = std::mem::take(&mut c.head);
                }
                None => {
                    if c.head.len() > MAX_HEAD {
                        self.proto_error(idx, "reply head longer than 16 KiB");
                        return false;
                    }
                    return true;
                }
            }
        }
        match check_pull_head(&head) {
            Ok(None) => {}
            // nchan's head is never Talk's headless one
            Ok(Some(_)) if self.cfg.nchan => {}
            Ok(Some(note)) => {
                self.head_notes += 1;
                if self.head_notes <= PRINT_LIMIT {
                    self.say(&format!("stream {}: {note}", self.cfg.common.offset + idx));
                }
            }
            Err(why) => {
                // A refusal (503 at the connection limit, …) is final.
                self.attempt_failed(idx, &why, false);
                return false;
            }
        }
        self.conns[idx].phase = Phase::FirstNoop;
        if rest.is_empty() {
            true
        } else {
            self.feed(idx, &rest, now)
        }
    }

    fn feed(&mut self, idx: usize, data: &[u8], now: u64) -> bool {
        let awaiting_first = self.conns[idx].phase == Phase::FirstNoop;
        let mut first: Option<Result<(), String>> = None;
        let mut noops = 0u32;
        let mut unexpected = 0usize;
        let mut unexpected_sample: Option<String> = None;
        let expect = &mut self.expect;
        let series = &mut self.series;
        let c = &mut self.conns[idx];
        let mut on_record = |chunk: u64, rec: &[u8]| {
            if awaiting_first && first.is_none() {
                first = Some(if chunk == 0 && rec == b"noop" {
                    Ok(())
                } else {
                    Err(format!(
                        "first record is {:?} in chunk {chunk}, want \"noop\" in chunk 0",
                        escape(rec, 60)
                    ))
                });
                return;
            }
            if rec == b"noop" {
                noops += 1;
                return;
            }
            if let Some(x) = expect.as_mut() {
                if rec == x.token.as_slice() {
                    x.hit(idx, now);
                    return;
                }
            }
            if let Some(s) = series.as_mut() {
                if rec.starts_with(series::PREFIX) {
                    s.hit(idx, rec, now);
                    return;
                }
            }
            unexpected += 1;
            if unexpected_sample.is_none() {
                unexpected_sample = Some(escape(rec, 80));
            }
        };
        // what a `/sub/` reader must send back: a long-poll's next request, a pong
        let mut reply = Vec::new();
        let res = match c.sub.as_mut() {
            Some(sub) => sub.feed(data, &mut reply, |rec| on_record(0, rec)),
            None => c.parser.feed(data, on_record),
        };
        c.noops += noops;
        if !reply.is_empty() {
            // a few hundred bytes on a connection with nothing else to send
            let sock = c.sock.as_mut().expect("socket of a stream being read");
            let mut done = 0;
            match write_some(sock, &reply, &mut done) {
                Ok(true) => {}
                Ok(false) => {
                    self.proto_error(idx, "the socket did not take the re-poll or pong at once");
                    return false;
                }
                Err(e) => {
                    self.conn_lost(idx, &format!("write: {}", reason(&e)));
                    return false;
                }
            }
        }
        if unexpected > 0 {
            let before = self.unexpected;
            self.unexpected += unexpected;
            if before < PRINT_LIMIT {
                self.say(&format!(
                    "stream {}: unexpected record {:?}",
                    self.cfg.common.offset + idx,
                    unexpected_sample.unwrap_or_default()
                ));
            }
        }
        match first {
            Some(Ok(())) => {
                self.conns[idx].phase = Phase::Up;
                self.up += 1;
                self.inflight -= 1;
            }
            Some(Err(why)) => {
                self.proto_error(idx, &why);
                return false;
            }
            None => {}
        }
        match res {
            Err(e) => {
                self.proto_error(idx, &e.0);
                false
            }
            Ok(Status::Ended) => {
                self.conn_lost(idx, "server ended the stream (final 0-chunk)");
                false
            }
            Ok(Status::Open) => true,
        }
    }

    /// Starts connects while fewer than `inflight` are under way.
    fn fill(&mut self) {
        let now = now_ns();
        let max = self.cfg.common.inflight;
        while let Some(idx) = self.queue.next(now, self.inflight, max, |_| false) {
            self.start(idx);
        }
    }

    /// Fails attempts that have taken too long.
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
                Phase::Connecting => "connect timed out",
                Phase::Writing(_) => "request write timed out",
                Phase::Head => "no reply head in time",
                _ => "no first noop in time",
            };
            self.attempt_failed(idx, what, true);
        }
    }

    fn connecting_done(&self) -> bool {
        self.queue.is_empty() && self.inflight == 0
    }

    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Fan(c) => {
                let up = self.conns.iter().map(|c| c.phase == Phase::Up);
                fanout::handle(&mut self.expect, c, up);
            }
            Cmd::Series(c) => {
                let up = self.conns.iter().map(|c| c.phase == Phase::Up);
                series::handle(&mut self.series, c, up);
            }
            Cmd::Quit => {
                let mut keepalives = 0u64;
                let mut min_keepalives = u32::MAX;
                for c in self.conns.iter().filter(|c| c.phase == Phase::Up) {
                    keepalives += u64::from(c.noops);
                    min_keepalives = min_keepalives.min(c.noops);
                }
                if min_keepalives == u32::MAX {
                    min_keepalives = 0;
                }
                self.print_reasons(false);
                send(&format!(
                    "BYE live={} closed={} keepalives={keepalives} min_keepalives={min_keepalives} unexpected={} proto_errors={}",
                    self.live(),
                    self.closed,
                    self.unexpected,
                    self.proto_errors
                ));
                return false;
            }
            Cmd::Bad(line) => self.say(&format!("unknown command {line:?}")),
        }
        true
    }

    /// Prints the counted reasons: of connect failures and retries
    /// (`connecting`), or of streams closed after they were up.
    fn print_reasons(&self, connecting: bool) {
        let maps = if connecting {
            vec![
                ("failures", &self.fail_reasons),
                ("retried", &self.retry_reasons),
            ]
        } else {
            vec![("closed", &self.close_reasons)]
        };
        for (what, map) in maps {
            if !map.is_empty() {
                self.say(&format!("{what}: {}", reason_list(map)));
            }
        }
    }
}

/// Runs a worker; returns the process exit code.
pub fn run(argv: &[String]) -> i32 {
    crate::child::worker_main(
        argv,
        "worker",
        "streams",
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
            if !w.queue.has_retries() {
                100_000_000
            } else {
                5_000_000
            }
        } else {
            500_000_000
        };
        if let Some(left) = fanout::check(&mut w.expect, now_ns()) {
            timeout_ns = timeout_ns.min(left);
        }
        if let Some(left) = series::check(&mut w.series, now_ns()) {
            timeout_ns = timeout_ns.min(left);
        }
        wait(&mut w.poll, &mut events, timeout_ns)?;
        let woke = dispatch(&events, |idx, ev| w.on_event(idx, ev, &mut buf));
        fanout::check(&mut w.expect, now_ns());
        series::check(&mut w.series, now_ns());
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
                "READY up={} failed={} head_notes={} retries={} connect_ms={}",
                w.up,
                w.failed,
                w.head_notes,
                w.retries,
                (now - w.started_ns) / 1_000_000
            ));
            if w.failed > 0 || w.retries > 0 {
                w.print_reasons(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert!(
            matches!(parse_cmd("ARM fanout-1-2"), Cmd::Fan(FanCmd::Arm(t)) if t == "fanout-1-2")
        );
        assert!(matches!(parse_cmd("COLLECT tok x 9"), Cmd::Bad(_)));
        assert!(matches!(parse_cmd("QUIT"), Cmd::Quit));
        assert!(matches!(parse_cmd("HELLO"), Cmd::Bad(_)));
    }

    #[test]
    fn names_are_unique_per_run_and_index() {
        assert_eq!(stream_name("ab", 7), "lt-ab-7");
        assert_ne!(stream_name("ab", 7), stream_name("ab", 8));
    }
}
