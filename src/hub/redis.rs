//! The hub's Redis mode (`--redis`, issue 13): several nodes share their channels through
//! one Redis, which holds each channel's log and assigns every `seq` (`crate::redis`).
//!
//! What changes from the local hub, and what does not:
//!
//! - **Publishing** stores the batch in Redis (one `PUBLISH` script run by the engine
//!   thread); the publisher's connection waits for the answer (`Mail::Synced`) exactly as
//!   it waits for the disk under `--fsync always`, and is answered `503` with `Retry-After`
//!   if Redis is down or full. The publishing node keeps nothing of it at that point.
//! - **Delivery** comes only from Redis: every node subscribes to the topic of each channel
//!   it has waiters on, inserts each notified message into its local store (a cache of the
//!   channel's recent messages, by Redis's `seq`) and fans it out to its waiters as a local
//!   publish does, one notification per message per node. So every node sees one order.
//! - **Catching up**: when a subscription takes effect, and after the subscription
//!   connection came back, the node reads the channel's log after the last `seq` it holds,
//!   so no waiter misses a message that was stored while it was not listening. A read
//!   that fails (Redis still down) is retried by the next sweep.
//! - **Reading** (Talk `since=`, comet cursors, nchan cursors) reads the local cache, which
//!   is complete for a channel this node has waiters on; a reader of a channel the node did
//!   not hold yet parks, and the catch-up read wakes it.
//! - The server's own channels (`tidings/…`, the status page) stay local to each node.
//!
//! - **QST pulls and acknowledgements** run Redis's `take` and `ack` scripts: the cursor,
//!   tries and v1 done-sets live there. A long-poll pull parks on the local channel and
//!   pulls again when woken. Comet `sync` moves Redis's clock; QST `HEAD` reads Redis's
//!   last id; nchan's `DELETE` runs there and every node deletes its copy on the notice.
//! - A request whose answer is Redis's gets it as `Mail::Synced` with an `Answer`.
//!
//! XMPP PubSub `items` are read from Redis (`read_redis`): a node's cache may not hold
//! the channel yet. Not shared (each node's own): the channel counts of nchan's `GET /pub/`
//! and of its `201`/`202`, and v1 addresses.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::durable::{message_of, message_record};
use super::{
    lock, now_ms, ChannelInfo, Draft, Hub, HubError, Mail, Message, Origin, WaiterRef,
    RESERVED_PREFIX,
};
use super::{Ack, Pulled};
use crate::redis::{engine, Engine, Entry, Error, Event, Log, Options, Published, Subscriber};
use crate::storage::record::{self, Frame, Replayed};
use crate::{info, warn};

/// What Redis answered a connection that waits for it (`Mail::Synced`).
#[derive(Debug)]
pub enum Answer {
    /// A publish stored its batch (the last message's `seq`; 0 for none), a durable record
    /// is on disk (0), or a comet `sync` moved the clock (the clock).
    Stored { seq: u64 },
    /// A QST pull.
    Pulled(Pulled),
    /// The newest message's id (QST `HEAD`).
    LastId(String),
    /// What nchan's `DELETE` did in Redis.
    Removed(engine::Removed),
}

impl Answer {
    /// The `seq` of a `Stored` answer (0 for the others).
    pub fn seq(&self) -> u64 {
        match self {
            Answer::Stored { seq } => *seq,
            _ => 0,
        }
    }
}

/// Messages asked for by one catch-up read; a full page is followed by the next.
const CATCH_UP_PAGE: usize = 256;

/// The hub's handles on Redis.
pub(super) struct Link {
    engine: Engine,
    subscriber: OnceLock<Subscriber>,
    /// The hub itself, for the answers the engine and subscriber threads bring back.
    hub: OnceLock<Weak<Hub>>,
    /// Channels whose catch-up read failed: retried by `sweep` once Redis is back.
    retry: Mutex<HashSet<String>>,
}

