//! Redis as the shared engine of several tidings nodes (issue 13): channels' logs and
//! clocks, delivery between nodes, and QST queue state, kept in one Redis so that a message
//! published on any node has the same `seq` everywhere and reaches every node's subscribers.
//!
//! This module is the engine alone; the hub uses it in `hub/redis.rs` (`--redis`). Its
//! parts:
//!
//! - [`conn`]: the `redis://` URL and one blocking, timed-out connection;
//! - [`resp`]: commands out and replies in (RESP2), pure code;
//! - [`scripts`]: the Lua scripts and the keys of a channel (their design is documented
//!   there): publish with `seq = max(now_ms, clock + 1)` (PROTOCOLS.md 0.1), comet `sync`,
//!   catch-up reads, QST pull and acknowledgement;
//! - [`engine`]: the thread that runs every operation of this node, pipelined, reconnecting
//!   with backoff, with its state and round-trip time for `/metrics` and `/health`;
//! - [`subscriber`]: the thread that holds the pub/sub connection and reports messages,
//!   disconnections, and after a reconnection which channels must be caught up.
//!
//! ## Which client, and why
//!
//! Threads of our own speaking RESP2 over blocking sockets, with replies decoded by the
//! `redis-protocol` crate (sans-io: bytes in, frame and length out) and commands encoded
//! here (a command is only ever an array of bulk strings: twenty lines). Not the `redis`
//! crate, even with its default features off and only its synchronous API:
//!
//! - it brings `url` and with it `idna` and the ICU crates (about forty crates with proc
//!   macros) to parse one URL form we parse in sixty lines with tests;
//! - its synchronous `PubSub` blocks in `get_message`, so a thread waiting on it cannot be
//!   told to subscribe to a new channel without a read timeout (a wake-up every few
//!   milliseconds, or a subscription delayed by one): our subscriber waits in `mio` on the
//!   socket and a `Waker`, idle at no cost, as the reactor does;
//! - the engine's value is in what the crate does not do for us anyway: batching every
//!   queued operation of all workers into one pipeline, failing fast while Redis is down,
//!   reconnecting on a schedule and measuring the round trip.
//!
//! Not the reactor itself either (the other way the issue allows): an operation is a round
//! trip whose answer the hub needs before it can answer a publisher, and a worker must never
//! wait for one; a thread of its own, posting answers back to the workers' mailboxes, keeps
//! the reactor unaware of Redis, exactly as the disk log's sync thread does.
//!
//! No async runtime comes in (`cargo tree -i tokio` finds nothing).

pub mod conn;
pub mod engine;
pub mod resp;
pub mod scripts;
pub mod subscriber;

use std::time::Duration;

pub use conn::Url;
pub use engine::{Acked, Engine, Log, Op, Published, Taken};
pub use subscriber::{Event, Subscriber};

/// How the engine and the subscriber reach Redis, and the retention the scripts apply.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: Url,
    /// Bounds connecting and every read and write.
    pub timeout: Duration,
    /// The first wait before reconnecting; doubled after each failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Retained messages per channel (`--channel-capacity`).
    pub channel_capacity: u64,
    /// Retained bytes of message data per channel.
    pub channel_bytes: u64,
    /// Pending messages per QST queue before pushes are refused (`--queue-capacity`).
    pub queue_capacity: u64,
    /// Messages older than this many ms are dropped, and a channel that is not a queue
    /// expires this long after its last publish (`--channel-ttl`; 0: never).
    pub channel_ttl_ms: u64,
}

impl Options {
    /// Options for `url` with the server's default limits.
    pub fn new(url: Url) -> Options {
        Options {
            url,
            timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            channel_capacity: 1024,
            channel_bytes: 4 << 20,
            queue_capacity: 10_000,
            channel_ttl_ms: 0,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Redis cannot be reached, or the connection broke or timed out (the operation may or
    /// may not have been applied): a publisher gets `503` with `Retry-After`.
    Down(String),
    /// Redis answered an error (a script fault, a wrong password, a read-only replica).
    Reply(String),
    /// Redis's answer was not what the scripts return: a bug, or not Redis.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Down(e) => write!(f, "Redis is unreachable: {e}"),
            Error::Reply(e) => write!(f, "Redis answered an error: {e}"),
            Error::Protocol(e) => write!(f, "Redis's answer made no sense: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// One stored message, as Redis holds it: the hub's encoding of it is `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub id: String,
    pub data: Vec<u8>,
}

/// The engine's connection, for `/health` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Connected (an operation now is sent, not refused).
    pub up: bool,
    /// The last round trip (a pipeline, or an idle ping), in microseconds.
    pub rtt_us: u64,
    /// Connections made (1 + reconnections).
    pub connects: u64,
    /// Connections lost.
    pub failures: u64,
    /// Whether the server has sharded pub/sub (`SPUBLISH`).
    pub sharded: bool,
}
