//! nchan's WebSocket subscriber and publisher (NCHAN.md 3.5, 6.2) as a stream kind: the
//! handshake's `101`, a frame per message (rendered once per message and mode, shared), and
//! what the client sends: pings answered, closes echoed, protocol errors closed with their
//! code, messages published (on `/pub/`) or refused with 1008 (on `/sub/`).

use std::sync::Arc;

use super::super::stream::{HeadEnv, Pick};
use super::{info_body, InfoFormat};
use crate::http::Seg;
use crate::hub::{Draft, Format, Message, Origin};
use crate::proto::websocket::{
    encode_close, encode_frame, encode_message, Accept, Event, Opcode, Reader, Step,
};
use crate::proto::Ctx;

/// Close codes the server sends (RFC 6455 7.4.1).
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const INTERNAL: u16 = 1011;

/// What a publisher's handshake said about the messages it will send.
#[derive(Debug)]
struct Publisher {
    /// The handshake's `Content-Type`, given to text messages.
    content_type: Option<Box<str>>,
    /// The channel info format each publish is answered in (the handshake's `Accept`).
    info: InfoFormat,
}

/// A WebSocket on `/sub/` (a subscriber) or `/pub/` (a publisher).
#[derive(Debug)]
pub struct WsStream {
    accept: Accept,
    origin: Option<Box<str>>,
    reader: Reader,
    publisher: Option<Box<Publisher>>,
}

impl WsStream {
    /// With `--redis`: Redis stored this publisher's oldest message (its `seq`), or did not.
    /// Writes the channel's info (as this node knows it, with the message's id), or the
    /// close that ends the stream (then `true`).
    pub fn published(
        &self,
        ctx: &Ctx<'_>,
        channel: &str,
        result: Result<crate::hub::Answer, crate::hub::HubError>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(p) = &self.publisher else {
            return false;
        };
        match result {
            Ok(answer) => {
                let info = ctx.hub.info(channel).unwrap_or(crate::hub::ChannelInfo {
                    messages: 1,
                    subscribers: 0,
                    requested: None,
                    last_seq: None,
                });
                let info = crate::hub::ChannelInfo {
                    last_seq: Some(answer.seq()),
                    ..info
                };
                let (_, text) = info_body(&info, p.info);
                encode_frame(Opcode::Text, text.as_bytes(), out);
                false
            }
            Err(e) => {
                encode_close(INTERNAL, &e.to_string(), out);
                true
            }
        }
    }
}

/// What the client's bytes came to.
pub struct Read {
    /// Bytes of the buffer done with.
    pub consumed: usize,
    /// The stream is over (a close was sent): flush and close.
    pub end: bool,
}

impl WsStream {
    /// A subscriber: frames and messages up to `max_message` bytes.
    pub fn subscriber(accept: Accept, origin: Option<String>, max_message: usize) -> WsStream {
        WsStream {
            accept,
            origin: origin.map(String::into_boxed_str),
            reader: Reader::new(max_message, max_message),
            publisher: None,
        }
    }

    /// A publisher: each text or binary message it sends is published.
    pub fn publisher(
        accept: Accept,
        origin: Option<String>,
        max_message: usize,
        content_type: Option<String>,
        info: InfoFormat,
    ) -> WsStream {
        WsStream {
            publisher: Some(Box::new(Publisher {
                content_type: content_type.map(String::into_boxed_str),
                info,
            })),
            ..WsStream::subscriber(accept, origin, max_message)
        }
    }

    /// Whether the stream listens to its channel (a publisher does not).
    pub fn listens(&self) -> bool {
        self.publisher.is_none()
    }

    /// The `101 Switching Protocols` head, with nchan's CORS when the request had `Origin`.
    pub fn head(&self, env: &HeadEnv<'_>) -> Seg {
        let allow = self.origin.as_deref().map(|o| match env.cors_origin {
            "*" => o,
            one => one,
        });
        let mut out = Vec::with_capacity(192);
        self.accept.write_head(allow.map(str::as_bytes), &mut out);
        Seg::Owned(out)
    }

    /// A message's frame: plain, or with the `ws+meta.nchan` header.
    pub fn pick(&self, msg: &Message) -> Pick {
        if self.publisher.is_some() {
            return Pick::Skip;
        }
        let frame = if self.accept.meta {
            msg.rendered(Format::WsMeta, |m| Some(frame(m, true)))
        } else {
            msg.rendered(Format::WsPlain, |m| Some(frame(m, false)))
        };
        frame.map_or(Pick::Unframeable, |f| Pick::Take(Seg::Shared(f)))
    }

