//! A worker's state that its connections use: everything of a reactor thread but its poll,
//! its listeners and its slab of connections. Beside it, what every worker shares
//! (`Shared`) and the worker's deadlines (`Timers`).
//!
//! Nothing here makes a system call, so a connection machine can be driven by a test with
//! a `Worker` of its own and a virtual clock (`now`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::conn::readbuf::BufPool;
use crate::http::DateCache;
use crate::hub::{Hub, Mail, WaiterRef};
use crate::metrics::Metrics;
use crate::proto::{self, Ctx, WakeCache};

/// What the server owns and every worker shares.
pub struct Shared {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub auth: proto::auth::Auth,
    /// Connections open on all workers (for `--max-connections`).
    pub open: AtomicUsize,
    /// The XMPP sessions bound on every worker, by JID.
    pub xmpp: proto::xmpp::registry::Registry,
    /// The Message item store and its users (PROTOCOLS.md 4.3).
    pub store: crate::store::Store,
    /// The BOSH sessions of every worker, by `sid`.
    pub bosh: proto::xmpp::bosh::Sessions,
    /// What the status page shows: listeners, uptime, the state of its rates.
    pub status: crate::status::Status,
}

impl Shared {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            hub: &self.hub,
            config: &self.config,
            metrics: &self.metrics,
            auth: &self.auth,
            wait: Default::default(),
            status: &self.status,
            publisher: Default::default(),
            then: Default::default(),
            may_follow_fanout: Default::default(),
            by_mail: Default::default(),
        }
    }
}

/// The worker's deadlines: a min-heap of (deadline, key, generation). Stale entries are
/// harmless: expiry re-checks the connection's generation and current deadline.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, usize, u32)>>,
}

impl Timers {
    pub fn push(&mut self, at: u64, key: usize, gen: u32) {
        self.heap.push(Reverse((at, key, gen)));
    }

