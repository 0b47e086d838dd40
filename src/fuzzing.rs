//! Fuzz harnesses: one function per target of the `fuzz/` crate (`cargo +nightly fuzz run
//! NAME`), kept in the library so that a stable `cargo test` (`tests/fuzz_regressions.rs`)
//! replays the committed seed corpora and every input a fuzzer ever found.
//!
//! Each function takes arbitrary bytes. It never panics on its own account; it panics, with a
//! message naming the property, when the code under test panics or breaks an oracle: that is
//! what the fuzzer reports as a crash. Not part of the server's API: hidden from the docs,
//! no stability promise.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Terminator};
use crate::conn::http::{HttpConn, Input, Phase, Wrote};
use crate::conn::socket::{self, SocketResult};
use crate::conn::{token, untoken, Io as _, Next};
use crate::http::{self, ChunkedDecoder, HttpError};
use crate::hub::{Draft, Mail, Mailbox, Message, Origin};
use crate::proto::qst::{json, xml};
use crate::time;
use crate::worker::{test_shared, Worker};

mod websocket;
pub use websocket::{websocket, ws_events, WsEvent};

/// A harness: arbitrary bytes in; a panic says what broke.
pub type Harness = fn(&[u8]);

/// Every target by the name of its `fuzz/fuzz_targets/` file and of its corpus directory.
pub const TARGETS: &[(&str, Harness)] = &[
    ("http_head", http_head),
    ("chunked", chunked),
    ("form", form),
    ("qst_xml", qst_xml),
    ("qst_json", qst_json),
    ("datetime", datetime),
    ("machine", machine),
    ("xmpp_stream", xmpp_stream),
    ("websocket", websocket),
];

/// The harness of a target by name.
pub fn target(name: &str) -> Option<Harness> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// `http::parse_head` on arbitrary bytes with several limits. Oracles: a parsed head lies
/// within the input and the limit, its spans within the head; parsing the head's bytes alone
/// gives the same head; the limit only ever turns an answer into 431 (every limit that does
/// not say `HeadTooLarge` gives the same answer); a prefix of a complete head is incomplete,
/// never an error (a head split by the network must not be refused).
pub fn http_head(data: &[u8]) {
    const LIMITS: [usize; 4] = [16, 256, 4096, 1 << 20];
    let mut answer: Option<String> = None;
    for max in LIMITS {
        let r = http::parse_head(data, max);
        match &r {
            Ok(Some(h)) => {
                assert!(h.len <= data.len() && h.len <= max, "head length {h:?}");
                let path = h.path.of(data);
                assert!(
                    path.starts_with(b"/") || path == b"*",
                    "path {:?}",
                    lossy(path)
                );
                let head = &data[..h.len];
                let spans = [
                    Some(h.path),
                    Some(h.query),
                    h.authorization,
                    h.content_type,
                    h.if_none_match,
                    h.request_headers,
                ];
                for s in spans.into_iter().flatten() {
                    assert_eq!(s.of(head), s.of(data), "a span past the head: {h:?}");
                }
                let alone = http::parse_head(head, max);
                assert_eq!(
                    format!("{alone:?}"),
                    format!("{r:?}"),
                    "the head's bytes alone parse differently"
                );
                for k in 1..=16 {
                    let cut = h.len * k / 17;
                    let p = http::parse_head(&data[..cut], max);
                    assert!(
                        matches!(p, Ok(None)),
                        "prefix of {cut} bytes of a complete head of {}: {p:?}",
                        h.len
                    );
                }
            }
            Ok(None) => assert!(data.len() <= max, "incomplete past the limit"),
            Err(_) => {}
        }
        if matches!(r, Err(HttpError::HeadTooLarge)) {
            continue;
        }
        let text = format!("{r:?}");
        if let Some(before) = &answer {
            assert_eq!(
                before, &text,
                "limit {max} changed an answer other than 431"
            );
        }
        answer = Some(text);
    }
}

