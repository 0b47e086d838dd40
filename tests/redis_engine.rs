//! The Redis engine (`tidings::redis`) against a real `redis-server`, one per test: the seq
//! rule under concurrent publishers on several engines (nodes), retention, catch-up reads,
//! pub/sub notifications, Redis killed and restarted, and the QST acknowledgement race.
//! Skipped (and saying so) without `redis-server`, unless `TIDINGS_REDIS_TESTS=1`.

mod redis_support;

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis_support::RedisServer;
use tidings::redis::{engine, Engine, Entry, Error, Event, Options, Published, Subscriber, Url};

/// Every wait for an event is bounded by this.
const WAIT: Duration = Duration::from_secs(5);

fn opts(server: &RedisServer) -> Options {
    let mut o = Options::new(Url::parse(&server.url()).unwrap());
    o.backoff_min = Duration::from_millis(20);
    o.backoff_max = Duration::from_millis(200);
    o
}

fn parse_log_of(e: &Engine, op: tidings::redis::Op) -> tidings::redis::Log {
    engine::parse_log(e.call(op).unwrap()).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn stored(p: Published) -> Vec<u64> {
    match p {
        Published::Stored(v) => v.into_iter().map(|(seq, _)| seq).collect(),
        Published::Full(n) => panic!("queue full at {n}"),
    }
}

fn publish1(e: &Engine, channel: &str, id: &str, data: &[u8]) -> u64 {
    stored(e.publish(channel, &[(id, data)], false).unwrap())[0]
}

/// A subscriber whose events come out of a channel.
fn subscriber(o: Options) -> (Subscriber, Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let s = Subscriber::start(o, move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    (s, rx)
}

/// Waits for an event matching `want`, returning the events before it.
fn wait_event(
    rx: &Receiver<Event>,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return before,
            Ok(e) => before.push(e),
            Err(_) => panic!("no {what} within {WAIT:?}; got {before:?}"),
        }
    }
}

/// Waits until `channel` is subscribed (confirmed, or listed by the first `Up`).
fn wait_subscribed(rx: &Receiver<Event>, channel: &str) {
    wait_event(rx, "subscription", |e| match e {
        Event::Subscribed(c) => c == channel,
        Event::Up { catch_up } => catch_up.iter().any(|c| c == channel),
        _ => false,
    });
}

fn message(rx: &Receiver<Event>) -> (String, Entry) {
    let mut got = None;
    wait_event(rx, "message", |e| match e {
        Event::Message { channel, entry } => {
            got = Some((channel.clone(), entry.clone()));
            true
        }
        _ => false,
    });
    got.unwrap()
}

#[test]
fn seqs_follow_the_clock_rule_under_concurrent_publishers() {
    let Some(server) = RedisServer::start("seqs_follow_the_clock_rule_under_concurrent_publishers")
    else {
        return;
    };
    let mut o = opts(&server);
    o.channel_capacity = 100_000;
    // Three nodes, each with three publishing threads sharing the node's engine.
    let engines: Vec<Engine> = (0..3).map(|_| Engine::start(o.clone())).collect();
    let per_thread = 150;
    let results = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for (n, e) in engines.iter().enumerate() {
            for t in 0..3 {
                let results = results.clone();
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut i = 0;
                    while i < per_thread {
                        // Some publishes are batches of three.
                        let batch = if i % 10 == 0 { 3 } else { 1 };
                        let ids: Vec<String> =
                            (i..i + batch).map(|k| format!("n{n}t{t}m{k}")).collect();
                        let msgs: Vec<(&str, &[u8])> =
                            ids.iter().map(|id| (id.as_str(), id.as_bytes())).collect();
                        let before = now_ms();
                        let seqs = stored(e.publish("race", &msgs, false).unwrap());
                        for (id, seq) in ids.into_iter().zip(seqs) {
                            assert!(seq >= before, "seq {seq} below now_ms {before}");
                            mine.push((seq, id));
                        }
                        i += batch;
                    }
                    let seqs: Vec<u64> = mine.iter().map(|m| m.0).collect();
                    assert!(
                        seqs.windows(2).all(|w| w[0] < w[1]),
                        "one publisher's seqs grow"
                    );
                    results.lock().unwrap().extend(mine);
                });
            }
        }
    });
    let mut all = results.lock().unwrap().clone();
    all.sort();
    let total = 3 * 3 * per_thread as usize;
    assert_eq!(all.len(), total);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "seqs are unique");
    // The log holds them all in seq order, with their ids.
    let log = engines[0].read_after("race", 0, total + 10).unwrap();
    let got: Vec<(u64, String)> = log.entries.iter().map(|e| (e.seq, e.id.clone())).collect();
    assert_eq!(got, all);
    assert_eq!(log.clock, all.last().unwrap().0);
    assert_eq!(log.dropped, 0);
    // Seqs look like milliseconds and run ahead of the clock only as far as needed.
    assert!(log.clock <= now_ms() + total as u64);
}

