//! The hub's side of storage (`crate::storage`): the records it logs for each change, how
//! it is rebuilt from them at start-up, the snapshot it gives compaction, and the second
//! phase of a publish under `--fsync always` (deliveries and answers wait for the sync).
//!
//! What is logged, always under the channel's shard lock (so a channel's records are in the
//! log in the order its changes happened):
//!
//! - every stored message (`Record::Message`, with its `seq`);
//! - the whole queue state when it changed (`Record::Queue`): made, acknowledged, a try
//!   counted, a message expired; before the messages of the same change;
//! - a clock that moved (`Record::Clock`), a drop by the memory budget or the TTL
//!   (`Record::Trim`), a v1 address (`Record::Address`).
//!
//! Retention by count and bytes is not logged: replay applies it again with the same limits.
//!
//! Replay is idempotent per record (a message at or below the channel clock is skipped, a
//! queue state replaces the one held, clocks and trims only move forward), so a snapshot
//! taken while changes go on, followed by every record from the snapshot's boundary on,
//! gives the state the log describes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use super::{lock, Appended, Channel, Draft, Hub, HubError, Mail, Message, Origin};
use crate::storage::{Lsn, MessageRecord, Record, ReplayReport, Replayed, SyncState};

/// A queue's state copied out: cursor, last acknowledged, done, tries.
type QueueCopy = (
    u64,
    Option<(u64, String)>,
    BTreeSet<u64>,
    BTreeMap<u64, u32>,
);

/// A channel's state copied out of its shard for a snapshot (so that nothing is written
/// under the lock).
struct Copied {
    name: Arc<str>,
    clock: u64,
    dropped: u64,
    last_id: Option<String>,
    queue: Option<QueueCopy>,
    messages: Vec<Arc<Message>>,
}

/// The message a record holds (its `channel` is not part of it).
pub(super) fn message_of(m: crate::storage::StoredMessage) -> Message {
    let draft = Draft {
        id: None,
        from: m.from,
        to: m.to,
        when: None,
        subject: m.subject,
        body: m.body,
        properties: m.properties,
        content_type: m.content_type,
        event: m.event,
    };
    Message::new(m.seq, m.id, m.when, Origin::from_code(m.origin), draft)
}

/// The record of a message stored in `channel`.
pub(super) fn message_record<'a>(channel: &'a str, m: &'a Message) -> Record<'a> {
    Record::Message(MessageRecord {
        channel,
        seq: m.seq,
        id: &m.id,
        from: &m.from,
        to: &m.to,
        when: m.when,
        origin: m.origin.code(),
        subject: m.subject.as_deref(),
        body: &m.body,
        properties: &m.properties,
        content_type: m.content_type(),
        event: m.event(),
    })
}

impl Hub {
    /// Logs a stored message; returns its `Lsn`.
    pub(super) fn log_message(&self, channel: &str, m: &Message) -> Lsn {
        self.storage.append(&message_record(channel, m))
    }

    /// Logs the channel's queue state if it changed since `version`; returns the `Lsn` (0:
    /// nothing logged).
    pub(super) fn log_queue(&self, ch: &Channel, version: u64) -> Lsn {
        if !self.storage.keeps() || ch.store.queue_version() == version {
            return 0;
        }
        let Some(q) = ch.store.queue() else { return 0 };
        let (acked, acked_id, done, tries) = q.state();
        self.storage.append(&Record::Queue {
            channel: &ch.name,
            acked,
            acked_id,
            done,
            tries,
        })
    }

    /// Logs the channel's clock as a mark for a change that logged nothing else (a push
    /// whose every id the queue held): its `Lsn` is durable only once everything logged
    /// before it is, so the publisher is answered no sooner than the push it repeats.
    pub(super) fn log_mark(&self, ch: &Channel) -> Lsn {
        self.storage.append(&Record::Clock {
            channel: &ch.name,
            clock: ch.store.clock(),
        })
    }

    /// Logs a clock that moved from `before`.
    pub(super) fn log_clock(&self, ch: &Channel, before: u64) {
        let clock = ch.store.clock();
        if clock != before && self.storage.keeps() && self.storage.writable() {
            self.storage.append(&Record::Clock {
                channel: &ch.name,
                clock,
            });
        }
    }

    /// Logs that messages up to `upto` that no queue holds were dropped.
    pub(super) fn log_trim(&self, ch: &Channel, upto: u64) {
        if self.storage.keeps() {
            self.storage.append(&Record::Trim {
                channel: &ch.name,
                upto,
            });
        }
    }

    /// Logs the Message item store's state after a committed change, and keeps it for the
    /// next snapshot.
    pub fn log_store(&self, state: &[u8]) {
        if self.storage.keeps() {
            *lock(&self.store_state) = Some(Arc::from(state));
            self.storage.append(&Record::Store { state });
        }
    }

    /// The item store's state as the log last had it (after `restore`).
    pub fn stored_store(&self) -> Option<Arc<[u8]>> {
        lock(&self.store_state).clone()
    }

    /// Logs a v1 address.
    pub(super) fn log_address(&self, account: &str, address: &str) {
        if self.storage.keeps() {
            self.storage.append(&Record::Address { account, address });
        }
    }