/// `http::ChunkedDecoder` fed growing prefixes of the same bytes must end as one
/// `http::decode_chunked` of the whole. Input: a control byte (bits 6-7: the body limit;
/// bits 0-3: how many piece lengths follow), the piece lengths (one byte each; 0 feeds the
/// same prefix again), then the encoded body.
pub fn chunked(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let max = [16, 256, 4096, 1 << 20][usize::from(ctl >> 6)];
    let (cuts, body) = rest.split_at(usize::from(ctl & 15).min(rest.len()));
    let mut whole_body = Vec::new();
    let whole = http::decode_chunked(body, max, &mut whole_body);
    let mut d = ChunkedDecoder::default();
    let mut end = 0usize;
    let pieces = cuts.iter().map(|&c| usize::from(c)).chain([usize::MAX]);
    for piece in pieces {
        end = end.saturating_add(piece).min(body.len());
        let r = d.feed(&body[..end], max);
        if r == Ok(None) && end < body.len() {
            continue;
        }
        assert_eq!(
            r,
            whole,
            "fed in pieces up to {end} of {} bytes vs whole",
            body.len()
        );
        if r.is_ok_and(|n| n.is_some()) {
            assert_eq!(d.body, whole_body, "decoded bodies differ");
        }
        return;
    }
}

/// `%XX`-encodes every byte.
fn encode_all(b: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    b.iter()
        .flat_map(|&c| [b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]])
        .collect()
}

/// A naive percent-decoder: the oracle of `http::percent_decode(_path)`.
fn naive_decode(s: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && s[i] == b'+' {
            b' '
        } else {
            s[i]
        });
        i += 1;
    }
    out
}

/// `http::percent_decode`, `percent_decode_path`, `form_pairs` and `form_get`: against a naive
/// decoder, decoding what encoding every byte made, splitting pairs, and finding the first
/// pair of a key.
pub fn form(data: &[u8]) {
    let d = http::percent_decode(data);
    assert_eq!(*d, naive_decode(data, true)[..], "percent_decode");
    let p = http::percent_decode_path(data);
    assert_eq!(*p, naive_decode(data, false)[..], "percent_decode_path");
    let enc = encode_all(data);
    assert_eq!(*http::percent_decode(&enc), *data, "decode(encode(x))");
    assert_eq!(
        *http::percent_decode_path(&enc),
        *data,
        "path decode(encode(x))"
    );

    let mut n = 0;
    for (k, v) in http::form_pairs(data) {
        n += 1;
        assert!(
            !k.is_empty() || !v.is_empty() || data.contains(&b'='),
            "an empty pair"
        );
        assert!(!k.contains(&b'&') && !k.contains(&b'=') && !v.contains(&b'&'));
    }
    assert!(n <= data.iter().filter(|&&b| b == b'&').count() + 1);

    let mut q = b"a=1&k=".to_vec();
    q.extend_from_slice(&enc);
    q.extend_from_slice(b"&k=2");
    assert_eq!(
        http::form_get(&q, "k").as_deref(),
        Some(data),
        "form_get of an encoded value"
    );
    // The first pair whose decoded key is the key asked for, by a linear search.
    if let Some((k, _)) = http::form_pairs(data).next() {
        if let Ok(key) = std::str::from_utf8(&naive_decode(k, true)) {
            let want = http::form_pairs(data)
                .find(|(k, _)| naive_decode(k, true) == key.as_bytes())
                .map(|(_, v)| naive_decode(v, true));
            assert_eq!(
                http::form_get(data, key).map(|v| v.into_owned()),
                want,
                "form_get({key:?})"
            );
        }
    }
}

/// Stored messages made from decoded drafts, the hub's way: the draft's id and `when`, or
/// ones assigned here when the draft has none.
fn stored(drafts: Vec<Draft>) -> Vec<Message> {
    drafts
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let id = d.id.clone().unwrap_or_else(|| format!("m{i}"));
            let when = d.when.unwrap_or(1_262_387_933);
            Message::new(i as u64 + 1, id, when, Origin::Qst, d)
        })
        .collect()
}

/// `proto::qst::xml::decode` on arbitrary bytes; a document that decodes, stored and encoded
/// (v2), decodes to the same drafts; encoded for v1, it decodes with the v1 text as its body.
pub fn qst_xml(data: &[u8]) {
    let Ok(drafts) = xml::decode(data) else {
        return;
    };
    let msgs = stored(drafts);
    let refs: Vec<&Message> = msgs.iter().collect();
    let mut out = Vec::new();
    xml::encode(&refs, false, &mut out);
    let want: Vec<Draft> = msgs.iter().map(Message::to_draft).collect();
    let back = xml::decode(&out);
    assert_eq!(
        back.as_ref(),
        Ok(&want),
        "v2 round trip of {:?}",
        lossy(&out)
    );

    out.clear();
    xml::encode(&refs, true, &mut out);
    let v1: Vec<Draft> = want
        .into_iter()
        .map(|d| {
            let subject = d.subject.filter(|s| !s.is_empty());
            let body = match (subject, d.body.is_empty()) {
                (Some(s), false) => [s.as_bytes(), b" - ", &d.body].concat(),
                (Some(s), true) => s.into_bytes(),
                (None, _) => d.body,
            };
            Draft {
                subject: None,
                body,
                ..d
            }
        })
        .collect();
    assert_eq!(
        xml::decode(&out).as_ref(),
        Ok(&v1),
        "v1 round trip of {:?}",
        lossy(&out)
    );
}