#[test]
fn retention_trims_by_count_and_bytes_but_never_a_pending_queue_message() {
    let Some(server) =
        RedisServer::start("retention_trims_by_count_and_bytes_but_never_a_pending_queue_message")
    else {
        return;
    };
    let mut o = opts(&server);
    o.channel_capacity = 5;
    o.channel_bytes = 100;
    let e = Engine::start(o);
    let seqs: Vec<u64> = (0..8)
        .map(|i| publish1(&e, "count", &format!("m{i}"), b"x"))
        .collect();
    let log = e.read_after("count", 0, 100).unwrap();
    let ids: Vec<&str> = log.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["m3", "m4", "m5", "m6", "m7"]);
    assert_eq!(log.dropped, seqs[2], "the highest trimmed seq");

    for i in 0..4 {
        publish1(&e, "bytes", &format!("b{i}"), &[b'y'; 40]);
    }
    let log = e.read_after("bytes", 0, 100).unwrap();
    let ids: Vec<&str> = log.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["b2", "b3"], "80 bytes fit in 100, 120 do not");

    // A queue keeps every pending message past the count, and drops acknowledged ones.
    for i in 0..8 {
        let id = format!("q{i}");
        let p = e.publish("queue", &[(&id, b"z")], true).unwrap();
        assert!(matches!(p, Published::Stored(_)));
    }
    assert_eq!(e.read_after("queue", 0, 100).unwrap().entries.len(), 8);
    let a = e.ack("queue", Some("q5"), &[], &[]).unwrap();
    assert_eq!((a.acked, a.pending), (6, 2));
    e.publish("queue", &[("q8", b"z")], true).unwrap();
    let log = e.read_after("queue", 0, 100).unwrap();
    let ids: Vec<&str> = log.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["q4", "q5", "q6", "q7", "q8"]);
}

#[test]
fn an_age_cap_drops_old_messages_and_expires_idle_channels_but_not_queues() {
    let Some(server) = RedisServer::start("age_cap") else {
        return;
    };
    let mut o = opts(&server);
    o.channel_ttl_ms = 1000;
    let e = Engine::start(o);
    let old = publish1(&e, "aged", "old", b"x");
    e.publish("aged-q", &[("q-old", b"z")], true).unwrap();
    // The cap is about time itself: let it pass (no synchronisation rests on these waits,
    // and each check has hundreds of ms to spare).
    std::thread::sleep(Duration::from_millis(600));
    publish1(&e, "aged", "mid", b"y");
    std::thread::sleep(Duration::from_millis(600));
    publish1(&e, "aged", "new", b"y");
    e.publish("aged-q", &[("q-new", b"z")], true).unwrap();
    // An idle channel expires with its last message.
    let ttl = server.command("PTTL tidings:{aged}:log");
    let ms: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(
        ms > 500 && ms <= 1000,
        "the channel expires with its last message: {ttl}"
    );
    let log = e.read_after("aged", 0, 100).unwrap();
    let ids: Vec<&str> = log.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["mid", "new"],
        "older than the cap: dropped at the next publish"
    );
    assert_eq!(log.dropped, old);
    // A reader with a cap skips what is older, before any publish trims it.
    let log = parse_log_of(&e, engine::read_recent_op("aged", 0, 100, 500));
    let ids: Vec<&str> = log.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["new"]);
    // A queue keeps its unacknowledged messages whatever their age, and never expires.
    let taken = e.take("aged-q", 10, 0).unwrap();
    let ids: Vec<&str> = taken.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["q-old", "q-new"]);
    assert_eq!(server.command("PTTL tidings:{aged-q}"), ":-1");
}

