//! Store tests: transactions, result order, users and publication.

use std::cell::RefCell;

use serde_json::{json, Value};

use super::*;

/// One recorded publication: channel, JSON, author, commit message.
pub(crate) type Published = (String, String, String, Option<String>);

/// Records publications; refuses them when `refuse` is set.
#[derive(Default)]
pub(crate) struct Recorder {
    pub log: RefCell<Vec<Published>>,
    pub refuse: bool,
}

impl Publish for Recorder {
    fn publish(&self, channel: &str, c: Change<'_>) -> Result<(), String> {
        if self.refuse {
            return Err("refused".into());
        }
        self.log.borrow_mut().push((
            channel.to_string(),
            c.json.to_string(),
            c.author.to_string(),
            c.message.map(String::from),
        ));
        Ok(())
    }
}

fn store() -> Store {
    Store::new([("admin", "pw"), ("bob", "bpw")])
}

fn get(s: &Store, q: &str) -> Value {
    serde_json::from_str(&s.get_item(q).unwrap()).unwrap()
}

fn paths(s: &Store, q: &str) -> Vec<String> {
    get(s, q)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["_path"].as_str().unwrap().to_string())
        .collect()
}

fn set(s: &Store, r: &Recorder, actions: Value) -> Result<Value, StoreError> {
    s.set_item("admin", &actions.to_string(), None, r)
        .map(|j| serde_json::from_str(&j).unwrap())
}

fn create(path: &str, kind: &str) -> Value {
    json!({"method": "create", "data": {"_path": path, "_kind": kind}})
}

#[test]
fn create_defaults_and_result_order() {
    let s = store();
    let r = Recorder::default();
    let out = set(&s, &r, json!([create("/Example Page", "Page")])).unwrap();
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["_path"], "/example-page");
    assert_eq!(out[0]["name"], "example-page");
    assert_eq!(out[0]["title"], "Example Page");
    assert_eq!(out[0]["_kind"], "Page");
    assert_eq!(out[0]["description"], "");
    assert_eq!(out[1]["_path"], "/");
    assert_eq!(out[1]["contents"], json!([out[0]["_key"]]));
    assert_eq!(out[0]["folder"], out[1]["_key"]);
    let key = Key::decode(out[0]["_key"].as_str().unwrap()).unwrap();
    assert_eq!(key.kind, "M.Page");
    assert!(matches!(key.id, KeyId::Uuid(_)));
    // Published once, byte-identical to the answer.
    let log = r.log.borrow();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0, ITEMS_CHANNEL);
    assert_eq!(
        serde_json::from_str::<Value>(&log[0].1).unwrap(),
        json!(out)
    );
    assert_eq!(log[0].2, "admin");
}

#[test]
fn explicit_fields_and_nesting() {
    let s = store();
    let r = Recorder::default();
    let out = set(
        &s,
        &r,
        json!([
            {"method": "create", "data": {"_path": "/news", "_kind": "Folder", "title": "All News"}},
            {"method": "create", "data": {"_path": "/news/x", "_kind": "Page", "name": "first", "content": "<p>hi</p>"}},
            create("/news/Second One", "Page"),
            {"method": "save", "data": {"_path": "/news", "default_name": "first"}},
        ]),
    )
    .unwrap();
    let got: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["_path"].as_str().unwrap())
        .collect();
    // First-touch order, each once: news, / (its folder), first, second-one.
    assert_eq!(got, ["/news", "/", "/news/first", "/news/second-one"]);
    assert_eq!(out[0]["title"], "All News");
    assert_eq!(out[0]["default_name"], "first");
    assert_eq!(out[0]["contents"].as_array().unwrap().len(), 2);
    assert_eq!(out[2]["content"], "<p>hi</p>");
    assert_eq!(paths(&s, "//Page"), ["/news/first", "/news/second-one"]);
    assert_eq!(
        paths(&s, "//*"),
        ["/", "/news", "/news/first", "/news/second-one"]
    );
    assert_eq!(paths(&s, "/news/*[last()]"), ["/news/second-one"]);
}

