//! urn:M queries (PROTOCOLS.md 4.2), independent of XMPP framing: the session hands over the
//! parts of `<iq type='T' id='ID' message='M'><NAME xmlns='urn:M' method='V'>BASE64</NAME></iq>`
//! and gets back what to answer, plus the texts of the reference's debug log lines.
//!
//! - The handler is `<verb>_<name>`: the verb is `method` when present, else the IQ type;
//!   the name is the child's local name. `get_item`, `set_item`, `get_user`, `set_user`,
//!   `get_schema` exist; everything else (`branch` included) is `feature-not-implemented`.
//! - The text is base64 (RFC 4648, standard alphabet, padding required; whitespace around it
//!   is ignored) of a UTF-8 command; empty text is the empty command.
//! - A result is base64 (with padding) of the result JSON, written as Python's
//!   `json.dumps(v, sort_keys=True)` (`store::pyjson`); a schema result also has `match`.
//! - Errors map to `(TYPE, COND, DETAIL)` per the table of 4.2; the session writes them as
//!   `<error type='TYPE'><COND …/><text …>DETAIL</text></error>` (escaping DETAIL).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::store::{self, Publish, Store, StoreError};

/// One urn:M request, as the session parsed it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The child element's local name: `item`, `user`, `schema`, …
    pub name: &'a str,
    /// The child's `method` attribute, if any.
    pub method: Option<&'a str>,
    /// The IQ `type`: `get` or `set`.
    pub iq_type: &'a str,
    /// The child's text (base64), XML entities already decoded.
    pub text: &'a str,
    /// The IQ's `message` attribute: the commit message of a `set`.
    pub message: Option<&'a str>,
    /// The authenticated user (the JID's local part): the author of a change.
    pub user: &'a str,
}

impl Request<'_> {
    /// `method` if present, else the IQ type.
    pub fn verb(&self) -> &str {
        self.method.unwrap_or(self.iq_type)
    }

    /// The handler name, `<verb>_<name>`.
    pub fn handler(&self) -> String {
        format!("{}_{}", self.verb(), self.name)
    }
}

/// The `type` of a stanza error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Modify,
    Cancel,
    Auth,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Modify => "modify",
            ErrorType::Cancel => "cancel",
            ErrorType::Auth => "auth",
        }
    }
}

/// A urn:M stanza error: `<error type='TYPE'><COND/><text>DETAIL</text></error>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrnError {
    pub kind: ErrorType,
    /// The condition element's name (`bad-request`, `feature-not-implemented`,
    /// `undefined-condition`, `forbidden`), in `urn:ietf:params:xml:ns:xmpp-stanzas`.
    pub condition: &'static str,
    /// The text, unescaped; `None`: no `<text/>` (forbidden).
    pub detail: Option<String>,
}

impl UrnError {
    fn bad_request(detail: impl Into<String>) -> UrnError {
        UrnError {
            kind: ErrorType::Modify,
            condition: "bad-request",
            detail: Some(detail.into()),
        }
    }

    fn not_implemented(handler: String) -> UrnError {
        UrnError {
            kind: ErrorType::Cancel,
            condition: "feature-not-implemented",
            detail: Some(handler),
        }
    }
}

impl From<StoreError> for UrnError {
    fn from(e: StoreError) -> UrnError {
        match e {
            StoreError::BadRequest(d) => UrnError::bad_request(d),
            StoreError::Failed(d) => UrnError {
                kind: ErrorType::Cancel,
                condition: "undefined-condition",
                detail: Some(d),
            },
            StoreError::Forbidden => UrnError {
                kind: ErrorType::Auth,
                condition: "forbidden",
                detail: None,
            },
        }
    }
}

/// A urn:M result: `<NAME xmlns='urn:M' match='MD5'>BASE64</NAME>` in an IQ result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrnResult {
    /// The child's name: the request's.
    pub name: String,
    /// Base64 (with padding) of the result JSON.
    pub base64: String,
    /// The result JSON itself (what the `RESULT` log line shows).
    pub json: String,
    /// `get_schema` only: the lowercase hex MD5 of the JSON bytes.
    pub match_md5: Option<String>,
}

/// What to answer, and the texts of the debug lines `REQUEST (VERB/ID) 'COMMAND'` and
/// `RESULT (VERB/ID) 'RESPONSE'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub answer: Result<UrnResult, UrnError>,
    /// The verb of the log lines (`get`, `set`).
    pub verb: String,
    /// The decoded command (or the raw text when it was not base64 of UTF-8).
    pub command: String,
    /// The result JSON, or the error as `TYPE/COND: DETAIL`.
    pub response: String,
}

impl Outcome {
    /// `REQUEST (get/ID) 'COMMAND'`
    pub fn request_line(&self, id: &str) -> String {
        format!("REQUEST ({}/{}) {}", self.verb, id, py_repr(&self.command))
    }

    /// `RESULT (get/ID) 'RESPONSE'`
    pub fn result_line(&self, id: &str) -> String {
        format!("RESULT ({}/{}) {}", self.verb, id, py_repr(&self.response))
    }
}