#[test]
fn reads_after_a_seq_and_comet_sync() {
    let Some(server) = RedisServer::start("reads_after_a_seq_and_comet_sync") else {
        return;
    };
    let e = Engine::start(opts(&server));
    let s: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|id| publish1(&e, "ch", id, id.as_bytes()))
        .collect();
    let log = e.read_after("ch", s[0], 100).unwrap();
    assert_eq!(
        log.entries,
        vec![
            Entry {
                seq: s[1],
                id: "b".into(),
                data: b"b".to_vec()
            },
            Entry {
                seq: s[2],
                id: "c".into(),
                data: b"c".to_vec()
            }
        ]
    );
    assert_eq!(log.last_id, "c");
    assert_eq!(e.read_after("ch", s[0], 1).unwrap().entries.len(), 1);
    assert!(e.read_after("ch", s[2], 100).unwrap().entries.is_empty());
    let empty = e.read_after("nothing", 0, 10).unwrap();
    assert_eq!(
        (empty.clock, empty.entries.len(), empty.last_id.as_str()),
        (0, 0, "")
    );
    // sync: the clock is at least now and at least the last seq; the next seq is above it.
    let before = now_ms();
    let clock = e.sync_clock("ch").unwrap();
    assert!(clock >= before && clock >= s[2]);
    assert!(publish1(&e, "ch", "d", b"d") > clock);
    assert!(e.sync_clock("fresh").unwrap() >= before);
    // Binary data comes back as it went in.
    let bin: Vec<u8> = (0..=255).collect();
    let seq = publish1(&e, "bin", "id with spaces", &bin);
    let log = e.read_after("bin", seq - 1, 10).unwrap();
    assert_eq!(log.entries[0].data, bin);
    let st = e.status();
    assert!(st.up && st.connects == 1 && st.sharded, "{st:?}");
}

#[test]
fn subscribers_hear_messages_of_their_channels_only() {
    let Some(server) = RedisServer::start("subscribers_hear_messages_of_their_channels_only")
    else {
        return;
    };
    let o = opts(&server);
    let e = Engine::start(o.clone());
    let (sub, rx) = subscriber(o);
    sub.subscribe("a");
    wait_subscribed(&rx, "a");
    assert!(sub.is_up());
    // Published first, on a channel this node does not subscribe to: never heard.
    publish1(&e, "b", "not mine", b"-");
    let seq = publish1(&e, "a", "m 1", b"payload\r\n\0");
    let (channel, entry) = message(&rx);
    assert_eq!(channel, "a");
    assert_eq!(
        entry,
        Entry {
            seq,
            id: "m 1".into(),
            data: b"payload\r\n\0".to_vec()
        }
    );
    // A batch is one notification per message, in seq order.
    let seqs = stored(e.publish("a", &[("x", b"1"), ("y", b"2")], false).unwrap());
    assert_eq!(message(&rx).1.seq, seqs[0]);
    assert_eq!(message(&rx).1.seq, seqs[1]);
    sub.unsubscribe("a");
    sub.subscribe("b");
    wait_subscribed(&rx, "b");
    publish1(&e, "a", "after", b"-");
    let seq_b2 = publish1(&e, "b", "b2", b"-");
    let (channel, entry) = message(&rx);
    assert_eq!(
        (channel.as_str(), entry.seq),
        ("b", seq_b2),
        "nothing from a"
    );
}

