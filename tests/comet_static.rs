//! The browser client and the demo pages served by the server (`GET /tidings.js`,
//! `GET /demo/`, `/demo/xmpp.html` with its vendored strophe.js and the shared style sheet):
//! the bytes of `web/`, with the right types, and pages that load nothing from elsewhere and
//! keep the element ids the browser tests rely on.

mod comet_support;

use comet_support::*;

const TIDINGS_JS: &[u8] = include_bytes!("../web/tidings.js");
const CHAT_HTML: &[u8] = include_bytes!("../web/chat.html");

#[test]
fn tidings_js_is_served() {
    let server = start();
    let r = server.get("/tidings.js");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("application/javascript"));
    assert_eq!(r.body, TIDINGS_JS);
    let js = r.text();
    for api in ["subscribe", "publish", "root.Tidings = Tidings", "onMissed"] {
        assert!(js.contains(api), "tidings.js has {api}");
    }
    // The header comment carries the usage example.
    assert!(js.starts_with("/*"));
    assert!(js[..js.find("*/").unwrap()].contains("Tidings.subscribe({"));
}

#[test]
fn demo_page_is_served_and_self_contained() {
    let server = start();
    for path in ["/demo/", "/demo"] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
        assert_eq!(r.body, CHAT_HTML);
    }
    let html = std::str::from_utf8(CHAT_HTML).unwrap();
    assert!(html.contains(r#"<script src="/tidings.js"></script>"#));
    for id in ["name", "channel", "text", "send", "log", "status"] {
        assert!(html.contains(&format!(r#"id="{id}""#)), "#{id}");
    }
    for external in ["http://", "https://", "//cdn", "@import", "url("] {
        assert!(!html.contains(external), "no external resource: {external}");
    }
    assert!(!html.contains("innerHTML"), "messages are shown as text");
}

const XMPP_HTML: &[u8] = include_bytes!("../web/xmpp.html");
const DEMO_CSS: &[u8] = include_bytes!("../web/demo.css");
const STROPHE_JS: &[u8] = include_bytes!("../web/vendor/strophe.umd.min.js");

#[test]
fn xmpp_demo_page_strophe_and_style_are_served() {
    let server = start();
    for (path, kind, bytes) in [
        ("/demo/xmpp.html", "text/html", XMPP_HTML),
        ("/demo/strophe.js", "application/javascript", STROPHE_JS),
        ("/demo/demo.css", "text/css", DEMO_CSS),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("Content-Type").unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(r.body, bytes, "{path}");
    }
    let html = std::str::from_utf8(XMPP_HTML).unwrap();
    for tag in [
        r#"<script src="/demo/strophe.js"></script>"#,
        r#"<link rel="stylesheet" href="/demo/demo.css">"#,
        "const BOSH = '/http-bind';",
    ] {
        assert!(html.contains(tag), "{tag}");
    }
    for page in [html, std::str::from_utf8(CHAT_HTML).unwrap()] {
        assert!(page.contains(r#"href="/demo/demo.css""#));
    }
    // The XMPP namespaces are http:// names, not resources; nothing is loaded from elsewhere.
    for external in ["src=\"http", "href=\"http", "//cdn", "@import", "url("] {
        assert!(!html.contains(external), "no external resource: {external}");
    }
    assert!(
        !html.contains("innerHTML"),
        "items and events are shown as text"
    );
    // strophe.js's browser build needs no Node module, and its licence is kept beside it.
    let js = std::str::from_utf8(STROPHE_JS).unwrap();
    assert!(js.contains(".Strophe=") && !js.contains("require("));
    let licence = include_str!("../web/vendor/strophe.LICENSE.txt");
    assert!(licence.contains("Permission is hereby granted, free of charge"));
}