/// `proto::qst::json::decode` on arbitrary bytes; a batch that decodes, stored and encoded,
/// decodes to the same drafts (properties grouped by name, as the format writes them).
pub fn qst_json(data: &[u8]) {
    let Ok(drafts) = json::decode(data) else {
        return;
    };
    let msgs = stored(drafts);
    let refs: Vec<&Message> = msgs.iter().collect();
    let mut out = Vec::new();
    json::encode(&refs, &mut out);
    let want: Vec<Draft> = msgs
        .iter()
        .map(|m| {
            let d = m.to_draft();
            Draft {
                properties: json::round_tripped_properties(&d.properties),
                ..d
            }
        })
        .collect();
    assert_eq!(
        json::decode(&out).as_ref(),
        Ok(&want),
        "round trip of {:?}",
        lossy(&out)
    );
}

/// `time::parse_datetime` on arbitrary text; a date-time that parses, formatted with
/// `format_utc`, parses to the same instant.
pub fn datetime(data: &[u8]) {
    let s = lossy(data);
    let Some(secs) = time::parse_datetime(&s) else {
        return;
    };
    let mut out = String::new();
    time::format_utc(secs, &mut out);
    assert_eq!(out.len(), 20, "format_utc wrote {out:?}");
    assert_eq!(
        time::parse_datetime(&out),
        Some(secs),
        "{s:?} parsed to {secs}, formatted as {out:?}"
    );
}

/// Operations of the machine harness before it stops reading its input.
const MAX_OPS: usize = 4096;
/// Channels the harness publishes on directly (the ones requests are likely to name).
const CHANNELS: [&str; 5] = ["w", "t", "c", "q", "s0"];

/// The fuzzer's bytes, read front to back; past the end everything is zero.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// A writer that takes at most the client's read window, then would block.
struct Window<'a> {
    room: &'a mut usize,
}

impl std::io::Write for Window<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if *self.room == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(*self.room);
        *self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One simulated client: its connection machine (None once closed) and what it sent.
struct Client {
    machine: Option<HttpConn>,
    gen: u32,
    /// Bytes the client sent; `outbox[sent..]` has not been read by the server yet.
    outbox: Vec<u8>,
    sent: usize,
    hung_up: bool,
    /// Bytes the client will still read before the server's writes would block.
    window: usize,
    /// The server shut its write side.
    shut: bool,
}

/// The worker, its hub's mailbox and the clients: the reactor's turn without a socket.
struct Driver {
    w: Worker,
    mailbox: Arc<Mailbox>,
    clients: Vec<Client>,
    next_gen: u32,
    shutdown: bool,
}

impl Driver {
    fn new(ctl: u8) -> Driver {
        let small = ctl & 4 != 0;
        let config = Config {
            long_poll_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(1),
            talk_keepalive: Duration::from_secs(1),
            talk_coalesce: Duration::from_millis(if ctl & 8 != 0 { 100 } else { 0 }),
            talk_terminator: if ctl & 32 != 0 {
                Terminator::Newline
            } else {
                Terminator::Nul
            },
            max_head_bytes: if small { 512 } else { 16 << 10 },
            max_body_bytes: if small { 256 } else { 64 << 10 },
            max_output_bytes: if small { 512 } else { 64 << 10 },
            max_message_bytes: if small { 128 } else { 64 << 10 },
            channel_capacity: if ctl & 64 != 0 { 4 } else { 1024 },
            queue_capacity: if ctl & 64 != 0 { 2 } else { 10_000 },
            qst_max_tries: if ctl & 64 != 0 { 2 } else { 0 },
            ..Config::default()
        };
        let (shared, mailbox) = test_shared(config);
        let mut w = Worker::new(0, shared);
        w.now = 1;
        let mut h = Driver {
            w,
            mailbox,
            clients: Vec::new(),
            next_gen: 1,
            shutdown: false,
        };
        for c in 0..1 + usize::from(ctl & 3) % 3 {
            let restricted = c == 0 && ctl & 16 != 0;
            let gen = h.gen();
            let machine = HttpConn::new(c, gen, restricted, &mut h.w);
            h.clients.push(Client {
                machine: Some(machine),
                gen,
                outbox: Vec::new(),
                sent: 0,
                hung_up: false,
                window: 0,
                shut: false,
            });
        }
        h
    }

