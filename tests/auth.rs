//! Credentials (PROTOCOLS.md 0.3, 1.5): a channel matched by a pattern of the credentials file
//! is open only to a user allowed on it, with HTTP Basic, on every protocol (QST v2 and v1,
//! Talk, comet). Missing or wrong credentials get `401` with
//! `WWW-Authenticate: Basic realm="tidings"` and have no side effect of any kind, which is
//! checked afterwards with good credentials. Other channels are open.

mod qst_support;

use qst_support::*;

const CREDENTIALS: &str = "# gateways\nacme:s3cret acme/*\nbob:pw other/*   # bob's channels\n";

fn acme() -> String {
    basic("acme", "s3cret")
}

/// Every way of not being allowed on `acme/*`: nothing, a wrong password, an unknown user,
/// a real user of other channels, another scheme, broken base64.
fn refused_credentials() -> Vec<Option<String>> {
    vec![
        None,
        Some(basic("acme", "wrong")),
        Some(basic("acme", "s3cret ")),
        Some(basic("mallory", "s3cret")),
        Some(basic("bob", "pw")),
        Some("Bearer s3cret".to_string()),
        Some("Basic !!!not-base64".to_string()),
        Some("Basic".to_string()),
    ]
}

/// `method target` with optional credentials and headers, on a fresh connection.
fn send(
    server: &TestServer,
    method: &str,
    target: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = auth {
        all.push(("Authorization", a));
    }
    server.connect().request(method, target, &all, body)
}

/// Asserts a refusal: `401`, the exact challenge, a short text body.
#[track_caller]
fn assert_401(r: &Response, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.show());
    assert!(
        r.has_line("WWW-Authenticate: Basic realm=\"tidings\""),
        "{what}: the exact challenge: {}",
        r.show()
    );
    assert!(
        r.header("Content-Type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{what}: {}",
        r.show()
    );
}

/// The ids pending in a guarded channel, pulled with good credentials (no cursor).
fn pending(server: &TestServer, channel: &str) -> Vec<String> {
    let a = acme();
    send(
        server,
        "GET",
        &format!("/qst/{channel}?max=1000"),
        Some(&a),
        &[],
        b"",
    )
    .ids()
}

