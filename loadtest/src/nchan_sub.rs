//! A subscriber of nchan's `/sub/{channel}` (NCHAN.md 5 and 6), sans-io: the
//! request bytes of each transport and a parser that turns what the server
//! sends into messages. The same client drives tidings and nginx + nchan:
//!
//! - **EventSource** (`Accept: text/event-stream`): `id:` / `data:` lines up to a
//!   blank line are one message. tidings frames the body with
//!   `Transfer-Encoding: chunked` (NCHAN.md deviation D4), nchan closes it with the
//!   connection: the head says which. Every message must carry an `id:`.
//! - **WebSocket** (RFC 6455, version 13): the `101` head is checked (accept key,
//!   the `ws+meta.nchan` subprotocol when asked for); server frames must be
//!   unmasked and whole; in meta mode each frame starts `id: …\n[content-type:
//!   …\n]\n`. A server ping is answered with a masked pong
//!   ([`tidings::proto::websocket::encode_client_frame`]).
//! - **Long-poll**: one message per `200` reply (`Content-Length` framed); the
//!   next request carries its `Last-Modified` / `Etag` as `If-Modified-Since` /
//!   `If-None-Match`, on the same connection. A `408` or `304` is asked again with
//!   the same cursor.
//!
//! Bytes the client must send back (a re-poll, a pong) are appended to `out`.

use tidings::proto::websocket::{accept_key, encode_client_frame, parse_header, Opcode};

use crate::chunked::{ChunkParser, ProtoError, Status};
use crate::http::{escape, header, parse_response_head, pct};

/// The `Sec-WebSocket-Key` of every handshake (RFC 6455's sample nonce: the
/// server's answer to it is known).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The masking key of the client's frames (pongs).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The longest message (or unparsed input) held before the stream is called broken.
const MAX_HELD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    EventSource,
    /// `meta`: with `Sec-WebSocket-Protocol: ws+meta.nchan`, as `NchanSubscriber`.
    WebSocket {
        meta: bool,
    },
    LongPoll,
}

impl Transport {
    /// `eventsource`, `websocket` (ws+meta.nchan), `websocket-plain` or `longpoll`.
    pub fn parse(s: &str) -> Result<Transport, String> {
        Ok(match s {
            "eventsource" | "es" => Transport::EventSource,
            "websocket" | "ws" => Transport::WebSocket { meta: true },
            "websocket-plain" => Transport::WebSocket { meta: false },
            "longpoll" | "long-poll" | "lp" => Transport::LongPoll,
            other => {
                return Err(format!(
                "--transport `{other}`: want eventsource, websocket, websocket-plain or longpoll"
            ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::EventSource => "eventsource",
            Transport::WebSocket { meta: true } => "websocket",
            Transport::WebSocket { meta: false } => "websocket-plain",
            Transport::LongPoll => "longpoll",
        }
    }
}

/// The first request of a subscriber of `channel`.
pub fn sub_request(t: Transport, channel: &str) -> Vec<u8> {
    let start = format!("GET /sub/{} HTTP/1.1\r\nHost: x\r\n", pct(channel));
    let extra = match t {
        Transport::EventSource => "Accept: text/event-stream\r\n".to_string(),
        Transport::WebSocket { meta } => format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{}",
            if meta {
                "Sec-WebSocket-Protocol: ws+meta.nchan\r\n"
            } else {
                ""
            }
        ),
        Transport::LongPoll => String::new(),
    };
    format!("{start}{extra}\r\n").into_bytes()
}

/// A long-poll request after the message with this `Last-Modified` and `Etag`.
fn repoll_request(channel: &str, cursor: &(String, String)) -> Vec<u8> {
    format!(
        "GET /sub/{} HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {}\r\nIf-None-Match: {}\r\n\r\n",
        pct(channel),
        cursor.0,
        cursor.1
    )
    .into_bytes()
}

enum State {
    /// Waiting for the reply head (every long-poll reply starts here again).
    Head,
    /// EventSource body with chunked framing: the records are its lines.
    EsChunked(ChunkParser),
    /// EventSource body delimited by the connection's end.
    EsRaw,
    Ws,
    /// A long-poll reply's body: this many bytes, then re-poll.
    LpBody(usize),
    Ended,
}

/// The EventSource event being gathered.
#[derive(Default)]
struct SseEvent {
    id: bool,
    data: Option<Vec<u8>>,
}

impl SseEvent {
    /// One line (its `\n` stripped) of the event stream.
    fn line(&mut self, line: &[u8], on_msg: &mut dyn FnMut(&[u8])) -> Result<(), ProtoError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let ev = std::mem::take(self);
            return match (ev.data, ev.id) {
                (None, _) => Ok(()),
                (Some(d), true) => {
                    on_msg(&d);
                    Ok(())
                }
                (Some(d), false) => Err(ProtoError(format!(
                    "EventSource message {:?} without an id: line",
                    escape(&d, 60)
                ))),
            };
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"id" => self.id = true,
            b"data" => match self.data.as_mut() {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => self.data = Some(value.to_vec()),
            },
            b"event" | b"retry" => {}
            _ => {
                return Err(ProtoError(format!(
                    "EventSource line {:?}: not a field nchan sends",
                    escape(line, 60)
                )))
            }
        }
        Ok(())
    }
}

/// What a subscriber has read so far.
pub struct SubParser {
    t: Transport,
    channel: String,
    state: State,
    /// Bytes not consumed yet (a head, WebSocket frames, a body, a partial line).
    buf: Vec<u8>,
    event: SseEvent,
    /// Long-poll: `Last-Modified` and `Etag` of the last message.
    cursor: Option<(String, String)>,
}

fn fail<T>(msg: String) -> Result<T, ProtoError> {
    Err(ProtoError(msg))
}

impl SubParser {
    pub fn new(t: Transport, channel: &str) -> SubParser {
        SubParser {
            t,
            channel: channel.to_string(),
            state: State::Head,
            buf: Vec::new(),
            event: SseEvent::default(),
            cursor: None,
        }
    }

