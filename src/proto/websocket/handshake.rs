//! The opening handshake (RFC 6455 4.2) as nchan answers it (NCHAN.md 4, 6.2, D1, D8):
//! whether a request asks for a WebSocket, nchan's `400` bodies when it asks badly, the
//! accept key, the `ws+meta.nchan` subprotocol, and the exact `101` head.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::http::{trim, Method};

/// The GUID every accept key is made with (RFC 6455 1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// nchan's subprotocol: every message frame starts with its id and content type.
pub const META_PROTOCOL: &str = "ws+meta.nchan";

/// nchan's `400` bodies (`text/plain`, no trailing newline), in the order it checks.
const NO_VERSION: &str = "No Sec-Websocket-Version header present";
const BAD_VERSION: &str = "Unsupported websocket protocol version (only version 13 is supported)";
const NO_KEY: &str = "No Sec-Websocket-Key header present";

/// What a request is, as far as WebSocket goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Not a WebSocket request: serve it as plain HTTP.
    No,
    /// A WebSocket request that cannot be accepted: answer `400 Bad Request`,
    /// `Content-Type: text/plain`, with exactly this body, and close.
    Refuse(&'static str),
    /// Accept: write [`Accept::write_head`], then speak WebSocket.
    Accept(Accept),
}

/// An accepted handshake: the accept key and the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    key: [u8; 28],
    /// `ws+meta.nchan` was offered: it is echoed and every message frame carries the
    /// [`super::meta_prefix`].
    pub meta: bool,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(GUID.as_bytes())
        .finalize();
    let mut out = [0u8; 28];
    // 20 bytes are always 28 base64 characters with padding.
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("base64 of 20 bytes fits 28");
    debug_assert_eq!(n, out.len());
    out
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// Whether a `Sec-WebSocket-Version` value is 13 (as nginx's `ngx_atoi` reads it: decimal
/// digits only).
fn is_version_13(v: &[u8]) -> bool {
    let digits = trim(v);
    let significant = &digits[digits.iter().take_while(|&&b| b == b'0').count()..];
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && significant == b"13"
}

/// Decides a request's handshake from its method, HTTP minor version (0 for HTTP/1.0) and
/// headers (name, value; any order; repeated names allowed).
///
/// A WebSocket request is a `GET` over HTTP/1.1 whose `Connection` has the token `upgrade`
/// and whose `Upgrade` has the token `websocket` (both case-insensitive); anything else is
/// [`Upgrade::No`] (an HTTP/1.0 `Upgrade` is ignored, RFC 9110 7.8). Then, as nchan checks:
/// a `Sec-WebSocket-Version` (the first one) must be present and be 13, a
/// `Sec-WebSocket-Key` (the first one) must be present and not empty, else
/// [`Upgrade::Refuse`] with nchan's body. The key is not checked further (nchan does not).
/// Meta mode is on when any `Sec-WebSocket-Protocol` lists `ws+meta.nchan` (D1: otherwise no
/// subprotocol is answered, not nchan's empty header). Extensions are never negotiated (D8).
pub fn upgrade<'h, N, I>(method: Method, minor: u8, headers: I) -> Upgrade
where
    N: AsRef<[u8]>,
    I: IntoIterator<Item = (N, &'h [u8])>,
{
    if method != Method::Get || minor == 0 {
        return Upgrade::No;
    }
    let mut connection_upgrade = false;
    let mut upgrade_websocket = false;
    let mut version: Option<&[u8]> = None;
    let mut key: Option<&[u8]> = None;
    let mut meta = false;
    for (name, value) in headers {
        let name = name.as_ref();
        if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_websocket |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            version.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            key.get_or_insert(trim(value));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            meta |= tokens(value).any(|t| t == META_PROTOCOL.as_bytes());
        }
    }
    if !connection_upgrade || !upgrade_websocket {
        return Upgrade::No;
    }
    match version {
        None => return Upgrade::Refuse(NO_VERSION),
        Some(v) if !is_version_13(v) => return Upgrade::Refuse(BAD_VERSION),
        Some(_) => {}
    }
    match key {
        Some(k) if !k.is_empty() => Upgrade::Accept(Accept {
            key: accept_key(k),
            meta,
        }),
        _ => Upgrade::Refuse(NO_KEY),
    }
}

