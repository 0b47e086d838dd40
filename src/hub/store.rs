//! The channel store: what a channel keeps, apart from who waits on it.
//!
//! A `ChannelStore` is one channel's data: its log of shared messages, its clock
//! (PROTOCOLS.md 0.1), retention by count and bytes (0.2), its QST queue state, and the id of
//! the last message pushed. It assigns `seq`, refuses what a queue cannot take, and answers
//! reads and QST pulls. It knows nothing of workers, waiters, mailboxes, metrics or locks:
//! the hub calls it under the channel's shard lock and does the rest (`super::waiters`).
//!
//! This is the seam where other storage plugs in (DESIGN.md, "storage"): everything that
//! must survive a restart, or be shared by several processes, goes through the few calls
//! here that change a channel — `append` (new messages), `qst_pull` (acknowledgements,
//! tries), `sync` (the clock) and `retain` (compaction). A durable log writes a record in
//! `append` and makes it durable between `Hub::append` and `Hub::deliver` (an fsync, or a
//! group commit shared by many batches), and rebuilds each store by replaying its records
//! at start-up; a Redis-backed store would keep the same data in Redis. Readers (`read`,
//! `after`, `qst_pull`) see a batch as soon as `append` returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::message::{Id, Message};
use super::queue::{self, Ack, AckCounts, Queue};
use super::{HubError, Limits};

/// What a retained message costs beyond its bytes, counted against `--retained-bytes`: about
/// what a stored message, its `Arc` and its log slot take (measured: `tests/qst_memory.rs`).
pub const MESSAGE_OVERHEAD: usize = 256;

/// What `Hub::read` found after a cursor.
#[derive(Debug, Default)]
pub struct Read {
    pub messages: Vec<Arc<Message>>,
    /// The channel clock after the read (0 for a channel that does not exist).
    pub clock: u64,
    /// Retention dropped a message with `seq > cursor`: the reader missed it.
    pub missed: bool,
}

/// What a QST pull got.
#[derive(Debug, Default)]
pub struct Pulled {
    pub messages: Vec<Arc<Message>>,
    /// The `ETag` to send: the last message's id, or the last acknowledged id.
    pub etag: Option<String>,
}

/// One channel's stored data (see the module doc).
#[derive(Debug, Default)]
pub struct ChannelStore {
    log: VecDeque<Arc<Message>>,
    /// Bytes of the messages in `log`, as `Message::size` counts them.
    bytes: usize,
    clock: u64,
    /// The highest `seq` retention ever dropped (0: none).
    dropped: u64,
    last_id: Option<Id>,
    queue: Option<Queue>,
    /// Counts the changes of the queue state (it was made, an acknowledgement, a try, an
    /// expiry): the hub logs the state when it moved.
    queue_version: u64,
    /// A cap on retained messages below `--channel-capacity`, for a channel whose history
    /// nobody reads (the server's own status snapshots): see `cap_retention`.
    cap: Option<usize>,
}

impl ChannelStore {
    pub fn new() -> ChannelStore {
        ChannelStore::default()
    }

    /// Advances the clock to at least `now_ms` and returns it (PROTOCOLS.md 0.1, `sync`).
    pub fn sync(&mut self, now_ms: u64) -> u64 {
        self.clock = self.clock.max(now_ms);
        self.clock
    }

    /// The clock, unchanged.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The next `seq`: `max(now_ms, clock + 1)`.
    fn tick(&mut self, now_ms: u64) -> u64 {
        self.clock = now_ms.max(self.clock + 1);
        self.clock
    }

    /// Index of the first message with `seq > cursor`.
    fn first_after(&self, cursor: u64) -> usize {
        self.log.partition_point(|m| m.seq <= cursor)
    }