    /// Takes bytes read from the connection; calls `on_msg` with each message's
    /// bytes and appends to `out` what must be written back.
    pub fn feed(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        mut on_msg: impl FnMut(&[u8]),
    ) -> Result<Status, ProtoError> {
        if let State::EsChunked(p) = &mut self.state {
            // lines straight from the chunks; no copy
            let ev = &mut self.event;
            let mut bad = None;
            let st = p.feed(data, |_, line| {
                if bad.is_none() {
                    bad = ev.line(line, &mut on_msg).err();
                }
            })?;
            return match bad {
                Some(e) => Err(e),
                None => Ok(st),
            };
        }
        self.buf.extend_from_slice(data);
        loop {
            let progressed = match self.state {
                State::Head => self.head(out)?,
                State::EsChunked(_) => {
                    let rest = std::mem::take(&mut self.buf);
                    return self.feed(&rest, out, on_msg);
                }
                State::EsRaw => {
                    let mut at = 0;
                    while let Some(i) = memchr::memchr(b'\n', &self.buf[at..]) {
                        self.event.line(&self.buf[at..at + i], &mut on_msg)?;
                        at += i + 1;
                    }
                    self.buf.drain(..at);
                    false
                }
                State::Ws => self.ws_frame(out, &mut on_msg)?,
                State::LpBody(len) => {
                    if self.buf.len() < len {
                        false
                    } else {
                        on_msg(&self.buf[..len]);
                        self.buf.drain(..len);
                        self.state = State::Head;
                        out.extend_from_slice(&self.poll_request());
                        true
                    }
                }
                State::Ended => {
                    return if self.buf.is_empty() {
                        Ok(Status::Ended)
                    } else {
                        fail(format!(
                            "{} bytes after the end of the stream",
                            self.buf.len()
                        ))
                    }
                }
            };
            if self.buf.len() > MAX_HELD {
                return fail(format!("more than {MAX_HELD} bytes without a message"));
            }
            if !progressed || self.buf.is_empty() {
                return Ok(match self.state {
                    State::Ended => Status::Ended,
                    _ => Status::Open,
                });
            }
        }
    }

