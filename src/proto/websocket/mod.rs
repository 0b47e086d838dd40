//! WebSocket (RFC 6455) as nchan's `/sub/` and `/pub/` speak it (NCHAN.md 3.5, 4, 6.2, 9):
//! the opening handshake's decision and its `101` head, a decoder of client frames that
//! assembles messages, and an encoder of server frames. Pure code: bytes in, decisions and
//! bytes out, no sockets, no clock.
//!
//! How a connection uses it:
//!
//! 1. [`upgrade`] on the request's method, version and headers says whether it is a WebSocket
//!    request, and if so refuses it (`400 text/plain` with nchan's exact body) or accepts it;
//!    [`Accept::write_head`] renders the `101 Switching Protocols` head.
//! 2. After the head, every byte the client sends goes into a read buffer, and [`Reader::read`]
//!    is called on it until it asks for more: it unmasks complete frames in place, returns
//!    each message, ping, pong and close as an [`Event`] (a message of one frame borrows the
//!    buffer, a fragmented one the reader's own assembly), and says how many bytes of the
//!    buffer it is done with. A [`WsError`] names the close code to send before closing.
//! 3. Server frames are unmasked and final: [`frame_head`] gives the few header bytes for a
//!    payload of a given length (the payload itself can be a shared, rendered-once buffer);
//!    [`encode_frame`], [`encode_close`] and [`PING`] cover the rest; [`meta_prefix`] is the
//!    `ws+meta.nchan` header that precedes a message in meta mode.

mod frame;
mod handshake;
mod reader;
#[cfg(test)]
mod tests;

use std::fmt;

pub use frame::{
    encode_client_frame, encode_close, encode_frame, encode_message, frame_head, message_opcode,
    meta_prefix, parse_header, unmask, FrameHead, Header, MAX_CONTROL, MAX_HEADER, PING,
};
pub use handshake::{accept_key, upgrade, Accept, Upgrade, GUID, META_PROTOCOL};
pub use reader::{parse_close, CloseFrame, Event, Reader, Step};

/// A frame's opcode (RFC 6455 5.2). Other values are reserved and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// The opcode of a frame's low four bits; `None` for a reserved value.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented, may come between the
    /// fragments of a message.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Close status codes (RFC 6455 7.4.1) that tidings sends.
pub mod close {
    /// A normal end: nchan's subscriber timeout (`408 408 Request Timeout`), other 4xx.
    pub const NORMAL: u16 = 1000;
    /// Going away: nchan's deleted channel (`410 Gone`).
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: `403 Forbidden`, `Publishing not allowed.` on a subscriber.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message past its limit, or a control frame past 125 bytes.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// `500`/`507`.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Why the client's byte stream cannot go on: the connection sends a close frame with
/// [`WsError::code`] (and [`WsError::reason`]) and closes. Every variant is a client fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// RSV1-3 set: no extension was negotiated (NCHAN.md D8).
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    UnknownOpcode(u8),
    /// A client frame without a mask (RFC 6455 5.1).
    Unmasked,
    /// A 64-bit length with its top bit set (RFC 6455 5.2).
    BadLength,
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame longer than 125 bytes (1009, as nchan answers).
    ControlTooLong,
    /// A continuation frame with no fragmented message open.
    NoMessageToContinue,
    /// A text or binary frame while a fragmented message is open.
    MessageNotFinished,
    /// A frame longer than the reader's frame limit.
    FrameTooLarge,
    /// A message longer than the reader's message limit.
    MessageTooLarge,
    /// A text message, or a close reason, that is not UTF-8.
    NotUtf8,
    /// A close payload of one byte.
    CloseTooShort,
    /// A close code no endpoint may send (RFC 6455 7.4).
    BadCloseCode(u16),
}

impl WsError {
    /// The close code to answer with.
    pub fn code(self) -> u16 {
        match self {
            WsError::ControlTooLong | WsError::FrameTooLarge | WsError::MessageTooLarge => {
                close::MESSAGE_TOO_BIG
            }
            WsError::NotUtf8 => close::INVALID_PAYLOAD,
            _ => close::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame (and the debug log line).
    pub fn reason(self) -> &'static str {
        match self {
            WsError::ReservedBits => "reserved bits set",
            WsError::UnknownOpcode(_) => "unknown opcode",
            WsError::Unmasked => "client frame not masked",
            WsError::BadLength => "invalid frame length",
            WsError::FragmentedControl => "fragmented control frame",
            WsError::ControlTooLong => "control frame too long",
            WsError::NoMessageToContinue => "continuation without a message",
            WsError::MessageNotFinished => "new message inside a fragmented one",
            WsError::FrameTooLarge => "frame too large",
            WsError::MessageTooLarge => "message too large",
            WsError::NotUtf8 => "invalid UTF-8",
            WsError::CloseTooShort => "close payload of one byte",
            WsError::BadCloseCode(_) => "invalid close code",
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::UnknownOpcode(op) => write!(f, "{} {op:#x}", self.reason()),
            WsError::BadCloseCode(c) => write!(f, "{} {c}", self.reason()),
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for WsError {}
