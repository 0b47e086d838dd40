//! The output queue of a connection: byte segments waiting for the socket, and how far into
//! the first one has been written. Segments are static bytes, small owned heads, shared
//! message frames and inline chunk-size lines, so a fan-out queues the same frame on many
//! connections without copying it (DESIGN rule 3).

pub use crate::http::Seg;
use crate::http::{self, Framing, Method, ResponseHead};
use crate::proto::{Form, Reply};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Segments handed to one `writev`.
pub const MAX_IOVECS: usize = 64;

/// Output waiting for the socket.
#[derive(Default)]
pub struct Out {
    segs: VecDeque<Seg>,
    /// Bytes of the first segment already written.
    offset: usize,
    /// Bytes queued and not yet written.
    len: usize,
}

impl Out {
    /// Queues a reply: its head (a status line, the cached `Date`, CORS, the reply's
    /// headers and framing) and its body, or the raw bytes of a `raw` reply.
    pub fn push_reply(
        &mut self,
        reply: Reply,
        method: Method,
        minor: u8,
        keep_alive: bool,
        w: &crate::worker::Worker,
    ) {
        if reply.raw {
            self.push(match reply.body {
                std::borrow::Cow::Borrowed(b) => Seg::Static(b),
                std::borrow::Cow::Owned(v) => Seg::Owned(v),
            });
            return;
        }
        let form = Form {
            method,
            minor,
            keep_alive,
        };
        let out = encode_reply(&reply, form, w.date.get(), &w.shared.config.cors_origin);
        self.push(Seg::Owned(out));
    }

    /// Queues a segment (an empty one is dropped).
    pub fn push(&mut self, seg: Seg) {
        let n = seg.bytes().len();
        if n > 0 {
            self.len += n;
            self.segs.push_back(seg);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Fills `iov` with the unwritten bytes, in order; returns how many slices it set.
    pub fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, seg) in self.segs.iter().take(iov.len()).enumerate() {
            let b = seg.bytes();
            iov[i] = IoSlice::new(if i == 0 { &b[self.offset..] } else { b });
            n = i + 1;
        }
        n
    }

    /// Marks `n` bytes as written, releasing the segments they cover.
    pub fn advance(&mut self, mut n: usize) {
        debug_assert!(n <= self.len);
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segs.front() else {
                break;
            };
            let left = front.bytes().len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.segs.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
        if self.segs.is_empty() && self.segs.capacity() > 0 {
            // Give the memory back: an idle connection or a quiet stream holds no
            // output queue (a small allocation per write batch, measured as noise).
            self.segs = VecDeque::new();
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.segs = VecDeque::new();
        self.offset = 0;
        self.len = 0;
    }
}

/// A reply's whole response as a request of `form` gets it: its head (a status line,
/// `date`, CORS, the reply's headers and framing) and its body; a raw reply's bytes as they
/// are. `default_cors`: `--cors-origin`, for a reply that does not name its own.
pub fn encode_reply(reply: &Reply, form: Form, date: &[u8], default_cors: &str) -> Vec<u8> {
    if reply.raw {
        return reply.body.to_vec();
    }
    let head = ResponseHead {
        status: reply.status,
        date,
        cors_origin: reply.cors.as_deref().unwrap_or(default_cors),
        content_type: reply.content_type,
        framing: Framing::Length(reply.body.len()),
        headers: &reply.headers,
        keep_alive: form.keep_alive,
        minor: form.minor,
    };
    let mut out = Vec::new();
    http::encode_response(&head, form.method, &reply.body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn drain(out: &Out) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let n = out.slices(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn partial_writes_resume_mid_segment() {
        let mut out = Out::default();
        out.push(Seg::Static(b"abc"));
        out.push(Seg::Owned(Vec::new()));
        out.push(Seg::Shared(Arc::from(&b"defg"[..])));
        out.push(Seg::Size(crate::http::chunk_size_line(255)));
        assert_eq!(out.len(), 11);
        assert_eq!(drain(&out), b"abcdefgff\r\n");
        out.advance(2);
        assert_eq!(drain(&out), b"cdefgff\r\n");
        out.advance(3);
        assert_eq!(drain(&out), b"fgff\r\n");
        out.advance(6);
        assert!(out.is_empty());
        assert_eq!(drain(&out), b"");
    }

    #[test]
    fn an_empty_queue_keeps_no_memory() {
        let mut out = Out::default();
        for _ in 0..100 {
            out.push(Seg::Static(b"x"));
        }
        out.advance(100);
        assert!(out.is_empty());
        assert_eq!(out.segs.capacity(), 0);
    }
}
