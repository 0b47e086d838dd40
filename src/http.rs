//! HTTP/1.x pieces over `httparse`: request heads as offsets into the read buffer, body
//! framing (Content-Length, chunked, the Talk headless push), query and form decoding,
//! response heads, and a cached `Date`. Pure code: no sockets.

use std::borrow::Cow;

/// Most header lines in one request head; more is answered 431.
pub const MAX_HEADERS: usize = 64;

/// A byte range of the read buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes of this span in `buf` (empty if out of range).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Other,
}

/// A parsed request head. Header values are spans into the buffer it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    pub method: Method,
    /// The target's path, before any `?`, still percent-encoded.
    pub path: Span,
    /// The query string after `?` (empty if none).
    pub query: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// A `Head:` header was present (Talk's headless clients send `Head: less`).
    pub headless: bool,
    pub authorization: Option<Span>,
    pub content_type: Option<Span>,
    pub if_none_match: Option<Span>,
    pub request_headers: Option<Span>,
}

/// A request the server will not serve, with the answer it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 431: the head passed `--max-head-bytes` or `MAX_HEADERS`.
    HeadTooLarge,
    /// 413: the body passed `--max-body-bytes`.
    BodyTooLarge,
    /// 400 with the reason.
    Malformed(&'static str),
    /// 501: a transfer coding other than chunked.
    NotImplemented(&'static str),
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::Malformed(_) => 400,
            HttpError::NotImplemented(_) => 501,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "request head too large",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::Malformed(r) | HttpError::NotImplemented(r) => r,
        }
    }
}

fn eq_ignore_case(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and still within `max_head` bytes.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(httparse::Error::Version) => {
            return Err(HttpError::Malformed("unsupported HTTP version"))
        }
        Err(_) => return Err(HttpError::Malformed("malformed request head")),
    };
    if len > max_head {
        return Err(HttpError::HeadTooLarge);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("").as_bytes();
    // Absolute-form targets (`http://host/path`) are reduced to their path.
    let target = match memchr::memmem::find(target, b"://") {
        Some(i) if !target.starts_with(b"/") => {
            let after = &target[i + 3..];
            memchr::memchr(b'/', after).map_or(&after[after.len()..], |j| &after[j..])
        }
        _ => target,
    };
    if !target.starts_with(b"/") && target != b"*" {
        return Err(HttpError::Malformed("request target must start with /"));
    }
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &target[target.len()..]),
    };
    let minor = req.version.unwrap_or(1);
    let mut head = Head {
        method,
        path: Span::within(buf, path),
        query: Span::within(buf, query),
        minor,
        len,
        content_length: None,
        chunked: false,
        keep_alive: minor >= 1,
        expect_continue: false,
        headless: false,
        authorization: None,
        content_type: None,
        if_none_match: None,
        request_headers: None,
    };
    let mut transfer_encoding = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        if eq_ignore_case(name, "content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::Malformed("invalid Content-Length"))?;
            if head.content_length.is_some_and(|old| old != n) {
                return Err(HttpError::Malformed("conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if eq_ignore_case(name, "transfer-encoding") {
            transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            if !eq_ignore_case(last, "chunked") {
                return Err(HttpError::NotImplemented(
                    "only the chunked transfer coding is supported",
                ));
            }
            head.chunked = true;
        } else if eq_ignore_case(name, "connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if eq_ignore_case(token, "close") {
                    head.keep_alive = false;
                } else if eq_ignore_case(token, "keep-alive") && minor == 0 {
                    head.keep_alive = true;
                }
            }
        } else if eq_ignore_case(name, "expect") {
            if eq_ignore_case(value, "100-continue") && minor >= 1 {
                head.expect_continue = true;
            }
        } else if eq_ignore_case(name, "head") {
            head.headless = true;
        } else if eq_ignore_case(name, "authorization") {
            head.authorization = Some(Span::within(buf, value));
        } else if eq_ignore_case(name, "content-type") {
            head.content_type = Some(Span::within(buf, value));
        } else if eq_ignore_case(name, "if-none-match") {
            head.if_none_match = Some(Span::within(buf, value));
        } else if eq_ignore_case(name, "access-control-request-headers") {
            head.request_headers = Some(Span::within(buf, value));
        }
    }
    if transfer_encoding && head.content_length.is_some() {
        return Err(HttpError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if transfer_encoding && minor == 0 {
        // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding may have been forwarded
        // by a hop that did not understand it: its framing is suspect, so close after it.
        head.keep_alive = false;
    }
    Ok(Some(head))
}

/// Whether a request's body comes without any framing: Talk's headless clients send
/// `POST /push` with neither `Content-Length` nor `Transfer-Encoding` (PROTOCOLS.md 3.2).
pub fn is_unframed_push(head: &Head, buf: &[u8]) -> bool {
    head.method == Method::Post
        && head.content_length.is_none()
        && !head.chunked
        && head.path.of(buf) == b"/push"
}

/// The length of an unframed push body in `rest` (the bytes after its head): up to the
/// start of the client's next push (`POST /push HTTP/1.`), or all of `rest`.
pub fn unframed_push_len(rest: &[u8]) -> usize {
    memchr::memmem::find(rest, b"POST /push HTTP/1.").unwrap_or(rest.len())
}

/// An incremental decoder of a chunked body (RFC 9112 7.1):
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
///
/// It is fed the encoded body received so far, each time a longer prefix of the same
/// bytes, and resumes where it stopped: a body trickled a few bytes at a time costs time
/// linear in its length. The decoded data collects in `body`.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    /// Encoded bytes consumed so far.
    pos: usize,
    /// Data bytes of the current chunk not yet copied.
    left: usize,
    state: ChunkState,
    /// The decoded body so far.
    pub body: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data,
    DataEnd,
    Trailer,
    Done,
}