    fn gen(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen += 1;
        g
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

    /// A readable event: the server reads what the client sent and it has not read, up to
    /// the machine's limit; `eof` once the client hung up and everything was read.
    fn readable(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(m) = client.machine.as_mut() else {
            return;
        };
        if client.hung_up {
            m.peer_closed = true;
        }
        let next = match m.wants_input(&self.w) {
            Input::Pause => Next::Keep,
            Input::Discard => {
                client.sent = client.outbox.len();
                let r = if client.hung_up {
                    SocketResult::Closed
                } else {
                    SocketResult::Done
                };
                m.discarded(r, &mut self.w)
            }
            Input::Read { limit } => {
                let pending = &client.outbox[client.sent..];
                let buf = m.input_buf(&mut self.w);
                let take = pending.len().min(limit.saturating_sub(buf.len()));
                buf.extend(&pending[..take]);
                client.sent += take;
                let r = if take < pending.len() {
                    SocketResult::Full
                } else if client.hung_up {
                    SocketResult::Closed
                } else {
                    SocketResult::Done
                };
                m.received(r, &mut self.w)
            }
        };
        self.act(c, next);
    }

    /// A writable event (or the pending-write list): the server writes into the client's
    /// read window.
    fn writable(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(m) = client.machine.as_mut() else {
            return;
        };
        let mut sock = Window {
            room: &mut client.window,
        };
        let next = loop {
            let (r, _) = socket::write(&mut sock, m.output(&self.w));
            match m.wrote(r, &mut self.w) {
                Wrote::Keep => break Next::Keep,
                Wrote::Close => break Next::Close,
                Wrote::More => continue,
                Wrote::ShutdownWrite => {
                    client.shut = true;
                    client.sent = client.outbox.len();
                    let r = if client.hung_up {
                        SocketResult::Closed
                    } else {
                        SocketResult::Done
                    };
                    break m.discarded(r, &mut self.w);
                }
            }
        };
        self.act(c, next);
    }

    /// Routes a handler to a live connection of this generation.
    fn route(&mut self, tok: usize, f: impl FnOnce(&mut HttpConn, &mut Worker) -> Next) {
        let (key, gen) = untoken(tok);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.gen != gen {
            return;
        }
        if let Some(m) = client.machine.as_mut() {
            let next = f(m, &mut self.w);
            self.act(key, next);
        }
    }

    /// The rest of a reactor turn: connections served again, mail, timers, pending writes.
    fn turn(&mut self) {
        for key in std::mem::take(&mut self.w.again) {
            self.readable(key);
        }
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
                        let Some(client) = self.clients.get(key) else {
                            continue;
                        };
                        let tok = token(key, client.gen);
                        self.route(tok, |m, w| m.deliver(&msg, w));
                    }
                    self.w.wake_cache.clear();
                    self.w.end_delivery(name, keys);
                }
                Mail::EndStream { token } => self.route(token, |m, w| m.end_stream(w)),
                Mail::Synced { token, result } => self.route(token, |m, w| m.synced(result, w)),
                Mail::Shutdown
                | Mail::Stanza { .. }
                | Mail::Replaced { .. }
                | Mail::BoshRequest { .. }
                | Mail::BoshAnswer { .. }
                | Mail::Deleted { .. } => {}
            }
        }
        while let Some((key, gen, entry)) = self.w.timers.pop_due(self.w.now) {
            self.route(token(key, gen), |m, w| m.on_timer(entry, w));
        }
        for key in std::mem::take(&mut self.w.pending) {
            self.writable(key);
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutdown = true;
        self.w.shutting_down = true;
        for c in 0..self.clients.len() {
            if let Some(m) = self.clients[c].machine.as_mut() {
                let next = m.begin_shutdown(&mut self.w);
                self.act(c, next);
            }
        }
    }

    /// What must hold between turns: a buffer is out of the pool exactly while a machine
    /// holds it, and the gauges count the machines parked and streaming.
    fn check(&self, when: &str) {
        let live = || self.clients.iter().filter_map(|c| c.machine.as_ref());
        let holding = live().filter(|m| m.holds_buffer()).count();
        assert_eq!(
            self.w.pool.in_use(),
            holding,
            "{when}: buffers out of the pool"
        );
        let parked = live()
            .filter(|m| matches!(m.phase(), Phase::Parked(_)))
            .count();
        let streaming = live()
            .filter(|m| matches!(m.phase(), Phase::Streaming(_)))
            .count();
        let metrics = &self.w.shared.metrics;
        assert_eq!(metrics.parked.get(), parked as i64, "{when}: parked gauge");
        assert_eq!(
            metrics.streaming.get(),
            streaming as i64,
            "{when}: streaming gauge"
        );
        assert_eq!(metrics.internal_errors.get(), 0, "{when}: internal errors");
    }

    /// One operation read from the input.
    fn op(&mut self, op: u8, input: &mut Bytes<'_>) {
        let c = usize::from(op >> 4) % self.clients.len();
        match op & 15 {
            // The client reads: its window grows, the server may write.
            2 => {
                let room = usize::from(input.byte().unwrap_or(0)) * 16;
                self.clients[c].window += room;
                self.writable(c);
            }
            3 => self.w.now += u64::from(input.byte().unwrap_or(0)) * 25,
            // The client hangs up.
            4 => {
                self.clients[c].hung_up = true;
                self.readable(c);
            }
            5 => {
                let b = input.byte().unwrap_or(0);
                let channel = CHANNELS[usize::from(b) % CHANNELS.len()];
                let draft = Draft::with_body(format!("pub{b}"));
                let _ = self
                    .w
                    .shared
                    .hub
                    .publish(channel, vec![draft], Origin::Comet, false);
            }
            // The connection fails (an I/O error closes it), or a new one takes its key.
            6 => {
                if self.clients[c].machine.is_some() {
                    self.close(c);
                } else if !self.shutdown {
                    let gen = self.gen();
                    let machine = HttpConn::new(c, gen, false, &mut self.w);
                    self.clients[c] = Client {
                        machine: Some(machine),
                        gen,
                        outbox: Vec::new(),
                        sent: 0,
                        hung_up: false,
                        window: 0,
                        shut: false,
                    };
                }
            }
            7 if !self.shutdown => self.begin_shutdown(),
            8 => {
                self.w.shared.hub.sweep();
            }
            // A spurious readable event.
            9 => self.readable(c),
            // The client sends a piece: a length byte, then that many bytes.
            _ => {
                let n = usize::from(input.byte().unwrap_or(0));
                let piece = input.take(n);
                let client = &mut self.clients[c];
                if !client.hung_up && !client.shut {
                    client.outbox.extend_from_slice(piece);
                }
                self.readable(c);
            }
        }
    }
}