impl Accept {
    /// The `Sec-WebSocket-Accept` value.
    pub fn key(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap_or("")
    }

    /// Appends the `101 Switching Protocols` head to `out`, byte for byte as nchan sends it
    /// (NCHAN.md 6.2; no `Date`, no `Server`). With `cors_origin` (the request's `Origin`)
    /// it adds `Access-Control-Allow-Origin: <origin>` and
    /// `Access-Control-Allow-Credentials: true` where nchan puts them, after the subprotocol;
    /// an origin holding a control character is left out rather than written.
    pub fn write_head(&self, cors_origin: Option<&[u8]>, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\nConnection: upgrade\r\n",
        );
        if self.meta {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ws+meta.nchan\r\n");
        }
        let safe = |o: &&[u8]| !o.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7F);
        if let Some(origin) = cors_origin.filter(safe) {
            out.extend_from_slice(b"Access-Control-Allow-Origin: ");
            out.extend_from_slice(origin);
            out.extend_from_slice(b"\r\nAccess-Control-Allow-Credentials: true\r\n");
        }
        out.extend_from_slice(b"Sec-WebSocket-Accept: ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(b"\r\nUpgrade: websocket\r\n\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type H = (&'static str, &'static [u8]);

    const GOOD: &[H] = &[
        ("Host", b"example.com"),
        ("Upgrade", b"websocket"),
        ("Connection", b"Upgrade"),
        ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", b"13"),
    ];

    fn with(extra: &[H], without: &[&str]) -> Vec<H> {
        GOOD.iter()
            .filter(|(n, _)| !without.contains(n))
            .chain(extra)
            .copied()
            .collect()
    }

    fn decide(headers: &[H]) -> Upgrade {
        upgrade(Method::Get, 1, headers.iter().copied())
    }

    fn accepted(headers: &[H]) -> Accept {
        match decide(headers) {
            Upgrade::Accept(a) => a,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn the_rfc_6455_accept_key_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(accepted(GOOD).key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn the_head_is_nchans_byte_for_byte() {
        let mut out = Vec::new();
        accepted(GOOD).write_head(None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn meta_mode_echoes_the_subprotocol_and_cors_follows_it() {
        let a = accepted(&with(&[("Sec-WebSocket-Protocol", b"ws+meta.nchan")], &[]));
        assert!(a.meta);
        let mut out = Vec::new();
        a.write_head(Some(b"https://a.example"), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Protocol: ws+meta.nchan\r\n\
             Access-Control-Allow-Origin: https://a.example\r\n\
             Access-Control-Allow-Credentials: true\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn an_origin_with_a_control_character_is_not_written() {
        let mut out = Vec::new();
        accepted(GOOD).write_head(Some(b"x\r\nSet-Cookie: a=b"), &mut out);
        assert!(!out.windows(7).any(|w| w == b"Access-"));
    }

    #[test]
    fn the_subprotocol_anywhere_in_the_offers_turns_meta_mode_on() {
        for offers in [
            &[("Sec-WebSocket-Protocol", &b"foo, ws+meta.nchan"[..])][..],
            &[("sec-websocket-protocol", b" chat ,ws+meta.nchan ")],
            &[
                ("Sec-WebSocket-Protocol", b"foo"),
                ("Sec-WebSocket-Protocol", b"ws+meta.nchan"),
            ],
        ] {
            assert!(accepted(&with(offers, &[])).meta, "{offers:?}");
        }
        // D1: anything else gets no Sec-WebSocket-Protocol at all (nchan's is empty).
        for offers in [
            &[("Sec-WebSocket-Protocol", &b"foo"[..])][..],
            &[("Sec-WebSocket-Protocol", b"ws+meta.nchanx, WS+META.NCHAN")],
            &[("Sec-WebSocket-Protocol", b"")],
            &[],
        ] {
            let a = accepted(&with(offers, &[]));
            assert!(!a.meta, "{offers:?}");
            let mut out = Vec::new();
            a.write_head(None, &mut out);
            assert!(!out.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
        }
    }

    #[test]
    fn extensions_are_never_negotiated() {
        let a = accepted(&with(
            &[(
                "Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits",
            )],
            &[],
        ));
        let mut out = Vec::new();
        a.write_head(None, &mut out);
        assert!(!out.windows(10).any(|w| w == b"Extensions"));
    }

    #[test]
    fn what_is_not_a_websocket_request() {
        let cases: &[(Method, u8, Vec<H>)] = &[
            (Method::Post, 1, with(&[], &[])),
            (Method::Head, 1, with(&[], &[])),
            (Method::Get, 0, with(&[], &[])),
            (Method::Get, 1, with(&[], &["Connection"])),
            (Method::Get, 1, with(&[], &["Upgrade"])),
            (
                Method::Get,
                1,
                with(&[("Connection", b"keep-alive")], &["Connection"]),
            ),
            (Method::Get, 1, with(&[("Upgrade", b"h2c")], &["Upgrade"])),
            (Method::Get, 1, vec![]),
        ];
        for (method, minor, headers) in cases {
            assert_eq!(
                upgrade(*method, *minor, headers.iter().copied()),
                Upgrade::No,
                "{method:?} 1.{minor} {headers:?}"
            );
        }
    }

    #[test]
    fn connection_and_upgrade_are_token_lists_in_any_case() {
        for (conn, up) in [
            (&b"keep-alive, Upgrade"[..], &b"websocket"[..]),
            (b"UPGRADE", b"WebSocket"),
            (b"upgrade ,close", b" websocket , foo"),
        ] {
            let h = with(
                &[("connection", conn), ("UPGRADE", up)],
                &["Connection", "Upgrade"],
            );
            assert!(matches!(decide(&h), Upgrade::Accept(_)), "{h:?}");
        }
    }

    #[test]
    fn nchans_refusals_in_nchans_order() {
        let cases: &[(Vec<H>, &str)] = &[
            (
                with(&[], &["Sec-WebSocket-Version"]),
                "No Sec-Websocket-Version header present",
            ),
            (
                with(&[], &["Sec-WebSocket-Version", "Sec-WebSocket-Key"]),
                "No Sec-Websocket-Version header present",
            ),
            (
                with(
                    &[("Sec-WebSocket-Version", b"8")],
                    &["Sec-WebSocket-Version"],
                ),
                "Unsupported websocket protocol version (only version 13 is supported)",
            ),
            (
                with(
                    &[("Sec-WebSocket-Version", b"13, 8")],
                    &["Sec-WebSocket-Version", "Sec-WebSocket-Key"],
                ),
                "Unsupported websocket protocol version (only version 13 is supported)",
            ),
            (
                with(
                    &[("Sec-WebSocket-Version", b"")],
                    &["Sec-WebSocket-Version"],
                ),
                "Unsupported websocket protocol version (only version 13 is supported)",
            ),
            (
                with(&[], &["Sec-WebSocket-Key"]),
                "No Sec-Websocket-Key header present",
            ),
            (
                with(&[("Sec-WebSocket-Key", b"  ")], &["Sec-WebSocket-Key"]),
                "No Sec-Websocket-Key header present",
            ),
        ];
        for (headers, body) in cases {
            assert_eq!(decide(headers), Upgrade::Refuse(body), "{headers:?}");
        }
    }

    #[test]
    fn version_13_as_nginx_reads_it_and_the_first_header_counts() {
        for v in [&b"13"[..], b" 13 ", b"013"] {
            let h = with(&[("Sec-WebSocket-Version", v)], &["Sec-WebSocket-Version"]);
            assert!(matches!(decide(&h), Upgrade::Accept(_)), "{v:?}");
        }
        let h = with(
            &[
                ("Sec-WebSocket-Version", b"8"),
                ("Sec-WebSocket-Version", b"13"),
            ],
            &["Sec-WebSocket-Version"],
        );
        assert!(matches!(decide(&h), Upgrade::Refuse(_)));
        let h = with(
            &[("Sec-WebSocket-Key", b"x3JJHMbDL1EzLkh9GBhXDw==")],
            &["Sec-WebSocket-Key"],
        );
        let extra_key = [("Sec-WebSocket-Key", &b"other"[..])];
        let first = accepted(&h);
        let both = accepted(&[h.as_slice(), &extra_key].concat());
        assert_eq!(first, both);
        assert_eq!(first.key(), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    }
}
