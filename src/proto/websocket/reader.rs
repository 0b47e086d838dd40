//! The client's side of a WebSocket connection read as events: frames parsed from the front
//! of the connection's read buffer, unmasked in place, checked against RFC 6455 and the
//! limits, fragments assembled into messages (RFC 6455 5.4), close payloads parsed (5.5.1,
//! 7.4).

use super::frame::{parse_header, unmask};
use super::{Opcode, WsError};

/// What the client said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message, valid UTF-8.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// Answer with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong, asked for or not (RFC 6455 5.5.3).
    Pong(&'a [u8]),
    /// The client closes, with a status code and reason or (`None`) without. Echo it (nchan
    /// echoes code and reason; `88 00` for `None`) and close; nothing more is read.
    Close(Option<CloseFrame<'a>>),
}

/// The status of a close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    pub code: u16,
    pub reason: &'a str,
}

/// The outcome of [`Reader::read`]. In both cases the first `consumed` bytes of the buffer
/// are done with: the caller removes them (after it is done with the event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// An event, read from the first `consumed` bytes (and the fragments before it).
    Event { event: Event<'a>, consumed: usize },
    /// No whole event in the buffer: read more bytes. `consumed` bytes were fragments of an
    /// unfinished message, now held by the reader.
    More { consumed: usize },
}

/// A text or binary message whose first fragment arrived and whose last has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Binary,
}

/// Reads a client's frames as events, holding what it must between calls: the fragments of
/// an unfinished message (at most the message limit) and nothing else.
#[derive(Debug)]
pub struct Reader {
    max_frame: usize,
    max_message: usize,
    open: Open,
    /// The fragments so far; after a fragmented message is returned, that message until the
    /// next call.
    assembly: Vec<u8>,
    /// How much of `assembly` is known to be valid UTF-8 (text messages).
    checked: usize,
}

/// Where the event of one call is.
enum Found {
    /// A frame's payload, unmasked in place, at `start..end` of the buffer.
    Frame {
        opcode: Opcode,
        start: usize,
        end: usize,
    },
    /// A fragmented message, now whole in the assembly.
    Assembled(Opcode),
}

/// A close code an endpoint may send (RFC 6455 7.4.1, 7.4.2 and IANA's registry): the
/// defined codes but 1004 (reserved), 1005, 1006 and 1015 (never on the wire), and the
/// ranges for libraries (3000-3999) and applications (4000-4999).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses a close frame's payload: empty, or a valid code (2 bytes, network order) and a
/// UTF-8 reason.
pub fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(WsError::BadCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::NotUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

impl Reader {
    /// A reader refusing frames over `max_frame` payload bytes and messages over
    /// `max_message` bytes (close 1009). The connection's read buffer must be able to hold
    /// a whole frame: `max_frame` plus [`super::MAX_HEADER`].
    pub fn new(max_frame: usize, max_message: usize) -> Reader {
        Reader {
            max_frame,
            max_message,
            open: Open::None,
            assembly: Vec::new(),
            checked: 0,
        }
    }

    /// Whether a fragmented message is unfinished (its fragments are held here).
    pub fn in_message(&self) -> bool {
        self.open != Open::None
    }

    /// Heap bytes the reader holds (the fragments of an unfinished message, or the last
    /// fragmented message until the next call): zero between ordinary messages.
    pub fn held_bytes(&self) -> usize {
        self.assembly.capacity()
    }

    /// Reads the next event from `buf`, the client's bytes not yet consumed.
    ///
    /// Parses frames from the front of `buf`; unmasks each complete one in place; takes the
    /// fragments of a message into the reader, until a message, a control frame or the end
    /// of the complete frames. A frame is judged as soon as its header is in: its length
    /// against the limits before its payload has arrived. The result does not depend on how
    /// the bytes were split between calls. After an error or a close, call no more.
    pub fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Step<'a>, WsError> {
        if self.open == Open::None && self.assembly.capacity() > 0 {
            // The fragmented message returned last time has been used.
            self.assembly = Vec::new();
            self.checked = 0;
        }
        let mut at = 0usize;
        let found = loop {
            let Some(h) = parse_header(&buf[at..])? else {
                return Ok(Step::More { consumed: at });
            };
            let mask = h.mask.ok_or(WsError::Unmasked)?;
            let held = match (h.opcode, self.open) {
                (Opcode::Continuation, Open::None) => return Err(WsError::NoMessageToContinue),
                (Opcode::Text | Opcode::Binary, Open::Text | Open::Binary) => {
                    return Err(WsError::MessageNotFinished)
                }
                _ => self.assembly.len(),
            };
            if h.payload_len > self.max_frame as u64 {
                return Err(WsError::FrameTooLarge);
            }
            // At most `max_frame`: fits a usize.
            let n = h.payload_len as usize;
            if !h.opcode.is_control() && held.saturating_add(n) > self.max_message {
                return Err(WsError::MessageTooLarge);
            }
            let start = at + h.len;
            let end = start.saturating_add(n);
            let Some(payload) = buf.get_mut(start..end) else {
                return Ok(Step::More { consumed: at });
            };
            unmask(payload, mask);
            at = end;
            match (h.opcode, h.fin) {
                (Opcode::Text | Opcode::Binary, false) => {
                    self.open = if h.opcode == Opcode::Text {
                        Open::Text
                    } else {
                        Open::Binary
                    };
                    self.take_fragment(start, end, buf)?;
                }
                (Opcode::Continuation, fin) => {
                    self.take_fragment(start, end, buf)?;
                    if fin {
                        let opcode = match std::mem::replace(&mut self.open, Open::None) {
                            Open::Text => Opcode::Text,
                            _ => Opcode::Binary,
                        };
                        break Found::Assembled(opcode);
                    }
                }
                (opcode, _) => break Found::Frame { opcode, start, end },
            }
        };
        let buf: &'a [u8] = buf;
        let event = match found {
            Found::Frame { opcode, start, end } => {
                let payload = buf.get(start..end).unwrap_or_default();
                match opcode {
                    Opcode::Text => Event::Text(utf8(payload)?),
                    // (Continuation frames never get here: the loop takes them.)
                    Opcode::Binary | Opcode::Continuation => Event::Binary(payload),
                    Opcode::Ping => Event::Ping(payload),
                    Opcode::Pong => Event::Pong(payload),
                    Opcode::Close => Event::Close(parse_close(payload)?),
                }
            }
            Found::Assembled(Opcode::Text) => Event::Text(utf8(&self.assembly)?),
            Found::Assembled(_) => Event::Binary(&self.assembly),
        };
        Ok(Step::Event {
            event,
            consumed: at,
        })
    }

    /// Appends a fragment (`buf[start..end]`, unmasked) to the assembly; a text message
    /// fails as soon as its bytes so far cannot begin valid UTF-8.
    fn take_fragment(&mut self, start: usize, end: usize, buf: &[u8]) -> Result<(), WsError> {
        self.assembly
            .extend_from_slice(buf.get(start..end).unwrap_or_default());
        if self.open == Open::Text {
            match std::str::from_utf8(&self.assembly[self.checked..]) {
                Ok(_) => self.checked = self.assembly.len(),
                // A character cut at the end of the fragment may finish in the next one.
                Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
                Err(_) => return Err(WsError::NotUtf8),
            }
        }
        Ok(())
    }
}

fn utf8(b: &[u8]) -> Result<&str, WsError> {
    std::str::from_utf8(b).map_err(|_| WsError::NotUtf8)
}