    /// Whether the channel holds nothing: no message and no queue state.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.queue.is_none()
    }

    /// The id of the last message pushed into the channel, if any.
    pub fn last_id(&self) -> Option<&Id> {
        self.last_id.as_ref()
    }

    /// Bytes of the retained messages, as `Message::size` counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the retained messages count against the hub's `--retained-bytes`: their bytes
    /// plus `MESSAGE_OVERHEAD` each.
    pub fn footprint(&self) -> usize {
        self.bytes + self.log.len() * MESSAGE_OVERHEAD
    }

    /// The `seq` of the oldest retained message.
    pub fn front_seq(&self) -> Option<u64> {
        self.log.front().map(|m| m.seq)
    }

    /// Whether the channel is a QST queue.
    pub fn is_queue(&self) -> bool {
        self.queue.is_some()
    }

    /// Drops the oldest message unless a queue holds it unacknowledged. Returns whether one
    /// was dropped (a reader behind it sees `missed`).
    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self.log.front() else {
            return false;
        };
        if self.queue.as_ref().is_some_and(|q| q.holds(oldest.seq)) {
            return false;
        }
        self.bytes -= oldest.size();
        self.dropped = self.dropped.max(oldest.seq);
        if let Some(q) = self.queue.as_mut() {
            q.forget_id(&oldest.id);
        }
        self.log.pop_front();
        true
    }

    /// Drops the oldest messages past the count and byte budgets, except those a queue
    /// still holds unacknowledged. Returns how many were dropped.
    pub fn retain(&mut self, limits: &Limits) -> u64 {
        let capacity = self
            .cap
            .map_or(limits.channel_capacity, |c| c.min(limits.channel_capacity));
        let mut dropped = 0;
        while (self.log.len() > capacity || self.bytes > limits.channel_bytes) && self.drop_oldest()
        {
            dropped += 1;
        }
        dropped
    }

    /// Keeps at most `keep` messages from the next retention pass on (`append`, `qst_pull`),
    /// or `--channel-capacity` if that is fewer. Lasts as long as the channel.
    pub fn cap_retention(&mut self, keep: usize) {
        self.cap = Some(keep);
    }

    /// Drops the oldest message for the hub's memory budget, unless a queue holds it.
    pub fn evict_oldest(&mut self) -> bool {
        self.drop_oldest()
    }

    /// Drops the messages stored before `before_seq` (a `seq` is the time it was stored,
    /// in ms, or a little later), unless a queue holds them. Returns how many.
    pub fn expire(&mut self, before_seq: u64) -> u64 {
        let mut dropped = 0;
        while self.front_seq().is_some_and(|s| s < before_seq) && self.drop_oldest() {
            dropped += 1;
        }
        dropped
    }

    /// Drops every retained message (not a queue's: the caller checks). Returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.log.len();
        if let Some(last) = self.log.back() {
            self.dropped = self.dropped.max(last.seq);
        }
        self.log.clear();
        self.bytes = 0;
        n
    }

    /// Retained messages.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// The `seq` of the newest retained message.
    pub fn back_seq(&self) -> Option<u64> {
        self.log.back().map(|m| m.seq)
    }

    /// Makes the channel a QST queue, keeping what it holds now and everything later.
    pub fn make_queue(&mut self) {
        if self.queue.is_none() {
            self.queue_version += 1;
            let acked = self.log.front().map_or(self.clock, |m| m.seq - 1);
            let mut q = Queue::new(acked);
            for m in &self.log {
                q.push(m);
            }
            self.queue = Some(q);
        }
    }

    /// Removes from `batch` every message whose id the channel already holds, or an
    /// earlier message of the batch has (a retried push is idempotent). Uses the queue's
    /// id index, so the log is only scanned when an id's hash is already known.
    fn drop_known_ids(&self, batch: &mut Vec<Message>) {
        let Some(q) = self.queue.as_ref() else { return };
        let mut kept: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut keep = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            let h = queue::id_hash(&m.id);
            // A retried id is most likely recent: look from the newest end.
            let in_log = q.may_hold_id(h) && self.log.iter().rev().any(|old| old.id == m.id);
            let earlier = kept
                .get(&h)
                .is_some_and(|is| is.iter().any(|&j| batch[j].id == m.id));
            let fresh = !in_log && !earlier;
            if fresh {
                kept.entry(h).or_default().push(i);
            }
            keep.push(fresh);
        }
        let mut flags = keep.into_iter();
        batch.retain(|_| flags.next().unwrap_or(false));
    }

    /// Stores a batch, all or nothing: gives each message its `seq` and appends it to the
    /// log, then applies retention. Returns the stored messages (a message whose id a queue
    /// already holds is left out) and how many old ones retention dropped.
    ///
    /// `queue` makes the channel a QST queue first (PROTOCOLS.md 0.2); a queue refuses a
    /// batch that would take it past `queue_capacity` pending messages or `queue_bytes`
    /// with `QueueFull`, and nothing changes.
    pub fn append(
        &mut self,
        mut batch: Vec<Message>,
        queue: bool,
        limits: &Limits,
        now_ms: u64,
    ) -> Result<(Vec<Arc<Message>>, u64), HubError> {
        if queue {
            self.make_queue();
        }
        self.drop_known_ids(&mut batch);
        if let Some(q) = self.queue.as_ref() {
            let bytes: usize = batch.iter().map(Message::size).sum();
            if q.pending() + batch.len() > limits.queue_capacity
                || self.bytes + bytes > limits.queue_bytes
            {
                return Err(HubError::QueueFull);
            }
        }
        let mut stored = Vec::with_capacity(batch.len());
        for mut m in batch {
            m.seq = self.tick(now_ms);
            self.bytes += m.size();
            if let Some(q) = self.queue.as_mut() {
                q.push(&m);
            }
            let m = Arc::new(m);
            self.log.push_back(m.clone());
            stored.push(m);
        }
        if let Some(last) = stored.last() {
            self.last_id = Some(last.id.clone());
        }
        let dropped = self.retain(limits);
        if let Some(q) = self.queue.as_ref() {
            debug_assert_eq!(q.pending(), q.recount(&self.log), "running pending count");
        }
        Ok((stored, dropped))
    }

    /// Messages with `seq > cursor`, oldest first, at most `max`; the clock; whether the
    /// cursor fell behind retention.
    pub fn read(&self, cursor: u64, max: usize) -> Read {
        let start = self.first_after(cursor);
        Read {
            messages: self.log.range(start..).take(max).cloned().collect(),
            clock: self.clock,
            missed: self.dropped > cursor,
        }
    }

    /// Every retained message with `seq > cursor`, oldest first.
    pub fn after(&self, cursor: u64) -> impl Iterator<Item = &Arc<Message>> + Clone {
        self.log.range(self.first_after(cursor)..)
    }

    /// A QST pull: makes the channel a queue, applies the acknowledgements, then takes the
    /// pending messages, oldest first, at most `max`, and applies retention (acknowledged
    /// messages may now go). Returns what was pulled, what changed, and how many messages
    /// retention dropped. With `ack: None` (a parked pull re-checking) nothing is
    /// acknowledged.
    pub fn qst_pull(
        &mut self,
        ack: Option<&Ack<'_>>,
        max: usize,
        limits: &Limits,
    ) -> (Pulled, AckCounts, u64) {
        self.make_queue();
        let ChannelStore { queue, log, .. } = self;
        let Some(q) = queue.as_mut() else {
            return (Pulled::default(), AckCounts::default(), 0);
        };
        let mut counts = ack.map(|a| q.ack(log, a)).unwrap_or_default();
        let messages = q.take(log, max, limits.qst_max_tries, &mut counts);
        if counts != AckCounts::default() || (limits.qst_max_tries > 0 && !messages.is_empty()) {
            self.queue_version += 1;
        }
        let etag = messages
            .last()
            .map(|m| m.id.to_string())
            .or_else(|| q.acked_id().map(str::to_string));
        let dropped = self.retain(limits);
        (Pulled { messages, etag }, counts, dropped)
    }
}

