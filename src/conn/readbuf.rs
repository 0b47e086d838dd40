//! The read buffer of a connection and the worker's pool of them.
//!
//! A connection holds a buffer only while it is reading a request (STYLE rule 5): taken from
//! the pool on the first readable event, given back once every request in it is answered.
//! Answered requests move a read offset forward; the bytes left over are moved to the front
//! once per read event (`compact`), not once per request, so a client pipelining many small
//! requests costs a linear amount of copying. The parsed head of the request being read
//! lives here too, beside the bytes its spans point into.

use crate::http::Head;

/// Read buffers kept for reuse per worker.
const POOL_MAX: usize = 256;
/// A read buffer larger than this is not returned to the pool.
const POOL_BUF_MAX: usize = 64 * 1024;

/// Storage that is zeroed once, when it grows, and the window of it that holds input not
/// yet consumed: `store[start..end]`.
#[derive(Default)]
pub struct ReadBuf {
    store: Vec<u8>,
    start: usize,
    end: usize,
    /// The head of the request whose body is being read; its spans are relative to `start`.
    pub head: Option<Head>,
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    /// The input read and not yet consumed.
    fn deref(&self) -> &[u8] {
        &self.store[self.start..self.end]
    }
}

impl ReadBuf {
    /// Room for at least `n` more bytes after the input. Moves the input to the front first
    /// when that makes the room.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.start > 0 && self.store.len() < self.end + n {
            self.compact();
        }
        if self.store.len() < self.end + n {
            self.store.resize(self.end + n, 0);
        }
        &mut self.store[self.end..]
    }

    /// Counts `n` bytes written into `spare` as input.
    pub fn filled(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.store.len());
        self.end = (self.end + n).min(self.store.len());
    }

    /// Appends bytes (a test or a caller that already holds the input).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
    }

    /// Drops the first `n` bytes of input (a request that was answered). O(1).
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops all input.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.head = None;
    }

    /// Moves the unconsumed input to the front of the storage. Call once per read event.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.store.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// A worker's spare read buffers.
#[derive(Default)]
pub struct BufPool {
    // Boxed so handing one out moves a pointer, not the buffer and its parsed head.
    #[allow(clippy::vec_box)]
    bufs: Vec<Box<ReadBuf>>,
    /// Buffers handed out and not yet given back (for tests and invariants).
    out: usize,
}

impl BufPool {
    /// A buffer with no input (boxed, so a connection that holds none pays one pointer).
    pub fn take(&mut self) -> Box<ReadBuf> {
        self.out += 1;
        self.bufs.pop().unwrap_or_default()
    }

    /// Takes a buffer back: kept for reuse unless the pool is full or the buffer grew large.
    pub fn give(&mut self, mut buf: Box<ReadBuf>) {
        self.out -= 1;
        if self.bufs.len() < POOL_MAX && buf.store.len() <= POOL_BUF_MAX {
            buf.clear();
            self.bufs.push(buf);
        }
    }

    /// Buffers handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_moves_an_offset_and_compact_moves_the_rest_once() {
        let mut b = ReadBuf::default();
        b.extend(b"GET /a\r\n\r\nGET /b\r\n\r\nGET /c");
        let ptr = b.store.as_ptr();
        b.consume(10);
        assert_eq!(&*b, b"GET /b\r\n\r\nGET /c");
        b.consume(10);
        assert_eq!(&*b, b"GET /c");
        assert_eq!(b.start, 20, "nothing moved yet");
        b.compact();
        assert_eq!((b.start, b.end), (0, 6));
        assert_eq!(&*b, b"GET /c");
        assert_eq!(b.store.as_ptr(), ptr, "compacted in place");
        b.consume(6);
        assert!(b.is_empty());
        assert_eq!((b.start, b.end), (0, 0), "empty input resets the window");
    }

    #[test]
    fn spare_compacts_when_that_makes_room() {
        let mut b = ReadBuf::default();
        b.extend(&[1u8; 100]);
        b.consume(90);
        let cap = b.store.len();
        let room = b.spare(80).len();
        assert!(room >= 80);
        assert_eq!(b.store.len(), cap, "reused the consumed front");
        assert_eq!(&*b, &[1u8; 10]);
    }

    #[test]
    fn pool_counts_buffers_out_and_keeps_small_ones() {
        let mut p = BufPool::default();
        let mut a = p.take();
        a.extend(b"xyz");
        let big = {
            let mut big = p.take();
            big.spare(POOL_BUF_MAX + 1);
            big
        };
        assert_eq!(p.in_use(), 2);
        p.give(a);
        p.give(big);
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.bufs.len(), 1, "the oversized buffer is freed");
        assert!(p.take().is_empty(), "a pooled buffer comes back empty");
    }
}
