//! Credentials (`--credentials FILE`): users and the channels they may use, checked with
//! HTTP Basic on every protocol (PROTOCOLS.md 0.3).
//!
//! File format, one user a line: `user:password pattern…`, where a pattern is a channel
//! name or a prefix ending in `*`; `#` starts a comment. A channel matched by any pattern of
//! any user is guarded: only a user whose patterns match it may use it. Other channels are
//! open to everyone.

use super::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, channel: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == channel,
            Pattern::Prefix(p) => channel.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    password: Vec<u8>,
    patterns: Vec<Pattern>,
}

/// The users of a credentials file; empty when the server runs without one.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    users: Vec<User>,
}

impl Auth {
    /// Parses a credentials file. Errors name the line.
    pub fn parse(text: &str) -> Result<Auth, String> {
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let cred = words.next().unwrap_or("");
            let (name, password) = cred
                .split_once(':')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| format!("line {}: expected user:password", i + 1))?;
            let patterns: Vec<Pattern> = words
                .map(|w| match w.strip_suffix('*') {
                    Some(prefix) => Pattern::Prefix(prefix.to_string()),
                    None => Pattern::Exact(w.to_string()),
                })
                .collect();
            if patterns.is_empty() {
                return Err(format!(
                    "line {}: user {name} has no channel pattern",
                    i + 1
                ));
            }
            users.push(User {
                name: name.to_string(),
                password: password.as_bytes().to_vec(),
                patterns,
            });
        }
        Ok(Auth { users })
    }

    /// Every user of the file and its password, in file order: the Message store lists
    /// them as users (`store::Store::new`).
    pub fn users(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.users
            .iter()
            .map(|u| (u.name.as_str(), u.password.as_slice()))
    }

    /// Reads and parses a credentials file.
    pub fn load(path: &std::path::Path) -> std::io::Result<Auth> {
        let text = std::fs::read_to_string(path)?;
        Auth::parse(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Whether any pattern guards this channel.
    /// The password of a user of the file (for SASL), if there is such a user.
    pub fn password(&self, user: &str) -> Option<Vec<u8>> {
        self.users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.password.clone())
    }

    /// Whether the file names no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether the user `name` (authenticated some other way, as XMPP does) may use the
    /// channel: an open channel, or one of the user's patterns matches it.
    pub fn user_allows(&self, name: &str, channel: &str) -> bool {
        !self.guarded(channel)
            || self
                .users
                .iter()
                .any(|u| u.name == name && u.patterns.iter().any(|p| p.matches(channel)))
    }

    pub fn guarded(&self, channel: &str) -> bool {
        self.users
            .iter()
            .any(|u| u.patterns.iter().any(|p| p.matches(channel)))
    }

    /// Whether an `Authorization` header value lets its user use the channel.
    /// Open channels allow everyone. Passwords are compared in constant time.
    pub fn allows(&self, channel: &str, authorization: Option<&[u8]>) -> bool {
        if !self.guarded(channel) {
            return true;
        }
        let Some((name, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let mut ok = false;
        for user in &self.users {
            let name_ok = constant_time_eq(user.name.as_bytes(), &name);
            let password_ok = constant_time_eq(&user.password, &password);
            let channel_ok = user.patterns.iter().any(|p| p.matches(channel));
            ok |= name_ok & password_ok & channel_ok;
        }
        ok
    }

    /// `Ok` if the request may use the channel, else the `401` to answer.
    pub fn check(&self, channel: &str, authorization: Option<&[u8]>) -> Result<(), Reply> {
        if self.allows(channel, authorization) {
            Ok(())
        } else {
            Err(Reply::text(401, "authentication required for this channel")
                .header("WWW-Authenticate", "Basic realm=\"tidings\""))
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// The user and password of a `Basic` authorization value.
fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(token.trim().as_bytes())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Standard base64 with optional padding.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if s.len() % 4 == 1 || s.len() > 8192 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# gateways\nacme:s3cret acme/* \nbob:pw private extra/*  # note\n";

    fn basic(user: &str, pw: &str) -> Vec<u8> {
        // "user:pw" in base64, by a tiny encoder for the test.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let raw = format!("{user}:{pw}").into_bytes();
        let mut s = String::from("Basic ");
        for c in raw.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s.into_bytes()
    }

    #[test]
    fn guards_matching_channels_only() {
        let auth = Auth::parse(FILE).unwrap();
        assert!(auth.guarded("acme/incoming"));
        assert!(auth.guarded("private"));
        assert!(!auth.guarded("privateer"));
        assert!(!auth.guarded("public"));
        assert!(auth.allows("public", None));
        assert!(!auth.allows("acme/incoming", None));
        assert!(auth.allows("acme/incoming", Some(&basic("acme", "s3cret"))));
        assert!(!auth.allows("acme/incoming", Some(&basic("acme", "s3cre"))));
        assert!(!auth.allows("acme/incoming", Some(&basic("bob", "pw"))));
        assert!(auth.allows("extra/x", Some(&basic("bob", "pw"))));
        assert!(!auth.allows("acme/x", Some(b"Bearer abc")));
        assert!(!auth.allows("acme/x", Some(b"Basic !!!!")));
        let r = auth.check("private", None).unwrap_err();
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| *n == "WWW-Authenticate" && v == "Basic realm=\"tidings\""));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Auth::parse("nopassword chan").is_err());
        assert!(Auth::parse("user:pw").is_err());
        assert!(Auth::parse(":pw chan").is_err());
        assert!(Auth::parse("# only comments\n\n").unwrap().users.is_empty());
        let auth = Auth::parse(FILE).unwrap();
        let users: Vec<_> = auth.users().collect();
        assert_eq!(users, [("acme", &b"s3cret"[..]), ("bob", &b"pw"[..])]);
    }

    #[test]
    fn base64_and_constant_time_eq() {
        assert_eq!(
            base64_decode(b"YWxhZGRpbjpvcGVuc2VzYW1l").unwrap(),
            b"aladdin:opensesame"
        );
        assert_eq!(base64_decode(b"YQ==").unwrap(), b"a");
        assert!(base64_decode(b"Y").is_none());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"\xff"));
    }
}
