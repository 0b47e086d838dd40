//! The Message item store (PROTOCOLS.md 4.3): a tree of typed items, the users, and the
//! record schemas, beside the hub and like it sans-io. XMPP (urn:M, `proto::message`) is one
//! client of it, not its owner.
//!
//! - Reads: `get_item` (a path query, `path`), `get_user`, `get_schema`.
//! - Writes: `set_item` and `set_user` run a JSON array of actions as one transaction: every
//!   action applies, or none does (the earlier ones are undone). A committed transaction
//!   publishes its result JSON as one hub message on `message/items` (resp.
//!   `message/users`) through `Publish`; a refused publication undoes the transaction too,
//!   so every committed change is heard.
//! - Every JSON answer is written as Python's `json.dumps(v, sort_keys=True)` (`pyjson`).
//! - A user's password is kept in memory (SCRAM needs it), compared in constant time, and
//!   never written out: every user object carries `"password": ""`.
//!
//! The store is shared by all workers behind one mutex; its critical sections do no I/O
//! except the hub publication (lock order: store, then the hub's shard).

pub mod key;
pub mod path;
pub mod pyjson;
pub mod schema;

mod items;
mod users;

pub use items::{Body, FolderKind, Item};
pub use key::{Key, KeyError, KeyId};
pub use users::User;

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::hub::{Draft, Hub, Origin};

/// The hub channel every committed `set_item` is published on.
pub const ITEMS_CHANNEL: &str = "message/items";
/// The hub channel every committed `set_user` is published on.
pub const USERS_CHANNEL: &str = "message/users";

/// Most items the tree holds; a `create` beyond fails.
pub const MAX_ITEMS: usize = 100_000;
/// Most users the store holds; a `create` beyond fails.
pub const MAX_USERS: usize = 10_000;
/// Most actions in one `set_item` / `set_user`.
pub const MAX_ACTIONS: usize = 1_000;

/// Why a store operation did nothing. Each maps to one urn:M error (PROTOCOLS.md 4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The command is not a JSON array of actions: `modify` / `bad-request`.
    BadRequest(String),
    /// The command failed (bad path expression, missing parent, duplicate name, unknown key
    /// or field, removing `/`): `cancel` / `undefined-condition`.
    Failed(String),
    /// Not allowed: `auth` / `forbidden`.
    Forbidden,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::BadRequest(s) | StoreError::Failed(s) => f.write_str(s),
            StoreError::Forbidden => f.write_str("forbidden"),
        }
    }
}

fn failed(s: impl Into<String>) -> StoreError {
    StoreError::Failed(s.into())
}

/// A committed change, as it is published.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// The transaction's result JSON (no password in it).
    pub json: &'a str,
    /// The user who made the change.
    pub author: &'a str,
    /// The commit message of the IQ (`message` attribute), if any.
    pub message: Option<&'a str>,
}