#[test]
fn failures_change_nothing_and_publish_nothing() {
    let s = store();
    let r = Recorder::default();
    set(&s, &r, json!([create("/a", "Folder")])).unwrap();
    let before = s.get_item("//*").unwrap();
    let n = r.log.borrow().len();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([create("/b", "Page"), create("/b", "Page")]),
            "/ already holds 'b'",
        ),
        (
            json!([create("/b", "Page"), create("/nope/c", "Page")]),
            "no item at /nope",
        ),
        (
            json!([create("/b", "Page"), create("/b/c", "Page")]),
            "/b is not a folder",
        ),
        (
            json!([create("/b", "Page"), {"method": "remove", "data": {"_path": "/"}}]),
            "cannot remove /",
        ),
        (
            json!([{"method": "save", "data": {"_path": "/a", "title": "T"}}, {"method": "save", "data": {"_path": "/a", "bogus": 1}}]),
            "unknown field 'bogus' for Folder",
        ),
        (
            json!([{"method": "save", "data": {"_path": "/a", "title": 5}}]),
            "field 'title' of Folder must be of type Str",
        ),
        (
            json!([{"method": "remove", "data": {"_path": "/a"}}, create("/b", "Item")]),
            "cannot create an item of kind 'Item'",
        ),
        (
            json!([create("/b", "User")]),
            "cannot create an item of kind 'User'",
        ),
        (
            json!([create("/", "Page")]),
            "create needs a name in its _path: '/'",
        ),
        (
            json!([create("b", "Page")]),
            "a path must start with '/': 'b'",
        ),
        (
            json!([{"method": "create", "data": {"_kind": "Page"}}]),
            "create needs a _path",
        ),
        (
            json!([{"method": "save", "data": {}}]),
            "the action needs a _path",
        ),
        (
            json!([{"method": "save", "data": {"_key": "BkZvbwIGYmFy"}}]),
            "no item with key BkZvbwIGYmFy",
        ),
        (
            json!([{"method": "save", "data": {"_path": "/a", "contents": ["x"]}}]),
            "field 'contents' is managed by the store",
        ),
        (
            json!([{"method": "save", "data": {"_path": "/a", "folder": null}}]),
            "field 'folder' is managed by the store",
        ),
        (
            json!([{"method": "save", "data": {"_path": "/", "name": "root"}}]),
            "the root's name cannot change",
        ),
        (
            json!([create("/b", "Page"), {"method": "save", "data": {"_path": "/b", "name": "a"}}]),
            "/ already holds 'a'",
        ),
        (
            json!([{"method": "create", "data": {"_path": "/x", "_kind": "Page", "name": "a/b"}}]),
            "bad item name 'a/b'",
        ),
    ];
    for (actions, want) in cases {
        let e = set(&s, &r, actions.clone()).unwrap_err();
        assert_eq!(e, StoreError::Failed(want.into()), "{actions}");
        assert_eq!(s.get_item("//*").unwrap(), before, "{actions}");
    }
    for (payload, want) in [
        ("", "the command is not JSON"),
        ("{}", "expected a JSON array of actions"),
        ("[1]", "an action must be an object"),
        (r#"[{"method": "frob", "data": {}}]"#, "an action's method"),
        (r#"[{"method": "save"}]"#, "an action needs a data object"),
        (
            r#"[{"method": "save", "data": []}]"#,
            "an action needs a data object",
        ),
    ] {
        match s.set_item("admin", payload, None, &r) {
            Err(StoreError::BadRequest(m)) => assert!(m.starts_with(want), "{payload}: {m}"),
            other => panic!("{payload}: {other:?}"),
        }
    }
    assert_eq!(r.log.borrow().len(), n);
    // An empty transaction commits nothing and publishes nothing.
    assert_eq!(s.set_item("admin", "[]", None, &r).unwrap(), "[]");
    assert_eq!(r.log.borrow().len(), n);
}

#[test]
fn refused_publication_undoes_the_change() {
    let s = store();
    let refuse = Recorder {
        refuse: true,
        ..Recorder::default()
    };
    let e = set(&s, &refuse, json!([create("/a", "Page")])).unwrap_err();
    assert_eq!(
        e,
        StoreError::Failed("the change could not be published: refused".into())
    );
    assert_eq!(paths(&s, "//*"), ["/"]);
    let e = s
        .set_user(
            "admin",
            r#"[{"method": "create", "data": {"name": "c", "password": "x"}}]"#,
            None,
            &refuse,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Failed(_)));
    assert!(!s.has_user("c"));
}

