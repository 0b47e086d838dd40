//! QST queue state of a channel (PROTOCOLS.md 0.2 and 1.4): a cumulative acknowledgement
//! cursor over the channel log, plus the messages above it that left the queue one by one
//! (v1 `confirmed` and `failed` ids, or too many tries). Every other message above the
//! cursor is unacknowledged, and retention never drops it.
//!
//! The queue keeps a running count of its pending (unacknowledged, not done) messages, so
//! `pending` is O(1): every change of a message's state goes through a method here that
//! adjusts it (`push`, `ack`, expiry in `take`). Debug builds check it against a recount over
//! the log after each of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::Message;

#[derive(Debug, Default)]
pub struct Queue {
    /// Every message with `seq <= acked` is acknowledged (or failed, or expired).
    acked: u64,
    /// The acknowledged message with the highest `seq` (by the cumulative cursor or a v1
    /// `confirmed` id; never a failed or expired one), reported as `ETag` on an empty pull.
    acked_id: Option<(u64, String)>,
    /// Messages above `acked` that left the queue individually.
    done: BTreeSet<u64>,
    /// Deliveries of messages above `acked` (only counted when tries are capped).
    tries: BTreeMap<u64, u32>,
    /// 64-bit hashes of the ids in the channel log, with how many messages carry each: a
    /// push checks for known ids without scanning the log. (With 32-bit hashes a queue of
    /// 400,000 messages made one push in 10,000 scan the whole log for a collision: 5 % of
    /// the server's samples in a push benchmark.)
    ids: HashMap<u64, u32>,
    /// Messages above `acked` that are not `done`: what a pull would return.
    pending: usize,
}

/// The hash of a message id in the queue's id index.
pub fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// How a pull acknowledges.
#[derive(Debug, Default)]
pub struct Ack<'a> {
    /// Cumulative: this id and everything before it.
    pub upto: Option<&'a str>,
    /// v1: these ids one by one.
    pub confirmed: &'a [String],
    /// v1: these ids leave the queue as failed.
    pub failed: &'a [String],
}

impl Ack<'_> {
    /// Whether it acknowledges nothing at all.
    pub fn is_empty(&self) -> bool {
        self.upto.is_none() && self.confirmed.is_empty() && self.failed.is_empty()
    }
}

/// What a pull changed, for the metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AckCounts {
    pub acked: u64,
    pub failed: u64,
    pub expired: u64,
}

impl Queue {
    /// A queue that holds every message with `seq > acked`. The messages already in the log
    /// above `acked` must each be added with `push`.
    pub fn new(acked: u64) -> Queue {
        Queue {
            acked,
            ..Queue::default()
        }
    }

    /// Records a message just appended to the channel log (its `seq` above every other):
    /// it is pending, and its id is known.
    pub fn push(&mut self, msg: &Message) {
        debug_assert!(msg.seq > self.acked);
        self.note_id(&msg.id);
        self.pending += 1;
    }

    /// Records that the channel log holds a message with this id.
    fn note_id(&mut self, id: &str) {
        *self.ids.entry(id_hash(id)).or_insert(0) += 1;
    }

