//! The hub: every channel by name, shared by all workers.
//!
//! A channel has two halves, kept apart so that storage can change without touching delivery:
//!
//! - its **store** (`store::ChannelStore`): the ordered log of shared messages, the clock
//!   (PROTOCOLS.md 0.1), retention by count and bytes (0.2), the QST queue state and the last
//!   pushed id. This is where a durable log or a Redis-backed store plugs in (see `store`).
//! - its **waiters** (`waiters::Waiters`): which workers have waiters (Talk streams, parked
//!   long-polls) on it, how many, the Talk names streaming there, and how far its messages
//!   were posted to their mailboxes.
//!
//! Publishing is two phases. `append` stores a batch in the channel's store under its shard
//! lock and returns an `Appended`; `deliver` posts a `Mail` for each of its messages to the
//! mailbox of every worker with a waiter on the channel, then wakes each such mailbox once
//! (when it went from empty to non-empty), after the lock is released. `publish` does both in
//! one critical section. Between the two a storage backend can make the batch durable (an
//! fsync, a group commit), so that no subscriber hears of a message that a crash could lose;
//! readers (`read`, `qst_pull`, a subscriber's backlog) see it as soon as `append` returns.
//! Under `--fsync always` `publish` is exactly that: `append`, then `deliver` once the
//! storage reports the batch's record durable (`durable.rs`).
//!
//! Order: each worker's mail for a channel is in `seq` order, each message once, whatever
//! order two-phase callers deliver in. The channel remembers how far it posted
//! (`Waiters::delivered`); `deliver` posts, under the shard lock, every message of the log
//! above that and up to its own batch's last `seq`, so delivering a later batch also
//! releases every earlier one that is still waiting, and delivering the earlier one after
//! that posts nothing. A backend therefore must make a batch durable no later than the
//! batches appended after it on the same channel (what an append-only log synced in order
//! does). Messages retention drops before they are delivered are not posted (a reader with
//! a cursor sees `missed`).
//!
//! Locks are short: no syscall and no render under a shard lock. Lock order: shard, then
//! mailbox. The hub never touches a socket; a worker's wake-up is behind the `Notify` trait.

mod durable;
mod message;
pub mod queue;
mod redis;
pub use redis::Answer;
pub mod store;
pub mod waiters;

pub use message::{Address, Draft, Format, Id, Media, Message, Origin, Renders, SmallStr};
pub use queue::Ack;
pub use store::{ChannelStore, Pulled, Read};
pub use waiters::{workers_in, Mail, Mailbox, Notify, WaiterRef, Waiters};

use crate::sync::lock;
use std::cmp::Reverse;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;
use crate::storage::{Lsn, Storage};

/// Workers are named by a bit in a `u64` on each channel.
pub const MAX_WORKERS: usize = 64;
const SHARDS: usize = 64;

/// Why the hub refused a request. Each maps to one HTTP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubError {
    /// `--max-channels` reached: 503.
    TooManyChannels,
    /// `--max-streams-per-channel` reached: 503.
    TooManyWaiters,
    /// The QST queue cannot take the whole batch: 503 with `Retry-After`.
    QueueFull,
    /// `--retained-bytes` reached and only unacknowledged queue messages are left to drop:
    /// 503 with `Retry-After`.
    MemoryFull,
    /// The `--data-dir` log cannot take the change (full disk, I/O error, its buffer full):
    /// 503 with `Retry-After`.
    Storage,
    /// `--redis` is unreachable (or answered an error): 503 with `Retry-After`.
    Redis,
    /// A channel the server publishes on itself (`tidings/…`, e.g. the status page's): 403.
    Reserved,
}

/// Channels under this prefix are the server's own: only it publishes there.
pub const RESERVED_PREFIX: &str = "tidings/";

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HubError::TooManyChannels => "too many channels",
            HubError::TooManyWaiters => "too many subscribers on this channel",
            HubError::QueueFull => "queue full, retry later",
            HubError::MemoryFull => "server memory budget reached, retry later",
            HubError::Storage => "storage unavailable (full disk or I/O error), retry later",
            HubError::Redis => "Redis unavailable, retry later",
            HubError::Reserved => "channel reserved for the server's own messages",
        })
    }
}

