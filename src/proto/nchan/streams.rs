//! nchan's streaming subscribers (NCHAN.md 6): EventSource, HTTP chunked and
//! multipart/mixed, as stream kinds beside Talk. Each message's record is rendered once per
//! message and transport and shared by every subscriber (`Message::rendered`).
//!
//! All three are framed with `Transfer-Encoding: chunked` on the wire (nchan sends
//! EventSource and multipart close-delimited; deviation D4 of NCHAN.md: the bytes inside are
//! the same, and the connection can say where the response ends).

use std::sync::{Arc, OnceLock};

use super::super::stream::{HeadEnv, Pick};
use super::Request;
use crate::http::{self, Seg};
use crate::hub::{Format, Message};

/// How a `/sub/` request that is not a WebSocket (`websocket::upgrade` decides that first)
/// wants its messages (NCHAN.md 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    EventSource,
    Chunked,
    Multipart,
    LongPoll,
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Picks the transport after WebSocket, in nchan's order.
pub fn transport(req: &Request<'_>) -> Transport {
    let accept = req.head.accept.map(|s| s.of(req.buf)).unwrap_or(b"");
    if contains_ignore_case(accept, b"text/event-stream") {
        return Transport::EventSource;
    }
    if req.header("te").is_some_and(te_chunked) {
        return Transport::Chunked;
    }
    if contains_ignore_case(accept, b"multipart/mixed") {
        return Transport::Multipart;
    }
    Transport::LongPoll
}

/// Whether `TE` asks for chunked: any `chunked` token with q above 0 (deviation D2: nchan
/// misses `TE: chunked, trailers`).
fn te_chunked(te: &[u8]) -> bool {
    te.split(|&b| b == b',').any(|element| {
        let mut parts = element.split(|&b| b == b';');
        let token = parts.next().map(http::trim).unwrap_or(b"");
        if !token.eq_ignore_ascii_case(b"chunked") {
            return false;
        }
        parts.all(|p| {
            let p = http::trim(p);
            match p.strip_prefix(b"q=") {
                Some(q) => std::str::from_utf8(q)
                    .ok()
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q > 0.0),
                None => true,
            }
        })
    })
}

/// The head of a streaming answer: `200`, chunked, the kind's content type, nchan's CORS.
fn stream_head(env: &HeadEnv<'_>, content_type: &str, origin: Option<&str>) -> Seg {
    let mut headers = vec![
        ("Cache-Control", "no-cache".to_string()),
        ("X-Accel-Buffering", "no".to_string()),
    ];
    let allow = match origin {
        None => "",
        Some(o) if env.cors_origin == "*" => o,
        Some(_) => env.cors_origin,
    };
    if origin.is_some() {
        headers.push(("Access-Control-Allow-Credentials", "true".to_string()));
    }
    env.chunked_head(allow, content_type, &headers)
}

/// A whole chunk of these bytes.
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// An EventSource subscriber (NCHAN.md 6.1).
#[derive(Debug)]
pub struct EventSourceStream {
    origin: Option<Box<str>>,
}

impl EventSourceStream {
    pub fn new(origin: Option<String>) -> EventSourceStream {
        EventSourceStream {
            origin: origin.map(String::into_boxed_str),
        }
    }

    pub fn head(&self, env: &HeadEnv<'_>) -> Seg {
        stream_head(
            env,
            "text/event-stream; charset=utf-8",
            self.origin.as_deref(),
        )
    }

    pub fn greeting(&self) -> Seg {
        Seg::Static(b": hi\n\n")
    }

    pub fn pick(&self, msg: &Message) -> Pick {
        match msg.rendered(Format::EventSource, |m| Some(event_record(m))) {
            Some(r) => Pick::Take(Seg::Shared(r)),
            None => Pick::Unframeable,
        }
    }

    /// What ends the stream when its channel is deleted.
    pub fn gone(&self) -> Vec<u8> {
        Self::ending(b":410: 410 Gone\n\n")
    }

    /// What ends the stream at `--nchan-subscriber-timeout`.
    pub fn expired(&self) -> Vec<u8> {
        Self::ending(b":408: 408 Request Timeout\n\n")
    }

    fn ending(status: &[u8]) -> Vec<u8> {
        let mut out = chunk(status);
        out.extend_from_slice(super::super::talk::LAST_CHUNK);
        out
    }
}