#[test]
fn a_refused_qst_push_stores_nothing() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    let xml = xml_batch(&["mo-1", "mo-2"]);
    for auth in refused_credentials() {
        let what = format!("{auth:?}");
        let r = send(
            &server,
            "POST",
            "/qst/acme/incoming",
            auth.as_deref(),
            &[("Content-Type", "text/xml")],
            xml.as_bytes(),
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "POST",
            "/acme/qst/incoming",
            auth.as_deref(),
            &[("Content-Type", "text/xml")],
            xml.as_bytes(),
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "POST",
            "/acme/qst/incoming.xml",
            auth.as_deref(),
            &[("Content-Type", "application/json")],
            br#"[{"id":"j-1"}]"#,
        );
        assert_401(&r, &what);
    }
    assert!(server.metrics().auth_failures.get() >= 24);
    assert_eq!(server.metrics().messages_published.get(), 0);
    let a = acme();
    let r = send(&server, "HEAD", "/qst/acme/incoming", Some(&a), &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: "), "nothing was pushed: {}", r.show());
    assert!(pending(&server, "acme/incoming").is_empty());
    // The allowed user pushes.
    let r = send(
        &server,
        "POST",
        "/qst/acme/incoming",
        Some(&a),
        &[("Content-Type", "text/xml")],
        xml.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: mo-2"), "{}", r.show());
    assert_eq!(pending(&server, "acme/incoming"), ["mo-1", "mo-2"]);
}

#[test]
fn a_refused_qst_pull_acknowledges_nothing_and_uses_no_try() {
    let server = start_with_credentials(CREDENTIALS, |c| c.qst_max_tries = 2);
    let a = acme();
    let r = send(
        &server,
        "POST",
        "/qst/acme/outgoing",
        Some(&a),
        &[("Content-Type", "text/xml")],
        xml_batch(&["mt-1", "mt-2"]).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.show());
    // First delivery (of two allowed).
    assert_eq!(pending(&server, "acme/outgoing"), ["mt-1", "mt-2"]);
    for auth in refused_credentials() {
        let what = format!("{auth:?}");
        let auth = auth.as_deref();
        let r = send(
            &server,
            "GET",
            "/qst/acme/outgoing?etag=mt-2",
            auth,
            &[],
            b"",
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "GET",
            "/acme/qst/outgoing?max=10",
            auth,
            &[("If-None-Match", "mt-2")],
            b"",
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "POST",
            "/acme/qst/outgoing",
            auth,
            &[("Content-Type", "application/json")],
            br#"{"confirmed":["mt-1"],"failed":["mt-2"]}"#,
        );
        assert_401(&r, &what);
        // A refused long-poll is answered at once, not parked.
        let r = send(
            &server,
            "GET",
            "/qst/acme/outgoing?long-polling=true&etag=mt-1",
            auth,
            &[],
            b"",
        );
        assert_401(&r, &what);
        let r = send(&server, "HEAD", "/qst/acme/outgoing", auth, &[], b"");
        assert_eq!(r.status, 401, "{what}: {}", r.show());
        assert_ne!(r.header("ETag"), Some("mt-2"), "HEAD leaked the last id");
    }
    assert_eq!(server.metrics().qst_acked.get(), 0);
    assert_eq!(server.metrics().qst_failed.get(), 0);
    // Second delivery: the refused pulls counted no try, so both are still there.
    assert_eq!(pending(&server, "acme/outgoing"), ["mt-1", "mt-2"]);
    assert_eq!(server.metrics().qst_expired.get(), 0);
}

#[test]
fn v1_setaddress_is_guarded() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    for auth in refused_credentials() {
        let r = send(
            &server,
            "GET",
            "/acme/qst/setaddress?address=sms://5550001",
            auth.as_deref(),
            &[],
            b"",
        );
        assert_401(&r, &format!("{auth:?}"));
    }
    let a = acme();
    let r = send(
        &server,
        "GET",
        "/acme/qst/setaddress?address=sms://5550001",
        Some(&a),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.show());
}

#[test]
fn talk_push_and_pull_are_guarded() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    for auth in refused_credentials() {
        let what = format!("{auth:?}");
        let r = talk_push(
            &server,
            "name=sender&channel=acme/x&message=refused",
            auth.as_deref(),
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "GET",
            "/push?name=sender&channel=acme/x&message=refused",
            auth.as_deref(),
            &[],
            b"",
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "GET",
            "/pull?name=reader&channel=acme/x",
            auth.as_deref(),
            &[("Head", "less")],
            b"",
        );
        assert_401(&r, &what);
        let r = send(
            &server,
            "GET",
            "/pull?name=reader&channel=acme/x",
            auth.as_deref(),
            &[],
            b"",
        );
        assert_401(&r, &what);
    }
    assert_eq!(server.metrics().streaming.get(), 0, "no stream was opened");
    assert_eq!(server.metrics().messages_published.get(), 0);
    assert!(pending(&server, "acme/x").is_empty());
    // With credentials: the stream opens and the push goes through.
    let a = acme();
    let mut stream = talk_stream(&server, "reader", "acme/x", Some(&a));
    let r = talk_push(
        &server,
        "name=sender&channel=acme/x&message=allowed",
        Some(&a),
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(stream.next_text(), "allowed");
    let msgs = send(&server, "GET", "/qst/acme/x", Some(&a), &[], b"").messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body.as_deref(), Some("allowed"));
    assert_eq!(msgs[0].from, "sender");
}

