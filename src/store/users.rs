//! The users (`M.User`): those of `--credentials` and those made with `set_user`, the admin
//! rule, and password checks in constant time.

use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::schema;
use super::{failed, str_field, Action, Key, Method, StoreError, Touched, MAX_USERS};

/// One user. The key is `M.User` with the name as its string id (the reference made user
/// keys from their names), so a name never changes.
#[derive(Clone)]
pub struct User {
    key: Key,
    pub name: String,
    pub email: String,
    password: Vec<u8>,
    pub full_name: String,
    pub admin: bool,
    pub roles: Vec<String>,
    pub branch: Option<String>,
    /// From `--credentials`: cannot be removed nor given another password here.
    pub configured: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("admin", &self.admin)
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

impl User {
    fn new(name: &str, password: Vec<u8>) -> User {
        User {
            key: Key::named("M.User", name),
            name: name.to_string(),
            email: String::new(),
            password,
            full_name: String::new(),
            admin: false,
            roles: Vec::new(),
            branch: None,
            configured: false,
        }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub(super) fn password(&self) -> &[u8] {
        &self.password
    }

    /// The user as JSON; the password is always `""`.
    pub fn to_json(&self) -> Value {
        json!({
            "_key": self.key.encode(),
            "_kind": "User",
            "name": self.name,
            "email": self.email,
            "password": "",
            "full_name": self.full_name,
            "admin": self.admin,
            "roles": self.roles,
            "branch": self.branch,
        })
    }
}

/// A name a user may have: 1–255 bytes, no whitespace, control, `:`, `@` or `/` (it is the
/// local part of a JID and a credentials-file name).
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '@' | '/'))
    {
        return Err(failed(format!("bad user name '{name}'")));
    }
    Ok(())
}

#[derive(Clone, Default)]
pub(super) struct Users {
    list: Vec<User>,
}

impl Users {
    pub(super) fn new<I, N, P>(credentials: I) -> Users
    where
        I: IntoIterator<Item = (N, P)>,
        N: Into<String>,
        P: Into<Vec<u8>>,
    {
        let mut u = Users::default();
        for (name, password) in credentials {
            let name: String = name.into();
            if u.get(&name).is_some() {
                continue;
            }
            let mut user = User::new(&name, password.into());
            user.admin = true;
            user.configured = true;
            u.list.push(user);
        }
        u
    }

