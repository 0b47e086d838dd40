//! The QST JSON batch format (PROTOCOLS.md 1.2): a push body to drafts, stored messages to a
//! pull reply.
//!
//! ```text
//! [{"id":"..","from":"..","to":"..","when":"..","subject":"..","body":"..",
//!   "<property name>":"<value>" | ["<value>", ...], ...}, ...]
//! ```
//!
//! The known keys are `id`, `from`, `to`, `when`, `subject` and `body`; every other key of a
//! message object is a property, kept in document order (the objects are read with a visitor,
//! not through `serde_json::Map`, which would sort them).
//!
//! Decoding rules:
//! - A known key takes a string or `null`, which means absent; anything else is an error, and
//!   so is a known key given twice. An empty `id` or `when` counts as absent (the hub assigns
//!   one), so `"id":""` can never make two messages look like one retried push.
//! - A property value is a string (one property), a number, `true` or `false` (one property
//!   whose value is its exact JSON text: `1.50` stays `"1.50"`), or an array of those (one
//!   property per element, in order, all with the key's name). `null`, alone or in an array,
//!   is skipped: the property is absent, as `null` is absent for the known keys. Objects and
//!   nested arrays are errors. A property key that appears twice adds its values in order.
//!
//! Encoding writes `id`, `from`, `to`, `when` (UTC `YYYY-MM-DDTHH:MM:SSZ`), `subject` (only when
//! the message has one) and `body` (always), then each property name once, at the position of
//! its first occurrence: a string when it has one value, an array of strings when it has more.
//! A property whose name is one of the known keys cannot be told apart from that key in this
//! format, so it is **left out** of the JSON (the XML format carries it).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::CodecError;
use crate::hub::{Draft, Message};
use crate::time;

/// The keys that are fields of the message rather than properties.
const KNOWN_KEYS: [&str; 6] = ["id", "from", "to", "when", "subject", "body"];

/// Above this many properties, `encode` groups repeated names with a hash map instead of
/// rescanning the list for each name.
const LINEAR_GROUPING_MAX: usize = 16;

/// Decodes a JSON push body into drafts, in array order.
///
/// Returns an empty vector for `[]`. A body that is not an array of message objects following
/// the module doc's rules is an `Err` whose text says what was wrong, fit for a `400` body
/// (serde_json's position included); no partial result is returned.
pub fn decode(body: &[u8]) -> Result<Vec<Draft>, CodecError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let drafts = de
        .deserialize_seq(BatchVisitor)
        .and_then(|drafts| de.end().map(|()| drafts))
        .map_err(|e| CodecError(format!("malformed JSON: {e}")))?;
    Ok(drafts)
}

/// Appends `msgs` to `out` as a JSON array of message objects (see the module doc); an empty
/// batch is `[]`. Never fails; allocates only when `out` grows, when a body is not valid UTF-8
/// (it is written lossily), or when a message has more than `LINEAR_GROUPING_MAX` properties.
pub fn encode(msgs: &[&Message], out: &mut Vec<u8>) {
    out.push(b'[');
    let mut when = String::with_capacity(20);
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(&m.id, out);
        out.extend_from_slice(b",\"from\":");
        write_str(&m.from, out);
        out.extend_from_slice(b",\"to\":");
        write_str(&m.to, out);
        out.extend_from_slice(b",\"when\":\"");
        when.clear();
        time::format_utc(m.when, &mut when);
        out.extend_from_slice(when.as_bytes());
        out.push(b'"');
        if let Some(subject) = &m.subject {
            out.extend_from_slice(b",\"subject\":");
            write_str(subject, out);
        }
        out.extend_from_slice(b",\"body\":");
        write_str(&String::from_utf8_lossy(&m.body), out);
        write_properties(&m.properties, out);
        out.push(b'}');
    }
    out.push(b']');
}

