//! Finds stanza boundaries in an XMPP byte stream as it arrives (PROTOCOLS.md 4.1), without
//! building anything: a byte scanner that keeps its place between reads, so a stanza split
//! over many reads and many stanzas in one read cost one pass each.
//!
//! It yields the stream header (`<stream:stream …>`, an XML declaration may precede it), each
//! top-level element inside it (a stanza) as a byte range, and the stream's end. It enforces
//! the restricted XML of RFC 6120 11.1 on the way: no comment, no processing instruction but
//! the opening declaration, no DTD, no entity reference other than the five predefined ones
//! and numeric references; and the limits: a stanza's size, and 64 levels of nesting. Nothing
//! is ever expanded or fetched. Parsing a stanza's content is `stanza::parse`'s job.

/// Elements nested deeper than this (the stream header counts as one) → policy-violation.
pub const MAX_DEPTH: usize = 64;
/// The stream header (and an XML declaration before it) may take at most this many bytes.
const MAX_HEADER: usize = 4096;
/// An entity reference longer than this (`&#x10FFFF;` is 10) is not one.
const MAX_REFERENCE: usize = 12;

/// What the scanner found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The stream header ends at this offset (the bytes from 0 hold it, with any XML
    /// declaration and whitespace before it).
    StreamOpen { end: usize },
    /// A complete stanza: `start..end` (whitespace before it is not part of it).
    Stanza { start: usize, end: usize },
    /// `</stream:stream>` (or whatever closed the root) ends at this offset.
    StreamClose { end: usize },
    /// The root element was empty (`<body …/>`), ending at this offset: a document with
    /// nothing in it (a BOSH request), or a stream that is over before it began.
    EmptyRoot { end: usize },
}

/// Why the stream must end (each is a stream error of RFC 6120 4.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlError {
    /// `not-well-formed`
    NotWellFormed,
    /// `restricted-xml`
    RestrictedXml,
    /// `policy-violation`: a stanza over the size limit or nested too deep.
    PolicyViolation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tags (character data).
    Text,
    /// Inside a start tag, outside any attribute value.
    Open,
    /// Inside an attribute value quoted with this byte.
    Quoted(u8),
    /// Inside an end tag.
    Close,
    /// Inside `<?xml … ?>` before the stream header.
    Declaration,
    /// Inside `<![CDATA[ … ]]>`.
    CData,
}

/// The scanner. Feed it the unconsumed input each time more arrives (`next`); after taking
/// a token's bytes off the front, tell it how many (`consumed`).
#[derive(Debug)]
pub struct Tokenizer {
    state: State,
    /// Offset of the next byte to look at.
    pos: usize,
    /// Open elements, the stream header included.
    depth: usize,
    /// Where the tag being scanned starts.
    tag_start: usize,
    /// Where the current stanza starts.
    stanza_start: usize,
    /// The stream header has been seen.
    opened: bool,
    /// The stream header's element name: only it may close the stream.
    root: Vec<u8>,
    max_stanza: usize,
}

impl Tokenizer {
    /// A scanner for a new stream (or a restarted one) whose stanzas may be at most
    /// `max_stanza` bytes.
    pub fn new(max_stanza: usize) -> Tokenizer {
        Tokenizer {
            state: State::Text,
            pos: 0,
            depth: 0,
            tag_start: 0,
            stanza_start: 0,
            opened: false,
            root: Vec::new(),
            max_stanza,
        }
    }

    /// The first `n` bytes were taken off the input (they held tokens already returned).
    pub fn consumed(&mut self, n: usize) {
        self.pos -= n.min(self.pos);
        self.tag_start -= n.min(self.tag_start);
        self.stanza_start -= n.min(self.stanza_start);
    }

