//! Counters and gauges in one place, rendered at `GET /metrics` in the Prometheus text
//! format. One `Metrics` per server (tests run several servers in one process).

use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The protocol a request was routed to, for `tidings_requests_total{protocol=…}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Talk = 0,
    Qst = 1,
    Comet = 2,
    Other = 3,
    Nchan = 4,
}

const PROTOS: [&str; 5] = ["talk", "qst", "comet", "other", "nchan"];
/// The statuses counted one by one; anything else is counted as "other".
const STATUSES: [u16; 16] = [
    100, 200, 204, 400, 401, 403, 404, 405, 408, 411, 413, 415, 431, 500, 501, 503,
];

/// Slots per counter and gauge. Each thread that counts adds to one slot of its own (see
/// `slot`), so worker threads do not fight over one cache line per count; reading sums the
/// slots. 8 slots keep a typical server (2 to 8 workers) contention-free while `Metrics` stays
/// under 64 KiB: 92 cells (4 gauges, 24 counters, 64 request counters) × 8 slots × 64 B is
/// 46 KiB, where 64 slots would be 368 KiB per server. With more threads than slots, threads
/// share a slot: the sums stay exact, only contention comes back.
pub const SLOTS: usize = 8;

/// One atomic on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Padded<A>(A);

/// The next slot index to hand to a thread that counts for the first time.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot, `usize::MAX` until the thread first counts.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The slot of the calling thread: given once per thread, round-robin over `SLOTS`.
#[inline]
fn slot() -> usize {
    SLOT.with(|s| {
        let i = s.get();
        if i < SLOTS {
            return i;
        }
        let i = NEXT_SLOT.fetch_add(1, Relaxed) % SLOTS;
        s.set(i);
        i
    })
}

/// A gauge that goes up and down. A thread's slot may go negative (a connection opened on
/// one thread and closed on another); the sum is the value.
#[derive(Default)]
pub struct Gauge([Padded<AtomicI64>; SLOTS]);

impl Gauge {
    pub fn inc(&self) {
        self.0[slot()].0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0[slot()].0.fetch_sub(1, Relaxed);
    }
    /// Moves the gauge by `n` (up or down).
    pub fn add(&self, n: i64) {
        self.0[slot()].0.fetch_add(n, Relaxed);
    }
    /// The sum over all slots: exact once the threads that changed it are quiet. While they
    /// are not, the slots are read one by one, so a change that moves between slots during
    /// the read (up on one thread, down on another) may be seen half: off by what changed
    /// during the read, as any scrape of a moving gauge is.
    pub fn get(&self) -> i64 {
        self.0
            .iter()
            .fold(0i64, |sum, s| sum.wrapping_add(s.0.load(Relaxed)))
    }
}

/// A counter that only goes up.
#[derive(Default)]
pub struct Counter([Padded<AtomicU64>; SLOTS]);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0[slot()].0.fetch_add(n, Relaxed);
    }
    /// The sum over all slots (never less than a value read before).
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Relaxed)))
    }
}

/// A counter or gauge on one atomic, for what one thread mostly writes (the `--data-dir`
/// log's sync and compaction threads): no slot per thread, so it costs 8 bytes, not 512.
#[derive(Default)]
pub struct Single(AtomicU64);

impl Single {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    /// Sets a gauge.
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
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
    /// Bytes the hub's retained messages count against `--retained-bytes`.
    pub retained_bytes: Gauge,
    /// Bytes held by read buffers, in use and pooled.
    pub read_buffer_bytes: Gauge,
    /// Authenticated XMPP sessions.
    pub xmpp_sessions: Gauge,
    /// BOSH sessions (PROTOCOLS.md 4.5), authenticated or not.
    pub bosh_sessions: Gauge,
    requests: [[Counter; STATUSES.len() + 1]; PROTOS.len()],
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
    pub bosh_sessions_refused: Counter,
    pub bosh_inactive: Counter,
    pub queue_full: Counter,
    pub qst_acked: Counter,
    pub qst_failed: Counter,
    pub qst_expired: Counter,
    pub mailbox_wakes: Counter,
    pub bytes_written: Counter,
    pub internal_errors: Counter,
    pub messages_evicted: Counter,
    pub messages_expired: Counter,
    pub memory_refusals: Counter,
    /// Publishes refused because `--redis` did not store them.
    pub redis_refusals: Counter,
    /// Messages a node read back from Redis's log rather than hearing them notified.
    pub redis_caught_up: Counter,
    /// Bytes of the `--data-dir` log's segments and snapshots.
    pub storage_log_bytes: Single,
    pub storage_syncs: Single,
    pub storage_sync_micros: Single,
    pub storage_bytes_written: Single,
    pub storage_compactions: Single,
    pub storage_errors: Single,
    pub storage_refusals: Single,
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
            "tidings_retained_bytes",
            "Bytes of retained messages, as counted against --retained-bytes.",
            self.retained_bytes.get(),
        );
        gauge(
            &mut s,
            "tidings_xmpp_sessions",
            "Authenticated XMPP sessions.",
            self.xmpp_sessions.get(),
        );
        gauge(
            &mut s,
            "tidings_bosh_sessions",
            "BOSH sessions, authenticated or not.",
            self.bosh_sessions.get(),
        );
        gauge(
            &mut s,
            "tidings_read_buffer_bytes",
            "Bytes held by request read buffers, in use and pooled.",
            self.read_buffer_bytes.get(),
        );
        gauge(
            &mut s,
            "tidings_storage_log_bytes",
            "Bytes of the --data-dir log on disk (segments and snapshot).",
            self.storage_log_bytes.get() as i64,
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

        let counters: [(&str, &str, &Counter); 31] = [
            (
                "tidings_redis_caught_up_total",
                "Messages this node read back from Redis's log because it was not subscribed when they were published.",
                &self.redis_caught_up,
            ),
            (
                "tidings_redis_refusals_total",
                "Publishes refused (503) because --redis was unreachable or did not store them.",
                &self.redis_refusals,
            ),
            (
                "tidings_messages_evicted_total",
                "Retained messages dropped, oldest first, to stay within --retained-bytes.",
                &self.messages_evicted,
            ),
            (
                "tidings_messages_expired_total",
                "Retained messages dropped as older than --channel-ttl.",
                &self.messages_expired,
            ),
            (
                "tidings_memory_refusals_total",
                "Publishes refused (503) because only unacknowledged queue messages were left to drop under --retained-bytes.",
                &self.memory_refusals,
            ),
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
                "tidings_bosh_sessions_refused_total",
                "BOSH session requests refused past --max-bosh-sessions.",
                &self.bosh_sessions_refused,
            ),
            (
                "tidings_bosh_inactive_total",
                "BOSH sessions ended after no request for their inactivity period.",
                &self.bosh_inactive,
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
        let storage: [(&str, &str, &Single); 6] = [
            (
                "tidings_storage_syncs_total",
                "Log writes made durable (one fdatasync each, shared by every record appended meanwhile).",
                &self.storage_syncs,
            ),
            (
                "tidings_storage_sync_microseconds_total",
                "Time spent writing and syncing the log (divide by syncs for the mean latency).",
                &self.storage_sync_micros,
            ),
            (
                "tidings_storage_bytes_written_total",
                "Bytes written to the log.",
                &self.storage_bytes_written,
            ),
            (
                "tidings_storage_compactions_total",
                "Snapshots written by log compaction.",
                &self.storage_compactions,
            ),
            (
                "tidings_storage_errors_total",
                "Failed log writes, syncs or compactions (full disk, I/O error).",
                &self.storage_errors,
            ),
            (
                "tidings_storage_refusals_total",
                "Changes refused with 503 because the log could not take them (failing disk, --log-buffer-bytes).",
                &self.storage_refusals,
            ),
        ];
        let values = counters.iter().map(|&(n, h, c)| (n, h, c.get()));
        let storage = storage.iter().map(|&(n, h, c)| (n, h, c.get()));
        for (name, help, v) in values.chain(storage) {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
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

    #[test]
    fn sums_are_exact_across_threads() {
        const THREADS: usize = 12; // more than SLOTS: some threads share a slot
        const N: u64 = 20_000;
        let m = Metrics::default();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let m = &m;
                s.spawn(move || {
                    for i in 0..N {
                        m.messages_delivered.inc();
                        m.bytes_written.add(3);
                        m.request(Proto::Comet, 200);
                        m.connections_open.inc();
                        // Half the threads close what the other half opened.
                        if t % 2 == 1 || i % 2 == 0 {
                            m.parked.dec();
                        }
                    }
                });
            }
        });
        let total = THREADS as u64 * N;
        assert_eq!(m.messages_delivered.get(), total);
        assert_eq!(m.bytes_written.get(), 3 * total);
        assert_eq!(m.requests(Proto::Comet, 200), total);
        assert_eq!(m.connections_open.get(), total as i64);
        let decs = (THREADS as u64 / 2) * N + (THREADS as u64 / 2) * (N / 2);
        assert_eq!(m.parked.get(), -(decs as i64));
        assert!(m
            .render()
            .contains(&format!("tidings_messages_delivered_total {total}\n")));
    }

    #[test]
    fn a_gauge_moved_between_threads_sums_to_zero() {
        let g = Gauge::default();
        std::thread::scope(|s| {
            s.spawn(|| (0..1000).for_each(|_| g.inc()));
        });
        std::thread::scope(|s| {
            s.spawn(|| (0..1000).for_each(|_| g.dec()));
        });
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn metrics_stay_small() {
        assert_eq!(std::mem::size_of::<Counter>(), SLOTS * 64);
        assert!(std::mem::size_of::<Metrics>() <= 64 << 10);
    }
}
