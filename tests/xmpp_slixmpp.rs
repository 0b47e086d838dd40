//! A real XMPP client that nobody here wrote: slixmpp (PyPI), driven by
//! `tests/xmpp_clients/slixmpp_check.py`. It authenticates with SCRAM-SHA-1, binds, pings,
//! asks disco#info, fetches its roster, sends urn:M IQs, two clients chat, and one subscribes
//! with slixmpp's XEP-0060 plugin to a hub channel that a comet put then publishes on.
//!
//! The Python comes from `TIDINGS_PYTHON` (`.ci/run` makes a virtualenv with slixmpp and sets
//! it), else `python3`. When slixmpp cannot be imported the test says so and passes, unless
//! `TIDINGS_XMPP_CLIENTS=1` (set by `.ci/run`): then a missing client fails it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn python() -> String {
    std::env::var("TIDINGS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn slixmpp_available() -> bool {
    Command::new(python())
        .args(["-c", "import slixmpp"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn slixmpp_logs_in_pings_and_chats() {
    if !slixmpp_available() {
        let required = std::env::var("TIDINGS_XMPP_CLIENTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TIDINGS_XMPP_CLIENTS=1 but slixmpp cannot be imported by {}",
            python()
        );
        eprintln!(
            "SKIPPED slixmpp_logs_in_pings_and_chats: slixmpp is not installed for {} (.ci/run installs it)",
            python()
        );
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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/xmpp_clients/slixmpp_check.py"
    );
    let mut child = Command::new(python())
        .args([
            script,
            "--port",
            &port.to_string(),
            "--http-port",
            &server.addr.port().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the slixmpp script");
    // Bounded: the script gives up after 60 s on its own; kill it past 90.
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
        "slixmpp check failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "ok alice authenticated and bound as alice@localhost/laptop",
        "ok mechanism SCRAM-SHA-1",
        "ok ping answered",
        "ok urn:M bad expression: undefined-condition",
        "ok bob got 'hello bob'",
        "ok stamped from alice@localhost/laptop",
        "ok alice got 'hi alice'",
        "ok subscribed to chat/news",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok event from http: ") && l.contains("over http")),
        "no PubSub event in:\n{stdout}"
    );
}
