//! The hub: every channel by name, shared by all workers.
//!
//! A channel is an ordered log of shared messages with a clock (PROTOCOLS.md 0.1), retention by
//! count and bytes (0.2), and the set of workers that have waiters (Talk streams, parked
//! long-polls) on it. Publishing appends under the channel's shard lock and posts a `Mail` to
//! the mailbox of every worker with a waiter there; each mailbox is woken once per batch (when
//! it goes from empty to non-empty), after the lock is released.
//!
//! Locks are short: no syscall and no render under a shard lock. Lock order: shard, then
//! mailbox. The hub never touches a socket; a worker's wake-up is behind the `Notify` trait.

mod message;
pub mod queue;

pub use message::{Draft, Format, Id, Message, Origin, Renders};

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;
pub use queue::Ack;
use queue::Queue;

/// Workers are named by a bit in a `u64` on each channel.
pub const MAX_WORKERS: usize = 64;
const SHARDS: usize = 64;

/// Wakes a worker whose mailbox has new mail. Implemented by the reactor over `mio::Waker`.
pub trait Notify: Send + Sync {
    fn notify(&self);
}

/// A waiter somewhere in the server: the worker that owns it and its connection token there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaiterRef {
    pub worker: usize,
    pub token: usize,
}

/// What a worker finds in its mailbox.
#[derive(Debug)]
pub enum Mail {
    /// A message was stored in a channel this worker has waiters on.
    Deliver {
        channel: Arc<str>,
        msg: Arc<Message>,
    },
    /// End this Talk stream: a newer pull of the same name replaced it.
    EndStream { token: usize },
    /// The server is shutting down.
    Shutdown,
}

/// One worker's mailbox: mail posted by any thread, drained by the worker.
pub struct Mailbox {
    mail: Mutex<Vec<Mail>>,
    notify: Box<dyn Notify>,
}

impl Mailbox {
    pub fn new(notify: Box<dyn Notify>) -> Mailbox {
        Mailbox {
            mail: Mutex::new(Vec::new()),
            notify,
        }
    }

    /// Posts mail; returns true when the mailbox was empty, i.e. the worker must be woken.
    fn post(&self, mail: Mail) -> bool {
        let mut box_ = lock(&self.mail);
        box_.push(mail);
        box_.len() == 1
    }

    /// Takes all mail, swapping in `spare` (an empty vector whose capacity is reused).
    pub fn take(&self, spare: &mut Vec<Mail>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut *lock(&self.mail), spare);
    }
}

/// Why the hub refused a request. Each maps to one HTTP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubError {
    /// `--max-channels` reached: 503.
    TooManyChannels,
    /// `--max-streams-per-channel` reached: 503.
    TooManyWaiters,
    /// The QST queue cannot take the whole batch: 503 with `Retry-After`.
    QueueFull,
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HubError::TooManyChannels => "too many channels",
            HubError::TooManyWaiters => "too many subscribers on this channel",
            HubError::QueueFull => "queue full, retry later",
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
}

pub struct Channel {
    name: Arc<str>,
    log: VecDeque<Arc<Message>>,
    bytes: usize,
    clock: u64,
    /// The highest `seq` retention ever dropped (0: none).
    dropped: u64,
    /// Bit `w` is set while worker `w` has at least one waiter here.
    workers: u64,
    waiters: usize,
    talk_names: HashMap<Box<str>, WaiterRef>,
    last_id: Option<Id>,
    last_active: Instant,
    queue: Option<Queue>,
}

impl Channel {
    fn new(name: Arc<str>) -> Channel {
        Channel {
            name,
            log: VecDeque::new(),
            bytes: 0,
            clock: 0,
            dropped: 0,
            workers: 0,
            waiters: 0,
            talk_names: HashMap::new(),
            last_id: None,
            last_active: Instant::now(),
            queue: None,
        }
    }

