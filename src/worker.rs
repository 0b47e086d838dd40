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
use crate::hub::{Hub, WaiterRef};
use crate::metrics::Metrics;
use crate::proto::{self, Ctx, WakeCache};

/// What the server owns and every worker shares.
pub struct Shared {
    pub config: Config,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub auth: proto::auth::Auth,
    /// Connections open on all workers (for `--max-connections`).
    pub open: AtomicUsize,
}

impl Shared {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            hub: &self.hub,
            config: &self.config,
            metrics: &self.metrics,
            auth: &self.auth,
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
    /// Answers shared by the comet `get`s one delivery wakes.
    pub wake_cache: WakeCache,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Worker {
        Worker {
            id,
            shared,
            now: 0,
            timers: Timers::default(),
            pending: Vec::new(),
            again: Vec::new(),
            subs: HashMap::new(),
            pool: BufPool::default(),
            date: DateCache::default(),
            shutting_down: false,
            wake_cache: WakeCache::default(),
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

    /// Removes a waiter from this worker's list and from the hub.
    pub fn leave_channel(
        &mut self,
        channel: &Arc<str>,
        key: usize,
        token: usize,
        talk_name: Option<&str>,
    ) {
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
}