/// `[event: E\n]id: TIME:TAG\n` then a `data: ` line per line of the body, then a blank
/// line. Lines end at `\r\n`, `\r` or `\n` (deviation D3: a browser ends a line at each).
pub fn event_record(msg: &Message) -> Arc<[u8]> {
    let mut out = String::with_capacity(msg.body.len() + 48);
    if let Some(e) = msg.event() {
        // An event name is one line: what follows a line end would be a field of its own.
        let e = e.split(['\r', '\n']).next().unwrap_or("");
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    out.push_str("id: ");
    super::write_id(&mut out, msg.seq);
    out.push('\n');
    let mut bytes = out.into_bytes();
    let body = &msg.body[..];
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\n' | b'\r' => {
                bytes.extend_from_slice(b"data: ");
                bytes.extend_from_slice(&body[start..i]);
                bytes.push(b'\n');
                if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    bytes.extend_from_slice(b"data: ");
    bytes.extend_from_slice(&body[start..]);
    bytes.extend_from_slice(b"\n\n");
    Arc::from(bytes)
}

/// An HTTP chunked or multipart/mixed subscriber (NCHAN.md 6.3, 6.4).
#[derive(Debug)]
pub struct PlainStream {
    multipart: bool,
    origin: Option<Box<str>>,
}

/// The multipart boundary: 32 random letters and digits, made once per process, so each
/// message's part is rendered once and shared by every subscriber.
fn boundary() -> &'static str {
    static BOUNDARY: OnceLock<String> = OnceLock::new();
    BOUNDARY.get_or_init(|| {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut b = [0u8; 32];
        if getrandom::getrandom(&mut b).is_err() {
            panic!("no randomness from the operating system");
        }
        b.iter()
            .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
            .collect()
    })
}

impl PlainStream {
    pub fn chunked(origin: Option<String>) -> PlainStream {
        PlainStream {
            multipart: false,
            origin: origin.map(String::into_boxed_str),
        }
    }

    pub fn multipart(origin: Option<String>) -> PlainStream {
        PlainStream {
            multipart: true,
            origin: origin.map(String::into_boxed_str),
        }
    }

    pub fn head(&self, env: &HeadEnv<'_>) -> Seg {
        if self.multipart {
            let ct = format!("multipart/mixed; boundary={}", boundary());
            stream_head(env, &ct, self.origin.as_deref())
        } else {
            stream_head(env, "", self.origin.as_deref())
        }
    }

    /// The multipart body starts with its first boundary.
    pub fn greeting(&self) -> Option<Seg> {
        self.multipart
            .then(|| Seg::Owned(format!("--{}", boundary()).into_bytes()))
    }

    pub fn pick(&self, msg: &Message) -> Pick {
        if self.multipart {
            let part = msg.rendered(Format::MultipartPart, |m| Some(multipart_part(m)));
            return part.map_or(Pick::Unframeable, |p| Pick::Take(Seg::Shared(p)));
        }
        // An empty chunk would end the response: empty messages are skipped (as nchan).
        if msg.body.is_empty() {
            return Pick::Skip;
        }
        let chunk = msg.rendered(Format::Chunk, |m| Some(Arc::from(chunk(&m.body))));
        chunk.map_or(Pick::Unframeable, |c| Pick::Take(Seg::Shared(c)))
    }

    /// Frames a batch: a chunked subscriber's records are whole chunks already; multipart
    /// parts go out as one chunk.
    pub fn frame(&self, records: &mut Vec<Seg>, bytes: usize, out: &mut dyn FnMut(Seg)) {
        if self.multipart {
            super::super::talk::frame(records, bytes, out);
        } else {
            for r in records.drain(..) {
                out(r);
            }
        }
    }

    /// What ends the stream (on shutdown, or when the channel is deleted).
    pub fn end(&self) -> &'static [u8] {
        if self.multipart {
            b"4\r\n--\r\n\r\n0\r\n\r\n"
        } else {
            super::super::talk::LAST_CHUNK
        }
    }
}

/// `\r\nLast-Modified: …\r\nEtag: TAG\r\n[Content-Type: …\r\n]\r\n<bytes>\r\n--BOUNDARY`.
fn multipart_part(msg: &Message) -> Arc<[u8]> {
    let date = http::imf_fixdate(msg.seq / 1000);
    let mut out = Vec::with_capacity(msg.body.len() + 128);
    out.extend_from_slice(b"\r\nLast-Modified: ");
    out.extend_from_slice(&date);
    out.extend_from_slice(format!("\r\nEtag: {}\r\n", msg.seq % 1000).as_bytes());
    if let Some(ct) = super::content_type(msg) {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&msg.body);
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary().as_bytes());
    Arc::from(out)
}