/// A chunk-size or trailer line longer than this is refused.
const MAX_CHUNK_LINE: usize = 1024;

const BAD_CHUNKED: HttpError = HttpError::Malformed("malformed chunked body");

impl ChunkedDecoder {
    /// Forgets everything: ready for the next body (the body's allocation is kept).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.left = 0;
        self.state = ChunkState::Size;
        self.body.clear();
    }

    /// Decodes what `buf` (the encoded body so far, from its first byte) adds. Returns
    /// `Ok(None)` while incomplete, `Ok(Some(n))` with the encoded length `n` once the whole
    /// body has arrived (it is then in `body`). A decoded body over `max` is refused.
    pub fn feed(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let rest = buf.get(self.pos..).unwrap_or(&[]);
                    let Some(eol) = chunk_line(rest)? else {
                        return Ok(None);
                    };
                    let line = &rest[..eol];
                    let size_text = line.split(|&b| b == b';').next().map(trim).unwrap_or(b"");
                    if size_text.is_empty() || size_text.len() > 15 {
                        return Err(BAD_CHUNKED);
                    }
                    let mut size = 0usize;
                    for &b in size_text {
                        size = size * 16 + hex(b).ok_or(BAD_CHUNKED)? as usize;
                    }
                    self.pos += eol + 2;
                    if size == 0 {
                        self.state = ChunkState::Trailer;
                    } else {
                        if self.body.len() + size > max {
                            return Err(HttpError::BodyTooLarge);
                        }
                        self.left = size;
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    let avail = buf.len().saturating_sub(self.pos);
                    let n = avail.min(self.left);
                    self.body.extend_from_slice(&buf[self.pos..self.pos + n]);
                    self.pos += n;
                    self.left -= n;
                    if self.left > 0 {
                        return Ok(None);
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    let Some(end) = buf.get(self.pos..self.pos + 2) else {
                        return Ok(None);
                    };
                    if end != b"\r\n" {
                        return Err(BAD_CHUNKED);
                    }
                    self.pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    // Trailer section: header lines until an empty line.
                    let rest = buf.get(self.pos..).unwrap_or(&[]);
                    let Some(eol) = chunk_line(rest)? else {
                        return Ok(None);
                    };
                    self.pos += eol + 2;
                    if eol == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Some(self.pos)),
            }
        }
    }
}

/// The length (without its CRLF) of the chunk-size or trailer line at the start of `rest`;
/// `Ok(None)` while it may still end within `MAX_CHUNK_LINE`. A longer line is an error as
/// soon as that is certain, and the same error whether the line arrived whole or in pieces:
/// only the first `MAX_CHUNK_LINE + 2` bytes are looked at.
fn chunk_line(rest: &[u8]) -> Result<Option<usize>, HttpError> {
    let window = &rest[..rest.len().min(MAX_CHUNK_LINE + 2)];
    match memchr::memmem::find(window, b"\r\n") {
        Some(eol) if eol <= MAX_CHUNK_LINE => Ok(Some(eol)),
        Some(_) => Err(BAD_CHUNKED),
        None if window.len() == MAX_CHUNK_LINE + 2 => Err(BAD_CHUNKED),
        None => Ok(None),
    }
}

