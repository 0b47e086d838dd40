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

use std::sync::Arc;

use crate::http::{ChunkedDecoder, Head};
use crate::metrics::Metrics;

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
    /// The capacity last counted in `tidings_read_buffer_bytes`.
    accounted: usize,
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    /// The input read and not yet consumed.
    fn deref(&self) -> &[u8] {
        &self.store[self.start..]
    }
}

impl std::ops::DerefMut for ReadBuf {
    /// The input read and not yet consumed, to change in place (a WebSocket frame is
    /// unmasked where it lies).
    fn deref_mut(&mut self) -> &mut [u8] {
        let start = self.start;
        &mut self.store[start..]
    }
}

impl ReadBuf {
    /// Appends input.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.store.capacity() - self.store.len() < bytes.len() {
            // Reuse the consumed front when moving the rest costs no more than it gives
            // back; otherwise let the storage grow (it is bounded by the read limit).
            self.compact_if_worth();
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

    /// Moves the unconsumed input to the front when that copies no more than was consumed
    /// since the last move, so the copying stays linear in the input however the requests
    /// are spread over read events and turns. Call once per read event.
    pub fn compact_if_worth(&mut self) {
        if self.start >= self.store.len() - self.start {
            self.compact();
        }
    }

    /// Moves the unconsumed input to the front of the storage.
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

/// A worker's spare read buffers. It counts the bytes of every buffer it handed out or
/// keeps in `tidings_read_buffer_bytes`.
pub struct BufPool {
    // Boxed so handing one out moves a pointer, not the buffer and its parsed head.
    #[allow(clippy::vec_box)]
    bufs: Vec<Box<ReadBuf>>,
    /// Buffers handed out and not yet given back (for tests and invariants).
    out: usize,
    metrics: Arc<Metrics>,
}

impl BufPool {
    pub fn new(metrics: Arc<Metrics>) -> BufPool {
        BufPool {
            bufs: Vec::new(),
            out: 0,
            metrics,
        }
    }

    /// Counts what a buffer in use grew or shrank by since it was last counted.
    pub fn note(&self, buf: &mut ReadBuf) {
        let cap = buf.capacity();
        if cap != buf.accounted {
            let delta = cap as i64 - buf.accounted as i64;
            self.metrics.read_buffer_bytes.add(delta);
            buf.accounted = cap;
        }
    }

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
            self.note(&mut buf);
            self.bufs.push(buf);
        } else {
            self.metrics.read_buffer_bytes.add(-(buf.accounted as i64));
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
        let metrics = Arc::new(Metrics::default());
        let mut p = BufPool::new(metrics.clone());
        let mut a = p.take();
        a.extend(b"x");
        assert!(
            a.capacity() < 64,
            "one byte read holds a few bytes, not a read block"
        );
        let mut big = p.take();
        big.extend(&vec![0u8; 1 << 20]);
        p.note(&mut a);
        p.note(&mut big);
        assert!(metrics.read_buffer_bytes.get() >= 1 << 20);
        assert_eq!(p.in_use(), 2);
        p.give(a);
        p.give(big);
        assert_eq!(p.in_use(), 0);
        assert!(p.spare_bytes() <= 2 * STEADY_BYTES, "{}", p.spare_bytes());
        assert_eq!(metrics.read_buffer_bytes.get(), p.spare_bytes() as i64);
        assert!(p.take().is_empty(), "a pooled buffer comes back empty");
    }
}
