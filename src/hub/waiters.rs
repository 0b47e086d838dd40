//! Who waits on a channel, and how mail reaches them.
//!
//! `Waiters` is the delivery half of a channel: the workers that have waiters on it (Talk
//! streams, parked long-polls), how many there are, the Talk names streaming there, and how far
//! its messages were posted. `Mailbox` is a worker's inbox: any thread posts `Mail`, the worker
//! drains it; a mailbox is woken (through `Notify`) when it goes from empty to non-empty, so a
//! batch costs one wake-up per worker however many messages it holds.
//!
//! Nothing here stores a message; the channel's data is `super::store`. Posting happens under
//! the channel's shard lock (lock order: shard, then mailbox), waking after it is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::message::Message;
use super::{lock, HubError};

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

/// The workers named by a set of bits (bit `w` for worker `w`), lowest first.
pub fn workers_in(mut bits: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let w = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            w
        })
    })
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
    /// Write this stanza on the XMPP session `token` (routed from another session).
    Stanza { token: usize, stanza: Arc<[u8]> },
    /// A newer session bound the same full JID: end the session `token` (`conflict`).
    Replaced { token: usize },
    /// The push of connection `token` is stored (`--fsync always`: its record is durable;
    /// `--redis`: Redis stored it, and its last `seq` is given), or why not: answer it.
    Synced {
        token: usize,
        result: Result<super::Answer, super::HubError>,
    },
    /// A BOSH request body for the session `token` (`None`: open a new session on this
    /// worker), forwarded by the HTTP connection `from`, which waits for a `BoshAnswer`.
    BoshRequest {
        token: Option<usize>,
        from: WaiterRef,
        body: Box<[u8]>,
    },
    /// The answer to the BOSH request the HTTP connection `token` forwarded: `200` with a
    /// `<body>`, or `503` with a reason.
    BoshAnswer {
        token: usize,
        status: u16,
        body: Arc<[u8]>,
    },
    /// The channel was deleted (nchan's `DELETE /pub/…`): its nchan subscribers on this
    /// worker end with `410 Gone`.
    Deleted { channel: Arc<str> },
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
    pub(super) fn post(&self, mail: Mail) -> bool {
        let mut box_ = lock(&self.mail);
        box_.push(mail);
        box_.len() == 1
    }

    /// Posts a run of mail under one lock; returns true when the mailbox was empty and now
    /// is not, i.e. the worker must be woken.
    fn post_all(&self, mail: impl Iterator<Item = Mail>) -> bool {
        let mut box_ = lock(&self.mail);
        let was_empty = box_.is_empty();
        box_.extend(mail);
        was_empty && !box_.is_empty()
    }

    /// Wakes the worker.
    pub(super) fn wake(&self) {
        self.notify.notify();
    }

    /// Takes all mail, swapping in `spare` (an empty vector whose capacity is reused).
    pub fn take(&self, spare: &mut Vec<Mail>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut *lock(&self.mail), spare);
    }
}

/// The waiters of one channel (see the module doc).
#[derive(Debug, Default)]
pub struct Waiters {
    /// Bit `w` is set while worker `w` has at least one waiter here.
    workers: u64,
    count: usize,
    talk_names: HashMap<Box<str>, WaiterRef>,
    /// Every message with `seq <= delivered` was posted (or had nobody to post to): mail
    /// goes out in `seq` order, each message once.
    delivered: u64,
}

impl Waiters {
    /// Workers with at least one waiter here, one bit each.
    pub fn workers(&self) -> u64 {
        self.workers
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Waiters on the channel, of every protocol.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Every message up to this `seq` was posted.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Adds a waiter, at most `max` on the channel. A Talk name already streaming here
    /// moves to the new waiter; the one it named is returned (its worker must end it).
    pub fn add(
        &mut self,
        me: WaiterRef,
        talk_name: Option<&str>,
        max: usize,
    ) -> Result<Option<WaiterRef>, HubError> {
        if self.count >= max {
            return Err(HubError::TooManyWaiters);
        }
        self.count += 1;
        self.workers |= 1 << me.worker;
        Ok(talk_name.and_then(|name| self.talk_names.insert(name.into(), me)))
    }

    /// Removes a waiter. `last_on_worker`: its worker has no other waiter here. A Talk name
    /// is released only if it still names this waiter (a replacing stream keeps it).
    pub fn remove(&mut self, me: WaiterRef, last_on_worker: bool, talk_name: Option<&str>) {
        self.count = self.count.saturating_sub(1);
        if last_on_worker {
            self.workers &= !(1 << me.worker);
        }
        if let Some(name) = talk_name {
            if self.talk_names.get(name) == Some(&me) {
                self.talk_names.remove(name);
            }
        }
    }

    /// Records that everything up to `upto` was delivered (with no waiter to post to).
    pub fn mark_delivered(&mut self, upto: u64) {
        self.delivered = self.delivered.max(upto);
    }

    /// Posts `Deliver` mail for each message in `msgs` (oldest first) with `seq` above
    /// `delivered` and at most `upto`, to every worker with waiters here, and moves
    /// `delivered` to `upto`. Returns the workers to wake. Called under the shard lock,
    /// which is what keeps each worker's mail for a channel in `seq` order.
    pub fn post<'a>(
        &mut self,
        mailboxes: &[Arc<Mailbox>],
        channel: &Arc<str>,
        msgs: impl Iterator<Item = &'a Arc<Message>> + Clone,
        upto: u64,
    ) -> u64 {
        let from = self.delivered;
        if upto <= from {
            return 0;
        }
        self.delivered = upto;
        if self.workers == 0 {
            return 0;
        }
        let mut wake = 0u64;
        let msgs = msgs
            .skip_while(|m| m.seq <= from)
            .take_while(|m| m.seq <= upto);
        for w in workers_in(self.workers) {
            let Some(mailbox) = mailboxes.get(w) else {
                continue;
            };
            let mail = msgs.clone().map(|m| Mail::Deliver {
                channel: channel.clone(),
                msg: m.clone(),
            });
            if mailbox.post_all(mail) {
                wake |= 1 << w;
            }
        }
        wake
    }
}