/// Decodes a whole chunked body at the start of `buf` into `out` (one `ChunkedDecoder`
/// fed once). `Ok(None)` while incomplete; `Ok(Some(n))`, the encoded length, when complete.
pub fn decode_chunked(
    buf: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, HttpError> {
    let mut d = ChunkedDecoder::default();
    let r = d.feed(buf, max)?;
    if r.is_some() {
        *out = d.body;
    }
    Ok(r)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` escapes and `+` (as a space). Malformed escapes are kept as sent, as
/// Talk's reference clients do not always encode what they send.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    decode(s, true)
}

/// Decodes `%XX` escapes in a URL path (where `+` is itself). Malformed escapes are kept.
pub fn percent_decode_path(s: &[u8]) -> Cow<'_, [u8]> {
    decode(s, false)
}

fn decode(s: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    if !s.iter().any(|&b| b == b'%' || (plus_is_space && b == b'+')) {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// The pairs of a query string or form body (`a=1&b=2`), undecoded.
pub fn form_pairs(s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match memchr::memchr(b'=', p) {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// The decoded value of the first pair named `key` (keys compare after decoding).
pub fn form_get<'a>(s: &'a [u8], key: &str) -> Option<Cow<'a, [u8]>> {
    form_pairs(s)
        .find(|(k, _)| percent_decode(k).as_ref() == key.as_bytes())
        .map(|(_, v)| percent_decode(v))
}

/// The standard reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The `Date` header value, formatted at most once a second.
pub struct DateCache {
    secs: u64,
    text: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        let mut d = DateCache {
            secs: u64::MAX,
            text: [b' '; 29],
        };
        d.update();
        d
    }
}

impl DateCache {
    /// Refreshes the text if the second changed. Call once per loop turn.
    pub fn update(&mut self) {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.text = imf_fixdate(secs);
        }
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT`
    pub fn get(&self) -> &[u8] {
        &self.text
    }
}

/// Formats an IMF-fixdate (RFC 9110 5.6.7).
pub fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = (secs / 86400) as i64;
    let (y, m, d) = crate::time::civil_from_days(days);
    let rem = secs % 86400;
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = [0u8; 29];
    let two = |n: u64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
    out[0..3].copy_from_slice(DAYS[(days.rem_euclid(7)) as usize]);
    out[3..5].copy_from_slice(b", ");
    out[5..7].copy_from_slice(&two(d as u64));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    out[11] = b' ';
    let y = y as u64;
    out[12..14].copy_from_slice(&two(y / 100 % 100));
    out[14..16].copy_from_slice(&two(y % 100));
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(hh));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(mm));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(ss));
    out[25..29].copy_from_slice(b" GMT");
    out
}

/// A chunk-size line (`chunk-size CRLF`, lowercase hex), held inline: framing a chunk for
/// each of many streams allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct ChunkSize {
    bytes: [u8; 18],
    len: u8,
}

