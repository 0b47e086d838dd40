//! Chunked transfer coding of request bodies, decoded incrementally (RFC 9112 7.1).

use super::{hex, trim, HttpError};

/// An incremental decoder of a chunked body (RFC 9112 7.1):
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
///
/// It is fed the encoded body received so far, each time a longer prefix of the same
/// bytes, and resumes where it stopped: a body trickled a few bytes at a time costs time
/// linear in its length. The decoded data collects in `body`.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    /// Encoded bytes consumed so far.
    pub(super) pos: usize,
    /// Data bytes of the current chunk not yet copied.
    left: usize,
    state: ChunkState,
    /// The decoded body so far.
    pub body: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data,
    DataEnd,
    Trailer,
    Done,
}

/// A chunk-size or trailer line longer than this is refused.
const MAX_CHUNK_LINE: usize = 1024;

const BAD_CHUNKED: HttpError = HttpError::Malformed("malformed chunked body");

impl ChunkedDecoder {
    /// Forgets everything: ready for the next body (the body's allocation is kept).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.left = 0;
        self.state = ChunkState::Size;
        self.body.clear();
    }

    /// Decodes what `buf` (the encoded body so far, from its first byte) adds. Returns
    /// `Ok(None)` while incomplete, `Ok(Some(n))` with the encoded length `n` once the whole
    /// body has arrived (it is then in `body`). A decoded body over `max` is refused.
    pub fn feed(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let rest = buf.get(self.pos..).unwrap_or(&[]);
                    let Some(eol) = chunk_line(rest)? else {
                        return Ok(None);
                    };
                    let line = &rest[..eol];
                    let size_text = line.split(|&b| b == b';').next().map(trim).unwrap_or(b"");
                    if size_text.is_empty() || size_text.len() > 15 {
                        return Err(BAD_CHUNKED);
                    }
                    let mut size = 0usize;
                    for &b in size_text {
                        size = size * 16 + hex(b).ok_or(BAD_CHUNKED)? as usize;
                    }
                    self.pos += eol + 2;
                    if size == 0 {
                        self.state = ChunkState::Trailer;
                    } else {
                        if self.body.len() + size > max {
                            return Err(HttpError::BodyTooLarge);
                        }
                        self.left = size;
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    let avail = buf.len().saturating_sub(self.pos);
                    let n = avail.min(self.left);
                    self.body.extend_from_slice(&buf[self.pos..self.pos + n]);
                    self.pos += n;
                    self.left -= n;
                    if self.left > 0 {
                        return Ok(None);
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    let Some(end) = buf.get(self.pos..self.pos + 2) else {
                        return Ok(None);
                    };
                    if end != b"\r\n" {
                        return Err(BAD_CHUNKED);
                    }
                    self.pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    // Trailer section: header lines until an empty line.
                    let rest = buf.get(self.pos..).unwrap_or(&[]);
                    let Some(eol) = chunk_line(rest)? else {
                        return Ok(None);
                    };
                    self.pos += eol + 2;
                    if eol == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Some(self.pos)),
            }
        }
    }
}

/// The length (without its CRLF) of the chunk-size or trailer line at the start of `rest`;
/// `Ok(None)` while it may still end within `MAX_CHUNK_LINE`. A longer line is an error as
/// soon as that is certain, and the same error whether the line arrived whole or in pieces:
/// only the first `MAX_CHUNK_LINE + 2` bytes are looked at.
fn chunk_line(rest: &[u8]) -> Result<Option<usize>, HttpError> {
    let window = &rest[..rest.len().min(MAX_CHUNK_LINE + 2)];
    match memchr::memmem::find(window, b"\r\n") {
        Some(eol) if eol <= MAX_CHUNK_LINE => Ok(Some(eol)),
        Some(_) => Err(BAD_CHUNKED),
        None if window.len() == MAX_CHUNK_LINE + 2 => Err(BAD_CHUNKED),
        None => Ok(None),
    }
}

