//! Helpers for the QST integration tests (`tests/qst_*.rs`, `tests/auth.rs`), on top of the
//! shared core in `tests/common` (server, keep-alive client, response parser, Talk stream
//! reader, metrics): QST request shortcuts, a server guarded by a credentials file, request
//! bodies, and a reader for QST replies (XML and JSON) that serves as the test oracle.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use common::*;
use tidings::Config;

/// The XML declaration real InSTEDD gateways send.
pub const GATEWAY_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#;

/// The shared test server with the QST shortcuts, and the credentials file it was started
/// with, if any (removed once the server has stopped).
pub struct TestServer {
    server: common::TestServer,
    credentials: Option<TempFile>,
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Deref for TestServer {
    type Target = common::TestServer;

    fn deref(&self) -> &common::TestServer {
        &self.server
    }
}

/// Starts a server with the test configuration.
pub fn start() -> TestServer {
    start_with(|_| {})
}

/// Starts a server with the test configuration, a short long-poll timeout so no test waits
/// long, changed by `tweak`.
pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer {
        server: common::start_with(|c| {
            c.long_poll_timeout = Duration::from_millis(400);
            tweak(c);
        }),
        credentials: None,
    }
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
    let file = TempFile(path.clone());
    let mut server = start_with(|c| {
        c.credentials = Some(path);
        tweak(c);
    });
    server.credentials = Some(file);
    server
}

impl TestServer {
    /// Shuts the server down and waits for its workers (see `common::TestServer`).
    pub fn shutdown_and_join(mut self, limit: Duration) -> Duration {
        let credentials = self.credentials.take();
        let took = self.server.shutdown_and_join(limit);
        drop(credentials);
        took
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

impl Client {
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
}

/// `/qst/{channel}` with an optional query.
pub fn qst_target(channel: &str, query: &str) -> String {
    if query.is_empty() {
        format!("/qst/{channel}")
    } else {
        format!("/qst/{channel}?{query}")
    }
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
// The reply oracle

impl Response {
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
// Talk (cross-protocol tests)

/// Opens a headless Talk stream (`GET /pull` with `Head: less`) for `name` on `channel` and
/// reads the head and the `noop` greeting. `auth`: an `Authorization` value to send.
pub fn talk_stream(
    server: &TestServer,
    name: &str,
    channel: &str,
    auth: Option<&str>,
) -> StreamReader {
    let mut conn = server.connect();
    let mut req = format!("GET /pull?name={name}&channel={channel} HTTP/1.1\r\nHead: less\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    conn.send(req.as_bytes());
    let mut s = StreamReader::after_request(conn, true, 0);
    s.expect_greeting();
    s
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