impl ChunkSize {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The chunk-size line for a chunk of `len` bytes.
pub fn chunk_size_line(len: usize) -> ChunkSize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let count = digits.len() - i;
    let mut bytes = [0u8; 18];
    bytes[..count].copy_from_slice(&digits[i..]);
    bytes[count..count + 2].copy_from_slice(b"\r\n");
    ChunkSize {
        bytes,
        len: (count + 2) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes(), 16384).unwrap().unwrap()
    }

    #[test]
    fn parses_target_and_flags() {
        let raw =
            "GET /pull?name=a%20b&channel=c HTTP/1.1\r\nHead: less\r\nConnection: close\r\n\r\n";
        let h = head(raw);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path.of(raw.as_bytes()), b"/pull");
        assert_eq!(h.query.of(raw.as_bytes()), b"name=a%20b&channel=c");
        assert!(h.headless);
        assert!(!h.keep_alive);
        assert_eq!(h.len, raw.len());
    }

    #[test]
    fn http10_keep_alive_rules() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive);
    }

    #[test]
    fn incomplete_and_limits() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 1024)
            .unwrap()
            .is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(
            parse_head(big.as_bytes(), 1024).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(req.as_bytes(), 1 << 20).unwrap_err(),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn bad_framing_is_refused() {
        let cases = [
            "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET nopath HTTP/1.1\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ];
        for c in cases {
            assert_eq!(
                parse_head(c.as_bytes(), 1024).unwrap_err().status(),
                400,
                "{c}"
            );
        }
        let gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse_head(gzip.as_bytes(), 1024).unwrap_err().status(), 501);
    }

    #[test]
    fn chunked_bodies() {
        let mut out = Vec::new();
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(body, 100, &mut out).unwrap(),
            Some(body.len() - 4)
        );
        assert_eq!(out, b"Wikipedia");
        for cut in 0..body.len() - 4 {
            assert_eq!(
                decode_chunked(&body[..cut], 100, &mut out).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(
            decode_chunked(body, 5, &mut out).unwrap_err(),
            HttpError::BodyTooLarge
        );
        assert!(decode_chunked(b"zz\r\n", 100, &mut out).is_err());
        assert!(decode_chunked(b"2\r\nabX\r\n", 100, &mut out).is_err());
        assert!(decode_chunked(b"fffffffffffffffffff\r\n", 100, &mut out).is_err());
    }

    #[test]
    fn form_decoding_is_lenient() {
        assert_eq!(percent_decode(b"a%20b+c").as_ref(), b"a b c");
        assert_eq!(percent_decode(b"100%").as_ref(), b"100%");
        assert_eq!(percent_decode(b"%zz%4").as_ref(), b"%zz%4");
        assert_eq!(percent_decode(b"%e2%9c%93").as_ref(), "✓".as_bytes());
        assert_eq!(percent_decode_path(b"a+b%2Fc").as_ref(), b"a+b/c");
        let q = b"name=bob&message=hi%21&empty=&flag";
        assert_eq!(form_get(q, "message").unwrap().as_ref(), b"hi!");
        assert_eq!(form_get(q, "empty").unwrap().as_ref(), b"");
        assert_eq!(form_get(q, "flag").unwrap().as_ref(), b"");
        assert!(form_get(q, "nope").is_none());
    }

    #[test]
    fn http10_with_transfer_encoding_closes_after_the_request() {
        let h = parse_head(
            b"POST /x HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
            4096,
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked);
        assert!(!h.keep_alive, "RFC 9112 6.1");
        let h = parse_head(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 4096)
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
    }

    #[test]
    fn a_chunk_line_over_the_limit_is_refused_however_it_arrives() {
        // Found by the `chunked` fuzz target's oracle (fuzz/regressions/chunked/): a line
        // over MAX_CHUNK_LINE was refused when it arrived in pieces but accepted whole.
        let long_ext = [b"1;".as_slice(), &[b'e'; 1100], b"\r\nx\r\n0\r\n\r\n"].concat();
        let long_trailer = [b"1\r\nx\r\n0\r\nT: ".as_slice(), &[b't'; 1100], b"\r\n\r\n"].concat();
        // The longest line allowed, and one byte more, extension or trailer.
        let pad = MAX_CHUNK_LINE - 2;
        let at_limit = [b"1;".as_slice(), &vec![b'e'; pad], b"\r\nx\r\n0\r\n\r\n"].concat();
        let over = [
            b"1;".as_slice(),
            &vec![b'e'; pad + 1],
            b"\r\nx\r\n0\r\n\r\n",
        ]
        .concat();
        let trailer_over = [
            b"1\r\nx\r\n0\r\n".as_slice(),
            &vec![b't'; MAX_CHUNK_LINE + 1],
            b"\r\n\r\n",
        ]
        .concat();
        let bad = Err(HttpError::Malformed("malformed chunked body"));
        let cases = [
            (&long_ext, bad),
            (&long_trailer, bad),
            (&at_limit, Ok(Some(at_limit.len()))),
            (&over, bad),
            (&trailer_over, bad),
        ];
        for (wire, want) in cases {
            assert_eq!(
                decode_chunked(wire, 1 << 20, &mut Vec::new()),
                want,
                "whole"
            );
            for cut in 1..wire.len() {
                let mut d = ChunkedDecoder::default();
                let got = match d.feed(&wire[..cut], 1 << 20) {
                    Ok(None) => d.feed(wire, 1 << 20),
                    early => early,
                };
                assert_eq!(got, want, "cut at {cut} of {}", wire.len());
            }
        }
    }

    #[test]
    fn chunked_decoding_resumes_and_stays_linear() {
        // `1\r\na\r\n` repeated, fed one byte more each time, as a trickling client sends it.
        let mut wire = b"1\r\na\r\n".repeat(5000);
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut d = ChunkedDecoder::default();
        let mut done = None;
        for end in 1..=wire.len() {
            let before = d.pos;
            done = d.feed(&wire[..end], 1 << 20).unwrap();
            assert!(
                d.pos >= before && d.pos <= end,
                "never rescans, never runs ahead"
            );
        }
        assert_eq!(done, Some(wire.len()));
        assert_eq!(d.body, vec![b'a'; 5000]);
        d.reset();
        assert_eq!(
            d.feed(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 10).unwrap(),
            Some(21)
        );
        assert_eq!(d.body, b"abc");
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the parsers (a cheap stand-in for a fuzzer).
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_head(&bytes, 512);
            let _ = decode_chunked(&bytes, 256, &mut Vec::new());
            let _ = percent_decode(&bytes);
            let _ = form_pairs(&bytes).count();
        }

        /// A chunked body split anywhere is incomplete before the split and decodes to the
        /// same bytes once whole, whatever the chunk sizes.
        #[test]
        fn chunked_round_trip(parts in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 0..8), cut in 0usize..400) {
            let mut wire = Vec::new();
            let mut plain = Vec::new();
            for p in &parts {
                wire.extend_from_slice(chunk_size_line(p.len()).as_bytes());
                wire.extend_from_slice(p);
                wire.extend_from_slice(b"\r\n");
                plain.extend_from_slice(p);
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut out = Vec::new();
            proptest::prop_assert_eq!(decode_chunked(&wire, 1 << 20, &mut out).unwrap(), Some(wire.len()));
            proptest::prop_assert_eq!(&out, &plain);
            let cut = cut.min(wire.len() - 1);
            proptest::prop_assert_eq!(decode_chunked(&wire[..cut], 1 << 20, &mut out).unwrap(), None);
        }
    }

    #[test]
    fn unframed_pushes() {
        let raw =
            b"POST /push HTTP/1.1\r\nHead: less\r\n\r\nname=a&message=1POST /push HTTP/1.1\r\n";
        let h = head(std::str::from_utf8(raw).unwrap());
        assert!(is_unframed_push(&h, raw));
        assert_eq!(unframed_push_len(&raw[h.len..]), b"name=a&message=1".len());
        assert_eq!(unframed_push_len(b"name=a&message=1"), 16);
        let framed = "POST /push HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
        assert!(!is_unframed_push(&head(framed), framed.as_bytes()));
        let other = "POST /comet HTTP/1.1\r\n\r\n";
        assert!(!is_unframed_push(&head(other), other.as_bytes()));
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size_line(0).as_bytes(), b"0\r\n");
        assert_eq!(chunk_size_line(5).as_bytes(), b"5\r\n");
        assert_eq!(chunk_size_line(0x1a2b).as_bytes(), b"1a2b\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX).as_bytes(),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(&imf_fixdate(784111777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(1709210096), b"Thu, 29 Feb 2024 12:34:56 GMT");
    }
}

