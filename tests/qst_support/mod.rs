//! Helpers for the QST integration tests (`tests/qst_*.rs`, `tests/auth.rs`): a real server on
//! an ephemeral loopback port, a raw HTTP/1.1 client on one keep-alive connection whose every
//! read is bounded by a deadline, a reader for QST replies (XML and JSON) that serves as the
//! test oracle, and a reader for Talk's chunked streams for the cross-protocol tests.
//!
//! Nothing here sleeps to synchronise: reads wait for bytes with a deadline and `wait_for`
//! polls a condition with a deadline. The only fixed wait is `Conn::expect_silence`, which
//! proves a negative and is kept short by its callers.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidings::metrics::Metrics;
use tidings::{Config, Handle, Server};

/// The longest any single expectation waits for the server.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The XML declaration real InSTEDD gateways send.
pub const GATEWAY_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#;

/// A server started on `127.0.0.1:0` in this process, shut down and joined on drop.
pub struct TestServer {
    server: Option<Server>,
    pub handle: Handle,
    pub addr: SocketAddr,
    credentials: Option<PathBuf>,
}

/// The configuration every test starts from: loopback, port 0, two workers, quiet logs, a
/// short shutdown grace and a short long-poll timeout so no test waits long.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        log_level: tidings::log::Level::Error,
        shutdown_grace: Duration::from_secs(2),
        long_poll_timeout: Duration::from_millis(400),
        ..Config::default()
    }
}

/// Starts a server with the test configuration.
pub fn start() -> TestServer {
    start_with(|_| {})
}

/// Starts a server with the test configuration changed by `tweak`.
pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut c = config();
    tweak(&mut c);
    launch(c, None)
}

/// Starts a server guarded by a credentials file holding `credentials` (see `proto::auth`:
/// `user:password pattern…` per line), with the test configuration changed by `tweak`.
pub fn start_with_credentials(credentials: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = std::env::temp_dir().join(format!(
        "tidings-qst-test-{}-{}-{nanos}.credentials",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, credentials).expect("write the credentials file");
    let mut c = config();
    c.credentials = Some(path.clone());
    tweak(&mut c);
    launch(c, Some(path))
}

fn launch(config: Config, credentials: Option<PathBuf>) -> TestServer {
    let server = Server::start(config).expect("server starts");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the server reports the port it bound");
    TestServer {
        handle: server.handle(),
        addr,
        server: Some(server),
        credentials,
    }
}

impl TestServer {
    /// A new keep-alive client connection.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        self.handle.metrics()
    }

    /// `POST /qst/{channel}` with `Content-Type: text/xml` on a fresh connection.
    pub fn push_xml(&self, channel: &str, xml: &str) -> Response {
        self.connect().push(channel, "text/xml", xml)
    }

    /// `POST /qst/{channel}` with `Content-Type: application/json` on a fresh connection.
    pub fn push_json(&self, channel: &str, json: &str) -> Response {
        self.connect().push(channel, "application/json", json)
    }

    /// `GET /qst/{channel}?{query}` on a fresh connection (`query` may be empty).
    pub fn pull(&self, channel: &str, query: &str) -> Response {
        self.connect().pull(channel, query)
    }

    /// `HEAD /qst/{channel}` on a fresh connection; returns its `ETag` value.
    pub fn head_etag(&self, channel: &str) -> String {
        let r = self
            .connect()
            .request("HEAD", &format!("/qst/{channel}"), &[], b"");
        assert_eq!(r.status, 200, "HEAD /qst/{channel}: {}", r.show());
        r.etag().to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.handle.shutdown();
            server.join();
        }
        if let Some(path) = self.credentials.take() {
            let _ = std::fs::remove_file(path);
        }
    }
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
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Shows bytes readably in assertion messages.
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The value of an `Authorization` header for HTTP Basic.
pub fn basic(user: &str, password: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}").into_bytes();
    let mut s = String::from("Basic ");
    for c in raw.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Whether `s` is exactly a UTC time `YYYY-MM-DDTHH:MM:SSZ`.
