//! The few HTTP exchanges the load client makes besides the streams: pushes,
//! `/metrics`, plus the request bytes of a headless pull.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::sys::now_ns;

/// Exact reply head of a headless pull (PROTOCOLS.md 3.1).
pub const HEADLESS_PULL_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
/// Exact reply to a successful headless push (PROTOCOLS.md 3.2).
pub const HEADLESS_PUSH_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nnoop";
/// Longest response head the client accepts.
pub const MAX_HEAD: usize = 16 * 1024;

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /pull` for a headless stream.
pub fn pull_request(name: &str, channel: &str) -> Vec<u8> {
    format!(
        "GET /pull?name={}&channel={} HTTP/1.1\r\nHost: x\r\nHead: less\r\n\r\n",
        pct(name),
        pct(channel)
    )
    .into_bytes()
}

/// An nchan `http-chunked` subscriber (`TE: chunked` selects the transport) at
/// `/pull`, the location `bench/lib.sh` configures for it. `name` only tells the
/// requests apart in logs; nchan ignores it.
pub fn nchan_chunked_request(name: &str, channel: &str) -> Vec<u8> {
    format!(
        "GET /pull?name={}&channel={} HTTP/1.1\r\nHost: x\r\nTE: chunked\r\n\r\n",
        pct(name),
        pct(channel)
    )
    .into_bytes()
}

/// An nchan publish (`POST /pub?channel=C`, the location `bench/lib.sh` gives
/// `comet-longpoll --dialect nchan` and `talk-idle --dialect nchan`) of `body`.
pub fn nchan_pub(channel: &str, body: &[u8]) -> Vec<u8> {
    post_text(&format!("/pub?channel={}", pct(channel)), body)
}

/// A publish on nchan's own API, `POST /pub/{channel}` (tidings and nginx + nchan
/// alike; NCHAN.md 3.1) of `body`.
pub fn pub_api_request(channel: &str, body: &[u8]) -> Vec<u8> {
    post_text(&format!("/pub/{}", pct(channel)), body)
}

/// `POST target` with a `text/plain` body.
fn post_text(target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// `POST /push` with a form body; `headless` adds `Head: less`.
pub fn push_request(name: &str, channel: &str, message: &str, headless: bool) -> Vec<u8> {
    let body = format!(
        "name={}&channel={}&message={}",
        pct(name),
        pct(channel),
        pct(message)
    );
    format!(
        "POST /push HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{}",
        if headless { "Head: less\r\n" } else { "" },
        body.len(),
        body
    )
    .into_bytes()
}

/// Where the head of an HTTP message ends (index just past `\r\n\r\n`).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a pull reply head. `Ok(None)`: exactly the headless head.
/// `Ok(Some(note))`: a 200 chunked reply, but not byte-exact (note says how).
/// `Err(why)`: not a usable stream (status, framing).
pub fn check_pull_head(head: &[u8]) -> Result<Option<String>, String> {
    if head == HEADLESS_PULL_HEAD {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete reply head".into()),
        Err(e) => {
            return Err(format!(
                "unparsable reply head ({e}): {}",
                escape(head, 120)
            ))
        }
    }
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        return Err(format!(
            "status {code} {}",
            resp.reason.unwrap_or_default().trim()
        ));
    }
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    if !chunked {
        return Err(format!(
            "200 but not chunked: {}",
            escape(head, 200).trim_end()
        ));
    }
    Ok(Some(format!(
        "head is not byte-exact: got {:?}",
        escape(head, 300)
    )))
}

/// Printable form of bytes (`\r`, `\n`, `\0`, `\xNN`), cut at `max` bytes.
pub fn escape(b: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &c in b.iter().take(max) {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0 => s.push_str("\\0"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > max {
        s.push('…');
    }
    s
}

/// A response read off a socket.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Raw head bytes, `\r\n\r\n` included.
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The raw bytes: head then body.
    pub fn raw(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        v.extend_from_slice(&self.body);
        v
    }
}

/// One read that waits until `deadline_ns` at the most: `Ok(Some(n))` (`0`:
/// the peer closed), or `Ok(None)`: nothing yet (the wait ran out or was
/// interrupted; check the deadline and try again).
pub fn read_until(
    sock: &mut TcpStream,
    buf: &mut [u8],
    deadline_ns: u64,
) -> io::Result<Option<usize>> {
    let left = deadline_ns.saturating_sub(now_ns());
    sock.set_read_timeout(Some(Duration::from_nanos(left.max(1_000_000))))?;
    match sock.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads one response. With `Content-Length`, reads exactly that body; without
/// (a headless push reply), reads until `linger` passes with no more data or
/// the peer closes.
pub fn read_reply(
    sock: &mut TcpStream,
    timeout: Duration,
    linger: Duration,
) -> Result<Reply, String> {
    let deadline = now_ns() + timeout.as_nanos() as u64;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 8192];
    let head_len = loop {
        if let Some(n) = head_end(&buf) {
            break n;
        }
        if buf.len() > MAX_HEAD {
            return Err("reply head too long".into());
        }
        if now_ns() >= deadline {
            return Err(format!(
                "no complete reply head within {timeout:?} (got {:?})",
                escape(&buf, 200)
            ));
        }
        match read_until(sock, &mut tmp, deadline).map_err(|e| format!("read: {e}"))? {
            Some(0) => {
                return Err(format!(
                    "connection closed before a complete reply head (got {:?})",
                    escape(&buf, 200)
                ))
            }
            Some(n) => buf.extend_from_slice(&tmp[..n]),
            None => {}
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&buf[..head_len])
        .map_err(|e| format!("unparsable reply head ({e}): {:?}", escape(&buf, 200)))?;
    let status = resp.code.unwrap_or(0);
    let content_length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let head = buf[..head_len].to_vec();
    let mut body = buf[head_len..].to_vec();
    match content_length {
        Some(len) => {
            while body.len() < len {
                if now_ns() >= deadline {
                    return Err(format!("body shorter than Content-Length {len}"));
                }
                match read_until(sock, &mut tmp, deadline).map_err(|e| format!("read: {e}"))? {
                    Some(0) => {
                        return Err(format!("closed after {} of {len} body bytes", body.len()))
                    }
                    Some(n) => body.extend_from_slice(&tmp[..n]),
                    None => {}
                }
            }
        }
        None => {
            sock.set_read_timeout(Some(linger.max(Duration::from_millis(1))))
                .map_err(|e| e.to_string())?;
            loop {
                match sock.read(&mut tmp) {
                    Ok(0) => break,
                    Ok(n) => body.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
    Ok(Reply { status, head, body })
}

/// What a response head says about framing, for a client reading replies off a
/// non-blocking keep-alive connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespHead {
    pub status: u16,
    /// Bytes of the head, `\r\n\r\n` included.
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    /// The server will close after this response (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: not complete yet.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<RespHead>, String> {
    let Some(head_len) = head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err("reply head longer than 16 KiB".into());
        }
        return Ok(None);
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete reply head".into()),
        Err(e) => return Err(format!("unparsable reply head ({e}): {}", escape(buf, 120))),
    }
    let mut content_length = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep = false;
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value).trim().to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = v
                .parse::<usize>()
                .map_err(|_| format!("bad Content-Length {v:?}"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= v.contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            conn_close |= v.split(',').any(|t| t.trim() == "close");
            conn_keep |= v.split(',').any(|t| t.trim() == "keep-alive");
        }
    }
    let http10 = resp.version == Some(0);
    Ok(Some(RespHead {
        status: resp.code.unwrap_or(0),
        head_len,
        content_length,
        chunked,
        close: conn_close || (http10 && !conn_keep),
    }))
}

/// The value of the first header `name` in a raw response head.
pub fn header(head: &[u8], name: &str) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head).ok()?;
    resp.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
}

/// Connects with a timeout and sets `TCP_NODELAY`.
pub fn connect(server: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&server, timeout)
        .map_err(|e| format!("connect {server}: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// One request on a keep-alive connection, reconnecting first if needed.
pub fn exchange(
    server: SocketAddr,
    sock: &mut Option<TcpStream>,
    req: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    if sock.is_none() {
        *sock = Some(connect(server, Duration::from_secs(5))?);
    }
    let s = sock.as_mut().expect("connected");
    let res = s
        .write_all(req)
        .map_err(|e| format!("write: {e}"))
        .and_then(|_| read_reply(s, timeout, Duration::from_millis(100)));
    match res {
        Ok(r) => {
            if header(&r.head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                *sock = None;
            }
            Ok(r)
        }
        Err(e) => {
            *sock = None;
            Err(e)
        }
    }
}

/// Result of one timed push.
pub struct Pushed {
    /// `CLOCK_MONOTONIC` just before the request was written.
    pub t0_ns: u64,
    /// When the reply was complete.
    pub replied_ns: u64,
    pub reply: Reply,
}

/// Sends one request on a fresh connection (connected before the clock starts)
/// and reads its reply. `after_write` runs right after the request is written.
pub fn timed_request(
    server: SocketAddr,
    req: &[u8],
    after_write: impl FnOnce(u64),
) -> Result<Pushed, String> {
    let mut sock = connect(server, Duration::from_secs(5))?;
    let t0_ns = now_ns();
    sock.write_all(req)
        .map_err(|e| format!("write push: {e}"))?;
    after_write(t0_ns);
    let reply = read_reply(
        &mut sock,
        Duration::from_secs(10),
        Duration::from_millis(100),
    )?;
    Ok(Pushed {
        t0_ns,
        replied_ns: now_ns(),
        reply,
    })
}

/// The text of `GET /metrics` (one connection, closed after the reply).
pub fn metrics_text(server: SocketAddr) -> Result<String, String> {
    let mut sock = connect(server, Duration::from_secs(5))?;
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write /metrics: {e}"))?;
    let reply = read_reply(
        &mut sock,
        Duration::from_secs(10),
        Duration::from_millis(500),
    )?;
    if reply.status != 200 {
        return Err(format!("GET /metrics: status {}", reply.status));
    }
    Ok(String::from_utf8_lossy(&reply.body).into_owned())
}

/// The server's RSS as its `/metrics` reports it (`tidings_resident_memory_bytes`).
pub fn metrics_rss(server: SocketAddr) -> Result<u64, String> {
    parse_metric(&metrics_text(server)?, "tidings_resident_memory_bytes")
        .map(|v| v as u64)
        .ok_or_else(|| "GET /metrics: no tidings_resident_memory_bytes sample".to_string())
}

/// The value of an unlabelled (or first labelled) sample in Prometheus text format.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = if rest.starts_with('{') {
            &rest[rest.find('}')? + 1..]
        } else {
            rest
        };
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        rest.split_whitespace().next()?.parse::<f64>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(pct("fanout-1-23"), "fanout-1-23");
        assert_eq!(pct("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn requests_are_byte_exact() {
        assert_eq!(
            pull_request("lt-1", "load"),
            b"GET /pull?name=lt-1&channel=load HTTP/1.1\r\nHost: x\r\nHead: less\r\n\r\n".to_vec()
        );
        let body = "name=loadtest&channel=load&message=fanout-0-5";
        let want = format!(
            "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            push_request("loadtest", "load", "fanout-0-5", false),
            want.into_bytes()
        );
    }

    #[test]
    fn pull_heads() {
        assert_eq!(check_pull_head(HEADLESS_PULL_HEAD), Ok(None));
        let browserish = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(check_pull_head(browserish), Ok(Some(_))));
        let refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\n";
        assert!(check_pull_head(refused).unwrap_err().contains("503"));
        let not_chunked = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
        assert!(check_pull_head(not_chunked).is_err());
    }

    #[test]
    fn metrics_parse() {
        let text = "# HELP tidings_resident_memory_bytes RSS\n# TYPE tidings_resident_memory_bytes gauge\ntidings_resident_memory_bytes_total 1\ntidings_resident_memory_bytes 1.2345e7\nother 3\n";
        assert_eq!(
            parse_metric(text, "tidings_resident_memory_bytes"),
            Some(12_345_000.0)
        );
        assert_eq!(parse_metric("x{a=\"b\"} 42\n", "x"), Some(42.0));
        assert_eq!(parse_metric("y 1\n", "x"), None);
    }

    #[test]
    fn response_heads() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"time\":5}";
        let h = parse_response_head(r).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(12));
        assert_eq!(&r[h.head_len..], b"{\"time\":5}");
        assert!(!h.close && !h.chunked);
        for cut in 0..h.head_len {
            assert_eq!(parse_response_head(&r[..cut]).unwrap(), None, "{cut}");
        }
        let c = parse_response_head(
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(c.close);
        assert_eq!(c.status, 503);
        let old = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(old.close);
        assert_eq!(old.content_length, None);
        let ka = parse_response_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!ka.close);
        let ch = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(ch.chunked);
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
        assert!(parse_response_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_response_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn header_values() {
        let head = b"HTTP/1.1 200 OK\r\nETag: p0-9\r\nretry-after:  2 \r\nETag: second\r\n\r\n";
        assert_eq!(header(head, "etag").as_deref(), Some("p0-9"));
        assert_eq!(header(head, "Retry-After").as_deref(), Some("2"));
        assert_eq!(header(head, "x-none"), None);
        let empty = b"HTTP/1.1 200 OK\r\nETag: \r\n\r\n";
        assert_eq!(header(empty, "ETag").as_deref(), Some(""));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape(b"a\r\n\0\xff", 10), "a\\r\\n\\0\\xff");
        assert_eq!(escape(b"abcdef", 3), "abc…");
    }
}