/// The hub's limits (from `Config`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub channel_capacity: usize,
    pub channel_bytes: usize,
    pub channel_idle: Duration,
    pub max_channels: usize,
    pub max_waiters: usize,
    pub queue_capacity: usize,
    pub queue_bytes: usize,
    pub qst_max_tries: u32,
    /// The budget for every channel's retained messages together (`--retained-bytes`).
    pub retained_bytes: usize,
    /// Retained messages older than this are dropped (`--channel-ttl`; zero: never).
    pub channel_ttl: Duration,
}

impl Limits {
    /// The hub's limits as the configuration sets them.
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits {
            channel_capacity: c.channel_capacity,
            channel_bytes: c.channel_bytes,
            channel_idle: c.channel_idle,
            max_channels: c.max_channels,
            max_waiters: c.max_streams_per_channel,
            queue_capacity: c.queue_capacity,
            queue_bytes: c.queue_bytes,
            qst_max_tries: c.qst_max_tries,
            retained_bytes: c.retained_bytes,
            channel_ttl: c.channel_ttl,
        }
    }
}

/// A channel: its store and its waiters (see the module doc).
struct Channel {
    name: Arc<str>,
    store: ChannelStore,
    waiters: Waiters,
    last_active: Instant,
    /// When a subscriber last asked for the channel (nchan's "last requested").
    last_requested: Option<Instant>,
    /// Deleted (nchan's `DELETE`) and not published to or subscribed since: it reads as
    /// absent, though it stays while its clock or other protocols' waiters need it.
    deleted: bool,
    /// The channel has an entry in the hub's `oldest` heap.
    in_oldest: bool,
    /// With `--redis`: this node listens to the channel's messages in Redis.
    listening: bool,
}

impl Channel {
    fn new(name: Arc<str>) -> Channel {
        Channel {
            name,
            store: ChannelStore::new(),
            waiters: Waiters::default(),
            last_active: Instant::now(),
            last_requested: None,
            deleted: false,
            in_oldest: false,
            listening: false,
        }
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo {
            messages: self.store.len(),
            subscribers: self.waiters.len(),
            requested: self.last_requested.map(|t| t.elapsed()),
            last_seq: self.store.back_seq(),
        }
    }

    fn idle(&self) -> bool {
        self.store.is_empty() && self.waiters.is_empty()
    }

    /// Posts the channel's messages up to `upto` that were not posted yet; returns the
    /// workers to wake.
    fn deliver_upto(&mut self, mailboxes: &[Arc<Mailbox>], upto: u64) -> u64 {
        let Channel {
            name,
            store,
            waiters,
            ..
        } = self;
        if waiters.workers() == 0 {
            // Nobody to post to: skip the log search (it touches a message per step).
            waiters.mark_delivered(upto);
            return 0;
        }
        waiters.post(mailboxes, name, store.after(waiters.delivered()), upto)
    }
}

/// A batch stored by `Hub::append` and not yet posted to the channel's waiters: hand it to
/// `Hub::deliver`.
#[derive(Debug)]
#[must_use = "waiters hear of an appended batch only once it is delivered"]
pub struct Appended {
    channel: Arc<str>,
    messages: Vec<Arc<Message>>,
    /// The `Lsn` of the batch's last record (0: nothing logged).
    lsn: Lsn,
}

impl Appended {
    /// The channel the batch was stored in.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The stored messages, oldest first (a draft whose id a queue already held is not
    /// among them).
    pub fn messages(&self) -> &[Arc<Message>] {
        &self.messages
    }

    /// The log position of the batch's last record: durable once storage syncs past it.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The `seq` of the last stored message; `None` for a batch that stored nothing.
    pub fn last_seq(&self) -> Option<u64> {
        self.messages.last().map(|m| m.seq)
    }
}

/// What `Hub::publish_lsn` did.
#[derive(Debug)]
pub struct Posted {
    /// The stored messages (a draft whose id a queue already held is left out).
    pub stored: Vec<Arc<Message>>,
    /// The `Lsn` of the batch's last record (under `--fsync always`, wait for it).
    pub lsn: Lsn,
    /// The workers the batch was posted to (a bit each; 0 when its delivery waits for
    /// storage or Redis).
    pub workers: u64,
}