#[test]
fn redis_killed_and_restarted_mid_test() {
    let Some(mut server) = RedisServer::start_durable("redis_killed_and_restarted_mid_test") else {
        return;
    };
    let o = opts(&server);
    let e = Engine::start(o.clone());
    // The subscriber comes back later than the engine: what is published meanwhile it
    // can only learn by catching up.
    let mut so = o.clone();
    so.backoff_min = Duration::from_millis(400);
    so.backoff_max = Duration::from_millis(400);
    let (sub, rx) = subscriber(so);
    sub.subscribe("c");
    wait_subscribed(&rx, "c");
    let s1 = publish1(&e, "c", "m1", b"1");
    assert_eq!(message(&rx).1.seq, s1);

    server.kill();
    let down_at = Instant::now();
    wait_event(&rx, "Down", |e| matches!(e, Event::Down(_)));
    assert!(!sub.is_up());
    let err = e.publish("c", &[("lost", b"-")], false).unwrap_err();
    assert!(matches!(err, Error::Down(_)), "{err}");
    // While down, operations fail at once rather than wait for a timeout.
    let t = Instant::now();
    assert!(matches!(e.read_after("c", 0, 10), Err(Error::Down(_))));
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(!e.status().up);

    server.restart();
    // The engine reconnects on its own; the publish lands while the subscriber is away.
    let deadline = Instant::now() + WAIT;
    while !e.status().up {
        assert!(Instant::now() < deadline, "the engine did not reconnect");
        std::thread::sleep(Duration::from_millis(5));
    }
    let s2 = publish1(&e, "c", "m2", b"2");
    assert!(s2 > s1, "the clock survived the restart");
    let before = wait_event(
        &rx,
        "Up",
        |ev| matches!(ev, Event::Up { catch_up } if catch_up == &["c".to_string()]),
    );
    assert!(
        !before.iter().any(|ev| matches!(ev, Event::Message { .. })),
        "m2 was published while the subscriber was down: {before:?}"
    );
    assert!(down_at.elapsed() < WAIT);
    // Catching up from the last seq seen finds m2 (and m1 survived, in the append-only file).
    let log = e.read_after("c", s1, 10).unwrap();
    let ids: Vec<&str> = log.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["m2"]);
    assert_eq!(e.read_after("c", 0, 10).unwrap().entries.len(), 2);
    // And live delivery resumed.
    let s3 = publish1(&e, "c", "m3", b"3");
    assert_eq!(message(&rx).1.seq, s3);
    let st = e.status();
    assert!(st.connects >= 2 && st.failures >= 1, "{st:?}");
}

#[test]
fn queues_dedup_cap_tries_and_v1_ids() {
    let Some(server) = RedisServer::start("queues_dedup_cap_tries_and_v1_ids") else {
        return;
    };
    let mut o = opts(&server);
    o.queue_capacity = 4;
    let e = Engine::start(o);
    let p = e
        .publish("q", &[("a", b"A"), ("b", b"B"), ("c", b"C")], true)
        .unwrap();
    let Published::Stored(first) = p else {
        panic!("{p:?}")
    };
    // A retried push is not stored twice: its seq is answered, flagged old.
    let p = e.publish("q", &[("b", b"B"), ("d", b"D")], true).unwrap();
    let Published::Stored(again) = p else {
        panic!("{p:?}")
    };
    assert_eq!(again[0], (first[1].0, false));
    assert!(again[1].1 && again[1].0 > first[2].0);
    // Full: a batch that does not fit stores nothing.
    assert_eq!(
        e.publish("q", &[("e", b"E")], true).unwrap(),
        Published::Full(4)
    );
    assert_eq!(e.read_after("q", 0, 10).unwrap().entries.len(), 4);
    // Tries capped at 2: `a` comes twice, then leaves as expired.
    let ids = |t: &tidings::redis::Taken| -> Vec<String> {
        t.entries.iter().map(|e| e.id.clone()).collect()
    };
    assert_eq!(ids(&e.take("q", 1, 2).unwrap()), ["a"]);
    assert_eq!(ids(&e.take("q", 1, 2).unwrap()), ["a"]);
    let t = e.take("q", 1, 2).unwrap();
    assert_eq!(
        (ids(&t), t.expired, t.pending),
        (vec!["b".to_string()], 1, 3)
    );
    // v1: `c` confirmed, `b` failed, unknown ids ignored; the ETag is the confirmed one.
    let a = e.ack("q", None, &["c", "zz"], &["b"]).unwrap();
    assert_eq!((a.acked, a.failed, a.pending), (1, 1, 1));
    assert_eq!(a.acked_id, "c");
    // Late and repeated acknowledgements change nothing.
    let a = e.ack("q", Some("b"), &["c"], &[]).unwrap();
    assert_eq!((a.acked, a.failed, a.pending), (0, 0, 1));
    let t = e.take("q", 10, 0).unwrap();
    assert_eq!((ids(&t), t.acked_id.as_str()), (vec!["d".to_string()], "c"));
    let a = e.ack("q", Some("d"), &[], &[]).unwrap();
    assert_eq!((a.acked, a.pending, a.acked_id.as_str()), (1, 0, "d"));
    assert!(e.take("q", 10, 0).unwrap().entries.is_empty());
    // A channel that was not a queue becomes one on its first pull, holding its log.
    publish1(&e, "plain", "p1", b"1");
    assert_eq!(ids(&e.take("plain", 10, 0).unwrap()), ["p1"]);
    // Acknowledging a channel that is no queue does nothing.
    assert_eq!(e.ack("never", Some("x"), &[], &[]).unwrap().acked, 0);
}