pub fn is_utc_z(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Seconds since the Unix epoch of a `YYYY-MM-DDTHH:MM:SSZ` time (the oracle for "the
/// server's time"): days from the civil date, as in Howard Hinnant's algorithm.
pub fn utc_z_to_unix(s: &str) -> i64 {
    assert!(is_utc_z(s), "not a UTC Z time: {s:?}");
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------
// Request bodies

/// A whole XML push document around `messages` (already-written `<message>` elements), with
/// the declaration real gateways send.
pub fn xml_doc(messages: &str) -> String {
    format!("{GATEWAY_DECL}<messages>{messages}</messages>")
}

/// One v2 `<message>` with an id and a body (and fixed addresses and time).
pub fn xml_msg(id: &str, body: &str) -> String {
    format!(
        r#"<message id="{id}" from="sms://1000" to="sms://2000" when="2010-01-01T23:18:53Z"><body>{body}</body></message>"#
    )
}

/// An XML push document of messages with these ids, each with the body `body of {id}`.
pub fn xml_batch(ids: &[&str]) -> String {
    xml_doc(
        &ids.iter()
            .map(|id| xml_msg(id, &format!("body of {id}")))
            .collect::<String>(),
    )
}

/// Ids `{prefix}-1` … `{prefix}-{n}`.
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

/// `&[String]` as `Vec<&str>`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------
// The client

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The raw head, status line to the blank line included.
    pub head: Vec<u8>,
    /// Header names and raw values, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of this name (case-insensitive), raw value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `ETag` value, raw; panics when the header is missing.
    pub fn etag(&self) -> &str {
        self.header("ETag")
            .unwrap_or_else(|| panic!("no ETag header in {}", self.show()))
    }

    /// Whether the head holds exactly this header line (`"ETag: mo-2"`), CRLF-terminated.
    pub fn has_line(&self, line: &str) -> bool {
        let needle = format!("\r\n{line}\r\n");
        self.head
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }

    /// The response, readably, for assertion messages.
    pub fn show(&self) -> String {
        format!("{}{}", show(&self.head), show(&self.body))
    }

    /// The messages of a QST pull reply, by its `Content-Type`; panics on anything else.
    pub fn messages(&self) -> Vec<Msg> {
        assert_eq!(self.status, 200, "not a successful pull: {}", self.show());
        let ct = self.header("Content-Type").unwrap_or("");
        if ct.starts_with("text/xml") {
            parse_xml(self.text())
        } else if ct.starts_with("application/json") {
            parse_json(self.text())
        } else {
            panic!("unexpected Content-Type {ct:?}: {}", self.show())
        }
    }

    /// The ids of the messages of a QST pull reply, in order.
    pub fn ids(&self) -> Vec<String> {
        self.messages().into_iter().map(|m| m.id).collect()
    }
}

/// A raw HTTP/1.1 client on one blocking loopback connection. Every read has a deadline.
pub struct Conn {
    pub stream: TcpStream,
    /// Bytes received but not yet consumed.
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to the test server");
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Writes one request: `Host` first, then `headers`, then `Content-Length` when there is
    /// a body or the method is `POST`.
    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
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
        self.send(&bytes);
    }

    /// Sends one request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_request(method, target, headers, body);
        self.read_response(method == "HEAD")
    }

    /// `GET target`.
    pub fn get(&mut self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    /// `POST /qst/{channel}` with this `Content-Type`.
    pub fn push(&mut self, channel: &str, content_type: &str, body: &str) -> Response {
        self.request(
            "POST",
            &format!("/qst/{channel}"),
            &[("Content-Type", content_type)],
            body.as_bytes(),
        )
    }

    /// `GET /qst/{channel}?{query}` (`query` may be empty).
    pub fn pull(&mut self, channel: &str, query: &str) -> Response {
        self.get(&qst_target(channel, query))
    }

    /// Reads one response (no body after a `HEAD`), within `TIMEOUT`.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        self.read_response_within(head_request, TIMEOUT)
    }

    /// Reads one response within `limit`. Bodies are framed by `Content-Length` (no
    /// `Content-Length` means no body).
    pub fn read_response_within(&mut self, head_request: bool, limit: Duration) -> Response {
        let deadline = Instant::now() + limit;
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(deadline, "a response head");
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8(head.clone()).expect("response head is UTF-8");
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "status line: {status_line:?}"
        );
        let status: u16 = status_line[9..12].parse().expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line has a colon");
                (n.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .map_or(0, |(_, v)| {
                v.trim().parse::<usize>().expect("Content-Length")
            });
        let length = if head_request { 0 } else { length };
        while self.buf.len() < length {
            self.fill(deadline, "a response body");
        }
        let body = self.buf.drain(..length).collect();
        Response {
            status,
            head,
            headers,
            body,
        }
    }

    /// Reads more bytes into the buffer; panics at `deadline` or end of stream.
    fn fill(&mut self, deadline: Instant, what: &str) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("timed out waiting for {what}; have {:?}", show(&self.buf));
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed while waiting for {what}; have {:?}",
                show(&self.buf)
            ),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read error while waiting for {what}: {e}"),
        }
    }

    /// Asserts that the server closes the connection (within `TIMEOUT`) with nothing more.
    pub fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes {:?}",
            show(&self.buf)
        );
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected bytes {:?}", show(&chunk[..n])),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes {:?}",
            show(&self.buf)
        );
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => panic!("unexpected bytes {:?}", show(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read error: {e}"),
        }
    }
}