    /// Parses a reply head at the front of `buf`; false while it is incomplete.
    fn head(&mut self, out: &mut Vec<u8>) -> Result<bool, ProtoError> {
        let Some(h) = parse_response_head(&self.buf).map_err(ProtoError)? else {
            return Ok(false);
        };
        let head: Vec<u8> = self.buf.drain(..h.head_len).collect();
        let show = || escape(&head, 300);
        let hdr = |name: &str| header(&head, name);
        self.state = match (self.t, h.status) {
            (Transport::EventSource, 200) => {
                let ct = hdr("content-type").unwrap_or_default();
                if !ct.starts_with("text/event-stream") {
                    return fail(format!(
                        "EventSource reply is not text/event-stream: {}",
                        show()
                    ));
                }
                if h.chunked {
                    State::EsChunked(ChunkParser::new(b'\n'))
                } else if h.content_length.is_some() {
                    return fail(format!(
                        "EventSource reply with a Content-Length: {}",
                        show()
                    ));
                } else {
                    State::EsRaw
                }
            }
            (Transport::WebSocket { meta }, 101) => {
                let want = accept_key(WS_KEY.as_bytes());
                let ok_accept =
                    hdr("sec-websocket-accept").as_deref().map(str::as_bytes) == Some(&want[..]);
                let ok_upgrade =
                    hdr("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                let proto = hdr("sec-websocket-protocol");
                let ok_proto = if meta {
                    proto.as_deref() == Some("ws+meta.nchan")
                } else {
                    proto.is_none()
                };
                if !(ok_accept && ok_upgrade && ok_proto) {
                    return fail(format!(
                        "WebSocket handshake reply not as RFC 6455 / NCHAN.md 6.2: {}",
                        show()
                    ));
                }
                State::Ws
            }
            (Transport::LongPoll, 200) => {
                if h.chunked || h.close {
                    return fail(format!(
                        "long-poll reply is chunked or closes the connection: {}",
                        show()
                    ));
                }
                let (Some(lm), Some(etag)) = (hdr("last-modified"), hdr("etag")) else {
                    return fail(format!(
                        "long-poll message without Last-Modified and Etag: {}",
                        show()
                    ));
                };
                self.cursor = Some((lm, etag));
                State::LpBody(h.content_length.unwrap_or(0))
            }
            (Transport::LongPoll, 304 | 408) if !h.close && h.content_length.unwrap_or(0) == 0 => {
                // nothing new: ask again with the cursor of the request answered
                out.extend_from_slice(&self.poll_request());
                State::Head
            }
            (_, status) => return fail(format!("status {status}: {}", show())),
        };
        Ok(true)
    }

    /// The next long-poll request: after the last message, or (none yet) the
    /// first request again.
    fn poll_request(&self) -> Vec<u8> {
        match &self.cursor {
            Some(c) => repoll_request(&self.channel, c),
            None => sub_request(self.t, &self.channel),
        }
    }

    /// Takes one whole WebSocket frame from the front of `buf`; false while
    /// it is incomplete.
    fn ws_frame(
        &mut self,
        out: &mut Vec<u8>,
        on_msg: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, ProtoError> {
        let Some(h) =
            parse_header(&self.buf).map_err(|e| ProtoError(format!("WebSocket frame: {e}")))?
        else {
            return Ok(false);
        };
        if h.mask.is_some() {
            return fail("masked frame from the server (RFC 6455 5.1)".into());
        }
        let end = h.len as u64 + h.payload_len;
        if end > MAX_HELD as u64 {
            return fail(format!("WebSocket frame of {} bytes", h.payload_len));
        }
        let end = end as usize;
        if self.buf.len() < end {
            return Ok(false);
        }
        let payload = &self.buf[h.len..end];
        match h.opcode {
            Opcode::Text | Opcode::Binary if h.fin => {
                let meta = matches!(self.t, Transport::WebSocket { meta: true });
                let msg = if meta { meta_body(payload)? } else { payload };
                on_msg(msg);
            }
            Opcode::Ping => encode_client_frame(true, Opcode::Pong, payload, MASK, out),
            Opcode::Pong => {}
            Opcode::Close => {
                // the worker counts the stream closed by the server
                self.buf.drain(..end);
                self.state = State::Ended;
                return Ok(true);
            }
            _ => {
                return fail(format!(
                    "fragmented server message ({:?}, fin={}): nchan and tidings send whole frames",
                    h.opcode, h.fin
                ))
            }
        }
        self.buf.drain(..end);
        Ok(true)
    }
}

/// The message of a `ws+meta.nchan` frame: after `id: …\n[content-type: …\n]\n`.
fn meta_body(payload: &[u8]) -> Result<&[u8], ProtoError> {
    let bad = || {
        ProtoError(format!(
            "ws+meta.nchan frame without its id header: {:?}",
            escape(payload, 80)
        ))
    };
    let rest = payload.strip_prefix(b"id: ").ok_or_else(bad)?;
    let nl = memchr::memchr(b'\n', rest).ok_or_else(bad)?;
    let mut rest = &rest[nl + 1..];
    if let Some(ct) = rest.strip_prefix(b"content-type: ") {
        let nl = memchr::memchr(b'\n', ct).ok_or_else(bad)?;
        rest = &ct[nl + 1..];
    }
    rest.strip_prefix(b"\n").ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings::proto::websocket::encode_frame;

    /// Feeds `parts` one after the other; the messages and what was written back.
    fn run(t: Transport, parts: &[&[u8]]) -> (Vec<String>, Vec<u8>, Result<Status, ProtoError>) {
        let mut p = SubParser::new(t, "ch");
        let mut msgs = Vec::new();
        let mut out = Vec::new();
        let mut last = Ok(Status::Open);
        for part in parts {
            last = p.feed(part, &mut out, |m| {
                msgs.push(String::from_utf8_lossy(m).into_owned())
            });
            if last.is_err() {
                break;
            }
        }
        (msgs, out, last)
    }

    /// Every split of `whole` in two gives the same messages.
    fn splits(t: Transport, whole: &[u8], want: &[&str]) {
        for i in 0..=whole.len() {
            let (msgs, _, st) = run(t, &[&whole[..i], &whole[i..]]);
            assert!(st.is_ok(), "split at {i}: {st:?}");
            assert_eq!(msgs, want, "split at {i}");
        }
    }

    #[test]
    fn eventsource_close_delimited_as_nchan() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: keep-alive\r\n\r\n: hi\n\nid: 1796177209:0\ndata: a\ndata: b\ndata: \n\nevent: tick\nid: 1796177209:1\ndata: \n\nid: 1796177210:0\ndata: bin\n\n";
        splits(Transport::EventSource, whole, &["a\nb\n", "", "bin"]);
    }

    #[test]
    fn eventsource_chunked_as_tidings() {
        let mut whole = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        // two events in one chunk, as tidings writes what is pending at once
        for chunk in [
            ": hi\n\n",
            "id: 1796177209:0\ndata: noop\n\nid: 1796177209:1\ndata: x\n\n",
        ] {
            whole.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        splits(Transport::EventSource, &whole, &["noop", "x"]);
        let (_, _, st) = run(Transport::EventSource, &[&whole, b"0\r\n\r\n"]);
        assert_eq!(st, Ok(Status::Ended));
    }

    #[test]
    fn eventsource_refusals() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        assert!(run(Transport::EventSource, &[head, b"data: x\n\n"])
            .2
            .is_err());
        assert!(run(Transport::EventSource, &[head, b"bogus: x\n"])
            .2
            .is_err());
        assert!(
            run(Transport::EventSource, &[b"HTTP/1.1 403 Forbidden\r\n\r\n"])
                .2
                .is_err()
        );
        assert!(run(
            Transport::EventSource,
            &[b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"]
        )
        .2
        .is_err());
    }

    fn ws_head(meta: bool) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n{}Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\n\r\n",
            if meta { "Sec-WebSocket-Protocol: ws+meta.nchan\r\n" } else { "" }
        )
        .into_bytes()
    }

