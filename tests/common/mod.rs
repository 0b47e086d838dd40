//! Shared helpers for the integration tests: a real server on an ephemeral loopback port, a
//! raw-bytes HTTP/1.1 client on one keep-alive connection whose every read is bounded by a
//! deadline, a response parser, a reader for Talk's chunked streams and a metrics poller.
//!
//! The Talk, HTTP, metrics and embedding tests use this module directly; the QST tests
//! (`tests/qst_support`) and the Simple Comet tests (`tests/comet_support`) include it and add
//! their protocol's helpers on top.
//!
//! Nothing here sleeps to synchronise: reads wait for bytes with a deadline, and `wait_for`
//! polls a condition with a deadline. The only fixed waits are `Client::expect_silence`,
//! which proves a negative ("nothing arrives within N ms") and is kept short by its callers.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tidings::metrics::Metrics;

pub mod python;
use tidings::{Config, Handle, Server};

/// The longest any single expectation waits for the server.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A server started on `127.0.0.1:0` in this process, shut down and joined on drop.
pub struct TestServer {
    server: Option<Server>,
    pub handle: Handle,
    pub addr: SocketAddr,
    /// The XMPP listener, when the test turned it on.
    pub xmpp: Option<SocketAddr>,
}

/// The configuration every test starts from: loopback, port 0, two workers, quiet logs,
/// a short shutdown grace so a failing test does not hang in `Drop`.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        // XMPP tests turn it on at port 0; the others leave 5222 alone.
        xmpp_listen: None,
        workers: 2,
        log_level: tidings::log::Level::Error,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Starts a server with the test configuration.
pub fn start() -> TestServer {
    start_with(|_| {})
}

/// Starts a server with the test configuration changed by `tweak`.
pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = test_config();
    tweak(&mut config);
    let server = Server::start(config).expect("server starts");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the server reports the port it bound");
    TestServer {
        handle: server.handle(),
        addr,
        xmpp: server.xmpp_addr(),
        server: Some(server),
    }
}

impl TestServer {
    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Opens a Talk stream: `GET <target>` (headless when `headless`), and reads the head
    /// and the greeting `noop` chunk.
    pub fn pull(&self, target: &str, headless: bool) -> StreamReader {
        self.pull_with_term(target, headless, 0)
    }

    /// As `pull`, for a server whose terminator is `term`.
    pub fn pull_with_term(&self, target: &str, headless: bool, term: u8) -> StreamReader {
        let mut s = StreamReader::open(self.connect(), target, headless, term);
        s.expect_greeting();
        s
    }

    /// One request on a fresh connection; returns the parsed response.
    pub fn request(&self, raw: &[u8]) -> Response {
        self.connect().roundtrip(raw)
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.connect().get(path)
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        self.handle.metrics()
    }

    /// The text of `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics");
        r.body_str().to_string()
    }

    /// The value of one sample of `GET /metrics` (`name` includes any labels), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics_text(), name)
    }

    /// Polls `GET /metrics` until the sample `name` equals `value`, within `TIMEOUT`.
    pub fn wait_metric(&self, name: &str, value: f64) {
        self.wait_metric_within(name, value, TIMEOUT);
    }

    /// Polls `GET /metrics` until the sample `name` equals `value` or `limit` passes.
    /// Returns how long it took; panics with the last value seen otherwise.
    pub fn wait_metric_within(&self, name: &str, value: f64, limit: Duration) -> Duration {
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
            last = self.metrics().parked.get();
            last == n
        });
        assert!(ok, "wanted {n} parked requests, have {last}");
    }

    /// Shuts the server down and waits for its workers, at most `limit`. Returns how long
    /// `join` took. Panics if it did not return in time.
    pub fn shutdown_and_join(mut self, limit: Duration) -> Duration {
        let server = self.server.take().expect("server still running");
        let t0 = Instant::now();
        self.handle.shutdown();
        assert!(
            join_within(server, limit),
            "Server::join did not return within {limit:?}"
        );
        t0.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.handle.shutdown();
            // A server that does not stop must not hang the test binary; the test's own
            // assertions have already run.
            if !join_within(server, TIMEOUT) && !std::thread::panicking() {
                panic!("Server::join did not return within {TIMEOUT:?}");
            }
        }
    }
}

