//! QST queue state of a channel (PROTOCOLS.md 0.2 and 1.4): a cumulative acknowledgement
//! cursor over the channel log. Every message with `seq` above the cursor is unacknowledged,
//! and retention never drops it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Message;

#[derive(Debug, Default)]
pub struct Queue {
    /// Every message with `seq <= acked` is acknowledged.
    pub acked: u64,
    /// The id of the last acknowledged message, reported as `ETag` on an empty pull.
    pub acked_id: Option<String>,
}

impl Queue {
    /// A queue that holds every message with `seq > acked`.
    pub fn new(acked: u64) -> Queue {
        Queue {
            acked,
            acked_id: None,
        }
    }

    /// Makes every message from `first_seq` on unacknowledged (a channel becoming a queue
    /// keeps what it already holds).
    pub fn reset_to_before(&mut self, first_seq: u64) {
        self.acked = first_seq.saturating_sub(1);
    }

    /// Whether the queue still holds this message unacknowledged.
    pub fn holds(&self, seq: u64) -> bool {
        seq > self.acked
    }

    /// Unacknowledged messages in the log.
    pub fn pending(&self, log: &VecDeque<Arc<Message>>) -> usize {
        log.len() - log.partition_point(|m| m.seq <= self.acked)
    }
}