    /// The earliest entry, if any.
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Pops an entry due at `now`: (key, generation, the entry's time).
    pub fn pop_due(&mut self, now: u64) -> Option<(usize, u32, u64)> {
        match self.heap.peek() {
            Some(Reverse((t, _, _))) if *t <= now => {
                let Reverse((t, k, g)) = self.heap.pop()?;
                Some((k, g, t))
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// One worker's state, lent to each connection handler it runs.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    /// Milliseconds since the worker started, read once per loop turn.
    pub now: u64,
    pub timers: Timers,
    /// Keys with output to flush this turn.
    pub pending: Vec<usize>,
    /// Keys whose read or write loop hit its cap: serve them again next turn.
    pub again: Vec<usize>,
    /// Channel → keys of this worker's waiters there.
    pub subs: HashMap<Arc<str>, HashSet<usize>>,
    pub pool: BufPool,
    pub date: DateCache,
    pub shutting_down: bool,
    /// Answers shared by the comet `get`s and nchan long-polls one delivery wakes.
    pub wake_cache: WakeCache,
    /// Mail from this worker's connections to others of the same worker (a BOSH request and
    /// its answer): drained with the mailbox, without waking anything.
    pub local: Vec<Mail>,
    /// Where every read of this worker lands first (`conn::socket::read`): zeroed once.
    pub scratch: Box<[u8]>,
    /// The channel whose waiter set is taken out for a delivery (see `begin_delivery`).
    delivering: Option<Arc<str>>,
    /// Waiters that left that channel during the delivery: key, token, Talk name.
    left: Vec<(usize, usize, Option<Box<str>>)>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Worker {
        Worker {
            id,
            pool: BufPool::new(shared.metrics.clone()),
            shared,
            now: 0,
            timers: Timers::default(),
            pending: Vec::new(),
            again: Vec::new(),
            subs: HashMap::new(),
            date: DateCache::default(),
            shutting_down: false,
            wake_cache: WakeCache::default(),
            scratch: vec![0; crate::conn::socket::READ_CHUNK].into_boxed_slice(),
            delivering: None,
            left: Vec::new(),
            local: Vec::new(),
        }
    }

    /// Sends mail to a connection of any worker: through this worker's local list when it
    /// is here, else through its worker's mailbox.
    pub fn send(&mut self, to: WaiterRef, mail: Mail) {
        if to.worker == self.id {
            self.local.push(mail);
        } else {
            self.shared.hub.send(to.worker, mail);
        }
    }

    /// `now` plus a configured duration.
    pub fn after(&self, d: Duration) -> u64 {
        self.now
            .saturating_add(d.as_millis().min(u64::MAX as u128) as u64)
    }

    /// Adds a waiter to this worker's list for a channel; returns the shared channel name.
    pub fn join_channel(&mut self, channel: &str, key: usize) -> Arc<str> {
        let name = match self.subs.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Arc::from(channel),
        };
        self.subs.entry(name.clone()).or_default().insert(key);
        name
    }

    /// Removes a waiter from this worker's list and from the hub (for the channel being
    /// delivered, once the delivery ends).
    pub fn leave_channel(
        &mut self,
        channel: &Arc<str>,
        key: usize,
        token: usize,
        talk_name: Option<&str>,
    ) {
        if self.delivering.as_deref() == Some(&**channel) {
            self.left.push((key, token, talk_name.map(Box::from)));
            return;
        }
        let mut last = false;
        if let Some(keys) = self.subs.get_mut(channel) {
            // A set, so that answering every waiter of a channel stays linear.
            keys.remove(&key);
            if keys.is_empty() {
                self.subs.remove(channel);
                last = true;
            }
        }
        let me = WaiterRef {
            worker: self.id,
            token,
        };
        self.shared.hub.unsubscribe(channel, me, last, talk_name);
    }

    /// Takes a channel's waiters out of the list to deliver a message to each of them
    /// without copying the set; `end_delivery` puts them back. Between the two, waiters
    /// that leave the channel are noted, and waiters that join it go into a new set.
    pub fn begin_delivery(&mut self, channel: &str) -> Option<(Arc<str>, HashSet<usize>)> {
        let (name, keys) = self.subs.remove_entry(channel)?;
        self.delivering = Some(name.clone());
        Some((name, keys))
    }

    /// Puts a channel's waiters back after a delivery: without those that left, with those
    /// that joined; then tells the hub who left (and, if none is left, that this worker no
    /// longer waits there).
    pub fn end_delivery(&mut self, name: Arc<str>, mut keys: HashSet<usize>) {
        self.delivering = None;
        let left = std::mem::take(&mut self.left);
        for (key, _, _) in &left {
            keys.remove(key);
        }
        if let Some(joined) = self.subs.remove(&name) {
            keys.extend(joined);
        }
        let empty = keys.is_empty();
        if !empty {
            self.subs.insert(name.clone(), keys);
        }
        let n = left.len();
        for (i, (_, token, talk_name)) in left.into_iter().enumerate() {
            let me = WaiterRef {
                worker: self.id,
                token,
            };
            let last = empty && i + 1 == n;
            self.shared
                .hub
                .unsubscribe(&name, me, last, talk_name.as_deref());
        }
    }
}

/// What a worker shares, built for a worker driven without a reactor: a hub with one
/// mailbox (the caller drains it) and no waking. Used by the worker's tests, the connection
/// simulation (`conn/sim.rs`) and the machine fuzz harness (`fuzzing::machine`).
pub fn test_shared(config: Config) -> (Arc<Shared>, Arc<crate::hub::Mailbox>) {
    use crate::hub::{Limits, Mailbox, Notify};
    struct NoWake;
    impl Notify for NoWake {
        fn notify(&self) {}
    }
    let metrics = Arc::new(Metrics::default());
    let mailbox = Arc::new(Mailbox::new(Box::new(NoWake)));
    let limits = Limits::from_config(&config);
    let config_listen = config.listen;
    let hub = Arc::new(Hub::new(limits, vec![mailbox.clone()], metrics.clone()));
    let shared = Arc::new(Shared {
        config,
        hub,
        metrics,
        auth: Default::default(),
        open: Default::default(),
        xmpp: Default::default(),
        store: crate::store::Store::new(std::iter::empty::<(&str, &[u8])>()),
        bosh: Default::default(),
        status: crate::status::Status::new(config_listen, None),
    });
    (shared, mailbox)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Draft, Mailbox, Origin, Subscribe};

    fn worker() -> (Worker, Arc<Mailbox>) {
        let (shared, mailbox) = test_shared(Config::default());
        (Worker::new(0, shared), mailbox)
    }

    fn join(w: &mut Worker, channel: &str, key: usize) {
        let sub = Subscribe {
            worker: 0,
            token: key,
            since: None,
            talk_name: None,
        };
        w.shared.hub.subscribe(channel, sub).unwrap();
        w.join_channel(channel, key);
    }

    fn mail_after_publish(w: &Worker, mailbox: &Mailbox) -> usize {
        w.shared
            .hub
            .publish("c", vec![Draft::with_body("x")], Origin::Comet, false)
            .unwrap();
        let mut mail = Vec::new();
        mailbox.take(&mut mail);
        mail.len()
    }

    #[test]
    fn a_delivery_puts_back_who_stayed_and_who_joined() {
        let (mut w, mailbox) = worker();
        for key in [1, 2, 3] {
            join(&mut w, "c", key);
        }
        let (name, keys) = w.begin_delivery("c").unwrap();
        assert!(w.subs.is_empty());
        // 1 is answered and leaves; 2 is answered and parks again; 4 is new.
        w.leave_channel(&name, 1, 1, None);
        w.leave_channel(&name, 2, 2, None);
        join(&mut w, "c", 2);
        join(&mut w, "c", 4);
        w.end_delivery(name, keys);
        let mut now: Vec<usize> = w.subs["c"].iter().copied().collect();
        now.sort();
        assert_eq!(now, [2, 3, 4]);
        assert_eq!(
            mail_after_publish(&w, &mailbox),
            1,
            "the worker still waits on c"
        );
    }

    #[test]
    fn when_every_waiter_left_during_a_delivery_the_worker_stops_getting_mail() {
        let (mut w, mailbox) = worker();
        join(&mut w, "c", 1);
        join(&mut w, "c", 2);
        let (name, keys) = w.begin_delivery("c").unwrap();
        w.leave_channel(&name, 1, 1, None);
        w.leave_channel(&name, 2, 2, None);
        w.end_delivery(name, keys);
        assert!(w.subs.is_empty());
        assert_eq!(mail_after_publish(&w, &mailbox), 0);
    }
}