/// What nchan's publisher endpoint says about a channel (NCHAN.md 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Retained messages.
    pub messages: usize,
    /// Waiters of every protocol.
    pub subscribers: usize,
    /// Since a subscriber last asked for the channel; `None`: never.
    pub requested: Option<Duration>,
    /// The newest retained message's `seq`.
    pub last_seq: Option<u64>,
}

/// What `Hub::delete` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    /// No such channel.
    Missing,
    /// A QST queue: its unacknowledged messages are not deleted this way.
    Queue,
    /// Deleted: what the channel was.
    Done(ChannelInfo),
}

/// What `Hub::subscribe` returns to the new waiter.
#[derive(Debug)]
pub struct Subscribed {
    /// Deliver only messages with `seq` above this.
    pub cursor: u64,
    /// Retained messages after `since`, oldest first (empty without `since`).
    pub backlog: Vec<Arc<Message>>,
}

/// How a waiter subscribes.
pub struct Subscribe<'a> {
    pub worker: usize,
    pub token: usize,
    /// Start after this `seq` (backlog) instead of at the clock.
    pub since: Option<u64>,
    /// A Talk stream's name: a later stream of the same name replaces this one.
    pub talk_name: Option<&'a str>,
}

pub struct Hub {
    shards: Box<[Shard]>,
    mailboxes: Vec<Arc<Mailbox>>,
    limits: Limits,
    metrics: Arc<Metrics>,
    channel_count: AtomicU64,
    hasher: RandomState,
    id_prefix: u64,
    id_counter: AtomicU64,
    /// QST v1 `setaddress`: the address each account's gateway last reported.
    addresses: Mutex<HashMap<String, String>>,
    /// The Message item store's last logged state (with `--data-dir`), for snapshots.
    store_state: Mutex<Option<Arc<[u8]>>>,
    /// What every channel's retained messages count against `--retained-bytes`.
    retained: AtomicU64,
    /// The non-queue channels that retain messages, by the `seq` of their oldest message
    /// (a key may be older than the channel's front, never newer): the memory budget drops
    /// from the first. One entry per channel, so it is as large as the channel count.
    oldest: Mutex<OldestFirst>,
    /// Where every change is logged (`storage::Memory` without `--data-dir`).
    storage: Arc<dyn Storage>,
    /// Appended batches waiting for their record to be durable before delivery.
    deferred: Mutex<Vec<(Lsn, Appended)>>,
    /// Publishers waiting for their record to be durable: (`Lsn`, worker, token).
    sync_waits: Mutex<BinaryHeap<Reverse<(Lsn, usize, usize)>>>,
    /// With `--redis`: the engine and subscriber (`redis.rs`).
    redis: Option<redis::Link>,
}

/// Channels by the `seq` of their oldest retained message, oldest on top.
type OldestFirst = BinaryHeap<Reverse<(u64, Arc<str>)>>;