/// Where committed changes go: the hub, or a recorder in tests.
pub trait Publish {
    /// Publishes one change on a channel. An error undoes the transaction.
    fn publish(&self, channel: &str, change: Change<'_>) -> Result<(), String>;
    /// Keeps the store's whole state after a committed change (`Store::export`), when the
    /// server keeps anything (`--data-dir`). Asked for only if `keeps` says so.
    fn persist(&self, state: &[u8]) {
        let _ = state;
    }
    /// Whether `persist` keeps anything (so the export is made only then).
    fn keeps(&self) -> bool {
        false
    }
}

/// A change becomes one hub message: body = the result JSON, `from` = the author, and the
/// commit message as the property `message`.
impl Publish for Hub {
    fn publish(&self, channel: &str, change: Change<'_>) -> Result<(), String> {
        let draft = Draft {
            from: change.author.to_string(),
            body: change.json.as_bytes().to_vec(),
            properties: change
                .message
                .map(|m| vec![("message".to_string(), m.to_string())])
                .unwrap_or_default(),
            ..Draft::default()
        };
        Hub::publish(self, channel, vec![draft], Origin::Store, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn persist(&self, state: &[u8]) {
        self.log_store(state);
    }

    fn keeps(&self) -> bool {
        self.storage().keeps()
    }
}

/// A schema answer: the JSON and the lowercase hex MD5 of exactly its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaAnswer {
    pub json: String,
    pub md5: String,
}

/// `get_schema TYPE` (`Page`, `M.Page`, `M.key`…); unknown → `Failed`.
pub fn get_schema(name: &str) -> Result<SchemaAnswer, StoreError> {
    use md5::{Digest, Md5};
    let name = name.trim();
    let v = schema::schema_json(name).ok_or_else(|| failed(format!("no schema '{name}'")))?;
    let json = pyjson::dumps(&v);
    let digest = Md5::digest(json.as_bytes());
    let md5 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(SchemaAnswer { json, md5 })
}

/// One action of a `set_item` / `set_user` payload.
struct Action<'a> {
    method: Method,
    data: &'a serde_json::Map<String, Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Create,
    Save,
    Remove,
}

/// Checks the shape of a `set` payload: a JSON array of `{"method": create|save|remove,
/// "data": {...}}`. Anything else is a `BadRequest`, before anything changes.
fn parse_actions(payload: &Value) -> Result<Vec<Action<'_>>, StoreError> {
    let bad = |s: &str| StoreError::BadRequest(s.to_string());
    let list = payload
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of actions"))?;
    if list.len() > MAX_ACTIONS {
        return Err(bad("too many actions"));
    }
    list.iter()
        .map(|a| {
            let obj = a
                .as_object()
                .ok_or_else(|| bad("an action must be an object"))?;
            let method = match obj.get("method").and_then(Value::as_str) {
                Some("create") => Method::Create,
                Some("save") => Method::Save,
                Some("remove") => Method::Remove,
                _ => return Err(bad("an action's method must be create, save or remove")),
            };
            let data = obj
                .get("data")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("an action needs a data object"))?;
            Ok(Action { method, data })
        })
        .collect()
}

/// Parses a `set` command's text as JSON.
fn parse_payload(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::BadRequest(format!("the command is not JSON: {e}")))
}

