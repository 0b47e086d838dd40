//! Helpers for the Simple Comet Protocol tests (`tests/comet_*.rs`, `tests/browser_demo.rs`),
//! on top of the shared core in `tests/common` (server, keep-alive client, response parser,
//! Talk stream reader, metrics): comet request shortcuts, readers for comet's JSON replies
//! and a percent-encoder.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

pub use common::*;
use serde_json::Value;

impl TestServer {
    /// `GET /comet?<query>` on a fresh connection.
    pub fn comet(&self, query: &str) -> Response {
        self.get(&format!("/comet?{query}"))
    }

    /// `method=put` of `message` (percent-encoded here) on `channel`; asserts a 200 JSON
    /// `{"time":T}` and returns `T`.
    pub fn put(&self, channel: &str, message: &str) -> u64 {
        let r = self.comet(&format!(
            "method=put&channel={}&message={}",
            enc(channel),
            enc(message)
        ));
        time_of(&r, "put")
    }

    /// `method=sync` on `channel`; returns the clock it answered.
    pub fn sync(&self, channel: &str) -> u64 {
        let r = self.comet(&format!("method=sync&channel={}", enc(channel)));
        time_of(&r, "sync")
    }

    /// `method=get` after `time` on `channel`, on a fresh connection; asserts a 200 and
    /// returns the parsed JSON.
    pub fn get_after(&self, channel: &str, time: u64) -> Value {
        let r = self.comet(&format!("method=get&channel={}&time={time}", enc(channel)));
        assert_eq!(r.status, 200, "get: {}", show(&r.body));
        r.json()
    }
}

impl Response {
    /// The body parsed as JSON (panics with the body otherwise).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", show(&self.body)))
    }
}

/// Asserts a 200 JSON reply `{"time":T}` (nothing else) and returns `T`.
pub fn time_of(r: &Response, what: &str) -> u64 {
    assert_eq!(r.status, 200, "{what}: {}", show(&r.body));
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
    let v = r.json();
    let obj = v.as_object().expect("a JSON object");
    assert_eq!(obj.len(), 1, "{what} answers only the time: {v}");
    v["time"].as_u64().expect("time is a non-negative integer")
}

/// The `time` of a get reply.
pub fn reply_time(v: &Value) -> u64 {
    v["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("no time in {v}"))
}

/// The `(time, data)` pairs of a get reply.
pub fn messages(v: &Value) -> Vec<(u64, Value)> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {v}"))
        .iter()
        .map(|m| {
            let obj = m.as_object().expect("a message is an object");
            assert_eq!(obj.len(), 2, "a message has exactly time and data: {m}");
            (m["time"].as_u64().expect("message time"), m["data"].clone())
        })
        .collect()
}

/// Whether a get reply carries `"missed":true` (and checks it is never anything else).
pub fn missed(v: &Value) -> bool {
    match v.get("missed") {
        None => false,
        Some(Value::Bool(true)) => true,
        Some(other) => panic!("missed must be absent or true, got {other} in {v}"),
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), byte by byte.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
