//! Slow readers (DESIGN.md rule 4): a stream that does not read while messages keep coming
//! is closed once its queued output passes `--max-output-bytes`, and counted; a stream on
//! the same channel that keeps reading receives every message.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use tidings::Draft;

const MESSAGE: usize = 60 * 1024;
/// Enough to fill any loopback socket buffers many times over; the slow reader must be
/// closed long before.
const MAX_MESSAGES: usize = 400;

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("msg-{i}:").into_bytes();
    b.resize(MESSAGE, b'a' + (i % 26) as u8);
    b
}

#[test]
fn a_stream_that_never_reads_is_closed_and_a_reading_one_gets_everything() {
    let server = start_with(|c| {
        c.max_output_bytes = 64 * 1024;
        c.max_message_bytes = 128 * 1024;
        c.channel_bytes = 64 << 20;
        c.talk_keepalive = Duration::from_secs(60);
    });
    let metrics = server.handle.metrics();

    // The slow stream: reads its head and greeting, then nothing.
    let mut slow = StreamReader::open(
        Client::connect_small_window(server.addr),
        "/pull?name=slow&channel=firehose",
        true,
        0,
    );
    slow.expect_greeting();

    // The reading stream, on its own thread, reports each message as it arrives.
    let fast = server.pull("/pull?name=fast&channel=firehose", true);
    let fast_socket = fast.client.stream.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, String>>();
    let reader = std::thread::spawn(move || {
        let mut fast = fast;
        loop {
            let m = fast.try_next_message(TIMEOUT);
            let stop = m.is_err();
            if tx.send(m).is_err() || stop {
                return;
            }
        }
    });

    // Lockstep: publish, then wait for the reading stream to have it, so its own queue
    // never holds more than one message. The slow one's queue only grows.
    let mut published = 0;
    while metrics.slow_readers_closed.get() == 0 {
        assert!(
            published < MAX_MESSAGES,
            "the slow reader was not closed after {published} messages of {MESSAGE} bytes"
        );
        server
            .handle
            .publish("firehose", Draft::with_body(body(published)))
            .unwrap();
        let got = rx
            .recv_timeout(TIMEOUT)
            .expect("the reading stream's thread answers")
            .unwrap_or_else(|e| panic!("reading stream, message {published}: {e}"));
        assert!(
            got == body(published),
            "reading stream: message {published} differs"
        );
        published += 1;
    }
    eprintln!("slow reader closed after {published} messages");
    assert_eq!(metrics.slow_readers_closed.get(), 1);
    assert!(wait_for(TIMEOUT, || metrics.streaming.get() == 1));

    // The reading stream goes on receiving.
    for _ in 0..3 {
        server
            .handle
            .publish("firehose", Draft::with_body(body(published)))
            .unwrap();
        let got = rx.recv_timeout(TIMEOUT).unwrap().unwrap();
        assert!(
            got == body(published),
            "after the close, message {published} differs"
        );
        published += 1;
    }
    server.wait_metric("tidings_slow_readers_closed_total", 1.0);
    server.wait_metric("tidings_connections_streaming", 1.0);

    // The slow client, reading at last, finds what the kernel held and then the end.
    let rest = slow.client.read_to_eof();
    assert!(
        !rest.ends_with(LAST_CHUNK),
        "a closed slow reader is cut off, not ended as if the server stopped"
    );
    // Stop the reading thread: its socket reaches EOF and its read returns.
    fast_socket.shutdown(std::net::Shutdown::Both).unwrap();
    drop(rx);
    reader.join().unwrap();
}