impl Link {
    pub(super) fn new(opts: Options) -> Link {
        Link {
            engine: Engine::start(opts),
            subscriber: OnceLock::new(),
            hub: OnceLock::new(),
            retry: Mutex::new(HashSet::new()),
        }
    }
}

/// A message as Redis keeps it: the storage record of the message (checksummed), with an
/// empty channel and `seq` 0, since Redis holds both beside it.
fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.size() + 64);
    record::encode(&mut out, &message_record("", m));
    out
}

/// The message of a stored entry; `None` if its data is not a message record.
fn decode(e: &Entry) -> Option<Message> {
    let Frame::Record(payload, _) = record::frame(&e.data) else {
        return None;
    };
    let Some(Replayed::Message(mut m)) = record::decode(payload) else {
        return None;
    };
    m.seq = e.seq;
    m.id = e.id.clone();
    Some(message_of(m))
}

impl Hub {
    /// A hub whose channels live in Redis (call `start_redis` once it is in its `Arc`).
    pub fn with_redis(
        limits: super::Limits,
        mailboxes: Vec<Arc<super::Mailbox>>,
        metrics: Arc<crate::metrics::Metrics>,
        opts: Options,
    ) -> Hub {
        let mut hub = Hub::new(limits, mailboxes, metrics);
        hub.redis = Some(Link::new(opts));
        hub
    }

    /// Starts listening to Redis for the channels this node has waiters on.
    pub fn start_redis(self: &Arc<Hub>) -> std::io::Result<()> {
        let Some(link) = &self.redis else {
            return Ok(());
        };
        let _ = link.hub.set(Arc::downgrade(self));
        let me = Arc::downgrade(self);
        let subscriber = Subscriber::start(link.engine.options().clone(), move |ev| {
            if let Some(hub) = me.upgrade() {
                hub.redis_event(ev);
            }
        })?;
        let _ = link.subscriber.set(subscriber);
        Ok(())
    }