#[test]
fn concurrent_acknowledgements_neither_lose_nor_resurrect() {
    let Some(server) = RedisServer::start("concurrent_acknowledgements_neither_lose_nor_resurrect")
    else {
        return;
    };
    let o = opts(&server);
    let nodes: Vec<Engine> = (0..3).map(|_| Engine::start(o.clone())).collect();
    let n = 300;
    let ids: Vec<String> = (0..n).map(|i| format!("m{i:03}")).collect();
    for chunk in ids.chunks(50) {
        let msgs: Vec<(&str, &[u8])> = chunk.iter().map(|id| (id.as_str(), &b"x"[..])).collect();
        stored(nodes[0].publish("race", &msgs, true).unwrap());
    }
    let acked = Arc::new(Mutex::new(0u64));
    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    std::thread::scope(|s| {
        for t in 0..6 {
            let e = nodes[t % 3].clone();
            let acked = acked.clone();
            let seen = seen.clone();
            s.spawn(move || {
                let mut mine = BTreeSet::new();
                let deadline = Instant::now() + WAIT * 2;
                loop {
                    assert!(Instant::now() < deadline, "the queue did not drain");
                    let taken = e.take("race", 7, 0).unwrap();
                    if taken.entries.is_empty() {
                        assert_eq!(taken.pending, 0);
                        break;
                    }
                    for m in &taken.entries {
                        assert!(
                            !mine.contains(&m.id),
                            "{} came back after this thread acknowledged it",
                            m.id
                        );
                        *seen.lock().unwrap().entry(m.id.clone()).or_default() += 1;
                    }
                    let got: Vec<&str> = taken.entries.iter().map(|m| m.id.as_str()).collect();
                    let a = if t % 2 == 0 {
                        // QST v2: cumulative, up to the last one returned.
                        e.ack("race", got.last().copied(), &[], &[]).unwrap()
                    } else {
                        // v1: every id one by one (the last half of them first).
                        let mut v1 = got.clone();
                        v1.rotate_left(got.len() / 2);
                        let a = e.ack("race", None, &v1, &[]).unwrap();
                        mine.extend(got.iter().map(|s| s.to_string()));
                        a
                    };
                    *acked.lock().unwrap() += a.acked;
                }
            });
        }
    });
    assert_eq!(
        *acked.lock().unwrap(),
        n as u64,
        "each message acknowledged once"
    );
    let seen = seen.lock().unwrap();
    for id in &ids {
        assert!(seen.contains_key(id), "{id} was never delivered");
    }
    let t = nodes[1].take("race", 10, 0).unwrap();
    assert!(t.entries.is_empty() && t.pending == 0);
    assert_eq!(t.acked_id, ids[n - 1]);
}

