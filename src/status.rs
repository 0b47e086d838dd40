//! The server's live figures for the status page at `/`: one JSON snapshot (what this server
//! is, its listeners and uptime; connections, sessions, channels, message rates, memory),
//! served at `GET /status.json` and published once a second on the reserved channel
//! `tidings/status` while someone subscribes to it (the page's `EventSource`).
//!
//! An idle server does no work for it: worker 0's one-second tick (`reactor`, beside the
//! hub's sweep) asks the hub how many waiters the channel has (`Hub::info`, one shard lock) and stops
//! there when none. The channel retains one snapshot (`RETAIN`), so a new subscriber gets the
//! latest at once and nothing else piles up; the page keeps its own chart history.
//!
//! Rates are counter deltas over the time between two samples, one sample at most every
//! `MIN_WINDOW_MS`, whoever asks (the tick or a `/status.json` poll). The page's own
//! snapshots are left out of the message figures: the published count loses exactly what the
//! tick published, the delivered count what it queued for the channel's waiters (their count
//! when it published), so an open page does not show itself as traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use crate::hub::{now_ms, Draft, Hub, Origin};
use crate::metrics::{resident_bytes, Metrics};

/// The reserved channel the snapshots are published on.
pub const CHANNEL: &str = "tidings/status";
/// Snapshots the channel retains: a new subscriber (nchan's first-message policy `oldest`)
/// gets the latest one at once, never a backlog of stale ones.
pub const RETAIN: usize = 1;
/// The shortest window a rate is measured over; a sample asked for sooner gets the rates of
/// the last window.
pub const MIN_WINDOW_MS: u64 = 750;
/// A window longer than this (nobody looked for a while) gives no rate: the average over it
/// would pass for the current one. The next sample measures from here.
pub const MAX_WINDOW_MS: u64 = 5_000;

/// What the server is and where it listens, fixed at start-up, and the state of the rates.
pub struct Status {
    started: Instant,
    /// Milliseconds since the Unix epoch at start-up.
    started_ms: u64,
    http: SocketAddr,
    xmpp: Option<SocketAddr>,
    rates: Mutex<Rates>,
    /// Messages the tick published, left out of the published figure.
    own_published: AtomicU64,
    /// Deliveries of those messages, left out of the delivered figure.
    own_delivered: AtomicU64,
}

/// The figures of one snapshot, read from `Metrics` (and the process's resident memory).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub open: i64,
    pub parked: i64,
    pub streaming: i64,
    pub xmpp_sessions: i64,
    pub bosh_sessions: i64,
    pub channels: i64,
    /// Messages stored in channels, not counting the status snapshots.
    pub published: u64,
    /// Messages queued to subscriber connections, not counting the status snapshots.
    pub delivered: u64,
    pub resident_bytes: Option<u64>,
}

/// Messages per second over the last window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerSecond {
    pub published: f64,
    pub delivered: f64,
}

/// The last sample of the message counters and the rates measured up to it.
#[derive(Debug, Default)]
pub struct Rates {
    /// (milliseconds since start, published, delivered) of the last sample.
    last: Option<(u64, u64, u64)>,
    rates: Option<PerSecond>,
}

impl Rates {
    /// The rates at `at_ms` (a monotonic clock) given the counters then. The first sample,
    /// and one after a window longer than `MAX_WINDOW_MS`, gives `None`; one sooner than
    /// `MIN_WINDOW_MS` after the last gives the last window's rates and does not start a new
    /// window. A counter that went backwards counts as zero.
    pub fn sample(&mut self, at_ms: u64, published: u64, delivered: u64) -> Option<PerSecond> {
        let Some((t, p, d)) = self.last else {
            self.last = Some((at_ms, published, delivered));
            return None;
        };
        let window = at_ms.saturating_sub(t);
        if window < MIN_WINDOW_MS {
            return self.rates;
        }
        self.last = Some((at_ms, published, delivered));
        self.rates = (window <= MAX_WINDOW_MS).then(|| {
            let per_s = |now: u64, then: u64| {
                let r = now.saturating_sub(then) as f64 * 1000.0 / window as f64;
                (r * 10.0).round() / 10.0
            };
            PerSecond {
                published: per_s(published, p),
                delivered: per_s(delivered, d),
            }
        });
        self.rates
    }
}

