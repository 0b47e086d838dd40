//! One stanza parsed into a small element tree, and the escaping of what the server writes.
//!
//! The tokenizer (`tokenizer.rs`) has already cut the stanza out of the stream and refused
//! restricted XML, so this parses a bounded, complete element with `quick-xml`. Each element
//! keeps the byte range it was read from, so an error reply can echo a request's child
//! unchanged (PROTOCOLS.md 4.2).

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;

use super::tokenizer::XmlError;
use crate::proto::xmlref::{self, is_xml_char, RefError};

/// An element: its name as written (`iq`, `stream:error`), its attributes (values
/// unescaped; `xmlns` among them), its child elements, its text and where it was.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// The element's own character data, concatenated, references resolved.
    pub text: String,
    /// Where the element is in the stanza's bytes.
    pub span: Range<usize>,
}

impl Element {
    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The name without its prefix.
    pub fn local_name(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or(&self.name)
    }

    /// The element's own `xmlns`, if it declares one.
    pub fn ns(&self) -> Option<&str> {
        self.attr("xmlns")
    }

    /// The first child element, whatever its name.
    pub fn first_child(&self) -> Option<&Element> {
        self.children.first()
    }

    /// The first child with this local name and namespace.
    pub fn child(&self, local: &str, ns: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.local_name() == local && c.ns() == Some(ns))
    }
}

/// Parses a complete stanza (one element, as the tokenizer cut it out).
pub fn parse(stanza: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(stanza).map_err(|_| XmlError::NotWellFormed)?;
    if text.chars().any(|c| !is_xml_char(c)) {
        return Err(XmlError::NotWellFormed);
    }
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|_| XmlError::NotWellFormed)?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(XmlError::NotWellFormed);
                }
                stack.push(element(&e, before..after)?);
            }
            Event::Empty(e) => {
                if root.is_some() {
                    return Err(XmlError::NotWellFormed);
                }
                let el = element(&e, before..after)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(e) => {
                let Some(mut el) = stack.pop() else {
                    return Err(XmlError::NotWellFormed);
                };
                if e.name().as_ref() != el.name {
                    return Err(XmlError::NotWellFormed);
                }
                el.span.end = after;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None if t.xml10_content().chars().all(|c| c.is_ascii_whitespace()) => {}
                None => return Err(XmlError::NotWellFormed),
            },
            Event::CData(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None => return Err(XmlError::NotWellFormed),
            },
            Event::GeneralRef(r) => match stack.last_mut() {
                Some(el) => el.text.push(reference(&r)?),
                None => return Err(XmlError::NotWellFormed),
            },
            Event::Eof => break,
            Event::Comment(_) | Event::PI(_) | Event::DocType(_) | Event::Decl(_) => {
                return Err(XmlError::RestrictedXml)
            }
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::NotWellFormed);
    }
    root.ok_or(XmlError::NotWellFormed)
}

fn element(e: &BytesStart<'_>, span: Range<usize>) -> Result<Element, XmlError> {
    let name = e.name().as_ref().to_string();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|_| XmlError::NotWellFormed)?;
        let key = a.key.as_ref().to_string();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|_| XmlError::RestrictedXml)?;
        if value.chars().any(|c| !is_xml_char(c)) {
            return Err(XmlError::NotWellFormed);
        }
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
        span,
    })
}

fn reference(r: &BytesRef<'_>) -> Result<char, XmlError> {
    xmlref::resolve(r).map_err(|e| match e {
        RefError::UnknownEntity => XmlError::RestrictedXml,
        RefError::BadCharacter => XmlError::NotWellFormed,
    })
}

/// Escapes text for an attribute value or character data (quotes included, so the result
/// fits in either).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\''))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iq_with_a_urn_m_child() {
        let raw = b"<iq type='get' id='n1'>\n  <item xmlns='urn:M' method='get'>Kg==</item></iq>";
        let iq = parse(raw).unwrap();
        assert_eq!(iq.name, "iq");
        assert_eq!(iq.attr("type"), Some("get"));
        assert_eq!(iq.attr("id"), Some("n1"));
        let item = iq.child("item", "urn:M").unwrap();
        assert_eq!(item.text, "Kg==");
        assert_eq!(item.attr("method"), Some("get"));
        assert_eq!(
            &raw[item.span.clone()],
            b"<item xmlns='urn:M' method='get'>Kg==</item>",
            "a child's bytes, unchanged"
        );
        assert_eq!(iq.span, 0..raw.len());
    }

    #[test]
    fn references_and_cdata_are_text() {
        let m = parse(
            b"<message to='a&amp;b'><body>1 &lt; 2 &#x263A; <![CDATA[<x>]]></body></message>",
        )
        .unwrap();
        assert_eq!(m.attr("to"), Some("a&b"));
        assert_eq!(m.children[0].text, "1 < 2 \u{263A} <x>");
    }

    #[test]
    fn empty_elements_prefixes_and_namespaces() {
        let s = parse(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>").unwrap();
        let bind = s.child("bind", "urn:ietf:params:xml:ns:xmpp-bind").unwrap();
        assert_eq!(bind.children[0].text, "phone");
        let e = parse(b"<stream:error><conflict/></stream:error>").unwrap();
        assert_eq!(e.local_name(), "error");
        assert_eq!(e.first_child().unwrap().name, "conflict");
    }

    #[test]
    fn bad_stanzas() {
        for bad in [
            &b"<a><b></a></b>"[..],
            b"<a>\x01</a>",
            b"<a>&#0;</a>",
            b"<a/><b/>",
            b"<a>\xff</a>",
            b"<a x='1' x='2'/>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }
}

/// Writes an element back as XML, with `from` set to `from` on the element itself when
/// given (the server stamps the sender, RFC 6120 8.1.2.1) and the attributes escaped.
pub fn write(el: &Element, from: Option<&str>, out: &mut String) {
    out.push('<');
    out.push_str(&el.name);
    if let Some(from) = from {
        push_attr(out, "from", from);
    }
    for (k, v) in &el.attrs {
        if from.is_some() && k == "from" {
            continue;
        }
        push_attr(out, k, v);
    }
    if el.children.is_empty() && el.text.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    out.push_str(&escape(&el.text));
    for c in &el.children {
        write(c, None, out);
    }
    out.push_str("</");
    out.push_str(&el.name);
    out.push('>');
}

fn push_attr(out: &mut String, k: &str, v: &str) {
    out.push(' ');
    out.push_str(k);
    out.push_str("='");
    out.push_str(&escape(v));
    out.push('\'');
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn a_message_rewritten_with_the_sender_stamped() {
        let m = parse(
            b"<message to='b@x' from='forged@x' type='chat'><body>hi &amp; bye</body></message>",
        )
        .unwrap();
        let mut out = String::new();
        write(&m, Some("a@x/phone"), &mut out);
        assert_eq!(
            out,
            "<message from='a@x/phone' to='b@x' type='chat'><body>hi &amp; bye</body></message>"
        );
        assert_eq!(
            parse(out.as_bytes()).unwrap().attr("from"),
            Some("a@x/phone")
        );
    }
}
