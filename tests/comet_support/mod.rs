//! Helpers for the Simple Comet Protocol tests (`tests/comet_*.rs`, `tests/browser_demo.rs`):
//! an in-process server on `127.0.0.1:0`, a raw HTTP/1.1 client over a blocking loopback
//! socket whose every read is bounded by a deadline, comet request builders, and a reader for
//! Talk's chunked streams.
//!
//! Nothing here sleeps to synchronise. Reads wait for bytes until a deadline; `wait_for`
//! polls a condition until a deadline. `Conn::expect_silence` is the one fixed wait: it proves
//! a negative ("no answer within N ms") and its callers keep N short.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidings::{Config, Handle, Server};

/// The longest any single expectation waits for the server.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A server started in this process on an ephemeral loopback port; shut down on drop.
pub struct TestServer {
    server: Option<Server>,
    pub handle: Handle,
    pub addr: SocketAddr,
}

/// Loopback, port 0, two workers (so parked requests spread over both), quiet logs.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        log_level: tidings::log::Level::Error,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Starts a server with `config()`.
pub fn start() -> TestServer {
    start_with(|_| {})
}

/// Starts a server with `config()` changed by `tweak`.
pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut c = config();
    tweak(&mut c);
    let server = Server::start(c).expect("server starts");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the server reports the port it bound");
    TestServer {
        handle: server.handle(),
        addr,
        server: Some(server),
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.handle.shutdown();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                server.join();
                let _ = tx.send(());
            });
            // A server that does not stop must not hang the test binary; the test's own
            // assertions have already run.
            if rx.recv_timeout(TIMEOUT).is_err() && !std::thread::panicking() {
                panic!("Server::join did not return within {TIMEOUT:?}");
            }
        }
    }
}

impl TestServer {
    /// A new keep-alive client connection.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// `GET target` on a fresh connection.
    pub fn get(&self, target: &str) -> Response {
        let mut c = self.connect();
        c.send(&get(target));
        c.read_response()
    }

    /// `GET /comet?<query>` on a fresh connection.
    pub fn comet(&self, query: &str) -> Response {
        self.get(&format!("/comet?{query}"))
    }

    /// `method=put` of `message` (percent-encoded here) on `channel`; asserts a 200 JSON
    /// `{"time":T}` and returns `T`.
    pub fn put(&self, channel: &str, message: &str) -> u64 {
        let r = self.comet(&format!(
            "method=put&channel={}&message={}",
            enc(channel),
            enc(message)
        ));
        time_of(&r, "put")
    }

    /// `method=sync` on `channel`; returns the clock it answered.
    pub fn sync(&self, channel: &str) -> u64 {
        let r = self.comet(&format!("method=sync&channel={}", enc(channel)));
        time_of(&r, "sync")
    }

    /// `method=get` after `time` on `channel`, on a fresh connection; asserts a 200 and
    /// returns the parsed JSON.
    pub fn get_after(&self, channel: &str, time: u64) -> Value {
        let r = self.comet(&format!("method=get&channel={}&time={time}", enc(channel)));
        assert_eq!(r.status, 200, "get: {}", show(&r.body));
        r.json()
    }

    /// The text of `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics");
        r.text().to_string()
    }

    /// One sample of `GET /metrics`, if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics_text(), name)
    }

    /// Polls `GET /metrics` until sample `name` equals `value` or `limit` passes.
    /// Returns how long it took; panics with the last value seen otherwise.
    pub fn wait_metric(&self, name: &str, value: f64, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let mut last = None;
        let ok = wait_for(limit, || {
            last = self.metric(name);
            last == Some(value)
        });
        assert!(
            ok,
            "metric {name}: wanted {value} within {limit:?}, last saw {last:?}"
        );
        t0.elapsed()
    }

    /// Waits until `n` requests are parked (the server's own gauge).
    pub fn wait_parked(&self, n: i64) {
        let mut last = 0;
        let ok = wait_for(TIMEOUT, || {
            last = self.handle.metrics().parked.get();
            last == n
        });
        assert!(ok, "wanted {n} parked requests, have {last}");
    }
}

/// Asserts a 200 JSON reply `{"time":T}` (nothing else) and returns `T`.
pub fn time_of(r: &Response, what: &str) -> u64 {
    assert_eq!(r.status, 200, "{what}: {}", show(&r.body));
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
    let v = r.json();
    let obj = v.as_object().expect("a JSON object");
    assert_eq!(obj.len(), 1, "{what} answers only the time: {v}");
    v["time"].as_u64().expect("time is a non-negative integer")
}

/// The `time` of a get reply.
pub fn reply_time(v: &Value) -> u64 {
    v["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("no time in {v}"))
}

/// The `(time, data)` pairs of a get reply.
pub fn messages(v: &Value) -> Vec<(u64, Value)> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {v}"))
        .iter()
        .map(|m| {
            let obj = m.as_object().expect("a message is an object");
            assert_eq!(obj.len(), 2, "a message has exactly time and data: {m}");
            (m["time"].as_u64().expect("message time"), m["data"].clone())
        })
        .collect()
}

/// Whether a get reply carries `"missed":true` (and checks it is never anything else).
pub fn missed(v: &Value) -> bool {
    match v.get("missed") {
        None => false,
        Some(Value::Bool(true)) => true,
        Some(other) => panic!("missed must be absent or true, got {other} in {v}"),
    }
}