    /// Scans `buf` (the unconsumed input, which only ever grows at its end between calls
    /// apart from `consumed`) for the next token. `Ok(None)`: more input is needed.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Token>, XmlError> {
        while self.pos < buf.len() {
            // The limits are checked at each byte, so the first fault in the stream decides
            // the error whatever pieces the stream arrives in.
            self.check_limits()?;
            let b = buf[self.pos];
            match self.state {
                State::Text => match b {
                    b'<' => {
                        let Some(&next) = buf.get(self.pos + 1) else {
                            return self.wait(buf);
                        };
                        self.tag_start = self.pos;
                        match next {
                            b'/' => {
                                self.state = State::Close;
                                self.pos += 2;
                            }
                            b'?' if !self.opened && self.depth == 0 => {
                                if !starts_with_at(buf, self.pos, b"<?xml ")
                                    && buf.len() >= self.pos + 6
                                {
                                    return Err(XmlError::RestrictedXml);
                                }
                                if buf.len() < self.pos + 6 {
                                    return self.wait(buf);
                                }
                                self.state = State::Declaration;
                                self.pos += 6;
                            }
                            b'?' => return Err(XmlError::RestrictedXml),
                            b'!' => {
                                const CDATA: &[u8] = b"<![CDATA[";
                                let have = &buf[self.pos..buf.len().min(self.pos + CDATA.len())];
                                if !CDATA.starts_with(have) || self.depth < 2 {
                                    // A comment or a DTD (or CDATA outside a stanza).
                                    return Err(XmlError::RestrictedXml);
                                }
                                if have.len() < CDATA.len() {
                                    return self.wait(buf);
                                }
                                self.state = State::CData;
                                self.pos += CDATA.len();
                            }
                            _ => {
                                if self.depth == 1 {
                                    self.stanza_start = self.pos;
                                }
                                self.state = State::Open;
                                self.pos += 1;
                            }
                        }
                    }
                    b'&' => {
                        if self.depth < 2 {
                            return Err(XmlError::NotWellFormed);
                        }
                        match check_reference(buf, self.pos)? {
                            Some(len) => self.pos += len,
                            None => return self.wait(buf),
                        }
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                    _ if self.depth < 2 => return Err(XmlError::NotWellFormed),
                    _ => self.pos += 1,
                },
                State::Open => match b {
                    b'"' | b'\'' => {
                        self.state = State::Quoted(b);
                        self.pos += 1;
                    }
                    b'<' => return Err(XmlError::NotWellFormed),
                    b'>' => {
                        let empty = self.pos > self.tag_start + 1 && buf[self.pos - 1] == b'/';
                        if self.depth == 0 {
                            self.root = element_name(&buf[self.tag_start + 1..self.pos]).to_vec();
                        }
                        self.pos += 1;
                        self.state = State::Text;
                        if let Some(t) = self.element_opened(empty)? {
                            return Ok(Some(t));
                        }
                    }
                    _ => self.pos += 1,
                },
                State::Quoted(q) => {
                    if b == q {
                        self.state = State::Open;
                        self.pos += 1;
                    } else if b == b'<' {
                        return Err(XmlError::NotWellFormed);
                    } else if b == b'&' {
                        match check_reference(buf, self.pos)? {
                            Some(len) => self.pos += len,
                            None => return self.wait(buf),
                        }
                    } else {
                        self.pos += 1;
                    }
                }
                State::Close => {
                    if b == b'>' {
                        self.pos += 1;
                        self.state = State::Text;
                        if self.depth == 0 {
                            return Err(XmlError::NotWellFormed);
                        }
                        self.depth -= 1;
                        match self.depth {
                            0 => {
                                let name = trim_name(&buf[self.tag_start + 2..self.pos - 1]);
                                if name != self.root.as_slice() {
                                    return Err(XmlError::NotWellFormed);
                                }
                                return Ok(Some(Token::StreamClose { end: self.pos }));
                            }
                            1 => return self.stanza_done(),
                            _ => {}
                        }
                    } else if b == b'<' {
                        return Err(XmlError::NotWellFormed);
                    } else {
                        self.pos += 1;
                    }
                }
                State::Declaration => {
                    if b == b'>' && buf[self.pos - 1] == b'?' {
                        self.state = State::Text;
                    }
                    self.pos += 1;
                }
                State::CData => {
                    if b == b'>' && self.pos >= 2 && &buf[self.pos - 2..self.pos] == b"]]" {
                        self.state = State::Text;
                    }
                    self.pos += 1;
                }
            }
        }
        self.wait(buf)
    }

    /// A start tag ended at `pos`: count it, and say what it completed.
    fn element_opened(&mut self, empty: bool) -> Result<Option<Token>, XmlError> {
        if self.depth == 0 {
            if empty {
                return Ok(Some(Token::EmptyRoot { end: self.pos }));
            }
            self.depth = 1;
            self.opened = true;
            return Ok(Some(Token::StreamOpen { end: self.pos }));
        }
        if empty {
            if self.depth == 1 {
                return self.stanza_done();
            }
            return Ok(None);
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(XmlError::PolicyViolation);
        }
        Ok(None)
    }

