//! Simple Comet JSONP (PROTOCOLS.md 2.2): `callback=cb` wraps every answer as `cb(<json>);`
//! with `Content-Type: application/javascript`, on put, sync, an immediate get, a woken get
//! and a timeout; a callback outside `^[A-Za-z_$][A-Za-z0-9_$.]{0,127}$` is a `400` with no
//! side effect.

mod comet_support;

use std::time::Duration;

use comet_support::*;
use serde_json::{json, Value};

/// Asserts a JSONP answer `cb(<json>);` and returns the JSON.
fn unwrap_jsonp(r: &Response, cb: &str) -> Value {
    assert_eq!(r.status, 200, "{}", show(&r.body));
    let ct = r.header("Content-Type").unwrap();
    assert!(ct.starts_with("application/javascript"), "{ct}");
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let text = r.text();
    let inner = text
        .strip_prefix(&format!("{cb}("))
        .and_then(|s| s.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not {cb}(…); : {text}"));
    serde_json::from_str(inner).unwrap_or_else(|e| panic!("{e}: {inner}"))
}

#[test]
fn put_sync_and_get_are_wrapped() {
    let server = start();
    let r = server.comet("method=sync&channel=j&callback=cb");
    let s = unwrap_jsonp(&r, "cb")["time"].as_u64().unwrap();
    let r = server.comet("method=put&channel=j&message=%7B%22x%22%3A1%7D&callback=cb");
    let v = unwrap_jsonp(&r, "cb");
    let t = v["time"].as_u64().unwrap();
    assert_eq!(v, json!({ "time": t }));
    assert!(t > s);
    let r = server.comet(&format!("method=get&channel=j&time={s}&callback=cb"));
    assert_eq!(
        r.text(),
        format!(r#"cb({{"time":{t},"messages":[{{"time":{t},"data":{{"x":1}}}}]}});"#)
    );
    unwrap_jsonp(&r, "cb");
}

#[test]
fn allowed_callback_names() {
    let server = start();
    let long = format!("a{}", "b".repeat(127));
    for cb in [
        "cb",
        "_x",
        "$",
        "$jq",
        "jQuery1830_1700000000000",
        "a.b.c",
        "A9_$.z",
        long.as_str(),
    ] {
        let r = server.comet(&format!("method=sync&channel=names&callback={}", enc(cb)));
        let v = unwrap_jsonp(&r, cb);
        assert!(v["time"].as_u64().is_some(), "{cb}");
    }
}

#[test]
fn bad_callbacks_are_400_with_no_side_effect() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_millis(300));
    let too_long = format!("a{}", "b".repeat(128));
    let bad = [
        "alert(1)",
        "1a",
        too_long.as_str(),
        "a-b",
        "",
        ".a",
        "a b",
        "a;b",
        "cb);alert(1);//",
        "é",
        "a\nb",
    ];
    for cb in bad {
        for method in ["put", "sync", "get"] {
            let r = server.comet(&format!(
                "method={method}&channel=xss&message=evil&time=0&callback={}",
                enc(cb)
            ));
            assert_eq!(r.status, 400, "{method} callback {cb:?}: {}", show(&r.body));
            let ct = r.header("Content-Type").unwrap();
            assert!(ct.starts_with("text/plain"), "{ct}");
            assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
            assert!(!r.text().contains('('), "the name is not echoed as script");
        }
    }
    assert_eq!(server.handle.metrics().parked.get(), 0, "no get was held");
    // None of the bad puts stored anything: the channel holds only this one.
    let t = server.put("xss", "good");
    assert_eq!(
        messages(&server.get_after("xss", 0)),
        vec![(t, "good".into())]
    );
}

#[test]
fn woken_get_is_wrapped() {
    let server = start();
    let s = server.sync("jw");
    let mut c = server.connect();
    c.send(&get(&format!(
        "/comet?method=get&channel=jw&time={s}&callback=on.msg"
    )));
    server.wait_parked(1);
    let t = server.put("jw", "plain text");
    let v = unwrap_jsonp(&c.read_response(), "on.msg");
    assert_eq!(messages(&v), vec![(t, "plain text".into())]);
}

#[test]
fn timeout_is_wrapped() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_millis(300));
    let s = server.sync("jt");
    let r = server.comet(&format!("method=get&channel=jt&time={s}&callback=cb"));
    let v = unwrap_jsonp(&r, "cb");
    assert_eq!(messages(&v), vec![]);
    assert!(reply_time(&v) >= s);
}

#[test]
fn missed_is_wrapped_too() {
    let server = start_with(|c| c.channel_capacity = 3);
    let first = server.put("jm", "0");
    for i in 1..5 {
        server.put("jm", &i.to_string());
    }
    let r = server.comet(&format!("method=get&channel=jm&time={first}&callback=cb"));
    let v = unwrap_jsonp(&r, "cb");
    assert!(missed(&v));
    assert_eq!(messages(&v).len(), 3);
}

#[test]
fn non_ascii_jsonp_counts_bytes() {
    let server = start();
    let s = server.sync("ju");
    let t = server.put("ju", "ça va? 👍");
    let mut c = server.connect();
    let q = get(&format!(
        "/comet?method=get&channel=ju&time={s}&callback=cb"
    ));
    let r = c.roundtrip(&q);
    assert_eq!(
        r.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );
    assert_eq!(
        messages(&unwrap_jsonp(&r, "cb")),
        vec![(t, "ça va? 👍".into())]
    );
    assert_eq!(
        c.roundtrip(&q).body,
        r.body,
        "the connection is still in step"
    );
}