    /// The users made with `set_user`, as JSON for the durable log (password included:
    /// the data directory must be kept like the credentials file). Those of
    /// `--credentials` come from that file at each start.
    pub(super) fn export(&self) -> Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let users: Vec<Value> = self
            .list
            .iter()
            .filter(|u| !u.configured)
            .map(|u| {
                json!({
                    "name": u.name,
                    "email": u.email,
                    "password": b64.encode(&u.password),
                    "full_name": u.full_name,
                    "admin": u.admin,
                    "roles": u.roles,
                    "branch": u.branch,
                })
            })
            .collect();
        Value::Array(users)
    }

    /// Adds the users of `export`'s JSON after those of `--credentials` (a name the file
    /// now holds keeps the file's entry).
    pub(super) fn import(&mut self, v: &Value) -> Result<(), String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        for u in v.as_array().ok_or("users is not an array")? {
            let text = |f: &str| u[f].as_str().unwrap_or("").to_string();
            let name = text("name");
            if name.is_empty() {
                return Err("a user has no name".into());
            }
            if self.get(&name).is_some() {
                continue;
            }
            let password = b64
                .decode(text("password"))
                .map_err(|_| "a password is not base64")?;
            let mut user = User::new(&name, password);
            user.email = text("email");
            user.full_name = text("full_name");
            user.admin = u["admin"].as_bool().unwrap_or(false);
            user.roles = u["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            user.branch = u["branch"].as_str().map(str::to_string);
            self.list.push(user);
        }
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn get(&self, name: &str) -> Option<&User> {
        self.list.iter().find(|u| u.name == name)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|u| u.name == name)
    }

    pub(super) fn all_json(&self) -> Value {
        Value::Array(self.list.iter().map(User::to_json).collect())
    }

    /// Constant time in the password bytes, and the same work for an unknown user (compared
    /// with a stand-in that never matches).
    pub(super) fn verify(&self, name: &str, password: &[u8]) -> bool {
        match self.get(name) {
            Some(u) => bool::from(u.password.as_slice().ct_eq(password)),
            None => {
                let stand_in = vec![0u8; password.len()];
                let _ = bool::from(stand_in.as_slice().ct_eq(password));
                false
            }
        }
    }

    /// The user an action names: `_key`, else `name`.
    fn target(&self, data: &Map<String, Value>) -> Result<usize, StoreError> {
        if let Some(k) = str_field(data, "_key")? {
            let key = Key::decode(k).map_err(|e| failed(format!("bad key '{k}': {e}")))?;
            return self
                .list
                .iter()
                .position(|u| u.key == key)
                .ok_or_else(|| failed(format!("no user with key {k}")));
        }
        let name = str_field(data, "name")?.ok_or_else(|| failed("the action needs a name"))?;
        self.index_of(name)
            .ok_or_else(|| failed(format!("no user '{name}'")))
    }

    /// Runs `set_user` actions on `self` (the caller restores a copy on error). Returns the
    /// affected users in first-touch order, removed ones as they were.
    pub(super) fn apply(
        &mut self,
        actor: &str,
        actions: &[Action<'_>],
    ) -> Result<Value, StoreError> {
        let mut touched = Touched::default();
        let mut removed: Vec<User> = Vec::new();
        for a in actions {
            let actor_admin = self.get(actor).is_some_and(|u| u.admin);
            match a.method {
                Method::Create => {
                    if !actor_admin {
                        return Err(StoreError::Forbidden);
                    }
                    let name =
                        str_field(a.data, "name")?.ok_or_else(|| failed("create needs a name"))?;
                    check_name(name)?;
                    if self.get(name).is_some() {
                        return Err(failed(format!("user '{name}' exists")));
                    }
                    let password = str_field(a.data, "password")?.unwrap_or_default();
                    if password.is_empty() {
                        return Err(failed("create needs a password"));
                    }
                    if self.list.len() >= MAX_USERS {
                        return Err(failed("too many users"));
                    }
                    let mut user = User::new(name, password.as_bytes().to_vec());
                    set_fields(&mut user, a.data, true)?;
                    removed.retain(|u| u.name != name);
                    touched.touch(&user.key);
                    self.list.push(user);
                }
                Method::Save => {
                    let i = self.target(a.data)?;
                    let user = &mut self.list[i];
                    if user.name != actor && !actor_admin {
                        return Err(StoreError::Forbidden);
                    }
                    set_fields(user, a.data, actor_admin)?;
                    touched.touch(&user.key);
                }
                Method::Remove => {
                    let i = self.target(a.data)?;
                    let user = &self.list[i];
                    if user.name != actor && !actor_admin {
                        return Err(StoreError::Forbidden);
                    }
                    if user.configured {
                        return Err(failed(format!(
                            "user '{}' comes from the credentials file and cannot be removed",
                            user.name
                        )));
                    }
                    let user = self.list.remove(i);
                    touched.touch(&user.key);
                    removed.push(user);
                }
            }
        }
        let out = touched
            .order
            .iter()
            .filter_map(|k| {
                self.list
                    .iter()
                    .chain(removed.iter().rev())
                    .find(|u| u.key == *k)
                    .map(User::to_json)
            })
            .collect();
        Ok(Value::Array(out))
    }
}

/// Sets the fields of `data` without `_` on a user. `name` may not change; an empty
/// `password` keeps the current one (users are written with `""`, so an object sent back
/// whole does not wipe it); `admin` and `roles` change only for an admin.
fn set_fields(user: &mut User, data: &Map<String, Value>, admin: bool) -> Result<(), StoreError> {
    let rec = schema::record("M.User").ok_or_else(|| failed("internal: no M.User schema"))?;
    for (field, v) in data {
        if field.starts_with('_') {
            continue;
        }
        let fd = rec
            .field(field)
            .ok_or_else(|| failed(format!("unknown field '{field}' for User")))?;
        if !fd.ty.accepts(v) {
            return Err(failed(format!(
                "field '{field}' of User must be of type {:?}",
                fd.ty
            )));
        }
        let s = v.as_str().unwrap_or_default();
        match field.as_str() {
            "name" => {
                if s != user.name {
                    return Err(failed("a user's name cannot change"));
                }
            }
            "email" => user.email = s.to_string(),
            "full_name" => user.full_name = s.to_string(),
            "password" => {
                // No comparison with the old password: an error must not tell whether a
                // guess was right.
                if !s.is_empty() {
                    if user.configured {
                        return Err(failed(format!(
                            "the password of '{}' is set in the credentials file",
                            user.name
                        )));
                    }
                    user.password = s.as_bytes().to_vec();
                }
            }
            "admin" => {
                let b = v.as_bool().unwrap_or(false);
                if b != user.admin {
                    if !admin {
                        return Err(StoreError::Forbidden);
                    }
                    user.admin = b;
                }
            }
            "roles" => {
                let roles: Vec<String> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if roles != user.roles {
                    if !admin {
                        return Err(StoreError::Forbidden);
                    }
                    user.roles = roles;
                }
            }
            "branch" => user.branch = v.as_str().map(String::from),
            _ => return Err(failed(format!("field '{field}' cannot be set"))),
        }
    }
    Ok(())
}
