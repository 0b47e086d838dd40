//! urn:M over XMPP (PROTOCOLS.md 4.2 and 4.3), over raw TCP: the reference's demo-client
//! sequence, a failing multi-action set changing nothing, get-schema with its md5, every
//! error row, and a committed change heard on the hub by a Talk stream.

#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use xmpp_support::*;

#[test]
fn the_demo_client_sequence() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    let root = result_json(&iq(&mut c, "get", "g1", "item", None, "/"));
    assert!(
        root.starts_with("[{\"_key\": \"")
            && root.contains("\"_kind\": \"Site\"")
            && root.contains("\"title\": \"Root\""),
        "{root}"
    );
    assert_eq!(
        result_json(&iq(&mut c, "get", "g2", "item", None, "*")),
        "[]"
    );
    let created = result_json(&iq(
        &mut c,
        "set",
        "s1",
        "item",
        None,
        r#"[{"method": "create", "data": {"_path": "/example", "_kind": "Page"}}]"#,
    ));
    assert!(
        created.contains("\"_path\": \"/example\"") && created.contains("\"title\": \"Example\""),
        "{created}"
    );
    let saved = result_json(&iq(
        &mut c,
        "set",
        "s2",
        "item",
        None,
        r#"[{"method": "save", "data": {"_path": "/example", "title": "An Example"}}]"#,
    ));
    assert!(saved.contains("\"title\": \"An Example\""), "{saved}");
    let got = result_json(&iq(&mut c, "get", "g3", "item", None, "/example"));
    assert!(
        got.contains("\"title\": \"An Example\"") && got.contains("\"_kind\": \"Page\""),
        "{got}"
    );
    let removed = result_json(&iq(
        &mut c,
        "set",
        "s3",
        "item",
        None,
        r#"[{"method": "remove", "data": {"_path": "/example"}}]"#,
    ));
    assert!(
        removed.contains("\"_path\": \"/\""),
        "the parent folder: {removed}"
    );
    assert_eq!(
        result_json(&iq(&mut c, "get", "g4", "item", None, "/example")),
        "[]"
    );
}

#[test]
fn a_failing_multi_action_set_changes_nothing() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    let r = iq(
        &mut c,
        "set",
        "s1",
        "item",
        None,
        r#"[{"method": "create", "data": {"_path": "/a", "_kind": "Folder"}}, {"method": "create", "data": {"_path": "/a", "_kind": "Page"}}]"#,
    );
    assert!(
        r.starts_with("<iq type='error' id='s1' from='localhost'><item xmlns='urn:M'>"),
        "{r}"
    );
    assert!(r.contains("<error type='cancel'><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text"), "{r}");
    assert_eq!(
        result_json(&iq(&mut c, "get", "g1", "item", None, "/a")),
        "[]"
    );
}

#[test]
fn get_schema_carries_the_md5_of_its_json() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    let r = iq(&mut c, "get", "sc", "schema", None, "Page");
    assert!(
        r.contains("<schema xmlns='urn:M' match='0dbc899e16a0a7056642c1c291b3cb93'>"),
        "{r}"
    );
    let json = result_json(&r.replace(" match='0dbc899e16a0a7056642c1c291b3cb93'", ""));
    assert!(json.contains("\"name\": \"M.Page\""), "{json}");
}

#[test]
fn every_error_row() {
    let server = xmpp(|_| {});
    let mut c = session(&server, "user", "secret", "r");
    // Text that is not base64: modify/bad-request, the child echoed unchanged.
    c.send(b"<iq type='get' id='e1'><item xmlns='urn:M'>***</item></iq>");
    let r = text(c.read_until(b"</iq>", TIMEOUT));
    assert!(r.starts_with("<iq type='error' id='e1' from='localhost'><item xmlns='urn:M'>***</item><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"), "{r}");
    // A set payload that is not an array of actions.
    let r = iq(
        &mut c,
        "set",
        "e2",
        "item",
        None,
        "{\"method\": \"create\"}",
    );
    assert!(r.contains("<error type='modify'><bad-request "), "{r}");
    // Unknown collection, unknown verb.
    let r = iq(&mut c, "get", "e3", "foo", None, "/");
    assert!(
        r.contains("<error type='cancel'><feature-not-implemented ")
            && r.contains(">get_foo</text>"),
        "{r}"
    );
    let r = iq(&mut c, "get", "e4", "branch", None, "/");
    assert!(
        r.contains("<feature-not-implemented ") && r.contains(">get_branch</text>"),
        "{r}"
    );
    // The command failed.
    let r = iq(&mut c, "get", "e5", "item", None, "//[");
    assert!(
        r.contains("<error type='cancel'><undefined-condition ") && r.contains("Bad expr: //["),
        "{r}"
    );
    let r = iq(
        &mut c,
        "set",
        "e6",
        "item",
        None,
        r#"[{"method": "remove", "data": {"_path": "/"}}]"#,
    );
    assert!(r.contains("<undefined-condition "), "removing / fails: {r}");
    // Not allowed: the demo account is no admin.
    let r = iq(
        &mut c,
        "set",
        "e7",
        "user",
        None,
        r#"[{"method": "create", "data": {"name": "eve", "password": "x"}}]"#,
    );
    assert!(r.contains("<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"), "{r}");
}

#[test]
fn users_from_credentials_are_admins_and_new_users_can_log_in() {
    let dir = std::env::temp_dir().join(format!("tidings-urnm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(&file, "admin:hunter2 ops/*\n").unwrap();
    let server = xmpp(|c| c.credentials = Some(file.clone()));
    let mut c = session(&server, "admin", "hunter2", "r");
    let r = iq(
        &mut c,
        "set",
        "u1",
        "user",
        None,
        r#"[{"method": "create", "data": {"name": "carol", "password": "pw"}}]"#,
    );
    let json = result_json(&r);
    assert!(
        json.contains("\"name\": \"carol\"") && json.contains("\"password\": \"\""),
        "{json}"
    );
    let mut carol = session(&server, "carol", "pw", "r");
    let users = result_json(&iq(&mut carol, "get", "u2", "user", None, ""));
    assert!(
        users.contains("\"admin\"") && users.contains("\"carol\""),
        "{users}"
    );
}

#[test]
fn a_committed_change_is_heard_on_the_hub() {
    let server = xmpp(|_| {});
    let mut stream = server.pull("/pull?name=watcher&channel=message/items", true);
    let mut c = session(&server, "user", "secret", "r");
    result_json(&iq(
        &mut c,
        "set",
        "s1",
        "item",
        None,
        r#"[{"method": "create", "data": {"_path": "/news", "_kind": "Folder"}}]"#,
    ));
    let heard = stream.next_text();
    assert!(heard.contains("\"_path\": \"/news\""), "{heard}");
}
