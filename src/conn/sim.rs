//! A deterministic simulation of the HTTP machine: no sockets, a virtual clock. Several
//! clients send scripts of pipelined requests (health checks, HEAD, comet sync/put/get with
//! chunked and form bodies, Talk streams and pushes) cut at random points, sometimes hang
//! up, and read their answers a random number of bytes at a time. After every run: each
//! request was answered at most once and in order, every request of a client that did not
//! hang up was answered, nothing panicked, every buffer went back to the pool, and the
//! parked and streaming gauges and the worker's subscription lists are back to zero.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::http::{HttpConn, Input, Phase, Wrote};
use super::socket::{self, SocketResult};
use super::{untoken, Io as _, Next};
use crate::config::Config;
use crate::hub::{Mail, Mailbox};
use crate::worker::{test_shared, Worker};

/// A small, seeded xorshift: the runs are the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the answer to one request must look like.
struct Expect {
    status: u16,
    /// The body starts with this (a JSONP callback name unique to the request).
    body_prefix: Option<String>,
    head: bool,
}

/// One simulated client and the server's machine for its connection.
struct Client {
    machine: Option<HttpConn>,
    /// Everything the client will send, and how much of it the server has had.
    script: Vec<u8>,
    sent: usize,
    /// The client hangs up after sending this much (None: it never does).
    hang_up_at: Option<usize>,
    hung_up: bool,
    expect: Vec<Expect>,
    /// The script ends with a Talk pull: everything after its head is a stream.
    streams: bool,
    received: Vec<u8>,
    /// The server shut its write side.
    shut: bool,
}

