//! A streaming connection's state: the channel it listens to, its cursor, and the records it
//! has not yet framed. What the records are and how they are framed is its `StreamKind`'s
//! business (`proto::stream`); this only counts, holds and hands them over.

use std::sync::Arc;

use crate::http::Seg;
use crate::hub::Message;
use crate::metrics::Metrics;
use crate::proto::stream::{Pick, StreamKind};

pub struct Stream {
    pub channel: Arc<str>,
    pub kind: StreamKind,
    /// Highest `seq` offered to this stream; older mail is skipped.
    pub cursor: u64,
    /// Records waiting to be framed into the next batch.
    records: Vec<Seg>,
    /// Bytes of `records`.
    bytes: usize,
    /// When a record was last queued (worker ms): the keep-alive is only for a stream quiet
    /// for a whole interval.
    pub last_record: u64,
    /// With `--talk-coalesce-ms`: the records wait until this time (0: not holding).
    pub hold_until: u64,
    /// For a kind with no keep-alive: when nchan's `--nchan-subscriber-timeout` ends it
    /// (worker ms; `NEVER` when it does not time out).
    pub expires_at: u64,
}

impl Stream {
    pub fn new(channel: Arc<str>, kind: StreamKind, cursor: u64, now: u64) -> Stream {
        Stream {
            channel,
            kind,
            cursor,
            records: Vec::new(),
            bytes: 0,
            last_record: now,
            hold_until: 0,
            expires_at: super::NEVER,
        }
    }

    /// Queues a record.
    pub fn push(&mut self, seg: Seg) {
        self.bytes += seg.bytes().len();
        self.records.push(seg);
    }

    /// Offers a message: queues its record if this stream takes it. Returns whether it did.
    pub fn offer(&mut self, msg: &Message, metrics: &Metrics) -> bool {
        match self.kind.pick(msg) {
            Pick::Take(seg) => {
                self.push(seg);
                metrics.messages_delivered.inc();
                true
            }
            Pick::Skip => false,
            Pick::Unframeable => {
                metrics.messages_unframeable.inc();
                false
            }
        }
    }

    /// Bytes of records not yet framed.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether records wait to be framed.
    pub fn has_records(&self) -> bool {
        !self.records.is_empty()
    }

    /// Frames every waiting record into one batch, handing the segments to `out`.
    pub fn frame(&mut self, out: &mut dyn FnMut(Seg)) {
        let bytes = std::mem::take(&mut self.bytes);
        self.kind.frame(&mut self.records, bytes, out);
        // A quiet stream keeps no record list.
        self.records = Vec::new();
    }

    /// Drops records that will never be written (the stream is ending).
    pub fn drop_records(&mut self) {
        self.records = Vec::new();
        self.bytes = 0;
    }
}
