//! What the two XML readers (QST's codec and XMPP's stanzas) share: XML 1.0's `Char`
//! production and the resolution of a reference to a character, refusing every entity but
//! the five predefined ones (nothing is ever expanded or fetched).

use quick_xml::events::BytesRef;

/// Why a reference was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefError {
    /// A named entity other than the five predefined ones.
    UnknownEntity,
    /// A numeric reference that is malformed or names a character XML does not allow.
    BadCharacter,
}

/// XML 1.0's `Char` production.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{FFFD}' | '\u{10000}'..)
}

/// The character a reference (`&amp;`, `&#x263A;`…) stands for.
pub fn resolve(r: &BytesRef<'_>) -> Result<char, RefError> {
    let c = match r.resolve_char_ref() {
        Ok(Some(c)) => c,
        Ok(None) => match &**r {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => return Err(RefError::UnknownEntity),
        },
        Err(_) => return Err(RefError::BadCharacter),
    };
    if is_xml_char(c) {
        Ok(c)
    } else {
        Err(RefError::BadCharacter)
    }
}
