//! Connections. Each accepted socket gets the connection machine of its listener's kind
//! (`Kind`); the machine is sans-io (bytes, time and hang-ups in; bytes to write and actions
//! out), and `Conn` is the thin shell that does its socket I/O.
//!
//! - `out`: the output queue (segments, partial writes);
//! - `readbuf`: the read buffer (a read offset, compacted once per read) and its pool;
//! - `socket`: the capped read, write and discard loops, each returning a `SocketResult`;
//! - `http`: the HTTP/1.1 machine, with every phase change of an HTTP connection;
//! - `stream`: a streaming connection's records, framed by its `proto::stream::StreamKind`.
//!
//! `LIFECYCLE.md` beside `lib.rs` draws the machine.

pub mod bosh;
pub mod http;
pub mod out;
pub mod phase;
pub mod readbuf;
pub mod socket;
pub mod stream;
pub mod xmpp;

#[cfg(test)]
mod sim;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::net::TcpStream;

use crate::hub::Message;
use crate::worker::Worker;
use bosh::BoshConn;
use http::HttpConn;
use socket::SocketResult;
use xmpp::XmppConn;

/// A token names a connection: its slab key, and a generation so a reused key does not
/// receive its predecessor's events or deadlines.
pub fn token(key: usize, gen: u32) -> usize {
    key | ((gen as usize) << 32)
}

/// The slab key and generation of a token.
pub fn untoken(token: usize) -> (usize, u32) {
    (token & 0xffff_ffff, (token >> 32) as u32)
}

/// What the caller must do with the connection after a handler ran.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
}

/// What the machine wants done when its socket is readable.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Read into `input_buf`, up to `limit` bytes of input, then call `received`.
    Read { limit: usize },
    /// Read and drop (a stream or a closing connection), then call `discarded`.
    Discard,
    /// Do not read: the client has not read its answers (TCP pushes back on it).
    Pause,
}

/// What to do after a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Wrote {
    Keep,
    Close,
    /// More output was made ready: write again.
    More,
    /// Everything is written on a closing connection: shut the socket's write side, then
    /// discard input until the peer's EOF.
    ShutdownWrite,
}

/// The kind of connection a listener's sockets get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1: QST, comet, Talk and the operational endpoints.
    Http,
    /// XMPP client streams (Message).
    Xmpp,
}

/// A deadline that never comes (an authenticated XMPP session): no timer entry is kept.
pub const NEVER: u64 = u64::MAX;

/// How a connection is found again by its worker: its slab key and generation, its one
/// deadline, and whether it is on the pending-write list.
pub struct Link {
    pub key: usize,
    pub gen: u32,
    /// When the current phase times out (worker ms).
    deadline: u64,
    /// The earliest deadline with an entry in the timer heap (0: none).
    armed: u64,
    /// On the worker's pending-write list already.
    queued: bool,
}

impl Link {
    pub fn new(key: usize, gen: u32) -> Link {
        Link {
            key,
            gen,
            deadline: 0,
            armed: 0,
            queued: false,
        }
    }

    pub fn token(&self) -> usize {
        token(self.key, self.gen)
    }

    /// Sets the one deadline. A connection keeps at most one heap entry for its earliest
    /// deadline; a later deadline re-arms when that entry comes due (`due`), so a busy
    /// keep-alive connection does not fill the heap.
    pub fn set_deadline(&mut self, t: u64, w: &mut Worker) {
        self.deadline = t;
        if t == NEVER {
            return;
        }
        if self.armed == 0 || t < self.armed {
            w.timers.push(t, self.key, self.gen);
            self.armed = t;
        }
    }

    /// Puts the connection on the worker's list of output to flush this turn (once).
    pub fn mark_pending(&mut self, w: &mut Worker) {
        if !self.queued {
            self.queued = true;
            w.pending.push(self.key);
        }
    }

    /// The connection is being flushed: it leaves the pending list.
    pub fn flushed(&mut self) {
        self.queued = false;
    }

