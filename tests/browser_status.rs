//! The status page (`/`, `web/status.html`) in a real headless Chromium, driven over the
//! WebDriver protocol through chromedriver: the page shows what the server is, reads its
//! figures once a second, and its "published" figure and chart move after messages are
//! published over HTTP — and only by those messages, not by the page's own updates.
//!
//! The page subscribes to `/sub/tidings/status` with `EventSource` and falls back to polling
//! `/status.json`. Which one it must be using is decided by asking the server first: when
//! `/sub/` answers an event stream, the page must be live over EventSource.
//!
//! The browser set-up (chromedriver, headless Chromium, the watchdog, skipping when they are
//! missing) is `tests/browser_support`; the whole test is bounded by `LIMIT`.

mod browser_support;
mod common;

use std::time::{Duration, Instant};

use browser_support::*;
use common::*;
use serde_json::{json, Value};

/// The longest the whole test may take; a watchdog kills the browser and fails it after.
const LIMIT: Duration = Duration::from_secs(60);
/// Readers of the status page (`statusView`).
const STATUS: &str = include_str!("browser/status.js");
/// Messages the test publishes.
const PUBLISHED: u64 = 3;

/// Whether the server answers an EventSource subscriber at `/sub/` (nchan's API).
fn serves_event_streams(server: &TestServer) -> bool {
    let mut c = server.connect();
    c.send(&request_bytes(
        "GET",
        "/sub/tidings/status",
        &[("Accept", "text/event-stream")],
        b"",
    ));
    let head = c.read_head();
    head.status == 200
        && head
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/event-stream"))
}

/// Waits until the JS expression `cond` (over `v`, the page's `statusView()`) holds; returns
/// the view then.
fn wait_view(s: &Session, d: &Driver, what: &str, cond: &str) -> Value {
    let cond = format!("((v) => {cond})(statusView())");
    s.wait_until(d, what, &cond, "statusView()")
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[test]
fn status_page_figures_move_after_a_publish() {
    let t0 = Instant::now();
    let Some((watchdog, mut d)) = launch(LIMIT) else {
        return;
    };
    let server = start();
    let base = format!("http://{}", server.addr);
    let event_streams = serves_event_streams(&server);
    let page = d.session("status", STATUS);
    eprintln!("browser test: browser up after {:?}", t0.elapsed());

    page.navigate(&d, &format!("{base}/"));
    let title = page.exec(&d, "return document.title;", json!([]));
    assert_eq!(title, json!("tidings status"));
    let first = wait_view(&page, &d, "a first snapshot", "v.samples >= 1");
    assert_eq!(
        first["version"],
        json!(format!("v{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(first["http"], json!(server.addr.to_string()));
    assert_eq!(first["xmpp"], json!("off"));
    assert!(
        num(&first, "open") >= 1,
        "the page's own connection: {first}"
    );
    assert!(
        first["memory"].as_str().is_some_and(|m| m.ends_with("iB")),
        "{first}"
    );

    // How the page gets its figures: EventSource where the server has /sub/, else polling.
    let (transport, state) = if event_streams {
        ("eventsource", "live")
    } else {
        ("polling", "polling")
    };
    let live = wait_view(
        &page,
        &d,
        "the page is live",
        &format!("v.transport === '{transport}' && v.state === '{state}'"),
    );
    eprintln!("browser test: the page gets its figures by {transport}");

    // Publish over HTTP (Talk pushes); the page's published figure and chart follow.
    let before = num(&live, "published");
    for i in 0..PUBLISHED {
        let r = server.request(&post_form("/push", &format!("channel=room&message=m{i}")));
        assert_eq!(r.status, 200, "{}", r.show());
    }
    let want = before + PUBLISHED;
    let moved = wait_view(
        &page,
        &d,
        "the published figure moves",
        &format!("v.published >= {want}"),
    );
    assert_eq!(num(&moved, "published"), want, "{moved}");
    let charted = wait_view(
        &page,
        &d,
        "the published-rate chart shows the burst",
        "v.chartMax > 0",
    );
    assert!(
        num(&charted, "chartPoints") > num(&first, "chartPoints"),
        "the chart grew: {first} then {charted}"
    );
    assert_ne!(charted["chartLine"], first["chartLine"]);

    // Two more updates later, nothing else was counted: the page's own updates are not.
    let seen = num(&charted, "samples");
    let later = wait_view(
        &page,
        &d,
        "two more updates",
        &format!("v.samples >= {}", seen + 2),
    );
    assert_eq!(num(&later, "published"), want, "{later}");

    d.shutdown();
    drop(watchdog);
    eprintln!("browser test: done in {:?}", t0.elapsed());
}
