//! The item tree: typed records (`M.Folder`, `M.Site`, `M.Subdomain`, `M.Page`), their JSON
//! form, path queries over them, and the undo-logged transaction of `set_item`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::path::{Doc, Query};
use super::schema::{self, Record};
use super::{failed, str_field, Key, StoreError, Touched, MAX_ITEMS};

/// The folder records: each holds children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKind {
    Folder,
    Site,
    Subdomain,
}

/// What an item is beyond the `M.Item` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Folder {
        kind: FolderKind,
        default_name: String,
        /// The children, in creation order.
        contents: Vec<Key>,
    },
    Page {
        description: String,
        content: String,
    },
}

/// One record of the tree (`M.Item` and a body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: Key,
    pub name: String,
    pub title: String,
    /// The parent folder; `None` for the root only.
    pub folder: Option<Key>,
    pub body: Body,
}

impl Item {
    /// The record's full name (`M.Page`).
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Folder { kind, .. } => match kind {
                FolderKind::Folder => "M.Folder",
                FolderKind::Site => "M.Site",
                FolderKind::Subdomain => "M.Subdomain",
            },
            Body::Page { .. } => "M.Page",
        }
    }

    /// The short kind name (`Page`): `_kind`.
    pub fn short_kind(&self) -> &'static str {
        let k = self.kind();
        k.strip_prefix("M.").unwrap_or(k)
    }

    fn record(&self) -> &'static Record {
        // Every kind an `Item` can have is in `schema::RECORDS`.
        schema::record(self.kind()).unwrap_or(&schema::RECORDS[0])
    }

    fn new(kind: &'static Record, name: String, folder: Key) -> Option<Item> {
        let body = if kind.is_a("M.Page") {
            Body::Page {
                description: String::new(),
                content: String::new(),
            }
        } else {
            let fk = match kind.name {
                "M.Folder" => FolderKind::Folder,
                "M.Site" => FolderKind::Site,
                "M.Subdomain" => FolderKind::Subdomain,
                _ => return None,
            };
            Body::Folder {
                kind: fk,
                default_name: String::new(),
                contents: Vec::new(),
            }
        };
        Some(Item {
            key: Key::new_uuid(kind.name),
            title: default_title(&name),
            name,
            folder: Some(folder),
            body,
        })
    }

    /// The item as JSON: `_key`, `_kind`, `_path` and every field of its record.
    pub fn to_json(&self, path: &str) -> Value {
        let mut m = Map::new();
        m.insert("_key".into(), json!(self.key.encode()));
        m.insert("_kind".into(), json!(self.short_kind()));
        m.insert("_path".into(), json!(path));
        m.insert("name".into(), json!(self.name));
        m.insert("title".into(), json!(self.title));
        m.insert(
            "folder".into(),
            self.folder
                .as_ref()
                .map_or(Value::Null, |k| json!(k.encode())),
        );
        match &self.body {
            Body::Folder {
                default_name,
                contents,
                ..
            } => {
                m.insert("default_name".into(), json!(default_name));
                let keys: Vec<Value> = contents.iter().map(|k| json!(k.encode())).collect();
                m.insert("contents".into(), Value::Array(keys));
            }
            Body::Page {
                description,
                content,
            } => {
                m.insert("description".into(), json!(description));
                m.insert("content".into(), json!(content));
            }
        }
        Value::Object(m)
    }

    /// A field's value as a string, for `[@field='value']`.
    fn field_str(&self, field: &str) -> Option<String> {
        Some(match (field, &self.body) {
            ("name", _) => self.name.clone(),
            ("title", _) => self.title.clone(),
            ("_kind", _) => self.short_kind().to_string(),
            ("_key", _) => self.key.encode(),
            ("folder", _) => self.folder.as_ref()?.encode(),
            ("default_name", Body::Folder { default_name, .. }) => default_name.clone(),
            ("description", Body::Page { description, .. }) => description.clone(),
            ("content", Body::Page { content, .. }) => content.clone(),
            _ => return None,
        })
    }

    /// Sets one field (not `name`, `folder` or `contents`, which the tree manages) from JSON.
    fn set_field(&mut self, field: &str, v: &Value) -> Result<(), StoreError> {
        let rec = self.record();
        let fd = rec
            .field(field)
            .ok_or_else(|| failed(format!("unknown field '{field}' for {}", self.short_kind())))?;
        if !fd.ty.accepts(v) {
            return Err(failed(format!(
                "field '{field}' of {} must be of type {:?}",
                self.short_kind(),
                fd.ty
            )));
        }
        let s = v.as_str().unwrap_or_default().to_string();
        match (field, &mut self.body) {
            ("title", _) => self.title = s,
            ("default_name", Body::Folder { default_name, .. }) => *default_name = s,
            ("description", Body::Page { description, .. }) => *description = s,
            ("content", Body::Page { content, .. }) => *content = s,
            _ => return Err(failed(format!("field '{field}' cannot be set"))),
        }
        Ok(())
    }

    fn contents(&self) -> &[Key] {
        match &self.body {
            Body::Folder { contents, .. } => contents,
            Body::Page { .. } => &[],
        }
    }

    fn contents_mut(&mut self) -> Option<&mut Vec<Key>> {
        match &mut self.body {
            Body::Folder { contents, .. } => Some(contents),
            Body::Page { .. } => None,
        }
    }
}

