//! Several tidings as one (`--redis`, issue 13): three nodes in this process sharing one
//! real `redis-server`, each spoken to over loopback with real bytes. A message published
//! on one node reaches Talk, comet and nchan subscribers on every node with one `seq`;
//! Redis down gives `503` and a degraded `/health` while subscribers stay; once it is back
//! every subscriber catches up; a node that stops leaves the others unaffected.
//! Skipped (and saying so) without `redis-server`, unless `TIDINGS_REDIS_TESTS=1`.

mod nchan_support;
mod redis_support;

use std::time::{Duration, Instant};

use nchan_support::*;
use redis_support::RedisServer;

/// A node of the cluster: a server with `--redis` pointing at `redis`.
fn node(redis: &RedisServer) -> TestServer {
    let url = tidings::redis::Url::parse(&redis.url()).unwrap();
    let node = start_with(|c| c.redis = Some(url));
    // Connected to Redis (both connections), so that its first request is not a 503.
    assert!(
        wait_for(TIMEOUT, || node.get("/health").text().trim() == "ok"),
        "the node did not reach Redis"
    );
    node
}

/// Publishes on nchan's `/pub/` until a node takes it (its subscription and Redis may still
/// be settling), bounded; returns the id answered.
fn publish_when_up(server: &TestServer, channel: &str, body: &str) -> String {
    let r = until_taken(|| publish(server, channel, &[], body.as_bytes()));
    assert!(r.status == 201 || r.status == 202, "publish: {}", r.show());
    last_id(&r)
}

/// Sends a request until it is answered something else than `503` (Redis connecting, or
/// coming back), bounded; returns that answer.
fn until_taken(mut send: impl FnMut() -> Response) -> Response {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = send();
        if r.status != 503 {
            return r;
        }
        assert!(Instant::now() < deadline, "still refused: {}", r.show());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A comet `put` until a node takes it; returns the time (seq) answered.
fn comet_put(server: &TestServer, channel: &str, message: &str) -> u64 {
    let target = format!("/comet?method=put&channel={channel}&message={message}");
    let r = until_taken(|| server.get(&target));
    assert_eq!(r.status, 200, "put: {}", r.show());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("put: {}", r.show()))
}

/// A comet `get` on `channel` after `time`, sent and left parked on its connection.
fn park_get(server: &TestServer, channel: &str, time: u64) -> Client {
    let mut c = server.connect();
    c.send(&get(&format!(
        "/comet?method=get&channel={channel}&time={time}"
    )));
    c
}

#[test]
fn a_publish_on_one_node_reaches_every_node_with_one_id() {
    let Some(redis) = RedisServer::start("one_id") else {
        return;
    };
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    let mut talk_b = b.pull("/pull?name=bob&channel=room", false);
    let mut es_a = Sub::event_source(&a, "/sub/room", &[]);
    let since = comet_put(&c, "warmup", "x"); // a time from Redis's clock, via C
    let mut get_c = park_get(&c, "room", since);

    let id = publish_when_up(&a, "room", "hello");
    let seq = seq_of(&id);
    assert!(seq >= since, "seq {seq} from Redis's clock, after {since}");

    assert_eq!(talk_b.next_text(), "hello", "a Talk stream on B");
    es_a.expect(es_record(None, &id, "hello").as_bytes());
    let got = get_c.read_response();
    assert_eq!(got.status, 200, "comet get on C: {}", got.show());
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let messages = v["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{v}");
    assert_eq!(
        messages[0]["time"].as_u64(),
        Some(seq),
        "one seq on every node: {v}"
    );
    assert_eq!(messages[0]["data"], "hello");

    // A later publish on C reaches A and B as well, after the first.
    let id2 = publish_when_up(&c, "room", "again");
    assert!(seq_of(&id2) > seq);
    assert_eq!(talk_b.next_text(), "again");
    es_a.expect(es_record(None, &id2, "again").as_bytes());
}

#[test]
fn a_subscriber_that_comes_later_reads_the_backlog_from_redis() {
    let Some(redis) = RedisServer::start("backlog") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    let first = publish_when_up(&a, "log", "one");
    publish_when_up(&a, "log", "two");
    // B never held the channel: a Talk stream from before the first message reads both.
    let mut s = b.pull(
        &format!("/pull?name=late&channel=log&since={}", seq_of(&first) - 1),
        false,
    );
    assert_eq!(s.next_text(), "one");
    assert_eq!(s.next_text(), "two");
    // And a comet get after the first, on a third node, answers at once with the second.
    let c = node(&redis);
    let mut get_c = park_get(&c, "log", seq_of(&first));
    let got = get_c.read_response();
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(v["messages"][0]["data"], "two", "{v}");
}

