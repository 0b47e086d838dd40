//! Helpers for the nchan integration tests (`tests/nchan_*.rs`), on top of the shared core in
//! `tests/common`: publishing on `/pub/`, the channel info bodies of NCHAN.md 3.4 as an
//! oracle, message ids (`TIME:TAG`) and their HTTP dates, and a reader for the streaming
//! subscribers (EventSource, HTTP chunked, multipart/mixed), whose bodies tidings frames with
//! `Transfer-Encoding: chunked` (deviation D4 of NCHAN.md).

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

pub use common::*;

use std::time::Duration;

/// `POST /pub/{channel}` with these headers and body, on a fresh connection.
pub fn publish(
    server: &TestServer,
    channel: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    server
        .connect()
        .request("POST", &format!("/pub/{channel}"), headers, body)
}

/// Publishes `body` with no `Content-Type`; asserts 201 or 202 and returns the message id.
pub fn publish_id(server: &TestServer, channel: &str, body: &str) -> String {
    let r = publish(server, channel, &[], body.as_bytes());
    assert!(
        r.status == 201 || r.status == 202,
        "publish on {channel}: {}",
        r.show()
    );
    last_id(&r)
}

/// The `last message id` of a plain channel info body.
pub fn last_id(r: &Response) -> String {
    let text = r.text();
    text.split("last message id: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no message id in {}", r.show()))
        .to_string()
}

/// `(TIME, TAG)` of an id `TIME:TAG`.
pub fn split_id(id: &str) -> (u64, u64) {
    let (t, g) = id
        .split_once(':')
        .unwrap_or_else(|| panic!("not TIME:TAG: {id:?}"));
    (t.parse().unwrap(), g.parse().unwrap())
}

/// The id as the hub's `seq` (`TIME * 1000 + TAG`, NCHAN.md 2.2).
pub fn seq_of(id: &str) -> u64 {
    let (t, g) = split_id(id);
    assert!(g < 1000, "a tag is below 1000: {id}");
    t * 1000 + g
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), computed here independently of the
/// server (Howard Hinnant's days-to-civil).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = secs % 86_400;
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The `Last-Modified` and `Etag` values that carry an id.
pub fn id_headers(id: &str) -> (String, String) {
    let (t, g) = split_id(id);
    (http_date(t), g.to_string())
}

/// The channel info of NCHAN.md 3.4, byte for byte, for each format.
pub fn info_plain(messages: u64, requested: i64, subscribers: u64, id: &str) -> String {
    format!("queued messages: {messages}\r\nlast requested: {requested} sec. ago\r\nactive subscribers: {subscribers}\r\nlast message id: {id}")
}

pub fn info_json(messages: u64, requested: i64, subscribers: u64, id: &str) -> String {
    format!("{{\"messages\": {messages}, \"requested\": {requested}, \"subscribers\": {subscribers}, \"last_message_id\": \"{id}\" }}")
}

pub fn info_yaml(messages: u64, requested: i64, subscribers: u64, id: &str) -> String {
    format!("---\r\nmessages: {messages}\r\nrequested: {requested}\r\nsubscribers: {subscribers}\r\nlast_message_id: \"{id}\"\r\n\r\n")
}

pub fn info_xml(messages: u64, requested: i64, subscribers: u64, id: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<channel>\r\n  <messages>{messages}</messages>\r\n  <requested>{requested}</requested>\r\n  <subscribers>{subscribers}</subscribers>\r\n  <last_message_id>{id}</last_message_id>\r\n</channel>")
}

