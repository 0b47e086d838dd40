//! The `websocket` target: `proto::websocket`'s reader fed whole, in pieces and a byte at a
//! time; what it read encoded again and read back; the handshake on header lines.

use crate::http::Method;
use crate::proto::websocket::{
    encode_client_frame, upgrade, Event, Opcode, Reader, Step, Upgrade, WsError, MAX_CONTROL,
    MAX_HEADER,
};

/// An owned copy of a [`Event`], to compare runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl WsEvent {
    fn of(e: Event<'_>) -> WsEvent {
        match e {
            Event::Text(s) => WsEvent::Text(s.to_string()),
            Event::Binary(b) => WsEvent::Binary(b.to_vec()),
            Event::Ping(b) => WsEvent::Ping(b.to_vec()),
            Event::Pong(b) => WsEvent::Pong(b.to_vec()),
            Event::Close(c) => WsEvent::Close(c.map(|c| (c.code, c.reason.to_string()))),
        }
    }
}

/// Reads `stream` with a new `Reader` as a connection would: each piece (lengths from
/// `pieces`, then the rest at once) appended to a buffer, `read` until it asks for more,
/// consumed bytes removed. Stops at an error or a close. Returns the events and the error.
/// Checks on the way that `read` consumes within the buffer and that what it leaves there
/// (an unfinished frame) is shorter than a header and the frame limit: a read buffer of
/// that size never fills up without an answer.
pub fn ws_events(
    stream: &[u8],
    max_frame: usize,
    max_message: usize,
    pieces: impl IntoIterator<Item = usize>,
) -> (Vec<WsEvent>, Option<WsError>) {
    let mut reader = Reader::new(max_frame, max_message);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut at = 0usize;
    for piece in pieces.into_iter().chain([usize::MAX]) {
        let next = at.saturating_add(piece).min(stream.len());
        buf.extend_from_slice(&stream[at..next]);
        at = next;
        loop {
            let len = buf.len();
            match reader.read(&mut buf) {
                Ok(Step::Event { event, consumed }) => {
                    assert!(
                        consumed > 0 && consumed <= len,
                        "consumed {consumed} of {len}"
                    );
                    let event = WsEvent::of(event);
                    let closed = matches!(event, WsEvent::Close(_));
                    events.push(event);
                    if closed {
                        return (events, None);
                    }
                    buf.drain(..consumed);
                }
                Ok(Step::More { consumed }) => {
                    assert!(consumed <= len, "consumed {consumed} of {len}");
                    buf.drain(..consumed);
                    assert!(
                        buf.len() < MAX_HEADER + max_frame,
                        "{} bytes left waiting with a frame limit of {max_frame}",
                        buf.len()
                    );
                    break;
                }
                Err(e) => return (events, Some(e)),
            }
        }
        if at == stream.len() {
            break;
        }
    }
    (events, None)
}

/// The events as a client would send them again: messages in fragments of at most
/// `max_frame` bytes (at least two when they have two bytes), masked with a key of the
/// event's index.
fn encode_events(events: &[WsEvent], max_frame: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let key = (i as u32).wrapping_mul(0x9E37_79B9).to_be_bytes();
        let (opcode, payload) = match e {
            WsEvent::Text(s) => (Opcode::Text, s.as_bytes().to_vec()),
            WsEvent::Binary(b) => (Opcode::Binary, b.clone()),
            WsEvent::Ping(b) => (Opcode::Ping, b.clone()),
            WsEvent::Pong(b) => (Opcode::Pong, b.clone()),
            WsEvent::Close(c) => {
                let payload = c.as_ref().map_or(Vec::new(), |(code, reason)| {
                    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
                });
                (Opcode::Close, payload)
            }
        };
        if opcode.is_control() || payload.is_empty() {
            encode_client_frame(true, opcode, &payload, key, &mut out);
            continue;
        }
        let size = max_frame.min(payload.len().div_ceil(2)).max(1);
        let mut chunks = payload.chunks(size).peekable();
        let mut op = opcode;
        while let Some(chunk) = chunks.next() {
            encode_client_frame(chunks.peek().is_none(), op, chunk, key, &mut out);
            op = Opcode::Continuation;
        }
    }
    out
}

/// `Reader` on arbitrary bytes. Input: a control byte (bits 6-7: the frame and message
/// limits; bits 0-3: how many piece lengths follow), the piece lengths (one byte each), then
/// the client's byte stream. Oracles: the events and the error are the same whether the
/// stream arrives whole, in those pieces, or a byte at a time; every event is within the
/// limits; the buffer never holds more than an unfinished frame; the events, encoded again
/// as a client would (fragmented, masked), read back as the same events with no error. Then
/// the stream's lines, as `name: value` headers, go through the handshake: an accepted one
/// renders a `101` head that parses as a response carrying its key.
pub fn websocket(data: &[u8]) {
    const LIMITS: [(usize, usize); 4] = [(16, 40), (125, 300), (4096, 8192), (1 << 20, 1 << 20)];
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let (max_frame, max_message) = LIMITS[usize::from(ctl >> 6)];
    let (cuts, stream) = rest.split_at(usize::from(ctl & 15).min(rest.len()));
    let whole = ws_events(stream, max_frame, max_message, []);
    let pieces = ws_events(
        stream,
        max_frame,
        max_message,
        cuts.iter().map(|&c| usize::from(c)),
    );
    assert_eq!(whole, pieces, "read in pieces vs whole");
    if stream.len() <= 4096 {
        let bytes = ws_events(stream, max_frame, max_message, vec![1; stream.len()]);
        assert_eq!(whole, bytes, "read a byte at a time vs whole");
    }
    for e in &whole.0 {
        let (len, limit) = match e {
            WsEvent::Text(s) => (s.len(), max_message),
            WsEvent::Binary(b) => (b.len(), max_message),
            WsEvent::Ping(b) | WsEvent::Pong(b) => (b.len(), MAX_CONTROL),
            WsEvent::Close(c) => (c.as_ref().map_or(0, |(_, r)| r.len() + 2), MAX_CONTROL),
        };
        assert!(len <= limit, "an event of {len} bytes past {limit}: {e:?}");
    }
    let again = encode_events(&whole.0, max_frame);
    let read_back = ws_events(&again, max_frame, max_message, []);
    assert_eq!(read_back, (whole.0, None), "the events encoded again");

    let headers = stream.split(|&b| b == b'\n').filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], &line[colon + 1..]))
    });
    if let Upgrade::Accept(accept) = upgrade(Method::Get, 1, headers) {
        let mut head = Vec::new();
        accept.write_head(None, &mut head);
        let mut parsed = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut parsed);
        let status = response.parse(&head);
        assert!(
            matches!(status, Ok(httparse::Status::Complete(n)) if n == head.len()),
            "the 101 head parses: {status:?}"
        );
        assert_eq!(response.code, Some(101));
        let key = response
            .headers
            .iter()
            .find(|h| h.name == "Sec-WebSocket-Accept")
            .map(|h| h.value);
        assert_eq!(key, Some(accept.key().as_bytes()), "the accept key");
    }
}
