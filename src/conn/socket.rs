//! Socket I/O: the edge-triggered read loop, `writev` of the output queue, and draining
//! input that will not be served. Each loop is capped by a named constant and reports one
//! `SocketResult` (sozu's shape), which the connection machine acts on. Generic over
//! `Read`/`Write`, so tests drive the same loops over in-memory pipes.

use std::io::{self, IoSlice, Read, Write};

use super::out::{Out, MAX_IOVECS};
use super::readbuf::ReadBuf;

/// Bytes asked of the socket per read call.
pub const READ_CHUNK: usize = 16 * 1024;
/// Reads per readiness event before yielding to other connections.
pub const MAX_READS_PER_EVENT: usize = 32;
/// `writev` calls per flush before yielding to other connections.
pub const MAX_WRITES_PER_FLUSH: usize = 32;

/// What a read or write loop achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketResult {
    /// Read: the socket has no more input for now. Write: everything queued was written.
    Done,
    /// Write: the socket would block; a writable event will come.
    WouldBlock,
    /// The loop hit its cap: serve the connection again next turn.
    Continue,
    /// Read: the buffer reached its limit before the socket was drained.
    Full,
    /// Read: end of input (the peer shut its side).
    Closed,
    /// An I/O error: the connection is gone.
    Error,
}

/// Reads into `buf` until the socket would block, the input reaches `limit` bytes, or the
/// loop cap. Returns the bytes read too. `peer_closed`: the poller reported a hang-up, so
/// read on to the EOF (no later edge would come). Each read goes to `scratch` (the worker's,
/// `READ_CHUNK` bytes, zeroed once) first, so the buffer grows by what arrived, not by a
/// whole read size.
pub fn read(
    sock: &mut impl Read,
    buf: &mut ReadBuf,
    limit: usize,
    peer_closed: bool,
    scratch: &mut [u8],
) -> (SocketResult, usize) {
    let mut total = 0;
    for _ in 0..MAX_READS_PER_EVENT {
        if buf.len() >= limit {
            return (SocketResult::Full, total);
        }
        match sock.read(scratch) {
            Ok(0) => return (SocketResult::Closed, total),
            Ok(n) => {
                buf.extend(&scratch[..n]);
                total += n;
                if n < scratch.len() && !peer_closed {
                    // A short read took all there was: data arriving later raises a new
                    // edge, so asking again would only return EAGAIN.
                    return (SocketResult::Done, total);
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => return (SocketResult::Done, total),
                io::ErrorKind::Interrupted => {}
                _ => return (SocketResult::Error, total),
            },
        }
    }
    (SocketResult::Continue, total)
}

/// Reads and drops input: a stream's client has nothing more to say; a closing connection
/// drains until its peer's EOF.
pub fn discard(sock: &mut impl Read, scratch: &mut [u8]) -> SocketResult {
    for _ in 0..MAX_READS_PER_EVENT {
        match sock.read(scratch) {
            Ok(0) => return SocketResult::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return SocketResult::Done,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return SocketResult::Error,
        }
    }
    SocketResult::Continue
}

/// Writes what `out` holds with `writev` until it is empty, the socket would block, or the
/// loop cap. Returns the bytes written too.
pub fn write(sock: &mut impl Write, out: &mut Out) -> (SocketResult, usize) {
    let mut total = 0;
    for _ in 0..MAX_WRITES_PER_FLUSH {
        if out.is_empty() {
            return (SocketResult::Done, total);
        }
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let n = out.slices(&mut iov);
        match sock.write_vectored(&iov[..n]) {
            Ok(0) => return (SocketResult::Error, total),
            Ok(w) => {
                total += w;
                out.advance(w);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return (SocketResult::WouldBlock, total)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (SocketResult::Error, total),
        }
    }
    if out.is_empty() {
        (SocketResult::Done, total)
    } else {
        (SocketResult::Continue, total)
    }
}

#[cfg(test)]
mod tests {
    use super::super::out::Seg;
    use super::*;

    /// A socket that hands out its input a few bytes at a time and takes at most `room`
    /// bytes per write, then would block.
    struct Pipe {
        input: Vec<u8>,
        step: usize,
        eof: bool,
        written: Vec<u8>,
        room: usize,
    }

    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = self.step.min(self.input.len()).min(b.len());
            b[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.written.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pipe(input: &[u8], step: usize, eof: bool) -> Pipe {
        Pipe {
            input: input.to_vec(),
            step,
            eof,
            written: Vec::new(),
            room: usize::MAX,
        }
    }

    #[test]
    fn a_short_read_counts_as_drained_unless_the_peer_hung_up() {
        let mut buf = ReadBuf::default();
        let mut p = pipe(b"hello", 5, true);
        assert_eq!(
            read(&mut p, &mut buf, 1 << 20, false, &mut [0; READ_CHUNK]),
            (SocketResult::Done, 5)
        );
        let mut buf = ReadBuf::default();
        let mut p = pipe(b"hello", 5, true);
        assert_eq!(
            read(&mut p, &mut buf, 1 << 20, true, &mut [0; READ_CHUNK]),
            (SocketResult::Closed, 5)
        );
        assert_eq!(&*buf, b"hello");
    }

    #[test]
    fn reading_stops_at_the_limit_and_at_the_cap() {
        let big = vec![b'x'; READ_CHUNK * (MAX_READS_PER_EVENT + 2)];
        let mut buf = ReadBuf::default();
        let mut p = pipe(&big, READ_CHUNK, false);
        assert_eq!(
            read(
                &mut p,
                &mut buf,
                READ_CHUNK * 2,
                false,
                &mut [0; READ_CHUNK]
            ),
            (SocketResult::Full, READ_CHUNK * 2)
        );
        let mut buf = ReadBuf::default();
        let (r, n) = read(&mut p, &mut buf, usize::MAX, false, &mut [0; READ_CHUNK]);
        assert_eq!(r, SocketResult::Continue);
        assert_eq!(n, READ_CHUNK * MAX_READS_PER_EVENT);
    }

    #[test]
    fn writes_report_blocking_and_completion() {
        let mut out = Out::default();
        out.push(Seg::Static(b"0123456789"));
        let mut p = pipe(b"", 1, false);
        p.room = 4;
        assert_eq!(write(&mut p, &mut out), (SocketResult::WouldBlock, 4));
        assert_eq!(out.len(), 6);
        p.room = 100;
        assert_eq!(write(&mut p, &mut out), (SocketResult::Done, 6));
        assert_eq!(p.written, b"0123456789");
    }

    #[test]
    fn discard_reads_to_the_eof() {
        let mut p = pipe(&[7u8; 10_000], 4096, true);
        assert_eq!(discard(&mut p, &mut [0; 4096]), SocketResult::Closed);
        let mut p = pipe(&[7u8; 10], 4096, false);
        assert_eq!(discard(&mut p, &mut [0; 4096]), SocketResult::Done);
    }
}
