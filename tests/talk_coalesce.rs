//! `--talk-coalesce-ms`: a stream holds its records that long after the first of a burst, so
//! a burst from a sender who waits for each reply leaves as one chunk (rupy's C# client keeps
//! only the first chunk of each socket read). With the default (0) records go out at once.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn push_one_at_a_time(server: &TestServer, channel: &str, bodies: &[&str]) {
    let mut c = server.connect();
    for b in bodies {
        let r = c.get(&format!("/push?channel={channel}&name=writer&message={b}"));
        assert_eq!(r.status, 200, "{}", r.show());
    }
}

#[test]
fn a_burst_leaves_as_one_chunk_after_the_hold() {
    let server = start_with(|c| c.talk_coalesce = Duration::from_millis(1500));
    let mut s = server.pull("/pull?name=reader&channel=burst", true);
    let started = Instant::now();
    push_one_at_a_time(&server, "burst", &["one", "two", "three", "four", "five"]);
    let records = s.next_records();
    let held = started.elapsed();
    assert_eq!(
        records,
        [&b"one"[..], b"two", b"three", b"four", b"five"],
        "the whole burst in one chunk"
    );
    assert!(
        held >= Duration::from_millis(1400),
        "the chunk waited for the hold, got it after {held:?}"
    );
    // The next burst is held again, and the stream still ends properly.
    push_one_at_a_time(&server, "burst", &["six", "seven"]);
    assert_eq!(s.next_records(), [&b"six"[..], b"seven"]);
    server.handle.shutdown();
    s.expect_end();
}

#[test]
fn without_a_hold_each_record_goes_out_at_once() {
    let server = start();
    let mut s = server.pull("/pull?name=reader&channel=nohold", true);
    let mut c = server.connect();
    for b in ["one", "two", "three"] {
        let r = c.get(&format!("/push?channel=nohold&name=writer&message={b}"));
        assert_eq!(r.status, 200);
        // Each record arrives before the next push is even sent.
        assert_eq!(s.next_records(), [b.as_bytes()]);
    }
}