fn request(rng: &mut Rng, i: usize, c: usize, stream: bool) -> (Vec<u8>, Expect) {
    let cb = format!("cb{c}x{i}");
    let ok = |prefix: Option<String>| Expect {
        status: 200,
        body_prefix: prefix,
        head: false,
    };
    if stream {
        let r = format!("GET /pull?name=s{c}&channel=t HTTP/1.1\r\nHost: x\r\n\r\n");
        return (r.into_bytes(), ok(None));
    }
    match rng.below(8) {
        0 => (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ok(Some("ok".into())),
        ),
        1 => (
            b"HEAD /health HTTP/1.1\r\n\r\n".to_vec(),
            Expect {
                status: 200,
                body_prefix: None,
                head: true,
            },
        ),
        2 => {
            let r = format!("GET /comet?method=sync&channel=s{c}&callback={cb} HTTP/1.1\r\n\r\n");
            (r.into_bytes(), ok(Some(format!("{cb}("))))
        }
        3 => {
            let body = format!("method=put&channel=w&message=m{c}x{i}&callback={cb}");
            let r = format!(
                "POST /comet HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            (r.into_bytes(), ok(Some(format!("{cb}("))))
        }
        4 => {
            let body = format!("method=sync&channel=s{c}&callback={cb}");
            let (a, b) = body.split_at(body.len() / 2);
            let r = format!(
                "POST /comet HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            );
            (r.into_bytes(), ok(Some(format!("{cb}("))))
        }
        5 => {
            // A long-poll: parks until a put on `w`, or its timeout. Half of them share
            // one callback, so the worker's wake cache answers them.
            if rng.chance(50) {
                let r = "GET /comet?method=get&channel=w&time=0&callback=shared HTTP/1.1\r\n\r\n";
                (r.as_bytes().to_vec(), ok(Some("shared(".into())))
            } else {
                let r = format!(
                    "GET /comet?method=get&channel=w&time=0&callback={cb} HTTP/1.1\r\n\r\n"
                );
                (r.into_bytes(), ok(Some(format!("{cb}("))))
            }
        }
        6 => {
            let r = format!("GET /push?channel=t&name=p{c}&message=p{c}x{i} HTTP/1.1\r\n\r\n");
            (r.into_bytes(), ok(Some("noop".into())))
        }
        _ => (
            b"GET /nowhere HTTP/1.1\r\n\r\n".to_vec(),
            Expect {
                status: 404,
                body_prefix: Some("not found".into()),
                head: false,
            },
        ),
    }
}

/// A writer that takes at most `room` bytes, then would block.
struct Reader<'a> {
    into: &'a mut Vec<u8>,
    room: usize,
}

impl io::Write for Reader<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(self.room);
        self.room -= n;
        self.into.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Sim {
    rng: Rng,
    w: Worker,
    mailbox: Arc<Mailbox>,
    clients: Vec<Client>,
    /// Slab key (the client's index) → generation, for routing mail and timers.
    gens: HashMap<usize, u32>,
}

impl Sim {
    fn new(seed: u64, clients: usize) -> Sim {
        let config = Config {
            long_poll_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3600),
            header_timeout: Duration::from_secs(3600),
            talk_keepalive: Duration::from_secs(1),
            ..Config::default()
        };
        let (shared, mailbox) = test_shared(config);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut w = Worker::new(0, shared);
        w.now = 1;
        let mut sim_clients = Vec::new();
        let mut gens = HashMap::new();
        for c in 0..clients {
            let n = 1 + rng.below(12) as usize;
            let streams = rng.chance(25);
            let mut script = Vec::new();
            let mut expect = Vec::new();
            for i in 0..n {
                let (bytes, e) = request(&mut rng, i, c, streams && i == n - 1);
                script.extend_from_slice(&bytes);
                expect.push(e);
            }
            let hang_up_at = rng
                .chance(20)
                .then(|| rng.below(script.len() as u64 + 1) as usize);
            let gen = 1 + c as u32;
            gens.insert(c, gen);
            sim_clients.push(Client {
                machine: Some(HttpConn::new(c, gen, false, &mut w)),
                script,
                sent: 0,
                hang_up_at,
                hung_up: false,
                expect,
                streams,
                received: Vec::new(),
                shut: false,
            });
        }
        Sim {
            rng,
            w,
            mailbox,
            clients: sim_clients,
            gens,
        }
    }

    fn close(&mut self, c: usize) {
        if let Some(m) = self.clients[c].machine.take() {
            m.close(&mut self.w);
        }
    }

    fn act(&mut self, c: usize, next: Next) {
        if next == Next::Close {
            self.close(c);
        }
    }

    /// The client sends a random piece of what is left of its script (or hangs up).
    fn send(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(m) = client.machine.as_mut() else {
            return;
        };
        let end = client.hang_up_at.unwrap_or(client.script.len());
        let left = end.saturating_sub(client.sent);
        let piece = if left == 0 {
            0
        } else {
            1 + self.rng.below(left.min(300) as u64) as usize
        };
        let eof = client.sent + piece >= end && client.hang_up_at.is_some();
        if eof {
            m.peer_closed = true;
        }
        let next = match m.wants_input(&self.w) {
            Input::Pause => Next::Keep,
            Input::Discard => {
                client.sent += piece;
                let r = if eof {
                    SocketResult::Closed
                } else {
                    SocketResult::Done
                };
                m.discarded(r, &mut self.w)
            }
            Input::Read { limit } => {
                let buf = m.input_buf(&mut self.w);
                let take = piece.min(limit.saturating_sub(buf.len()));
                buf.extend(&client.script[client.sent..client.sent + take]);
                client.sent += take;
                let r = if take < piece {
                    SocketResult::Full
                } else if eof {
                    SocketResult::Closed
                } else {
                    SocketResult::Done
                };
                m.received(r, &mut self.w)
            }
        };
        if eof && client.sent >= end {
            client.hung_up = true;
        }
        self.act(c, next);
    }

    /// The client reads a random number of bytes of what the server wrote.
    fn flush(&mut self, c: usize) {
        let room = self.rng.below(400) as usize;
        let client = &mut self.clients[c];
        let Some(m) = client.machine.as_mut() else {
            return;
        };
        let mut reader = Reader {
            into: &mut client.received,
            room,
        };
        let next = loop {
            let (r, _) = socket::write(&mut reader, m.output(&self.w));
            match m.wrote(r, &mut self.w) {
                Wrote::Keep => break Next::Keep,
                Wrote::Close => break Next::Close,
                Wrote::More => continue,
                Wrote::ShutdownWrite => {
                    client.shut = true;
                    let r = if client.hung_up || client.sent >= client.script.len() {
                        SocketResult::Closed
                    } else {
                        SocketResult::Done
                    };
                    break m.discarded(r, &mut self.w);
                }
            }
        };
        if room == 0 || !m.out.is_empty() {
            // Blocked: a writable event comes later.
            m.link.mark_pending(&mut self.w);
        }
        self.act(c, next);
    }

    fn route(&mut self, token: usize, f: impl FnOnce(&mut HttpConn, &mut Worker) -> Next) {
        let (key, gen) = untoken(token);
        if self.gens.get(&key) != Some(&gen) {
            return;
        }
        if let Some(m) = self.clients[key].machine.as_mut() {
            let next = f(m, &mut self.w);
            self.act(key, next);
        }
    }

    /// The reactor's turn after the clients acted: mail, timers, capped reads, flushes.
    fn turn(&mut self) {
        let mut mail = Vec::new();
        self.mailbox.take(&mut mail);
        for m in mail {
            match m {
                Mail::Deliver { channel, msg } => {
                    let Some((name, keys)) = self.w.begin_delivery(&channel) else {
                        continue;
                    };
                    self.w.wake_cache.clear();
                    for &key in &keys {
                        let token = super::token(key, self.gens[&key]);
                        self.route(token, |m, w| m.deliver(&msg, w));
                    }
                    self.w.wake_cache.clear();
                    self.w.end_delivery(name, keys);
                }
                Mail::EndStream { token } => self.route(token, |m, w| m.end_stream(w)),
                Mail::Synced { token, result } => self.route(token, |m, w| m.synced(result, w)),
                // The simulation has no XMPP or BOSH sessions.
                Mail::Shutdown
                | Mail::Stanza { .. }
                | Mail::Replaced { .. }
                | Mail::BoshRequest { .. }
                | Mail::BoshAnswer { .. }
                | Mail::Deleted { .. } => {}
            }
        }
        while let Some((key, gen, entry)) = self.w.timers.pop_due(self.w.now) {
            self.route(super::token(key, gen), |m, w| m.on_timer(entry, w));
        }
        for key in std::mem::take(&mut self.w.again) {
            self.send(key);
        }
        for key in std::mem::take(&mut self.w.pending) {
            if let Some(m) = self.clients[key].machine.as_mut() {
                m.link.flushed();
            }
            self.flush(key);
        }
    }

    fn run(&mut self) {
        for _ in 0..2000 {
            let c = self.rng.below(self.clients.len() as u64) as usize;
            match self.rng.below(10) {
                0..=4 => self.send(c),
                5..=7 => self.flush(c),
                _ => self.w.now += self.rng.below(400),
            }
            self.turn();
            if self.settled() {
                break;
            }
        }
        // Let every long-poll time out and every answer be read.
        for _ in 0..200 {
            self.w.now += 500;
            for c in 0..self.clients.len() {
                self.send(c);
                self.flush(c);
            }
            self.turn();
        }
        // Shut down: streams end, the rest is written, every connection leaves.
        for c in 0..self.clients.len() {
            if let Some(m) = self.clients[c].machine.as_mut() {
                self.w.shutting_down = true;
                let next = m.begin_shutdown(&mut self.w);
                self.act(c, next);
            }
        }
        for _ in 0..50 {
            for c in 0..self.clients.len() {
                self.flush(c);
            }
            self.turn();
        }
        for c in 0..self.clients.len() {
            self.close(c);
        }
    }

    fn settled(&self) -> bool {
        self.clients.iter().all(|c| {
            c.machine.is_none()
                || (c.sent >= c.hang_up_at.unwrap_or(c.script.len())
                    && c.machine.as_ref().is_some_and(|m| {
                        m.out.is_empty() && matches!(m.phase(), Phase::Head | Phase::Streaming(_))
                    }))
        })
    }
}

/// Parses answers off the front of `bytes`: (status, body, whether the head said
/// chunked). Stops at the first incomplete one.
fn answers(mut bytes: &[u8], expect: &[Expect]) -> Vec<(u16, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for e in expect {
        let Some(end) = memchr::memmem::find(bytes, b"\r\n\r\n") else {
            break;
        };
        let head = std::str::from_utf8(&bytes[..end]).expect("a head is ASCII");
        let status: u16 = head[9..12].parse().expect("a status");
        let chunked = head.contains("Transfer-Encoding: chunked");
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.parse::<usize>().expect("a length"));
        let body_len = if e.head || chunked {
            0
        } else {
            length.unwrap_or(0)
        };
        if bytes.len() < end + 4 + body_len {
            break;
        }
        out.push((status, bytes[end + 4..end + 4 + body_len].to_vec(), chunked));
        bytes = &bytes[end + 4 + body_len..];
        if chunked {
            break;
        }
    }
    out
}

