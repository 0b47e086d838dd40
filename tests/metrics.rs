//! `GET /health` and `GET /metrics` (DESIGN.md, metrics): liveness, the Prometheus text
//! format, and gauges and counters that follow what the server does.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn health_is_200_ok() {
    let server = start();
    let r = server.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    let mut c = server.connect();
    c.send(b"HEAD /health HTTP/1.1\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("3"));
    c.expect_silence(Duration::from_millis(50));
}

#[test]
fn metrics_is_prometheus_text() {
    let server = start();
    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.body_str();
    assert!(text.ends_with('\n'));
    // Every sample line is `name[{labels}] value`, and every family has HELP and TYPE.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (_, kind) = rest.split_once(' ').unwrap();
            assert!(kind == "counter" || kind == "gauge", "{line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(name.starts_with("tidings_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line:?}"));
        let family = name.split('{').next().unwrap();
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
    for name in [
        "tidings_connections_open",
        "tidings_connections_streaming",
        "tidings_slow_readers_closed_total",
        "tidings_header_timeouts_total",
        "tidings_idle_timeouts_total",
        "tidings_connections_refused_total",
    ] {
        assert!(metric_value(text, name).is_some(), "{name} missing");
    }
    // The connection asking is open.
    assert!(metric_value(text, "tidings_connections_open").unwrap() >= 1.0);
}

#[test]
fn streaming_gauge_follows_streams() {
    let server = start();
    assert_eq!(server.metric("tidings_connections_streaming"), Some(0.0));
    let a = server.pull("/pull?name=a", true);
    assert_eq!(server.metric("tidings_connections_streaming"), Some(1.0));
    let b = server.pull("/pull?name=b&channel=other", false);
    assert_eq!(server.metric("tidings_connections_streaming"), Some(2.0));
    assert_eq!(server.handle.metrics().streaming.get(), 2);

    // The client hangs up: the server notices without any write to the stream.
    drop(a);
    server.wait_metric("tidings_connections_streaming", 1.0);
    drop(b);
    server.wait_metric("tidings_connections_streaming", 0.0);
    assert_eq!(server.handle.metrics().streaming.get(), 0);
}

#[test]
fn open_connections_gauge_follows_clients() {
    let server = start();
    let metrics = server.handle.metrics();
    let clients: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    assert!(wait_for(TIMEOUT, || metrics.connections_open.get() == 5));
    // Asking over HTTP adds the asking connection.
    assert_eq!(server.metric("tidings_connections_open"), Some(6.0));
    drop(clients);
    assert!(
        wait_for(TIMEOUT, || metrics.connections_open.get() == 0),
        "{} still open",
        metrics.connections_open.get()
    );
    assert!(metrics.connections_accepted.get() >= 6);
}

#[test]
fn requests_are_counted_by_protocol_and_status() {
    let server = start();
    let _s = server.pull("/pull?name=a", true);
    assert_eq!(server.get("/push?name=b&message=x").status, 200);
    assert_eq!(server.get("/push?name=b").status, 400);
    assert_eq!(server.get("/nothing").status, 404);
    let text = server.metrics_text();
    let v = |name: &str| metric_value(&text, name);
    assert_eq!(
        v("tidings_requests_total{protocol=\"talk\",status=\"200\"}"),
        Some(2.0),
        "one pull, one push"
    );
    assert_eq!(
        v("tidings_requests_total{protocol=\"talk\",status=\"400\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("tidings_requests_total{protocol=\"other\",status=\"404\"}"),
        Some(1.0)
    );
    assert_eq!(v("tidings_messages_published_total"), Some(1.0));
    assert_eq!(v("tidings_messages_delivered_total"), Some(1.0));
}