    /// Whether channels live in Redis (`--redis`).
    pub fn redis_mode(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether `channel` is shared through Redis (the server's own channels are not).
    pub fn shared_in_redis(&self, channel: &str) -> bool {
        self.redis.is_some() && !channel.starts_with(RESERVED_PREFIX)
    }

    /// Stores a batch in Redis. Its `seq`s are Redis's: the returned messages carry none
    /// (0). `publisher`, if any, gets `Mail::Synced` with the batch's last `seq` once Redis
    /// answered, or the reason it did not store it (`QueueFull`, `Redis`). Its subscribers,
    /// on every node, hear of it from Redis.
    pub fn publish_redis(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
        publisher: Option<WaiterRef>,
    ) -> Result<Vec<Arc<Message>>, HubError> {
        let Some(link) = &self.redis else {
            return self.publish(channel, drafts, origin, queue);
        };
        let (prepared, op) = self.publish_op(link, channel, drafts, origin, queue)?;
        let hub = link.hub.get().cloned();
        link.engine
            .submit_with(op, engine::parse_published, move |answer| {
                let Some(hub) = hub.as_ref().and_then(Weak::upgrade) else {
                    return;
                };
                let result = hub.published(answer);
                if let Some(p) = publisher {
                    hub.answer(p, result.map(|seq| Answer::Stored { seq }));
                }
            });
        Ok(prepared.into_iter().map(Arc::new).collect())
    }

    /// Checks a batch and makes the operation that stores it; the messages carry their ids
    /// (and no `seq`: Redis gives it).
    fn publish_op(
        &self,
        link: &Link,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
        queue: bool,
    ) -> Result<(Vec<Message>, crate::redis::Op), HubError> {
        if origin != Origin::Server && channel.starts_with(RESERVED_PREFIX) {
            return Err(HubError::Reserved);
        }
        if !link.engine.status().up {
            self.metrics.redis_refusals.inc();
            return Err(HubError::Redis);
        }
        let prepared = self.prepare(drafts, origin);
        let msgs = prepared
            .iter()
            .map(|m| (m.id.as_bytes().to_vec(), encode(m)));
        let op = link.engine.publish_op_owned(channel, msgs, queue);
        Ok((prepared, op))
    }

    /// What a publish's answer means: the batch's last `seq`, or why it was not stored
    /// (counted).
    fn published(&self, answer: Result<Published, Error>) -> Result<u64, HubError> {
        match answer {
            Ok(Published::Stored(seqs)) => {
                let new = seqs.iter().filter(|(_, new)| *new).count();
                self.metrics.messages_published.add(new as u64);
                Ok(seqs.iter().map(|(seq, _)| *seq).max().unwrap_or(0))
            }
            Ok(Published::Full(_)) => {
                self.metrics.queue_full.inc();
                Err(HubError::QueueFull)
            }
            Err(e) => {
                warn!("a publish to Redis failed: {e}");
                self.metrics.redis_refusals.inc();
                Err(HubError::Redis)
            }
        }
    }

    /// `publish_redis` for a caller that may block (the embedding API, on its own thread):
    /// waits for Redis's answer and returns the batch's last `seq`.
    pub fn publish_redis_and_wait(
        &self,
        channel: &str,
        drafts: Vec<Draft>,
        origin: Origin,
    ) -> Result<u64, HubError> {
        let Some(link) = &self.redis else {
            let stored = self.publish(channel, drafts, origin, false)?;
            return Ok(stored.last().map_or(0, |m| m.seq));
        };
        let (_, op) = self.publish_op(link, channel, drafts, origin, false)?;
        let answer = link.engine.call(op).and_then(engine::parse_published);
        self.published(answer)
    }

    /// Tells a waiting connection what Redis answered.
    fn answer(&self, to: WaiterRef, result: Result<Answer, HubError>) {
        self.send(
            to.worker,
            Mail::Synced {
                token: to.token,
                result,
            },
        );
    }

    /// Runs `op` in Redis; `done` gets the parsed reply on the engine thread (if the hub
    /// still exists). `Err(Redis)` at once when Redis is down.
    fn submit_redis<T: 'static>(
        &self,
        op: crate::redis::Op,
        parse: fn(crate::redis::resp::Value) -> Result<T, Error>,
        done: impl FnOnce(&Hub, Result<T, Error>) + Send + 'static,
    ) -> Result<(), HubError> {
        let Some(link) = &self.redis else {
            return Err(HubError::Redis);
        };
        if !link.engine.status().up {
            return Err(HubError::Redis);
        }
        let hub = link.hub.get().cloned();
        link.engine.submit_with(op, parse, move |answer| {
            if let Some(hub) = hub.as_ref().and_then(Weak::upgrade) {
                done(&hub, answer);
            }
        });
        Ok(())
    }

    /// Runs `op` in Redis and answers `to` with what `then` makes of the reply; a failure
    /// is answered `HubError::Redis` (and counted).
    fn ask_redis<T: 'static>(
        &self,
        op: crate::redis::Op,
        parse: fn(crate::redis::resp::Value) -> Result<T, Error>,
        to: WaiterRef,
        then: impl FnOnce(&Hub, T) -> Answer + Send + 'static,
    ) -> Result<(), HubError> {
        self.submit_redis(op, parse, move |hub, answer| {
            let result = match answer {
                Ok(v) => Ok(then(hub, v)),
                Err(e) => {
                    warn!("a Redis request failed: {e}");
                    hub.metrics.redis_refusals.inc();
                    Err(HubError::Redis)
                }
            };
            hub.answer(to, result);
        })
        .inspect_err(|_| self.metrics.redis_refusals.inc())
    }