/// The default name of a created item: the last path segment lowercased, each run of
/// characters outside `[a-z0-9]` replaced by one `-`.
pub fn default_name(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut in_run = false;
    for c in segment.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out
}

/// The default title: the name with `-` as spaces, each word capitalised.
pub fn default_title(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word_start = true;
    for c in name.chars() {
        let c = if c == '-' { ' ' } else { c };
        if word_start && c != ' ' {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        word_start = c == ' ';
    }
    out
}

/// A name an item may have: not empty, no `/`, no control character.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err(failed(format!("bad item name '{name}'")));
    }
    Ok(())
}

/// Every item by key, and the root.
pub(super) struct Tree {
    items: HashMap<Key, Item>,
    root: Key,
}

impl Tree {
    /// A tree with one `Site` at `/` (name `""`, title `"Root"`).
    pub(super) fn new() -> Tree {
        let root = Item {
            key: Key::new_uuid("M.Site"),
            name: String::new(),
            title: "Root".into(),
            folder: None,
            body: Body::Folder {
                kind: FolderKind::Site,
                default_name: String::new(),
                contents: Vec::new(),
            },
        };
        let key = root.key.clone();
        Tree {
            items: HashMap::from([(key.clone(), root)]),
            root: key,
        }
    }

    /// The whole tree as JSON, for the durable log: the root's key and every item with its
    /// key, folder and fields (children in `contents` order).
    pub(super) fn export(&self) -> Value {
        let items: Vec<Value> = self
            .items
            .values()
            .map(|it| {
                let mut m = Map::new();
                m.insert("key".into(), it.key.encode().into());
                m.insert("kind".into(), it.kind().into());
                m.insert("name".into(), it.name.clone().into());
                m.insert("title".into(), it.title.clone().into());
                m.insert(
                    "folder".into(),
                    it.folder
                        .as_ref()
                        .map_or(Value::Null, |k| k.encode().into()),
                );
                match &it.body {
                    Body::Folder {
                        default_name,
                        contents,
                        ..
                    } => {
                        m.insert("default_name".into(), default_name.clone().into());
                        let keys = contents.iter().map(|k| Value::from(k.encode())).collect();
                        m.insert("contents".into(), Value::Array(keys));
                    }
                    Body::Page {
                        description,
                        content,
                    } => {
                        m.insert("description".into(), description.clone().into());
                        m.insert("content".into(), content.clone().into());
                    }
                }
                Value::Object(m)
            })
            .collect();
        json!({"root": self.root.encode(), "items": items})
    }

