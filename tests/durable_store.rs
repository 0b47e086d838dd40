//! `--data-dir` keeps the Message item store and its users (issue 11, PROTOCOLS.md 4.3): a
//! page made and a user added over XMPP are there after a restart, with the same item key,
//! and the user logs in with its password.

#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use xmpp_support::*;

#[test]
fn the_item_store_and_its_users_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("tidings-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // An admin from --credentials: only an admin adds users.
    let credentials = dir.join("credentials");
    std::fs::write(&credentials, "boss:bosspw *\n").unwrap();
    let with_dir = |c: &mut tidings::Config| {
        c.data_dir = Some(dir.join("data"));
        c.credentials = Some(credentials.clone());
    };

    let server = xmpp(with_dir);
    let mut c = session(&server, "boss", "bosspw", "r");
    let made = result_json(&iq(
        &mut c,
        "set",
        "s1",
        "item",
        None,
        r#"[{"method": "create", "data": {"_path": "/kept", "_kind": "Page", "content": "still here"}}]"#,
    ));
    let key = made
        .split("\"_key\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let added = iq(
        &mut c,
        "set",
        "u1",
        "user",
        None,
        r#"[{"method": "create", "data": {"name": "ann", "password": "pw", "email": "ann@example.org"}}]"#,
    );
    assert!(added.starts_with("<iq type='result'"), "{added}");
    let tree_before = result_json(&iq(&mut c, "get", "g1", "item", None, "//*"));
    drop(c);
    server.shutdown_and_join(TIMEOUT);

    let server = xmpp(with_dir);
    let mut c = session(&server, "boss", "bosspw", "r");
    let page = result_json(&iq(&mut c, "get", "g2", "item", None, "/kept"));
    assert!(
        page.contains(&format!("\"_key\": \"{key}\""))
            && page.contains("\"content\": \"still here\""),
        "{page}"
    );
    assert_eq!(
        result_json(&iq(&mut c, "get", "g3", "item", None, "//*")),
        tree_before,
        "the whole tree, keys and order included"
    );
    let ann = result_json(&iq(&mut c, "get", "u2", "user", None, "ann"));
    assert!(ann.contains("\"email\": \"ann@example.org\""), "{ann}");
    // The user added over XMPP logs in with its password.
    let mut a = connect(&server);
    assert_eq!(login(&mut a, "ann", "pw", "home"), "ann@localhost/home");
    drop((a, c));
    server.shutdown_and_join(TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
}