    /// A QST pull through Redis (the queue's cursor, tries and v1 done-set live there, so
    /// any node may serve its gateway): the acknowledgements first, then up to `max`
    /// pending messages, oldest first, in one pipeline. `to` gets `Answer::Pulled`.
    pub fn qst_pull_redis(
        &self,
        channel: &str,
        ack: Option<&Ack<'_>>,
        max: usize,
        to: WaiterRef,
    ) -> Result<(), HubError> {
        let Some(link) = &self.redis else {
            return Err(HubError::Redis);
        };
        if let Some(a) = ack.filter(|a| !a.is_empty()) {
            let confirmed: Vec<&str> = a.confirmed.iter().map(String::as_str).collect();
            let failed: Vec<&str> = a.failed.iter().map(String::as_str).collect();
            let op = engine::ack_op(channel, a.upto, &confirmed, &failed);
            let hub = link.hub.get().cloned();
            // Sent before the take, in the same pipeline: the take sees its effect. A
            // failure reaches the puller through the take, which fails with it.
            link.engine
                .submit_with(op, engine::parse_acked, move |answer| {
                    if let (Some(hub), Ok(acked)) = (hub.as_ref().and_then(Weak::upgrade), answer) {
                        hub.metrics.qst_acked.add(acked.acked);
                        hub.metrics.qst_failed.add(acked.failed);
                    }
                });
        }
        let op = engine::take_op(channel, max, self.limits.qst_max_tries);
        self.ask_redis(op, engine::parse_taken, to, |hub, taken| {
            hub.metrics.qst_expired.add(taken.expired);
            let messages: Vec<Arc<Message>> = taken
                .entries
                .iter()
                .filter_map(decode)
                .map(Arc::new)
                .collect();
            let etag = match messages.last() {
                Some(m) => Some(m.id.to_string()),
                None => Some(taken.acked_id).filter(|id| !id.is_empty()),
            };
            Answer::Pulled(Pulled { messages, etag })
        })
    }

    /// Comet `sync` through Redis: the channel's clock moved to Redis's now (`Answer::Stored`
    /// with it as `seq`).
    pub fn sync_redis(&self, channel: &str, to: WaiterRef) -> Result<(), HubError> {
        let op = engine::sync_clock_op(channel);
        self.ask_redis(op, engine::parse_clock, to, |_, seq| Answer::Stored { seq })
    }

    /// nchan's `DELETE` through Redis: every node drops the channel's messages and ends its
    /// nchan subscribers (the notification `delete` sends). `to` gets `Answer::Removed`.
    pub fn delete_redis(&self, channel: &str, to: WaiterRef) -> Result<(), HubError> {
        let op = engine::delete_op(channel);
        self.ask_redis(op, engine::parse_deleted, to, |_, r| Answer::Removed(r))
    }

    /// The channel's `last` retained messages as Redis holds them, oldest first, for `done` (on the
    /// engine thread): XMPP PubSub `items`, which a node that does not hold the channel (or
    /// has not caught up yet) cannot answer from its cache. `Err(Redis)` at once when Redis
    /// is down.
    pub fn read_redis(
        &self,
        channel: &str,
        last: usize,
        done: impl FnOnce(&Hub, Result<Vec<Message>, HubError>) + Send + 'static,
    ) -> Result<(), HubError> {
        let ttl = self.limits.channel_ttl.as_millis() as u64;
        let all = self.limits.channel_capacity;
        let op = engine::read_recent_op(channel, 0, all, ttl);
        self.submit_redis(op, engine::parse_log, move |hub, answer| {
            let read = answer
                .map(|log| {
                    let skip = log.entries.len().saturating_sub(last);
                    log.entries[skip..].iter().filter_map(decode).collect()
                })
                .map_err(|e| {
                    warn!("reading from Redis failed: {e}");
                    HubError::Redis
                });
            done(hub, read);
        })
        .inspect_err(|_| self.metrics.redis_refusals.inc())
    }

    /// QST `HEAD`: the id of the newest message in Redis (`Answer::LastId`, empty: none).
    pub fn last_id_redis(&self, channel: &str, to: WaiterRef) -> Result<(), HubError> {
        // After every seq (2^52 ms is the year 144,000; Lua's numbers are doubles): no
        // message, only the head.
        let op = engine::read_op(channel, 1 << 52, 1);
        self.ask_redis(op, engine::parse_log, to, |_, log| {
            Answer::LastId(log.last_id)
        })
    }