    #[test]
    fn websocket_meta_and_plain() {
        let mut whole = ws_head(true);
        whole.extend_from_slice(b"\x81\x17id: 1796177227:0\n\nhello");
        whole.extend_from_slice(
            b"\x82\x3bid: 1796177227:1\ncontent-type: application/octet-stream\n\nAB",
        );
        splits(
            Transport::WebSocket { meta: true },
            &whole,
            &["hello", "AB"],
        );
        let mut plain = ws_head(false);
        encode_frame(Opcode::Text, b"noop", &mut plain);
        splits(Transport::WebSocket { meta: false }, &plain, &["noop"]);
        // a frame without its meta header, a masked one, a close: loud
        let mut bad = ws_head(true);
        bad.extend_from_slice(b"\x81\x05hello");
        assert!(run(Transport::WebSocket { meta: true }, &[&bad]).2.is_err());
        let mut masked = ws_head(false);
        encode_client_frame(true, Opcode::Text, b"x", MASK, &mut masked);
        assert!(run(Transport::WebSocket { meta: false }, &[&masked])
            .2
            .is_err());
        let mut close = ws_head(false);
        close.extend_from_slice(b"\x88\x02\x03\xe8");
        assert_eq!(
            run(Transport::WebSocket { meta: false }, &[&close]).2,
            Ok(Status::Ended)
        );
        // a wrong accept key or a missing subprotocol
        let wrong = String::from_utf8(ws_head(true))
            .unwrap()
            .replace("s3pP", "AAAA");
        assert!(
            run(Transport::WebSocket { meta: true }, &[wrong.as_bytes()])
                .2
                .is_err()
        );
        assert!(run(Transport::WebSocket { meta: true }, &[&ws_head(false)])
            .2
            .is_err());
    }

