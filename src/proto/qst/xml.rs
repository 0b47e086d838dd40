//! The QST XML batch format (PROTOCOLS.md 1.2): a push body to drafts, stored messages to a
//! pull reply, for v2 (`<subject>`/`<body>`) and v1 (`<text>`) clients.
//!
//! ```text
//! <?xml version="1.0" encoding="UTF-8"?>
//! <messages>
//!   <message id=".." from=".." to=".." when="..">
//!     <subject>..</subject> <body>..</body> | <text>..</text>
//!     <property name=".." value=".."/> ...
//!   </message> ...
//! </messages>
//! ```
//!
//! Decoding is strict, because a push is all or nothing and a reason is better than a guess:
//! the document must be well-formed UTF-8 XML 1.0 whose root is `<messages>`, holding only
//! `<message>` elements, each holding only `<subject>`, `<body>`, `<text>` (at most one of
//! each, and not both `<body>` and `<text>`) and `<property>`. Unknown elements, text outside
//! those elements, a DOCTYPE, entities other than the five predefined ones and characters XML
//! 1.0 cannot carry are errors. Unknown *attributes* are ignored (namespace declarations, a
//! gateway's extra fields). Comments and processing instructions are ignored everywhere.
//! Text inside `<subject>`, `<body>` and `<text>` is kept exactly, whitespace included.
//!
//! Encoding always writes well-formed XML 1.0: characters it cannot carry (C0 controls other
//! than tab, line feed and carriage return; U+FFFE; U+FFFF) and invalid UTF-8 in a body become
//! U+FFFD. Carriage returns are written as `&#13;` (text) and tab, line feed and carriage
//! return as `&#9;`, `&#10;`, `&#13;` (attributes), so no XML parser normalises them away.

use std::borrow::Cow;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;

use crate::proto::xmlref::{self, is_xml_char, RefError};

use super::CodecError;
use crate::hub::{Draft, Message};
use crate::time;

/// Where the decoder is in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the root element.
    Prolog,
    /// Inside `<messages>`.
    Messages,
    /// Inside `<message>`.
    Message,
    /// Inside `<subject>`, `<body>` or `<text>`.
    Field(Field),
    /// Inside a `<property ...>` written with an end tag.
    Property,
    /// After the root element.
    Epilog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Subject,
    Body,
    Text,
}