fn check(seed: u64, sim: &Sim) {
    for (c, client) in sim.clients.iter().enumerate() {
        let got = answers(&client.received, &client.expect);
        let whole = client.hang_up_at.is_none();
        if whole {
            assert_eq!(
                got.len(),
                client.expect.len(),
                "seed {seed} client {c}: every request answered; got {:?}",
                String::from_utf8_lossy(&client.received)
            );
        }
        for (i, ((status, body, _), e)) in got.iter().zip(&client.expect).enumerate() {
            assert_eq!(*status, e.status, "seed {seed} client {c} answer {i}");
            if let Some(prefix) = &e.body_prefix {
                assert!(
                    body.starts_with(prefix.as_bytes()),
                    "seed {seed} client {c} answer {i}: {:?} should start with {prefix}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        if client.streams && whole {
            let (_, _, chunked) = got.last().expect("the stream's head");
            assert!(chunked, "seed {seed} client {c}: the pull is a stream");
            assert!(
                client.received.ends_with(b"0\r\n\r\n"),
                "seed {seed} client {c}: the stream ended with its last chunk"
            );
        }
    }
    let m = &sim.w.shared.metrics;
    assert_eq!(
        sim.w.pool.in_use(),
        0,
        "seed {seed}: buffers back in the pool"
    );
    assert_eq!(m.parked.get(), 0, "seed {seed}: parked gauge");
    assert_eq!(m.streaming.get(), 0, "seed {seed}: streaming gauge");
    assert!(sim.w.subs.is_empty(), "seed {seed}: no waiter left");
}

#[test]
fn random_splits_hang_ups_and_a_virtual_clock() {
    for seed in 0..400 {
        let clients = 1 + (seed % 6) as usize;
        let mut sim = Sim::new(seed, clients);
        sim.run();
        check(seed, &sim);
    }
}

#[test]
fn one_client_pipelining_everything_at_once() {
    for seed in 1000..1100 {
        let mut sim = Sim::new(seed, 1);
        sim.clients[0].hang_up_at = None;
        let script = sim.clients[0].script.clone();
        sim.clients[0].sent = script.len();
        let m = sim.clients[0].machine.as_mut().unwrap();
        m.input_buf(&mut sim.w).extend(&script);
        let next = m.received(SocketResult::Done, &mut sim.w);
        sim.act(0, next);
        sim.run();
        check(seed, &sim);
    }
}

/// Targeted tests of the machine, with the same worker set-up as the simulation.
mod machine {
    use super::*;

    fn worker(tweak: impl FnOnce(&mut Config)) -> (Worker, HttpConn) {
        let mut config = Config::default();
        tweak(&mut config);
        let (shared, _) = test_shared(config);
        let mut w = Worker::new(0, shared);
        w.now = 1;
        let m = HttpConn::new(0, 1, false, &mut w);
        (w, m)
    }

    fn feed(m: &mut HttpConn, w: &mut Worker, bytes: &[u8]) -> Next {
        match m.wants_input(w) {
            Input::Read { .. } => {
                m.input_buf(w).extend(bytes);
                m.received(SocketResult::Done, w)
            }
            other => panic!("the machine wants {other:?}, not input"),
        }
    }

    fn written(m: &mut HttpConn, w: &mut Worker) -> (Vec<u8>, Wrote) {
        let mut got = Vec::new();
        let mut reader = Reader {
            into: &mut got,
            room: usize::MAX,
        };
        loop {
            let (r, _) = socket::write(&mut reader, m.output(w));
            let wrote = m.wrote(r, w);
            if r != SocketResult::Continue && wrote != Wrote::More {
                w.pending.clear();
                return (got, wrote);
            }
        }
    }

    #[test]
    fn a_head_sent_byte_by_byte_is_answered_once() {
        let (mut w, mut m) = worker(|_| {});
        let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        for b in req.iter() {
            assert_eq!(feed(&mut m, &mut w, &[*b]), Next::Keep);
        }
        let (out, wrote) = written(&mut m, &mut w);
        assert_eq!(wrote, Wrote::Keep);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(out.ends_with(b"\r\n\r\nok\n"));
        assert_eq!(memchr::memmem::find_iter(&out, b"HTTP/1.1").count(), 1);
        assert!(
            !m.holds_buffer(),
            "an idle keep-alive connection holds no buffer"
        );
        assert_eq!(w.pool.in_use(), 0);
    }

    #[test]
    fn reading_pauses_while_answers_are_unread_and_resumes_after() {
        let (mut w, mut m) = worker(|c| c.max_output_bytes = 200);
        let many = b"GET /health HTTP/1.1\r\n\r\n".repeat(20);
        feed(&mut m, &mut w, &many);
        assert!(m.out.len() > 200, "answers up to the limit");
        assert!(m.holds_buffer(), "the rest waits in the buffer");
        assert_eq!(m.wants_input(&w), Input::Pause);
        w.again.clear();
        let (out, _) = written(&mut m, &mut w);
        assert_eq!(w.again, [0], "served again next turn once the client read");
        let mut answered = memchr::memmem::find_iter(&out, b"200 OK").count();
        // The reactor serves it again: the rest of the requests are answered.
        while m.holds_buffer() {
            w.again.clear();
            assert_eq!(m.received(SocketResult::Done, &mut w), Next::Keep);
            let (out, _) = written(&mut m, &mut w);
            answered += memchr::memmem::find_iter(&out, b"200 OK").count();
        }
        assert_eq!(answered, 20);
    }

    #[test]
    fn idle_and_header_timeouts() {
        let (mut w, mut m) = worker(|c| {
            c.idle_timeout = Duration::from_secs(3);
            c.header_timeout = Duration::from_secs(1);
        });
        feed(&mut m, &mut w, b"GET /health HTTP/1.1\r\n\r\n");
        written(&mut m, &mut w);
        let mut fired = None;
        w.now += 1500;
        while let Some((_, _, entry)) = w.timers.pop_due(w.now) {
            fired = Some(m.on_timer(entry, &mut w));
        }
        assert_eq!(fired, Some(Next::Keep), "idle, not yet past --idle-timeout");
        feed(&mut m, &mut w, b"GET /hea");
        w.now += 1100;
        let mut next = Next::Keep;
        while let Some((_, _, entry)) = w.timers.pop_due(w.now) {
            next = m.on_timer(entry, &mut w);
        }
        assert_eq!(next, Next::Close, "a partial head past --header-timeout");
        assert_eq!(w.shared.metrics.header_timeouts.get(), 1);
        m.close(&mut w);
        assert_eq!(w.pool.in_use(), 0);
    }

    #[test]
    fn expect_continue_then_the_body() {
        let (mut w, mut m) = worker(|_| {});
        feed(
            &mut m,
            &mut w,
            b"POST /comet?method=put&message=x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n",
        );
        let (out, _) = written(&mut m, &mut w);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        feed(&mut m, &mut w, b"hi");
        let (out, _) = written(&mut m, &mut w);
        assert!(
            out.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn a_fault_is_answered_then_the_write_side_shuts() {
        let (mut w, mut m) = worker(|_| {});
        feed(
            &mut m,
            &mut w,
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
        );
        let (out, wrote) = written(&mut m, &mut w);
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(
            memchr::memmem::find(&out, b"200 OK").is_none(),
            "nothing after a fault"
        );
        assert_eq!(wrote, Wrote::ShutdownWrite);
        assert_eq!(m.wants_input(&w), Input::Discard);
        assert_eq!(m.discarded(SocketResult::Closed, &mut w), Next::Close);
    }

    #[test]
    fn one_turn_answers_a_bounded_batch_then_yields() {
        let (mut w, mut m) = worker(|_| {});
        let many = b"GET /health HTTP/1.1\r\n\r\n".repeat(200);
        feed(&mut m, &mut w, &many);
        let (out, _) = written(&mut m, &mut w);
        let mut answered = memchr::memmem::find_iter(&out, b"200 OK").count();
        assert_eq!(answered, super::super::http::MAX_REQUESTS_PER_TURN);
        assert_eq!(w.again, [0], "served again next turn");
        let mut turns = 1;
        while !w.again.is_empty() {
            w.again.clear();
            m.received(SocketResult::Done, &mut w);
            let (out, _) = written(&mut m, &mut w);
            answered += memchr::memmem::find_iter(&out, b"200 OK").count();
            turns += 1;
        }
        assert_eq!(answered, 200);
        assert_eq!(turns, 4);
    }

    #[test]
    fn a_busy_pipelining_client_is_not_cut_off_by_the_header_timeout() {
        let (mut w, mut m) = worker(|c| c.header_timeout = Duration::from_secs(1));
        // Every 600 ms a request completes and the next one has begun: 10 s of this.
        feed(&mut m, &mut w, b"GET /health HTTP/1.1\r\n\r\nGET /hea");
        for _ in 0..16 {
            w.now += 600;
            while let Some((_, _, entry)) = w.timers.pop_due(w.now) {
                assert_eq!(m.on_timer(entry, &mut w), Next::Keep);
            }
            feed(&mut m, &mut w, b"lth HTTP/1.1\r\n\r\nGET /hea");
        }
        let (out, _) = written(&mut m, &mut w);
        assert_eq!(memchr::memmem::find_iter(&out, b"200 OK").count(), 17);
        // A head that stops arriving is still cut off.
        w.now += 1100;
        let mut next = Next::Keep;
        while let Some((_, _, entry)) = w.timers.pop_due(w.now) {
            next = m.on_timer(entry, &mut w);
        }
        assert_eq!(next, Next::Close);
    }

    #[test]
    fn an_encoded_body_that_outgrows_the_buffer_is_refused() {
        let (mut w, mut m) = worker(|c| {
            c.max_head_bytes = 1024;
            c.max_body_bytes = 1024;
        });
        let mut req = b"POST /comet HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend(b"1\r\na\r\n".repeat(600));
        let limit = 1024 + 1024 + 1024;
        let next = match m.wants_input(&w) {
            Input::Read { limit: l } => {
                assert_eq!(l, limit);
                m.input_buf(&mut w).extend(&req[..limit]);
                m.received(SocketResult::Full, &mut w)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(next, Next::Keep);
        let (out, wrote) = written(&mut m, &mut w);
        assert!(
            out.starts_with(b"HTTP/1.1 413 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(wrote, Wrote::ShutdownWrite);
        assert!(
            w.again.is_empty(),
            "no turn spent reading a full buffer again"
        );
        assert_eq!(w.pool.in_use(), 0);
    }
}