/// The HTTP connection machine (`conn::http::HttpConn`) with a worker and a virtual clock,
/// driven by the input as the reactor would drive it: a control byte (bits 0-1: clients;
/// 2: small limits; 3: a Talk coalescing hold; 4: the first client is in the admin reserve;
/// 5: newline-terminated Talk records; 6: small channels and queues), then operations, each a
/// byte (low 4 bits: what; high 4 bits: which client) and its arguments: `0`/`1`/`10`-`15`
/// send (a length byte, then the bytes), `2` read (a byte: window × 16), `3` advance the
/// clock (a byte × 25 ms), `4` hang up, `5` publish on a channel (a byte), `6` fail or
/// reconnect, `7` shut down, `8` sweep the hub, `9` a spurious readable event. After every
/// turn the buffer pool and the gauges match the machines; at the end the clients read
/// everything, the clock runs past every deadline, the server shuts down, every connection
/// must be gone, and nothing may be left in use.
pub fn machine(data: &[u8]) {
    let mut input = Bytes(data);
    let Some(ctl) = input.byte() else {
        return;
    };
    let mut h = Driver::new(ctl);
    let mut ops = 0;
    while let Some(op) = input.byte() {
        ops += 1;
        if ops > MAX_OPS {
            break;
        }
        h.op(op, &mut input);
        h.turn();
        h.check("after an operation");
    }
    // The clients read everything; every long-poll and keep-alive times out.
    for _ in 0..8 {
        h.w.now += 2500;
        for c in 0..h.clients.len() {
            h.clients[c].window = usize::MAX / 2;
            h.readable(c);
            h.writable(c);
        }
        h.turn();
        h.check("while draining");
    }
    if !h.shutdown {
        h.begin_shutdown();
    }
    // Streams end, answers are written, lingering connections see their clients' EOF or
    // time out.
    for _ in 0..8 {
        h.w.now += 1000;
        for c in 0..h.clients.len() {
            h.clients[c].window = usize::MAX / 2;
            h.writable(c);
            if h.clients[c].shut {
                h.clients[c].hung_up = true;
                h.readable(c);
            }
        }
        h.turn();
        h.check("while shutting down");
    }
    let left: Vec<usize> = (0..h.clients.len())
        .filter(|&c| h.clients[c].machine.is_some())
        .collect();
    assert!(
        left.is_empty(),
        "connections {left:?} still open after shutdown and linger"
    );
    for c in 0..h.clients.len() {
        h.close(c);
    }
    let m = &h.w.shared.metrics;
    assert_eq!(h.w.pool.in_use(), 0, "buffers back in the pool");
    assert_eq!(m.parked.get(), 0, "parked gauge");
    assert_eq!(m.streaming.get(), 0, "streaming gauge");
    assert!(h.w.subs.is_empty(), "no waiter left");
}

