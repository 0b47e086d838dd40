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

use std::process::{Command, Stdio};
use std::time::Duration;

use nchan_support::*;

fn python() -> String {
    std::env::var("TIDINGS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn websockets_available() -> bool {
    Command::new(python())
        .args(["-c", "import websockets.asyncio.client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn python_websockets_against_sub_and_pub() {
    if !websockets_available() {
        let required = std::env::var("TIDINGS_NCHAN_CLIENTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TIDINGS_NCHAN_CLIENTS=1 but websockets cannot be imported by {}",
            python()
        );
        eprintln!(
            "SKIPPED python_websockets_against_sub_and_pub: websockets is not installed for {} (.ci/run installs it)",
            python()
        );
        return;
    }
    let server = start();
    let timing_out = start_with(|c| c.nchan_subscriber_timeout = Duration::from_secs(1));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/nchan_clients/websockets_check.py"
    );
    let mut child = Command::new(python())
        .args([
            script,
            "--port",
            &server.addr.port().to_string(),
            "--timeout-port",
            &timing_out.addr.port().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the websockets script");
    // Bounded: each check gives up after 20 s on its own; kill the script past 90.
    let done = wait_for(Duration::from_secs(90), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the script's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "websockets check failed:\n{stdout}\n{stderr}"
    );
    for line in [
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
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}