/// Appends `s` as a JSON string literal.
fn write_str(s: &str, out: &mut Vec<u8>) {
    // Serialising a `str` into a `Vec` cannot fail: the writer is infallible and every
    // `str` is valid JSON string content once escaped.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `,"name":value` for each distinct property name not among `KNOWN_KEYS`, in order
/// of first occurrence; `value` is a string, or an array of strings when the name repeats.
fn write_properties<S: AsRef<str>>(props: &[(S, S)], out: &mut Vec<u8>) {
    let props = props.iter().map(|(n, v)| (n.as_ref(), v.as_ref()));
    if props.len() <= LINEAR_GROUPING_MAX {
        for (i, (name, value)) in props.clone().enumerate() {
            if KNOWN_KEYS.contains(&name) || props.clone().take(i).any(|(n, _)| n == name) {
                continue;
            }
            let more = props
                .clone()
                .skip(i + 1)
                .filter(|&(n, _)| n == name)
                .map(|(_, v)| v);
            write_property(name, value, more, out);
        }
        return;
    }
    let mut groups: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut order = Vec::new();
    for (name, value) in props {
        if KNOWN_KEYS.contains(&name) {
            continue;
        }
        groups
            .entry(name)
            .or_insert_with(|| {
                order.push(name);
                Vec::new()
            })
            .push(value);
    }
    for name in order {
        let values = &groups[name];
        write_property(name, values[0], values[1..].iter().copied(), out);
    }
}

/// Appends `,"name":"first"` or, when `more` yields values, `,"name":["first",...]`.
fn write_property<'a>(
    name: &str,
    first: &str,
    more: impl Iterator<Item = &'a str>,
    out: &mut Vec<u8>,
) {
    out.push(b',');
    write_str(name, out);
    out.push(b':');
    let mut more = more.peekable();
    if more.peek().is_none() {
        write_str(first, out);
        return;
    }
    out.push(b'[');
    write_str(first, out);
    for v in more {
        out.push(b',');
        write_str(v, out);
    }
    out.push(b']');
}

/// The properties `decode(encode(m))` gives back for a message with `props`: encoding groups
/// a repeated name at its first occurrence, so the order is the original one made stable by
/// first occurrence of each name; names among `KNOWN_KEYS` are left out. The oracle of the
/// round-trip property test and of `fuzzing::qst_json`.
pub fn round_tripped_properties(props: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, _) in props {
        if KNOWN_KEYS.contains(&name.as_str()) || out.iter().any(|(n, _)| n == name) {
            continue;
        }
        out.extend(props.iter().filter(|(n, _)| n == name).cloned());
    }
    out
}

/// The top-level array.
struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Vec<Draft>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of message objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Draft>, A::Error> {
        let mut drafts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(draft) = seq.next_element_seed(DraftSeed)? {
            drafts.push(draft);
        }
        Ok(drafts)
    }
}

/// One message object.
struct DraftSeed;

