//! The chat demo (`/demo/`, `web/chat.html`) and the browser client (`/tidings.js`) in a real
//! headless Chromium, driven over the WebDriver protocol through chromedriver: two browsers
//! chat through an in-process server; then the client's JSONP transport, `onMissed`, its
//! backoff and its fatal errors are checked in a page.
//!
//! The browser set-up (chromedriver, headless Chromium, the watchdog, skipping when they are
//! missing) is `tests/browser_support`; the whole test is bounded by `LIMIT`.

mod browser_support;
mod comet_support;

use std::time::{Duration, Instant};

use browser_support::*;
use comet_support::*;
use serde_json::{json, Value};
use tidings::Draft;

/// The longest the whole test may take; a watchdog kills the browsers and fails it after.
const LIMIT: Duration = Duration::from_secs(60);
/// Readers of the chat page (`chatLines`).
const CHAT: &str = include_str!("browser/chat.js");
const CLIENT_API: &str = include_str!("browser/client_api.js");

/// Waits until the JS expression `cond` holds in `s`; returns the chat lines then.
fn wait_lines(s: &Session, d: &Driver, what: &str, cond: &str) -> Vec<Value> {
    let v = s.wait_until(d, what, cond, "chatLines()");
    v.as_array().cloned().unwrap_or_default()
}

/// One phase of `tests/browser/client_api.js` in `s`.
fn api(s: &Session, d: &Driver, phase: &str, params: Value) -> Value {
    let mut params = params;
    params["ms"] = json!(WAIT_MS);
    s.run(d, phase, CLIENT_API, json!([phase, params]))
}

/// A chat line as the page shows it: (from, text, time).
fn line(v: &Value) -> (String, String, u64) {
    (
        v["from"].as_str().unwrap().to_string(),
        v["text"].as_str().unwrap().to_string(),
        v["time"].as_u64().unwrap(),
    )
}

