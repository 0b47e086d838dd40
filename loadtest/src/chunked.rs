//! Incremental parser for a Talk stream body: HTTP/1.1 chunked framing around
//! terminator-delimited records (PROTOCOLS.md section 3.1).
//!
//! The parser is fed whatever a socket read returned, split anywhere, and hands
//! every complete record to a callback together with the index of the chunk that
//! held it. It is strict about what the protocol promises: lowercase hex sizes,
//! no chunk extensions, no empty chunk before the end of the stream, and no
//! record that spans two chunks.

use std::fmt;

/// The longest record the parser buffers before it calls the stream broken.
const MAX_RECORD: usize = 1 << 20;
/// A chunk size needs at most this many hex digits (a 1 TiB chunk is nonsense).
const MAX_SIZE_DIGITS: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the stream looks like after a `feed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// More chunks may follow.
    Open,
    /// The final `0\r\n\r\n` arrived: the server ended the stream.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// First byte of a size line.
    SizeStart,
    /// Inside the hex digits of a size line.
    Size {
        value: u64,
        digits: u8,
    },
    /// Saw the `\r` after the size; want `\n`.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// After the data; want `\r`.
    DataCr,
    /// After the data's `\r`; want `\n`.
    DataLf,
    /// After `0\r\n`; want the closing `\r`.
    LastCr,
    /// After `0\r\n\r`; want `\n`.
    LastLf,
    Ended,
}

#[derive(Debug)]
pub struct ChunkParser {
    term: u8,
    state: State,
    /// Bytes of a record that began in an earlier `feed` call.
    partial: Vec<u8>,
    /// Index of the chunk being read (0 for the first chunk of the stream).
    chunk: u64,
}

fn err<T>(msg: String) -> Result<T, ProtoError> {
    Err(ProtoError(msg))
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("{:?}", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

impl ChunkParser {
    pub fn new(term: u8) -> Self {
        ChunkParser {
            term,
            state: State::SizeStart,
            partial: Vec::new(),
            chunk: 0,
        }
    }

    /// Number of chunks completed so far.
    #[cfg(test)]
    pub fn chunks_done(&self) -> u64 {
        self.chunk
    }

    /// Feeds bytes; calls `on_record(chunk_index, record)` for each complete
    /// record (terminator stripped).
    pub fn feed<F>(&mut self, mut input: &[u8], mut on_record: F) -> Result<Status, ProtoError>
    where
        F: FnMut(u64, &[u8]),
    {
        while !input.is_empty() {
            match self.state {
                State::Ended => {
                    return err(format!(
                        "{} bytes after the final 0-chunk of the stream",
                        input.len()
                    ))
                }
                State::Data { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let (data, rest) = input.split_at(n);
                    self.records(data, &mut on_record)?;
                    input = rest;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                _ => {}
            }
            let b = input[0];
            input = &input[1..];
            self.state = match self.state {
                State::SizeStart => match hex(b)? {
                    Some(d) => State::Size {
                        value: d,
                        digits: 1,
                    },
                    None => {
                        return err(format!(
                            "chunk {}: size line starts with {}",
                            self.chunk,
                            show(b)
                        ))
                    }
                },
                State::Size { value, digits } => match hex(b)? {
                    Some(d) => {
                        if digits >= MAX_SIZE_DIGITS {
                            return err(format!("chunk {}: size has too many digits", self.chunk));
                        }
                        State::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    None if b == b'\r' => State::SizeLf { value },
                    None if b == b';' => {
                        return err(format!(
                            "chunk {}: chunk extension after the size (the protocol has none)",
                            self.chunk
                        ))
                    }
                    None => {
                        return err(format!(
                            "chunk {}: {} in the size line",
                            self.chunk,
                            show(b)
                        ))
                    }
                },
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return err(format!(
                            "chunk {}: {} after the size's CR, want LF",
                            self.chunk,
                            show(b)
                        ));
                    }
                    if value == 0 {
                        State::LastCr
                    } else {
                        State::Data { remaining: value }
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return err(format!(
                            "chunk {}: {} after the chunk data, want CR (size too small?)",
                            self.chunk,
                            show(b)
                        ));
                    }
                    State::DataLf
                }
                State::DataLf => {
                    if b != b'\n' {
                        return err(format!(
                            "chunk {}: {} after the data's CR, want LF",
                            self.chunk,
                            show(b)
                        ));
                    }
                    if !self.partial.is_empty() {
                        return err(format!(
                            "chunk {}: ends inside a record ({} bytes without terminator)",
                            self.chunk,
                            self.partial.len()
                        ));
                    }
                    self.chunk += 1;
                    State::SizeStart
                }
                State::LastCr => {
                    if b != b'\r' {
                        return err(format!(
                            "final chunk: {} after `0\\r\\n` (trailers are not expected)",
                            show(b)
                        ));
                    }
                    State::LastLf
                }
                State::LastLf => {
                    if b != b'\n' {
                        return err(format!("final chunk: {} after `0\\r\\n\\r`", show(b)));
                    }
                    State::Ended
                }
                State::Data { .. } | State::Ended => unreachable!(),
            };
        }
        Ok(if self.state == State::Ended {
            Status::Ended
        } else {
            Status::Open
        })
    }

    /// Splits chunk data into records.
    fn records<F>(&mut self, data: &[u8], on_record: &mut F) -> Result<(), ProtoError>
    where
        F: FnMut(u64, &[u8]),
    {
        let mut start = 0;
        for pos in memchr::memchr_iter(self.term, data) {
            let piece = &data[start..pos];
            if self.partial.is_empty() {
                on_record(self.chunk, piece);
            } else {
                self.partial.extend_from_slice(piece);
                on_record(self.chunk, &self.partial);
                self.partial.clear();
            }
            start = pos + 1;
        }
        let tail = &data[start..];
        if !tail.is_empty() {
            if self.partial.len() + tail.len() > MAX_RECORD {
                return err(format!(
                    "chunk {}: a record longer than {MAX_RECORD} bytes",
                    self.chunk
                ));
            }
            self.partial.extend_from_slice(tail);
        }
        Ok(())
    }
}

/// A lowercase hex digit's value; `None` for a byte that is no hex digit;
/// an error for an uppercase one (the protocol says lowercase).
fn hex(b: u8) -> Result<Option<u64>, ProtoError> {
    match b {
        b'0'..=b'9' => Ok(Some(u64::from(b - b'0'))),
        b'a'..=b'f' => Ok(Some(u64::from(b - b'a' + 10))),
        b'A'..=b'F' => err(format!(
            "uppercase hex digit {} in a chunk size (the protocol says lowercase)",
            show(b)
        )),
        _ => Ok(None),
    }
}

/// Frames records the way the server must: all records in one chunk.
#[cfg(test)]
pub fn frame(records: &[&[u8]], term: u8) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        body.extend_from_slice(r);
        body.push(term);
    }
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = Vec<(u64, Vec<u8>)>;

    fn feed_all(p: &mut ChunkParser, parts: &[&[u8]]) -> Result<(Seen, Status), ProtoError> {
        let mut seen = Vec::new();
        let mut status = Status::Open;
        for part in parts {
            status = p.feed(part, |c, r| seen.push((c, r.to_vec())))?;
        }
        Ok((seen, status))
    }

    fn sample_stream() -> (Vec<u8>, Seen) {
        let mut s = Vec::new();
        s.extend_from_slice(b"5\r\nnoop\0\r\n");
        s.extend_from_slice(&frame(&[b"hello"], 0));
        s.extend_from_slice(&frame(&[b"a", b"bb", b"fanout-1-123", b"noop"], 0));
        s.extend_from_slice(&frame(&[b"noop"], 0));
        // a record longer than 15 bytes, so the size has two hex digits (lowercase)
        let long = vec![b'x'; 300];
        s.extend_from_slice(&frame(&[&long, b"y"], 0));
        let want: Seen = vec![
            (0, b"noop".to_vec()),
            (1, b"hello".to_vec()),
            (2, b"a".to_vec()),
            (2, b"bb".to_vec()),
            (2, b"fanout-1-123".to_vec()),
            (2, b"noop".to_vec()),
            (3, b"noop".to_vec()),
            (4, long),
            (4, b"y".to_vec()),
        ];
        (s, want)
    }

    #[test]
    fn first_chunk_is_the_noop() {
        let mut p = ChunkParser::new(0);
        let (seen, st) = feed_all(&mut p, &[b"5\r\nnoop\0\r\n"]).unwrap();
        assert_eq!(seen, vec![(0, b"noop".to_vec())]);
        assert_eq!(st, Status::Open);
        assert_eq!(p.chunks_done(), 1);
    }

    #[test]
    fn whole_stream_in_one_read() {
        let (s, want) = sample_stream();
        let mut p = ChunkParser::new(0);
        let (seen, st) = feed_all(&mut p, &[&s]).unwrap();
        assert_eq!(seen, want);
        assert_eq!(st, Status::Open);
        assert_eq!(p.chunks_done(), 5);
    }

    #[test]
    fn split_at_every_position() {
        let (s, want) = sample_stream();
        for cut in 0..=s.len() {
            let mut p = ChunkParser::new(0);
            let (seen, _) = feed_all(&mut p, &[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(seen, want, "cut at {cut}");
        }
    }

    #[test]
    fn split_at_every_pair_of_positions() {
        let mut s = Vec::new();
        s.extend_from_slice(b"5\r\nnoop\0\r\n");
        s.extend_from_slice(&frame(&[b"one", b"two", b"three"], 0));
        let want: Seen = vec![
            (0, b"noop".to_vec()),
            (1, b"one".to_vec()),
            (1, b"two".to_vec()),
            (1, b"three".to_vec()),
        ];
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let mut p = ChunkParser::new(0);
                let (seen, _) = feed_all(&mut p, &[&s[..a], &s[a..b], &s[b..]]).unwrap();
                assert_eq!(seen, want, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let (s, want) = sample_stream();
        let mut p = ChunkParser::new(0);
        let parts: Vec<&[u8]> = s.chunks(1).collect();
        let (seen, _) = feed_all(&mut p, &parts).unwrap();
        assert_eq!(seen, want);
    }

    #[test]
    fn newline_terminator() {
        let mut s = b"5\r\nnoop\n\r\n".to_vec();
        s.extend_from_slice(&frame(&[b"with\0nul", b"m2"], b'\n'));
        for cut in 0..=s.len() {
            let mut p = ChunkParser::new(b'\n');
            let (seen, _) = feed_all(&mut p, &[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(
                seen,
                vec![
                    (0, b"noop".to_vec()),
                    (1, b"with\0nul".to_vec()),
                    (1, b"m2".to_vec())
                ]
            );
        }
    }

    #[test]
    fn empty_record_is_reported() {
        let mut p = ChunkParser::new(0);
        let (seen, _) = feed_all(&mut p, &[b"2\r\n\0\0\r\n"]).unwrap();
        assert_eq!(seen, vec![(0, vec![]), (0, vec![])]);
    }

    #[test]
    fn final_chunk_ends_the_stream() {
        let (mut s, want) = sample_stream();
        s.extend_from_slice(b"0\r\n\r\n");
        for cut in 0..=s.len() {
            let mut p = ChunkParser::new(0);
            let (seen, st) = feed_all(&mut p, &[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(seen, want);
            assert_eq!(st, Status::Ended, "cut at {cut}");
        }
        let mut p = ChunkParser::new(0);
        assert!(p.feed(b"0\r\n\r\nx", |_, _| {}).is_err());
    }

    #[test]
    fn record_spanning_chunks_is_an_error() {
        let mut p = ChunkParser::new(0);
        let e = p.feed(b"3\r\nabc\r\n2\r\nd\0\r\n", |_, _| {}).unwrap_err();
        assert!(e.0.contains("ends inside a record"), "{e}");
    }

    #[test]
    fn uppercase_hex_is_an_error() {
        let body = vec![b'z'; 0x1a];
        let mut s = b"1A\r\n".to_vec();
        s.extend_from_slice(&body);
        let mut p = ChunkParser::new(0);
        let e = p.feed(&s, |_, _| {}).unwrap_err();
        assert!(e.0.contains("uppercase"), "{e}");
    }

    #[test]
    fn chunk_extension_is_an_error() {
        let mut p = ChunkParser::new(0);
        let e = p.feed(b"5;x=y\r\nnoop\0\r\n", |_, _| {}).unwrap_err();
        assert!(e.0.contains("extension"), "{e}");
    }

    #[test]
    fn size_mismatch_is_an_error() {
        // size says 4 but the record is 5 bytes long
        let mut p = ChunkParser::new(0);
        assert!(p.feed(b"4\r\nnoop\0\r\n", |_, _| {}).is_err());
        // missing LF after size
        let mut p = ChunkParser::new(0);
        assert!(p.feed(b"5\rnoop\0\r\n", |_, _| {}).is_err());
        // garbage instead of a size
        let mut p = ChunkParser::new(0);
        assert!(p.feed(b"HTTP/1.1 200 OK\r\n", |_, _| {}).is_err());
    }

    #[test]
    fn record_across_many_reads_is_reassembled() {
        let rec = vec![b'q'; 5000];
        let s = frame(&[&rec, b"tail"], 0);
        let mut p = ChunkParser::new(0);
        let parts: Vec<&[u8]> = s.chunks(7).collect();
        let (seen, _) = feed_all(&mut p, &parts).unwrap();
        assert_eq!(seen, vec![(0, rec), (0, b"tail".to_vec())]);
    }
}