impl<'de> DeserializeSeed<'de> for DraftSeed {
    type Value = Draft;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Draft, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DraftSeed {
    type Value = Draft;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Draft, A::Error> {
        let mut draft = Draft::default();
        let mut seen = [false; KNOWN_KEYS.len()];
        while let Some(Key(key)) = map.next_key()? {
            let Some(k) = KNOWN_KEYS.iter().position(|&known| known == key) else {
                let raw: &'de RawValue = map.next_value()?;
                property_values(key.into_owned(), raw, &mut draft.properties)?;
                continue;
            };
            if std::mem::replace(&mut seen[k], true) {
                return Err(de::Error::duplicate_field(KNOWN_KEYS[k]));
            }
            let value = map.next_value_seed(StrOrNull(KNOWN_KEYS[k]))?;
            match (KNOWN_KEYS[k], value) {
                (_, None) => {}
                ("id", Some(v)) => draft.id = Some(v).filter(|v| !v.is_empty()),
                ("from", Some(v)) => draft.from = v,
                ("to", Some(v)) => draft.to = v,
                ("when", Some(v)) if v.is_empty() => {}
                ("when", Some(v)) => {
                    let when = time::parse_datetime(&v).ok_or_else(|| {
                        de::Error::custom(format_args!("unparsable \"when\": {v:?}"))
                    })?;
                    draft.when = Some(when);
                }
                ("subject", Some(v)) => draft.subject = Some(v),
                (_, Some(v)) => draft.body = v.into_bytes(),
            }
        }
        Ok(draft)
    }
}

/// Appends the properties `name` stands for, given its raw JSON value (see the module doc).
fn property_values<E: de::Error>(
    name: String,
    raw: &RawValue,
    props: &mut Vec<(String, String)>,
) -> Result<(), E> {
    let text = raw.get();
    if !text.starts_with('[') {
        if let Some(value) = scalar(&name, text)? {
            props.push((name, value));
        }
        return Ok(());
    }
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(de::Error::custom)?;
    for item in items {
        if item.get().starts_with('[') {
            return Err(de::Error::custom(format_args!(
                "property {name:?}: nested arrays are not allowed"
            )));
        }
        if let Some(value) = scalar(&name, item.get())? {
            props.push((name.clone(), value));
        }
    }
    Ok(())
}

/// The property value of one JSON scalar given as its text: a string's content, a number's or
/// boolean's text, or `None` for `null`. An object is an error.
fn scalar<E: de::Error>(name: &str, text: &str) -> Result<Option<String>, E> {
    match text.as_bytes()[0] {
        b'"' => {
            let inner = &text[1..text.len() - 1];
            if !inner.contains('\\') {
                return Ok(Some(inner.to_owned()));
            }
            serde_json::from_str(text)
                .map(Some)
                .map_err(de::Error::custom)
        }
        b'{' => Err(de::Error::custom(format_args!(
            "property {name:?}: objects are not allowed"
        ))),
        b'n' => Ok(None),
        _ => Ok(Some(text.to_owned())),
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The value of a known key: a string, or `None` for `null`. The key's name goes into the
/// error message of any other type.
struct StrOrNull(&'static str);

impl<'de> DeserializeSeed<'de> for StrOrNull {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrOrNull {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string or null for {:?}", self.0)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<String>, E> {
        Ok(Some(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Option<String>, E> {
        Ok(Some(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    fn props(props: &[(&str, &str)]) -> Draft {
        with_props(Draft::default(), props)
    }

    fn encoded(msgs: &[Message]) -> String {
        let refs: Vec<&Message> = msgs.iter().collect();
        let mut out = Vec::new();
        encode(&refs, &mut out);
        String::from_utf8(out).expect("encoder writes UTF-8")
    }

    #[test]
    fn decodes_valid_documents() {
        let cases: Vec<(&str, &str, Vec<Draft>)> = vec![
            ("empty batch", "[]", vec![]),
            ("whitespace around", " \n[ ] \n", vec![]),
            ("empty object", "[{}]", vec![Draft::default()]),
            (
                "spec example",
                r#"[{"id":"24c2","from":"sms://838383","to":"twitter://foo","when":"2010-01-01T23:18:53Z",
                    "subject":"Subject","body":"Body","custom-property":"foo","another-property":"123"}]"#,
                vec![with_props(
                    with_body(
                        draft(Some("24c2"), "sms://838383", "twitter://foo", Some(WHEN)),
                        Some("Subject"),
                        "Body",
                    ),
                    &[("custom-property", "foo"), ("another-property", "123")],
                )],
            ),
            (
                "offset converted to UTC",
                r#"[{"when":"2010-01-02T01:18:53+02:00"}]"#,
                vec![draft(None, "", "", Some(WHEN))],
            ),
            (
                "null known keys are absent",
                r#"[{"id":null,"from":null,"to":null,"when":null,"subject":null,"body":null}]"#,
                vec![Draft::default()],
            ),
            (
                "empty id and when are absent, empty subject is kept",
                r#"[{"id":"","when":"","subject":""}]"#,
                vec![with_body(Draft::default(), Some(""), "")],
            ),
            (
                "properties keep document order, not key order",
                r#"[{"zeta":"1","body":"b","alpha":"2","mid":"3"}]"#,
                vec![with_props(
                    with_body(Draft::default(), None, "b"),
                    &[("zeta", "1"), ("alpha", "2"), ("mid", "3")],
                )],
            ),
            (
                "scalars kept as their JSON text",
                r#"[{"n":123,"f":-1.50e3,"t":true,"x":false,"z":0}]"#,
                vec![props(&[
                    ("n", "123"),
                    ("f", "-1.50e3"),
                    ("t", "true"),
                    ("x", "false"),
                    ("z", "0"),
                ])],
            ),
            (
                "array of values is a repeated property",
                r#"[{"tag":["a","b"],"x":"1","mix":[1,"two",true]}]"#,
                vec![props(&[
                    ("tag", "a"),
                    ("tag", "b"),
                    ("x", "1"),
                    ("mix", "1"),
                    ("mix", "two"),
                    ("mix", "true"),
                ])],
            ),
            (
                "repeated property key adds values in order",
                r#"[{"tag":"a","x":"1","tag":["b","c"]}]"#,
                vec![props(&[
                    ("tag", "a"),
                    ("x", "1"),
                    ("tag", "b"),
                    ("tag", "c"),
                ])],
            ),
            (
                "null property and null array elements are skipped",
                r#"[{"gone":null,"tag":[null,"a",null],"none":[]}]"#,
                vec![props(&[("tag", "a")])],
            ),
            (
                "keys are case-sensitive: Body is a property",
                r#"[{"Body":"p","body":"b"}]"#,
                vec![with_props(
                    with_body(Draft::default(), None, "b"),
                    &[("Body", "p")],
                )],
            ),
            (
                "escapes in values and keys",
                r#"[{"k\u0065y":"v\"","\u0062ody":"escaped known key"}]"#,
                vec![with_props(
                    with_body(Draft::default(), None, "escaped known key"),
                    &[("key", "v\"")],
                )],
            ),
            (
                "non-ASCII text",
                r#"[{"subject":"héllo ✓","body":"日本語 😀","é":"ß"}]"#,
                vec![with_props(
                    with_body(Draft::default(), Some("héllo ✓"), "日本語 😀"),
                    &[("é", "ß")],
                )],
            ),
            (
                "several messages in order",
                r#"[{"id":"1"},{"id":"2","body":"b"},{"id":"3"}]"#,
                vec![
                    draft(Some("1"), "", "", None),
                    with_body(draft(Some("2"), "", "", None), None, "b"),
                    draft(Some("3"), "", "", None),
                ],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(decode(input.as_bytes()), Ok(want), "{name}");
        }
        // The escaped body case, checked separately for the exact bytes.
        let d = decode(br#"[{"body":"a\"b\\c\n\t\r\u00e9\ud83d\ude00\/"}]"#).unwrap();
        assert_eq!(d[0].body, "a\"b\\c\n\t\ré😀/".as_bytes());
    }

    #[test]
    fn rejects_malformed_documents() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("empty body", b"", "EOF"),
            (
                "object at top level",
                br#"{"id":"1"}"#,
                "expected a JSON array",
            ),
            ("string at top level", br#""x""#, "expected a JSON array"),
            ("null at top level", b"null", "expected a JSON array"),
            (
                "non-object element",
                br#"["x"]"#,
                "expected a message object",
            ),
            ("array element", b"[[]]", "expected a message object"),
            ("null element", b"[null]", "expected a message object"),
            (
                "number for a known key",
                br#"[{"id":5}]"#,
                "expected a string or null for \"id\"",
            ),
            ("bool for body", br#"[{"body":true}]"#, "for \"body\""),
            ("array for from", br#"[{"from":["a"]}]"#, "for \"from\""),
            (
                "object for subject",
                br#"[{"subject":{}}]"#,
                "for \"subject\"",
            ),
            (
                "duplicate known key",
                br#"[{"id":"1","id":"2"}]"#,
                "duplicate field `id`",
            ),
            (
                "unparsable when",
                br#"[{"when":"2010-01-01T23:18:83Z"}]"#,
                "unparsable \"when\"",
            ),
            ("numeric when", br#"[{"when":1262387933}]"#, "for \"when\""),
            (
                "nested object property",
                br#"[{"p":{"a":"b"}}]"#,
                "objects are not allowed",
            ),
            (
                "object in property array",
                br#"[{"p":["a",{}]}]"#,
                "objects are not allowed",
            ),
            (
                "nested array property",
                br#"[{"p":[["a"]]}]"#,
                "nested arrays",
            ),
            ("trailing comma", br#"[{"id":"1"},]"#, "trailing comma"),
            ("trailing garbage", b"[] x", "trailing characters"),
            ("two arrays", b"[][]", "trailing characters"),
            (
                "unquoted keys (the seed's example)",
                b"[{id: \"1\"}]",
                "key must be a string",
            ),
            ("unterminated", br#"[{"id":"1""#, "EOF"),
            ("invalid UTF-8", b"[{\"body\":\"\xff\"}]", "invalid unicode"),
            ("lone surrogate escape", br#"[{"body":"\ud800"}]"#, "escape"),
            (
                "raw control character in string",
                b"[{\"body\":\"a\x01\"}]",
                "control character",
            ),
            ("XML instead of JSON", b"<messages/>", "expected value"),
        ];
        let mut wrong = Vec::new();
        for &(name, input, want) in cases {
            match decode(input) {
                Err(e) if e.0.contains(want) => {}
                other => wrong.push(format!("{name}: {other:?}, want an error saying {want:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn encodes() {
        let full = with_props(
            with_body(
                draft(Some("24c2"), "sms://838383", "twitter://foo", Some(WHEN)),
                Some("Subject"),
                "Body",
            ),
            &[("custom-property", "foo"), ("another-property", "123")],
        );
        let cases: Vec<(&str, Vec<Message>, &str)> = vec![
            ("empty batch", vec![], "[]"),
            (
                "spec example",
                vec![message(full)],
                r#"[{"id":"24c2","from":"sms://838383","to":"twitter://foo","when":"2010-01-01T23:18:53Z","subject":"Subject","body":"Body","custom-property":"foo","another-property":"123"}]"#,
            ),
            (
                "bare message: every key but subject",
                vec![message(draft(Some("x"), "", "", Some(0)))],
                r#"[{"id":"x","from":"","to":"","when":"1970-01-01T00:00:00Z","body":""}]"#,
            ),
            (
                "empty subject is still a subject; two messages",
                vec![
                    message(with_body(draft(Some("a"), "", "", Some(0)), Some(""), "")),
                    message(draft(Some("b"), "", "", Some(0))),
                ],
                r#"[{"id":"a","from":"","to":"","when":"1970-01-01T00:00:00Z","subject":"","body":""},{"id":"b","from":"","to":"","when":"1970-01-01T00:00:00Z","body":""}]"#,
            ),
            (
                "repeated names become an array at the first occurrence",
                vec![message(with_props(
                    draft(Some("x"), "", "", Some(0)),
                    &[("tag", "a"), ("x", "1"), ("tag", "b"), ("y", "2"), ("tag", "c")],
                ))],
                r#"[{"id":"x","from":"","to":"","when":"1970-01-01T00:00:00Z","body":"","tag":["a","b","c"],"x":"1","y":"2"}]"#,
            ),
            (
                "properties named like known keys are left out",
                vec![message(with_props(
                    draft(Some("x"), "", "", Some(0)),
                    &[("body", "p"), ("p", "1"), ("id", "q"), ("when", "r"), ("Body", "kept")],
                ))],
                r#"[{"id":"x","from":"","to":"","when":"1970-01-01T00:00:00Z","body":"","p":"1","Body":"kept"}]"#,
            ),
            (
                "escaping and non-ASCII",
                vec![message(with_props(
                    with_body(draft(Some("q\"\\"), "\n\t\r", "\u{1}", Some(0)), Some("héllo ✓"), "</script>"),
                    &[("k\"", "v\u{7f}")],
                ))],
                "[{\"id\":\"q\\\"\\\\\",\"from\":\"\\n\\t\\r\",\"to\":\"\\u0001\",\"when\":\"1970-01-01T00:00:00Z\",\"subject\":\"héllo ✓\",\"body\":\"</script>\",\"k\\\"\":\"v\u{7f}\"}]",
            ),
        ];
        for (name, msgs, want) in cases {
            assert_eq!(encoded(&msgs), want, "{name}");
        }
    }

    #[test]
    fn encodes_invalid_utf8_body_lossily() {
        let mut d = draft(Some("x"), "", "", Some(0));
        d.body = b"a\xffb".to_vec();
        let got = encoded(&[message(d)]);
        assert!(got.contains("\"body\":\"a\u{FFFD}b\""), "{got}");
    }

    #[test]
    fn many_properties_group_like_few() {
        // Past LINEAR_GROUPING_MAX the hash-map path must give the same output.
        let names = ["a", "b", "body", "c"];
        let many: Vec<(String, String)> = (0..3 * LINEAR_GROUPING_MAX)
            .map(|i| (names[i % names.len()].to_owned(), i.to_string()))
            .collect();
        let mut out = Vec::new();
        write_properties(&many, &mut out);
        let mut want = Vec::new();
        for name in ["a", "b", "c"] {
            let values: Vec<&str> = many
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            want.push(format!(
                ",\"{name}\":{}",
                serde_json::to_string(&values).unwrap()
            ));
        }
        assert_eq!(String::from_utf8(out).unwrap(), want.concat());
    }

    #[test]
    fn number_property_re_encodes_as_string() {
        let d = decode(br#"[{"id":"m","when":"2010-01-02T01:18:53+02:00","n":123}]"#).unwrap();
        let got = encoded(&[message(d[0].clone())]);
        assert_eq!(
            got,
            r#"[{"id":"m","from":"","to":"","when":"2010-01-01T23:18:53Z","body":"","n":"123"}]"#
        );
    }

    /// Any Unicode text: JSON carries every scalar value.
    fn text() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            2 => prop::sample::select(vec!['"', '\\', '/', '\n', '\t', '\r', '\u{0}', '\u{1f}', '<', '&']),
            1 => any::<char>(),
            2 => prop::char::range('a', 'z'),
        ];
        prop::collection::vec(ch, 0..24).prop_map(String::from_iter)
    }

    /// Property names that are not known keys (those cannot be represented).
    fn prop_name() -> impl Strategy<Value = String> {
        let names = prop::sample::select(vec!["tag", "x", "custom-property", "Body", "ids"]);
        prop_oneof![names.prop_map(str::to_owned), text()]
            .prop_filter("not a known key", |n| !KNOWN_KEYS.contains(&n.as_str()))
    }

    fn json_draft() -> impl Strategy<Value = Draft> {
        (
            text().prop_filter("ids are never empty", |s| !s.is_empty()),
            text(),
            text(),
            -62_167_219_200i64..=253_402_300_799,
            prop::option::of(text()),
            text(),
            prop::collection::vec((prop_name(), text()), 0..=5),
        )
            .prop_map(|(id, from, to, when, subject, body, properties)| Draft {
                id: Some(id),
                from,
                to,
                when: Some(when),
                subject,
                body: body.into_bytes(),
                properties,
                ..Draft::default()
            })
    }

    proptest! {
        #[test]
        fn round_trips(drafts in prop::collection::vec(json_draft(), 0..4)) {
            let msgs: Vec<Message> = drafts.into_iter().map(message).collect();
            let want: Vec<Draft> = msgs
                .iter()
                .map(|m| { let d = m.to_draft(); Draft { properties: round_tripped_properties(&d.properties), ..d } })
                .collect();
            let json = encoded(&msgs);
            prop_assert_eq!(decode(json.as_bytes()), Ok(want), "{}", json);
        }
    }
}