#[test]
fn comet_is_guarded() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    for auth in refused_credentials() {
        let what = format!("{auth:?}");
        for target in [
            "/comet?method=put&channel=acme/x&message=m",
            "/comet?method=get&channel=acme/x&time=0",
            "/comet?method=sync&channel=acme/x",
        ] {
            let r = send(&server, "GET", target, auth.as_deref(), &[], b"");
            assert_401(&r, &format!("{target} {what}"));
        }
        let r = send(
            &server,
            "POST",
            "/comet",
            auth.as_deref(),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"method=put&channel=acme%2Fx&message=m",
        );
        assert_401(&r, &format!("form put {what}"));
    }
    assert_eq!(server.metrics().messages_published.get(), 0);
    assert!(pending(&server, "acme/x").is_empty());
    let a = acme();
    let r = send(
        &server,
        "GET",
        "/comet?method=put&channel=acme/x&message=hello",
        Some(&a),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.show());
    let r = send(
        &server,
        "GET",
        "/comet?method=get&channel=acme/x&time=0",
        Some(&a),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.text().contains("\"data\":\"hello\""), "{}", r.text());
    let msgs = send(&server, "GET", "/qst/acme/x", Some(&a), &[], b"").messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body.as_deref(), Some("hello"));
}

#[test]
fn channels_no_pattern_matches_are_open() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    let wrong = basic("acme", "wrong");
    // `acme/*` guards names starting with `acme/` only.
    for channel in ["public", "acme", "acmeish/x", "x/acme/y"] {
        for auth in [None, Some(wrong.as_str())] {
            let what = format!("{channel} {auth:?}");
            let r = send(
                &server,
                "POST",
                &format!("/qst/{channel}"),
                auth,
                &[("Content-Type", "text/xml")],
                xml_batch(&["open-1"]).as_bytes(),
            );
            assert_eq!(r.status, 200, "{what}: {}", r.show());
            let r = send(&server, "GET", &format!("/qst/{channel}"), auth, &[], b"");
            assert_eq!(r.ids(), ["open-1"], "{what}");
            let r = send(&server, "HEAD", &format!("/qst/{channel}"), auth, &[], b"");
            assert!(r.has_line("ETag: open-1"), "{what}: {}", r.show());
        }
        let r = talk_push(
            &server,
            &format!("name=s&channel={channel}&message=t"),
            None,
        );
        assert_eq!(r.status, 200, "{channel}: {}", r.show());
        let r = send(
            &server,
            "GET",
            &format!("/comet?method=put&channel={channel}&message=c"),
            None,
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{channel}: {}", r.show());
    }
    // v1 aliases of an unguarded account.
    let r = send(&server, "GET", "/open/qst/outgoing", None, &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(server.metrics().auth_failures.get(), 0);
}

#[test]
fn a_user_is_allowed_only_on_its_own_patterns() {
    let server = start_with_credentials(CREDENTIALS, |_| {});
    let a = acme();
    let b = basic("bob", "pw");
    let push = |channel: &str, auth: &str, id: &str| {
        send(
            &server,
            "POST",
            &format!("/qst/{channel}"),
            Some(auth),
            &[("Content-Type", "text/xml")],
            xml_batch(&[id]).as_bytes(),
        )
    };
    assert_eq!(push("acme/x", &a, "a-1").status, 200);
    assert_401(&push("other/x", &a, "a-2"), "acme on other/x");
    assert_eq!(push("other/x", &b, "b-1").status, 200);
    assert_401(&push("acme/x", &b, "b-2"), "bob on acme/x");
    assert_401(
        &send(&server, "GET", "/qst/other/x?etag=b-1", Some(&a), &[], b""),
        "acme pulling other/x",
    );
    assert_401(
        &send(&server, "GET", "/qst/acme/x?etag=a-1", Some(&b), &[], b""),
        "bob pulling acme/x",
    );
    let r = send(&server, "GET", "/qst/acme/x", Some(&a), &[], b"");
    assert_eq!(r.ids(), ["a-1"]);
    let r = send(&server, "GET", "/qst/other/x", Some(&b), &[], b"");
    assert_eq!(r.ids(), ["b-1"]);
    // bob's v1 account alias maps to other/…: guarded by that channel.
    let r = send(&server, "GET", "/other/qst/incoming", Some(&b), &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_401(
        &send(&server, "GET", "/other/qst/incoming", Some(&a), &[], b""),
        "acme on bob's v1 alias",
    );
}