/// What a durable log needs of a channel store: its state to log, and how to rebuild it
/// from the log at start-up (see `Hub::restore`). Replaying a record the store already
/// reflects changes nothing: a message at or below the clock is skipped, a queue state
/// replaces the one held, a clock or trim only moves forward.
impl ChannelStore {
    /// How many times the queue state changed (compare before and after an operation).
    pub fn queue_version(&self) -> u64 {
        self.queue_version
    }

    /// The queue, if the channel is one.
    pub fn queue(&self) -> Option<&Queue> {
        self.queue.as_ref()
    }

    /// The highest `seq` retention dropped (0: none).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every retained message, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.log.iter()
    }

    /// A snapshot's head of the channel: clock, retention mark and last pushed id.
    pub fn restore_head(&mut self, clock: u64, dropped: u64, last_id: Option<String>) {
        self.clock = self.clock.max(clock);
        self.dropped = self.dropped.max(dropped);
        if let Some(id) = last_id {
            self.last_id = Some(Id::from(id));
        }
    }

    /// The clock moved to at least `clock`.
    pub fn restore_clock(&mut self, clock: u64) {
        self.clock = self.clock.max(clock);
    }

    /// A logged queue state replaces the one held; retention then applies.
    pub fn restore_queue(&mut self, q: Queue, limits: &Limits) {
        self.queue = Some(q);
        self.retain(limits);
    }

    /// A logged message: appended if it is newer than the clock, then retention applies.
    pub fn restore_message(&mut self, m: Message, limits: &Limits) {
        if m.seq <= self.clock {
            return;
        }
        self.clock = m.seq;
        self.bytes += m.size();
        self.last_id = Some(m.id.clone());
        self.log.push_back(Arc::new(m));
        self.retain(limits);
    }

    /// Messages up to `upto` that no queue holds were dropped (memory budget, TTL).
    pub fn restore_trim(&mut self, upto: u64) -> u64 {
        self.expire(upto.saturating_add(1))
    }

    /// After replay: the queue's id index and pending count from the log.
    pub fn finish_restore(&mut self) {
        if let Some(q) = self.queue.as_mut() {
            q.rebuild(&self.log);
        }
    }
}