    /// A tree from `export`'s JSON. Every key must decode, every folder and child named
    /// must be in it, and the root must be a folder; else why not.
    pub(super) fn import(v: &Value) -> Result<Tree, String> {
        let key = |v: &Value| -> Result<Key, String> {
            Key::decode(v.as_str().ok_or("a key is not a string")?).map_err(|e| e.to_string())
        };
        let text = |m: &Value, f: &str| -> Result<String, String> {
            Ok(m.get(f)
                .and_then(Value::as_str)
                .ok_or(format!("an item has no {f}"))?
                .to_string())
        };
        let root = key(&v["root"])?;
        let mut items = HashMap::new();
        for it in v["items"].as_array().ok_or("no items")? {
            let body = match it["kind"].as_str().unwrap_or("") {
                "M.Page" => Body::Page {
                    description: text(it, "description")?,
                    content: text(it, "content")?,
                },
                kind => Body::Folder {
                    kind: match kind {
                        "M.Folder" => FolderKind::Folder,
                        "M.Site" => FolderKind::Site,
                        "M.Subdomain" => FolderKind::Subdomain,
                        other => return Err(format!("unknown kind {other:?}")),
                    },
                    default_name: text(it, "default_name")?,
                    contents: it["contents"]
                        .as_array()
                        .ok_or("a folder has no contents")?
                        .iter()
                        .map(key)
                        .collect::<Result<_, _>>()?,
                },
            };
            let item = Item {
                key: key(&it["key"])?,
                name: text(it, "name")?,
                title: text(it, "title")?,
                folder: match &it["folder"] {
                    Value::Null => None,
                    f => Some(key(f)?),
                },
                body,
            };
            items.insert(item.key.clone(), item);
        }
        for item in items.values() {
            let parent_ok = item.folder.as_ref().is_none_or(|f| items.contains_key(f));
            let children_ok = match &item.body {
                Body::Folder { contents, .. } => contents.iter().all(|c| items.contains_key(c)),
                Body::Page { .. } => true,
            };
            if !parent_ok || !children_ok {
                return Err(format!("item {} names a missing item", item.key));
            }
        }
        match items.get(&root).map(|r| &r.body) {
            Some(Body::Folder { .. }) => Ok(Tree { items, root }),
            _ => Err("the root is missing or not a folder".into()),
        }
    }

    /// An item's `_path`: `/`, `/example`, `/example/child`.
    fn path_of(&self, key: &Key) -> String {
        let mut names = Vec::new();
        let mut k = Some(key);
        while let Some(item) = k.and_then(|k| self.items.get(k)) {
            if item.folder.is_none() {
                break;
            }
            names.push(item.name.as_str());
            k = item.folder.as_ref();
        }
        if names.is_empty() {
            return "/".into();
        }
        names.iter().rev().fold(String::new(), |mut s, n| {
            s.push('/');
            s.push_str(n);
            s
        })
    }

    fn child_named<'a>(&self, folder: &'a Item, name: &str) -> Option<&'a Key> {
        folder
            .contents()
            .iter()
            .find(|k| self.items.get(*k).is_some_and(|i| i.name == name))
    }

    /// The item at a path (`/`, `/a/b`; empty segments are skipped).
    fn resolve(&self, path: &str) -> Result<&Key, StoreError> {
        if !path.starts_with('/') {
            return Err(failed(format!("a path must start with '/': '{path}'")));
        }
        let mut key = &self.root;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            let item = self
                .items
                .get(key)
                .ok_or_else(|| failed(format!("no item at {path}")))?;
            key = self
                .child_named(item, seg)
                .ok_or_else(|| failed(format!("no item at {path}")))?;
        }
        Ok(key)
    }

    /// The items a query matches, as a JSON array in document order.
    pub(super) fn query(&self, q: &Query) -> Value {
        let outline = Outline::new(self);
        let found = q.eval(&outline);
        Value::Array(
            found
                .into_iter()
                .filter_map(|n| {
                    let item = self.items.get(outline.keys.get(n)?)?;
                    Some(item.to_json(&outline.path(n)))
                })
                .collect(),
        )
    }

    fn json_of(&self, key: &Key) -> Option<Value> {
        self.items.get(key).map(|i| i.to_json(&self.path_of(key)))
    }
}