    /// The close that ends the stream when the server stops.
    pub fn end(&self) -> &'static [u8] {
        // 1001 Going Away, no reason.
        &[0x88, 0x02, 0x03, 0xe9]
    }

    /// The close when the channel is deleted: 1001 `410 Gone`.
    pub fn gone(&self) -> Vec<u8> {
        close(GOING_AWAY, "410 Gone")
    }

    /// The close at `--nchan-subscriber-timeout`: 1000 `408 408 Request Timeout`.
    pub fn expired(&self) -> Vec<u8> {
        close(NORMAL, "408 408 Request Timeout")
    }

    /// Reads the client's frames from `buf` (unmasked in place), writing what the server
    /// answers to `out`.
    pub fn input(
        &mut self,
        ctx: &Ctx<'_>,
        channel: &str,
        buf: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Read {
        let WsStream {
            reader, publisher, ..
        } = self;
        let publisher = publisher.as_deref();
        let mut at = 0;
        loop {
            let step = match reader.read(&mut buf[at..]) {
                Ok(step) => step,
                Err(e) => {
                    crate::debug!("closing a WebSocket: {e}");
                    encode_close(e.code(), e.reason(), out);
                    return Read {
                        consumed: buf.len(),
                        end: true,
                    };
                }
            };
            let (event, consumed) = match step {
                Step::More { consumed } => {
                    return Read {
                        consumed: at + consumed,
                        end: false,
                    }
                }
                Step::Event { event, consumed } => (event, consumed),
            };
            let end = match event {
                Event::Ping(payload) => {
                    encode_frame(Opcode::Pong, payload, out);
                    false
                }
                Event::Pong(_) => false,
                Event::Close(Some(c)) => {
                    encode_close(c.code, c.reason, out);
                    true
                }
                Event::Close(None) => {
                    encode_frame(Opcode::Close, &[], out);
                    true
                }
                Event::Text(text) => message(publisher, ctx, channel, text.as_bytes(), false, out),
                Event::Binary(bytes) => message(publisher, ctx, channel, bytes, true, out),
            };
            at += consumed;
            if end {
                return Read {
                    consumed: buf.len(),
                    end: true,
                };
            }
        }
    }
}

/// A message from the client: published by a publisher (answered with the channel's info),
/// refused on a subscriber. Returns whether the stream ends.
fn message(
    publisher: Option<&Publisher>,
    ctx: &Ctx<'_>,
    channel: &str,
    body: &[u8],
    binary: bool,
    out: &mut Vec<u8>,
) -> bool {
    {
        let Some(p) = publisher else {
            encode_close(POLICY, "Publishing not allowed.", out);
            return true;
        };
        let content_type = match binary {
            true => Some("application/octet-stream".to_string()),
            false => p.content_type.as_deref().map(str::to_string),
        };
        let draft = Draft {
            content_type,
            ..Draft::with_body(body)
        };
        if ctx.hub.shared_in_redis(channel) {
            // Answered with the info once Redis stored it (`published`).
            let to = ctx.publisher.get();
            if let Err(e) = ctx
                .hub
                .publish_redis(channel, vec![draft], Origin::Nchan, false, to)
            {
                encode_close(INTERNAL, &e.to_string(), out);
                return true;
            }
            return false;
        }
        if let Err(e) = ctx.hub.publish(channel, vec![draft], Origin::Nchan, false) {
            encode_close(INTERNAL, &e.to_string(), out);
            return true;
        }
        let info = ctx.hub.info(channel);
        if let Some(info) = info {
            let (_, text) = info_body(&info, p.info);
            encode_frame(Opcode::Text, text.as_bytes(), out);
        }
        false
    }
}

fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + reason.len());
    encode_close(code, reason, &mut out);
    out
}

/// A message's frame, plain or `ws+meta.nchan`.
fn frame(msg: &Message, meta: bool) -> Arc<[u8]> {
    let mut out = Vec::with_capacity(msg.body.len() + 64);
    let id = meta.then(|| super::message_id(msg.seq));
    encode_message(id.as_deref(), super::content_type(msg), &msg.body, &mut out);
    Arc::from(out)
}
