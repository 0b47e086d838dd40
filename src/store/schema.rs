//! The record schemas of the item store (PROTOCOLS.md 4.3), as the reference's Avro schemas
//! define them, with its own extension: a record names a `base` record whose fields it
//! inherits (first, in the base's order).
//!
//! `get_schema` answers with `schema_json`: the record's schema with every inherited field
//! written out, `base` kept, so a client can read a record from it alone.

use serde_json::{json, Value};

/// A field's Avro type, as the store checks values against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// `string`
    Str,
    /// `boolean`
    Bool,
    /// `[M.key, null]`: a key string or `null`.
    KeyOrNull,
    /// `{type: array, items: M.key}`
    Keys,
    /// `{type: array, items: string}`
    Strings,
    /// `[string, null]`
    StrOrNull,
}

impl FieldType {
    fn avro(self) -> Value {
        match self {
            FieldType::Str => json!("string"),
            FieldType::Bool => json!("boolean"),
            FieldType::KeyOrNull => json!(["M.key", "null"]),
            FieldType::Keys => json!({"type": "array", "items": "M.key"}),
            FieldType::Strings => json!({"type": "array", "items": "string"}),
            FieldType::StrOrNull => json!(["string", "null"]),
        }
    }

    /// Whether a JSON value is of this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            FieldType::Str => v.is_string(),
            FieldType::Bool => v.is_boolean(),
            FieldType::KeyOrNull | FieldType::StrOrNull => v.is_string() || v.is_null(),
            FieldType::Keys | FieldType::Strings => {
                v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }
        }
    }
}

/// One field of a record.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    /// The default, as JSON text (`None`: the field has no default).
    pub default: Option<&'static str>,
}

const fn f(name: &'static str, ty: FieldType, default: Option<&'static str>) -> Field {
    Field { name, ty, default }
}

/// One record schema.
#[derive(Debug)]
pub struct Record {
    /// The full name, `M.Page`.
    pub name: &'static str,
    pub base: Option<&'static str>,
    /// The fields this record adds to its base's.
    pub own: &'static [Field],
}

impl Record {
    /// The short name (`Page`): what `_kind` holds.
    pub fn short(&self) -> &'static str {
        self.name.strip_prefix("M.").unwrap_or(self.name)
    }

    /// Every field, inherited ones first.
    pub fn fields(&self) -> Vec<&'static Field> {
        let mut out = match self.base.and_then(record) {
            Some(base) => base.fields(),
            None => Vec::new(),
        };
        out.extend(self.own.iter());
        out
    }

    /// The field of this name, if the record has it.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields().into_iter().find(|f| f.name == name)
    }

    /// Whether this record is `ancestor` or inherits from it.
    pub fn is_a(&self, ancestor: &str) -> bool {
        let mut r = Some(self);
        while let Some(rec) = r {
            if rec.name == ancestor {
                return true;
            }
            r = rec.base.and_then(record);
        }
        false
    }
}

use FieldType::*;

/// Every record the store knows, in the reference's order.
pub static RECORDS: &[Record] = &[
    Record {
        name: "M.Item",
        base: None,
        own: &[
            f("name", Str, None),
            f("title", Str, None),
            f("folder", KeyOrNull, Some("null")),
        ],
    },
    Record {
        name: "M.Folder",
        base: Some("M.Item"),
        own: &[
            f("default_name", Str, Some("\"\"")),
            f("contents", Keys, Some("[]")),
        ],
    },
    Record {
        name: "M.Site",
        base: Some("M.Folder"),
        own: &[],
    },
    Record {
        name: "M.Subdomain",
        base: Some("M.Folder"),
        own: &[],
    },
    Record {
        name: "M.Page",
        base: Some("M.Item"),
        own: &[
            f("description", Str, Some("\"\"")),
            f("content", Str, Some("\"\"")),
        ],
    },
    Record {
        name: "M.User",
        base: None,
        own: &[
            f("name", Str, None),
            f("email", Str, Some("\"\"")),
            f("password", Str, None),
            f("full_name", Str, Some("\"\"")),
            f("admin", Bool, Some("false")),
            f("roles", Strings, Some("[]")),
            f("branch", StrOrNull, Some("null")),
        ],
    },
];

/// A record by full (`M.Page`) or short (`Page`) name.
pub fn record(name: &str) -> Option<&'static Record> {
    RECORDS.iter().find(|r| r.name == name || r.short() == name)
}

/// The schema JSON of a record or of the key types (`M.key`, `M.uuid`), by full or short
/// name; `None` for an unknown name.
pub fn schema_json(name: &str) -> Option<Value> {
    match name {
        "M.key" | "key" => {
            return Some(json!({
                "type": "record",
                "name": "M.key",
                "fields": [
                    {"name": "kind", "type": "string"},
                    {"name": "id", "type": ["M.uuid", "string"]},
                ],
            }))
        }
        "M.uuid" | "uuid" => return Some(json!({"type": "fixed", "name": "M.uuid", "size": 16})),
        _ => {}
    }
    let rec = record(name)?;
    let fields: Vec<Value> = rec
        .fields()
        .into_iter()
        .map(|fd| {
            let mut o = json!({"name": fd.name, "type": fd.ty.avro()});
            if let (Some(d), Some(map)) = (fd.default, o.as_object_mut()) {
                map.insert(
                    "default".into(),
                    serde_json::from_str(d).unwrap_or(Value::Null),
                );
            }
            o
        })
        .collect();
    let mut v = json!({"type": "record", "name": rec.name, "fields": fields});
    if let (Some(base), Some(map)) = (rec.base, v.as_object_mut()) {
        map.insert("base".into(), json!(base));
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pyjson::dumps;

    #[test]
    fn names_and_inheritance() {
        assert_eq!(record("Page").unwrap().name, "M.Page");
        assert_eq!(record("M.Page").unwrap().short(), "Page");
        assert!(record("Nope").is_none());
        let site = record("Site").unwrap();
        assert!(site.is_a("M.Folder") && site.is_a("M.Item") && !site.is_a("M.Page"));
        let names: Vec<_> = site.fields().iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["name", "title", "folder", "default_name", "contents"]
        );
        for r in RECORDS {
            for fd in r.fields() {
                if let Some(d) = fd.default {
                    let v: Value = serde_json::from_str(d).unwrap();
                    assert!(fd.ty.accepts(&v), "{}.{}", r.name, fd.name);
                }
            }
        }
    }

    #[test]
    fn page_schema_bytes() {
        let s = dumps(&schema_json("Page").unwrap());
        assert_eq!(
            s,
            r#"{"base": "M.Item", "fields": [{"name": "name", "type": "string"}, {"name": "title", "type": "string"}, {"default": null, "name": "folder", "type": ["M.key", "null"]}, {"default": "", "name": "description", "type": "string"}, {"default": "", "name": "content", "type": "string"}], "name": "M.Page", "type": "record"}"#
        );
        assert_eq!(schema_json("M.Page"), schema_json("Page"));
        assert!(schema_json("M.key").is_some() && schema_json("uuid").is_some());
        assert!(schema_json("Bogus").is_none());
    }
}
