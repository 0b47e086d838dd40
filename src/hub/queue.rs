//! QST queue state of a channel (PROTOCOLS.md 0.2 and 1.4): a cumulative acknowledgement
//! cursor over the channel log, plus the messages above it that left the queue one by one
//! (v1 `confirmed` and `failed` ids, or too many tries). Every other message above the
//! cursor is unacknowledged, and retention never drops it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::Message;

#[derive(Debug, Default)]
pub struct Queue {
    /// Every message with `seq <= acked` is acknowledged.
    acked: u64,
    /// The id of the last acknowledged message, reported as `ETag` on an empty pull.
    acked_id: Option<String>,
    /// Messages above `acked` that left the queue individually.
    done: BTreeSet<u64>,
    /// Deliveries of messages above `acked` (only counted when tries are capped).
    tries: BTreeMap<u64, u32>,
    /// Hashes of the ids in the channel log, with how many messages carry each: a push
    /// checks for known ids without scanning the log (8 + 4 bytes a message).
    ids: HashMap<u64, u32>,
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

/// What a pull changed, for the metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AckCounts {
    pub acked: u64,
    pub failed: u64,
    pub expired: u64,
}

impl Queue {
    /// A queue that holds every message with `seq > acked`.
    pub fn new(acked: u64) -> Queue {
        Queue {
            acked,
            ..Queue::default()
        }
    }

    /// Records that the channel log holds a message with this id.
    pub fn note_id(&mut self, id: &str) {
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

    /// Whether the queue still holds this message unacknowledged.
    pub fn holds(&self, seq: u64) -> bool {
        seq > self.acked && !self.done.contains(&seq)
    }

    /// The id to report as `ETag` when a pull returns nothing.
    pub fn acked_id(&self) -> Option<&str> {
        self.acked_id.as_deref()
    }

    /// Index of the first message above the cursor.
    fn start(&self, log: &VecDeque<Arc<Message>>) -> usize {
        log.partition_point(|m| m.seq <= self.acked)
    }

    /// Unacknowledged messages in the log.
    pub fn pending(&self, log: &VecDeque<Arc<Message>>) -> usize {
        log.len() - self.start(log) - self.done.len()
    }

    fn position(&self, log: &VecDeque<Arc<Message>>, id: &str) -> Option<usize> {
        let start = self.start(log);
        log.range(start..)
            .position(|m| m.id == id)
            .map(|i| start + i)
    }

    /// Moves the cursor to `seq`, forgetting per-message state below it.
    fn advance(&mut self, seq: u64, id: &str) {
        self.acked = seq;
        self.acked_id = Some(id.to_string());
        self.done = self.done.split_off(&(seq + 1));
        self.tries = self.tries.split_off(&(seq + 1));
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
                self.advance(log[i].seq, id);
            }
        }
        for (ids, failed) in [(ack.confirmed, false), (ack.failed, true)] {
            for id in ids {
                if let Some(i) = self.position(log, id) {
                    if self.done.insert(log[i].seq) {
                        if failed {
                            counts.failed += 1;
                        } else {
                            counts.acked += 1;
                        }
                    }
                }
            }
        }
        self.compact(log);
        counts
    }

    /// Moves the cursor over a leading run of messages that left one by one.
    fn compact(&mut self, log: &VecDeque<Arc<Message>>) {
        let start = self.start(log);
        let mut last = None;
        for m in log.range(start..) {
            if !self.done.contains(&m.seq) {
                break;
            }
            last = Some(m);
        }
        if let Some(m) = last {
            let keep_id = self.acked_id.clone();
            self.advance(m.seq, &m.id);
            // A failure is not an acknowledgement: keep reporting the last acked id.
            self.acked_id = keep_id;
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

    fn ids(msgs: &[Arc<Message>]) -> Vec<&str> {
        msgs.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn cumulative_ack_and_redelivery() {
        let l = log(&["a", "b", "c", "d"]);
        let mut q = Queue::new(0);
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
        assert_eq!(q.pending(&l), 2);
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
        assert_eq!(q.pending(&l), 2);
    }

    #[test]
    fn confirmed_and_failed_one_by_one() {
        let l = log(&["a", "b", "c"]);
        let mut q = Queue::new(0);
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
        assert_eq!(q.pending(&l), 1);
    }

    #[test]
    fn capped_tries_expire_the_head() {
        let l = log(&["a", "b"]);
        let mut q = Queue::new(0);
        let mut c = AckCounts::default();
        assert_eq!(ids(&q.take(&l, 1, 2, &mut c)), ["a"]);
        assert_eq!(ids(&q.take(&l, 1, 2, &mut c)), ["a"]);
        assert_eq!(ids(&q.take(&l, 1, 2, &mut c)), ["b"]);
        assert_eq!(c.expired, 1);
        assert_eq!(q.pending(&l), 1);
    }
}
