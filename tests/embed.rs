//! Embedding tidings as a library: a `Handle` cloned into other threads publishes into
//! channels that Talk streams are reading.

mod common;

use std::sync::Arc;

use common::*;
use tidings::server::PublishError;
use tidings::{Draft, Handle};

#[test]
fn handle_is_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Handle>();
}

#[test]
fn publish_from_another_thread_reaches_a_stream() {
    let server = start();
    let mut s = server.pull("/pull?name=watcher&channel=alerts", true);
    let handle = server.handle.clone();
    let publisher = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        for m in ["door open", "door closed"] {
            seqs.push(
                handle
                    .publish("alerts", Draft::with_body(m))
                    .expect("publish"),
            );
        }
        seqs
    });
    let seqs = publisher.join().unwrap();
    assert!(seqs[0] < seqs[1], "seq strictly increases: {seqs:?}");
    assert_eq!(s.next_text(), "door open");
    assert_eq!(s.next_text(), "door closed");
    assert_eq!(server.handle.metrics().messages_published.get(), 2);
}

#[test]
fn many_threads_publish_and_every_message_arrives_once() {
    let server = start();
    let mut s = server.pull("/pull?name=w&channel=busy", true);
    let handle = Arc::new(server.handle.clone());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    handle
                        .publish("busy", Draft::with_body(format!("t{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut got: Vec<String> = (0..200).map(|_| s.next_text()).collect();
    // Each thread's messages arrive in its own order.
    for t in 0..4 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("t{t}-")))
            .collect();
        let expected: Vec<String> = (0..50).map(|i| format!("t{t}-{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 200, "no duplicates");
    s.expect_no_message(std::time::Duration::from_millis(100));
}

#[test]
fn publish_refuses_bad_channels_and_large_messages() {
    let server = start_with(|c| c.max_message_bytes = 16);
    let h = &server.handle;
    assert!(matches!(
        h.publish("", Draft::with_body("x")),
        Err(PublishError::BadChannel(_))
    ));
    assert!(matches!(
        h.publish("bad\u{1}name", Draft::with_body("x")),
        Err(PublishError::BadChannel(_))
    ));
    assert!(matches!(
        h.publish(&"c".repeat(256), Draft::with_body("x")),
        Err(PublishError::BadChannel(_))
    ));
    assert_eq!(
        h.publish("ok", Draft::with_body("x".repeat(17))),
        Err(PublishError::TooLarge)
    );
    assert!(h.publish("ok", Draft::with_body("x".repeat(16))).is_ok());
    assert!(h
        .publish("acme/incoming", Draft::with_body("slash"))
        .is_ok());
    assert_eq!(h.metrics().messages_published.get(), 2);
}
