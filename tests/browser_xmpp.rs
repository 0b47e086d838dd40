//! The XMPP demo page (`/demo/xmpp.html`, `web/xmpp.html`) in a real headless Chromium:
//! strophe.js (vendored in `web/vendor/`) logs in over BOSH (PROTOCOLS.md 4.5) with the demo
//! account, runs urn:M `get-item` and `set-item` queries (4.2, 4.3) whose decoded answers the
//! page shows, browses the item tree by clicking folders, subscribes to a hub channel with
//! PubSub (4.4) and shows the events of messages published over plain HTTP (a Talk push and a
//! comet put), as text; unsubscribing stops them; logging out ends the session.
//!
//! The browser set-up (chromedriver, headless Chromium, the watchdog, skipping when they are
//! missing unless `TIDINGS_BROWSER_TEST` is set) is `tests/browser_support`; the whole test is
//! bounded by `LIMIT`, every wait in the page by `WAIT_MS`.

mod browser_support;
#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use browser_support::*;
use serde_json::{json, Value};
use xmpp_support::*;

/// The longest the whole test may take; a watchdog kills the browser and fails it after.
const LIMIT: Duration = Duration::from_secs(60);
/// Readers of the XMPP page (`loginState`, `itemList`, `events`, …).
const READERS: &str = include_str!("browser/xmpp.js");

/// Runs `xmppDemo.request(name, type, command)` in the page (an urn:M IQ over BOSH through
/// strophe.js); returns the decoded JSON text of the answer.
fn urn_m(s: &Session, d: &Driver, name: &str, kind: &str, command: &str) -> String {
    let body = "const [name, type, command] = arguments;
        xmppDemo.request(name, type, command).then(
          (text) => done({ ok: true, value: text }),
          (e) => done({ ok: false, value: e.message }));";
    let v = s.run(d, "urn:M request", body, json!([name, kind, command]));
    v.as_str()
        .unwrap_or_else(|| panic!("not text: {v}"))
        .to_string()
}

/// An item as the page lists it: (path, kind, folder, title, key).
type Row = (String, String, bool, String, String);

fn row(path: &str, kind: &str, folder: bool, title: &str, key: &str) -> Row {
    (path.into(), kind.into(), folder, title.into(), key.into())
}

/// The items the page lists after a get-item of `query`.
fn listed(s: &Session, d: &Driver, query: &str) -> Vec<Row> {
    let v = s.wait_until(
        d,
        query,
        &format!("itemList().query === {}", json!(query)),
        "itemList()",
    );
    let field = |i: &Value, k: &str| i[k].as_str().unwrap_or_default().to_string();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                field(i, "path"),
                field(i, "kind"),
                i["folder"] == json!(true),
                field(i, "title"),
                field(i, "key"),
            )
        })
        .collect()
}

/// The events the page shows once there are `n`: (node, from, text, seq).
fn events(s: &Session, d: &Driver, n: usize) -> Vec<(String, String, String, u64)> {
    let v = s.wait_until(
        d,
        &format!("{n} events"),
        &format!("events().length >= {n}"),
        "events()",
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                f("node"),
                f("from"),
                f("text"),
                f("seq").parse().unwrap_or(0),
            )
        })
        .collect()
}

/// Clicks `css`, then waits until the JS expression `cond` holds; returns `then`'s value.
fn click_then(s: &Session, d: &Driver, css: &str, cond: &str, then: &str) -> Value {
    s.click(d, css);
    s.wait_until(d, &format!("after clicking {css}"), cond, then)
}

/// A comet put of `message` (URL-safe as it is) on `channel`, over plain HTTP.
fn put(server: &TestServer, channel: &str, message: &str) {
    let r = server.get(&format!(
        "/comet?method=put&channel={channel}&message={message}"
    ));
    assert_eq!(r.status, 200, "{}", r.show());
}

fn click_folder(s: &Session, d: &Driver, path: &str) {
    s.click(
        d,
        &format!("#items li.folder[data-path=\"{path}\"] button.open"),
    );
}