    /// Records that a message with this id left the channel log.
    pub fn forget_id(&mut self, id: &str) {
        let h = id_hash(id);
        if let Some(n) = self.ids.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(&h);
            }
        }
    }

    /// Whether the log may hold an id with this hash (false: it certainly does not).
    pub fn may_hold_id(&self, hash: u64) -> bool {
        self.ids.contains_key(&hash)
    }

    /// The state a durable log keeps (`storage::Record::Queue`): the cursor, the last
    /// acknowledged message, the messages done one by one, and the tries counted.
    #[allow(clippy::type_complexity)]
    pub fn state(
        &self,
    ) -> (
        u64,
        Option<(u64, &str)>,
        &BTreeSet<u64>,
        &BTreeMap<u64, u32>,
    ) {
        let acked_id = self.acked_id.as_ref().map(|(s, id)| (*s, id.as_str()));
        (self.acked, acked_id, &self.done, &self.tries)
    }

    /// A queue with a state read back from the log. Its id index and pending count are
    /// made by `rebuild` once the channel's log is replayed.
    pub fn restored(
        acked: u64,
        acked_id: Option<(u64, String)>,
        done: BTreeSet<u64>,
        tries: BTreeMap<u64, u32>,
    ) -> Queue {
        Queue {
            acked,
            acked_id,
            done,
            tries,
            ..Queue::default()
        }
    }

    /// Makes the id index and the pending count again from the channel log (after replay).
    pub fn rebuild(&mut self, log: &VecDeque<Arc<Message>>) {
        self.ids.clear();
        for m in log {
            self.note_id(&m.id);
        }
        let start = self.start(log);
        let acked = self.acked;
        self.done
            .retain(|&seq| seq > acked && log.binary_search_by_key(&seq, |m| m.seq).is_ok());
        self.pending = log.len() - start - self.done.len();
    }

    /// Whether the queue still holds this message unacknowledged.
    pub fn holds(&self, seq: u64) -> bool {
        seq > self.acked && !self.done.contains(&seq)
    }

    /// The id to report as `ETag` when a pull returns nothing: the acknowledged message
    /// with the highest `seq` (PROTOCOLS.md 1.4), however it was acknowledged.
    pub fn acked_id(&self) -> Option<&str> {
        self.acked_id.as_ref().map(|(_, id)| id.as_str())
    }

    /// Unacknowledged messages in the log. O(1).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Counts the pending messages the slow way, to check the running count.
    pub(crate) fn recount(&self, log: &VecDeque<Arc<Message>>) -> usize {
        log.len() - self.start(log) - self.done.len()
    }

    fn check(&self, log: &VecDeque<Arc<Message>>) {
        debug_assert_eq!(self.pending, self.recount(log), "running pending count");
    }

    /// Index of the first message above the cursor.
    fn start(&self, log: &VecDeque<Arc<Message>>) -> usize {
        log.partition_point(|m| m.seq <= self.acked)
    }

    fn position(&self, log: &VecDeque<Arc<Message>>, id: &str) -> Option<usize> {
        let start = self.start(log);
        log.range(start..)
            .position(|m| m.id == id)
            .map(|i| start + i)
    }

    /// Moves the cursor to `seq`, forgetting per-message state below it.
    fn advance(&mut self, seq: u64) {
        self.acked = seq;
        self.done = self.done.split_off(&(seq + 1));
        self.tries = self.tries.split_off(&(seq + 1));
    }

    /// Remembers an acknowledged message for the `ETag` of an empty pull.
    fn note_acked(&mut self, msg: &Message) {
        if self.acked_id.as_ref().is_none_or(|(seq, _)| msg.seq > *seq) {
            self.acked_id = Some((msg.seq, msg.id.to_string()));
        }
    }

    /// Applies acknowledgements. Unknown ids are ignored.
    pub fn ack(&mut self, log: &VecDeque<Arc<Message>>, ack: &Ack<'_>) -> AckCounts {
        let mut counts = AckCounts::default();
        if let Some(id) = ack.upto {
            if let Some(i) = self.position(log, id) {
                let start = self.start(log);
                let newly = log
                    .range(start..=i)
                    .filter(|m| !self.done.contains(&m.seq))
                    .count();
                counts.acked += newly as u64;
                self.pending -= newly;
                self.note_acked(&log[i]);
                self.advance(log[i].seq);
            }
        }
        for (ids, failed) in [(ack.confirmed, false), (ack.failed, true)] {
            for id in ids {
                if let Some(i) = self.position(log, id) {
                    if self.done.insert(log[i].seq) {
                        self.pending -= 1;
                        if failed {
                            counts.failed += 1;
                        } else {
                            counts.acked += 1;
                            self.note_acked(&log[i]);
                        }
                    }
                }
            }
        }
        self.compact(log);
        self.check(log);
        counts
    }

    /// Moves the cursor over a leading run of messages that left one by one. The `ETag`
    /// of an empty pull is not changed: it names an acknowledged message, and the run may
    /// end with a failed one.
    fn compact(&mut self, log: &VecDeque<Arc<Message>>) {
        let start = self.start(log);
        let mut last = None;
        for m in log.range(start..) {
            if !self.done.contains(&m.seq) {
                break;
            }
            last = Some(m.seq);
        }
        if let Some(seq) = last {
            self.advance(seq);
        }
    }

    /// The pending messages, oldest first, at most `max`, counting a try for each when
    /// `max_tries` caps them; messages already tried `max_tries` times leave first.
    pub fn take(
        &mut self,
        log: &VecDeque<Arc<Message>>,
        max: usize,
        max_tries: u32,
        counts: &mut AckCounts,
    ) -> Vec<Arc<Message>> {
        if max_tries > 0 {
            let start = self.start(log);
            let expired: Vec<u64> = log
                .range(start..)
                .filter(|m| !self.done.contains(&m.seq))
                .take_while(|m| self.tries.get(&m.seq).is_some_and(|&t| t >= max_tries))
                .map(|m| m.seq)
                .collect();
            counts.expired += expired.len() as u64;
            self.pending -= expired.len();
            self.done.extend(expired);
            self.compact(log);
        }
        let start = self.start(log);
        let out: Vec<Arc<Message>> = log
            .range(start..)
            .filter(|m| !self.done.contains(&m.seq))
            .take(max)
            .cloned()
            .collect();
        if max_tries > 0 {
            for m in &out {
                *self.tries.entry(m.seq).or_insert(0) += 1;
            }
        }
        self.check(log);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Draft, Origin};

    fn log(ids: &[&str]) -> VecDeque<Arc<Message>> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                Arc::new(Message::new(
                    i as u64 + 1,
                    id.to_string(),
                    0,
                    Origin::Qst,
                    Draft::default(),
                ))
            })
            .collect()
    }

    /// A queue over the whole log, as `make_queue` builds one.
    fn queue(log: &VecDeque<Arc<Message>>) -> Queue {
        let mut q = Queue::new(0);
        for m in log {
            q.push(m);
        }
        q
    }

    fn ids(msgs: &[Arc<Message>]) -> Vec<&str> {
        msgs.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn cumulative_ack_and_redelivery() {
        let l = log(&["a", "b", "c", "d"]);
        let mut q = queue(&l);
        let mut c = AckCounts::default();
        assert_eq!(ids(&q.take(&l, 2, 0, &mut c)), ["a", "b"]);
        assert_eq!(
            ids(&q.take(&l, 2, 0, &mut c)),
            ["a", "b"],
            "redelivered until acked"
        );
        let n = q.ack(
            &l,
            &Ack {
                upto: Some("b"),
                ..Ack::default()
            },
        );
        assert_eq!(n.acked, 2);
        assert_eq!(ids(&q.take(&l, 10, 0, &mut c)), ["c", "d"]);
        assert_eq!(q.pending(), 2);
        assert_eq!(q.acked_id(), Some("b"));
        // Unknown and already-acknowledged ids change nothing.
        assert_eq!(
            q.ack(
                &l,
                &Ack {
                    upto: Some("zz"),
                    ..Ack::default()
                }
            ),
            AckCounts::default()
        );
        assert_eq!(
            q.ack(
                &l,
                &Ack {
                    upto: Some("a"),
                    ..Ack::default()
                }
            ),
            AckCounts::default()
        );
        assert_eq!(q.pending(), 2);
    }

    #[test]
    fn confirmed_and_failed_one_by_one() {
        let l = log(&["a", "b", "c"]);
        let mut q = queue(&l);
        let confirmed = vec!["b".to_string()];
        let failed = vec!["a".to_string()];
        let n = q.ack(
            &l,
            &Ack {
                upto: None,
                confirmed: &confirmed,
                failed: &failed,
            },
        );
        assert_eq!(
            n,
            AckCounts {
                acked: 1,
                failed: 1,
                expired: 0
            }
        );
        assert!(!q.holds(1) && !q.holds(2) && q.holds(3));
        let mut c = AckCounts::default();
        assert_eq!(ids(&q.take(&l, 10, 0, &mut c)), ["c"]);
        assert_eq!(q.pending(), 1);
    }

    #[test]
    fn capped_tries_expire_the_head() {
        let l = log(&["a", "b"]);
        let mut q = queue(&l);
        let mut c = AckCounts::default();
        assert_eq!(ids(&q.take(&l, 1, 2, &mut c)), ["a"]);
        assert_eq!(ids(&q.take(&l, 1, 2, &mut c)), ["a"]);
        assert_eq!(ids(&q.take(&l, 1, 2, &mut c)), ["b"]);
        assert_eq!(c.expired, 1);
        assert_eq!(q.pending(), 1);
    }

    #[test]
    fn an_empty_pull_after_v1_confirmations_reports_the_last_confirmed_id() {
        let l = log(&["a", "b", "c", "d"]);
        let mut q = queue(&l);
        let confirmed = vec!["a".to_string(), "c".to_string()];
        let failed = vec!["b".to_string()];
        q.ack(
            &l,
            &Ack {
                upto: None,
                confirmed: &confirmed,
                failed: &failed,
            },
        );
        assert_eq!(q.acked_id(), Some("c"), "confirmed ids are acknowledged");
        // A failure is not an acknowledgement: the ETag stays on the last confirmed id.
        let failed = vec!["d".to_string()];
        q.ack(
            &l,
            &Ack {
                failed: &failed,
                ..Ack::default()
            },
        );
        let mut c = AckCounts::default();
        assert!(q.take(&l, 10, 0, &mut c).is_empty());
        assert_eq!(q.pending(), 0);
        assert_eq!(q.acked_id(), Some("c"));
        // A cumulative ack of an older id does not move the ETag back.
        let mut q = queue(&l);
        let confirmed = vec!["c".to_string()];
        q.ack(
            &l,
            &Ack {
                confirmed: &confirmed,
                ..Ack::default()
            },
        );
        q.ack(
            &l,
            &Ack {
                upto: Some("b"),
                ..Ack::default()
            },
        );
        assert_eq!(q.acked_id(), Some("c"));
        assert_eq!(ids(&q.take(&l, 10, 0, &mut c)), ["d"]);
    }

    /// The naive queue: every message ever pushed with its state, searched linearly.
    mod oracle {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum State {
            Pending,
            Acked,
            /// Failed or expired.
            Gone,
        }

        #[derive(Debug, Default)]
        pub struct Model {
            /// (seq, id, state, tries), in seq order.
            pub msgs: Vec<(u64, String, State, u32)>,
            pub cursor: u64,
            pub last_acked: Option<(u64, String)>,
        }

        impl Model {
            pub fn pending(&self) -> usize {
                self.msgs.iter().filter(|m| m.2 == State::Pending).count()
            }

            fn find(&self, id: &str) -> Option<usize> {
                self.msgs
                    .iter()
                    .position(|m| m.0 > self.cursor && m.1 == id)
            }

            fn acked(&mut self, i: usize) {
                let (seq, id) = (self.msgs[i].0, self.msgs[i].1.clone());
                if self.last_acked.as_ref().is_none_or(|(s, _)| seq > *s) {
                    self.last_acked = Some((seq, id));
                }
            }

            fn compact(&mut self) {
                let cursor = self.cursor;
                for m in self.msgs.iter().filter(|m| m.0 > cursor) {
                    if m.2 == State::Pending {
                        break;
                    }
                    self.cursor = m.0;
                }
            }

            /// Returns (acked, failed).
            pub fn ack(
                &mut self,
                upto: Option<&str>,
                confirmed: &[String],
                failed: &[String],
            ) -> (u64, u64) {
                let (mut acked, mut gone) = (0, 0);
                if let Some(i) = upto.and_then(|id| self.find(id)) {
                    for m in self.msgs[..=i].iter_mut() {
                        if m.2 == State::Pending {
                            m.2 = State::Acked;
                            acked += 1;
                        }
                    }
                    self.cursor = self.msgs[i].0;
                    self.acked(i);
                }
                for (ids, fail) in [(confirmed, false), (failed, true)] {
                    for id in ids {
                        let Some(i) = self.find(id) else { continue };
                        if self.msgs[i].2 != State::Pending {
                            continue;
                        }
                        if fail {
                            self.msgs[i].2 = State::Gone;
                            gone += 1;
                        } else {
                            self.msgs[i].2 = State::Acked;
                            acked += 1;
                            self.acked(i);
                        }
                    }
                }
                self.compact();
                (acked, gone)
            }

            /// Returns the ids taken and how many expired.
            pub fn take(&mut self, max: usize, max_tries: u32) -> (Vec<String>, u64) {
                let mut expired = 0;
                if max_tries > 0 {
                    for m in self.msgs.iter_mut().filter(|m| m.2 == State::Pending) {
                        if m.3 < max_tries {
                            break;
                        }
                        m.2 = State::Gone;
                        expired += 1;
                    }
                    self.compact();
                }
                let mut out = Vec::new();
                for m in self
                    .msgs
                    .iter_mut()
                    .filter(|m| m.2 == State::Pending)
                    .take(max)
                {
                    if max_tries > 0 {
                        m.3 += 1;
                    }
                    out.push(m.1.clone());
                }
                (out, expired)
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(usize),
        Upto(usize),
        Confirm(Vec<usize>),
        Fail(Vec<usize>),
        Take(usize),
        Retain(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1..4usize).prop_map(Op::Push),
            any::<usize>().prop_map(Op::Upto),
            proptest::collection::vec(any::<usize>(), 0..4).prop_map(Op::Confirm),
            proptest::collection::vec(any::<usize>(), 0..3).prop_map(Op::Fail),
            (1..5usize).prop_map(Op::Take),
            (0..8usize).prop_map(Op::Retain),
        ]
    }

    proptest::proptest! {
        /// The running pending count, the pulls, the counts and the `ETag` of an empty pull
        /// agree with the naive model after any sequence of pushes, acknowledgements, pulls
        /// and retention.
        #[test]
        fn the_queue_agrees_with_a_naive_model(
            ops in proptest::collection::vec(op(), 1..60),
            max_tries in 0..3u32,
        ) {
            use oracle::{Model, State};
            let mut l: VecDeque<Arc<Message>> = VecDeque::new();
            let mut q = Queue::new(0);
            let mut model = Model::default();
            let mut seq = 0;
            // An index into every id ever pushed, or an unknown id.
            let pick = |model: &Model, k: usize| -> String {
                match k % (model.msgs.len() + 1) {
                    i if i == model.msgs.len() => "unknown".to_string(),
                    i => model.msgs[i].1.clone(),
                }
            };
            for op in ops {
                match op {
                    Op::Push(n) => {
                        for _ in 0..n {
                            seq += 1;
                            let id = format!("m{seq}");
                            let m = Message::new(seq, id.clone(), 0, Origin::Qst, Draft::default());
                            q.push(&m);
                            l.push_back(Arc::new(m));
                            model.msgs.push((seq, id, State::Pending, 0));
                        }
                    }
                    Op::Upto(k) => {
                        let id = pick(&model, k);
                        let c = q.ack(&l, &Ack { upto: Some(&id), ..Ack::default() });
                        let (acked, failed) = model.ack(Some(&id), &[], &[]);
                        proptest::prop_assert_eq!((c.acked, c.failed), (acked, failed));
                    }
                    Op::Confirm(ks) | Op::Fail(ks) if ks.is_empty() => {}
                    Op::Confirm(ks) => {
                        let ids: Vec<String> = ks.iter().map(|&k| pick(&model, k)).collect();
                        let c = q.ack(&l, &Ack { confirmed: &ids, ..Ack::default() });
                        let (acked, failed) = model.ack(None, &ids, &[]);
                        proptest::prop_assert_eq!((c.acked, c.failed), (acked, failed));
                    }
                    Op::Fail(ks) => {
                        let ids: Vec<String> = ks.iter().map(|&k| pick(&model, k)).collect();
                        let c = q.ack(&l, &Ack { failed: &ids, ..Ack::default() });
                        let (acked, failed) = model.ack(None, &[], &ids);
                        proptest::prop_assert_eq!((c.acked, c.failed), (acked, failed));
                    }
                    Op::Take(max) => {
                        let mut c = AckCounts::default();
                        let got = q.take(&l, max, max_tries, &mut c);
                        let (want, expired) = model.take(max, max_tries);
                        proptest::prop_assert_eq!(ids(&got), want);
                        proptest::prop_assert_eq!(c.expired, expired);
                    }
                    Op::Retain(cap) => {
                        // As `ChannelStore::retain`: never a message the queue holds.
                        while l.len() > cap && l.front().is_some_and(|m| !q.holds(m.seq)) {
                            if let Some(m) = l.pop_front() {
                                q.forget_id(&m.id);
                            }
                        }
                    }
                }
                proptest::prop_assert_eq!(q.pending(), q.recount(&l));
                proptest::prop_assert_eq!(q.pending(), model.pending());
                proptest::prop_assert_eq!(
                    q.acked_id(),
                    model.last_acked.as_ref().map(|(_, id)| id.as_str())
                );
            }
        }
    }
}