/// Calls `cond` until it holds or `limit` passes, polling every few milliseconds.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The value of sample `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Percent-encodes everything but unreserved characters (RFC 3986), byte by byte.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET target HTTP/1.1` with a Host header.
pub fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `POST path` with a body of `content_type`.
pub fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A form-encoded `POST path`.
pub fn post_form(path: &str, body: &str) -> Vec<u8> {
    post(path, "application/x-www-form-urlencoded", body.as_bytes())
}

/// Shows bytes readably in assertion messages.
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body parsed as JSON (panics with the body otherwise).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", show(&self.body)))
    }
}

/// A raw HTTP client over a blocking loopback socket. Every read has a deadline.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` in one call.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads more bytes into the buffer, waiting at most until `deadline`.
    /// `Ok(0)`: the peer closed.
    fn fill(&mut self, deadline: Instant) -> Result<usize, String> {
        let now = Instant::now();
        if now >= deadline {
            return Err("deadline passed".into());
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .expect("set_read_timeout");
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("deadline passed".into())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(0)
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Reads one response (head and `Content-Length` body) within `limit`.
    pub fn try_read_response(&mut self, limit: Duration) -> Result<Response, String> {
        let deadline = Instant::now() + limit;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill(deadline) {
                Ok(0) => return Err(format!("closed before a head: {}", show(&self.buf))),
                Ok(_) => {}
                Err(e) => return Err(format!("{e} waiting for a head: {}", show(&self.buf))),
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        assert!(
            version.starts_with("HTTP/1."),
            "status line {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header has a colon");
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .map(|(_, v)| v.parse().expect("numeric Content-Length"))
            .unwrap_or(0);
        while self.buf.len() < head_end + len {
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(format!(
                        "closed after {} of {len} body bytes",
                        self.buf.len() - head_end
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{e} waiting for a {len}-byte body")),
            }
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads one response within `TIMEOUT`.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(TIMEOUT)
            .unwrap_or_else(|e| panic!("no response: {e}"))
    }

    /// Sends `bytes` and reads one response.
    pub fn roundtrip(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// Asserts that nothing arrives for `d` (the connection stays open and silent).
    pub fn expect_silence(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        match self.fill(deadline) {
            Err(_) if self.buf.is_empty() => {}
            Ok(0) => panic!("the server closed the connection"),
            _ => panic!("unexpected bytes: {}", show(&self.buf)),
        }
    }

    /// Reads exactly `n` bytes within `TIMEOUT`.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) => panic!("closed after {}: {}", self.buf.len(), show(&self.buf)),
                Ok(_) => {}
                Err(e) => panic!("{e} waiting for {n} bytes, have {}", show(&self.buf)),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until `pattern` (included) within `TIMEOUT`.
    pub fn read_until(&mut self, pattern: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(i) = find(&self.buf, pattern) {
                return self.buf.drain(..i + pattern.len()).collect();
            }
            match self.fill(deadline) {
                Ok(0) => panic!("closed waiting for {}: {}", show(pattern), show(&self.buf)),
                Ok(_) => {}
                Err(e) => panic!("{e} waiting for {}: {}", show(pattern), show(&self.buf)),
            }
        }
    }

    /// Closes both directions: the client hangs up.
    pub fn hang_up(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A Talk pull stream (`Head: less`): reads chunks and splits them into NUL-terminated
/// records.
pub struct TalkStream {
    conn: Conn,
    records: std::collections::VecDeque<Vec<u8>>,
}

impl TalkStream {
    /// Opens `GET /pull?<query>` with `Head: less` and reads the exact head and the `noop`
    /// greeting.
    pub fn open(server: &TestServer, query: &str) -> TalkStream {
        let mut conn = server.connect();
        conn.send(format!("GET /pull?{query} HTTP/1.1\r\nHead: less\r\n\r\n").as_bytes());
        let head = conn.read_until(b"\r\n\r\n");
        assert_eq!(
            head, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "headless pull head"
        );
        let mut s = TalkStream {
            conn,
            records: Default::default(),
        };
        assert_eq!(s.next_record(), b"noop", "greeting");
        s
    }

    /// The next record (terminator removed), reading chunks as needed within `TIMEOUT`.
    pub fn next_record(&mut self) -> Vec<u8> {
        while self.records.is_empty() {
            let size_line = self.conn.read_until(b"\r\n");
            let size_hex = std::str::from_utf8(&size_line[..size_line.len() - 2]).unwrap();
            let size = usize::from_str_radix(size_hex, 16)
                .unwrap_or_else(|_| panic!("chunk size line {}", show(&size_line)));
            assert_ne!(size, 0, "the stream ended");
            let data = self.conn.read_exact_bytes(size + 2);
            assert_eq!(&data[size..], b"\r\n", "chunk ends with CRLF");
            let data = &data[..size];
            assert_eq!(data.last(), Some(&0), "a chunk holds whole records");
            for r in data[..size - 1].split(|&b| b == 0) {
                self.records.push_back(r.to_vec());
            }
        }
        self.records.pop_front().unwrap()
    }

    /// The next record that is not a keep-alive `noop`.
    pub fn next_message(&mut self) -> Vec<u8> {
        loop {
            let r = self.next_record();
            if r != b"noop" {
                return r;
            }
        }
    }
}