    /// A stanza ended at `pos`: it must be within the size limit, whole or not.
    fn stanza_done(&self) -> Result<Option<Token>, XmlError> {
        if self.pos - self.stanza_start > self.max_stanza {
            return Err(XmlError::PolicyViolation);
        }
        Ok(Some(Token::Stanza {
            start: self.stanza_start,
            end: self.pos,
        }))
    }

    /// The header and the stanza being scanned must stay within their limits.
    fn check_limits(&self) -> Result<(), XmlError> {
        if self.depth == 0 && self.pos > MAX_HEADER {
            return Err(XmlError::PolicyViolation);
        }
        let in_stanza = self.depth >= 2 || (self.depth == 1 && self.state != State::Text);
        if in_stanza && self.pos - self.stanza_start > self.max_stanza {
            return Err(XmlError::PolicyViolation);
        }
        Ok(())
    }

    /// No token yet: asks for more input. (What waits unscanned is at most a reference or
    /// a few bytes of markup, so the limits are those of what was scanned.)
    fn wait(&self, _buf: &[u8]) -> Result<Option<Token>, XmlError> {
        self.check_limits()?;
        Ok(None)
    }
}

/// The element name at the start of a start tag's inside (`stream:stream to='…'`).
fn element_name(tag: &[u8]) -> &[u8] {
    let end = tag
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
        .unwrap_or(tag.len());
    &tag[..end]
}

/// An end tag's name without the whitespace XML allows after it.
fn trim_name(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &name[..end]
}

fn starts_with_at(buf: &[u8], at: usize, prefix: &[u8]) -> bool {
    buf.get(at..at + prefix.len()) == Some(prefix)
}