impl Status {
    /// The status of a server listening on `http` (and `xmpp`), starting now.
    pub fn new(http: SocketAddr, xmpp: Option<SocketAddr>) -> Status {
        Status {
            started: Instant::now(),
            started_ms: now_ms(),
            http,
            xmpp,
            rates: Mutex::new(Rates::default()),
            own_published: AtomicU64::new(0),
            own_delivered: AtomicU64::new(0),
        }
    }

    /// The figures now.
    pub fn figures(&self, m: &Metrics) -> Figures {
        Figures {
            open: m.connections_open.get(),
            parked: m.parked.get(),
            streaming: m.streaming.get(),
            xmpp_sessions: m.xmpp_sessions.get(),
            bosh_sessions: m.bosh_sessions.get(),
            channels: m.channels.get(),
            published: m
                .messages_published
                .get()
                .saturating_sub(self.own_published.load(Relaxed)),
            delivered: m
                .messages_delivered
                .get()
                .saturating_sub(self.own_delivered.load(Relaxed)),
            resident_bytes: resident_bytes(),
        }
    }

    /// The snapshot now, as JSON (`GET /status.json`, and each message on `CHANNEL`).
    pub fn snapshot(&self, m: &Metrics) -> String {
        let figures = self.figures(m);
        let at = self.started.elapsed().as_millis() as u64;
        let rates = self.rates.lock().unwrap_or_else(|p| p.into_inner()).sample(
            at,
            figures.published,
            figures.delivered,
        );
        self.render(now_ms(), at / 1000, &figures, rates)
    }

    /// The snapshot of `figures` and `rates` at `now_ms` (Unix epoch), `uptime_s` after
    /// start-up. Pure: the unit tests call it with fixed inputs.
    pub fn render(
        &self,
        now_ms: u64,
        uptime_s: u64,
        f: &Figures,
        rates: Option<PerSecond>,
    ) -> String {
        let mut started = String::new();
        crate::time::format_utc((self.started_ms / 1000) as i64, &mut started);
        let v: Value = json!({
            "server": "tidings",
            "version": env!("CARGO_PKG_VERSION"),
            "http": self.http.to_string(),
            "xmpp": self.xmpp.map(|a| a.to_string()),
            "started": started,
            "uptime_s": uptime_s,
            "time": now_ms,
            "open": f.open,
            "parked": f.parked,
            "streaming": f.streaming,
            "xmpp_sessions": f.xmpp_sessions,
            "bosh_sessions": f.bosh_sessions,
            "channels": f.channels,
            "published": f.published,
            "delivered": f.delivered,
            "published_per_s": rates.map(|r| r.published),
            "delivered_per_s": rates.map(|r| r.delivered),
            "resident_bytes": f.resident_bytes,
        });
        v.to_string()
    }