/// The whole store as the durable log keeps it: `{"items": TREE, "users": [USER…]}`.
fn export(st: &State) -> Vec<u8> {
    let v = serde_json::json!({"items": st.items.export(), "users": st.users.export()});
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The item store. See the module doc.
pub struct Store {
    state: Mutex<State>,
}

struct State {
    items: items::Tree,
    users: users::Users,
}

impl Store {
    /// A store holding one `Site` at `/` (name `""`, title `"Root"`) and the users of
    /// `--credentials` (name, password), in file order. Those users are admins, are listed by
    /// `get_user`, and cannot be removed, renamed or given another password here (their
    /// file is where that happens). A repeated name keeps its first entry.
    pub fn new<I, N, P>(credentials: I) -> Store
    where
        I: IntoIterator<Item = (N, P)>,
        N: Into<String>,
        P: Into<Vec<u8>>,
    {
        Store {
            state: Mutex::new(State {
                items: items::Tree::new(),
                users: users::Users::new(credentials),
            }),
        }
    }

    /// `get_item QUERY`: the JSON array of the items the path query matches, in document
    /// order, each once. A bad query → `Failed("Bad expr: QUERY")`.
    pub fn get_item(&self, query: &str) -> Result<String, StoreError> {
        let q = path::Query::parse(query).map_err(|e| failed(e.to_string()))?;
        let st = lock(&self.state);
        Ok(pyjson::dumps(&st.items.query(&q)))
    }

    /// `set_item PAYLOAD` by `author`: runs the actions as one transaction and publishes the
    /// result on `message/items`. Returns the result JSON: the affected items, each once, in
    /// the order they were first touched, as they are after the transaction. On any error
    /// nothing changed and nothing was published. An empty array commits nothing and
    /// publishes nothing.
    pub fn set_item(
        &self,
        author: &str,
        payload: &str,
        message: Option<&str>,
        out: &dyn Publish,
    ) -> Result<String, StoreError> {
        let payload = parse_payload(payload)?;
        let actions = parse_actions(&payload)?;
        let mut st = lock(&self.state);
        let mut txn = items::Txn::new(&mut st.items);
        for a in &actions {
            let r = match a.method {
                Method::Create => txn.create(a.data),
                Method::Save => txn.save(a.data),
                Method::Remove => txn.remove(a.data),
            };
            if let Err(e) = r {
                txn.rollback();
                return Err(e);
            }
        }
        let json = pyjson::dumps(&txn.result());
        if !actions.is_empty() {
            let change = Change {
                json: &json,
                author,
                message,
            };
            if let Err(e) = out.publish(ITEMS_CHANNEL, change) {
                txn.rollback();
                return Err(failed(format!("the change could not be published: {e}")));
            }
        }
        txn.commit();
        if !actions.is_empty() && out.keeps() {
            out.persist(&export(&st));
        }
        Ok(json)
    }

    /// `get_user COMMAND`: empty (or blank) → the array of all users; a name → that user's
    /// object; an unknown name → `Failed`. Passwords are written as `""`.
    pub fn get_user(&self, command: &str) -> Result<String, StoreError> {
        let st = lock(&self.state);
        let name = command.trim();
        let v = if name.is_empty() {
            st.users.all_json()
        } else {
            st.users
                .get(name)
                .map(User::to_json)
                .ok_or_else(|| failed(format!("no user '{name}'")))?
        };
        Ok(pyjson::dumps(&v))
    }

    /// `set_user PAYLOAD` by `actor`: `create` (`name`, `password`, optional fields), `save`
    /// (by `_key` or `name`), `remove`, as one transaction, published on `message/users`
    /// (passwords as `""`). Only an admin may create users or change users other than
    /// itself, and only an admin may change `admin` or `roles` (else `Forbidden`). Returns
    /// the affected users, each once, in first-touch order (a removed user as it was).
    pub fn set_user(
        &self,
        actor: &str,
        payload: &str,
        message: Option<&str>,
        out: &dyn Publish,
    ) -> Result<String, StoreError> {
        let payload = parse_payload(payload)?;
        let actions = parse_actions(&payload)?;
        let mut st = lock(&self.state);
        let before = st.users.clone();
        let result = st.users.apply(actor, &actions);
        let json = match result {
            Ok(v) => pyjson::dumps(&v),
            Err(e) => {
                st.users = before;
                return Err(e);
            }
        };
        if !actions.is_empty() {
            let change = Change {
                json: &json,
                author: actor,
                message,
            };
            if let Err(e) = out.publish(USERS_CHANNEL, change) {
                st.users = before;
                return Err(failed(format!("the change could not be published: {e}")));
            }
            if out.keeps() {
                out.persist(&export(&st));
            }
        }
        Ok(json)
    }

    /// Replaces the item tree and adds the users of a state `export` wrote (the durable
    /// log's last one). Users of `--credentials` stay as the file says.
    pub fn restore(&self, state: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        let items = items::Tree::import(&v["items"])?;
        let mut st = lock(&self.state);
        let mut users = st.users.clone();
        users.import(&v["users"])?;
        st.items = items;
        st.users = users;
        Ok(())
    }

    /// Whether `name` is a user and `password` its password, compared in constant time
    /// (the time does not depend on where the bytes differ, nor on whether the user exists).
    pub fn verify_password(&self, name: &str, password: &[u8]) -> bool {
        lock(&self.state).users.verify(name, password)
    }

    /// A user's password, for a SASL mechanism that must derive keys from it (SCRAM).
    /// `None` for an unknown user.
    pub fn password(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.state)
            .users
            .get(name)
            .map(|u| u.password().to_vec())
    }

    /// Whether a user of this name exists.
    pub fn has_user(&self, name: &str) -> bool {
        lock(&self.state).users.get(name).is_some()
    }

    /// How many users there are (the start-up check for the demo account needs it).
    pub fn user_count(&self) -> usize {
        lock(&self.state).users.len()
    }
}

/// Keys a result list by first touch, each once.
#[derive(Default)]
struct Touched {
    order: Vec<Key>,
    seen: HashMap<Key, ()>,
}

impl Touched {
    fn touch(&mut self, key: &Key) {
        if self.seen.insert(key.clone(), ()).is_none() {
            self.order.push(key.clone());
        }
    }
}

/// A string field of a data object, or `Failed` naming it.
fn str_field<'a>(
    data: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, StoreError> {
    match data.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(failed(format!("{name} must be a string"))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