    /// A timer entry came due at `entry`: true if the deadline has passed; otherwise the
    /// entry is re-armed for the later deadline.
    pub fn due(&mut self, entry: u64, w: &mut Worker) -> bool {
        if entry == self.armed {
            self.armed = 0;
        }
        if self.deadline > w.now {
            if self.armed == 0 {
                let t = self.deadline;
                self.set_deadline(t, w);
            }
            return false;
        }
        true
    }
}

/// What the shell and the reactor need of every connection machine: its socket I/O and the
/// events every kind of connection has. A new kind of connection implements it.
pub trait Io {
    fn link(&mut self) -> &mut Link;
    /// The poller reported that the peer closed its side.
    fn note_peer_closed(&mut self);
    fn peer_closed(&self) -> bool;
    /// What to do when the socket is readable.
    fn wants_input(&mut self, w: &Worker) -> Input;
    /// The buffer to read into (from the pool if the connection holds none).
    fn input_buf(&mut self, w: &mut Worker) -> &mut readbuf::ReadBuf;
    /// Input was read into `input_buf` with this result.
    fn received(&mut self, result: SocketResult, w: &mut Worker) -> Next;
    /// The output to write now.
    fn output(&mut self, w: &Worker) -> &mut out::Out;
    /// The output was written with this result.
    fn wrote(&mut self, result: SocketResult, w: &mut Worker) -> Wrote;
    /// A timer entry for the connection came due.
    fn on_timer(&mut self, entry: u64, w: &mut Worker) -> Next;
    /// The server is stopping.
    fn begin_shutdown(&mut self, w: &mut Worker) -> Next;

    /// Input was read and dropped with this result (a stream's client, or a closing
    /// connection draining to its peer's EOF).
    fn discarded(&mut self, result: SocketResult, w: &mut Worker) -> Next {
        match result {
            SocketResult::Closed | SocketResult::Error => Next::Close,
            SocketResult::Continue => {
                w.again.push(self.link().key);
                Next::Keep
            }
            _ => Next::Keep,
        }
    }
}

/// Implements `Io` for a machine whose inherent methods have the trait's names.
macro_rules! io_by_inherent_methods {
    ($machine:ty) => {
        impl $crate::conn::Io for $machine {
            fn link(&mut self) -> &mut $crate::conn::Link {
                &mut self.link
            }
            fn note_peer_closed(&mut self) {
                self.peer_closed = true;
            }
            fn peer_closed(&self) -> bool {
                self.peer_closed
            }
            fn wants_input(&mut self, w: &Worker) -> Input {
                <$machine>::wants_input(self, w)
            }
            fn input_buf(&mut self, w: &mut Worker) -> &mut ReadBuf {
                <$machine>::input_buf(self, w)
            }
            fn received(&mut self, result: SocketResult, w: &mut Worker) -> Next {
                <$machine>::received(self, result, w)
            }
            fn output(&mut self, w: &Worker) -> &mut Out {
                <$machine>::output(self, w)
            }
            fn wrote(&mut self, result: SocketResult, w: &mut Worker) -> Wrote {
                <$machine>::wrote(self, result, w)
            }
            fn on_timer(&mut self, entry: u64, w: &mut Worker) -> Next {
                <$machine>::on_timer(self, entry, w)
            }
            fn begin_shutdown(&mut self, w: &mut Worker) -> Next {
                <$machine>::begin_shutdown(self, w)
            }
        }
    };
}
use io_by_inherent_methods;

/// A connection machine of some kind.
pub enum Machine {
    Http(HttpConn),
    Xmpp(XmppConn),
    /// A BOSH session: no socket of its own (its requests come from HTTP connections).
    /// Boxed: it is twice an HTTP connection's size, and every slab entry would pay for it.
    Bosh(Box<BoshConn>),
}

/// One client connection: its socket and its machine. A BOSH session has no socket.
pub struct Conn {
    sock: Option<TcpStream>,
    machine: Machine,
}