    /// Worker 0's once-a-second step: when `CHANNEL` has waiters, publishes a snapshot there
    /// (retaining `RETAIN`) and returns true; otherwise does nothing more than ask the hub.
    pub fn tick(&self, hub: &Hub, m: &Metrics) -> bool {
        let watchers = hub.info(CHANNEL).map_or(0, |i| i.subscribers);
        if watchers == 0 {
            return false;
        }
        hub.cap_retention(CHANNEL, RETAIN);
        let draft = Draft {
            content_type: Some("application/json".into()),
            ..Draft::with_body(self.snapshot(m))
        };
        match hub.publish(CHANNEL, vec![draft], Origin::Server, false) {
            Ok(stored) => {
                let n = stored.len() as u64;
                self.own_published.fetch_add(n, Relaxed);
                self.own_delivered.fetch_add(n * watchers as u64, Relaxed);
                true
            }
            Err(e) => {
                crate::debug!("status snapshot not published: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Limits, Mailbox, Notify, Subscribe};
    use std::sync::Arc;

    fn status() -> Status {
        Status::new(
            "127.0.0.1:8080".parse().unwrap(),
            Some("127.0.0.1:5222".parse().unwrap()),
        )
    }

    #[test]
    fn a_snapshot_is_json_with_every_field() {
        let s = status();
        let f = Figures {
            open: 5,
            parked: 1,
            streaming: 2,
            xmpp_sessions: 3,
            bosh_sessions: 4,
            channels: 6,
            published: 70,
            delivered: 80,
            resident_bytes: Some(9 << 20),
        };
        let rates = PerSecond {
            published: 1.5,
            delivered: 3.0,
        };
        let text = s.render(1_796_177_201_123, 42, &f, Some(rates));
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["server"], "tidings");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["http"], "127.0.0.1:8080");
        assert_eq!(v["xmpp"], "127.0.0.1:5222");
        assert_eq!(v["uptime_s"], 42);
        assert_eq!(v["time"], 1_796_177_201_123u64);
        for (key, want) in [
            ("open", 5),
            ("parked", 1),
            ("streaming", 2),
            ("xmpp_sessions", 3),
            ("bosh_sessions", 4),
            ("channels", 6),
            ("published", 70),
            ("delivered", 80),
            ("resident_bytes", 9 << 20),
        ] {
            assert_eq!(v[key], want, "{key}");
        }
        assert_eq!(v["published_per_s"], 1.5);
        assert_eq!(v["delivered_per_s"], 3.0);
        let started = v["started"].as_str().unwrap();
        assert!(crate::time::parse_datetime(started).is_some(), "{started}");
        assert!(!text.contains('\n'), "one line: one EventSource data line");
        assert_eq!(v.as_object().unwrap().len(), 18, "{text}");
    }

    #[test]
    fn missing_figures_are_null() {
        let s = Status::new("127.0.0.1:1".parse().unwrap(), None);
        let text = s.render(0, 0, &Figures::default(), None);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["xmpp"], Value::Null, "XMPP off");
        assert_eq!(v["published_per_s"], Value::Null);
        assert_eq!(v["delivered_per_s"], Value::Null);
        assert_eq!(v["resident_bytes"], Value::Null);
    }

    #[test]
    fn rates_are_deltas_over_each_window() {
        let mut r = Rates::default();
        assert_eq!(
            r.sample(0, 100, 1000),
            None,
            "the first sample has no window"
        );
        let one = r.sample(1000, 110, 1030).unwrap();
        assert_eq!((one.published, one.delivered), (10.0, 30.0));
        // Sooner than MIN_WINDOW_MS: the same rates, and the window keeps its start.
        assert_eq!(r.sample(1300, 500, 5000), Some(one));
        let two = r.sample(2000, 130, 1030).unwrap();
        assert_eq!((two.published, two.delivered), (20.0, 0.0));
        // A 1.25 s window: per second, rounded to a tenth.
        let three = r.sample(3250, 131, 1030).unwrap();
        assert_eq!(three.published, 0.8);
        // After a long gap no rate, then rates again from there.
        assert_eq!(r.sample(3250 + MAX_WINDOW_MS + 1, 200, 2000), None);
        let four = r
            .sample(3250 + MAX_WINDOW_MS + 1 + 1000, 201, 2000)
            .unwrap();
        assert_eq!(four.published, 1.0);
        // A counter going backwards (never, but) reads as no traffic.
        let five = r.sample(3250 + MAX_WINDOW_MS + 1 + 2000, 0, 0).unwrap();
        assert_eq!((five.published, five.delivered), (0.0, 0.0));
    }

    struct NoWake;
    impl Notify for NoWake {
        fn notify(&self) {}
    }

    #[test]
    fn the_tick_publishes_only_while_watched_and_leaves_itself_out() {
        let metrics = Arc::new(Metrics::default());
        let mailbox = Arc::new(Mailbox::new(Box::new(NoWake)));
        let limits = Limits::from_config(&crate::Config::default());
        let hub = Hub::new(limits, vec![mailbox.clone()], metrics.clone());
        let s = status();

        assert!(!s.tick(&hub, &metrics), "nobody watches");
        assert_eq!(hub.channel_count(), 0, "an idle tick creates nothing");
        assert_eq!(metrics.messages_published.get(), 0);

        for token in [1, 2] {
            let sub = Subscribe {
                worker: 0,
                token,
                since: None,
                talk_name: None,
            };
            hub.subscribe(CHANNEL, sub).unwrap();
        }
        for _ in 0..3 {
            assert!(s.tick(&hub, &metrics));
        }
        let read = hub.read(CHANNEL, 0, 10);
        assert_eq!(read.messages.len(), RETAIN, "the channel keeps the latest");
        let v: Value = serde_json::from_slice(&read.messages[0].body).unwrap();
        assert_eq!(v["server"], "tidings");
        assert_eq!(metrics.messages_published.get(), 3);
        // As the connections would count them: each snapshot to each of the two waiters.
        metrics.messages_delivered.add(6);
        let f = s.figures(&metrics);
        assert_eq!(
            (f.published, f.delivered),
            (0, 0),
            "the page is not traffic"
        );

        hub.publish("room", vec![Draft::with_body("hi")], Origin::Talk, false)
            .unwrap();
        metrics.messages_delivered.add(1);
        let f = s.figures(&metrics);
        assert_eq!((f.published, f.delivered), (1, 1));
    }
}