#[test]
fn save_rename_and_remove() {
    let s = store();
    let r = Recorder::default();
    set(
        &s,
        &r,
        json!([
            create("/a", "Folder"),
            create("/a/b", "Folder"),
            create("/a/b/c", "Page"),
            create("/z", "Page")
        ]),
    )
    .unwrap();
    let out = set(
        &s,
        &r,
        json!([{"method": "save", "data": {"_path": "/a", "name": "renamed", "title": "R"}}]),
    )
    .unwrap();
    assert_eq!(out[0]["_path"], "/renamed");
    assert_eq!(paths(&s, "//c"), ["/renamed/b/c"]);
    // Save by key (an object sent back whole, managed fields unchanged).
    let mut whole = get(&s, "/z")[0].clone();
    whole["title"] = json!("Zed");
    whole.as_object_mut().unwrap().remove("_path");
    let out = set(&s, &r, json!([{"method": "save", "data": whole}])).unwrap();
    assert_eq!(out[0]["title"], "Zed");
    // Remove a subtree: the result is the parent folder.
    let out = set(
        &s,
        &r,
        json!([{"method": "remove", "data": {"_path": "/renamed/b"}}]),
    )
    .unwrap();
    assert_eq!(out.as_array().unwrap().len(), 1);
    assert_eq!(out[0]["_path"], "/renamed");
    assert_eq!(out[0]["contents"], json!([]));
    assert_eq!(paths(&s, "//*"), ["/", "/renamed", "/z"]);
    // Created then removed in one transaction: only its folder is left in the result.
    let out = set(
        &s,
        &r,
        json!([create("/tmp", "Page"), {"method": "remove", "data": {"_path": "/tmp"}}]),
    )
    .unwrap();
    assert_eq!(out.as_array().unwrap().len(), 1);
    assert_eq!(out[0]["_path"], "/");
    // Undo restores a removed subtree exactly.
    let before = s.get_item("//*").unwrap();
    set(
        &s,
        &r,
        json!([{"method": "remove", "data": {"_path": "/renamed"}}, create("/nope/x", "Page")]),
    )
    .unwrap_err();
    assert_eq!(s.get_item("//*").unwrap(), before);
}

#[test]
fn queries_through_the_store() {
    let s = store();
    let r = Recorder::default();
    set(
        &s,
        &r,
        json!([
            create("/example", "Page"),
            create("/news", "Folder"),
            create("/news/a", "Page")
        ]),
    )
    .unwrap();
    assert_eq!(paths(&s, "*"), ["/example", "/news"]);
    assert_eq!(paths(&s, "example"), ["/example"]);
    assert_eq!(paths(&s, "//*[@_path='/news/a']"), ["/news/a"]);
    assert_eq!(paths(&s, "//*[@title='Example']"), ["/example"]);
    assert_eq!(paths(&s, "/news/a/.."), ["/news"]);
    assert_eq!(
        s.get_item("//["),
        Err(StoreError::Failed("Bad expr: //[".into()))
    );
}

fn uset(s: &Store, actor: &str, actions: Value) -> Result<Value, StoreError> {
    s.set_user(
        actor,
        &actions.to_string(),
        Some("why"),
        &Recorder::default(),
    )
    .map(|j| serde_json::from_str(&j).unwrap())
}