    /// Rebuilds the hub from its storage's log: every channel, message, queue state, clock
    /// and address as they were. Call once, before the hub serves.
    pub fn restore(&self) -> io::Result<ReplayReport> {
        let report = self.storage.replay(&mut |rec| self.apply(rec))?;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for ch in shard.values_mut() {
                ch.store.finish_restore();
                self.account(0, ch.store.footprint());
                self.note_oldest(ch);
            }
        }
        Ok(report)
    }

    /// Applies one replayed record.
    fn apply(&self, rec: Replayed) {
        let limits = &self.limits;
        let _ = match rec {
            Replayed::Message(mut m) => {
                let channel = std::mem::take(&mut m.channel);
                self.with_channel(&channel, |ch| {
                    ch.store.restore_message(message_of(m), limits)
                })
            }
            Replayed::Queue(q) => self.with_channel(&q.channel, |ch| {
                let queue = super::queue::Queue::restored(q.acked, q.acked_id, q.done, q.tries);
                ch.store.restore_queue(queue, limits);
            }),
            Replayed::Clock { channel, clock } => {
                self.with_channel(&channel, |ch| ch.store.restore_clock(clock))
            }
            Replayed::Trim { channel, upto } => self.with_channel(&channel, |ch| {
                ch.store.restore_trim(upto);
            }),
            Replayed::Head {
                channel,
                clock,
                dropped,
                last_id,
            } => self.with_channel(&channel, |ch| {
                ch.store.restore_head(clock, dropped, last_id)
            }),
            Replayed::Address { account, address } => {
                lock(&self.addresses).insert(account, address);
                Ok(())
            }
            Replayed::Store { state } => {
                *lock(&self.store_state) = Some(Arc::from(state));
                Ok(())
            }
            Replayed::End { .. } => Ok(()),
        };
    }

    /// Writes every record needed to rebuild the hub as it is now: for each channel its
    /// queue state, its messages and then its head (clock, retention mark, last id); then
    /// the v1 addresses. Each shard is copied under its lock and written after.
    pub fn snapshot(&self, out: &mut dyn FnMut(&Record<'_>)) {
        for shard in self.shards.iter() {
            let copied: Vec<Copied> = lock(shard)
                .values()
                .map(|ch| Copied {
                    name: ch.name.clone(),
                    clock: ch.store.clock(),
                    dropped: ch.store.dropped(),
                    last_id: ch.store.last_id().map(|id| id.to_string()),
                    queue: ch.store.queue().map(|q| {
                        let (acked, acked_id, done, tries) = q.state();
                        let acked_id = acked_id.map(|(s, id)| (s, id.to_string()));
                        (acked, acked_id, done.clone(), tries.clone())
                    }),
                    messages: ch.store.messages().cloned().collect(),
                })
                .collect();
            for c in &copied {
                if let Some((acked, acked_id, done, tries)) = &c.queue {
                    out(&Record::Queue {
                        channel: &c.name,
                        acked: *acked,
                        acked_id: acked_id.as_ref().map(|(s, id)| (*s, id.as_str())),
                        done,
                        tries,
                    });
                }
                for m in &c.messages {
                    out(&message_record(&c.name, m));
                }
                out(&Record::Head {
                    channel: &c.name,
                    clock: c.clock,
                    dropped: c.dropped,
                    last_id: c.last_id.as_deref(),
                });
            }
        }
        let addresses: Vec<(String, String)> = lock(&self.addresses)
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        for (account, address) in &addresses {
            out(&Record::Address { account, address });
        }
        let store = lock(&self.store_state).clone();
        if let Some(state) = &store {
            out(&Record::Store { state });
        }
    }

    /// Holds an appended batch until its record is durable, then delivers it (`synced`).
    pub(super) fn defer(&self, appended: Appended) {
        if appended.messages.is_empty() {
            return;
        }
        let lsn = appended.lsn;
        lock(&self.deferred).push((lsn, appended));
        // The sync may have come before the batch was put here: then deliver it now.
        if self.storage.sync(lsn) == SyncState::Durable {
            self.release(lsn);
        }
    }

    /// Delivers every deferred batch whose record is durable (`Lsn` up to `durable`), in
    /// log order.
    fn release(&self, durable: Lsn) {
        let mut ready: Vec<(Lsn, Appended)> = {
            let mut deferred = lock(&self.deferred);
            if deferred.is_empty() {
                return;
            }
            let (ready, rest) = std::mem::take(&mut *deferred)
                .into_iter()
                .partition(|(lsn, _)| *lsn <= durable);
            *deferred = rest;
            ready
        };
        ready.sort_by_key(|(lsn, _)| *lsn);
        for (_, appended) in ready {
            self.deliver(appended);
        }
    }

    /// Storage reports: records up to `durable` are on disk, those up to `failed` could not
    /// be written. Delivers what is durable and tells each waiting publisher its outcome.
    pub fn synced(&self, durable: Lsn, failed: Lsn) {
        self.release(durable);
        let upto = durable.max(failed);
        let mut done = Vec::new();
        {
            let mut waits = lock(&self.sync_waits);
            while let Some(&Reverse(w)) = waits.peek() {
                if w.0 > upto {
                    break;
                }
                waits.pop();
                done.push(w);
            }
        }
        for (lsn, worker, token) in done {
            self.send(
                worker,
                Mail::Synced {
                    token,
                    result: if lsn <= durable {
                        Ok(super::Answer::Stored { seq: 0 })
                    } else {
                        Err(HubError::Storage)
                    },
                },
            );
        }
    }

    /// A publisher on `worker` (connection `token`) waits for the record ending at `lsn`:
    /// `Pending` means it will get `Mail::Synced`; otherwise the outcome is known now.
    pub fn await_durable(&self, lsn: Lsn, worker: usize, token: usize) -> SyncState {
        let mut waits = lock(&self.sync_waits);
        let state = self.storage.sync(lsn);
        if state == SyncState::Pending {
            waits.push(Reverse((lsn, worker, token)));
        }
        state
    }

    /// Whether publishers wait for the disk (`--fsync always`).
    pub fn waits_for_storage(&self) -> bool {
        self.storage.waits()
    }

    /// The hub's storage.
    pub fn storage(&self) -> &Arc<dyn crate::storage::Storage> {
        &self.storage
    }
}