impl Conn {
    /// A new connection of a listener's kind. `restricted`: accepted into the admin reserve
    /// past `--max-connections`.
    pub fn new(
        kind: Kind,
        sock: TcpStream,
        key: usize,
        gen: u32,
        restricted: bool,
        w: &mut Worker,
    ) -> Conn {
        let machine = match kind {
            Kind::Http => Machine::Http(HttpConn::new(key, gen, restricted, w)),
            Kind::Xmpp => Machine::Xmpp(XmppConn::new(key, gen, w)),
        };
        Conn {
            sock: Some(sock),
            machine,
        }
    }

    /// A BOSH session's place in the slab.
    pub fn bosh(session: BoshConn) -> Conn {
        Conn {
            sock: None,
            machine: Machine::Bosh(Box::new(session)),
        }
    }

    pub fn socket(&mut self) -> Option<&mut TcpStream> {
        self.sock.as_mut()
    }

    pub fn gen(&self) -> u32 {
        match &self.machine {
            Machine::Http(m) => m.link.gen,
            Machine::Xmpp(m) => m.link.gen,
            Machine::Bosh(m) => m.link.gen,
        }
    }

    /// A timer entry for this connection came due.
    pub fn on_timer(&mut self, entry: u64, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.on_timer(entry, w),
            Machine::Xmpp(m) => m.on_timer(entry, w),
            Machine::Bosh(m) => m.on_timer(entry, w),
        }
    }

    /// The poller reported that the peer closed its side.
    pub fn note_read_closed(&mut self) {
        if let Some(m) = self.io() {
            m.note_peer_closed();
        }
    }

    /// The I/O half of the connection's machine (none for a BOSH session).
    fn io(&mut self) -> Option<&mut dyn Io> {
        match &mut self.machine {
            Machine::Http(m) => Some(m),
            Machine::Xmpp(m) => Some(m),
            Machine::Bosh(_) => None,
        }
    }

    /// The socket is readable (or its peer hung up).
    pub fn on_readable(&mut self, w: &mut Worker) -> Next {
        let (Some(sock), Some(m)) = (
            self.sock.as_mut(),
            match &mut self.machine {
                Machine::Http(m) => Some(m as &mut dyn Io),
                Machine::Xmpp(m) => Some(m as &mut dyn Io),
                Machine::Bosh(_) => None,
            },
        ) else {
            return Next::Keep;
        };
        match m.wants_input(w) {
            Input::Pause => Next::Keep,
            Input::Discard => {
                let r = socket::discard(sock, &mut w.scratch);
                m.discarded(r, w)
            }
            Input::Read { limit } => {
                let peer_closed = m.peer_closed();
                let buf = m.input_buf(w);
                let (r, _) = socket::read(sock, buf, limit, peer_closed, &mut w.scratch);
                m.received(r, w)
            }
        }
    }

    /// Writes what is queued.
    pub fn flush(&mut self, w: &mut Worker) -> Next {
        let (sock, m) = match (&mut self.sock, &mut self.machine) {
            // A BOSH session answers the requests it holds.
            (_, Machine::Bosh(m)) => return m.flush(w),
            (None, _) => return Next::Keep,
            (Some(sock), Machine::Http(m)) => {
                if m.take_stream_started() {
                    // What a reader that stopped reading can park in the kernel is bounded too.
                    let size = w.shared.config.stream_send_buffer;
                    if let Err(e) = socket2::SockRef::from(&*sock).set_send_buffer_size(size) {
                        crate::debug!("setting a stream's send buffer failed: {e}");
                    }
                }
                (sock, m as &mut dyn Io)
            }
            (Some(sock), Machine::Xmpp(m)) => (sock, m as &mut dyn Io),
        };
        loop {
            let (r, n) = socket::write(sock, m.output(w));
            w.shared.metrics.bytes_written.add(n as u64);
            match m.wrote(r, w) {
                Wrote::Keep => return Next::Keep,
                Wrote::Close => return Next::Close,
                Wrote::More => continue,
                Wrote::ShutdownWrite => {
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                    let r = socket::discard(sock, &mut w.scratch);
                    return m.discarded(r, w);
                }
            }
        }
    }

    /// A message was published on a channel this connection waits on.
    pub fn deliver(&mut self, channel: &Arc<str>, msg: &Arc<Message>, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.deliver(msg, w),
            Machine::Xmpp(m) => m.deliver(channel, msg, w),
            Machine::Bosh(m) => m.deliver(channel, msg, w),
        }
    }

    /// A stanza routed to this XMPP session.
    pub fn deliver_stanza(&mut self, stanza: &Arc<[u8]>, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Xmpp(m) => m.deliver_stanza(stanza, w),
            Machine::Bosh(m) => m.deliver_stanza(stanza, w),
            Machine::Http(_) => Next::Keep,
        }
    }

    /// The push this connection holds is stored (its last `seq`), or why not; for an XMPP
    /// session, its oldest PubSub publish held for Redis.
    pub fn synced(
        &mut self,
        result: Result<crate::hub::Answer, crate::hub::HubError>,
        w: &mut Worker,
    ) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.synced(result, w),
            Machine::Xmpp(m) => m.published(result.is_ok(), w),
            Machine::Bosh(m) => m.published(result.is_ok(), w),
        }
    }

    /// A newer XMPP session bound this one's full JID.
    pub fn replaced(&mut self, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Xmpp(m) => m.replaced(w),
            Machine::Bosh(m) => m.replaced(w),
            Machine::Http(_) => Next::Keep,
        }
    }

    /// A newer stream of the same name replaced this one.
    pub fn end_stream(&mut self, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.end_stream(w),
            Machine::Xmpp(_) | Machine::Bosh(_) => Next::Keep,
        }
    }

    /// The channel was deleted (nchan's `DELETE`).
    pub fn channel_deleted(&mut self, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.channel_deleted(w),
            Machine::Xmpp(_) | Machine::Bosh(_) => Next::Keep,
        }
    }

    /// A BOSH request body for this session.
    pub fn bosh_request(
        &mut self,
        from: crate::hub::WaiterRef,
        body: &[u8],
        w: &mut Worker,
    ) -> Next {
        match &mut self.machine {
            Machine::Bosh(m) => m.request(from, body, w),
            _ => {
                bosh::unknown_session(from, w);
                Next::Keep
            }
        }
    }

    /// The answer of a BOSH session to the request this HTTP connection forwarded.
    pub fn bosh_answer(&mut self, status: u16, body: &Arc<[u8]>, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.forwarded_answer(status, body, w),
            _ => Next::Keep,
        }
    }

    /// The server is stopping.
    pub fn begin_shutdown(&mut self, w: &mut Worker) -> Next {
        match &mut self.machine {
            Machine::Http(m) => m.begin_shutdown(w),
            Machine::Xmpp(m) => m.begin_shutdown(w),
            Machine::Bosh(m) => m.begin_shutdown(w),
        }
    }

    /// Releases what the connection holds. Call once, when it leaves the slab.
    pub fn close(self, w: &mut Worker) {
        match self.machine {
            Machine::Http(m) => m.close(w),
            Machine::Xmpp(m) => m.close(w),
            // Not a connection: it is counted as a BOSH session.
            Machine::Bosh(m) => return m.close(w),
        }
        w.shared.metrics.connections_open.dec();
        w.shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_slab_entry_stays_small() {
        // Every connection pays for the largest machine: the BOSH session is boxed so an idle
        // HTTP connection or Talk stream does not.
        let conn = std::mem::size_of::<super::Conn>();
        let http = std::mem::size_of::<super::HttpConn>();
        assert!(conn <= http + 16, "Conn {conn} B, HttpConn {http} B");
    }
}
