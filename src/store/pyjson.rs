//! JSON written byte for byte as Python's `json.dumps(value, sort_keys=True)` writes it
//! (PROTOCOLS.md 4.2): the form every urn:M result, schema and store publication takes.
//!
//! - object keys sorted by code point (Rust's `str` order is UTF-8 byte order, which is
//!   code point order), whatever order the `Map` keeps;
//! - separators `", "` between items and `": "` after a key;
//! - every character outside ASCII ` `..`~` (so DEL too) as `\uXXXX`, lowercase hex, a surrogate pair above U+FFFF;
//!   `"` `\` and the controls `\b \f \n \r \t` as their short escapes, other controls as
//!   `\u00XX` (serde_json's own escapes, which match Python's);
//! - floats as Python's `repr` (`1.0`, `1e-05`, `1e+16`), integers as they are;
//! - no trailing newline.
//!
//! serde_json does the writing; this module only supplies a `Formatter` and a key-sorting
//! view of a `Value`.

use std::io::{self, Write};

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::ser::Formatter;
use serde_json::Value;

/// `value` as `json.dumps(value, sort_keys=True)` writes it.
pub fn dumps(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Writing into a Vec cannot fail, and a `Value` always serializes (its floats are finite).
    if Sorted(value).serialize(&mut ser).is_err() {
        return String::from("null");
    }
    // The formatter writes ASCII only.
    String::from_utf8(out).unwrap_or_default()
}

/// A `Value` that serializes its objects with their keys sorted, whatever the `Map` order.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, &Sorted(v))?;
                }
                m.end()
            }
            other => other.serialize(s),
        }
    }
}

/// serde_json's compact writer with Python's separators, ASCII-only strings and float repr.
struct PyFormatter;

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    /// The unescaped runs of a string: printable ASCII as is, DEL and everything beyond ASCII
    /// as `\uXXXX` UTF-16 units (Python's `ensure_ascii`).
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(py_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust finds the same ones),
/// in fixed notation when the decimal exponent is in -5 < e < 16, else `d.ddde±XX`.
fn py_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits as `-d.ddde-N`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-5 < exp) && (exp < 16) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_bytes_table() {
        // Expected bytes are what CPython 3 prints for json.dumps(v, sort_keys=True).
        let table: Vec<(Value, &str)> = vec![
            (json!(null), "null"),
            (json!(true), "true"),
            (json!([]), "[]"),
            (json!({}), "{}"),
            (json!([1, 2, 3]), "[1, 2, 3]"),
            (
                json!({"b": 1, "a": [true, null]}),
                r#"{"a": [true, null], "b": 1}"#,
            ),
            (json!({"a": {"d": 1, "c": 2}}), r#"{"a": {"c": 2, "d": 1}}"#),
            // Code point order: uppercase before lowercase, '_' between them, non-ASCII last.
            (
                json!({"b": 0, "_key": 0, "B": 0, "é": 0, "a": 0}),
                r#"{"B": 0, "_key": 0, "a": 0, "b": 0, "\u00e9": 0}"#,
            ),
            (json!("quote\" back\\ slash/"), r#""quote\" back\\ slash/""#),
            (json!("a\nb\rc\td\u{8}e\u{c}f"), r#""a\nb\rc\td\be\ff""#),
            (
                json!("\u{0}\u{1}\u{1f}\u{7f}"),
                r#""\u0000\u0001\u001f\u007f""#,
            ),
            (json!("caf\u{e9} \u{2603}"), r#""caf\u00e9 \u2603""#),
            (json!("\u{1F600}"), r#""\ud83d\ude00""#),
            (json!("\u{10FFFF}"), r#""\udbff\udfff""#),
            (json!(-0), "0"),
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(1.0), "1.0"),
            (json!(-2.5), "-2.5"),
            (json!(0.1), "0.1"),
            (json!(1e-4), "0.0001"),
            (json!(1e-5), "1e-05"),
            (json!(1.5e-7), "1.5e-07"),
            (json!(123456789012345.6), "123456789012345.6"),
            (json!(1e15), "1000000000000000.0"),
            (json!(1e16), "1e+16"),
            (json!(1.2345e100), "1.2345e+100"),
            (json!(-0.0), "-0.0"),
            (json!(5e-324), "5e-324"),
            (json!(1e22), "1e+22"),
            (json!(12345678901234567.0), "1.2345678901234568e+16"),
            (json!(0.000123), "0.000123"),
        ];
        for (v, want) in table {
            assert_eq!(dumps(&v), want, "{v:?}");
        }
    }

    proptest::proptest! {
        /// Any string: the output is printable ASCII and reads back as the same string.
        #[test]
        fn strings_round_trip_as_ascii(text in "\\PC*|[\\x00-\\x7f]*|[\\u{10000}-\\u{10ffff}]*") {
            let out = dumps(&Value::String(text.clone()));
            proptest::prop_assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)));
            proptest::prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        }

        /// Any float: Python's repr reads back as the same float.
        #[test]
        fn floats_round_trip(x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let out = py_float_repr(x);
            proptest::prop_assert_eq!(out.parse::<f64>().unwrap(), x);
            proptest::prop_assert!(out.contains('.') || out.contains('e'));
        }
    }
}
