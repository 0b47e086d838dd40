//! What the server writes: reason phrases, the cached `Date`, chunk-size lines, output
//! segments and response heads (with their table tests).

use super::Method;

/// The standard reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
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
    /// Empty: no `Access-Control-Allow-Origin`.
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
    if !head.cors_origin.is_empty() {
        out.extend_from_slice(b"\r\nAccess-Control-Allow-Origin: ");
        out.extend_from_slice(head.cors_origin.as_bytes());
    }
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