/// Checks the entity reference at `buf[at] == b'&'`: `Ok(Some(len))` for one of the five
/// predefined entities or a numeric character reference, `Ok(None)` while incomplete,
/// `RestrictedXml` for any other entity, `NotWellFormed` for no reference at all.
fn check_reference(buf: &[u8], at: usize) -> Result<Option<usize>, XmlError> {
    let rest = &buf[at + 1..buf.len().min(at + 1 + MAX_REFERENCE)];
    let Some(semi) = memchr::memchr(b';', rest) else {
        return if rest.len() >= MAX_REFERENCE {
            Err(XmlError::NotWellFormed)
        } else {
            Ok(None)
        };
    };
    let name = &rest[..semi];
    let ok = match name {
        b"amp" | b"lt" | b"gt" | b"quot" | b"apos" => true,
        [b'#', b'x', hex @ ..] => !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit),
        [b'#', dec @ ..] => !dec.is_empty() && dec.iter().all(u8::is_ascii_digit),
        [] => return Err(XmlError::NotWellFormed),
        _ if name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':')) =>
        {
            return Err(XmlError::RestrictedXml)
        }
        _ => return Err(XmlError::NotWellFormed),
    };
    if ok {
        Ok(Some(semi + 2))
    } else {
        Err(XmlError::NotWellFormed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

    /// Every token of `input` fed whole, consuming each token's bytes as a caller would.
    fn tokens(input: &[u8], max: usize) -> Result<Vec<(Token, Vec<u8>)>, XmlError> {
        let mut t = Tokenizer::new(max);
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        while let Some(tok) = t.next(&buf)? {
            let (start, end) = match tok {
                Token::StreamOpen { end }
                | Token::StreamClose { end }
                | Token::EmptyRoot { end } => (0, end),
                Token::Stanza { start, end } => (start, end),
            };
            out.push((tok, buf[start..end].to_vec()));
            buf.drain(..end);
            t.consumed(end);
        }
        Ok(out)
    }

    /// The same input fed one byte at a time.
    fn tokens_trickled(input: &[u8], max: usize) -> Result<Vec<Vec<u8>>, XmlError> {
        let mut t = Tokenizer::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for &b in input {
            buf.push(b);
            while let Some(tok) = t.next(&buf)? {
                let (start, end) = match tok {
                    Token::StreamOpen { end }
                    | Token::StreamClose { end }
                    | Token::EmptyRoot { end } => (0, end),
                    Token::Stanza { start, end } => (start, end),
                };
                out.push(buf[start..end].to_vec());
                buf.drain(..end);
                t.consumed(end);
            }
        }
        Ok(out)
    }

    #[test]
    fn header_stanzas_and_end_whole_or_byte_by_byte() {
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b" \n<presence/>\n<iq type='get' id='a1'><item xmlns='urn:M'>Kg==</item></iq> <message to='b@x'><body>a &amp; b &#x263A; <![CDATA[<raw>]]></body></message></stream:stream>");
        let whole = tokens(&input, 1 << 16).unwrap();
        let kinds: Vec<_> = whole
            .iter()
            .map(|(t, _)| std::mem::discriminant(t))
            .collect();
        assert_eq!(kinds.len(), 5);
        assert!(matches!(whole[0].0, Token::StreamOpen { .. }));
        assert_eq!(whole[1].1, b"<presence/>");
        assert_eq!(
            whole[2].1,
            b"<iq type='get' id='a1'><item xmlns='urn:M'>Kg==</item></iq>"
        );
        assert!(whole[3].1.starts_with(b"<message") && whole[3].1.ends_with(b"</message>"));
        assert!(matches!(whole[4].0, Token::StreamClose { .. }));
        let trickled = tokens_trickled(&input, 1 << 16).unwrap();
        let whole_bytes: Vec<_> = whole.into_iter().map(|(_, b)| b).collect();
        assert_eq!(trickled, whole_bytes);
    }

    #[test]
    fn a_quoted_gt_does_not_end_a_tag() {
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b"<message to='a>b' x=\"c/>d\"><body/></message>");
        let t = tokens(&input, 1 << 16).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(&t[1].1[..], &input[HEADER.len()..]);
    }

    #[test]
    fn restricted_xml_and_malformed_input() {
        let cases: &[(&[u8], XmlError)] = &[
            (
                b"<!DOCTYPE lol [<!ENTITY lol 'lol'>]>",
                XmlError::RestrictedXml,
            ),
            (b"<?xml version='1.0'?><?php x?>", XmlError::RestrictedXml),
            (
                b"<stream:stream><!-- hi --><presence/>",
                XmlError::RestrictedXml,
            ),
            (
                b"<stream:stream><message><body>&lol;</body></message>",
                XmlError::RestrictedXml,
            ),
            (
                b"<stream:stream><message to='&xxe;'/>",
                XmlError::RestrictedXml,
            ),
            (
                b"<stream:stream><message><?pi x?></message>",
                XmlError::RestrictedXml,
            ),
            (b"<stream:stream>hello", XmlError::NotWellFormed),
            (
                b"<stream:stream><a></a></b></stream:stream></x>",
                XmlError::NotWellFormed,
            ),
            (b"<stream:stream><a b='<'/>", XmlError::NotWellFormed),
            (b"<stream:stream><a>&;</a>", XmlError::NotWellFormed),
            (b"<stream:stream></iq>", XmlError::NotWellFormed),
        ];
        // An empty root is a token of its own: a stream over before it began (the session
        // answers `not-well-formed`), or an empty BOSH body.
        assert_eq!(
            tokens(b"<?xml version='1.0'?><stream:stream/>", 1 << 16).unwrap()[0].0,
            Token::EmptyRoot { end: 37 }
        );
        for (input, want) in cases {
            assert_eq!(
                tokens(input, 1 << 16).map(|_| ()),
                Err(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                tokens_trickled(input, 1 << 16).map(|_| ()),
                Err(*want),
                "trickled {}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_on_size_and_depth() {
        let mut big = HEADER.to_vec();
        big.extend_from_slice(b"<message><body>");
        big.extend(std::iter::repeat_n(b'x', 2000));
        assert_eq!(
            tokens(&big, 1000).map(|_| ()),
            Err(XmlError::PolicyViolation)
        );
        let mut deep = HEADER.to_vec();
        for _ in 0..100 {
            deep.extend_from_slice(b"<a>");
        }
        assert_eq!(
            tokens(&deep, 1 << 20).map(|_| ()),
            Err(XmlError::PolicyViolation)
        );
        let mut ok = HEADER.to_vec();
        for _ in 0..MAX_DEPTH - 1 {
            ok.extend_from_slice(b"<a>");
        }
        for _ in 0..MAX_DEPTH - 1 {
            ok.extend_from_slice(b"</a>");
        }
        assert_eq!(
            tokens(&ok, 1 << 20).unwrap().len(),
            2,
            "63 levels inside the stream are fine"
        );
        // A header that never ends.
        let endless = vec![b' '; MAX_HEADER + 1];
        assert_eq!(
            tokens(&endless, 1 << 20).map(|_| ()),
            Err(XmlError::PolicyViolation)
        );
    }

    #[test]
    fn a_billion_laughs_is_refused_before_anything_is_expanded() {
        let bomb = b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]><stream:stream>";
        assert_eq!(
            tokens(bomb, 1 << 16).map(|_| ()),
            Err(XmlError::RestrictedXml)
        );
    }
}