/// One piece of response output: static bytes, a small owned head, a shared message frame
/// (the same bytes queued on many connections), or an inline chunk-size line.
pub enum Seg {
    Static(&'static [u8]),
    Owned(Vec<u8>),
    Shared(std::sync::Arc<[u8]>),
    Size(ChunkSize),
}

impl Seg {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Seg::Static(b) => b,
            Seg::Owned(v) => v,
            Seg::Shared(a) => a,
            Seg::Size(line) => line.as_bytes(),
        }
    }
}

/// How a response's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (sent for `HEAD` too, with no body).
    Length(usize),
    /// `Transfer-Encoding: chunked`: a stream whose chunks follow.
    Chunked,
}

/// The parts of a response head that vary.
pub struct ResponseHead<'a> {
    pub status: u16,
    /// The cached `Date` value.
    pub date: &'a [u8],
    pub cors_origin: &'a str,
    /// Empty: no `Content-Type`.
    pub content_type: &'a str,
    pub framing: Framing,
    pub headers: &'a [(&'static str, String)],
    pub keep_alive: bool,
    /// 0 for an HTTP/1.0 request: keep-alive must then be said.
    pub minor: u8,
}

/// Whether a response to `method` with `status` carries a body (RFC 9110 6.4.1).
pub fn has_body(method: Method, status: u16) -> bool {
    method != Method::Head && status >= 200 && status != 204 && status != 304
}