/// The kind (Avro full name) in an item's `_key`: URL-safe base64 of `M.key {kind: string,
/// id: union [uuid, string]}`; asserts the id is a 16-byte UUID (union branch 0).
fn key_kind(key: &str) -> String {
    let b = URL_SAFE_NO_PAD
        .decode(key)
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let len = usize::from(b[0] / 2); // zig-zag varint of a short length
    let kind = String::from_utf8(b[1..1 + len].to_vec()).unwrap();
    assert_eq!(b[1 + len], 0, "{key}: a UUID id");
    assert_eq!(b.len(), 1 + len + 1 + 16, "{key}");
    kind
}

#[test]
fn strophe_logs_in_over_bosh_queries_items_and_hears_pubsub_events() {
    let t0 = Instant::now();
    let Some((watchdog, mut d)) = launch(LIMIT) else {
        return;
    };
    // The XMPP listener on a loopback port keeps the demo account (PROTOCOLS.md 4.1); short
    // long-polls make the held BOSH request come back empty a few times during the test.
    let server = xmpp(|c| c.long_poll_timeout = Duration::from_secs(2));
    let base = format!("http://{}", server.addr);
    let web = d.session("xmpp", READERS);
    web.navigate(&d, &format!("{base}/demo/xmpp.html"));
    let title = web.exec(&d, "return document.title;", json!([]));
    assert_eq!(title, json!("tidings XMPP"));
    let defaults = web.exec(
        &d,
        "return ['user', 'password', 'domain', 'node'].map((id) => document.getElementById(id).value);",
        json!([]),
    );
    assert_eq!(defaults, json!(["user", "secret", "localhost", "news"]));
    assert_eq!(
        web.exec(&d, "return typeof Strophe.Connection;", json!([])),
        json!("function"),
        "strophe.js loaded from /demo/strophe.js"
    );

    // Log in over BOSH; the page then runs get-item '/' and lists the root Site.
    let login = click_then(
        &web,
        &d,
        "#connect",
        "loginState().state === 'online' || loginState().state === 'failed'",
        "pageState()",
    );
    assert_eq!(login["login"]["state"], json!("online"), "{login}");
    let login = &login["login"];
    let jid = login["jid"].as_str().unwrap();
    assert!(jid.starts_with("user@localhost/"), "bound JID: {login}");
    eprintln!("browser test: logged in as {jid} after {:?}", t0.elapsed());
    let root = listed(&web, &d, "/");
    let root_key = root.first().map(|r| r.4.clone()).unwrap_or_default();
    assert_eq!(root, [row("/", "Site", true, "Root", &root_key)]);
    assert_eq!(key_kind(&root_key), "M.Site");
    // The decoded answer is the server's JSON, written as Python's json.dumps writes it.
    let answer = web.exec(&d, "return itemList().answer;", json!([]));
    let answer = answer.as_str().unwrap();
    assert!(answer.starts_with("[{\"_key\": \""), "{answer}");
    let parsed: Value = serde_json::from_str(answer).unwrap();
    assert_eq!(parsed[0]["_key"], json!(root_key));
    assert_eq!(parsed[0]["_path"], json!("/"));
    assert_eq!(parsed[0]["contents"], json!([]));

    // set-item over the same BOSH session: a folder and a page in it.
    let created = urn_m(
        &web,
        &d,
        "item",
        "set",
        r#"[{"method": "create", "data": {"_path": "/news", "_kind": "Folder"}}, {"method": "create", "data": {"_path": "/news/hello", "_kind": "Page", "title": "Hello <world> ✓"}}]"#,
    );
    let created: Value = serde_json::from_str(&created).unwrap();
    let touched: Vec<&str> = created
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["_path"].as_str().unwrap())
        .collect();
    assert_eq!(touched, ["/news", "/", "/news/hello"], "{created}");
    let news_key = created[0]["_key"].as_str().unwrap();
    let hello_key = created[2]["_key"].as_str().unwrap();
    assert_eq!(created[1]["_key"], json!(root_key));
    assert_eq!(created[1]["contents"], json!([news_key]));

    // Browse: the root's children, then the folder's.
    click_folder(&web, &d, "/");
    let children = listed(&web, &d, "/*");
    assert_eq!(children, [row("/news", "Folder", true, "News", news_key)]);
    click_folder(&web, &d, "/news");
    let children = listed(&web, &d, "/news/*");
    assert_eq!(
        children,
        [row(
            "/news/hello",
            "Page",
            false,
            "Hello <world> ✓",
            hello_key
        )]
    );
    assert_eq!(key_kind(hello_key), "M.Page");
    web.click(&d, "#up");
    let up = listed(&web, &d, "/*");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].0, "/news");
    // A bad query shows the server's stanza error.
    web.clear(&d, "#path");
    web.type_into(&d, "#path", "//[");
    let notes = click_then(&web, &d, "#get", "notes().length > 0", "notes()");
    assert_eq!(
        notes,
        json!(["get-item //[: undefined-condition: Bad expr: //["])
    );

    // Subscribe to the channel "news" with PubSub; a Talk push and a comet put over plain
    // HTTP reach the page as events, their bodies shown as text.
    let subs = click_then(
        &web,
        &d,
        "#subscribe",
        "subscriptions().some((s) => s.node === 'news' && s.state === 'subscribed')",
        "subscriptions()",
    );
    assert!(
        subs[0]["subid"].as_str().is_some_and(|s| !s.is_empty()),
        "{subs}"
    );
    let pushed = server.request(&post_form(
        "/push",
        "name=x&channel=news&message=hello%20%3Cb%3Ethere%3C%2Fb%3E%20%26%20more",
    ));
    assert_eq!(pushed.status, 200, "{}", pushed.show());
    let seen = events(&web, &d, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (node, from, text, seq) = &seen[0];
    assert_eq!(
        (node.as_str(), from.as_str(), text.as_str()),
        ("news", "x", "hello <b>there</b> & more")
    );
    assert!(*seq > 0, "{seen:?}");
    let when = web.exec(&d, "return events()[0].when;", json!([]));
    let when = when.as_str().unwrap_or_default();
    assert!(
        when.len() == 20 && when.ends_with('Z') && when.as_bytes()[10] == b'T',
        "an RFC 3339 UTC time: {when:?}"
    );
    let bold = web.exec(
        &d,
        "return document.querySelectorAll('#events b').length;",
        json!([]),
    );
    assert_eq!(bold, json!(0), "event bodies are shown as text");
    put(&server, "news", "second");
    let seen = events(&web, &d, 2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[1].0.as_str(), seen[1].2.as_str()), ("news", "second"));
    assert!(seen[1].3 > seen[0].3, "seq grows: {seen:?}");

    // Unsubscribe; a message on "news" is no longer shown, one on "other" (subscribed
    // after it was sent) is.
    click_then(
        &web,
        &d,
        "#unsubscribe",
        "subscriptions().length === 0",
        "true",
    );
    put(&server, "news", "unheard");
    web.clear(&d, "#node");
    web.type_into(&d, "#node", "other");
    click_then(
        &web,
        &d,
        "#subscribe",
        "subscriptions().some((s) => s.node === 'other')",
        "true",
    );
    put(&server, "other", "third");
    let seen = events(&web, &d, 3);
    let texts: Vec<(&str, &str)> = seen.iter().map(|e| (e.0.as_str(), e.2.as_str())).collect();
    assert_eq!(
        texts,
        [
            ("news", "hello <b>there</b> & more"),
            ("news", "second"),
            ("other", "third")
        ]
    );

    // Log out: strophe ends the BOSH session.
    click_then(
        &web,
        &d,
        "#logout",
        "loginState().state === 'offline'",
        "true",
    );
    let notes = web.exec(&d, "return notes();", json!([]));
    assert_eq!(notes.as_array().map(Vec::len), Some(1), "{notes}");

    d.shutdown();
    drop(watchdog);
    let took = t0.elapsed();
    eprintln!("browser test: passed in {took:?}");
    assert!(took < LIMIT);
}
