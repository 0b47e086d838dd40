//! XMPP PubSub on nodes sharing a Redis (`--redis`, issue 13): a publish on one node's
//! XMPP session is answered once Redis stored it and reaches a Talk stream on another node;
//! with Redis down it is refused (`wait`/`resource-constraint`), never answered as stored.
//! Skipped (and saying so) without `redis-server`, unless `TIDINGS_REDIS_TESTS=1`.

mod redis_support;
mod xmpp_support;

use std::time::Duration;

use redis_support::RedisServer;
use xmpp_support::*;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

fn publish_iq(id: &str, node: &str, body: &str) -> Vec<u8> {
    format!("<iq type='set' to='localhost' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'><entry xmlns='urn:x'>{body}</entry></item></publish></pubsub></iq>").into_bytes()
}

#[test]
fn an_xmpp_publish_is_answered_once_redis_stored_it() {
    let Some(mut redis) = RedisServer::start("xmpp") else {
        return;
    };
    let url = tidings::redis::Url::parse(&redis.url()).unwrap();
    let a = xmpp(|c| c.redis = Some(url.clone()));
    let b = start_with(|c| c.redis = Some(url));
    assert!(wait_for(TIMEOUT, || a.get("/health").text().trim() == "ok"));
    let mut talk_b = b.pull("/pull?name=watcher&channel=board", true);
    let mut publisher = session(&a, "user", "secret", "pub");
    // Two publishes back to back: two answers, in order, each once Redis stored it.
    publisher.send(&publish_iq("p1", "board", "one"));
    publisher.send(&publish_iq("p2", "board", "two"));
    for id in ["p1", "p2"] {
        assert_eq!(
            text(publisher.read_until(b"</iq>", TIMEOUT)),
            format!("<iq type='result' id='{id}' from='localhost'><pubsub xmlns='{PUBSUB}'><publish node='board'><item id='{id}'/></publish></pubsub></iq>")
        );
    }
    assert_eq!(talk_b.next_text(), "<entry xmlns='urn:x'>one</entry>");
    assert_eq!(talk_b.next_text(), "<entry xmlns='urn:x'>two</entry>");

    // Redis holds writes for a while: the answer waits for it, and comes once stored.
    assert_eq!(redis.command("CLIENT PAUSE 600 WRITE"), "+OK");
    publisher.send(&publish_iq("p9", "board", "held"));
    publisher.expect_silence(Duration::from_millis(300));
    assert!(text(publisher.read_until(b"</iq>", TIMEOUT)).starts_with("<iq type='result' id='p9'"));
    assert_eq!(talk_b.next_text(), "<entry xmlns='urn:x'>held</entry>");

    redis.kill();
    assert!(wait_for(TIMEOUT, || a
        .get("/health")
        .text()
        .starts_with("degraded")));
    publisher.send(&publish_iq("p3", "board", "three"));
    let answer = text(publisher.read_until(b"</iq>", TIMEOUT));
    assert!(
        answer.starts_with("<iq type='error' id='p3'") && answer.contains("resource-constraint"),
        "{answer}"
    );
    talk_b.expect_no_message(Duration::from_millis(100));
}

#[test]
fn items_on_a_node_that_never_held_the_channel_come_from_redis() {
    let Some(redis) = RedisServer::start("xmpp_items") else {
        return;
    };
    let url = tidings::redis::Url::parse(&redis.url()).unwrap();
    let a = xmpp(|c| c.redis = Some(url.clone()));
    let b = xmpp(|c| c.redis = Some(url));
    for node in [&a, &b] {
        assert!(wait_for(TIMEOUT, || node.get("/health").text().trim() == "ok"));
    }
    let mut publisher = session(&a, "user", "secret", "pub");
    for id in ["n1", "n2", "n3"] {
        publisher.send(&publish_iq(id, "news", id));
        let answer = text(publisher.read_until(b"</iq>", TIMEOUT));
        assert!(answer.starts_with("<iq type='result'"), "{answer}");
    }
    // B has no subscriber of the channel and so holds none of it: Redis answers.
    let mut reader = session(&b, "user", "secret", "read");
    reader.send(format!("<iq type='get' to='localhost' id='i1'><pubsub xmlns='{PUBSUB}'><items node='news' max_items='2'/></pubsub></iq>").as_bytes());
    assert_eq!(
        text(reader.read_until(b"</iq>", TIMEOUT)),
        format!("<iq type='result' id='i1' from='localhost'><pubsub xmlns='{PUBSUB}'><items node='news'><item id='n2'><entry xmlns='urn:x'>n2</entry></item><item id='n3'><entry xmlns='urn:x'>n3</entry></item></items></pubsub></iq>")
    );
}