#[test]
fn users() {
    let s = store();
    let all: Value = serde_json::from_str(&s.get_user("").unwrap()).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["name"], "admin");
    assert_eq!(all[0]["password"], "");
    assert_eq!(all[0]["_kind"], "User");
    assert_eq!(
        Key::decode(all[1]["_key"].as_str().unwrap()).unwrap(),
        Key::named("M.User", "bob")
    );
    assert!(s.verify_password("admin", b"pw"));
    assert!(!s.verify_password("admin", b"pW"));
    assert!(!s.verify_password("admin", b"pw "));
    assert!(!s.verify_password("nobody", b"pw"));
    assert_eq!(s.password("bob").as_deref(), Some(&b"bpw"[..]));

    // An admin creates a user; the answer and the publication carry no password.
    let r = Recorder::default();
    let out = s
        .set_user(
            "admin",
            r#"[{"method": "create", "data": {"name": "carol", "password": "c-pw", "email": "c@x"}}]"#,
            Some("new hire"),
            &r,
        )
        .unwrap();
    assert!(!out.contains("c-pw"));
    let log = r.log.borrow();
    assert_eq!(log[0].0, USERS_CHANNEL);
    assert!(!log[0].1.contains("c-pw"));
    assert_eq!(log[0].3.as_deref(), Some("new hire"));
    assert!(s.verify_password("carol", b"c-pw"));
    let carol: Value = serde_json::from_str(&s.get_user("carol").unwrap()).unwrap();
    assert_eq!(carol["email"], "c@x");
    assert_eq!(carol["admin"], false);
    assert_eq!(carol["branch"], Value::Null);

    // carol is no admin: she may change herself, but not others, not her admin flag or roles.
    let out = uset(&s, "carol", json!([{"method": "save", "data": {"name": "carol", "full_name": "Carol", "password": "new"}}])).unwrap();
    assert_eq!(out[0]["full_name"], "Carol");
    assert!(s.verify_password("carol", b"new"));
    // Sent back whole (password ""): the password stays.
    uset(
        &s,
        "carol",
        json!([{"method": "save", "data": out[0].clone()}]),
    )
    .unwrap();
    assert!(s.verify_password("carol", b"new"));
    for forbidden in [
        json!([{"method": "save", "data": {"name": "bob", "email": "x"}}]),
        json!([{"method": "save", "data": {"name": "carol", "admin": true}}]),
        json!([{"method": "save", "data": {"name": "carol", "roles": ["editor"]}}]),
        json!([{"method": "create", "data": {"name": "dave", "password": "x"}}]),
        json!([{"method": "remove", "data": {"name": "bob"}}]),
    ] {
        assert_eq!(
            uset(&s, "carol", forbidden.clone()),
            Err(StoreError::Forbidden),
            "{forbidden}"
        );
    }
    // Failures, and nothing changes.
    let before = s.get_user("").unwrap();
    for (actions, want) in [
        (
            json!([{"method": "remove", "data": {"name": "bob"}}]),
            "user 'bob' comes from the credentials file and cannot be removed",
        ),
        (
            json!([{"method": "save", "data": {"name": "bob", "password": "x"}}]),
            "the password of 'bob' is set in the credentials file",
        ),
        (
            json!([{"method": "create", "data": {"name": "bob", "password": "x"}}]),
            "user 'bob' exists",
        ),
        (
            json!([{"method": "create", "data": {"name": "d"}}]),
            "create needs a password",
        ),
        (
            json!([{"method": "create", "data": {"name": "a b", "password": "x"}}]),
            "bad user name 'a b'",
        ),
        (
            json!([{"method": "save", "data": {"name": "nobody"}}]),
            "no user 'nobody'",
        ),
        (
            json!([{"method": "save", "data": {"_key": "BkZvbwIGYmFy", "name": "carol2"}}]),
            "no user with key BkZvbwIGYmFy",
        ),
        (
            json!([{"method": "save", "data": {"name": "carol", "shoe": 1}}]),
            "unknown field 'shoe' for User",
        ),
        (
            json!([{"method": "remove", "data": {"name": "carol"}}, {"method": "save", "data": {"name": "carol"}}]),
            "no user 'carol'",
        ),
    ] {
        assert_eq!(
            uset(&s, "admin", actions.clone()),
            Err(StoreError::Failed(want.into())),
            "{actions}"
        );
        assert_eq!(s.get_user("").unwrap(), before);
    }
    assert_eq!(
        s.get_user("nobody"),
        Err(StoreError::Failed("no user 'nobody'".into()))
    );
    // An admin promotes carol; carol removes herself: the result is the user as it was.
    uset(&s, "admin", json!([{"method": "save", "data": {"_key": Key::named("M.User", "carol").encode(), "admin": true, "roles": ["editor"]}}])).unwrap();
    let out = uset(
        &s,
        "carol",
        json!([{"method": "remove", "data": {"name": "carol"}}]),
    )
    .unwrap();
    assert_eq!(out[0]["name"], "carol");
    assert_eq!(out[0]["roles"], json!(["editor"]));
    assert!(!s.has_user("carol"));
    assert!(!s.verify_password("carol", b"new"));
    assert_eq!(s.user_count(), 2);
}