/// The tree in document order, as `path::Doc` sees it.
struct Outline<'a> {
    tree: &'a Tree,
    keys: Vec<&'a Key>,
    parent: Vec<Option<usize>>,
    end: Vec<usize>,
}

impl<'a> Outline<'a> {
    fn new(tree: &'a Tree) -> Outline<'a> {
        let mut o = Outline {
            tree,
            keys: Vec::with_capacity(tree.items.len()),
            parent: Vec::with_capacity(tree.items.len()),
            end: Vec::with_capacity(tree.items.len()),
        };
        // Iterative depth-first walk: (node index, next child to visit).
        let mut stack: Vec<(usize, usize)> = Vec::new();
        o.push(&tree.root, None);
        stack.push((0, 0));
        while let Some(top) = stack.last_mut() {
            let (n, next) = *top;
            top.1 += 1;
            let child = tree
                .items
                .get(o.keys[n])
                .and_then(|i| i.contents().get(next));
            match child {
                Some(c) if tree.items.contains_key(c) => {
                    let idx = o.push(c, Some(n));
                    stack.push((idx, 0));
                }
                Some(_) => {}
                None => {
                    o.end[n] = o.keys.len();
                    stack.pop();
                }
            }
        }
        o
    }

    fn push(&mut self, key: &'a Key, parent: Option<usize>) -> usize {
        self.keys.push(key);
        self.parent.push(parent);
        self.end.push(0);
        self.keys.len() - 1
    }

    fn item(&self, n: usize) -> Option<&'a Item> {
        self.tree.items.get(*self.keys.get(n)?)
    }

    fn path(&self, n: usize) -> String {
        let mut names = Vec::new();
        let mut i = n;
        while let Some(p) = self.parent.get(i).copied().flatten() {
            names.push(self.item(i).map_or("", |it| it.name.as_str()));
            i = p;
        }
        if names.is_empty() {
            return "/".into();
        }
        names.iter().rev().fold(String::new(), |mut s, n| {
            s.push('/');
            s.push_str(n);
            s
        })
    }
}

impl Doc for Outline<'_> {
    fn node_count(&self) -> usize {
        self.keys.len()
    }
    fn parent(&self, n: usize) -> Option<usize> {
        self.parent.get(n).copied().flatten()
    }
    fn subtree_end(&self, n: usize) -> usize {
        self.end.get(n).copied().unwrap_or(n + 1)
    }
    fn name_matches(&self, n: usize, test: &str) -> bool {
        self.item(n)
            .is_some_and(|i| i.name == test || i.short_kind() == test)
    }
    fn field_is(&self, n: usize, field: &str, value: &str) -> bool {
        if field == "_path" {
            return self.path(n) == value;
        }
        self.item(n)
            .and_then(|i| i.field_str(field))
            .is_some_and(|v| v == value)
    }
}

/// A `set_item` transaction: changes apply to the tree at once; the first value of every
/// touched key is logged so `rollback` can put it back.
pub(super) struct Txn<'t> {
    tree: &'t mut Tree,
    undo: Vec<(Key, Option<Item>)>,
    logged: HashMap<Key, ()>,
    touched: Touched,
}