    /// nchan's publish through Redis: `publish_redis`, with what this node knows of the
    /// channel (its waiters here, its cached messages and one more) for the answer.
    pub fn publish_redis_with_info(
        &self,
        channel: &str,
        draft: Draft,
        publisher: Option<WaiterRef>,
    ) -> Result<ChannelInfo, HubError> {
        self.publish_redis(channel, vec![draft], Origin::Nchan, false, publisher)?;
        let mut info = self
            .with_existing(channel, |ch| ch.info())
            .unwrap_or(ChannelInfo {
                messages: 0,
                subscribers: 0,
                requested: None,
                last_seq: None,
            });
        info.messages = (info.messages + 1).min(self.limits.channel_capacity);
        Ok(info)
    }

    /// After a new waiter: the node listens to the channel in Redis if it did not yet.
    /// Called with no lock held.
    pub(super) fn listen(&self, channel: &str, first: bool) {
        if !first {
            return;
        }
        if let Some(s) = self.redis.as_ref().and_then(|l| l.subscriber.get()) {
            s.subscribe(channel);
        }
    }

    /// The channel is gone from this node: stop listening.
    pub(super) fn stop_listening(&self, channel: &str) {
        if let Some(s) = self.redis.as_ref().and_then(|l| l.subscriber.get()) {
            s.unsubscribe(channel);
        }
    }

    /// Where a reader of a shared channel that wants only what comes next starts, given the
    /// clock this node holds (`held`): after every message held, and after the millisecond
    /// before now, without moving the clock (only Redis's messages move it in this mode).
    ///
    /// Not after now itself: a message published in the same millisecond as the reader
    /// arrived gets that millisecond as its `seq` from Redis's clock, and must reach it.
    /// Redis's clock and ours are the same one on one machine; across machines, keep them
    /// in step (NTP): a node whose clock runs ahead by D ms starts D ms late.
    pub(super) fn start_after(held: u64) -> u64 {
        held.max(now_ms().saturating_sub(1))
    }

    /// What the subscriber thread reports.
    fn redis_event(&self, ev: Event) {
        match ev {
            Event::Message { channel, entry } if entry.seq == 0 => {
                // nchan's DELETE, on some node: end this node's subscribers too.
                self.delete(&channel);
            }
            Event::Message { channel, entry } => {
                self.insert_from_redis(&channel, vec![entry], false, None);
            }
            Event::Subscribed(channel) => self.catch_up(channel),
            Event::Up { catch_up } => {
                info!(
                    "Redis subscription up: catching up {} channels",
                    catch_up.len()
                );
                for channel in catch_up {
                    self.catch_up(channel);
                }
            }
            Event::Down(why) => {
                warn!("Redis subscription lost ({why}): catching up once it is back")
            }
        }
    }

    /// Reads the channel's log after the last `seq` this node holds, page by page, into
    /// the local store and on to its waiters.
    fn catch_up(&self, channel: String) {
        let Some(after) = self.with_existing(&channel, |ch| ch.store.clock()) else {
            return; // the channel left this node meanwhile
        };
        let ttl = self.limits.channel_ttl.as_millis() as u64;
        let op = engine::read_recent_op(&channel, after, CATCH_UP_PAGE, ttl);
        let name = channel.clone();
        let asked = self.submit_redis(op, engine::parse_log, move |hub, answer| match answer {
            Ok(log) => {
                let more = log.entries.len() >= CATCH_UP_PAGE;
                let Log {
                    clock,
                    entries,
                    dropped,
                    ..
                } = log;
                // Dropped in Redis while this node was not listening (trimmed, or deleted):
                // dropped here too.
                hub.with_existing(&channel, |ch| {
                    let before = ch.store.footprint();
                    ch.store.expire(dropped.saturating_add(1));
                    hub.account(before, ch.store.footprint());
                });
                hub.insert_from_redis(&channel, entries, true, (!more).then_some(clock));
                if more {
                    hub.catch_up(channel);
                }
            }
            Err(e) => {
                warn!("catching up {channel:?} from Redis failed ({e}): retrying");
                hub.retry_catch_up_later(channel);
            }
        });
        if asked.is_err() {
            self.retry_catch_up_later(name);
        }
    }

