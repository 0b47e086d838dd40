//! QST queues shared through Redis (`--redis`, issue 13): a batch pushed on one node is
//! pulled on another and acknowledged on a third; acknowledgements racing on two nodes
//! neither lose nor resurrect a message; a long-poll pull parked on one node is answered
//! by a push on another; comet `sync` and `put` share one clock. Real bytes over loopback
//! to three servers sharing one real `redis-server`.
//! Skipped (and saying so) without `redis-server`, unless `TIDINGS_REDIS_TESTS=1`.

mod qst_support;
mod redis_support;

use std::time::{Duration, Instant};

use qst_support::*;
use redis_support::RedisServer;

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

/// Pushes until a node takes the batch (Redis may still be connecting), bounded.
fn push_when_up(server: &TestServer, channel: &str, xml: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = server.push_xml(channel, xml);
        if r.status == 200 {
            return;
        }
        assert_eq!(r.status, 503, "push: {}", r.show());
        assert!(
            Instant::now() < deadline,
            "no node took the push: {}",
            r.show()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pull acknowledging up to `etag` (none: nothing).
fn pull_after(server: &TestServer, channel: &str, etag: Option<&str>) -> Response {
    let mut headers = Vec::new();
    if let Some(e) = etag {
        headers.push(("If-None-Match", e));
    }
    let r = server
        .connect()
        .request("GET", &format!("/qst/{channel}?max=1000"), &headers, b"");
    assert_eq!(r.status, 200, "pull: {}", r.show());
    r
}

#[test]
fn pushed_on_a_pulled_on_b_acknowledged_on_c() {
    let Some(redis) = RedisServer::start("qst_abc") else {
        return;
    };
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    push_when_up(&a, "gw", &xml_batch(&["m1", "m2", "m3"]));
    push_when_up(&a, "gw", &xml_batch(&["m4", "m5"]));
    // A repeated id is not stored twice, on whichever node it comes.
    push_when_up(&b, "gw", &xml_batch(&["m5"]));

    let r = pull_after(&b, "gw", None);
    assert_eq!(r.ids(), ["m1", "m2", "m3", "m4", "m5"], "{}", r.show());
    assert_eq!(r.etag(), "m5");
    assert_eq!(
        b.head_etag("gw"),
        "m5",
        "HEAD: the last id pushed, from Redis"
    );

    // C acknowledges up to m3: m4 and m5 are left, for every node.
    let r = pull_after(&c, "gw", Some("m3"));
    assert_eq!(r.ids(), ["m4", "m5"], "{}", r.show());
    assert_eq!(pull_after(&a, "gw", None).ids(), ["m4", "m5"]);

    // Everything acknowledged: an empty pull's ETag is the last acknowledged id.
    let r = pull_after(&a, "gw", Some("m5"));
    assert!(r.ids().is_empty(), "{}", r.show());
    assert_eq!(r.etag(), "m5");
    assert!(pull_after(&b, "gw", None).ids().is_empty());
    let acked: f64 = [&a, &b, &c]
        .iter()
        .map(|n| n.metric("tidings_qst_acked_total").unwrap())
        .sum();
    assert_eq!(acked, 5.0, "each message acknowledged once, over all nodes");
}

#[test]
fn racing_acknowledgements_on_two_nodes_lose_and_resurrect_nothing() {
    let Some(redis) = RedisServer::start("qst_race") else {
        return;
    };
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let ids = ids("m", 200);
    for chunk in ids.chunks(50) {
        push_when_up(&a, "race", &xml_batch(&strs(chunk)));
    }
    // B and C acknowledge interleaved, overlapping and out-of-order cursors at once.
    let run = |node: &TestServer, step: usize, offset: usize| {
        for i in (offset..200).step_by(step) {
            let r = pull_after(node, "race", Some(&ids[i]));
            // Whatever is left comes after some acknowledged id, in order, with no gap.
            let left = r.ids();
            if let Some(first) = left.first() {
                let at = ids.iter().position(|x| x == first).unwrap();
                assert_eq!(left, ids[at..at + left.len()].to_vec(), "in order, no gap");
                assert_eq!(at + left.len(), 200, "up to the newest");
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| run(&b, 7, 3));
        s.spawn(|| run(&c, 5, 0));
    });
    // The highest cursor (m199, sent by one of them) wins; nothing comes back.
    let r = pull_after(&a, "race", Some("m010"));
    assert!(
        r.ids().is_empty(),
        "acknowledged messages came back: {}",
        r.show()
    );
    let acked: f64 = [&a, &b, &c]
        .iter()
        .map(|n| n.metric("tidings_qst_acked_total").unwrap())
        .sum();
    assert_eq!(
        acked, 200.0,
        "every message counted acknowledged exactly once"
    );
}

#[test]
fn a_long_poll_on_one_node_is_answered_by_a_push_on_another() {
    let Some(redis) = RedisServer::start("qst_longpoll") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    push_when_up(&a, "lp", &xml_batch(&["old"]));
    let mut held = b.connect();
    held.send(b"GET /qst/lp?long-polling=true HTTP/1.1\r\nHost: x\r\nIf-None-Match: old\r\n\r\n");
    // Parked on B (the queue is empty after the acknowledgement), then a push on A.
    assert!(wait_for(TIMEOUT, || b
        .metric("tidings_connections_parked")
        .is_some_and(|v| v == 1.0)));
    push_when_up(&a, "lp", &xml_batch(&["new"]));
    let r = held.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.ids(), ["new"]);
    assert_eq!(r.etag(), "new");
}

#[test]
fn comet_sync_and_put_share_one_clock_across_nodes() {
    let Some(redis) = RedisServer::start("comet_clock") else {
        return;
    };
    let (a, b) = (node(&redis), node(&redis));
    let time = |r: Response| -> u64 {
        assert_eq!(r.status, 200, "{}", r.show());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["time"].as_u64().unwrap()
    };
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    let t1 = time(a.get("/comet?method=put&channel=clk&message=1"));
    let t2 = time(b.get("/comet?method=sync&channel=clk"));
    assert!(t2 >= t1, "B's sync {t2} is not before A's put {t1}");
    let t3 = time(b.get("/comet?method=put&channel=clk&message=2"));
    assert!(
        t3 > t2,
        "a put after a sync gets a later time: {t3} vs {t2}"
    );
    let t4 = time(a.get("/comet?method=put&channel=clk&message=3"));
    assert!(t4 > t3, "one order over both nodes");
}
