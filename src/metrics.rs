//! Counters and gauges in one place, rendered at `GET /metrics` in the Prometheus text
//! format. One `Metrics` per server (tests run several servers in one process).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The protocol a request was routed to, for `tidings_requests_total{protocol=…}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Talk = 0,
    Qst = 1,
    Comet = 2,
    Other = 3,
}

const PROTOS: [&str; 4] = ["talk", "qst", "comet", "other"];
/// The statuses counted one by one; anything else is counted as "other".
const STATUSES: [u16; 15] = [
    100, 200, 204, 400, 401, 403, 404, 405, 408, 411, 413, 415, 431, 500, 503,
];

/// A gauge that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// A counter that only goes up.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub parked: Gauge,
    pub streaming: Gauge,
    pub channels: Gauge,
    requests: [[Counter; STATUSES.len() + 1]; 4],
    pub messages_published: Counter,
    pub messages_delivered: Counter,
    pub messages_dropped_retention: Counter,
    pub messages_unframeable: Counter,
    pub slow_readers_closed: Counter,
    pub heads_too_large: Counter,
    pub bodies_too_large: Counter,
    pub bad_requests: Counter,
    pub header_timeouts: Counter,
    pub idle_timeouts: Counter,
    pub long_poll_timeouts: Counter,
    pub streams_replaced: Counter,
    pub auth_failures: Counter,
    pub channels_refused: Counter,
    pub waiters_refused: Counter,
    pub queue_full: Counter,
    pub qst_acked: Counter,
    pub qst_failed: Counter,
    pub qst_expired: Counter,
    pub mailbox_wakes: Counter,
    pub bytes_written: Counter,
    pub internal_errors: Counter,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, proto: Proto, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[proto as usize][i].inc();
    }

    /// Requests answered so far with this protocol and status.
    pub fn requests(&self, proto: Proto, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(0, |i| self.requests[proto as usize][i].get())
    }

    /// The Prometheus text exposition of every counter and gauge.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let gauge = |s: &mut String, name: &str, help: &str, v: i64| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        gauge(
            &mut s,
            "tidings_connections_open",
            "Open client connections.",
            self.connections_open.get(),
        );
        gauge(
            &mut s,
            "tidings_connections_parked",
            "Requests parked in a long-poll.",
            self.parked.get(),
        );
        gauge(
            &mut s,
            "tidings_connections_streaming",
            "Open Talk streams.",
            self.streaming.get(),
        );
        gauge(
            &mut s,
            "tidings_channels",
            "Channels in the hub.",
            self.channels.get(),
        );
        gauge(
            &mut s,
            "tidings_resident_memory_bytes",
            "Resident set size of the process.",
            resident_bytes().map_or(-1, |b| b as i64),
        );

        s.push_str("# HELP tidings_requests_total Requests answered, by protocol and status.\n");
        s.push_str("# TYPE tidings_requests_total counter\n");
        for (p, name) in PROTOS.iter().enumerate() {
            for (i, counter) in self.requests[p].iter().enumerate() {
                let v = counter.get();
                if v == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(i)
                    .map_or("other".to_string(), |s| s.to_string());
                let _ = writeln!(
                    s,
                    "tidings_requests_total{{protocol=\"{name}\",status=\"{status}\"}} {v}"
                );
            }
        }

        let counters: [(&str, &str, &Counter); 24] = [
            (
                "tidings_connections_accepted_total",
                "Connections accepted.",
                &self.connections_accepted,
            ),
            (
                "tidings_connections_refused_total",
                "Connections refused past --max-connections.",
                &self.connections_refused,
            ),
            (
                "tidings_messages_published_total",
                "Messages stored in a channel.",
                &self.messages_published,
            ),
            (
                "tidings_messages_delivered_total",
                "Messages queued to a subscriber connection.",
                &self.messages_delivered,
            ),
            (
                "tidings_messages_dropped_retention_total",
                "Messages dropped by channel retention.",
                &self.messages_dropped_retention,
            ),
            (
                "tidings_messages_unframeable_total",
                "Messages not sent to Talk streams because they hold the terminator.",
                &self.messages_unframeable,
            ),
            (
                "tidings_slow_readers_closed_total",
                "Connections closed because their output passed --max-output-bytes.",
                &self.slow_readers_closed,
            ),
            (
                "tidings_heads_too_large_total",
                "Request heads over --max-head-bytes (431).",
                &self.heads_too_large,
            ),
            (
                "tidings_bodies_too_large_total",
                "Request bodies over --max-body-bytes (413).",
                &self.bodies_too_large,
            ),
            (
                "tidings_bad_requests_total",
                "Malformed requests (400).",
                &self.bad_requests,
            ),
            (
                "tidings_header_timeouts_total",
                "Connections closed in the middle of a request by --header-timeout.",
                &self.header_timeouts,
            ),
            (
                "tidings_idle_timeouts_total",
                "Keep-alive connections closed by --idle-timeout.",
                &self.idle_timeouts,
            ),
            (
                "tidings_long_poll_timeouts_total",
                "Parked requests answered at their timeout.",
                &self.long_poll_timeouts,
            ),
            (
                "tidings_streams_replaced_total",
                "Talk streams ended by a newer pull of the same name.",
                &self.streams_replaced,
            ),
            (
                "tidings_auth_failures_total",
                "Requests refused with 401.",
                &self.auth_failures,
            ),
            (
                "tidings_channels_refused_total",
                "Channel creations refused past --max-channels.",
                &self.channels_refused,
            ),
            (
                "tidings_waiters_refused_total",
                "Streams or parked requests refused past --max-streams-per-channel.",
                &self.waiters_refused,
            ),
            (
                "tidings_queue_full_total",
                "QST pushes refused with 503 because the queue was full.",
                &self.queue_full,
            ),
            (
                "tidings_qst_acked_total",
                "QST messages acknowledged.",
                &self.qst_acked,
            ),
            (
                "tidings_qst_failed_total",
                "QST messages reported failed by a v1 client.",
                &self.qst_failed,
            ),
            (
                "tidings_qst_expired_total",
                "QST messages dropped after --qst-max-tries deliveries.",
                &self.qst_expired,
            ),
            (
                "tidings_mailbox_wakes_total",
                "Wake-ups of a worker for deliveries.",
                &self.mailbox_wakes,
            ),
            (
                "tidings_bytes_written_total",
                "Bytes written to client sockets.",
                &self.bytes_written,
            ),
            (
                "tidings_internal_errors_total",
                "Internal invariant breaks (should stay 0).",
                &self.internal_errors,
            ),
        ];
        for (name, help, c) in counters {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                c.get()
            );
        }
        s
    }
}

/// The resident set size of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labels() {
        let m = Metrics::default();
        m.request(Proto::Talk, 200);
        m.request(Proto::Talk, 200);
        m.request(Proto::Qst, 418);
        m.slow_readers_closed.inc();
        let text = m.render();
        assert!(text.contains("tidings_requests_total{protocol=\"talk\",status=\"200\"} 2\n"));
        assert!(text.contains("tidings_requests_total{protocol=\"qst\",status=\"other\"} 1\n"));
        assert!(text.contains("tidings_slow_readers_closed_total 1\n"));
        assert_eq!(m.requests(Proto::Talk, 200), 2);
    }
}