/// A string quoted for a log line the way Python's `repr` quotes it: single quotes, or double
/// quotes when the text holds a single quote and no double quote; `\\`, the quote, `\n`,
/// `\r`, `\t` and `\xNN` escaped; other characters as they are.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Decodes the text of a urn:M child: standard base64 with padding, of UTF-8.
pub fn decode_command(text: &str) -> Result<String, UrnError> {
    let bytes = STANDARD
        .decode(text.trim_matches(|c: char| c.is_ascii_whitespace()))
        .map_err(|e| UrnError::bad_request(format!("the text is not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| UrnError::bad_request("the command is not UTF-8"))
}

/// Answers one urn:M request against the store; a committed `set` is published through
/// `out` (the hub). Never panics on client data.
pub fn handle(store: &Store, out: &dyn Publish, req: &Request<'_>) -> Outcome {
    let verb = req.verb().to_string();
    let command = match decode_command(req.text) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                response: describe(&e),
                answer: Err(e),
                verb,
                command: req.text.to_string(),
            }
        }
    };
    let answer = dispatch(store, out, req, &command);
    let response = match &answer {
        Ok(r) => r.json.clone(),
        Err(e) => describe(e),
    };
    Outcome {
        answer,
        verb,
        command,
        response,
    }
}

fn describe(e: &UrnError) -> String {
    match &e.detail {
        Some(d) => format!("{}/{}: {}", e.kind.as_str(), e.condition, d),
        None => format!("{}/{}", e.kind.as_str(), e.condition),
    }
}

fn dispatch(
    store: &Store,
    out: &dyn Publish,
    req: &Request<'_>,
    command: &str,
) -> Result<UrnResult, UrnError> {
    let handler = req.handler();
    let (json, match_md5) = match handler.as_str() {
        "get_item" => (store.get_item(command)?, None),
        "set_item" => (store.set_item(req.user, command, req.message, out)?, None),
        "get_user" => (store.get_user(command)?, None),
        "set_user" => (store.set_user(req.user, command, req.message, out)?, None),
        "get_schema" => {
            let a = store::get_schema(command)?;
            (a.json, Some(a.md5))
        }
        _ => return Err(UrnError::not_implemented(handler)),
    };
    Ok(UrnResult {
        name: req.name.to_string(),
        base64: STANDARD.encode(json.as_bytes()),
        json,
        match_md5,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl Publish for Nowhere {
        fn publish(&self, _: &str, _: store::Change<'_>) -> Result<(), String> {
            Ok(())
        }
    }

    fn req<'a>(name: &'a str, iq_type: &'a str, text: &'a str) -> Request<'a> {
        Request {
            name,
            method: None,
            iq_type,
            text,
            message: None,
            user: "admin",
        }
    }

    #[test]
    fn get_root_and_log_lines() {
        let s = Store::new([("admin", "pw")]);
        let o = handle(&s, &Nowhere, &req("item", "get", "Lw=="));
        let r = o.answer.clone().unwrap();
        assert_eq!(r.name, "item");
        assert_eq!(STANDARD.decode(&r.base64).unwrap(), r.json.as_bytes());
        assert!(r.json.starts_with(r#"[{"_key": ""#));
        assert!(r.json.contains(r#""_path": "/", "contents": [], "#));
        assert_eq!(o.request_line("n1"), "REQUEST (get/n1) '/'");
        assert_eq!(o.result_line("n1"), format!("RESULT (get/n1) '{}'", r.json));
    }

    #[test]
    fn verbs_and_errors() {
        let s = Store::new([("admin", "pw")]);
        let mut r = req("item", "get", "Kg==");
        r.method = Some("set");
        // method wins over the IQ type: set_item with "*" is not JSON.
        let e = handle(&s, &Nowhere, &r).answer.unwrap_err();
        assert_eq!((e.kind, e.condition), (ErrorType::Modify, "bad-request"));
        for (name, t, handler) in [
            ("branch", "get", "get_branch"),
            ("branch", "set", "set_branch"),
            ("foo", "get", "get_foo"),
            ("schema", "set", "set_schema"),
        ] {
            let o = handle(&s, &Nowhere, &req(name, t, ""));
            assert_eq!(
                o.answer,
                Err(UrnError::not_implemented(handler.into())),
                "{handler}"
            );
            assert_eq!(
                o.result_line("x"),
                format!("RESULT ({t}/x) 'cancel/feature-not-implemented: {handler}'")
            );
        }
        for bad in [
            "Kg",
            "Kg=",
            "K===",
            "*",
            "Kg==Kg==",
            "SGVsbG8gV29ybGQ",
            "S\nGk=",
        ] {
            let o = handle(&s, &Nowhere, &req("item", "get", bad));
            let e = o.answer.unwrap_err();
            assert_eq!(
                (e.kind, e.condition),
                (ErrorType::Modify, "bad-request"),
                "{bad}"
            );
            assert_eq!(o.command, bad);
        }
        // Not UTF-8.
        let e = handle(&s, &Nowhere, &req("item", "get", "/w=="))
            .answer
            .unwrap_err();
        assert_eq!(e.detail.as_deref(), Some("the command is not UTF-8"));
        // Whitespace around the text is fine.
        assert!(handle(&s, &Nowhere, &req("item", "get", "\n  Lw==\n"))
            .answer
            .is_ok());
    }

    #[test]
    fn repr_quotes() {
        assert_eq!(py_repr("a'b\\c\nd\u{1}\u{e9}\""), r#"'a\'b\\c\nd\x01é"'"#);
        assert_eq!(py_repr("<iq type='get'/>"), r#""<iq type='get'/>""#);
        assert_eq!(py_repr("plain"), "'plain'");
    }
}