    #[test]
    fn websocket_ping_gets_a_masked_pong() {
        let mut whole = ws_head(false);
        whole.extend_from_slice(b"\x89\x02hi");
        let (msgs, out, st) = run(Transport::WebSocket { meta: false }, &[&whole]);
        assert!(msgs.is_empty() && st.is_ok());
        let mut want = Vec::new();
        encode_client_frame(true, Opcode::Pong, b"hi", MASK, &mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn longpoll_repolls_with_the_cursor() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nLast-Modified: Wed, 02 Dec 2026 02:06:41 GMT\r\nEtag: 3\r\nVary: If-None-Match, If-Modified-Since\r\n\r\nnoop";
        splits(Transport::LongPoll, reply, &["noop"]);
        let (_, out, _) = run(Transport::LongPoll, &[reply]);
        assert_eq!(
            out,
            b"GET /sub/ch HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Wed, 02 Dec 2026 02:06:41 GMT\r\nIf-None-Match: 3\r\n\r\n"
        );
        // two replies in one read; a 408 asks again
        let mut two = reply.to_vec();
        two.extend_from_slice(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n");
        two.extend_from_slice(reply);
        let (msgs, out, st) = run(Transport::LongPoll, &[&two]);
        assert_eq!(msgs, ["noop", "noop"]);
        assert!(st.is_ok());
        assert_eq!(memchr::memmem::find_iter(&out, b"GET /sub/ch").count(), 3);
        let no_cursor = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert!(run(Transport::LongPoll, &[no_cursor]).2.is_err());
    }

    #[test]
    fn requests_and_names() {
        for n in ["eventsource", "websocket", "websocket-plain", "longpoll"] {
            assert_eq!(Transport::parse(n).unwrap().name(), n);
        }
        assert!(Transport::parse("chunked").is_err());
        let ws =
            String::from_utf8(sub_request(Transport::WebSocket { meta: true }, "a b")).unwrap();
        assert!(ws.starts_with("GET /sub/a%20b HTTP/1.1\r\n"));
        assert!(ws.contains("Sec-WebSocket-Protocol: ws+meta.nchan\r\n"));
        assert!(String::from_utf8(sub_request(Transport::EventSource, "c"))
            .unwrap()
            .contains("Accept: text/event-stream\r\n"));
    }
}