/// `/qst/{channel}` with an optional query.
pub fn qst_target(channel: &str, query: &str) -> String {
    if query.is_empty() {
        format!("/qst/{channel}")
    } else {
        format!("/qst/{channel}?{query}")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The reply oracle

/// A message as a pull reply carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg {
    pub id: String,
    pub from: String,
    pub to: String,
    pub when: String,
    pub subject: Option<String>,
    /// `<body>` (XML v2) or `"body"` (JSON).
    pub body: Option<String>,
    /// `<text>` (XML v1).
    pub text: Option<String>,
    pub props: Vec<(String, String)>,
}

impl Msg {
    /// Every value of a property, in order.
    pub fn prop(&self, name: &str) -> Vec<&str> {
        self.props
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Resolves the five predefined entities and numeric character references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let semi = rest[i..].find(';').expect("unterminated reference") + i;
        let name = &rest[i + 1..semi];
        match name {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).expect("hex reference")
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().expect("decimal reference")
                } else {
                    panic!("unknown entity &{name};")
                };
                out.push(char::from_u32(code).expect("valid character reference"));
            }
        }
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}

/// `name="value"` pairs of a start tag's attribute text.
fn attributes(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return out;
        }
        let eq = s.find('=').expect("attribute has =");
        let name = s[..eq].trim().to_string();
        let rest = &s[eq + 1..];
        let quote = rest.chars().next().expect("attribute value");
        assert!(quote == '"' || quote == '\'', "quoted attribute value");
        let end = rest[1..].find(quote).expect("closing quote") + 1;
        out.push((name, unescape(&rest[1..end])));
        s = &rest[end + 1..];
    }
}

/// Parses the XML of a pull reply: `<messages>` of `<message id from to when>` with
/// `<subject>`, `<body>`, `<text>` and `<property name value/>`. Panics on anything that is
/// not well-formed in that shape (the reply must be exactly that).
pub fn parse_xml(doc: &str) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut rest = doc.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").expect("end of the declaration") + 2..];
    }
    let mut current: Option<Msg> = None;
    let mut field: Option<(String, String)> = None;
    let mut root_seen = false;
    let mut root_closed = false;
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..lt];
        match field.as_mut() {
            Some((_, buf)) => buf.push_str(&unescape(text)),
            None => assert!(text.trim().is_empty(), "stray text {text:?} in {doc:?}"),
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        let gt = rest.find('>').expect("end of a tag");
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match name.trim() {
                "messages" => {
                    assert!(current.is_none());
                    root_closed = true;
                }
                "message" => out.push(current.take().expect("</message> closes a message")),
                f @ ("subject" | "body" | "text") => {
                    let (open, value) = field.take().expect("field end closes a field");
                    assert_eq!(open, f, "mismatched tags in {doc:?}");
                    let m = current.as_mut().expect("field inside a message");
                    let slot = match f {
                        "subject" => &mut m.subject,
                        "body" => &mut m.body,
                        _ => &mut m.text,
                    };
                    assert!(slot.is_none(), "repeated <{f}> in {doc:?}");
                    *slot = Some(value);
                }
                other => panic!("unexpected </{other}> in {doc:?}"),
            }
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let attrs = attributes(attrs);
        match name {
            "messages" => {
                assert!(!root_seen, "two roots in {doc:?}");
                root_seen = true;
                root_closed = empty;
            }
            "message" => {
                assert!(
                    root_seen && current.is_none(),
                    "misplaced <message> in {doc:?}"
                );
                let get = |n: &str| {
                    attrs
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("<message> without {n} in {doc:?}"))
                };
                let m = Msg {
                    id: get("id"),
                    from: get("from"),
                    to: get("to"),
                    when: get("when"),
                    ..Msg::default()
                };
                if empty {
                    out.push(m);
                } else {
                    current = Some(m);
                }
            }
            "property" => {
                let get = |n: &str| {
                    attrs
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("<property> without {n} in {doc:?}"))
                };
                let m = current.as_mut().expect("<property> inside a message");
                m.props.push((get("name"), get("value")));
                assert!(empty, "<property> is an empty element");
            }
            f @ ("subject" | "body" | "text") => {
                assert!(current.is_some() && field.is_none(), "misplaced <{f}>");
                if empty {
                    let m = current.as_mut().unwrap();
                    let slot = match f {
                        "subject" => &mut m.subject,
                        "body" => &mut m.body,
                        _ => &mut m.text,
                    };
                    *slot = Some(String::new());
                } else {
                    field = Some((f.to_string(), String::new()));
                }
            }
            other => panic!("unexpected <{other}> in {doc:?}"),
        }
    }
    assert!(
        root_seen && root_closed,
        "no complete <messages> in {doc:?}"
    );
    out
}