#[test]
fn redis_down_means_503_then_everyone_catches_up() {
    let Some(mut redis) = RedisServer::start_durable("down") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    let mut talk_b = b.pull("/pull?name=bob&channel=room", false);
    publish_when_up(&a, "room", "before");
    assert_eq!(talk_b.next_text(), "before");

    redis.kill();
    // Publishes are refused, with a reason and Retry-After, once the node sees it down.
    let deadline = Instant::now() + TIMEOUT;
    let refused = loop {
        let r = publish(&a, "room", &[], b"while down");
        if r.status == 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "still taken: {}", r.show());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert!(refused.text().contains("Redis"), "{}", refused.show());
    assert!(wait_for(TIMEOUT, || a
        .get("/health")
        .text()
        .starts_with("degraded")));
    assert!(a.metrics_text().contains("tidings_redis_up 0"));

    redis.restart();
    // Back: the stream on B never closed, and hears what is published now.
    let id = publish_when_up(&a, "room", "after");
    assert_eq!(
        talk_b.next_text(),
        "after",
        "B's stream caught up (id {id})"
    );
    assert!(
        wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"),
        "{}",
        a.metrics_text()
    );
    assert!(a.metrics_text().contains("tidings_redis_up 1"));
    assert!(a.metric("tidings_redis_refusals_total").unwrap() >= 1.0);
}