/// Every token of an XMPP byte stream, fed as growing prefixes ending at `cuts` (then the
/// whole), consuming each token's bytes as the connection does: the tokens' bytes, and the
/// error that ended the stream if any.
fn xmpp_tokens(
    stream: &[u8],
    max: usize,
    cuts: &[u8],
) -> (
    Vec<Vec<u8>>,
    Option<crate::proto::xmpp::tokenizer::XmlError>,
) {
    use crate::proto::xmpp::tokenizer::{Token, Tokenizer};
    let mut t = Tokenizer::new(max);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut end = 0usize;
    for piece in cuts.iter().map(|&c| usize::from(c)).chain([usize::MAX]) {
        end = end.saturating_add(piece).min(stream.len());
        loop {
            match t.next(&stream[start..end]) {
                Ok(Some(tok)) => {
                    let (a, b) = match tok {
                        Token::StreamOpen { end } | Token::StreamClose { end } => (0, end),
                        Token::Stanza { start, end } => (start, end),
                        // The document is over before it began: nothing more is read.
                        Token::EmptyRoot { end } => {
                            out.push(stream[start..start + end].to_vec());
                            return (out, None);
                        }
                    };
                    assert!(a <= b && start + b <= end, "a token within the input");
                    out.push(stream[start + a..start + b].to_vec());
                    start += b;
                    t.consumed(b);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        if end == stream.len() {
            break;
        }
    }
    (out, None)
}

/// The XMPP stream tokenizer, the stanza parser and the session machine on arbitrary bytes.
/// Oracles: the tokens (and the error) are the same whether the bytes arrive whole or in the
/// pieces the input chooses; every stanza token parses or is refused without a panic; the
/// session never consumes more than it was given and never panics.
pub fn xmpp_stream(data: &[u8]) {
    use crate::proto::xmpp::{sasl, session, stanza};
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let max = [64, 1024, 65536, 1 << 20][usize::from(ctl >> 6)];
    let (cuts, stream) = rest.split_at(usize::from(ctl & 15).min(rest.len()));
    let whole = xmpp_tokens(stream, max, &[]);
    let pieces = xmpp_tokens(stream, max, cuts);
    assert_eq!(whole, pieces, "tokens fed in pieces vs whole");
    for tok in &whole.0 {
        let _ = stanza::parse(tok);
    }

    struct Env;
    impl sasl::Users for Env {
        fn password(&self, user: &str) -> Option<Vec<u8>> {
            (user == "user").then(|| b"secret".to_vec())
        }
    }
    impl session::Env for Env {
        fn users(&self) -> &dyn sasl::Users {
            self
        }
        fn bind(&mut self, _: &str) {}
        fn route(&mut self, _: &str, _: String) {}
        fn urn_m(&mut self, _: &str, _: &stanza::Element, _: &[u8]) -> Option<String> {
            None
        }
    }
    let mut s = session::Session::new(max);
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0usize;
    for piece in cuts.iter().map(|&c| usize::from(c)).chain([usize::MAX]) {
        let next = at.saturating_add(piece).min(stream.len());
        pending.extend_from_slice(&stream[at..next]);
        at = next;
        let mut out = String::new();
        match s.feed(&pending, "localhost", &mut out, &mut Env) {
            session::Fed::More { consumed } => {
                assert!(consumed <= pending.len(), "consumed within the input");
                pending.drain(..consumed);
            }
            session::Fed::Close => return,
        }
        if at == stream.len() {
            break;
        }
    }
}