impl<'t> Txn<'t> {
    pub(super) fn new(tree: &'t mut Tree) -> Txn<'t> {
        Txn {
            tree,
            undo: Vec::new(),
            logged: HashMap::new(),
            touched: Touched::default(),
        }
    }

    /// Logs the value of `key` before its first change in this transaction.
    fn log(&mut self, key: &Key) {
        if self.logged.insert(key.clone(), ()).is_none() {
            self.undo
                .push((key.clone(), self.tree.items.get(key).cloned()));
        }
    }

    fn item_mut(&mut self, key: &Key) -> Result<&mut Item, StoreError> {
        self.log(key);
        self.tree
            .items
            .get_mut(key)
            .ok_or_else(|| failed("internal: a key of the tree has no item"))
    }

    /// The item a `save` / `remove` names: by `_path`, else by `_key`.
    fn target(&self, data: &Map<String, Value>) -> Result<Key, StoreError> {
        if let Some(p) = str_field(data, "_path")? {
            return self.tree.resolve(p).cloned();
        }
        if let Some(k) = str_field(data, "_key")? {
            let key = Key::decode(k).map_err(|e| failed(format!("bad key '{k}': {e}")))?;
            if self.tree.items.contains_key(&key) {
                return Ok(key);
            }
            return Err(failed(format!("no item with key {k}")));
        }
        Err(failed("the action needs a _path"))
    }

    /// `create`: a new item at `_path` of `_kind`, then its folder.
    pub(super) fn create(&mut self, data: &Map<String, Value>) -> Result<(), StoreError> {
        let path = str_field(data, "_path")?.ok_or_else(|| failed("create needs a _path"))?;
        let kind = str_field(data, "_kind")?.ok_or_else(|| failed("create needs a _kind"))?;
        let rec = schema::record(kind)
            .filter(|r| r.is_a("M.Folder") || r.name == "M.Page")
            .ok_or_else(|| failed(format!("cannot create an item of kind '{kind}'")))?;
        if !path.starts_with('/') {
            return Err(failed(format!("a path must start with '/': '{path}'")));
        }
        let trimmed = path.trim_end_matches('/');
        let (dir, last) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        if last.is_empty() {
            return Err(failed(format!(
                "create needs a name in its _path: '{path}'"
            )));
        }
        let parent_key = self
            .tree
            .resolve(if dir.is_empty() { "/" } else { dir })?
            .clone();
        let parent = self
            .tree
            .items
            .get(&parent_key)
            .ok_or_else(|| failed(format!("no item at {dir}")))?;
        if !matches!(parent.body, Body::Folder { .. }) {
            return Err(failed(format!("{dir} is not a folder")));
        }
        let name = match str_field(data, "name")? {
            Some(n) => n.to_string(),
            None => default_name(last),
        };
        check_name(&name)?;
        if self.tree.child_named(parent, &name).is_some() {
            let shown = if dir.is_empty() { "/" } else { dir };
            return Err(failed(format!("{shown} already holds '{name}'")));
        }
        if self.tree.items.len() >= MAX_ITEMS {
            return Err(failed("the store is full"));
        }
        let mut item = Item::new(rec, name, parent_key.clone())
            .ok_or_else(|| failed(format!("cannot create an item of kind '{kind}'")))?;
        for (field, v) in data {
            if field.starts_with('_') || field == "name" {
                continue;
            }
            set_or_check_managed(&mut item, field, v)?;
        }
        let key = item.key.clone();
        self.log(&key);
        self.tree.items.insert(key.clone(), item);
        self.item_mut(&parent_key)?
            .contents_mut()
            .ok_or_else(|| failed("internal: the parent is not a folder"))?
            .push(key.clone());
        self.touched.touch(&key);
        self.touched.touch(&parent_key);
        Ok(())
    }

    /// `save`: the fields without `_` replace the item's. A new `name` must be free in its
    /// folder.
    pub(super) fn save(&mut self, data: &Map<String, Value>) -> Result<(), StoreError> {
        let key = self.target(data)?;
        if let Some(name) = str_field(data, "name")? {
            let item = self
                .tree
                .items
                .get(&key)
                .ok_or_else(|| failed("internal: a key of the tree has no item"))?;
            if item.name != name {
                let parent = item
                    .folder
                    .as_ref()
                    .and_then(|p| self.tree.items.get(p))
                    .ok_or_else(|| failed("the root's name cannot change"))?;
                check_name(name)?;
                if self.tree.child_named(parent, name).is_some() {
                    return Err(failed(format!(
                        "{} already holds '{name}'",
                        self.tree.path_of(&parent.key)
                    )));
                }
                self.item_mut(&key)?.name = name.to_string();
            }
        }
        let item = self.item_mut(&key)?;
        for (field, v) in data {
            if field.starts_with('_') || field == "name" {
                continue;
            }
            set_or_check_managed(item, field, v)?;
        }
        self.touched.touch(&key);
        Ok(())
    }

    /// `remove`: the item and its subtree (never `/`); the result names the parent folder.
    pub(super) fn remove(&mut self, data: &Map<String, Value>) -> Result<(), StoreError> {
        let key = self.target(data)?;
        let parent = self
            .tree
            .items
            .get(&key)
            .and_then(|i| i.folder.clone())
            .ok_or_else(|| failed("cannot remove /"))?;
        if let Some(c) = self.item_mut(&parent)?.contents_mut() {
            c.retain(|k| *k != key);
        }
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            self.log(&k);
            if let Some(item) = self.tree.items.remove(&k) {
                stack.extend(item.contents().iter().cloned());
            }
        }
        self.touched.touch(&parent);
        Ok(())
    }