#[test]
fn schema_answers() {
    let a = get_schema("Page").unwrap();
    assert_eq!(a, get_schema("M.Page").unwrap());
    assert!(a.json.starts_with(r#"{"base": "M.Item", "fields": ["#));
    // hashlib.md5(json.dumps(schema, sort_keys=True).encode()).hexdigest()
    assert_eq!(a.md5, "0dbc899e16a0a7056642c1c291b3cb93");
    assert_eq!(
        get_schema("Nope"),
        Err(StoreError::Failed("no schema 'Nope'".into()))
    );
}

#[test]
fn publishes_on_the_hub() {
    use crate::config::Config;
    use crate::hub::Limits;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    let hub = Hub::new(
        Limits::from_config(&Config::default()),
        Vec::new(),
        Arc::new(Metrics::default()),
    );
    let s = store();
    let out = s
        .set_item(
            "bob",
            &json!([create("/a", "Page")]).to_string(),
            Some("first page"),
            &hub,
        )
        .unwrap();
    s.set_user(
        "admin",
        r#"[{"method": "save", "data": {"name": "bob", "email": "b@x"}}]"#,
        None,
        &hub,
    )
    .unwrap();
    let read = hub.read(ITEMS_CHANNEL, 0, 10);
    assert_eq!(read.messages.len(), 1);
    let m = &read.messages[0];
    assert_eq!(&*m.body, out.as_bytes());
    assert_eq!(m.origin, crate::hub::Origin::Store);
    assert_eq!(&*m.from, "bob");
    assert_eq!(&*m.properties[0].0, "message");
    assert_eq!(&*m.properties[0].1, "first page");
    let users = hub.read(USERS_CHANNEL, 0, 10);
    assert_eq!(users.messages.len(), 1);
    let body = std::str::from_utf8(&users.messages[0].body).unwrap();
    assert!(body.contains(r#""email": "b@x""#) && body.contains(r#""password": """#));
    assert!(!body.contains("bpw"));
}

#[test]
fn a_store_exported_and_restored_is_the_same_store() {
    struct Keep(std::cell::RefCell<Vec<u8>>);
    impl Publish for Keep {
        fn publish(&self, _: &str, _: Change<'_>) -> Result<(), String> {
            Ok(())
        }
        fn persist(&self, state: &[u8]) {
            *self.0.borrow_mut() = state.to_vec();
        }
        fn keeps(&self) -> bool {
            true
        }
    }
    let out = Keep(Default::default());
    let store = Store::new([("boss", b"pw".to_vec())]);
    store
        .set_item(
            "boss",
            r#"[{"method": "create", "data": {"_path": "/a", "_kind": "Folder"}}, {"method": "create", "data": {"_path": "/a/b", "_kind": "Page", "content": "x"}}]"#,
            None,
            &out,
        )
        .unwrap();
    store
        .set_user(
            "boss",
            r#"[{"method": "create", "data": {"name": "ann", "password": "secret", "roles": ["r"]}}]"#,
            None,
            &out,
        )
        .unwrap();
    let state = out.0.borrow().clone();
    assert!(!state.is_empty(), "a committed change was persisted");
    let again = Store::new([("boss", b"pw".to_vec())]);
    again.restore(&state).unwrap();
    assert_eq!(
        again.get_item("//*").unwrap(),
        store.get_item("//*").unwrap()
    );
    assert_eq!(again.get_user("").unwrap(), store.get_user("").unwrap());
    assert!(again.verify_password("ann", b"secret"));
    // Damaged state is refused, not half applied.
    assert!(again.restore(b"{\"items\": {\"root\": 1}}").is_err());
    assert_eq!(
        again.get_item("//*").unwrap(),
        store.get_item("//*").unwrap()
    );
}