    /// Advances the clock to at least `now_ms` and returns it (PROTOCOLS.md 0.1, `sync`).
    fn sync(&mut self, now_ms: u64) -> u64 {
        self.clock = self.clock.max(now_ms);
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

    /// Drops the oldest messages past the count and byte budgets, except those a queue
    /// still holds unacknowledged. Returns how many were dropped.
    fn retain(&mut self, limits: &Limits) -> u64 {
        let mut dropped = 0;
        while self.log.len() > limits.channel_capacity || self.bytes > limits.channel_bytes {
            let Some(oldest) = self.log.front() else {
                break;
            };
            if self.queue.as_ref().is_some_and(|q| q.holds(oldest.seq)) {
                break;
            }
            self.bytes -= oldest.size();
            self.dropped = self.dropped.max(oldest.seq);
            if let Some(q) = self.queue.as_mut() {
                q.forget_id(&oldest.id);
            }
            self.log.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Makes the channel a QST queue, keeping what it holds now and everything later.
    fn make_queue(&mut self) {
        if self.queue.is_none() {
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
        let mut kept: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut keep = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            let h = queue::id_hash(&m.id);
            let in_log = q.may_hold_id(h) && self.log.iter().any(|old| old.id == m.id);
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

    fn idle(&self) -> bool {
        self.log.is_empty() && self.waiters == 0 && self.queue.is_none()
    }
}

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
}

/// One lock's worth of channels.
type Shard = Mutex<HashMap<Arc<str>, Channel>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a hub lock is a bug, but the data stays consistent enough
    // (every mutation is a few lines), so keep serving rather than poisoning every worker.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    pub fn new(limits: Limits, mailboxes: Vec<Arc<Mailbox>>, metrics: Arc<Metrics>) -> Hub {
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
        }
    }

    fn shard(&self, name: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(name) as usize) % SHARDS]
    }

    /// A new globally unique message id, UUID-shaped.
    pub fn new_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let mut h = DefaultHasher::new();
        (self.id_prefix, n).hash(&mut h);
        let r = h.finish();
        let p = self.id_prefix;
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (p >> 32) as u32,
            (p >> 16) as u16,
            (p & 0xfff) as u16,
            0x8000 | ((r >> 48) as u16 & 0x3fff),
            (n ^ (r << 24)) & 0xffff_ffff_ffff
        )
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

    /// Stores a batch of drafts in a channel, all or nothing, and posts them to every worker
    /// with waiters there. Returns the stored messages (a draft whose id a queue already
    /// holds is not stored twice and is left out).
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
        if drafts.is_empty() && !queue {
            return Ok(Vec::new());
        }
        let now_secs = (now_ms() / 1000) as i64;
        // Everything that allocates per message happens before the lock.
        let mut prepared: Vec<Message> = drafts
            .into_iter()
            .map(|mut d| {
                let id = d.id.take().unwrap_or_else(|| self.new_id());
                let when = d.when.unwrap_or(now_secs);
                Message::new(0, id, when, origin, d)
            })
            .collect();
        let mut wake = 0u64;
        let stored =
            self.with_channel(channel, |ch| -> Result<Vec<Arc<Message>>, HubError> {
                if queue {
                    ch.make_queue();
                }
                ch.drop_known_ids(&mut prepared);
                if let Some(q) = ch.queue.as_ref() {
                    let bytes: usize = prepared.iter().map(Message::size).sum();
                    if q.pending() + prepared.len() > self.limits.queue_capacity
                        || ch.bytes + bytes > self.limits.queue_bytes
                    {
                        self.metrics.queue_full.inc();
                        return Err(HubError::QueueFull);
                    }
                }
                let now = now_ms();
                let mut stored = Vec::with_capacity(prepared.len());
                for mut m in prepared.drain(..) {
                    m.seq = ch.tick(now);
                    ch.bytes += m.size();
                    if let Some(q) = ch.queue.as_mut() {
                        q.push(&m);
                    }
                    let m = Arc::new(m);
                    ch.log.push_back(m.clone());
                    stored.push(m);
                }
                if let Some(last) = stored.last() {
                    ch.last_id = Some(last.id.clone());
                }
                ch.last_active = Instant::now();
                let dropped = ch.retain(&self.limits);
                self.metrics.messages_dropped_retention.add(dropped);
                wake = self.post_deliveries(ch, &stored);
                Ok(stored)
            })??;
        self.metrics.messages_published.add(stored.len() as u64);
        self.wake(wake);
        Ok(stored)
    }

    /// Posts `Deliver` mail for each message to each worker with waiters on the channel.
    /// Returns the workers to wake. Called under the shard lock, so mail keeps `seq` order.
    fn post_deliveries(&self, ch: &Channel, msgs: &[Arc<Message>]) -> u64 {
        let mut wake = 0u64;
        let mut workers = ch.workers;
        while workers != 0 {
            let w = workers.trailing_zeros() as usize;
            workers &= workers - 1;
            let Some(mailbox) = self.mailboxes.get(w) else {
                continue;
            };
            for m in msgs {
                let mail = Mail::Deliver {
                    channel: ch.name.clone(),
                    msg: m.clone(),
                };
                if mailbox.post(mail) {
                    wake |= 1 << w;
                }
            }
        }
        wake
    }

    fn wake(&self, mut workers: u64) {
        while workers != 0 {
            let w = workers.trailing_zeros() as usize;
            workers &= workers - 1;
            if let Some(mailbox) = self.mailboxes.get(w) {
                self.metrics.mailbox_wakes.inc();
                mailbox.notify.notify();
            }
        }
    }

    /// Posts mail to one worker and wakes it if needed.
    pub fn send(&self, worker: usize, mail: Mail) {
        if let Some(mailbox) = self.mailboxes.get(worker) {
            if mailbox.post(mail) {
                self.metrics.mailbox_wakes.inc();
                mailbox.notify.notify();
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
        let result = self.with_channel(channel, |ch| {
            if ch.waiters >= self.limits.max_waiters {
                return Err(HubError::TooManyWaiters);
            }
            ch.waiters += 1;
            ch.workers |= 1 << sub.worker;
            ch.last_active = Instant::now();
            if let Some(name) = sub.talk_name {
                let me = WaiterRef {
                    worker: sub.worker,
                    token: sub.token,
                };
                end = ch.talk_names.insert(name.into(), me);
            }
            let now = now_ms();
            Ok(match sub.since {
                None => Subscribed {
                    cursor: ch.sync(now),
                    backlog: Vec::new(),
                },
                Some(since) => {
                    let backlog: Vec<_> = ch.log.range(ch.first_after(since)..).cloned().collect();
                    let cursor = backlog.last().map_or(since, |m| m.seq);
                    Subscribed { cursor, backlog }
                }
            })
        })?;
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
            ch.waiters = ch.waiters.saturating_sub(1);
            if last_on_worker {
                ch.workers &= !(1 << me.worker);
            }
            if let Some(name) = talk_name {
                if ch.talk_names.get(name) == Some(&me) {
                    ch.talk_names.remove(name);
                }
            }
            ch.last_active = Instant::now();
        });
    }

    /// Messages with `seq > cursor`, oldest first, at most `max`; the clock; whether the
    /// cursor fell behind retention. A missing channel reads as empty with clock 0.
    pub fn read(&self, channel: &str, cursor: u64, max: usize) -> Read {
        self.with_existing(channel, |ch| {
            let start = ch.first_after(cursor);
            Read {
                messages: ch.log.range(start..).take(max).cloned().collect(),
                clock: ch.clock,
                missed: ch.dropped > cursor,
            }
        })
        .unwrap_or_default()
    }

    /// The channel clock after advancing it to now (comet `sync`). Creates the channel.
    pub fn sync(&self, channel: &str) -> Result<u64, HubError> {
        self.with_channel(channel, |ch| {
            ch.last_active = Instant::now();
            ch.sync(now_ms())
        })
    }

    /// The id of the last message pushed into the channel, if any.
    pub fn last_id(&self, channel: &str) -> Option<String> {
        self.with_existing(channel, |ch| ch.last_id.as_ref().map(Id::to_string))
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
        self.with_channel(channel, |ch| {
            ch.make_queue();
            ch.last_active = Instant::now();
            let Channel { queue, log, .. } = &mut *ch;
            let Some(q) = queue.as_mut() else {
                return Pulled::default();
            };
            let mut counts = ack.map(|a| q.ack(log, a)).unwrap_or_default();
            let messages = q.take(log, max, self.limits.qst_max_tries, &mut counts);
            let etag = messages
                .last()
                .map(|m| m.id.to_string())
                .or_else(|| q.acked_id().map(str::to_string));
            self.metrics.qst_acked.add(counts.acked);
            self.metrics.qst_failed.add(counts.failed);
            self.metrics.qst_expired.add(counts.expired);
            let dropped = ch.retain(&self.limits);
            self.metrics.messages_dropped_retention.add(dropped);
            Pulled { messages, etag }
        })
    }

    /// Stores the address a v1 gateway reported for its account. At most `--max-channels`
    /// accounts are remembered; past that a new account is refused.
    pub fn set_address(&self, account: &str, address: &str) -> Result<(), HubError> {
        let mut addresses = lock(&self.addresses);
        if !addresses.contains_key(account) && addresses.len() >= self.limits.max_channels {
            return Err(HubError::TooManyChannels);
        }
        addresses.insert(account.to_string(), address.to_string());
        Ok(())
    }

    /// The address a v1 gateway last reported for its account.
    pub fn address(&self, account: &str) -> Option<String> {
        lock(&self.addresses).get(account).cloned()
    }

    /// Removes channels idle past `--channel-idle`: no messages, no waiters, no queue.
    /// Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, ch| {
                !(ch.idle() && ch.last_active.elapsed() >= self.limits.channel_idle)
            });
            removed += before - shard.len();
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

    /// Number of channels in the hub.
    pub fn channel_count(&self) -> usize {
        self.channel_count.load(Ordering::Relaxed) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(Arc<AtomicUsize>);
    impl Notify for Count {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn limits() -> Limits {
        Limits {
            channel_capacity: 3,
            channel_bytes: 1 << 20,
            channel_idle: Duration::from_secs(0),
            max_channels: 10,
            max_waiters: 10,
            queue_capacity: 5,
            queue_bytes: 1 << 20,
            qst_max_tries: 0,
        }
    }

    fn hub(workers: usize) -> (Hub, Vec<Arc<Mailbox>>, Vec<Arc<AtomicUsize>>) {
        let counts: Vec<_> = (0..workers)
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        let boxes: Vec<_> = counts
            .iter()
            .map(|c| Arc::new(Mailbox::new(Box::new(Count(c.clone())))))
            .collect();
        (
            Hub::new(limits(), boxes.clone(), Arc::new(Metrics::default())),
            boxes,
            counts,
        )
    }

    fn put(h: &Hub, ch: &str, body: &str) -> Arc<Message> {
        h.publish(ch, vec![Draft::with_body(body)], Origin::Comet, false)
            .unwrap()
            .pop()
            .unwrap()
    }

    #[test]
    fn seq_is_strictly_increasing_and_above_sync() {
        let (h, _, _) = hub(1);
        let mut last = h.sync("c").unwrap();
        for i in 0..100 {
            let m = put(&h, "c", &i.to_string());
            assert!(m.seq > last);
            last = m.seq;
            let s = h.sync("c").unwrap();
            assert!(s >= last);
            last = s;
        }
    }

    #[test]
    fn retention_drops_oldest_and_reports_missed() {
        let (h, _, _) = hub(1);
        let first = put(&h, "c", "a");
        for b in ["b", "c", "d"] {
            put(&h, "c", b);
        }
        let r = h.read("c", 0, 10);
        assert_eq!(r.messages.len(), 3);
        assert_eq!(&*r.messages[0].body, b"b");
        assert!(r.missed);
        let r = h.read("c", first.seq, 10);
        assert!(!r.missed);
        assert_eq!(r.messages.len(), 3);
    }

    #[test]
    fn one_wake_per_worker_per_batch() {
        let (h, boxes, counts) = hub(2);
        h.subscribe(
            "c",
            Subscribe {
                worker: 1,
                token: 7,
                since: None,
                talk_name: None,
            },
        )
        .unwrap();
        put(&h, "c", "a");
        put(&h, "c", "b");
        assert_eq!(counts[0].load(Ordering::SeqCst), 0);
        assert_eq!(counts[1].load(Ordering::SeqCst), 1);
        let mut mail = Vec::new();
        boxes[1].take(&mut mail);
        assert_eq!(mail.len(), 2);
        put(&h, "c", "c");
        assert_eq!(counts[1].load(Ordering::SeqCst), 2);
        h.unsubscribe(
            "c",
            WaiterRef {
                worker: 1,
                token: 7,
            },
            true,
            None,
        );
        put(&h, "c", "d");
        assert_eq!(counts[1].load(Ordering::SeqCst), 2);
    }

    #[test]
    fn since_returns_backlog_and_cursor() {
        let (h, _, _) = hub(1);
        let a = put(&h, "c", "a");
        put(&h, "c", "b");
        let s = h
            .subscribe(
                "c",
                Subscribe {
                    worker: 0,
                    token: 1,
                    since: Some(a.seq),
                    talk_name: None,
                },
            )
            .unwrap();
        assert_eq!(s.backlog.len(), 1);
        assert_eq!(&*s.backlog[0].body, b"b");
        assert_eq!(s.cursor, s.backlog[0].seq);
    }

    #[test]
    fn same_talk_name_replaces_the_old_stream() {
        let (h, boxes, _) = hub(2);
        let sub = |w, t| Subscribe {
            worker: w,
            token: t,
            since: None,
            talk_name: Some("bob"),
        };
        h.subscribe("c", sub(0, 1)).unwrap();
        h.subscribe("c", sub(1, 2)).unwrap();
        let mut mail = Vec::new();
        boxes[0].take(&mut mail);
        assert!(matches!(mail.as_slice(), [Mail::EndStream { token: 1 }]));
        // The old stream leaving does not release the new one's name.
        h.unsubscribe(
            "c",
            WaiterRef {
                worker: 0,
                token: 1,
            },
            true,
            Some("bob"),
        );
        h.subscribe("c", sub(0, 3)).unwrap();
        let mut mail = Vec::new();
        boxes[1].take(&mut mail);
        assert!(matches!(mail.as_slice(), [Mail::EndStream { token: 2 }]));
    }

    #[test]
    fn limits_on_channels_and_waiters() {
        let (h, _, _) = hub(1);
        for i in 0..10 {
            h.sync(&format!("c{i}")).unwrap();
        }
        assert_eq!(h.sync("c10"), Err(HubError::TooManyChannels));
        for t in 0..10 {
            h.subscribe(
                "c0",
                Subscribe {
                    worker: 0,
                    token: t,
                    since: None,
                    talk_name: None,
                },
            )
            .unwrap();
        }
        let r = h.subscribe(
            "c0",
            Subscribe {
                worker: 0,
                token: 99,
                since: None,
                talk_name: None,
            },
        );
        assert_eq!(r.unwrap_err(), HubError::TooManyWaiters);
    }

    #[test]
    fn sweep_removes_idle_empty_channels_only() {
        let (h, _, _) = hub(1);
        h.sync("empty").unwrap();
        put(&h, "full", "x");
        h.subscribe(
            "watched",
            Subscribe {
                worker: 0,
                token: 1,
                since: None,
                talk_name: None,
            },
        )
        .unwrap();
        assert_eq!(h.sweep(), 1);
        assert_eq!(h.channel_count(), 2);
    }

    #[test]
    fn a_queue_refuses_a_batch_past_its_count_or_bytes_whole() {
        let (h, _, _) = hub(1);
        let batch = |n: usize, size: usize| -> Vec<Draft> {
            (0..n).map(|_| Draft::with_body(vec![b'x'; size])).collect()
        };
        h.publish("q", batch(3, 10), Origin::Qst, true).unwrap();
        // 3 pending + 3 > queue_capacity 5: nothing of the batch is stored.
        assert_eq!(
            h.publish("q", batch(3, 10), Origin::Qst, true).unwrap_err(),
            HubError::QueueFull
        );
        assert_eq!(h.qst_pull("q", None, 100).unwrap().messages.len(), 3);
        // A message that would take the channel past queue_bytes is refused too.
        let big = batch(1, (1 << 20) + 1);
        assert_eq!(
            h.publish("q", big, Origin::Qst, true).unwrap_err(),
            HubError::QueueFull
        );
        assert_eq!(h.qst_pull("q", None, 100).unwrap().messages.len(), 3);
    }

    #[test]
    fn a_queue_stores_each_id_once() {
        let (h, _, _) = hub(1);
        let d = |id: &str| Draft {
            id: Some(id.into()),
            ..Draft::with_body(id)
        };
        let stored = h
            .publish("q", vec![d("a"), d("b"), d("a")], Origin::Qst, true)
            .unwrap();
        assert_eq!(stored.len(), 2);
        let again = h
            .publish("q", vec![d("b"), d("c")], Origin::Qst, true)
            .unwrap();
        assert_eq!(
            again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        // Acknowledged and dropped by retention (capacity 3): the id may come again.
        h.qst_pull(
            "q",
            Some(&Ack {
                upto: Some("c"),
                ..Ack::default()
            }),
            10,
        )
        .unwrap();
        h.publish("q", vec![d("x"), d("y")], Origin::Qst, true)
            .unwrap();
        let back = h.publish("q", vec![d("a")], Origin::Qst, true).unwrap();
        assert_eq!(back.len(), 1, "a left the channel, so it is new again");
    }

    #[test]
    fn ids_are_unique_and_uuid_shaped() {
        let (h, _, _) = hub(1);
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| h.new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = h.new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
