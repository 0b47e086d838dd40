//! SASL for XMPP (RFC 6120 6): `PLAIN` (RFC 4616) and `SCRAM-SHA-1` (RFC 5802, no channel
//! binding). Sans-io: the session hands in the client's decoded messages and gets back what
//! to answer. The primitives (SHA-1, HMAC, PBKDF2, base64, random nonces) come from
//! well-kept crates; secrets are compared in constant time (`subtle`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations for SCRAM (RFC 5802's example and the common default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Where the mechanisms look up a user's password.
pub trait Users {
    /// The password of `user`, if the user exists.
    fn password(&self, user: &str) -> Option<Vec<u8>>;
}

/// Why an authentication failed (each answers `<failure><not-authorized/></failure>`,
/// except a malformed exchange, which answers `<malformed-request/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotAuthorized,
    MalformedRequest,
    InvalidMechanism,
    /// The server could not take part (no random source for a nonce).
    TemporaryAuthFailure,
}

impl Failure {
    /// The condition element's name (RFC 6120 6.5).
    pub fn condition(self) -> &'static str {
        match self {
            Failure::NotAuthorized => "not-authorized",
            Failure::MalformedRequest => "malformed-request",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// The next step of an exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `<challenge>` with these bytes (base64-encoded by the session).
    Challenge(Vec<u8>),
    /// Send `<success>` with these bytes (empty: no additional data); the user is in.
    Success {
        user: String,
        data: Vec<u8>,
    },
    Fail(Failure),
}

/// An exchange in progress.
pub enum Exchange {
    /// SCRAM after the server-first message.
    Scram(ScramServer),
}

/// Starts an exchange from `<auth mechanism='…'>` and its decoded initial response.
pub fn start(mechanism: &str, initial: &[u8], users: &dyn Users) -> (Step, Option<Exchange>) {
    match mechanism {
        "PLAIN" => (plain(initial, users), None),
        "SCRAM-SHA-1" => match ScramServer::first(initial, users) {
            Ok((scram, server_first)) => (
                Step::Challenge(server_first.into_bytes()),
                Some(Exchange::Scram(scram)),
            ),
            Err(f) => (Step::Fail(f), None),
        },
        _ => (Step::Fail(Failure::InvalidMechanism), None),
    }
}

impl Exchange {
    /// The client's `<response>` (decoded).
    pub fn respond(self, response: &[u8]) -> Step {
        match self {
            Exchange::Scram(s) => s.last(response),
        }
    }
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`. An authzid other than the user is refused.
fn plain(message: &[u8], users: &dyn Users) -> Step {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail(Failure::MalformedRequest);
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return Step::Fail(Failure::MalformedRequest);
    };
    if !authzid.is_empty() && !user_matches_authzid(user, authzid) {
        return Step::Fail(Failure::NotAuthorized);
    }
    let stored = users.password(user);
    // Compare against something even for an unknown user, so timing says nothing.
    let expected = stored.as_deref().unwrap_or(b"\x00unknown user\x00");
    let same: bool = expected.ct_eq(password).into();
    if same && stored.is_some() {
        Step::Success {
            user: user.to_string(),
            data: Vec::new(),
        }
    } else {
        Step::Fail(Failure::NotAuthorized)
    }
}

fn user_matches_authzid(user: &str, authzid: &[u8]) -> bool {
    let authzid = String::from_utf8_lossy(authzid);
    authzid == user || authzid.split('@').next() == Some(user)
}

type HmacSha1 = Hmac<Sha1>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A SCRAM-SHA-1 exchange after the server-first message.
pub struct ScramServer {
    user: Option<String>,
    salted_password: [u8; 20],
    nonce: String,
    /// `client-first-message-bare "," server-first-message`: the start of the AuthMessage.
    auth_start: String,
    gs2_header: String,
}

impl ScramServer {
    /// Reads client-first (`gs2-header client-first-message-bare`) and makes server-first.
    fn first(message: &[u8], users: &dyn Users) -> Result<(ScramServer, String), Failure> {
        let mut salt = [0u8; 16];
        let mut snonce = [0u8; 18];
        if !fill_random(&mut salt) || !fill_random(&mut snonce) {
            // No unguessable nonce, no SCRAM: the client may try again, or PLAIN.
            crate::error!("the operating system's random source failed: SCRAM refused");
            return Err(Failure::TemporaryAuthFailure);
        }
        Self::first_with(message, users, &salt, &B64.encode(snonce))
    }

    fn first_with(
        message: &[u8],
        users: &dyn Users,
        salt: &[u8],
        server_nonce: &str,
    ) -> Result<(ScramServer, String), Failure> {
        let text = std::str::from_utf8(message).map_err(|_| Failure::MalformedRequest)?;
        // gs2-header: "n,," or "y,," (no channel binding); "p=" asks for binding we lack.
        let (cbind, rest) = text.split_once(',').ok_or(Failure::MalformedRequest)?;
        let (authzid, bare) = rest.split_once(',').ok_or(Failure::MalformedRequest)?;
        if !matches!(cbind, "n" | "y") {
            return Err(Failure::NotAuthorized);
        }
        let gs2_header = format!("{cbind},{authzid},");
        let mut user = None;
        let mut cnonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = Some(unescape_username(v)?),
                Some(("r", v)) => cnonce = Some(v),
                Some(("m", _)) => return Err(Failure::MalformedRequest),
                _ => {}
            }
        }
        let (Some(user), Some(cnonce)) = (user, cnonce) else {
            return Err(Failure::MalformedRequest);
        };
        if cnonce.is_empty() || cnonce.contains(',') {
            return Err(Failure::MalformedRequest);
        }
        let password = users.password(&user);
        // An unknown user gets an exchange that can only fail, indistinguishable from a
        // known one until the end (RFC 5802 5.1).
        let salted_password = {
            let mut out = [0u8; 20];
            let p = password.as_deref().unwrap_or(b"");
            pbkdf2::pbkdf2_hmac::<Sha1>(p, salt, SCRAM_ITERATIONS, &mut out);
            out
        };
        let nonce = format!("{cnonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={SCRAM_ITERATIONS}", B64.encode(salt));
        let scram = ScramServer {
            user: password.map(|_| user),
            salted_password,
            nonce,
            auth_start: format!("{bare},{server_first}"),
            gs2_header,
        };
        Ok((scram, server_first))
    }

    /// Reads client-final (`c=…,r=…,p=…`): success with the server signature, or failure.
    fn last(self, message: &[u8]) -> Step {
        let Ok(text) = std::str::from_utf8(message) else {
            return Step::Fail(Failure::MalformedRequest);
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return Step::Fail(Failure::MalformedRequest);
        };
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => channel = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        let expected_channel = B64.encode(self.gs2_header.as_bytes());
        if channel != Some(expected_channel.as_str()) || nonce != Some(self.nonce.as_str()) {
            return Step::Fail(Failure::NotAuthorized);
        }
        let Ok(proof) = B64.decode(proof) else {
            return Step::Fail(Failure::MalformedRequest);
        };
        if proof.len() != 20 {
            return Step::Fail(Failure::NotAuthorized);
        }
        let auth_message = format!("{},{without_proof}", self.auth_start);
        let client_key = hmac(&self.salted_password, b"Client Key");
        let stored_key: [u8; 20] = Sha1::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut candidate = [0u8; 20];
        for (i, c) in candidate.iter_mut().enumerate() {
            *c = proof[i] ^ signature[i];
        }
        let candidate_stored: [u8; 20] = Sha1::digest(candidate).into();
        let ok: bool = candidate_stored.ct_eq(&stored_key).into();
        match (ok, self.user) {
            (true, Some(user)) => {
                let server_key = hmac(&self.salted_password, b"Server Key");
                let server_signature = hmac(&server_key, auth_message.as_bytes());
                Step::Success {
                    user,
                    data: format!("v={}", B64.encode(server_signature)).into_bytes(),
                }
            }
            _ => Step::Fail(Failure::NotAuthorized),
        }
    }
}

/// `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn unescape_username(v: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(Failure::MalformedRequest),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills `buf` from the operating system's random source. `false` if it failed (then `buf`
/// must not be used for anything that has to be unguessable).
#[must_use]
pub fn fill_random(buf: &mut [u8]) -> bool {
    getrandom::getrandom(buf).is_ok()
}

/// Decodes a SASL payload: `=` is an empty response; anything else is base64.
pub fn decode_payload(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    if t == "=" || t.is_empty() {
        return Some(Vec::new());
    }
    B64.decode(t).ok()
}

/// Encodes a SASL payload (`=` for empty, as RFC 6120 6.4.2 asks).
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_string()
    } else {
        B64.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str, &'static str);
    impl Users for One {
        fn password(&self, user: &str) -> Option<Vec<u8>> {
            (user == self.0).then(|| self.1.as_bytes().to_vec())
        }
    }

    #[test]
    fn plain_good_bad_and_malformed() {
        let users = One("user", "secret");
        assert_eq!(
            plain(b"\0user\0secret", &users),
            Step::Success {
                user: "user".into(),
                data: vec![]
            }
        );
        assert_eq!(
            plain(b"user@localhost\0user\0secret", &users),
            Step::Success {
                user: "user".into(),
                data: vec![]
            }
        );
        assert_eq!(
            plain(b"\0user\0wrong", &users),
            Step::Fail(Failure::NotAuthorized)
        );
        assert_eq!(
            plain(b"\0nobody\0secret", &users),
            Step::Fail(Failure::NotAuthorized)
        );
        assert_eq!(
            plain(b"\0user\0", &users),
            Step::Fail(Failure::NotAuthorized)
        );
        assert_eq!(
            plain(b"usersecret", &users),
            Step::Fail(Failure::MalformedRequest)
        );
        assert_eq!(
            plain(b"bob\0user\0secret", &users),
            Step::Fail(Failure::NotAuthorized)
        );
    }

    /// RFC 5802 section 5's example exchange, byte for byte.
    #[test]
    fn scram_sha1_rfc5802_example() {
        let users = One("user", "pencil");
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let (scram, server_first) = ScramServer::first_with(
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &users,
            &salt,
            "3rfcNHYJY1ZVvWVs7j",
        )
        .unwrap();
        assert_eq!(
            server_first,
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let step = scram.last(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        );
        assert_eq!(
            step,
            Step::Success {
                user: "user".into(),
                data: b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec()
            }
        );
    }

    #[test]
    fn scram_refuses_a_wrong_proof_a_wrong_nonce_and_an_unknown_user() {
        let users = One("user", "pencil");
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let first = |msg: &[u8]| ScramServer::first_with(msg, &users, &salt, "3rfcNHYJY1ZVvWVs7j");
        let (scram, _) = first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(
            scram.last(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=AAAAv3Bz2T0CJGbJQyF0X+HI4Ts="),
            Step::Fail(Failure::NotAuthorized)
        );
        let (scram, _) = first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(
            scram.last(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawLother,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Step::Fail(Failure::NotAuthorized)
        );
        let (scram, _) = first(b"n,,n=mallory,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(
            scram.last(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Step::Fail(Failure::NotAuthorized)
        );
        assert!(matches!(
            first(b"p=tls-unique,,n=user,r=abc"),
            Err(Failure::NotAuthorized)
        ));
        assert!(matches!(first(b"n,,r=abc"), Err(Failure::MalformedRequest)));
        assert!(matches!(
            first(b"n,,n=us=er,r=abc"),
            Err(Failure::MalformedRequest)
        ));
    }

    #[test]
    fn usernames_and_payloads() {
        assert_eq!(unescape_username("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode_payload("="), Some(vec![]));
        assert_eq!(
            decode_payload("AHVzZXIAc2VjcmV0"),
            Some(b"\0user\0secret".to_vec())
        );
        assert_eq!(decode_payload("***"), None);
        assert_eq!(encode_payload(b""), "=");
    }
}