/// Joins `server` on another thread; whether that returned within `limit`.
fn join_within(server: Server, limit: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        server.join();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}

/// Calls `cond` until it is true or `limit` passes (polling every few milliseconds).
/// Returns whether it became true.
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

/// The value of the sample `name` (with its labels, if any) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The bytes of one request: `Host` first, then `headers`, then `Content-Length` when there
/// is a body or the method is `POST`, then the body.
pub fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `GET path HTTP/1.1` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    request_bytes("GET", path, &[], b"")
}

/// `POST path` with a body of `content_type` and Content-Length.
pub fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    request_bytes("POST", path, &[("Content-Type", content_type)], body)
}

/// A form-encoded `POST path` with Content-Length.
pub fn post_form(path: &str, body: &str) -> Vec<u8> {
    post(path, "application/x-www-form-urlencoded", body.as_bytes())
}

/// A headless Talk push as the reference clients send it: `Head: less`, no Content-Length.
pub fn headless_push(body: &str) -> Vec<u8> {
    format!("POST /push HTTP/1.1\r\nHead: less\r\n\r\n{body}").into_bytes()
}

/// The exact reply to a successful headless push (PROTOCOLS.md 3.2).
pub const HEADLESS_PUSH_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nnoop";
/// The exact head of a headless pull (PROTOCOLS.md 3.1).
pub const HEADLESS_PULL_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
/// The chunk that ends a stream.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Shows bytes readably in assertion messages.
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// A raw HTTP client over a blocking loopback socket. Every read has a deadline.
pub struct Client {
    pub stream: TcpStream,
    /// Bytes received but not yet consumed.
    buf: Vec<u8>,
    eof: bool,
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head, blank line included.
    pub head: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many headers are called `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body as UTF-8 text (the same as `text`).
    pub fn body_str(&self) -> &str {
        self.text()
    }

    /// The `ETag` value; panics when the header is missing.
    pub fn etag(&self) -> &str {
        self.header("ETag")
            .unwrap_or_else(|| panic!("no ETag header in {}", self.show()))
    }

    /// Whether the head holds exactly this header line (`"ETag: mo-2"`), CRLF-terminated.
    pub fn has_line(&self, line: &str) -> bool {
        find(&self.head, format!("\r\n{line}\r\n").as_bytes()).is_some()
    }

    /// The response, readably, for assertion messages.
    pub fn show(&self) -> String {
        format!("{}{}", show(&self.head), show(&self.body))
    }
}

fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to the server");
        stream.set_nodelay(true).unwrap();
        Client::from_stream(stream)
    }

    /// A client whose socket has a small receive buffer (set before connecting), so that
    /// what the server sends backs up quickly when the client does not read.
    pub fn connect_small_window(addr: SocketAddr) -> Client {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        sock.connect_timeout(&addr.into(), TIMEOUT)
            .expect("connect to the server");
        let stream: TcpStream = sock.into();
        stream.set_nodelay(true).unwrap();
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        // Writes are bounded too: a server that stops reading fails the test, not hangs it.
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {:?}: {e}", show(bytes)));
    }

    /// Sends `bytes` and reads one response.
    pub fn roundtrip(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// Writes one request (see `request_bytes`).
    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        self.send(&request_bytes(method, target, headers, body));
    }

    /// Sends one request and reads its response (no body after a `HEAD`).
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_request(method, target, headers, body);
        if method == "HEAD" {
            self.read_head_response()
        } else {
            self.read_response()
        }
    }

    /// `GET target`.
    pub fn get(&mut self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    /// Closes both directions: the client hangs up.
    pub fn hang_up(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Bytes received and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// One read into the buffer, waiting at most until `deadline`.
    /// `Ok(n)`: `n` bytes arrived (0: EOF). `Err(TimedOut)`: the deadline passed.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(io::ErrorKind::TimedOut.into())
                }
                Err(e) if is_closed_error(&e) => {
                    self.eof = true;
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to and including the first `pattern`, within `limit`. `Err` describes what
    /// arrived instead (a timeout or EOF).
    pub fn try_read_until(&mut self, pattern: &[u8], limit: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = find(&self.buf, pattern) {
                return Ok(self.buf.drain(..i + pattern.len()).collect());
            }
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(format!(
                        "EOF before {:?}; got {:?}",
                        show(pattern),
                        show(&self.buf)
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "{e} waiting {limit:?} for {:?}; got {:?}",
                        show(pattern),
                        show(&self.buf)
                    ))
                }
            }
        }
    }

    /// Reads up to and including the first `pattern`; panics after `limit`.
    pub fn read_until(&mut self, pattern: &[u8], limit: Duration) -> Vec<u8> {
        self.try_read_until(pattern, limit)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads exactly `n` bytes within `limit`, or `Err` saying what came instead.
    pub fn try_read_exact(&mut self, n: usize, limit: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + limit;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(format!(
                        "EOF after {} of {n} bytes: {:?}",
                        self.buf.len(),
                        show(&self.buf)
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "{e} after {} of {n} bytes: {:?}",
                        self.buf.len(),
                        show(&self.buf)
                    ))
                }
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads exactly `n` bytes within `TIMEOUT`.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        self.try_read_exact(n, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub fn expect_bytes(&mut self, expected: &[u8]) {
        let got = self.read_exact_bytes(expected.len());
        assert_eq!(
            show(&got),
            show(expected),
            "bytes differ from the expected ones"
        );
    }

    /// Reads a response head (through the blank line) and parses it.
    pub fn read_head(&mut self) -> Response {
        let head = self.read_until(b"\r\n\r\n", TIMEOUT);
        parse_head(head)
    }

    /// Reads one response: the head, then a body framed by `Transfer-Encoding: chunked`,
    /// `Content-Length`, or (for other than 1xx/204/304) the end of the connection.
    pub fn read_response(&mut self) -> Response {
        let mut r = self.read_head();
        if r.status < 200 || r.status == 204 || r.status == 304 {
            return r;
        }
        let chunked = r
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            let mut body = Vec::new();
            while let Some(data) = self.read_chunk() {
                body.extend_from_slice(&data);
            }
            r.body = body;
        } else if let Some(n) = r.header("Content-Length") {
            let n: usize = n.trim().parse().expect("numeric Content-Length");
            r.body = self.read_exact_bytes(n);
        } else {
            r.body = self.read_to_eof();
        }
        r
    }

    /// Reads the response to a `HEAD` request: a head and no body whatever it announces.
    pub fn read_head_response(&mut self) -> Response {
        self.read_head()
    }

    /// Reads one chunk of a chunked body, strictly: a lowercase hex size with no extension,
    /// CRLF, the data, CRLF. `None` for the last chunk (`0\r\n\r\n`, no trailers).
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        self.try_read_chunk(TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As `read_chunk`, waiting at most `limit` for the chunk to begin. `Err` on a timeout
    /// (nothing consumed if the size line had not arrived), EOF or a framing error.
    pub fn try_read_chunk(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, String> {
        let line = self.try_read_until(b"\r\n", limit)?;
        let size_text = &line[..line.len() - 2];
        let valid = !size_text.is_empty()
            && size_text
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if !valid {
            return Err(format!(
                "bad chunk size line {:?} (want lowercase hex, no extension); then {:?}",
                show(&line),
                show(&self.buf)
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap(), 16)
            .map_err(|e| format!("chunk size {:?}: {e}", show(size_text)))?;
        if size == 0 {
            let end = self.try_read_exact(2, TIMEOUT)?;
            if end != b"\r\n" {
                return Err(format!("last chunk not followed by CRLF: {:?}", show(&end)));
            }
            return Ok(None);
        }
        let data = self.try_read_exact(size + 2, TIMEOUT)?;
        if &data[size..] != b"\r\n" {
            return Err(format!(
                "chunk of {size} bytes not followed by CRLF: {:?}",
                show(&data)
            ));
        }
        Ok(Some(data[..size].to_vec()))
    }

    /// Reads everything until the peer closes (within `TIMEOUT`).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.fill(deadline) {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(_) => {}
                Err(e) => panic!(
                    "{e}: connection still open after {TIMEOUT:?}; got {:?}",
                    show(&self.buf)
                ),
            }
        }
    }

    /// Asserts the server closes the connection within `TIMEOUT` without sending anything
    /// more. Returns how long it took.
    pub fn expect_closed(&mut self) -> Duration {
        self.expect_closed_within(TIMEOUT)
    }

    /// Asserts the server closes the connection within `limit` without sending anything
    /// more. Returns how long it took.
    pub fn expect_closed_within(&mut self, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let deadline = t0 + limit;
        loop {
            match self.fill(deadline) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "{e}: connection not closed within {limit:?}; got {:?}",
                    show(&self.buf)
                ),
            }
        }
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:?}",
            show(&self.buf)
        );
        t0.elapsed()
    }

    /// Asserts that nothing arrives (and the connection stays open) for `d`. Use sparingly,
    /// with short durations: it is the one fixed wait, for proving a negative.
    pub fn expect_silence(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        match self.fill(deadline) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Ok(0) => panic!("connection closed; buffered {:?}", show(&self.buf)),
            Ok(_) => panic!("unexpected bytes: {:?}", show(&self.buf)),
            Err(e) => panic!("read error: {e}"),
        }
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            show(&self.buf)
        );
    }

    /// Whether the connection is still open: nothing arrives and no EOF within `d`.
    pub fn is_open_for(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        matches!(self.fill(deadline), Err(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

/// Parses a response head (status line, headers, blank line).
pub fn parse_head(head: Vec<u8>) -> Response {
    let text = std::str::from_utf8(&head)
        .unwrap_or_else(|_| panic!("non-UTF-8 head {:?}", show(&head)))
        .to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "bad status line {status_line:?} in {:?}",
        show(&head)
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?} in {:?}", show(&head)));
        assert!(
            !name.is_empty() && !name.contains(' '),
            "bad header name in {line:?}"
        );
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        head,
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One piece of a Talk stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// A data chunk: one or more whole records.
    Data(Vec<u8>),
    /// `0\r\n\r\n`: the stream ended.
    Last,
}

/// A Talk stream being read: the response head, then chunks of terminated records.
pub struct StreamReader {
    pub client: Client,
    pub head: Response,
    pub term: u8,
    /// Every chunk read so far, in order (for assertions on chunking).
    pub chunks: Vec<Chunk>,
    /// Records read but not yet taken by `next_message`.
    queued: std::collections::VecDeque<Vec<u8>>,
}

impl StreamReader {
    /// Sends `GET target` (with `Head: less` when `headless`) and reads the response head.
    /// A headless head must be byte-exact (PROTOCOLS.md 3.1).
    pub fn open(mut client: Client, target: &str, headless: bool, term: u8) -> StreamReader {
        let req = if headless {
            format!("GET {target} HTTP/1.1\r\nHead: less\r\n\r\n")
        } else {
            format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n")
        };
        client.send(req.as_bytes());
        StreamReader::after_request(client, headless, term)
    }

    /// Reads the head of a pull whose request was already sent.
    pub fn after_request(mut client: Client, headless: bool, term: u8) -> StreamReader {
        let head = if headless {
            let raw = client.read_exact_bytes(HEADLESS_PULL_HEAD.len());
            assert_eq!(show(&raw), show(HEADLESS_PULL_HEAD), "headless pull head");
            parse_head(raw)
        } else {
            client.read_head()
        };
        assert_eq!(head.status, 200, "pull answered {:?}", show(&head.head));
        assert_eq!(
            head.header("Transfer-Encoding"),
            Some("chunked"),
            "a stream is chunked"
        );
        StreamReader {
            client,
            head,
            term,
            chunks: Vec::new(),
            queued: Default::default(),
        }
    }

    /// A reader for a headless stream whose head and greeting the caller already read
    /// (and checked byte for byte).
    pub fn headless_after_greeting(client: Client, term: u8) -> StreamReader {
        StreamReader {
            client,
            head: parse_head(HEADLESS_PULL_HEAD.to_vec()),
            term,
            chunks: Vec::new(),
            queued: Default::default(),
        }
    }

    /// The next chunk within `TIMEOUT`; checks that a data chunk holds whole records.
    pub fn next_chunk(&mut self) -> Chunk {
        self.try_next_chunk(TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next chunk within `limit`, or `Err` (a timeout, EOF, bad framing).
    pub fn try_next_chunk(&mut self, limit: Duration) -> Result<Chunk, String> {
        let chunk = match self.client.try_read_chunk(limit)? {
            None => Chunk::Last,
            Some(data) => {
                assert!(!data.is_empty());
                assert_eq!(
                    data.last(),
                    Some(&self.term),
                    "a chunk must end with a whole record: {:?}",
                    show(&data)
                );
                Chunk::Data(data)
            }
        };
        self.chunks.push(chunk.clone());
        Ok(chunk)
    }

    /// The records of the next chunk (panics on the last chunk).
    pub fn next_records(&mut self) -> Vec<Vec<u8>> {
        match self.next_chunk() {
            Chunk::Data(d) => split_records(&d, self.term),
            Chunk::Last => panic!("the stream ended; chunks so far: {:?}", self.chunks),
        }
    }

    /// Reads the greeting: the first chunk must be exactly `noop` + terminator.
    pub fn expect_greeting(&mut self) {
        let recs = self.next_records();
        assert_eq!(recs, vec![b"noop".to_vec()], "greeting chunk");
    }

    /// The next record that is not a keep-alive `noop`, within `TIMEOUT`.
    pub fn next_message(&mut self) -> Vec<u8> {
        self.try_next_message(TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next record that is not a `noop`, within `limit`.
    pub fn try_next_message(&mut self, limit: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(r) = self.queued.pop_front() {
                if r != b"noop" {
                    return Ok(r);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next_chunk(left)? {
                Chunk::Data(d) => self.queued.extend(split_records(&d, self.term)),
                Chunk::Last => return Err("the stream ended".into()),
            }
        }
    }

    /// The next message as text.
    pub fn next_text(&mut self) -> String {
        String::from_utf8(self.next_message()).expect("UTF-8 record")
    }

    /// Asserts no message (keep-alive `noop`s aside) arrives within `d`.
    pub fn expect_no_message(&mut self, d: Duration) {
        if let Some(r) = self.queued.iter().find(|r| r.as_slice() != b"noop") {
            panic!("unexpected record {:?}", show(r));
        }
        self.queued.clear();
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.client.try_read_chunk(left) {
                Err(e) if e.contains("timed out") && self.client.buffered().is_empty() => return,
                Err(e) => panic!("while expecting silence: {e}"),
                Ok(None) => panic!("the stream ended"),
                Ok(Some(d)) => {
                    for r in split_records(&d, self.term) {
                        assert_eq!(r, b"noop", "unexpected record {:?}", show(&r));
                    }
                }
            }
        }
    }

    /// Asserts the stream ends: skipping keep-alive `noop`s (and failing on any other
    /// record), the last chunk arrives, then EOF.
    pub fn expect_end(&mut self) {
        loop {
            match self.next_chunk() {
                Chunk::Last => break,
                Chunk::Data(d) => {
                    for r in split_records(&d, self.term) {
                        assert_eq!(
                            r,
                            b"noop",
                            "record {:?} before the end of the stream",
                            show(&r)
                        );
                    }
                }
            }
        }
        self.client.expect_closed();
    }
}

/// Splits a chunk's data into records (each must end with `term`).
pub fn split_records(data: &[u8], term: u8) -> Vec<Vec<u8>> {
    assert_eq!(
        data.last(),
        Some(&term),
        "records must be terminated: {:?}",
        show(data)
    );
    data[..data.len() - 1]
        .split(|&b| b == term)
        .map(<[u8]>::to_vec)
        .collect()
}