/// Parses the JSON of a pull reply: an array of flat objects; every key other than the six
/// known ones is a property (a string, or an array of strings).
pub fn parse_json(doc: &str) -> Vec<Msg> {
    let v: serde_json::Value = serde_json::from_str(doc).expect("pull reply is JSON");
    let arr = v.as_array().expect("pull reply is a JSON array");
    arr.iter()
        .map(|o| {
            let o = o.as_object().expect("each message is an object");
            let s = |k: &str| -> String {
                o.get(k)
                    .unwrap_or_else(|| panic!("message without {k:?}: {doc}"))
                    .as_str()
                    .unwrap_or_else(|| panic!("{k:?} is not a string: {doc}"))
                    .to_string()
            };
            let mut m = Msg {
                id: s("id"),
                from: s("from"),
                to: s("to"),
                when: s("when"),
                subject: o.get("subject").map(|_| s("subject")),
                body: Some(s("body")),
                ..Msg::default()
            };
            for (k, v) in o {
                if ["id", "from", "to", "when", "subject", "body"].contains(&k.as_str()) {
                    continue;
                }
                match v {
                    serde_json::Value::String(s) => m.props.push((k.clone(), s.clone())),
                    serde_json::Value::Array(a) => {
                        for x in a {
                            let x = x.as_str().expect("property values are strings");
                            m.props.push((k.clone(), x.to_string()));
                        }
                    }
                    other => panic!("property {k:?} is {other}, not a string: {doc}"),
                }
            }
            m
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Talk streams (cross-protocol tests)

/// A headless Talk stream (`GET /pull` with `Head: less`), read record by record.
pub struct TalkStream {
    conn: Conn,
    records: std::collections::VecDeque<Vec<u8>>,
    partial: Vec<u8>,
}

impl TalkStream {
    /// Opens the stream for `name` on `channel` and reads the head and the `noop` greeting.
    /// `auth`: an `Authorization` value to send.
    pub fn open(server: &TestServer, name: &str, channel: &str, auth: Option<&str>) -> TalkStream {
        let mut conn = server.connect();
        let mut req = format!("GET /pull?name={name}&channel={channel} HTTP/1.1\r\nHead: less\r\n");
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        conn.send(req.as_bytes());
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let deadline = Instant::now() + TIMEOUT;
        while conn.buf.len() < head.len() {
            conn.fill(deadline, "the Talk stream head");
        }
        assert_eq!(
            show(&conn.buf[..head.len()]),
            show(head),
            "headless pull head"
        );
        conn.buf.drain(..head.len());
        let mut s = TalkStream {
            conn,
            records: Default::default(),
            partial: Vec::new(),
        };
        assert_eq!(s.next_raw(), b"noop", "the greeting record");
        s
    }

    /// The next record (without its `\0` terminator), `noop` included, within `TIMEOUT`.
    fn next_raw(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(r) = self.records.pop_front() {
                return r;
            }
            // One chunk: hex size CRLF data CRLF.
            let buf = &self.conn.buf;
            if let Some(eol) = find(buf, b"\r\n") {
                let size = usize::from_str_radix(std::str::from_utf8(&buf[..eol]).unwrap(), 16)
                    .unwrap_or_else(|_| panic!("chunk size line {:?}", show(&buf[..eol])));
                assert_ne!(size, 0, "the stream ended");
                if buf.len() >= eol + 2 + size + 2 {
                    let data = buf[eol + 2..eol + 2 + size].to_vec();
                    assert_eq!(&buf[eol + 2 + size..eol + 4 + size], b"\r\n");
                    self.conn.buf.drain(..eol + 4 + size);
                    self.partial.extend_from_slice(&data);
                    while let Some(z) = self.partial.iter().position(|&b| b == 0) {
                        let rec: Vec<u8> = self.partial.drain(..=z).collect();
                        self.records.push_back(rec[..z].to_vec());
                    }
                    assert!(self.partial.is_empty(), "a chunk ended inside a record");
                    continue;
                }
            }
            self.conn.fill(deadline, "a Talk chunk");
        }
    }

    /// The next record that is not a keep-alive `noop`, as text.
    pub fn next_text(&mut self) -> String {
        loop {
            let r = self.next_raw();
            if r != b"noop" {
                return String::from_utf8(r).expect("record is UTF-8");
            }
        }
    }
}

/// `POST /push` (Talk) as curl would, on a fresh connection: a form body.
pub fn talk_push(server: &TestServer, form: &str, auth: Option<&str>) -> Response {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    server
        .connect()
        .request("POST", "/push", &headers, form.as_bytes())
}