/// A long-poll `GET target` with these headers sent on a fresh connection; the caller reads
/// the answer (`read_response`) when it expects one.
pub fn long_poll(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> Client {
    let mut c = server.connect();
    c.send_request("GET", target, headers, b"");
    c
}

/// A long-poll answered at once: sends and reads one response.
pub fn poll_now(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> Response {
    long_poll(server, target, headers).read_response()
}

/// Asserts a long-poll answer carries this message: 200, the body, the id as
/// `Last-Modified` + unquoted `Etag`, `Vary`, and the content type (or none).
pub fn assert_message(r: &Response, body: &str, id: &str, content_type: Option<&str>) {
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.reason, "OK");
    assert_eq!(show(&r.body), show(body.as_bytes()), "body of {}", r.show());
    let (lm, etag) = id_headers(id);
    assert!(r.has_line(&format!("Last-Modified: {lm}")), "{}", r.show());
    assert!(r.has_line(&format!("Etag: {etag}")), "{}", r.show());
    assert!(
        r.has_line("Vary: If-None-Match, If-Modified-Since"),
        "{}",
        r.show()
    );
    assert_eq!(r.header("Content-Type"), content_type, "{}", r.show());
    assert_eq!(
        r.header_count("Content-Type"),
        usize::from(content_type.is_some())
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(body.len().to_string().as_str())
    );
}

/// The cursor headers a client sends after a message with this id (NCHAN.md 5.3).
pub fn after(id: &str) -> [(String, String); 2] {
    let (lm, etag) = id_headers(id);
    [
        ("If-Modified-Since".to_string(), lm),
        ("If-None-Match".to_string(), etag),
    ]
}

/// Borrowed header pairs from owned ones.
pub fn hdrs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

/// A streaming subscriber on `/sub/`: the response head, then the de-chunked body.
pub struct Sub {
    pub client: Client,
    pub head: Response,
    /// Body bytes received and not yet consumed by `expect`.
    body: Vec<u8>,
}

impl Sub {
    /// Sends `GET target` with these headers and reads the head: 200, chunked.
    pub fn open(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> Sub {
        let mut client = server.connect();
        client.send_request("GET", target, headers, b"");
        let head = client.read_head();
        assert_eq!(head.status, 200, "{}", head.show());
        assert_eq!(
            head.header("Transfer-Encoding"),
            Some("chunked"),
            "{}",
            head.show()
        );
        Sub {
            client,
            head,
            body: Vec::new(),
        }
    }

    /// An EventSource subscriber (`Accept: text/event-stream`) plus `headers`; checks the
    /// head's content type and reads the `: hi` greeting.
    pub fn event_source(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> Sub {
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let mut s = Sub::open(server, target, &all);
        assert_eq!(
            s.head.header("Content-Type"),
            Some("text/event-stream; charset=utf-8")
        );
        s.expect(b": hi\n\n");
        s
    }

    /// Reads chunks until `expected.len()` body bytes are here and asserts they are
    /// `expected` (chunk boundaries do not matter).
    pub fn expect(&mut self, expected: &[u8]) {
        while self.body.len() < expected.len() {
            match self.client.read_chunk() {
                Some(data) => self.body.extend_from_slice(&data),
                None => panic!(
                    "the stream ended; wanted {:?}, have {:?}",
                    show(expected),
                    show(&self.body)
                ),
            }
        }
        let got: Vec<u8> = self.body.drain(..expected.len()).collect();
        assert_eq!(show(&got), show(expected), "stream bytes");
    }

    /// The next whole chunk's data (for framing checks); `None` for the last chunk.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        assert!(self.body.is_empty(), "unread bytes {:?}", show(&self.body));
        self.client.read_chunk()
    }

    /// Asserts the body ends (the last chunk) and the server closes the connection.
    pub fn expect_end(&mut self) {
        assert!(self.body.is_empty(), "unread bytes {:?}", show(&self.body));
        let last = self.client.read_chunk();
        assert_eq!(last.map(|d| show(&d)), None, "wanted the last chunk");
        self.client.expect_closed();
    }

    /// Asserts nothing arrives for `d` (a short negative check).
    pub fn expect_nothing(&mut self, d: Duration) {
        assert!(self.body.is_empty(), "unread bytes {:?}", show(&self.body));
        self.client.expect_silence(d);
    }
}

/// An EventSource record as nchan frames it (NCHAN.md 6.1, with D3 for `\r`).
pub fn es_record(event: Option<&str>, id: &str, body: &str) -> String {
    let mut out = String::new();
    if let Some(e) = event {
        out.push_str(&format!("event: {e}\n"));
    }
    out.push_str(&format!("id: {id}\n"));
    let body = body.replace("\r\n", "\n").replace('\r', "\n");
    for line in body.split('\n') {
        out.push_str(&format!("data: {line}\n"));
    }
    out.push('\n');
    out
}

/// A server with a credentials file holding `credentials` (`user:password pattern…` per
/// line), in a temporary file kept as long as the returned guard.
pub fn start_with_credentials(
    credentials: &str,
    tweak: impl FnOnce(&mut tidings::Config),
) -> (TestServer, TempFile) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = std::env::temp_dir().join(format!(
        "tidings-nchan-{}-{nanos}.credentials",
        std::process::id()
    ));
    std::fs::write(&path, credentials).expect("write the credentials file");
    let server = start_with(|c| {
        c.credentials = Some(path.clone());
        tweak(c);
    });
    (server, TempFile(path))
}

/// A file removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
