//! A real XMPP client that nobody here wrote: slixmpp (PyPI), driven by
//! `tests/xmpp_clients/slixmpp_check.py`. It authenticates with SCRAM-SHA-1, binds, pings,
//! asks disco#info, fetches its roster, sends urn:M IQs, two clients chat, and one subscribes
//! with slixmpp's XEP-0060 plugin to a hub channel that a comet put then publishes on.
//!
//! The Python comes from `TIDINGS_PYTHON` (`.ci/run` makes a virtualenv with slixmpp and sets
//! it), else `python3`. When slixmpp cannot be imported the test says so and passes, unless
//! `TIDINGS_XMPP_CLIENTS=1` (set by `.ci/run`): then a missing client fails it.

mod common;

use std::time::Duration;

use common::python::{has_module, run_check};
use common::*;

#[test]
fn slixmpp_logs_in_pings_and_chats() {
    let test = "slixmpp_logs_in_pings_and_chats";
    if !has_module("slixmpp", "TIDINGS_XMPP_CLIENTS", test) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tidings-slixmpp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        "alice:wonderland chat/*\nbob:builder chat/*\n",
    )
    .unwrap();
    let server = start_with(|c| {
        c.xmpp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.credentials = Some(credentials.clone());
    });
    let port = server.xmpp.unwrap().port();
    // Bounded: the script gives up after 60 s on its own; it is killed past 90.
    let stdout = run_check(
        "tests/xmpp_clients/slixmpp_check.py",
        &[
            "--port",
            &port.to_string(),
            "--http-port",
            &server.addr.port().to_string(),
        ],
        Duration::from_secs(90),
        &[
            "ok alice authenticated and bound as alice@localhost/laptop",
            "ok mechanism SCRAM-SHA-1",
            "ok ping answered",
            "ok urn:M bad expression: undefined-condition",
            "ok bob got 'hello bob'",
            "ok stamped from alice@localhost/laptop",
            "ok alice got 'hi alice'",
            "ok subscribed to chat/news",
        ],
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok event from http: ") && l.contains("over http")),
        "no PubSub event in:\n{stdout}"
    );
}
