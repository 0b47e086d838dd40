//! A WebSocket client nobody here wrote against nchan's `/sub/` and `/pub/`: the Python
//! `websockets` library (PyPI), driven by `tests/nchan_clients/websockets_check.py`. Plain
//! and `ws+meta.nchan` frames, binary for `application/octet-stream`, D1's subprotocol
//! choice, resume, ping/pong, close codes (client close, DELETE's 1001, publishing on `/sub/`'s
//! 1008, the subscriber timeout's 1000), and a publisher sending masked, fragmented and
//! binary messages.
//!
//! The Python comes from `TIDINGS_PYTHON` (`.ci/run` makes a virtualenv with `websockets` and
//! sets it), else `python3`. When `websockets` cannot be imported the test says so and
//! passes, unless `TIDINGS_NCHAN_CLIENTS=1` (set by `.ci/run`): then it fails.

#[path = "nchan_support/mod.rs"]
mod nchan_support;

use std::time::Duration;

use nchan_support::python::{has_module, run_check};
use nchan_support::*;

#[test]
fn python_websockets_against_sub_and_pub() {
    let test = "python_websockets_against_sub_and_pub";
    if !has_module("websockets.asyncio.client", "TIDINGS_NCHAN_CLIENTS", test) {
        return;
    }
    let server = start();
    let timing_out = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    // Bounded: each check gives up after 20 s on its own; the script is killed past 90.
    run_check(
        "tests/nchan_clients/websockets_check.py",
        &[
            "--port",
            &server.addr.port().to_string(),
            "--timeout-port",
            &timing_out.addr.port().to_string(),
        ],
        Duration::from_secs(90),
        &[
            "ok plain frames: text, binary for application/octet-stream, empty, UTF-8",
            "ok ws+meta.nchan frames: id, content-type, binary",
            "ok subprotocol negotiation per D1",
            "ok resume by last_event_id and Last-Event-ID",
            "ok ping answered with pong",
            "ok client close echoed",
            "ok DELETE closes 1001 '410 Gone'",
            "ok publishing on /sub/ closes 1008",
            "ok subscriber timeout closes 1000 '408 408 Request Timeout'",
            "ok publisher: info per message in the Accept format, fragmented and binary messages",
        ],
    );
}
