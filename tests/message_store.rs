//! The reference demo client's sequence through the urn:M layer (PROTOCOLS.md 4.2 and 4.3),
//! without a socket: base64 in, exact result bytes and error triples out, and every
//! committed change published once.

use std::cell::RefCell;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use tidings::proto::message::{handle, ErrorType, Outcome, Request};
use tidings::store::{Change, Publish, Store};

#[derive(Default)]
struct Recorder(RefCell<Vec<(String, String)>>);

impl Publish for Recorder {
    fn publish(&self, channel: &str, c: Change<'_>) -> Result<(), String> {
        self.0
            .borrow_mut()
            .push((channel.to_string(), c.json.to_string()));
        Ok(())
    }
}

struct Client {
    store: Store,
    hub: Recorder,
    user: &'static str,
}

impl Client {
    fn iq(&self, name: &str, iq_type: &str, command: &str) -> Outcome {
        let text = STANDARD.encode(command);
        handle(
            &self.store,
            &self.hub,
            &Request {
                name,
                method: None,
                iq_type,
                text: &text,
                message: Some("demo"),
                user: self.user,
            },
        )
    }

    /// The result JSON, checked to be the base64 the answer carries.
    fn ok(&self, name: &str, iq_type: &str, command: &str) -> String {
        let o = self.iq(name, iq_type, command);
        let r = o.answer.unwrap_or_else(|e| panic!("{command}: {e:?}"));
        assert_eq!(r.name, name);
        assert_eq!(STANDARD.decode(&r.base64).unwrap(), r.json.as_bytes());
        r.json
    }

    fn err(
        &self,
        name: &str,
        iq_type: &str,
        command: &str,
    ) -> (ErrorType, &'static str, Option<String>) {
        let e = self.iq(name, iq_type, command).answer.unwrap_err();
        (e.kind, e.condition, e.detail)
    }

    fn published(&self) -> usize {
        self.hub.0.borrow().len()
    }
}

fn client() -> Client {
    Client {
        store: Store::new([("user", "secret")]),
        hub: Recorder::default(),
        user: "user",
    }
}

fn field(json: &str, i: usize, name: &str) -> String {
    let v: Value = serde_json::from_str(json).unwrap();
    v[i][name].as_str().unwrap().to_string()
}

#[test]
fn demo_client_sequence() {
    let c = client();
    // get-item '*': the fresh store has only the root, so no child.
    assert_eq!(c.ok("item", "get", "*"), "[]");
    let root = c.ok("item", "get", "/");
    let k0 = field(&root, 0, "_key");
    assert_eq!(
        root,
        format!(
            r#"[{{"_key": "{k0}", "_kind": "Site", "_path": "/", "contents": [], "default_name": "", "folder": null, "name": "", "title": "Root"}}]"#
        )
    );

    // Create /example of kind Page: the new item, then its folder.
    let create = json!([{"method": "create", "data": {"_path": "/example", "_kind": "Page"}}]);
    let created = c.ok("item", "set", &create.to_string());
    let k1 = field(&created, 0, "_key");
    assert_eq!(
        created,
        format!(
            r#"[{{"_key": "{k1}", "_kind": "Page", "_path": "/example", "content": "", "description": "", "folder": "{k0}", "name": "example", "title": "Example"}}, {{"_key": "{k0}", "_kind": "Site", "_path": "/", "contents": ["{k1}"], "default_name": "", "folder": null, "name": "", "title": "Root"}}]"#
        )
    );
    assert_eq!(c.published(), 1);
    assert_eq!(
        c.hub.0.borrow()[0],
        ("message/items".to_string(), created.clone())
    );

    // Save its title (non-ASCII, written as \u escapes).
    let save =
        json!([{"method": "save", "data": {"_path": "/example", "title": "Caf\u{e9} \u{1F600}"}}]);
    let page = format!(
        r#"[{{"_key": "{k1}", "_kind": "Page", "_path": "/example", "content": "", "description": "", "folder": "{k0}", "name": "example", "title": "Caf\u00e9 \ud83d\ude00"}}]"#
    );
    assert_eq!(c.ok("item", "set", &save.to_string()), page);
    assert_eq!(c.published(), 2);

    // Get it.
    assert_eq!(c.ok("item", "get", "/example"), page);
    assert_eq!(c.ok("item", "get", "*"), page);
    assert_eq!(c.ok("item", "get", "//Page[@name='example']"), page);

    // Remove it: the result is its folder.
    let remove = json!([{"method": "remove", "data": {"_path": "/example"}}]);
    assert_eq!(c.ok("item", "set", &remove.to_string()), root);
    assert_eq!(c.published(), 3);

    // Get again: nothing.
    assert_eq!(c.ok("item", "get", "/example"), "[]");
    assert_eq!(c.ok("item", "get", "//*"), root);

    // A multi-action set that fails half way changes nothing and publishes nothing.
    let failing = json!([
        {"method": "create", "data": {"_path": "/a", "_kind": "Folder"}},
        {"method": "create", "data": {"_path": "/a/b", "_kind": "Page"}},
        {"method": "create", "data": {"_path": "/missing/c", "_kind": "Page"}},
    ]);
    assert_eq!(
        c.err("item", "set", &failing.to_string()),
        (
            ErrorType::Cancel,
            "undefined-condition",
            Some("no item at /missing".into())
        )
    );
    assert_eq!(c.ok("item", "get", "//*"), root);
    assert_eq!(c.published(), 3);

    // get-schema Page, with the MD5 of exactly the JSON bytes.
    let o = c.iq("schema", "get", "Page");
    let r = o.answer.unwrap();
    assert_eq!(
        r.json,
        r#"{"base": "M.Item", "fields": [{"name": "name", "type": "string"}, {"name": "title", "type": "string"}, {"default": null, "name": "folder", "type": ["M.key", "null"]}, {"default": "", "name": "description", "type": "string"}, {"default": "", "name": "content", "type": "string"}], "name": "M.Page", "type": "record"}"#
    );
    assert_eq!(
        r.match_md5.as_deref(),
        Some("0dbc899e16a0a7056642c1c291b3cb93")
    );
    assert_eq!(c.ok("schema", "get", "M.Page"), r.json);

    // Users: listed, password written as "".
    assert_eq!(
        c.ok("user", "get", ""),
        r#"[{"_key": "DE0uVXNlcgIIdXNlcg", "_kind": "User", "admin": true, "branch": null, "email": "", "full_name": "", "name": "user", "password": "", "roles": []}]"#
    );
}

