//! Stream kinds: responses that stay open and carry records as messages arrive. A kind says
//! what to send first, which messages it takes and as what record, how to frame a batch of
//! records, its keep-alive and its end; the connection code only queues what it is given.
//! Talk is the first kind; nchan's EventSource, HTTP chunked and multipart/mixed
//! subscribers are its siblings (`nchan::streams`).

use crate::http::{self, Framing, Method, ResponseHead, Seg};
use crate::hub::Message;

use super::nchan::streams::{EventSourceStream, PlainStream};
use super::nchan::websocket::WsStream;
use super::talk::TalkStream;

/// One kind of stream, with what it needs to know about its subscriber.
#[derive(Debug)]
pub enum StreamKind {
    Talk(TalkStream),
    /// nchan's EventSource subscriber.
    EventSource(EventSourceStream),
    /// nchan's HTTP chunked subscriber: a chunk per message.
    Chunked(PlainStream),
    /// nchan's multipart/mixed subscriber: a part per message.
    Multipart(PlainStream),
    /// nchan's WebSocket subscriber (a frame per message) or publisher (listens to nothing);
    /// boxed, so the other kinds do not pay for its reader.
    WebSocket(Box<WsStream>),
}

/// What a stream makes of a message.
pub enum Pick {
    /// Send this record.
    Take(Seg),
    /// Not for this subscriber.
    Skip,
    /// For this subscriber, but this kind cannot carry it (counted, then skipped).
    Unframeable,
}

/// What the head of a stream may show about the server.
pub struct HeadEnv<'a> {
    pub date: &'a [u8],
    pub cors_origin: &'a str,
}

impl HeadEnv<'_> {
    /// A `200` head of a chunked response that never ends while the server runs.
    pub fn chunked_head(
        &self,
        cors_origin: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
    ) -> Seg {
        let head = ResponseHead {
            status: 200,
            date: self.date,
            cors_origin,
            content_type,
            framing: Framing::Chunked,
            headers,
            keep_alive: true,
            minor: 1,
        };
        let mut out = Vec::with_capacity(256);
        http::encode_response(&head, Method::Get, b"", &mut out);
        Seg::Owned(out)
    }
}

impl StreamKind {
    /// The response head, queued when the stream opens.
    pub fn head(&self, env: &HeadEnv<'_>) -> Seg {
        match self {
            StreamKind::Talk(t) => t.head(env),
            StreamKind::EventSource(e) => e.head(env),
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => p.head(env),
            StreamKind::WebSocket(ws) => ws.head(env),
        }
    }

    /// The record sent right after the head, if any (Talk's `noop` greeting).
    pub fn greeting(&self) -> Option<Seg> {
        match self {
            StreamKind::Talk(t) => Some(t.keepalive()),
            StreamKind::EventSource(e) => Some(e.greeting()),
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => p.greeting(),
            StreamKind::WebSocket(_) => None,
        }
    }

    /// The record of a message for this subscriber.
    pub fn pick(&self, msg: &Message) -> Pick {
        match self {
            StreamKind::Talk(t) => t.pick(msg),
            StreamKind::EventSource(e) => e.pick(msg),
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => p.pick(msg),
            StreamKind::WebSocket(ws) => ws.pick(msg),
        }
    }

    /// The record sent on a stream quiet for a whole keep-alive interval; `None`: the kind
    /// has none (nchan's streams send nothing between messages), and no timer is kept.
    pub fn keepalive(&self) -> Option<Seg> {
        match self {
            StreamKind::Talk(t) => Some(t.keepalive()),
            StreamKind::EventSource(_)
            | StreamKind::Chunked(_)
            | StreamKind::Multipart(_)
            | StreamKind::WebSocket(_) => None,
        }
    }

    /// Frames a batch of records (`bytes` long in all), handing the segments to `out` in
    /// order. Empties `records`.
    pub fn frame(&self, records: &mut Vec<Seg>, bytes: usize, out: &mut dyn FnMut(Seg)) {
        match self {
            StreamKind::Talk(_) | StreamKind::EventSource(_) => {
                super::talk::frame(records, bytes, out)
            }
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => p.frame(records, bytes, out),
            // Each record is a whole frame.
            StreamKind::WebSocket(_) => records.drain(..).for_each(out),
        }
    }

    /// The bytes that end the stream.
    pub fn end(&self) -> &'static [u8] {
        match self {
            StreamKind::Talk(_) | StreamKind::EventSource(_) => super::talk::LAST_CHUNK,
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => p.end(),
            StreamKind::WebSocket(ws) => ws.end(),
        }
    }

    /// The bytes that end the stream when its channel is deleted (nchan's `410 Gone`);
    /// `None`: the kind outlives a delete (Talk streams keep listening).
    pub fn gone(&self) -> Option<Vec<u8>> {
        match self {
            StreamKind::Talk(_) => None,
            StreamKind::EventSource(e) => Some(e.gone()),
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => Some(p.end().to_vec()),
            StreamKind::WebSocket(ws) => Some(ws.gone()),
        }
    }

    /// The bytes that end the stream when nchan's `--nchan-subscriber-timeout` passes
    /// (`408`); `None` for a kind that does not time out.
    pub fn expired(&self) -> Option<Vec<u8>> {
        match self {
            StreamKind::Talk(_) => None,
            StreamKind::EventSource(e) => Some(e.expired()),
            StreamKind::Chunked(p) | StreamKind::Multipart(p) => Some(p.end().to_vec()),
            StreamKind::WebSocket(ws) => Some(ws.expired()),
        }
    }

    /// Whether the stream listens to its channel (all do but a WebSocket publisher).
    pub fn listens(&self) -> bool {
        match self {
            StreamKind::WebSocket(ws) => ws.listens(),
            _ => true,
        }
    }

    /// The WebSocket whose client's frames must be read; `None`: the kind's input is
    /// discarded.
    pub fn websocket(&mut self) -> Option<&mut WsStream> {
        match self {
            StreamKind::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// A name that replaces an older stream of the same name on the channel.
    pub fn name(&self) -> Option<&str> {
        match self {
            StreamKind::Talk(t) => Some(t.name()),
            _ => None,
        }
    }
}