/// Encodes a response head, then the body if the method and status allow one.
pub fn encode_response(head: &ResponseHead<'_>, method: Method, body: &[u8], out: &mut Vec<u8>) {
    out.reserve(192 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(head.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(head.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: tidings\r\nDate: ");
    out.extend_from_slice(head.date);
    out.extend_from_slice(b"\r\nAccess-Control-Allow-Origin: ");
    out.extend_from_slice(head.cors_origin.as_bytes());
    if !head.content_type.is_empty() {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(head.content_type.as_bytes());
    }
    if let Framing::Length(n) = head.framing {
        if head.status != 204 && head.status >= 200 {
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
    }
    for (name, value) in head.headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        // No control byte may reach a header value (it could end the header early).
        out.extend(
            value
                .bytes()
                .map(|b| if b < 0x20 || b == 0x7f { b' ' } else { b }),
        );
    }
    if head.framing == Framing::Chunked {
        out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
    }
    if !head.keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if head.minor == 0 {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if has_body(method, head.status) {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod response_tests {
    use super::*;

    fn encode(status: u16, method: Method, keep_alive: bool, minor: u8, body: &[u8]) -> String {
        let headers = [("X-Id", "a\r\nb".to_string())];
        let head = ResponseHead {
            status,
            date: b"Thu, 01 Jan 1970 00:00:00 GMT",
            cors_origin: "*",
            content_type: if body.is_empty() { "" } else { "text/plain" },
            framing: Framing::Length(body.len()),
            headers: &headers,
            keep_alive,
            minor,
        };
        let mut out = Vec::new();
        encode_response(&head, method, body, &mut out);
        String::from_utf8(out).unwrap()
    }

    const PREFIX: &str =
        "Server: tidings\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nAccess-Control-Allow-Origin: *\r\n";

    #[test]
    fn response_heads_table() {
        // (status, method, keep-alive, HTTP/1.minor, body, the bytes expected)
        type Case = (u16, Method, bool, u8, &'static [u8], &'static str);
        let cases: &[Case] = &[
            (
                200,
                Method::Get,
                true,
                1,
                b"ok\n",
                "HTTP/1.1 200 OK\r\n{P}Content-Type: text/plain\r\nContent-Length: 3\r\nX-Id: a  b\r\n\r\nok\n",
            ),
            // An error answer to HEAD: the length of the body it would have, no body.
            (
                404,
                Method::Head,
                false,
                1,
                b"not found\n",
                "HTTP/1.1 404 Not Found\r\n{P}Content-Type: text/plain\r\nContent-Length: 10\r\nX-Id: a  b\r\nConnection: close\r\n\r\n",
            ),
            // 204: no length, no body.
            (
                204,
                Method::Options,
                true,
                1,
                b"",
                "HTTP/1.1 204 No Content\r\n{P}X-Id: a  b\r\n\r\n",
            ),
            // HTTP/1.0 keep-alive is said out loud.
            (
                503,
                Method::Post,
                true,
                0,
                b"full\n",
                "HTTP/1.1 503 Service Unavailable\r\n{P}Content-Type: text/plain\r\nContent-Length: 5\r\nX-Id: a  b\r\nConnection: keep-alive\r\n\r\nfull\n",
            ),
        ];
        for (status, method, keep_alive, minor, body, want) in cases {
            let want = want.replace("{P}", PREFIX);
            assert_eq!(encode(*status, *method, *keep_alive, *minor, body), want);
        }
    }

    #[test]
    fn a_stream_head_is_chunked() {
        let headers = [("Cache-Control", "no-cache".to_string())];
        let head = ResponseHead {
            status: 200,
            date: b"Thu, 01 Jan 1970 00:00:00 GMT",
            cors_origin: "*",
            content_type: "text/plain; charset=utf-8",
            framing: Framing::Chunked,
            headers: &headers,
            keep_alive: true,
            minor: 1,
        };
        let mut out = Vec::new();
        encode_response(&head, Method::Get, b"", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("HTTP/1.1 200 OK\r\n{PREFIX}Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        );
    }
}