#[test]
fn every_error_row() {
    let c = client();
    c.ok(
        "item",
        "set",
        &json!([{"method": "create", "data": {"_path": "/example", "_kind": "Page"}}]).to_string(),
    );
    let before = c.ok("item", "get", "//*");
    let n = c.published();

    // Text not base64 (padding required).
    for text in ["Kg", "*", "Kg="] {
        let e = handle(
            &c.store,
            &c.hub,
            &Request {
                name: "item",
                method: None,
                iq_type: "get",
                text,
                message: None,
                user: "user",
            },
        )
        .answer
        .unwrap_err();
        assert_eq!(
            (e.kind, e.condition),
            (ErrorType::Modify, "bad-request"),
            "{text}"
        );
        assert!(e.detail.unwrap().starts_with("the text is not base64"));
    }
    // A set payload that is not a JSON array of actions.
    for (payload, detail) in [
        ("", "the command is not JSON"),
        (
            "{\"method\": \"create\"}",
            "expected a JSON array of actions",
        ),
        ("[\"create\"]", "an action must be an object"),
        (
            "[{\"method\": \"drop\", \"data\": {}}]",
            "an action's method must be create, save or remove",
        ),
        ("[{\"method\": \"save\"}]", "an action needs a data object"),
    ] {
        let (t, cond, d) = c.err("item", "set", payload);
        assert_eq!((t, cond), (ErrorType::Modify, "bad-request"), "{payload}");
        assert!(d.unwrap().starts_with(detail), "{payload}");
    }
    // Unknown collection or verb.
    for (name, t, handler) in [
        ("foo", "get", "get_foo"),
        ("branch", "get", "get_branch"),
        ("branch", "set", "set_branch"),
    ] {
        assert_eq!(
            c.err(name, t, ""),
            (
                ErrorType::Cancel,
                "feature-not-implemented",
                Some(handler.to_string())
            )
        );
    }
    // The command failed.
    let k_foo = "BkZvbwIGYmFy";
    for (name, t, command, detail) in [
        ("item", "get", "//[".to_string(), "Bad expr: //["),
        ("item", "get", "".to_string(), "Bad expr: "),
        (
            "item",
            "set",
            json!([{"method": "create", "data": {"_path": "/nope/x", "_kind": "Page"}}])
                .to_string(),
            "no item at /nope",
        ),
        (
            "item",
            "set",
            json!([{"method": "create", "data": {"_path": "/Example", "_kind": "Page"}}])
                .to_string(),
            "/ already holds 'example'",
        ),
        (
            "item",
            "set",
            json!([{"method": "save", "data": {"_key": k_foo, "title": "x"}}]).to_string(),
            "no item with key BkZvbwIGYmFy",
        ),
        (
            "item",
            "set",
            json!([{"method": "save", "data": {"_key": "%%", "title": "x"}}]).to_string(),
            "bad key '%%': key is not URL-safe base64",
        ),
        (
            "item",
            "set",
            json!([{"method": "remove", "data": {"_path": "/"}}]).to_string(),
            "cannot remove /",
        ),
        ("user", "get", "nobody".to_string(), "no user 'nobody'"),
        ("schema", "get", "Nope".to_string(), "no schema 'Nope'"),
    ] {
        assert_eq!(
            c.err(name, t, &command),
            (
                ErrorType::Cancel,
                "undefined-condition",
                Some(detail.to_string())
            ),
            "{command}"
        );
    }
    assert_eq!(c.ok("item", "get", "//*"), before);
    assert_eq!(c.published(), n);

    // Not allowed: a non-admin changing another user.
    let admin = c.ok(
        "user",
        "set",
        &json!([{"method": "create", "data": {"name": "eve", "password": "pw"}}]).to_string(),
    );
    assert!(admin.contains(r#""name": "eve""#) && !admin.contains("\"pw\""));
    let eve = Client {
        store: c.store,
        hub: Recorder::default(),
        user: "eve",
    };
    assert_eq!(
        eve.err(
            "user",
            "set",
            &json!([{"method": "save", "data": {"name": "user", "full_name": "x"}}]).to_string()
        ),
        (ErrorType::Auth, "forbidden", None)
    );
    assert_eq!(eve.published(), 0);
}
