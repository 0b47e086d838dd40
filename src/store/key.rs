//! Item keys (PROTOCOLS.md 4.3): `M.key {kind: string, id: union [M.uuid (fixed 16), string]}`
//! in Avro binary encoding, written as URL-safe base64 without padding.
//!
//! Avro binary: a `string` is its length as a zig-zag varint `long`, then its UTF-8 bytes; a
//! `union` is its branch index as a zig-zag varint `long`, then the branch's value; a `fixed`
//! is its bytes. Example: kind `Foo`, id string `"bar"` → `06 46 6f 6f 02 06 62 61 72` →
//! `BkZvbwIGYmFy`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// An item's id: a random UUID (new items) or a string (users, by name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyId {
    /// Union branch 0, `M.uuid`: 16 bytes.
    Uuid([u8; 16]),
    /// Union branch 1, `string`.
    Str(String),
}

/// A record's key: its full kind name (`M.Page`) and its id. Stable for the record's life.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub id: KeyId,
}

/// Why a key string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    Base64,
    Truncated,
    BadBranch,
    NotUtf8,
    TrailingBytes,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyError::Base64 => "key is not URL-safe base64",
            KeyError::Truncated => "key is truncated",
            KeyError::BadBranch => "key id has an unknown union branch",
            KeyError::NotUtf8 => "key string is not UTF-8",
            KeyError::TrailingBytes => "key has trailing bytes",
        })
    }
}

/// The longest key string accepted by `Key::decode` (a key holds a kind name and an id, not
/// documents).
pub const MAX_KEY_CHARS: usize = 1024;

impl Key {
    /// A key with a fresh random UUID id (RFC 4122 version 4), from the OS generator.
    pub fn new_uuid(kind: &str) -> Key {
        let mut b = [0u8; 16];
        // Without an OS generator the process cannot make unguessable ids of any kind; a key
        // only has to be unique, so fall back to a hash of the time and a counter.
        if getrandom::getrandom(&mut b).is_err() {
            b = fallback_unique();
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Key {
            kind: kind.to_string(),
            id: KeyId::Uuid(b),
        }
    }

    /// A key with a string id.
    pub fn named(kind: &str, id: &str) -> Key {
        Key {
            kind: kind.to_string(),
            id: KeyId::Str(id.to_string()),
        }
    }

    /// The Avro binary encoding of the key.
    pub fn to_avro(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.kind.len() + 20);
        put_string(&mut out, &self.kind);
        match &self.id {
            KeyId::Uuid(b) => {
                put_long(&mut out, 0);
                out.extend_from_slice(b);
            }
            KeyId::Str(s) => {
                put_long(&mut out, 1);
                put_string(&mut out, s);
            }
        }
        out
    }

    /// The key as clients see it: URL-safe base64 without padding of `to_avro`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_avro())
    }

    /// Parses a key string (client data: every failure is an error, never a panic).
    pub fn decode(s: &str) -> Result<Key, KeyError> {
        if s.len() > MAX_KEY_CHARS {
            return Err(KeyError::Truncated);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| KeyError::Base64)?;
        let mut r = Reader { b: &bytes };
        let kind = r.string()?;
        let id = match r.long()? {
            0 => {
                let raw = r.take(16)?;
                let mut b = [0u8; 16];
                b.copy_from_slice(raw);
                KeyId::Uuid(b)
            }
            1 => KeyId::Str(r.string()?),
            _ => return Err(KeyError::BadBranch),
        };
        if !r.b.is_empty() {
            return Err(KeyError::TrailingBytes);
        }
        Ok(Key { kind, id })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

fn fallback_unique() -> [u8; 16] {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let s = RandomState::new();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let a = s.hash_one((t, n));
    let b = s.hash_one((n, t, std::process::id()));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// Avro `long`: zig-zag, then 7 bits a byte, least significant first, high bit = more.
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, KeyError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first().ok_or(KeyError::Truncated)?;
            self.b = rest;
            z |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(KeyError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], KeyError> {
        if self.b.len() < n {
            return Err(KeyError::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, KeyError> {
        let len = usize::try_from(self.long()?).map_err(|_| KeyError::Truncated)?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| KeyError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples() {
        let k = Key::named("Foo", "bar");
        assert_eq!(
            k.to_avro(),
            [0x06, 0x46, 0x6f, 0x6f, 0x02, 0x06, 0x62, 0x61, 0x72]
        );
        assert_eq!(k.encode(), "BkZvbwIGYmFy");
        assert_eq!(Key::decode("BkZvbwIGYmFy").unwrap(), k);
        assert_eq!(
            Key::decode("DE0uVXNlcgIGbmV3").unwrap(),
            Key::named("M.User", "new")
        );
    }

    #[test]
    fn uuid_keys_round_trip_and_differ() {
        let a = Key::new_uuid("M.Page");
        let b = Key::new_uuid("M.Page");
        assert_ne!(a, b);
        let KeyId::Uuid(bytes) = a.id else {
            panic!("uuid branch")
        };
        assert_eq!(bytes[6] >> 4, 4);
        assert_eq!(bytes[8] >> 6, 2);
        let s = a.encode();
        assert!(!s.contains('=') && !s.contains('+') && !s.contains('/'));
        // kind "M.Page": 0x0c then 6 bytes; branch 0 as 0x00; 16 bytes.
        assert_eq!(a.to_avro().len(), 1 + 6 + 1 + 16);
        assert_eq!(Key::decode(&s).unwrap(), a);
    }

    #[test]
    fn long_varints() {
        for (n, bytes) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (300, vec![0xd8, 0x04]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_long(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(Reader { b: &bytes }.long().unwrap(), n);
        }
        let long_string = "x".repeat(200);
        let k = Key::named(&long_string, "");
        assert_eq!(Key::decode(&k.encode()).unwrap(), k);
    }

    #[test]
    fn bad_keys_are_errors() {
        assert_eq!(Key::decode("!!"), Err(KeyError::Base64));
        assert_eq!(Key::decode("BkZvbw=="), Err(KeyError::Base64));
        assert_eq!(Key::decode(""), Err(KeyError::Truncated));
        assert_eq!(Key::decode("BkZvbw"), Err(KeyError::Truncated)); // no branch
        assert_eq!(Key::decode("BkZvbwQ"), Err(KeyError::BadBranch)); // branch 2
        assert_eq!(Key::decode("BkZvbwA"), Err(KeyError::Truncated)); // uuid missing
        assert_eq!(Key::decode("BkZvbwIGYmFyAA"), Err(KeyError::TrailingBytes));
        assert_eq!(Key::decode("AQ"), Err(KeyError::Truncated)); // length -1
        assert_eq!(Key::decode("Av8"), Err(KeyError::NotUtf8));
        assert_eq!(
            Key::decode(&"A".repeat(MAX_KEY_CHARS + 1)),
            Err(KeyError::Truncated)
        );
    }
}