/// Decodes an XML push body into drafts, in document order.
///
/// Returns an empty vector for `<messages/>`. Any deviation from the format described in the
/// module doc is an `Err` whose text says what was wrong, fit for a `400` body; no partial
/// result is returned. A `when` that `time::parse_datetime` rejects is an error; an empty `id`
/// or `when` attribute counts as absent (the hub assigns one), so that `id=""` can never make
/// two different messages look like one retried push.
pub fn decode(body: &[u8]) -> Result<Vec<Draft>, CodecError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|e| {
        CodecError(format!(
            "XML is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    if let Some(at) = find_illegal_char(text) {
        return Err(CodecError(format!(
            "character not allowed in XML at byte {at}"
        )));
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;

    let mut drafts = Vec::new();
    let mut phase = Phase::Prolog;
    let mut draft = Draft::default();
    let mut has_body = false;
    let mut buf = String::new();
    let mut first = true;
    loop {
        let event = reader.read_event().map_err(|e| {
            CodecError(format!(
                "malformed XML at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        let at_start = std::mem::replace(&mut first, false);
        phase = match (phase, event) {
            (_, Event::Comment(_) | Event::PI(_)) => phase,
            (Phase::Prolog, Event::Decl(d)) if at_start => {
                check_decl(&d)?;
                phase
            }
            (_, Event::Decl(_)) => return Err(CodecError::new("misplaced XML declaration")),
            (_, Event::DocType(_)) => return Err(CodecError::new("DOCTYPE is not allowed")),

            (Phase::Field(_), Event::Text(t)) => {
                buf.push_str(&t.xml10_content());
                phase
            }
            (Phase::Field(_), Event::CData(t)) => {
                buf.push_str(&t.xml10_content());
                phase
            }
            (Phase::Field(_), Event::GeneralRef(r)) => {
                push_reference(&r, &mut buf)?;
                phase
            }
            (_, Event::Text(t)) if is_xml_space(&t) => phase,
            (_, Event::Text(_) | Event::CData(_) | Event::GeneralRef(_)) => {
                return Err(CodecError(format!(
                    "text outside elements, {}",
                    where_(phase)
                )));
            }

            (Phase::Prolog, Event::Start(e)) if e.name().as_ref() == "messages" => Phase::Messages,
            (Phase::Prolog, Event::Empty(e)) if e.name().as_ref() == "messages" => Phase::Epilog,
            (Phase::Prolog, Event::Start(e) | Event::Empty(e)) => {
                return Err(CodecError(format!(
                    "root element must be <messages>, not <{}>",
                    name(&e)
                )));
            }

            (Phase::Messages, Event::Start(e)) if e.name().as_ref() == "message" => {
                message_attributes(&e, &mut draft)?;
                Phase::Message
            }
            (Phase::Messages, Event::Empty(e)) if e.name().as_ref() == "message" => {
                message_attributes(&e, &mut draft)?;
                drafts.push(std::mem::take(&mut draft));
                phase
            }
            (Phase::Messages, Event::End(_)) => Phase::Epilog,

            (Phase::Message, Event::Empty(e)) if e.name().as_ref() == "property" => {
                draft.properties.push(property(&e)?);
                phase
            }
            (Phase::Message, Event::Start(e)) if e.name().as_ref() == "property" => {
                draft.properties.push(property(&e)?);
                Phase::Property
            }
            (Phase::Message, Event::Start(e)) => {
                let field = field_start(&e, &draft, has_body)?;
                buf.clear();
                Phase::Field(field)
            }
            (Phase::Message, Event::Empty(e)) => {
                let field = field_start(&e, &draft, has_body)?;
                buf.clear();
                finish_field(field, &mut buf, &mut draft, &mut has_body);
                phase
            }
            (Phase::Message, Event::End(_)) => {
                drafts.push(std::mem::take(&mut draft));
                has_body = false;
                Phase::Messages
            }
            (Phase::Field(field), Event::End(_)) => {
                finish_field(field, &mut buf, &mut draft, &mut has_body);
                Phase::Message
            }
            (Phase::Property, Event::End(_)) => Phase::Message,

            (Phase::Epilog, Event::Eof) => return Ok(drafts),
            (Phase::Prolog, Event::Eof) => {
                return Err(CodecError::new("no <messages> element"));
            }
            (_, Event::Eof) => {
                return Err(CodecError(format!(
                    "unexpected end of document {}",
                    where_(phase)
                )));
            }
            (Phase::Epilog, Event::Start(e) | Event::Empty(e)) => {
                return Err(CodecError(format!("<{}> after the root element", name(&e))));
            }
            (_, Event::Start(e) | Event::Empty(e)) => {
                return Err(CodecError(format!(
                    "unexpected element <{}> {}",
                    name(&e),
                    where_(phase)
                )));
            }
            // Only reachable with an end tag the reader already matched to an open start tag,
            // which every phase above handles; kept total rather than panicking.
            (_, Event::End(_)) => {
                return Err(CodecError(format!("unexpected end tag {}", where_(phase))));
            }
        };
    }
}

/// Appends the encoded batch to `out`: the XML declaration, then `<messages>` holding one
/// `<message>` per entry of `msgs`, in order; an empty batch is `<messages/>`.
///
/// Every `<message>` carries `id`, `from`, `to` and `when` (UTC `YYYY-MM-DDTHH:MM:SSZ`), empty
/// when unset, because real gateways require them. v2 (`v1 == false`) writes `<subject>` when
/// the message has one and always `<body>`; v1 always writes `<text>`: `subject - body` when
/// both are non-empty, else whichever is non-empty, else nothing. Properties follow as
/// `<property name=".." value=".."/>` in order. Never fails; allocates only when `out` grows.
pub fn encode(msgs: &[&Message], v1: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    if msgs.is_empty() {
        out.extend_from_slice(b"<messages/>\n");
        return;
    }
    out.extend_from_slice(b"<messages>\n");
    let mut when = String::with_capacity(20);
    for m in msgs {
        out.extend_from_slice(b"<message id=\"");
        escape(m.id.as_bytes(), true, out);
        out.extend_from_slice(b"\" from=\"");
        escape(m.from.as_bytes(), true, out);
        out.extend_from_slice(b"\" to=\"");
        escape(m.to.as_bytes(), true, out);
        out.extend_from_slice(b"\" when=\"");
        when.clear();
        time::format_utc(m.when, &mut when);
        out.extend_from_slice(when.as_bytes());
        out.extend_from_slice(b"\">");
        let subject = m.subject.as_deref();
        if v1 {
            out.extend_from_slice(b"<text>");
            let subject = subject.filter(|s| !s.is_empty());
            if let Some(s) = subject {
                escape(s.as_bytes(), false, out);
                if !m.body.is_empty() {
                    out.extend_from_slice(b" - ");
                }
            }
            escape(&m.body, false, out);
            out.extend_from_slice(b"</text>");
        } else {
            if let Some(s) = subject {
                out.extend_from_slice(b"<subject>");
                escape(s.as_bytes(), false, out);
                out.extend_from_slice(b"</subject>");
            }
            out.extend_from_slice(b"<body>");
            escape(&m.body, false, out);
            out.extend_from_slice(b"</body>");
        }
        for (name, value) in &m.properties {
            out.extend_from_slice(b"<property name=\"");
            escape(name.as_bytes(), true, out);
            out.extend_from_slice(b"\" value=\"");
            escape(value.as_bytes(), true, out);
            out.extend_from_slice(b"\"/>");
        }
        out.extend_from_slice(b"</message>\n");
    }
    out.extend_from_slice(b"</messages>\n");
}

/// U+FFFD, written for whatever XML 1.0 cannot carry.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Appends `text` escaped for XML character data (`attr == false`) or a double-quoted
/// attribute value (`attr == true`). `text` is meant to be UTF-8; invalid sequences and
/// characters outside XML 1.0's `Char` production are written as U+FFFD.
fn escape(text: &[u8], attr: bool, out: &mut Vec<u8>) {
    for chunk in text.utf8_chunks() {
        escape_str(chunk.valid().as_bytes(), attr, out);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
}

/// `escape` for valid UTF-8 bytes.
fn escape_str(b: &[u8], attr: bool, out: &mut Vec<u8>) {
    let mut done = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (replacement, len): (&[u8], usize) = match c {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'\r' => (b"&#13;", 1),
            b'"' if attr => (b"&quot;", 1),
            b'\n' if attr => (b"&#10;", 1),
            b'\t' if attr => (b"&#9;", 1),
            b'\n' | b'\t' => {
                i += 1;
                continue;
            }
            0..=0x1f => (REPLACEMENT, 1),
            // U+FFFE and U+FFFF are EF BF BE and EF BF BF; valid UTF-8 guarantees the two
            // continuation bytes after EF.
            0xef if b[i + 1] == 0xbf && b[i + 2] >= 0xbe => (REPLACEMENT, 3),
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[done..i]);
        out.extend_from_slice(replacement);
        i += len;
        done = i;
    }
    out.extend_from_slice(&b[done..]);
}

/// The byte offset of the first character XML 1.0 does not allow (`Char` production): C0
/// controls other than tab, line feed and carriage return, U+FFFE and U+FFFF.
fn find_illegal_char(s: &str) -> Option<usize> {
    /// Bytes tested at once: a branch-free pass over a chunk finds no candidate byte (C0
    /// control or the lead byte 0xEF) in almost all text, and only such a chunk is examined.
    const CHUNK: usize = 32;
    let b = s.as_bytes();
    let illegal = |i: usize| {
        let c = b[i];
        (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'))
            || (c == 0xef && b[i + 1] == 0xbf && b[i + 2] >= 0xbe)
    };
    for (n, chunk) in b.chunks(CHUNK).enumerate() {
        let candidate = chunk
            .iter()
            .fold(false, |acc, &c| acc | (c < 0x20) | (c == 0xef));
        if candidate {
            let start = n * CHUNK;
            if let Some(i) = (start..start + chunk.len()).find(|&i| illegal(i)) {
                return Some(i);
            }
        }
    }
    None
}

/// Whether XML 1.0 allows `c` (the `Char` production; surrogates cannot occur in a `char`).
fn is_xml_space(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Accepts `<?xml version="1.0" ...?>` with no encoding or UTF-8; `standalone` is ignored.
fn check_decl(d: &BytesDecl<'_>) -> Result<(), CodecError> {
    let version = d
        .version()
        .map_err(|e| CodecError(format!("bad XML declaration: {e}")))?;
    if version != "1.0" {
        return Err(CodecError(format!(
            "unsupported XML version {version:?} (only 1.0)"
        )));
    }
    match d.encoding() {
        None => Ok(()),
        Some(Ok(enc)) if enc.eq_ignore_ascii_case("utf-8") => Ok(()),
        Some(Ok(enc)) => Err(CodecError(format!(
            "unsupported encoding {enc:?} (only UTF-8)"
        ))),
        Some(Err(e)) => Err(CodecError(format!("bad XML declaration: {e}"))),
    }
}

/// Appends what a reference in character data stands for: a character reference, or one of
/// the five predefined entities. Anything else is an error (no DTD can define more).
fn push_reference(r: &BytesRef<'_>, out: &mut String) -> Result<(), CodecError> {
    match xmlref::resolve(r) {
        Ok(c) => {
            out.push(c);
            Ok(())
        }
        Err(RefError::UnknownEntity) => Err(CodecError(format!("unknown entity &{};", clip(r)))),
        Err(RefError::BadCharacter) if r.resolve_char_ref().is_err() => {
            Err(CodecError(format!("bad character reference &{};", clip(r))))
        }
        Err(RefError::BadCharacter) => Err(CodecError(format!(
            "character reference &{}; not allowed in XML",
            clip(r)
        ))),
    }
}

/// An attribute's value with references resolved and XML's attribute-value normalisation
/// applied (literal tab, line feed and carriage return become spaces; their character
/// references stay what they say).
fn attribute_value<'a>(a: &Attribute<'a>) -> Result<Cow<'a, str>, CodecError> {
    let bad = || CodecError(format!("bad value for attribute {}", clip(a.key.as_ref())));
    if a.value.contains('<') {
        return Err(bad());
    }
    let value = a
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|_| bad())?;
    if let Cow::Owned(s) = &value {
        if !s.chars().all(is_xml_char) {
            return Err(bad());
        }
    }
    Ok(value)
}

/// Reads `id`, `from`, `to` and `when` of a `<message>` into `draft`.
fn message_attributes(e: &BytesStart<'_>, draft: &mut Draft) -> Result<(), CodecError> {
    for a in e.attributes() {
        let a = a.map_err(|e| CodecError(format!("bad attribute in <message>: {e}")))?;
        let key = a.key.as_ref();
        if !matches!(key, "id" | "from" | "to" | "when") {
            continue;
        }
        let value = attribute_value(&a)?;
        match key {
            "id" if value.is_empty() => draft.id = None,
            "id" => draft.id = Some(value.into_owned()),
            "from" => draft.from = value.into_owned(),
            "to" => draft.to = value.into_owned(),
            _ if value.is_empty() => draft.when = None,
            _ => {
                let when = time::parse_datetime(&value)
                    .ok_or_else(|| CodecError(format!("unparsable when={:?}", clip(&value))))?;
                draft.when = Some(when);
            }
        }
    }
    Ok(())
}

/// A `<property name=".." value=".."/>`; both attributes are required.
fn property(e: &BytesStart<'_>) -> Result<(String, String), CodecError> {
    let (mut name, mut value) = (None, None);
    for a in e.attributes() {
        let a = a.map_err(|e| CodecError(format!("bad attribute in <property>: {e}")))?;
        match a.key.as_ref() {
            "name" => name = Some(attribute_value(&a)?.into_owned()),
            "value" => value = Some(attribute_value(&a)?.into_owned()),
            _ => {}
        }
    }
    match (name, value) {
        (Some(n), Some(v)) => Ok((n, v)),
        (None, _) => Err(CodecError::new("<property> without a name attribute")),
        (_, None) => Err(CodecError::new("<property> without a value attribute")),
    }
}

/// Which field a start tag inside `<message>` opens; an error for anything unknown or
/// repeated.
fn field_start(e: &BytesStart<'_>, draft: &Draft, has_body: bool) -> Result<Field, CodecError> {
    let field = match e.name().as_ref() {
        "subject" if draft.subject.is_some() => return Err(CodecError::new("two <subject>")),
        "subject" => Field::Subject,
        "body" => Field::Body,
        "text" => Field::Text,
        _ => {
            return Err(CodecError(format!(
                "unknown element <{}> inside <message>",
                name(e)
            )))
        }
    };
    if field != Field::Subject && has_body {
        return Err(CodecError::new(
            "more than one <body> or <text> in a <message>",
        ));
    }
    Ok(field)
}

/// Moves the collected text of `field` into `draft`.
fn finish_field(field: Field, buf: &mut String, draft: &mut Draft, has_body: &mut bool) {
    let text = std::mem::take(buf);
    match field {
        Field::Subject => draft.subject = Some(text),
        Field::Body | Field::Text => {
            draft.body = text.into_bytes();
            *has_body = true;
        }
    }
}

/// Where the decoder is, for error messages.
fn where_(phase: Phase) -> &'static str {
    match phase {
        Phase::Prolog => "before the root element",
        Phase::Messages => "inside <messages>",
        Phase::Message => "inside <message>",
        Phase::Field(Field::Subject) => "inside <subject>",
        Phase::Field(Field::Body) => "inside <body>",
        Phase::Field(Field::Text) => "inside <text>",
        Phase::Property => "inside <property>",
        Phase::Epilog => "after the root element",
    }
}

/// An element's name, clipped for an error message.
fn name<'a>(e: &'a BytesStart<'_>) -> &'a str {
    clip(e.name().0)
}

/// At most 40 bytes of `s` (on a character boundary), so an error stays short.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    fn encoded(msgs: &[Message], v1: bool) -> String {
        let refs: Vec<&Message> = msgs.iter().collect();
        let mut out = Vec::new();
        encode(&refs, v1, &mut out);
        String::from_utf8(out).expect("encoder writes UTF-8")
    }

    #[test]
    fn decodes_valid_documents() {
        let gateway = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><messages><message id="mo-1" to="sms://5550001" from="sms://5550002" when="2010-01-01T23:18:53Z"><text>hello &amp; bye</text></message></messages>"#;
        let cases: Vec<(&str, &str, Vec<Draft>)> = vec![
            (
                "InSTEDD gateway push",
                gateway,
                vec![with_body(
                    draft(Some("mo-1"), "sms://5550002", "sms://5550001", Some(WHEN)),
                    None,
                    "hello & bye",
                )],
            ),
            ("empty element root", "<messages/>", vec![]),
            ("empty root with end tag", "<messages></messages>", vec![]),
            (
                "declaration, comments, whitespace, PI",
                "<?xml version='1.0'?>\n<!-- c --><?app x?>\n<messages>\n  <!-- c -->\n</messages>\n<!-- end -->\n",
                vec![],
            ),
            ("UTF-8 BOM", "\u{FEFF}<messages/>", vec![]),
            (
                "v2 with subject, body and properties",
                r#"<messages>
  <message id="24c2" from="sms://838383" to="twitter://foo" when="2010-01-01T23:18:53Z">
    <subject>Subject</subject>
    <body>Body</body>
    <property name="custom-property" value="foo"/>
    <property name="another-property" value="123"/>
  </message>
</messages>"#,
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
                r#"<messages><message when="2010-01-02T01:18:53+02:00"/></messages>"#,
                vec![draft(None, "", "", Some(WHEN))],
            ),
            (
                "no attributes at all (Crystal sends no when)",
                "<messages><message><body>x</body></message></messages>",
                vec![with_body(Draft::default(), None, "x")],
            ),
            (
                "empty id and when count as absent",
                r#"<messages><message id="" when="" from="" to=""/></messages>"#,
                vec![Draft::default()],
            ),
            (
                "unknown attributes ignored",
                r#"<messages xmlns="urn:x"><message id="a" thread="t"/></messages>"#,
                vec![draft(Some("a"), "", "", None)],
            ),
            (
                "repeated properties kept in order",
                r#"<messages><message><property name="tag" value="a"/><property name="x" value="1"/><property name="tag" value="b"/></message></messages>"#,
                vec![with_props(Draft::default(), &[("tag", "a"), ("x", "1"), ("tag", "b")])],
            ),
            (
                "property with end tag",
                r#"<messages><message><property name="n" value="v"> <!-- c --> </property></message></messages>"#,
                vec![with_props(Draft::default(), &[("n", "v")])],
            ),
            (
                "empty property value and name",
                r#"<messages><message><property name="" value=""/></message></messages>"#,
                vec![with_props(Draft::default(), &[("", "")])],
            ),
            (
                "CDATA, mixed with text and references",
                "<messages><message><body>a<![CDATA[<b>&amp;</b>]]>&lt;c&gt;</body></message></messages>",
                vec![with_body(Draft::default(), None, "a<b>&amp;</b><c>")],
            ),
            (
                "all predefined entities and numeric references",
                "<messages><message><body>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;&#x2713;&#128512;</body></message></messages>",
                vec![with_body(Draft::default(), None, "&<>\"'AB✓😀")],
            ),
            (
                "entities in attributes",
                r#"<messages><message id="a&amp;b&lt;&#34;" from="&#x9;x&#10;"/></messages>"#,
                vec![draft(Some("a&b<\""), "\tx\n", "", None)],
            ),
            (
                "literal whitespace in attributes is normalised to spaces",
                "<messages><message from=\"a\tb\nc\"/></messages>",
                vec![draft(None, "a b c", "", None)],
            ),
            (
                "non-ASCII text",
                r#"<messages><message from="sms://ü"><subject>héllo ✓</subject><body>日本語 😀</body><property name="é" value="ß"/></message></messages>"#,
                vec![with_props(
                    with_body(draft(None, "sms://ü", "", None), Some("héllo ✓"), "日本語 😀"),
                    &[("é", "ß")],
                )],
            ),
            (
                "whitespace inside text kept, CRLF normalised, &#13; kept",
                "<messages><message><body>\r\n  a\r\n\tb&#13;\n</body></message></messages>",
                vec![with_body(Draft::default(), None, "\n  a\n\tb\r\n")],
            ),
            (
                "empty subject and body elements",
                "<messages><message><subject/><body></body></message></messages>",
                vec![with_body(Draft::default(), Some(""), "")],
            ),
            (
                "comment inside body splits nothing",
                "<messages><message><body>a<!-- x -->b</body></message></messages>",
                vec![with_body(Draft::default(), None, "ab")],
            ),
            (
                "v1 text with a subject",
                "<messages><message><subject>s</subject><text>t</text></message></messages>",
                vec![with_body(Draft::default(), Some("s"), "t")],
            ),
            (
                "several messages in order",
                r#"<messages><message id="1"/><message id="2"><body>b</body></message><message id="3"/></messages>"#,
                vec![
                    draft(Some("1"), "", "", None),
                    with_body(draft(Some("2"), "", "", None), None, "b"),
                    draft(Some("3"), "", "", None),
                ],
            ),
            (
                "end tag with trailing space",
                "<messages><message ></message ></messages >",
                vec![Draft::default()],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(decode(input.as_bytes()), Ok(want), "{name}");
        }
    }

    #[test]
    fn rejects_malformed_documents() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("empty body", b"", "no <messages>"),
            ("only whitespace", b" \n", "no <messages>"),
            ("wrong root", b"<message/>", "root element must be <messages>"),
            ("no wrapper", b"<message id='1'></message>", "root element"),
            ("unclosed root", b"<messages>", "unexpected end"),
            ("unclosed message", b"<messages><message>", "unexpected end"),
            ("unclosed body", b"<messages><message><body>x", "unexpected end"),
            ("mismatched end tag", b"<messages><message></messages>", "malformed XML"),
            ("stray end tag", b"<messages/></messages>", "malformed XML"),
            ("two roots", b"<messages/><messages/>", "after the root"),
            ("text before root", b"hi<messages/>", "text outside"),
            ("text after root", b"<messages/>hi", "text outside"),
            ("text in messages", b"<messages>hi</messages>", "text outside"),
            ("text in message", b"<messages><message>hi</message></messages>", "text outside"),
            ("entity in message", b"<messages><message>&amp;</message></messages>", "text outside"),
            ("CDATA in messages", b"<messages><![CDATA[x]]></messages>", "text outside"),
            (
                "text in property",
                b"<messages><message><property name='a' value='b'>x</property></message></messages>",
                "text outside",
            ),
            ("unknown element in messages", b"<messages><msg/></messages>", "unexpected element <msg>"),
            ("unknown element in message", b"<messages><message><foo/></message></messages>", "unknown element <foo>"),
            (
                "nested message",
                b"<messages><message><message/></message></messages>",
                "unknown element <message>",
            ),
            (
                "element inside body",
                b"<messages><message><body><b>x</b></body></message></messages>",
                "unexpected element <b> inside <body>",
            ),
            (
                "element inside property",
                b"<messages><message><property name='a' value='b'><x/></property></message></messages>",
                "unexpected element <x>",
            ),
            (
                "two bodies",
                b"<messages><message><body>a</body><body>b</body></message></messages>",
                "more than one <body>",
            ),
            (
                "body and text",
                b"<messages><message><body>a</body><text>b</text></message></messages>",
                "more than one <body>",
            ),
            (
                "two subjects",
                b"<messages><message><subject/><subject/></message></messages>",
                "two <subject>",
            ),
            (
                "property without name",
                b"<messages><message><property value='b'/></message></messages>",
                "without a name",
            ),
            (
                "property without value",
                b"<messages><message><property name='a'/></message></messages>",
                "without a value",
            ),
            (
                "duplicate attribute",
                b"<messages><message id='1' id='2'/></messages>",
                "bad attribute",
            ),
            ("unquoted attribute", b"<messages><message id=1/></messages>", "bad attribute"),
            ("unknown entity in text", b"<messages><message><body>&nbsp;</body></message></messages>", "unknown entity &nbsp;"),
            ("unknown entity in attribute", b"<messages><message id='&nbsp;'/></messages>", "bad value for attribute id"),
            ("unterminated entity", b"<messages><message><body>a & b</body></message></messages>", "malformed XML"),
            ("bad char reference", b"<messages><message><body>&#xZZ;</body></message></messages>", "bad character reference"),
            ("NUL char reference", b"<messages><message><body>&#0;</body></message></messages>", "bad character reference"),
            ("control char reference", b"<messages><message><body>&#1;</body></message></messages>", "not allowed"),
            ("control char reference in attribute", b"<messages><message id='&#27;'/></messages>", "bad value"),
            ("raw control character", b"<messages><message><body>\x01</body></message></messages>", "not allowed in XML at byte 25"),
            ("raw U+FFFF", "<messages><body>\u{FFFF}</body></messages>".as_bytes(), "not allowed in XML"),
            ("invalid UTF-8", b"<messages><message><body>\xff</body></message></messages>", "not valid UTF-8"),
            ("< in attribute", b"<messages><message id='a<b'/></messages>", "malformed XML|bad value"),
            ("unparsable when", b"<messages><message when='2010-01-01T23:18:83Z'/></messages>", "unparsable when"),
            ("date-only when", b"<messages><message when='2010-01-01'/></messages>", "unparsable when"),
            ("DOCTYPE", b"<!DOCTYPE messages [<!ENTITY x 'y'>]><messages/>", "DOCTYPE"),
            ("declaration not first", b" <?xml version='1.0'?><messages/>", "misplaced XML declaration"),
            ("second declaration", b"<?xml version='1.0'?><?xml version='1.0'?><messages/>", "misplaced"),
            ("XML 1.1", b"<?xml version='1.1'?><messages/>", "unsupported XML version"),
            ("other encoding", b"<?xml version='1.0' encoding='ISO-8859-1'?><messages/>", "unsupported encoding"),
            ("comment with --", b"<messages><!-- a -- b --></messages>", "malformed XML"),
            ("unclosed comment", b"<messages><!-- a", "malformed XML"),
            ("unclosed tag", b"<messages><message id='1'", "malformed XML"),
            ("JSON instead of XML", b"[{\"id\":\"1\"}]", "text outside"),
        ];
        let mut wrong = Vec::new();
        for &(name, input, want) in cases {
            match decode(input) {
                Err(e) if want.split('|').any(|w| e.0.contains(w)) => {}
                other => wrong.push(format!("{name}: {other:?}, want an error saying {want:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn encodes_v2() {
        let full = with_props(
            with_body(
                draft(Some("24c2"), "sms://838383", "twitter://foo", Some(WHEN)),
                Some("Subject"),
                "Body",
            ),
            &[("custom-property", "foo"), ("tag", "a"), ("tag", "b")],
        );
        let bare = draft(Some("x"), "", "", Some(0));
        let cases: Vec<(&str, Vec<Message>, &str)> = vec![
            (
                "empty batch",
                vec![],
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<messages/>\n",
            ),
            (
                "full message",
                vec![message(full)],
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<messages>\n\
                 <message id=\"24c2\" from=\"sms://838383\" to=\"twitter://foo\" when=\"2010-01-01T23:18:53Z\">\
                 <subject>Subject</subject><body>Body</body>\
                 <property name=\"custom-property\" value=\"foo\"/>\
                 <property name=\"tag\" value=\"a\"/><property name=\"tag\" value=\"b\"/>\
                 </message>\n</messages>\n",
            ),
            (
                "bare message still has every attribute and a body",
                vec![message(bare.clone())],
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<messages>\n\
                 <message id=\"x\" from=\"\" to=\"\" when=\"1970-01-01T00:00:00Z\"><body></body></message>\n\
                 </messages>\n",
            ),
            (
                "empty subject is still a subject",
                vec![message(with_body(bare.clone(), Some(""), ""))],
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<messages>\n\
                 <message id=\"x\" from=\"\" to=\"\" when=\"1970-01-01T00:00:00Z\"><subject></subject><body></body></message>\n\
                 </messages>\n",
            ),
        ];
        for (name, msgs, want) in cases {
            assert_eq!(encoded(&msgs, false), want, "{name}");
        }
    }

    #[test]
    fn encodes_v1_text() {
        let base = draft(Some("mt-1"), "sms://1", "sms://2", Some(WHEN));
        let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<messages>\n\
                    <message id=\"mt-1\" from=\"sms://1\" to=\"sms://2\" when=\"2010-01-01T23:18:53Z\">";
        let cases: Vec<(&str, Draft, &str)> = vec![
            (
                "subject and body",
                with_body(base.clone(), Some("s"), "b"),
                "<text>s - b</text>",
            ),
            (
                "body only",
                with_body(base.clone(), None, "b"),
                "<text>b</text>",
            ),
            (
                "empty subject",
                with_body(base.clone(), Some(""), "b"),
                "<text>b</text>",
            ),
            (
                "subject only",
                with_body(base.clone(), Some("s"), ""),
                "<text>s</text>",
            ),
            ("neither", base.clone(), "<text></text>"),
            (
                "escaped, with properties",
                with_props(with_body(base.clone(), Some("a<b"), "c&d"), &[("p", "v")]),
                "<text>a&lt;b - c&amp;d</text><property name=\"p\" value=\"v\"/>",
            ),
        ];
        for (name, d, want) in cases {
            let want = format!("{head}{want}</message>\n</messages>\n");
            assert_eq!(encoded(&[message(d)], true), want, "{name}");
        }
    }

    #[test]
    fn escapes_text_and_attributes() {
        let d = with_props(
            with_body(
                draft(Some("a\"b&c<d>e'f"), "x\ny\tz\rw", "", Some(WHEN)),
                Some("\"quotes\" & 'apos'"),
                "<b>&amp;</b>\r\n]]>\tend",
            ),
            &[("n\"", "v\n")],
        );
        let got = encoded(&[message(d.clone())], false);
        assert!(got.contains(r#"id="a&quot;b&amp;c&lt;d&gt;e'f""#), "{got}");
        assert!(got.contains(r#"from="x&#10;y&#9;z&#13;w""#), "{got}");
        assert!(
            got.contains("<subject>\"quotes\" &amp; 'apos'</subject>"),
            "{got}"
        );
        assert!(
            got.contains("<body>&lt;b&gt;&amp;amp;&lt;/b&gt;&#13;\n]]&gt;\tend</body>"),
            "{got}"
        );
        assert!(
            got.contains(r#"<property name="n&quot;" value="v&#10;"/>"#),
            "{got}"
        );
        assert_eq!(decode(got.as_bytes()), Ok(vec![d]));
    }

    #[test]
    fn encodes_what_xml_cannot_carry_as_replacement_characters() {
        let mut d = draft(Some("i\u{1}d"), "\u{FFFE}", "\u{FFFF}", Some(WHEN));
        d.body = b"a\x00b\x1fc\xffd".to_vec();
        d.properties = vec![("\u{0B}".into(), "ok\u{7F}\u{85}".into())];
        let got = encoded(&[message(d)], false);
        let back = decode(got.as_bytes()).expect("output is always well-formed");
        let r = '\u{FFFD}';
        assert_eq!(back[0].id.as_deref(), Some(format!("i{r}d").as_str()));
        assert_eq!(back[0].from, r.to_string());
        assert_eq!(back[0].to, r.to_string());
        assert_eq!(back[0].body, format!("a{r}b{r}c{r}d").into_bytes());
        assert_eq!(
            back[0].properties,
            vec![(r.to_string(), "ok\u{7F}\u{85}".to_string())]
        );
    }

    #[test]
    fn offset_input_is_emitted_as_utc() {
        let input = br#"<messages><message id="m" when="2010-01-02T01:18:53+02:00"/></messages>"#;
        let drafts = decode(input).unwrap();
        let got = encoded(&[message(drafts[0].clone())], false);
        assert!(got.contains(r#"when="2010-01-01T23:18:53Z""#), "{got}");
    }

    #[test]
    fn v1_output_decodes_with_text_as_body() {
        let d = with_body(draft(Some("m"), "f", "t", Some(WHEN)), Some("s"), "héllo ✓");
        let back = decode(encoded(&[message(d)], true).as_bytes()).unwrap();
        assert_eq!(
            back,
            vec![with_body(
                draft(Some("m"), "f", "t", Some(WHEN)),
                None,
                "s - héllo ✓"
            )]
        );
    }

    /// Text XML 1.0 can carry (the `Char` production: no NUL, no C0 controls other than tab,
    /// line feed and carriage return, no U+FFFE/U+FFFF), biased towards markup characters
    /// and whitespace so escaping is exercised.
    fn xml_text() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            3 => prop::sample::select(vec!['<', '&', '>', '"', '\'', '\n', '\t', '\r', ' ', ';', '#', ']']),
            1 => any::<char>().prop_filter("XML 1.0 Char", |&c| is_xml_char(c)),
            2 => prop::char::range('a', 'z'),
        ];
        prop::collection::vec(ch, 0..24).prop_map(String::from_iter)
    }

    fn xml_draft() -> impl Strategy<Value = Draft> {
        let names = prop::sample::select(vec!["tag", "x", "custom-property", "é"]);
        let prop_name = prop_oneof![names.prop_map(str::to_owned), xml_text()];
        (
            xml_text().prop_filter("ids are never empty", |s| !s.is_empty()),
            xml_text(),
            xml_text(),
            -62_167_219_200i64..=253_402_300_799,
            prop::option::of(xml_text()),
            xml_text(),
            prop::collection::vec((prop_name, xml_text()), 0..=5),
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
        fn v2_round_trips(drafts in prop::collection::vec(xml_draft(), 0..4)) {
            let msgs: Vec<Message> = drafts.into_iter().map(message).collect();
            let want: Vec<Draft> = msgs.iter().map(Message::to_draft).collect();
            let xml = encoded(&msgs, false);
            prop_assert_eq!(decode(xml.as_bytes()), Ok(want), "{}", xml);
        }
    }
}