#[test]
fn submitted_operations_complete_in_order_off_the_callers_thread() {
    let Some(server) = RedisServer::start("submitted_operations_complete_in_order") else {
        return;
    };
    let e = Engine::start(opts(&server));
    let (tx, rx) = mpsc::channel();
    let me = std::thread::current().id();
    let n = 500;
    for i in 0..n {
        let tx = tx.clone();
        let id = format!("m{i}");
        let op = e.publish_op("burst", &[(&id, b"x")], false);
        e.submit_with(op, engine::parse_published, move |r| {
            assert_ne!(std::thread::current().id(), me);
            let _ = tx.send((i, stored(r.unwrap())[0]));
        });
    }
    let got: Vec<(usize, u64)> = (0..n).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    // Answered in the order submitted, with seqs in that order: the engine pipelines them
    // (a burst takes a few round trips, not one each).
    assert!(got.iter().enumerate().all(|(k, (i, _))| k == *i));
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1));
    let log = e.read_after("burst", 0, n + 1).unwrap();
    assert_eq!(log.entries.len(), n);
    assert_eq!(log.last_id, format!("m{}", n - 1));
    // The other operations have the same two forms.
    let (tx, rx) = mpsc::channel();
    e.submit_with(
        engine::read_op("burst", got[n - 2].1, 10),
        engine::parse_log,
        {
            let tx = tx.clone();
            move |r| tx.send(r.unwrap().entries.len()).unwrap()
        },
    );
    e.submit_with(engine::take_op("burst", 3, 0), engine::parse_taken, {
        let tx = tx.clone();
        move |r| tx.send(r.unwrap().entries.len()).unwrap()
    });
    e.submit_with(
        engine::ack_op("burst", Some("m1"), &[], &[]),
        engine::parse_acked,
        {
            let tx = tx.clone();
            move |r| tx.send(r.unwrap().acked as usize).unwrap()
        },
    );
    e.submit_with(
        engine::sync_clock_op("burst"),
        engine::parse_clock,
        move |r| tx.send(usize::from(r.unwrap() >= got[n - 1].1)).unwrap(),
    );
    let answers: Vec<usize> = (0..4).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(answers, [1, 3, 2, 1]);
}

