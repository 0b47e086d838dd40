//! HTTP/1.x pieces over `httparse`: request heads as offsets into the read buffer, body
//! framing (Content-Length, chunked, the Talk headless push), query and form decoding,
//! response heads, and a cached `Date`. Pure code: no sockets.

use std::borrow::Cow;

mod chunked;
mod response;

pub use chunked::{decode_chunked, ChunkedDecoder};
pub use response::{
    chunk_size_line, encode_response, has_body, imf_fixdate, reason, ChunkSize, DateCache, Framing,
    ResponseHead, Seg,
};

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
    /// nchan's `/pub/` and `/sub/` read these on every request: kept here rather than
    /// scanned for (`header`).
    pub accept: Option<Span>,
    pub origin: Option<Span>,
    pub eventsource_event: Option<Span>,
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

/// `v` without the spaces and tabs around it (a header value's optional whitespace).
pub(crate) fn trim(mut v: &[u8]) -> &[u8] {
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
        accept: None,
        origin: None,
        eventsource_event: None,
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
        } else if eq_ignore_case(name, "accept") {
            head.accept.get_or_insert(Span::within(buf, value));
        } else if eq_ignore_case(name, "origin") {
            head.origin.get_or_insert(Span::within(buf, value));
        } else if eq_ignore_case(name, "x-eventsource-event") {
            head.eventsource_event
                .get_or_insert(Span::within(buf, value));
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

/// The value of the first header `name` (case-insensitive) in a request head that
/// `parse_head` accepted, trimmed. For the headers `Head` does not keep (nchan's cursors,
/// WebSocket's handshake): a scan of the head's lines.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    headers(head).find_map(|(n, v)| eq_ignore_case(n, name).then_some(v))
}

/// Every header of a request head that `parse_head` accepted: (name, trimmed value).
pub fn headers(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        Some((&line[..colon], trim(&line[colon + 1..])))
    })
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