/// A node in a child process (the `tidings` binary), for `kill -9`.
struct ChildNode {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl ChildNode {
    fn start(redis: &RedisServer) -> ChildNode {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--xmpp-listen",
                "off",
                "--workers",
                "1",
            ])
            .args(["--redis", &redis.url(), "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the tidings binary");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child node did not start");
            };
            if let Some(rest) = line.split("serving on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return ChildNode { child, addr };
            }
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_node_killed_leaves_the_others_unaffected() {
    let Some(redis) = RedisServer::start("node_killed") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    let mut doomed = ChildNode::start(&redis);
    let mut on_doomed = StreamReader::open(
        Client::connect(doomed.addr),
        "/pull?name=d&channel=room",
        false,
        0,
    );
    on_doomed.expect_greeting();
    let mut talk_b = b.pull("/pull?name=bob&channel=room", false);
    publish_when_up(&a, "room", "one");
    assert_eq!(talk_b.next_text(), "one");
    assert_eq!(
        on_doomed.next_text(),
        "one",
        "the child node is in the cluster"
    );
    doomed.child.kill().unwrap(); // SIGKILL: its Redis connections are simply cut
    doomed.child.wait().unwrap();
    for i in 0..10 {
        publish_when_up(&a, "room", &format!("m{i}"));
        publish_when_up(&b, "room", &format!("n{i}"));
    }
    let mut got: Vec<String> = (0..20).map(|_| talk_b.next_text()).collect();
    got.sort();
    let mut want: Vec<String> = (0..10)
        .flat_map(|i| [format!("m{i}"), format!("n{i}")])
        .collect();
    want.sort();
    assert_eq!(got, want, "every message once, on the surviving nodes");
}

#[test]
fn a_node_that_stops_leaves_the_others_serving() {
    let Some(redis) = RedisServer::start("node_stops") else {
        return;
    };
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut talk_c = c.pull("/pull?name=carol&channel=room", false);
    let _talk_b = b.pull("/pull?name=bob&channel=room", false);
    publish_when_up(&a, "room", "one");
    assert_eq!(talk_c.next_text(), "one");
    b.shutdown_and_join(Duration::from_secs(5));
    publish_when_up(&a, "room", "two");
    assert_eq!(talk_c.next_text(), "two");
}

#[test]
fn a_node_whose_subscription_drops_catches_up_from_the_log() {
    let Some(redis) = RedisServer::start("catch_up") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    let mut talk_b = b.pull("/pull?name=bob&channel=room", false);
    let mut es_b = Sub::event_source(&b, "/sub/room", &[]);
    let first = publish_when_up(&a, "room", "m0");
    assert_eq!(talk_b.next_text(), "m0");
    // Every pub/sub connection is cut and may not subscribe again for a while (Redis
    // stays up): what A publishes meanwhile is only in the log, and B must read it there.
    // (m0 itself may have been read back, if B's subscription took effect after it.)
    let base = b.metric("tidings_redis_caught_up_total").unwrap();
    let denied = redis.command("ACL SETUSER default -ssubscribe -subscribe");
    assert_eq!(denied, "+OK");
    let killed = redis.command("CLIENT KILL TYPE pubsub");
    assert!(killed.starts_with(':'), "CLIENT KILL: {killed}");
    assert!(wait_for(TIMEOUT, || b
        .metric("tidings_redis_subscription_up")
        .is_some_and(|v| v == 0.0)));
    let mut ids = Vec::new();
    for i in 1..=20 {
        ids.push(publish_when_up(&a, "room", &format!("m{i}")));
    }
    assert_eq!(b.metric("tidings_redis_caught_up_total"), Some(base));
    let allowed = redis.command("ACL SETUSER default +ssubscribe +subscribe");
    assert_eq!(allowed, "+OK");
    for i in 1..=20 {
        assert_eq!(talk_b.next_text(), format!("m{i}"), "in order, once each");
    }
    es_b.expect(es_record(None, &first, "m0").as_bytes());
    for (i, id) in ids.iter().enumerate() {
        es_b.expect(es_record(None, id, &format!("m{}", i + 1)).as_bytes());
    }
    talk_b.expect_no_message(Duration::from_millis(200));
    assert_eq!(
        b.metric("tidings_redis_caught_up_total"),
        Some(base + 20.0),
        "read from the log, each once"
    );
}

#[test]
fn a_delete_on_one_node_ends_the_subscribers_of_every_node() {
    let Some(redis) = RedisServer::start("delete") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    let r = a.connect().request("DELETE", "/pub/never", &[], b"");
    assert_eq!(r.status, 404, "{}", r.show());
    // B listens to the channel in Redis once a Talk stream there hears from it (a delete
    // notified before that is not caught up: see the README).
    let mut talk_b = b.pull("/pull?name=t&channel=del", false);
    let id = publish_when_up(&a, "del", "a");
    assert_eq!(talk_b.next_text(), "a");
    let mut waiting = long_poll(&b, "/sub/del", &hdrs(&after(&id)));
    b.wait_parked(1);
    let r = a.connect().request("DELETE", "/pub/del", &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    let gone = waiting.read_response();
    assert_eq!(gone.status, 410, "B's subscriber: {}", gone.show());
    let again = a.connect().request("DELETE", "/pub/del", &[], b"");
    assert_eq!(again.status, 404, "deleted already: {}", again.show());
    // Nothing is left to read on any node, and the channel lives on with new messages.
    let c = node(&redis);
    let mut fresh = long_poll(&c, "/sub/del", &[]);
    c.wait_parked(1);
    let id2 = publish_when_up(&b, "del", "after");
    assert!(seq_of(&id2) > seq_of(&id));
    assert_message(&fresh.read_response(), "after", &id2, None);
    // A queue is not deleted this way.
    let xml =
        r#"<?xml version="1.0"?><messages><message id="q1"><text>hi</text></message></messages>"#;
    assert_eq!(
        a.request(&post("/qst/q", "text/xml", xml.as_bytes()))
            .status,
        200
    );
    let r = b.connect().request("DELETE", "/pub/q", &[], b"");
    assert_eq!(r.status, 409, "{}", r.show());
}

#[test]
fn an_embedded_publish_waits_for_redis_and_returns_its_seq() {
    let Some(redis) = RedisServer::start("embedded") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    let mut talk_b = b.pull("/pull?name=bob&channel=room", false);
    let seq = a
        .handle
        .publish("room", tidings::hub::Draft::with_body("from the host"))
        .expect("stored in Redis");
    let next = publish_when_up(&b, "room", "next");
    assert!(seq_of(&next) > seq);
    assert_eq!(talk_b.next_text(), "from the host");
    assert_eq!(talk_b.next_text(), "next");
}

#[test]
fn a_publish_is_answered_only_once_redis_stored_it() {
    let Some(redis) = RedisServer::start("held") else {
        return;
    };
    let a = node(&redis);
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    // Redis holds writes (scripts included) for a while: so does every publisher's answer.
    assert_eq!(redis.command("CLIENT PAUSE 600 WRITE"), "+OK");
    let mut nchan = a.connect();
    nchan.send(&post("/pub/held", "text/plain", b"one"));
    let mut qst = a.connect();
    let xml =
        r#"<?xml version="1.0"?><messages><message id="q1"><text>hi</text></message></messages>"#;
    qst.send(&post("/qst/held-q", "text/xml", xml.as_bytes()));
    nchan.expect_silence(Duration::from_millis(300));
    qst.expect_silence(Duration::from_millis(10));
    let r = nchan.read_response();
    assert_eq!(r.status, 202, "{}", r.show());
    assert!(seq_of(&last_id(&r)) > 0, "the id is Redis's: {}", r.show());
    let r = qst.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("ETag"), Some("q1"));
}