#[test]
fn an_engine_without_redis_fails_fast_and_keeps_trying() {
    // No redis-server needed: nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut o = Options::new(Url::parse(&format!("redis://127.0.0.1:{port}")).unwrap());
    o.backoff_min = Duration::from_millis(10);
    tidings::log::set_level(tidings::log::Level::Error);
    let e = Engine::start(o);
    let t = Instant::now();
    for _ in 0..3 {
        assert!(matches!(e.sync_clock("x"), Err(Error::Down(_))));
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    let st = e.status();
    assert!(!st.up && st.connects == 0, "{st:?}");
}

/// The naive queue of PROTOCOLS.md 1.4, the oracle of the Redis scripts: every message with
/// its state, searched linearly.
#[derive(Default)]
struct Oracle {
    /// (id, state, tries), oldest first.
    msgs: Vec<(String, State, u32)>,
    acked_id: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Pending,
    Acked,
    Gone,
}

impl Oracle {
    /// Index of the first pending message: everything before it has left the queue.
    fn cursor(&self) -> usize {
        self.msgs
            .iter()
            .position(|m| m.1 == State::Pending)
            .unwrap_or(self.msgs.len())
    }

    fn find(&self, id: &str) -> Option<usize> {
        let c = self.cursor();
        (c..self.msgs.len()).find(|&i| self.msgs[i].0 == id)
    }

    fn note_acked(&mut self, i: usize) {
        self.acked_id = Some(self.acked_id.map_or(i, |a| a.max(i)));
    }

    fn pending(&self) -> u64 {
        self.msgs.iter().filter(|m| m.1 == State::Pending).count() as u64
    }

    fn take(&mut self, max: usize, max_tries: u32) -> (Vec<String>, u64) {
        let mut expired = 0;
        while let Some(m) = self.msgs.iter_mut().find(|m| m.1 == State::Pending) {
            if max_tries == 0 || m.2 < max_tries {
                break;
            }
            m.1 = State::Gone;
            expired += 1;
        }
        let mut out = Vec::new();
        for m in self.msgs.iter_mut().filter(|m| m.1 == State::Pending) {
            if out.len() == max {
                break;
            }
            if max_tries > 0 {
                m.2 += 1;
            }
            out.push(m.0.clone());
        }
        (out, expired)
    }

    fn ack(&mut self, upto: Option<&str>, confirmed: &[&str], failed: &[&str]) -> (u64, u64) {
        let (mut acked, mut gone) = (0, 0);
        if let Some(i) = upto.and_then(|id| self.find(id)) {
            for m in &mut self.msgs[..=i] {
                if m.1 == State::Pending {
                    m.1 = State::Acked;
                    acked += 1;
                }
            }
            self.note_acked(i);
        }
        for (ids, state) in [(confirmed, State::Acked), (failed, State::Gone)] {
            for id in ids {
                let Some(i) = self.find(id) else { continue };
                if self.msgs[i].1 == State::Pending {
                    self.msgs[i].1 = state;
                    if state == State::Acked {
                        acked += 1;
                        self.note_acked(i);
                    } else {
                        gone += 1;
                    }
                }
            }
        }
        (acked, gone)
    }
}

#[test]
fn queue_scripts_agree_with_a_naive_queue() {
    let Some(server) = RedisServer::start("queue_scripts_agree_with_a_naive_queue") else {
        return;
    };
    let e = Engine::start(opts(&server));
    for seed in 1..=12u64 {
        let channel = format!("q{seed}");
        let mut oracle = Oracle::default();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let max_tries = [0, 0, 2, 3][rnd(4) as usize];
        let mut next = 0;
        for step in 0..60 {
            let what = format!("seed {seed} step {step}");
            match rnd(5) {
                0 | 1 => {
                    let n = 1 + rnd(3) as usize;
                    let ids: Vec<String> = (next..next + n).map(|i| format!("m{i}")).collect();
                    next += n;
                    let msgs: Vec<(&str, &[u8])> =
                        ids.iter().map(|id| (id.as_str(), id.as_bytes())).collect();
                    stored(e.publish(&channel, &msgs, true).unwrap());
                    oracle
                        .msgs
                        .extend(ids.into_iter().map(|id| (id, State::Pending, 0)));
                }
                2 => {
                    let max = 1 + rnd(4) as usize;
                    let t = e.take(&channel, max, max_tries).unwrap();
                    let (ids, expired) = oracle.take(max, max_tries);
                    let got: Vec<String> = t.entries.iter().map(|m| m.id.clone()).collect();
                    assert_eq!((got, t.expired), (ids, expired), "{what}: take");
                    let want_etag = oracle.acked_id.map(|i| oracle.msgs[i].0.clone());
                    assert_eq!(t.acked_id, want_etag.unwrap_or_default(), "{what}: etag");
                }
                _ if next == 0 => {}
                _ => {
                    // Ids of any age: acknowledged, pending, unknown.
                    let (nu, nc, nf) = (rnd(2), rnd(3), rnd(2));
                    let mut pick = || format!("m{}", rnd(next as u64 + 2));
                    let upto = (nu == 0).then(&mut pick);
                    let confirmed: Vec<String> = (0..nc).map(|_| pick()).collect();
                    let failed: Vec<String> = (0..nf).map(|_| pick()).collect();
                    let c: Vec<&str> = confirmed.iter().map(String::as_str).collect();
                    let f: Vec<&str> = failed.iter().map(String::as_str).collect();
                    let a = e.ack(&channel, upto.as_deref(), &c, &f).unwrap();
                    let want = oracle.ack(upto.as_deref(), &c, &f);
                    assert_eq!(
                        (a.acked, a.failed),
                        want,
                        "{what}: ack {upto:?} {c:?} {f:?}"
                    );
                    assert_eq!(a.pending, oracle.pending(), "{what}: pending");
                }
            }
        }
    }
}
