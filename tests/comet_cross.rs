//! One hub, many protocols (PROTOCOLS.md 0, 2.1): messages pushed with QST and Talk appear in
//! comet `get` (waking parked ones too), with `data` rendered by the comet rule, and comet
//! puts appear in Talk streams.

mod comet_support;

use comet_support::*;
use serde_json::json;

/// `POST /qst/<channel>` of a JSON batch; asserts 200.
fn qst_push(server: &TestServer, channel: &str, batch: &str) {
    let mut c = server.connect();
    let r = c.roundtrip(&post(
        &format!("/qst/{channel}"),
        "application/json",
        batch.as_bytes(),
    ));
    assert_eq!(r.status, 200, "QST push: {}", show(&r.body));
}

/// `POST /push` of a Talk form; asserts the ordinary `noop` reply.
fn talk_push(server: &TestServer, form: &str) {
    let mut c = server.connect();
    let r = c.roundtrip(&post_form("/push", form));
    assert_eq!(r.status, 200, "Talk push: {}", show(&r.body));
    assert_eq!(r.body, b"noop");
}

#[test]
fn qst_messages_appear_in_get() {
    let server = start();
    let s = server.sync("gw");
    qst_push(
        &server,
        "gw",
        r#"[{"body":"hi"},{"from":"sms://1","body":"{\"n\":1}"},{"body":"Ünïcödé"}]"#,
    );
    let v = server.get_after("gw", s);
    let ms = messages(&v);
    let data: Vec<_> = ms.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(data, vec![json!("hi"), json!({"n": 1}), json!("Ünïcödé")]);
    assert!(ms.windows(2).all(|w| w[0].0 < w[1].0), "increasing times");
    assert!(ms[0].0 > s);
}

#[test]
fn qst_push_wakes_a_parked_get() {
    let server = start();
    let s = server.sync("gw2");
    let mut c = server.connect();
    c.send(&get(&format!("/comet?method=get&channel=gw2&time={s}")));
    server.wait_parked(1);
    qst_push(&server, "gw2", r#"[{"body":"hi"}]"#);
    let v = c.read_response().json();
    let ms = messages(&v);
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].1, json!("hi"));
    assert_eq!(reply_time(&v), ms[0].0);
}

#[test]
fn talk_pushes_appear_in_get() {
    let server = start();
    let s = server.sync("room");
    talk_push(&server, "name=a&channel=room&message=hi");
    talk_push(&server, "name=b&channel=room&message=%5B1%2C2%5D");
    let v = server.get_after("room", s);
    let data: Vec<_> = messages(&v).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, vec![json!("hi"), json!([1, 2])]);
}

#[test]
fn talk_push_wakes_a_parked_get() {
    let server = start();
    let s = server.sync("room2");
    let mut c = server.connect();
    c.send(&get(&format!("/comet?method=get&channel=room2&time={s}")));
    server.wait_parked(1);
    talk_push(&server, "name=a&channel=room2&message=wake+up");
    let v = c.read_response().json();
    assert_eq!(messages(&v)[0].1, json!("wake up"));
}

#[test]
fn comet_puts_appear_in_a_talk_stream() {
    let server = start();
    let mut stream = server.pull("/pull?name=n&channel=mix", true);
    server.put("mix", "hi");
    server.put("mix", "{\"from\":\"web\",\"text\":\"hé\"}");
    assert_eq!(stream.next_message(), b"hi");
    assert_eq!(
        stream.next_message(),
        "{\"from\":\"web\",\"text\":\"hé\"}".as_bytes()
    );
    // And a comet client sees what a Talk client pushes in the same channel.
    let s = server.sync("mix");
    talk_push(&server, "name=t&channel=mix&message=back");
    assert_eq!(stream.next_message(), b"back");
    let v = server.get_after("mix", s);
    assert_eq!(messages(&v).len(), 1);
    assert_eq!(messages(&v)[0].1, json!("back"));
}
