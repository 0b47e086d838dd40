//! The read buffer of a connection and the worker's pool of them.
//!
//! A connection holds a buffer only while it is reading a request (STYLE rule 5): taken from
//! the pool on the first readable event, given back once every request in it is answered.
//! Answered requests move a read offset forward; the bytes left over are moved to the front
//! once per read event (`compact`), not once per request, so a client pipelining many small
//! requests costs a linear amount of copying. The parsed head of the request being read and
//! the state of its chunked body live here too, beside the bytes they point into.
//!
//! A buffer grows only by what was read (the socket is read into a scratch array first), so a
//! client that sends one byte and waits holds a few bytes, not a read-sized block; a buffer
//! goes back to the pool shrunk to `STEADY_BYTES`, so the pool holds at most
//! `POOL_MAX * STEADY_BYTES` per worker whatever the clients did.

use crate::http::{ChunkedDecoder, Head};

/// Read buffers kept for reuse per worker.
const POOL_MAX: usize = 256;
/// The capacity a buffer keeps when it goes back to the pool.
pub const STEADY_BYTES: usize = 4096;

/// The input of a connection: `store[start..]` is read and not yet consumed.
#[derive(Default)]
pub struct ReadBuf {
    store: Vec<u8>,
    start: usize,
    /// The head of the request whose body is being read; its spans are relative to `start`.
    pub head: Option<Head>,
    /// The chunked body of that request, decoded so far.
    pub chunked: ChunkedDecoder,
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    /// The input read and not yet consumed.
    fn deref(&self) -> &[u8] {
        &self.store[self.start..]
    }
}

impl ReadBuf {
    /// Appends input.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.store.capacity() - self.store.len() < bytes.len() {
            self.compact();
        }
        self.store.extend_from_slice(bytes);
    }

    /// Drops the first `n` bytes of input (a request that was answered). O(1).
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.store.len() - self.start);
        if self.start == self.store.len() {
            self.start = 0;
            self.store.clear();
        }
    }

    /// Drops all input and the request state.
    pub fn clear(&mut self) {
        self.start = 0;
        self.store.clear();
        self.head = None;
        self.chunked.reset();
    }

    /// Moves the unconsumed input to the front of the storage. Call once per read event.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.store.drain(..self.start);
            self.start = 0;
        }
    }

    /// Feeds the chunked body that starts `from` bytes into the input to the decoder
    /// (`http::ChunkedDecoder::feed`).
    pub fn feed_chunked(
        &mut self,
        from: usize,
        max: usize,
    ) -> Result<Option<usize>, crate::http::HttpError> {
        let encoded = self.store.get(self.start + from..).unwrap_or(&[]);
        self.chunked.feed(encoded, max)
    }

    /// Bytes of memory this buffer holds.
    pub fn capacity(&self) -> usize {
        self.store.capacity() + self.chunked.body.capacity()
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

    /// Takes a buffer back, shrunk to its steady size; freed if the pool is full.
    pub fn give(&mut self, mut buf: Box<ReadBuf>) {
        self.out -= 1;
        if self.bufs.len() < POOL_MAX {
            buf.clear();
            buf.store.shrink_to(STEADY_BYTES);
            buf.chunked.body.shrink_to(STEADY_BYTES);
            self.bufs.push(buf);
        }
    }

    /// Buffers handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.out
    }

    /// Bytes held by the spare buffers.
    pub fn spare_bytes(&self) -> usize {
        self.bufs.iter().map(|b| b.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_moves_an_offset_and_compact_moves_the_rest_once() {
        let mut b = ReadBuf::default();
        b.store.reserve(64);
        b.extend(b"GET /a\r\n\r\nGET /b\r\n\r\nGET /c");
        let ptr = b.store.as_ptr();
        b.consume(10);
        assert_eq!(&*b, b"GET /b\r\n\r\nGET /c");
        b.consume(10);
        assert_eq!(&*b, b"GET /c");
        assert_eq!(b.start, 20, "nothing moved yet");
        b.compact();
        assert_eq!(b.start, 0);
        assert_eq!(&*b, b"GET /c");
        assert_eq!(b.store.as_ptr(), ptr, "compacted in place");
        b.consume(6);
        assert!(b.is_empty());
        assert_eq!(
            (b.start, b.store.len()),
            (0, 0),
            "empty input resets the window"
        );
    }

    #[test]
    fn extend_compacts_when_that_makes_room() {
        let mut b = ReadBuf::default();
        b.extend(&[1u8; 100]);
        b.consume(90);
        let cap = b.store.capacity();
        b.extend(&[2u8; 80]);
        assert_eq!(b.store.capacity(), cap, "reused the consumed front");
        assert_eq!(&b[..10], &[1u8; 10]);
        assert_eq!(b.len(), 90);
    }

    #[test]
    fn pool_counts_buffers_out_and_shrinks_what_comes_back() {
        let mut p = BufPool::default();
        let mut a = p.take();
        a.extend(b"x");
        assert!(
            a.capacity() < 64,
            "one byte read holds a few bytes, not a read block"
        );
        let mut big = p.take();
        big.extend(&vec![0u8; 1 << 20]);
        assert_eq!(p.in_use(), 2);
        p.give(a);
        p.give(big);
        assert_eq!(p.in_use(), 0);
        assert!(p.spare_bytes() <= 2 * STEADY_BYTES, "{}", p.spare_bytes());
        assert!(p.take().is_empty(), "a pooled buffer comes back empty");
    }
}