    /// A catch-up that could not be made: the sweep tries it again once Redis answers.
    fn retry_catch_up_later(&self, channel: String) {
        if let Some(link) = &self.redis {
            lock(&link.retry).insert(channel);
        }
    }

    /// Catch-ups that failed, tried again (from `sweep`) once Redis answers.
    pub(super) fn retry_catch_ups(&self) {
        let Some(link) = &self.redis else { return };
        if !link.engine.status().up {
            return;
        }
        let channels: Vec<String> = lock(&link.retry).drain().collect();
        for channel in channels {
            self.catch_up(channel);
        }
    }

    /// Messages from Redis (notified, or read back): each one newer than what the channel
    /// holds is stored with its `seq` and posted to the waiters. `read_back`: by a catch-up
    /// read (counted); `clock`: Redis's clock of the channel after its last page.
    fn insert_from_redis(
        &self,
        channel: &str,
        entries: Vec<Entry>,
        read_back: bool,
        clock: Option<u64>,
    ) {
        // The cache counts against --retained-bytes like any retained message: the oldest
        // cached messages of other channels make room (nothing here is a queue's, so room
        // can always be made).
        let incoming = entries
            .iter()
            .map(|e| e.data.len() + super::store::MESSAGE_OVERHEAD)
            .sum();
        let _ = self.make_room(incoming);
        let wake = self.with_existing(channel, |ch| {
            let before = ch.store.footprint();
            for e in &entries {
                if e.seq <= ch.store.clock() {
                    continue; // already here (read back and notified both)
                }
                match decode(e) {
                    Some(m) => {
                        if read_back {
                            self.metrics.redis_caught_up.inc();
                        }
                        ch.deleted = false;
                        ch.store.restore_message(m, &self.limits)
                    }
                    None => warn!("{channel:?} seq {} in Redis is not a message", e.seq),
                }
            }
            if let Some(clock) = clock {
                ch.store.restore_clock(clock);
            }
            self.account(before, ch.store.footprint());
            self.note_oldest(ch);
            let clock = ch.store.clock();
            ch.deliver_upto(&self.mailboxes, clock)
        });
        self.wake(wake.unwrap_or(0));
    }

    /// `/health`'s word on Redis: `None` without `--redis`.
    pub fn redis_up(&self) -> Option<bool> {
        self.redis
            .as_ref()
            .map(|l| l.engine.status().up && l.subscriber.get().is_none_or(Subscriber::is_up))
    }

    /// Redis's lines of `/metrics` (nothing without `--redis`).
    pub fn render_redis_metrics(&self, s: &mut String) {
        let Some(link) = &self.redis else { return };
        let st = link.engine.status();
        let listening = link.subscriber.get().is_some_and(Subscriber::is_up);
        let rows: [(&str, &str, &str, u64); 5] = [
            (
                "tidings_redis_up",
                "gauge",
                "1 while the command connection to --redis is up.",
                st.up as u64,
            ),
            (
                "tidings_redis_subscription_up",
                "gauge",
                "1 while the pub/sub connection to --redis is up and subscribed.",
                listening as u64,
            ),
            (
                "tidings_redis_rtt_microseconds",
                "gauge",
                "The last round trip to --redis (a pipeline or an idle ping).",
                st.rtt_us,
            ),
            (
                "tidings_redis_connects_total",
                "counter",
                "Connections made to --redis (1 + reconnections).",
                st.connects,
            ),
            (
                "tidings_redis_failures_total",
                "counter",
                "Connections to --redis lost.",
                st.failures,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        }
    }
}