#[test]
fn chat_demo_between_two_browsers() {
    let t0 = Instant::now();
    let Some((watchdog, mut d)) = launch(LIMIT) else {
        return;
    };
    let server = start_with(|c| {
        // Short long-polls: the pages also go through timeout answers while the test runs.
        c.long_poll_timeout = Duration::from_secs(2);
        c.channel_capacity = 5;
    });
    let base = format!("http://{}", server.addr);
    let alice = d.session("alice", CHAT);
    let bob = d.session("bob", CHAT);
    eprintln!("browser test: two browsers up after {:?}", t0.elapsed());

    alice.navigate(&d, &format!("{base}/demo/?name=alice"));
    bob.navigate(&d, &format!("{base}/demo/?name=bob"));
    for s in [&alice, &bob] {
        let title = s.exec(&d, "return document.title;", json!([]));
        assert_eq!(title, json!("tidings chat"), "{}", s.label);
        wait_lines(
            s,
            &d,
            "live",
            "document.querySelector('#status').dataset.state === 'live'",
        );
        let chan = s.exec(
            &d,
            "return document.querySelector('#channel').value;",
            json!([]),
        );
        assert_eq!(chan, json!("chat"), "the default channel");
    }

    // Bob speaks; Alice hears it, and Bob sees his own line once.
    bob.type_into(&d, "#text", "hello from bob");
    bob.click(&d, "#send");
    let seen = wait_lines(
        &alice,
        &d,
        "bob's line",
        "chatLines().some((l) => l.from === 'bob' && l.text === 'hello from bob')",
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    let mine = wait_lines(&bob, &d, "own line", "chatLines().some((l) => l.mine)");
    assert_eq!(mine.len(), 1, "{mine:?}");
    let cleared = bob.exec(
        &d,
        "return document.querySelector('#text').value;",
        json!([]),
    );
    assert_eq!(cleared, json!(""), "the input is cleared after sending");

    // Alice answers with markup, which must show as text.
    alice.type_into(&d, "#text", "hi bob <b>not bold</b> ✓");
    alice.click(&d, "#send");
    wait_lines(
        &bob,
        &d,
        "alice's line",
        "chatLines().some((l) => l.from === 'alice' && l.text === 'hi bob <b>not bold</b> ✓')",
    );
    let markup = bob.exec(
        &d,
        "return document.querySelectorAll('#log b').length;",
        json!([]),
    );
    assert_eq!(markup, json!(0), "message text is never parsed as HTML");

    // A message from another protocol (here the embedding program) shows as it came.
    let notice = server
        .handle
        .publish("chat", Draft::with_body("server notice"))
        .unwrap();
    let mut views = Vec::new();
    for s in [&alice, &bob] {
        let lines = wait_lines(
            s,
            &d,
            "notice",
            "chatLines().some((l) => l.foreign && l.text === 'server notice')",
        );
        views.push(lines.iter().map(line).collect::<Vec<_>>());
    }
    // Both pages show the same three lines, once each, in the server's order.
    assert_eq!(views[0], views[1], "both browsers show the same log");
    let texts: Vec<&str> = views[0].iter().map(|l| l.1.as_str()).collect();
    assert_eq!(
        texts,
        [
            "hello from bob",
            "hi bob <b>not bold</b> ✓",
            "server notice"
        ]
    );
    assert!(views[0].windows(2).all(|w| w[0].2 < w[1].2));
    assert_eq!(views[0][2].2, notice);
    // What the pages sent is the demo's JSON.
    let stored = server.get_after("chat", 0);
    let data: Vec<Value> = messages(&stored).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data[0], json!({"from": "bob", "text": "hello from bob"}));
    assert_eq!(data[1]["from"], json!("alice"));
    eprintln!("browser test: chat checked after {:?}", t0.elapsed());

    // The client API, in Alice's page. JSONP: every message once, in order; tags cleaned up.
    let opened = api(&alice, &d, "jsonp-open", json!({ "channel": "jp" }));
    assert!(
        opened.as_u64().is_some(),
        "onOpen gives the cursor: {opened}"
    );
    let times: Vec<u64> = ["one", "{\"n\":2}", "[3]"]
        .iter()
        .map(|b| server.handle.publish("jp", Draft::with_body(*b)).unwrap())
        .collect();
    api(&alice, &d, "jsonp-collect", json!({ "count": 3 }));
    let r = api(&alice, &d, "jsonp-finish", json!({ "channel": "jp" }));
    let got: Vec<(u64, Value)> = r["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["time"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (times[0], json!("one")),
            (times[1], json!({"n": 2})),
            (times[2], json!([3]))
        ]
    );
    assert_eq!(r["errors"], json!([]));
    assert_eq!(r["cursor"], json!(times[2]));
    assert_eq!(r["scripts"], json!(0), "JSONP script tags are removed");
    assert!(
        r["globals"].as_u64().unwrap() <= 1,
        "callback names are released (one may wait for a cancelled answer): {r}"
    );
    let published = r["published"].as_u64().unwrap();
    assert!(published > times[2]);
    let v = server.get_after("jp", times[2]);
    assert_eq!(messages(&v), vec![(published, json!({"via": "jsonp"}))]);

    // onMissed: 8 messages into a channel that keeps 5.
    for i in 0..8 {
        server
            .handle
            .publish("dropped", Draft::with_body(i.to_string()))
            .unwrap();
    }
    let r = api(
        &alice,
        &d,
        "missed",
        json!({ "channel": "dropped", "count": 5 }),
    );
    assert_eq!(r["missed"], json!([{ "after": 1 }]));
    let data: Vec<Value> = r["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec![json!(3), json!(4), json!(5), json!(6), json!(7)]);

    // Backoff against a closed port: attempts count up, delays stay under the cap, stop()
    // ends the retries.
    let closed = free_port();
    let r = api(
        &alice,
        &d,
        "backoff",
        json!({ "url": format!("http://127.0.0.1:{closed}/comet") }),
    );
    let errs = r["errs"].as_array().unwrap();
    for (i, e) in errs.iter().enumerate() {
        assert_eq!(e["attempt"], json!(i + 1), "{r}");
        assert_eq!(e["fatal"], json!(false));
        assert_eq!(e["status"], json!(0));
        let delay = e["retryIn"].as_u64().unwrap();
        let cap = (20u64 << i).min(80);
        assert!(
            delay >= cap / 2 && delay <= cap,
            "attempt {}: {delay} ms, cap {cap}",
            i + 1
        );
    }
    assert_eq!(r["after"], json!(0), "no retry after stop(): {r}");

    // A 400 is final.
    let r = api(&alice, &d, "fatal", json!({}));
    assert_eq!(
        r["errs"],
        json!([{ "status": 400, "fatal": true, "retryIn": null }])
    );
    assert_eq!(r["states"], json!(["connecting", "stopped"]));

    // The pages are still live and saw nothing twice.
    for s in [&alice, &bob] {
        let n = s.exec(&d, "return chatLines().length;", json!([]));
        assert_eq!(n, json!(3), "{}", s.label);
    }
    d.shutdown();
    drop(watchdog);
    let took = t0.elapsed();
    eprintln!("browser test: passed in {took:?}");
    assert!(took < LIMIT);
}