    /// The result: every touched item that still exists, in first-touch order.
    pub(super) fn result(&self) -> Value {
        Value::Array(
            self.touched
                .order
                .iter()
                .filter_map(|k| self.tree.json_of(k))
                .collect(),
        )
    }

    /// Puts back every logged value, newest first.
    pub(super) fn rollback(mut self) {
        while let Some((k, old)) = self.undo.pop() {
            match old {
                Some(item) => self.tree.items.insert(k, item),
                None => self.tree.items.remove(&k),
            };
        }
    }

    /// Keeps the changes.
    pub(super) fn commit(self) {}
}

/// Sets a field; `folder` and `contents` (managed by the tree) are accepted only with their
/// current value, so a client may send an object back whole.
fn set_or_check_managed(item: &mut Item, field: &str, v: &Value) -> Result<(), StoreError> {
    match field {
        "folder" => {
            let current = item.folder.as_ref().map(Key::encode);
            if v.as_str() == current.as_deref() && (v.is_null() == current.is_none()) {
                return Ok(());
            }
            Err(failed("field 'folder' is managed by the store"))
        }
        "contents" if matches!(item.body, Body::Folder { .. }) => {
            let current: Vec<Value> = item.contents().iter().map(|k| json!(k.encode())).collect();
            if v.as_array() == Some(&current) {
                return Ok(());
            }
            Err(failed("field 'contents' is managed by the store"))
        }
        _ => item.set_field(field, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_and_titles() {
        for (seg, name, title) in [
            ("example", "example", "Example"),
            ("Example Page", "example-page", "Example Page"),
            ("News & Views!!", "news-views-", "News Views "),
            ("article-1", "article-1", "Article 1"),
            ("  x", "-x", " X"),
            ("Caf\u{e9}", "caf-", "Caf "),
            ("a__b..c", "a-b-c", "A B C"),
        ] {
            assert_eq!(default_name(seg), name, "{seg}");
            assert_eq!(default_title(name), title, "{name}");
        }
        assert_eq!(default_title("fooBar baz"), "FooBar Baz");
    }

    #[test]
    fn fresh_tree_is_one_site() {
        let t = Tree::new();
        let v = t.query(&Query::parse("/").unwrap());
        let root = &v[0];
        assert_eq!(root["_kind"], "Site");
        assert_eq!(root["_path"], "/");
        assert_eq!(root["name"], "");
        assert_eq!(root["title"], "Root");
        assert_eq!(root["folder"], Value::Null);
        assert_eq!(root["contents"], json!([]));
        assert_eq!(
            Key::decode(root["_key"].as_str().unwrap()).unwrap().kind,
            "M.Site"
        );
    }
}
