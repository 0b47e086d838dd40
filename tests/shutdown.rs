//! Clean shutdown (DESIGN.md rule 8, PROTOCOLS.md 3.1): every stream gets what was published
//! before the shutdown, then the final `0\r\n\r\n` and EOF; idle connections are closed;
//! `Server::join` returns; the port no longer accepts.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tidings::Draft;

#[test]
fn streams_end_with_the_last_chunk_and_join_returns() {
    let server = start_with(|c| c.workers = 2);
    let addr = server.addr;
    let mut streams: Vec<StreamReader> = (0..6)
        .map(|i| server.pull(&format!("/pull?name=s{i}&channel=bye"), i % 2 == 0))
        .collect();
    // An idle keep-alive connection and one in the middle of a request head.
    let mut idle = server.connect();
    idle.send(&get("/health"));
    assert_eq!(idle.read_response().status, 200);
    let mut partial = server.connect();
    partial.send(b"GET /health HTTP/1.1\r\nHo");
    assert_eq!(server.handle.metrics().streaming.get(), 6);

    // Published before the shutdown: delivered before the final chunk.
    server
        .handle
        .publish("bye", Draft::with_body("last words"))
        .unwrap();
    let handle = server.handle.clone();
    handle.shutdown();

    for (i, s) in streams.iter_mut().enumerate() {
        let rest = s.client.read_to_eof();
        assert_eq!(
            show(&rest),
            show(b"b\r\nlast words\0\r\n0\r\n\r\n"),
            "stream s{i}: the message, the last chunk, EOF"
        );
    }
    idle.expect_closed();
    partial.expect_closed();
    // The clients hang up on seeing EOF, as real ones do; then nothing is left to wait for.
    drop(streams);
    drop(idle);
    drop(partial);
    let took = server.shutdown_and_join(Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(1),
        "join took {took:?} although every client had hung up"
    );
    assert_eq!(handle.metrics().streaming.get(), 0);
    assert_eq!(handle.metrics().connections_open.get(), 0);

    match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a connection to {addr} was accepted after shutdown"),
    }
}

#[test]
fn a_quiet_stream_gets_only_the_last_chunk() {
    let server = start();
    let mut s = server.pull("/pull?name=q", true);
    let mut other = server.pull("/pull?name=q2", false);
    server.handle.shutdown();
    s.client.expect_bytes(LAST_CHUNK);
    s.client.expect_closed();
    other.expect_end();
    drop((s, other));
    let took = server.shutdown_and_join(Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "join took {took:?}");
}

#[test]
fn join_returns_even_when_a_client_keeps_its_socket_open_and_never_reads() {
    // A stream whose client never reads nor closes must not hold the server past the grace.
    let server = start_with(|c| c.shutdown_grace = Duration::from_millis(500));
    let _stuck = server.pull("/pull?name=stuck", true);
    let took = server.shutdown_and_join(Duration::from_secs(4));
    assert!(took < Duration::from_secs(3), "join took {took:?}");
}

#[test]
fn shutdown_with_no_connections_is_quick() {
    let server = start();
    let addr = server.addr;
    let took = server.shutdown_and_join(Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "join took {took:?}");
    assert!(TcpStream::connect_timeout(&addr, TIMEOUT).is_err());
}