/// Decodes a whole chunked body at the start of `buf` into `out` (one `ChunkedDecoder`
/// fed once). `Ok(None)` while incomplete; `Ok(Some(n))`, the encoded length, when complete.
pub fn decode_chunked(
    buf: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, HttpError> {
    let mut d = ChunkedDecoder::default();
    let r = d.feed(buf, max)?;
    if r.is_some() {
        *out = d.body;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies() {
        let mut out = Vec::new();
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(body, 100, &mut out).unwrap(),
            Some(body.len() - 4)
        );
        assert_eq!(out, b"Wikipedia");
        for cut in 0..body.len() - 4 {
            assert_eq!(
                decode_chunked(&body[..cut], 100, &mut out).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(
            decode_chunked(body, 5, &mut out).unwrap_err(),
            HttpError::BodyTooLarge
        );
        assert!(decode_chunked(b"zz\r\n", 100, &mut out).is_err());
        assert!(decode_chunked(b"2\r\nabX\r\n", 100, &mut out).is_err());
        assert!(decode_chunked(b"fffffffffffffffffff\r\n", 100, &mut out).is_err());
    }

    #[test]
    fn a_chunk_line_over_the_limit_is_refused_however_it_arrives() {
        // Found by the `chunked` fuzz target's oracle (fuzz/regressions/chunked/): a line
        // over MAX_CHUNK_LINE was refused when it arrived in pieces but accepted whole.
        let long_ext = [b"1;".as_slice(), &[b'e'; 1100], b"\r\nx\r\n0\r\n\r\n"].concat();
        let long_trailer = [b"1\r\nx\r\n0\r\nT: ".as_slice(), &[b't'; 1100], b"\r\n\r\n"].concat();
        // The longest line allowed, and one byte more, extension or trailer.
        let pad = MAX_CHUNK_LINE - 2;
        let at_limit = [b"1;".as_slice(), &vec![b'e'; pad], b"\r\nx\r\n0\r\n\r\n"].concat();
        let over = [
            b"1;".as_slice(),
            &vec![b'e'; pad + 1],
            b"\r\nx\r\n0\r\n\r\n",
        ]
        .concat();
        let trailer_over = [
            b"1\r\nx\r\n0\r\n".as_slice(),
            &vec![b't'; MAX_CHUNK_LINE + 1],
            b"\r\n\r\n",
        ]
        .concat();
        let bad = Err(HttpError::Malformed("malformed chunked body"));
        let cases = [
            (&long_ext, bad),
            (&long_trailer, bad),
            (&at_limit, Ok(Some(at_limit.len()))),
            (&over, bad),
            (&trailer_over, bad),
        ];
        for (wire, want) in cases {
            assert_eq!(
                decode_chunked(wire, 1 << 20, &mut Vec::new()),
                want,
                "whole"
            );
            for cut in 1..wire.len() {
                let mut d = ChunkedDecoder::default();
                let got = match d.feed(&wire[..cut], 1 << 20) {
                    Ok(None) => d.feed(wire, 1 << 20),
                    early => early,
                };
                assert_eq!(got, want, "cut at {cut} of {}", wire.len());
            }
        }
    }

    #[test]
    fn chunked_decoding_resumes_and_stays_linear() {
        // `1\r\na\r\n` repeated, fed one byte more each time, as a trickling client sends it.
        let mut wire = b"1\r\na\r\n".repeat(5000);
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut d = ChunkedDecoder::default();
        let mut done = None;
        for end in 1..=wire.len() {
            let before = d.pos;
            done = d.feed(&wire[..end], 1 << 20).unwrap();
            assert!(
                d.pos >= before && d.pos <= end,
                "never rescans, never runs ahead"
            );
        }
        assert_eq!(done, Some(wire.len()));
        assert_eq!(d.body, vec![b'a'; 5000]);
        d.reset();
        assert_eq!(
            d.feed(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 10).unwrap(),
            Some(21)
        );
        assert_eq!(d.body, b"abc");
    }
}