/// One lock's worth of channels.
type Shard = Mutex<HashMap<Arc<str>, Channel>>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// A hub in memory only.
    pub fn new(limits: Limits, mailboxes: Vec<Arc<Mailbox>>, metrics: Arc<Metrics>) -> Hub {
        let storage = Arc::new(crate::storage::Memory);
        Hub::with_storage(limits, mailboxes, metrics, storage)
    }

    /// A hub that logs every change to `storage` (call `restore` before serving).
    pub fn with_storage(
        limits: Limits,
        mailboxes: Vec<Arc<Mailbox>>,
        metrics: Arc<Metrics>,
        storage: Arc<dyn Storage>,
    ) -> Hub {
        assert!(mailboxes.len() <= MAX_WORKERS);
        let hasher = RandomState::new();
        let id_prefix = hasher.hash_one((std::process::id(), now_ms()));
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            mailboxes,
            limits,
            metrics,
            channel_count: AtomicU64::new(0),
            hasher,
            id_prefix,
            id_counter: AtomicU64::new(0),
            addresses: Mutex::new(HashMap::new()),
            store_state: Mutex::new(None),
            retained: AtomicU64::new(0),
            oldest: Mutex::new(BinaryHeap::new()),
            storage,
            deferred: Mutex::new(Vec::new()),
            sync_waits: Mutex::new(BinaryHeap::new()),
            redis: None,
        }
    }

    /// Records a change of a channel's footprint in the retained total.
    fn account(&self, before: usize, after: usize) {
        if after >= before {
            let d = (after - before) as u64;
            self.retained.fetch_add(d, Ordering::Relaxed);
            self.metrics.retained_bytes.add(d as i64);
        } else {
            let d = (before - after) as u64;
            self.retained.fetch_sub(d, Ordering::Relaxed);
            self.metrics.retained_bytes.add(-(d as i64));
        }
    }

    /// Gives a non-queue channel that retains messages its entry in the `oldest` heap.
    /// Called under the channel's shard lock (lock order: shard, then the heap).
    fn note_oldest(&self, ch: &mut Channel) {
        if ch.in_oldest || ch.store.is_queue() {
            return;
        }
        if let Some(front) = ch.store.front_seq() {
            lock(&self.oldest).push(Reverse((front, ch.name.clone())));
            ch.in_oldest = true;
        }
    }

    /// Makes room for `incoming` more bytes within `--retained-bytes`: drops the oldest
    /// retained messages of non-queue channels first. `MemoryFull` when only messages that
    /// queues still hold are left. Called with no lock held.
    fn make_room(&self, incoming: usize) -> Result<(), HubError> {
        let budget = self.limits.retained_bytes as u64;
        while self.retained.load(Ordering::Relaxed) + incoming as u64 > budget {
            let popped = lock(&self.oldest).pop();
            let Some(Reverse((seq, name))) = popped else {
                self.metrics.memory_refusals.inc();
                return Err(HubError::MemoryFull);
            };
            self.with_existing(&name, |ch| {
                ch.in_oldest = false;
                if ch.store.is_queue() {
                    return;
                }
                let before = ch.store.footprint();
                if ch.store.front_seq() == Some(seq) && ch.store.evict_oldest() {
                    self.metrics.messages_evicted.inc();
                    self.log_trim(ch, seq);
                }
                self.account(before, ch.store.footprint());
                // Back in the heap by its (new) oldest message, if it has one.
                self.note_oldest(ch);
            });
        }
        Ok(())
    }

    fn shard(&self, name: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(name) as usize) % SHARDS]
    }

    /// A fresh message id, UUID-shaped (version 4 layout): the server's random prefix and a
    /// counter, mixed.
    pub fn new_id(&self) -> String {
        self.new_message_id().to_string()
    }

    /// `new_id` as a message holds it: written digit by digit, without an allocation, as
    /// every publish without an id of its own makes one.
    fn new_message_id(&self) -> Id {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let mut h = DefaultHasher::new();
        (self.id_prefix, n).hash(&mut h);
        Id::uuid_shaped(self.id_prefix, n, h.finish())
    }

    /// Runs `f` on the channel, creating it if needed.
    fn with_channel<R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Channel) -> R,
    ) -> Result<R, HubError> {
        let mut shard = lock(self.shard(name));
        if let Some(ch) = shard.get_mut(name) {
            return Ok(f(ch));
        }
        if self.channel_count.load(Ordering::Relaxed) as usize >= self.limits.max_channels {
            self.metrics.channels_refused.inc();
            return Err(HubError::TooManyChannels);
        }
        self.channel_count.fetch_add(1, Ordering::Relaxed);
        self.metrics.channels.inc();
        let name: Arc<str> = Arc::from(name);
        let ch = shard
            .entry(name.clone())
            .or_insert_with(|| Channel::new(name));
        Ok(f(ch))
    }

    /// Runs `f` on the channel if it exists.
    fn with_existing<R>(&self, name: &str, f: impl FnOnce(&mut Channel) -> R) -> Option<R> {
        lock(self.shard(name)).get_mut(name).map(f)
    }

    /// Makes stored messages of a batch of drafts: ids and times decided, `seq` not yet.
    /// Everything that allocates per message happens here, before any lock.
    fn prepare(&self, drafts: Vec<Draft>, origin: Origin) -> Vec<Message> {
        let now_secs = (now_ms() / 1000) as i64;
        drafts
            .into_iter()
            .map(|mut d| {
                let id = d.id.take().map_or_else(|| self.new_message_id(), Id::from);
                let when = d.when.unwrap_or(now_secs);
                Message::with_id(0, id, when, origin, d)
            })
            .collect()
    }

    /// Stores a batch in the channel's store under its shard lock, and runs `then` on the
    /// channel and the stored messages in the same critical section.
    fn append_then<R>(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
        then: impl FnOnce(&mut Channel, &[Arc<Message>]) -> R,
    ) -> Result<(Vec<Arc<Message>>, R, Lsn), HubError> {
        if origin != Origin::Server && channel.starts_with(RESERVED_PREFIX) {
            return Err(HubError::Reserved);
        }
        if !self.storage.writable() {
            self.metrics.storage_refusals.inc();
            return Err(HubError::Storage);
        }
        let prepared = self.prepare(drafts, origin);
        let incoming = prepared
            .iter()
            .map(|m| m.size() + store::MESSAGE_OVERHEAD)
            .sum();
        self.make_room(incoming)?;
        let (stored, after, lsn) = self.with_channel(channel, |ch| {
            let before = ch.store.footprint();
            let version = ch.store.queue_version();
            let appended = ch.store.append(prepared, queue, &self.limits, now_ms());
            self.account(before, ch.store.footprint());
            // The queue state first (it may have been made even for a refused batch).
            let mut lsn = self.log_queue(ch, version);
            let (stored, dropped) = match appended {
                Ok(s) => s,
                Err(e) => {
                    if e == HubError::QueueFull {
                        self.metrics.queue_full.inc();
                    }
                    return Err(e);
                }
            };
            // The server's own messages (the status page's) are not kept across restarts.
            if self.storage.keeps() && origin != Origin::Server {
                for m in &stored {
                    lsn = self.log_message(&ch.name, m);
                }
                if lsn == 0 {
                    lsn = self.log_mark(ch);
                }
            }
            ch.last_active = Instant::now();
            ch.deleted = false;
            self.note_oldest(ch);
            self.metrics.messages_dropped_retention.add(dropped);
            let after = then(ch, &stored);
            Ok((stored, after, lsn))
        })??;
        self.metrics.messages_published.add(stored.len() as u64);
        Ok((stored, after, lsn))
    }

    /// Stores a batch of drafts in a channel, all or nothing, without telling its waiters:
    /// the first phase of `publish`. The returned batch must go to `deliver` (see the
    /// module doc for what may happen in between, and for the order guarantee). A draft
    /// whose id a queue already holds is not stored twice and is left out.
    ///
    /// `queue` marks the channel as a QST queue first (PROTOCOLS.md 0.2); a queue refuses a
    /// batch that would take it past `--queue-capacity` with `QueueFull`, storing nothing.
    pub fn append(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
    ) -> Result<Appended, HubError> {
        if drafts.is_empty() && !queue {
            return Ok(Appended {
                channel: Arc::from(channel),
                messages: Vec::new(),
                lsn: 0,
            });
        }
        let (messages, name, lsn) =
            self.append_then(channel, drafts, origin, queue, |ch, _| ch.name.clone())?;
        Ok(Appended {
            channel: name,
            messages,
            lsn,
        })
    }

    /// Posts an appended batch to the waiters of its channel — every message of the channel
    /// up to the batch's last `seq` not posted yet, in `seq` order — and wakes their workers
    /// once each: the second phase of `publish`. Returns the batch's messages.
    pub fn deliver(&self, appended: Appended) -> Vec<Arc<Message>> {
        let Appended {
            channel, messages, ..
        } = appended;
        if let Some(upto) = messages.last().map(|m| m.seq) {
            let wake = self
                .with_existing(&channel, |ch| ch.deliver_upto(&self.mailboxes, upto))
                .unwrap_or(0);
            self.wake(wake);
        }
        messages
    }

    /// Stores a batch of drafts in a channel, all or nothing, and posts them to every worker
    /// with waiters there: `append` and `deliver` in one critical section. Returns the stored
    /// messages (a draft whose id a queue already holds is not stored twice and is left out).
    ///
    /// `queue` marks the channel as a QST queue first (PROTOCOLS.md 0.2); a queue refuses a
    /// batch that would take it past `--queue-capacity` with `QueueFull`, storing nothing.
    pub fn publish(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
    ) -> Result<Vec<Arc<Message>>, HubError> {
        self.publish_lsn(channel, drafts, origin, queue)
            .map(|p| p.stored)
    }

    /// `publish`, also returning the `Lsn` of the batch's last record. Under `--fsync
    /// always` (`waits_for_storage`) the batch is delivered only once that record is
    /// durable, and the publisher must wait for it too (`await_durable`) before answering.
    pub fn publish_lsn(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
    ) -> Result<Posted, HubError> {
        let none = |stored, lsn| Posted {
            stored,
            lsn,
            workers: 0,
        };
        if drafts.is_empty() && !queue {
            return Ok(none(Vec::new(), 0));
        }
        if self.shared_in_redis(channel) {
            let stored = self.publish_redis(channel, drafts, origin, queue, None)?;
            return Ok(none(stored, 0));
        }
        if self.storage.waits() {
            let appended = self.append(channel, drafts, origin, queue)?;
            let out = none(appended.messages.clone(), appended.lsn);
            self.defer(appended);
            return Ok(out);
        }
        let (stored, workers, lsn) =
            self.append_then(channel, drafts, origin, queue, |ch, stored| {
                match stored.last() {
                    Some(last) => ch.deliver_upto(&self.mailboxes, last.seq),
                    None => 0,
                }
            })?;
        self.wake(workers);
        Ok(Posted {
            stored,
            lsn,
            workers,
        })
    }

    /// As `publish` for one draft, returning the channel's info taken in the same critical
    /// section as the delivery: its `subscribers` are the waiters the message was posted to
    /// (nchan's 201/202 split), not what is left once their workers have answered.
    /// Also returns the `Lsn` of its record, as `publish_lsn` (under `--fsync always` the
    /// delivery waits for it, and so must the publisher), and the workers it was posted to.
    pub fn publish_with_info(
        &self,
        channel: &str,
        draft: Draft,
        origin: Origin,
    ) -> Result<(ChannelInfo, Lsn, u64), HubError> {
        if self.shared_in_redis(channel) {
            return Ok((self.publish_redis_with_info(channel, draft, None)?, 0, 0));
        }
        if self.storage.waits() {
            let (messages, (name, info), lsn) =
                self.append_then(channel, vec![draft], origin, false, |ch, _| {
                    (ch.name.clone(), ch.info())
                })?;
            let appended = Appended {
                channel: name,
                messages,
                lsn,
            };
            self.defer(appended);
            return Ok((info, lsn, 0));
        }
        let (_, (wake, info), lsn) =
            self.append_then(channel, vec![draft], origin, false, |ch, stored| {
                let wake = match stored.last() {
                    Some(last) => ch.deliver_upto(&self.mailboxes, last.seq),
                    None => 0,
                };
                (wake, ch.info())
            })?;
        self.wake(wake);
        Ok((info, lsn, wake))
    }

    fn wake(&self, workers: u64) {
        for w in workers_in(workers) {
            if let Some(mailbox) = self.mailboxes.get(w) {
                self.metrics.mailbox_wakes.inc();
                mailbox.wake();
            }
        }
    }

    /// Posts mail to one worker and wakes it if needed.
    pub fn send(&self, worker: usize, mail: Mail) {
        if let Some(mailbox) = self.mailboxes.get(worker) {
            if mailbox.post(mail) {
                self.metrics.mailbox_wakes.inc();
                mailbox.wake();
            }
        }
    }

    /// Tells every worker to shut down.
    pub fn shutdown_all(&self) {
        for w in 0..self.mailboxes.len() {
            self.send(w, Mail::Shutdown);
        }
    }

    /// Registers a waiter on a channel. From now on every message stored there is posted to
    /// the waiter's worker. A Talk name already streaming on the channel is replaced: its
    /// worker gets `EndStream`.
    pub fn subscribe(&self, channel: &str, sub: Subscribe<'_>) -> Result<Subscribed, HubError> {
        let mut end: Option<WaiterRef> = None;
        let me = WaiterRef {
            worker: sub.worker,
            token: sub.token,
        };
        let shared = self.shared_in_redis(channel);
        let mut first = false;
        let result = self.with_channel(channel, |ch| {
            end = ch.waiters.add(me, sub.talk_name, self.limits.max_waiters)?;
            ch.last_active = Instant::now();
            ch.last_requested = Some(ch.last_active);
            ch.deleted = false;
            first = shared && !ch.listening;
            ch.listening |= shared;
            Ok(match sub.since {
                None if shared => Subscribed {
                    cursor: Hub::start_after(ch.store.clock()),
                    backlog: Vec::new(),
                },
                None => {
                    let before = ch.store.clock();
                    let cursor = ch.store.sync(now_ms());
                    self.log_clock(ch, before);
                    Subscribed {
                        cursor,
                        backlog: Vec::new(),
                    }
                }
                Some(since) => {
                    let backlog: Vec<_> = ch.store.after(since).cloned().collect();
                    let cursor = backlog.last().map_or(since, |m| m.seq);
                    Subscribed { cursor, backlog }
                }
            })
        })?;
        self.listen(channel, first);
        if let Some(old) = end {
            self.metrics.streams_replaced.inc();
            self.send(old.worker, Mail::EndStream { token: old.token });
        }
        result
    }

    /// Removes a waiter. `last_on_worker`: the worker has no other waiter on this channel,
    /// so it stops getting its mail. A Talk name is released only if it still names this
    /// waiter (a replacing stream keeps it).
    pub fn unsubscribe(
        &self,
        channel: &str,
        me: WaiterRef,
        last_on_worker: bool,
        talk_name: Option<&str>,
    ) {
        self.with_existing(channel, |ch| {
            ch.waiters.remove(me, last_on_worker, talk_name);
            ch.last_active = Instant::now();
        });
    }

    /// Messages with `seq > cursor`, oldest first, at most `max`; the clock; whether the
    /// cursor fell behind retention. A missing channel reads as empty with clock 0.
    pub fn read(&self, channel: &str, cursor: u64, max: usize) -> Read {
        self.with_existing(channel, |ch| ch.store.read(cursor, max))
            .unwrap_or_default()
    }

    /// The channel clock after advancing it to now (comet `sync`). Creates the channel.
    pub fn sync(&self, channel: &str) -> Result<u64, HubError> {
        if self.shared_in_redis(channel) {
            // Only Redis moves a shared channel's clock (comet's `sync` asks it there).
            return Ok(self.clock_now(channel));
        }
        self.with_channel(channel, |ch| {
            ch.last_active = Instant::now();
            let before = ch.store.clock();
            let clock = ch.store.sync(now_ms());
            self.log_clock(ch, before);
            clock
        })
    }

    /// Where a reader that wants only what comes next starts: the channel's clock (0 for a
    /// channel that does not exist); with `--redis`, see `start_after`.
    pub fn clock_now(&self, channel: &str) -> u64 {
        let held = self.with_existing(channel, |ch| ch.store.clock());
        match self.shared_in_redis(channel) {
            true => Hub::start_after(held.unwrap_or(0)),
            false => held.unwrap_or(0),
        }
    }

    /// The id of the last message pushed into the channel, if any.
    pub fn last_id(&self, channel: &str) -> Option<String> {
        self.with_existing(channel, |ch| ch.store.last_id().map(Id::to_string))
            .flatten()
    }

    /// A QST pull: applies the acknowledgements, then takes the pending messages, oldest
    /// first, at most `max`. Makes the channel a queue. With `ack: None` (a parked pull
    /// re-checking) nothing is acknowledged.
    pub fn qst_pull(
        &self,
        channel: &str,
        ack: Option<&Ack<'_>>,
        max: usize,
    ) -> Result<Pulled, HubError> {
        if ack.is_some_and(|a| !a.is_empty()) && !self.storage.writable() {
            self.metrics.storage_refusals.inc();
            return Err(HubError::Storage);
        }
        self.with_channel(channel, |ch| {
            ch.last_active = Instant::now();
            let before = ch.store.footprint();
            let version = ch.store.queue_version();
            let (pulled, counts, dropped) = ch.store.qst_pull(ack, max, &self.limits);
            self.log_queue(ch, version);
            self.account(before, ch.store.footprint());
            self.metrics.qst_acked.add(counts.acked);
            self.metrics.qst_failed.add(counts.failed);
            self.metrics.qst_expired.add(counts.expired);
            self.metrics.messages_dropped_retention.add(dropped);
            pulled
        })
    }

    /// Stores the address a v1 gateway reported for its account. At most `--max-channels`
    /// accounts are remembered; past that a new account is refused.
    pub fn set_address(&self, account: &str, address: &str) -> Result<(), HubError> {
        if !self.storage.writable() {
            self.metrics.storage_refusals.inc();
            return Err(HubError::Storage);
        }
        let mut addresses = lock(&self.addresses);
        if !addresses.contains_key(account) && addresses.len() >= self.limits.max_channels {
            return Err(HubError::TooManyChannels);
        }
        if addresses.get(account).map(String::as_str) != Some(address) {
            self.log_address(account, address);
        }
        addresses.insert(account.to_string(), address.to_string());
        Ok(())
    }

    /// The address a v1 gateway last reported for its account.
    pub fn address(&self, account: &str) -> Option<String> {
        lock(&self.addresses).get(account).cloned()
    }

    /// Drops retained messages older than `--channel-ttl` (those a queue holds stay), then
    /// removes channels idle past `--channel-idle`: no messages, no waiters, no queue.
    /// Returns how many channels were removed.
    pub fn sweep(&self) -> usize {
        self.retry_catch_ups();
        let mut removed = 0;
        let mut unheard = Vec::new();
        let ttl = self.limits.channel_ttl.as_millis() as u64;
        let expire_before = if ttl > 0 {
            now_ms().saturating_sub(ttl)
        } else {
            0
        };
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, ch| {
                if ch.store.front_seq().is_some_and(|s| s < expire_before) {
                    let footprint = ch.store.footprint();
                    let n = ch.store.expire(expire_before);
                    self.account(footprint, ch.store.footprint());
                    self.metrics.messages_expired.add(n);
                    if n > 0 {
                        self.log_trim(ch, expire_before - 1);
                    }
                }
                // With --redis the messages held are a cache of Redis's: a channel with no
                // waiter left here is dropped with them, and no longer listened to.
                let idle = match ch.listening {
                    true => ch.waiters.is_empty(),
                    false => ch.idle(),
                };
                let keep = !(idle && ch.last_active.elapsed() >= self.limits.channel_idle);
                if !keep && ch.listening {
                    self.account(ch.store.footprint(), 0);
                    unheard.push(ch.name.clone());
                }
                keep
            });
            removed += before - shard.len();
        }
        for name in unheard {
            self.stop_listening(&name);
        }
        if removed > 0 {
            self.channel_count
                .fetch_sub(removed as u64, Ordering::Relaxed);
            for _ in 0..removed {
                self.metrics.channels.dec();
            }
        }
        removed
    }

    /// What nchan's publisher says about a channel; `None` if there is no such channel.
    pub fn info(&self, channel: &str) -> Option<ChannelInfo> {
        self.with_existing(channel, |ch| (!ch.deleted).then(|| ch.info()))
            .flatten()
    }

    /// Deletes a channel's retained messages and tells the workers with waiters there
    /// (`Mail::Deleted`), whose nchan subscribers end with `410 Gone`; the waiters of other
    /// protocols stay. A QST queue is refused: its messages are only ever acknowledged.
    pub fn delete(&self, channel: &str) -> Deleted {
        let done = self.with_existing(channel, |ch| {
            if ch.deleted {
                return Err(Deleted::Missing);
            }
            if ch.store.is_queue() {
                return Err(Deleted::Queue);
            }
            let info = ch.info();
            let footprint = ch.store.footprint();
            ch.store.clear();
            self.log_trim(ch, ch.store.clock());
            self.account(footprint, ch.store.footprint());
            ch.waiters.mark_delivered(ch.store.clock());
            ch.last_active = Instant::now();
            ch.last_requested = None;
            ch.deleted = true;
            Ok((info, ch.name.clone(), ch.waiters.workers()))
        });
        match done {
            None => Deleted::Missing,
            Some(Err(d)) => d,
            Some(Ok((info, name, workers))) => {
                for w in workers_in(workers) {
                    self.send(
                        w,
                        Mail::Deleted {
                            channel: name.clone(),
                        },
                    );
                }
                Deleted::Done(info)
            }
        }
    }

    /// Caps the messages an existing channel retains at `keep` (or `--channel-capacity` if
    /// that is fewer), from its next append on, for as long as the channel lives. For a
    /// channel whose history nobody wants, such as the server's status snapshots: a new
    /// subscriber gets the latest (`keep` = 1) rather than a backlog. Does nothing to a
    /// channel that does not exist.
    pub fn cap_retention(&self, channel: &str, keep: usize) {
        self.with_existing(channel, |ch| ch.store.cap_retention(keep));
    }

    /// Number of channels in the hub.
    pub fn channel_count(&self) -> usize {
        self.channel_count.load(Ordering::Relaxed) as usize
    }
}

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
