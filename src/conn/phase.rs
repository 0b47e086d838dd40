//! The phases of an HTTP connection (`conn/http/` makes every change between them), and
//! the shell's view of the HTTP machine (`Io`), which only hands each event to it.

use std::sync::Arc;

use super::http::HttpConn;
use super::out::Out;
use super::readbuf::ReadBuf;
use super::socket::SocketResult;
use super::stream::Stream;
use super::{Input, Next, Wrote};
use crate::http::Method;
use crate::metrics::Proto;
use crate::proto::{Park, Reply};
use crate::worker::Worker;

/// A request held until its channel has something for it (comet `get`, QST long-poll).
pub struct Parked {
    pub(super) channel: Arc<str>,
    pub(super) park: Park,
    /// The request's method, version and keep-alive, for the answer's head.
    pub(super) method: Method,
    pub(super) minor: u8,
    pub(super) keep_alive: bool,
}

impl Parked {
    /// A request to hold, before it joins its channel (which names `channel` then).
    pub(super) fn new(park: Park, method: Method, minor: u8, keep_alive: bool) -> Parked {
        Parked {
            channel: Arc::from(""),
            park,
            method,
            minor,
            keep_alive,
        }
    }
}

/// A push whose answer waits for its record to be on disk (`--fsync always`), or for Redis
/// to store it (`--redis`).
pub struct Syncing {
    pub(super) reply: Reply,
    /// Renders the answer from the batch's last `seq` instead of `reply` (nchan's).
    pub(super) then: Option<crate::proto::Then>,
    pub(super) proto: Proto,
    pub(super) method: Method,
    pub(super) minor: u8,
    pub(super) keep_alive: bool,
}

impl Syncing {
    pub(super) fn new(
        reply: Reply,
        then: Option<crate::proto::Then>,
        proto: Proto,
        method: Method,
        minor: u8,
        keep_alive: bool,
    ) -> Box<Syncing> {
        Box::new(Syncing {
            reply,
            then,
            proto,
            method,
            minor,
            keep_alive,
        })
    }
}

/// A request handed to another machine (a BOSH session), whose answer comes by mail.
pub struct Forwarded {
    pub(super) method: Method,
    pub(super) minor: u8,
    pub(super) keep_alive: bool,
}

/// How long a forwarded request waits past `--long-poll-timeout` (the longest a BOSH session
/// holds a request) before the connection gives up on its answer.
pub(super) const FORWARD_SLACK_MS: u64 = 10_000;

/// The phase of a connection (see LIFECYCLE.md).
pub enum Phase {
    /// Waiting for a request head; idle keep-alive when it holds no buffer.
    Head,
    /// The head is parsed (it is kept in the read buffer, beside its bytes); waiting for the
    /// whole body.
    Body,
    /// Holding a request; pipelined input waits in the buffer.
    Parked(Box<Parked>),
    /// Holding the answer to a push until its record is durable (`Mail::Synced`), or the
    /// long-poll timeout (then `503`); pipelined input waits in the buffer.
    Syncing(Box<Syncing>),
    /// Waiting for the answer of the BOSH session the request went to; pipelined input
    /// waits in the buffer.
    Forwarded(Box<Forwarded>),
    /// A stream: the response never ends while the server runs.
    Streaming(Box<Stream>),
    /// Write what is queued, then shut the socket and drain input until EOF or linger.
    Closing { lingering: bool },
}

/// What one step of reading a request says to do next.
pub(super) enum Step {
    Continue,
    Wait,
    Close,
}

super::io_by_inherent_methods!(HttpConn);
