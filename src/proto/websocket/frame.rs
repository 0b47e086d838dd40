//! One WebSocket frame: its header parsed from the front of a buffer, masking, and the
//! encoding of server frames (final, unmasked) and of client frames (masked; for tests,
//! fuzzing and load clients).
//!
//! The base framing protocol (RFC 6455 5.2):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! A length of 126 means a 16-bit length follows, 127 a 64-bit one (most significant bit 0);
//! all in network byte order. Lengths need not be minimal. Payload byte `i` is XORed with
//! masking-key byte `i % 4`.

use super::{Opcode, WsError};

/// The longest frame header: 2 bytes, a 64-bit length, a masking key.
pub const MAX_HEADER: usize = 14;

/// The longest payload of a control frame (RFC 6455 5.5).
pub const MAX_CONTROL: usize = 125;

/// A server ping with no payload (`89 00`), as nchan sends it.
pub const PING: &[u8] = &[0x80 | Opcode::Ping as u8, 0x00];

/// A frame header as read from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Bytes of the header (2 to 14); the payload starts there.
    pub len: usize,
    /// Bytes of the payload (below 2^63).
    pub payload_len: u64,
}

/// Parses the frame header at the front of `buf`.
///
/// Returns `Ok(None)` while the header is incomplete. Refuses what no frame may be whatever
/// was negotiated: RSV bits (tidings negotiates no extension), a reserved opcode, a control
/// frame without FIN or longer than 125 bytes (that one as soon as its 7-bit length shows
/// it), a 64-bit length with its top bit set. The checks run in the order of the bytes they
/// read, so a prefix of a stream never yields a different error than the whole. Whether a
/// mask is required is the caller's business (clients must mask, servers must not).
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(WsError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL {
            return Err(WsError::ControlTooLong);
        }
    }
    let (payload_len, ext) = match len7 {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(bytes) => {
                let n = u64::from_be_bytes(*bytes);
                if n >> 63 != 0 {
                    return Err(WsError::BadLength);
                }
                (n, 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let masked = b1 & 0x80 != 0;
    let mask = if masked {
        match rest.get(ext..ext + 4) {
            Some(&[a, b, c, d]) => Some([a, b, c, d]),
            _ => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        len: 2 + ext + if masked { 4 } else { 0 },
        payload_len,
    }))
}

/// XORs `payload` with the masking key, from key byte 0: masks or unmasks a whole payload.
/// Eight bytes at a time.
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, rest) = payload.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
    }
    // `rest` starts at a multiple of 8, so at key byte 0.
    for (byte, k) in rest.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// A server frame's header, held inline: framing a shared payload for each of many
/// connections allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct FrameHead {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHead {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes the length field (7-bit, or 126 + 16-bit, or 127 + 64-bit: the shortest) with the
/// MASK bit given into `out`; returns how many bytes it took.
fn put_len(out: &mut [u8; 9], mask_bit: u8, n: usize) -> usize {
    if n <= MAX_CONTROL {
        out[0] = mask_bit | n as u8;
        1
    } else if let Ok(n) = u16::try_from(n) {
        out[0] = mask_bit | 126;
        out[1..3].copy_from_slice(&n.to_be_bytes());
        3
    } else {
        out[0] = mask_bit | 127;
        out[1..9].copy_from_slice(&(n as u64).to_be_bytes());
        9
    }
}

/// The header of a final, unmasked frame of `opcode` with a payload of `payload_len` bytes:
/// what a server sends before the payload. Control frames must be given at most 125 bytes
/// (the caller's contract; [`encode_close`] truncates for it).
pub fn frame_head(opcode: Opcode, payload_len: usize) -> FrameHead {
    let mut bytes = [0u8; 10];
    bytes[0] = 0x80 | opcode as u8;
    let mut field = [0u8; 9];
    let n = put_len(&mut field, 0, payload_len);
    bytes[1..1 + n].copy_from_slice(&field[..n]);
    FrameHead {
        bytes,
        len: (1 + n) as u8,
    }
}

/// Appends a final, unmasked frame of `opcode` carrying `payload` to `out`.
pub fn encode_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(10 + payload.len());
    out.extend_from_slice(frame_head(opcode, payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` to `out`, the reason cut to the 123 bytes
/// a control frame leaves it (at a character boundary), as nchan does:
/// `encode_close(1001, "410 Gone")` is `88 0a 03 e9 "410 Gone"`. A close answering a close
/// that carried no code is `encode_frame(Opcode::Close, &[], out)` (`88 00`).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    out.extend_from_slice(frame_head(Opcode::Close, 2 + reason.len()).as_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// The opcode a message goes out with (NCHAN.md 6.2): binary iff its content type is exactly
/// `application/octet-stream`, else text.
pub fn message_opcode(content_type: Option<&str>) -> Opcode {
    match content_type {
        Some("application/octet-stream") => Opcode::Binary,
        _ => Opcode::Text,
    }
}

/// Appends the `ws+meta.nchan` header of a message (NCHAN.md 6.2) to `out`:
/// `id: <TIME:TAG>\n`, then `content-type: <ct>\n` if the message has one, then `\n`. In meta
/// mode a frame's payload is this prefix followed by the message bytes.
pub fn meta_prefix(id: &str, content_type: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    if let Some(ct) = content_type {
        out.extend_from_slice(b"\ncontent-type: ");
        out.extend_from_slice(ct.as_bytes());
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends the frame of a message to `out`, rendered once and shared by every subscriber of
/// the same mode: plain (`meta_id` is `None`) or `ws+meta.nchan` (`meta_id` is the message's
/// `TIME:TAG`). The opcode follows [`message_opcode`]. Plain: `81 05 "hello"`; meta:
/// `81 17 "id: 1796177227:0\n\nhello"`.
pub fn encode_message(
    meta_id: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    let opcode = message_opcode(content_type);
    let Some(id) = meta_id else {
        return encode_frame(opcode, body, out);
    };
    let mut prefix = Vec::with_capacity(48);
    meta_prefix(id, content_type, &mut prefix);
    out.reserve(10 + prefix.len() + body.len());
    out.extend_from_slice(frame_head(opcode, prefix.len() + body.len()).as_bytes());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(body);
}

/// Appends a client frame (masked with `key`, FIN as given) to `out`: what a browser sends.
/// For tests, fuzzing and load clients; the server never masks.
pub fn encode_client_frame(
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    key: [u8; 4],
    out: &mut Vec<u8>,
) {
    out.reserve(MAX_HEADER + payload.len());
    out.push(if fin { 0x80 } else { 0 } | opcode as u8);
    let mut field = [0u8; 9];
    let n = put_len(&mut field, 0x80, payload.len());
    out.extend_from_slice(&field[..n]);
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], key);
}
