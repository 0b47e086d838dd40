//! The browser client and the chat demo served by the server (`GET /tidings.js`,
//! `GET /demo/`): the bytes of `web/`, with the right types, and a demo page that loads
//! nothing from elsewhere and keeps the element ids the browser test relies on.

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
