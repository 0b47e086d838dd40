//! Helpers for the XMPP integration tests (`tests/xmpp_*.rs`), on top of the shared core in
//! `tests/common`: a server with the XMPP listener on port 0, and a raw-TCP client that opens
//! a stream, logs in with PLAIN and binds.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

pub use common::*;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// The client's stream header.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// A server with the XMPP listener on `127.0.0.1:0`, the configuration changed by `tweak`.
pub fn xmpp(tweak: impl FnOnce(&mut tidings::Config)) -> TestServer {
    start_with(|c| {
        c.xmpp_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
}

/// A new connection to the XMPP listener.
pub fn connect(server: &TestServer) -> Client {
    Client::connect(server.xmpp.expect("the XMPP listener is on"))
}

pub fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).expect("UTF-8 from the server")
}

/// Opens a stream and reads the header and features.
pub fn open(c: &mut Client) -> String {
    c.send(HEADER.as_bytes());
    text(c.read_until(b"</stream:features>", TIMEOUT))
}

/// Logs in with PLAIN, restarts, binds `resource`; returns the bound JID.
pub fn login(c: &mut Client, user: &str, password: &str, resource: &str) -> String {
    open(c);
    let auth = B64.encode(format!("\0{user}\0{password}"));
    c.send(format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{auth}</auth>").as_bytes());
    assert_eq!(
        text(c.read_until(b"/>", TIMEOUT)),
        format!("<success xmlns='{SASL}'/>")
    );
    let features = open(c);
    assert!(
        features.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
        "{features}"
    );
    c.send(format!("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>").as_bytes());
    let r = text(c.read_until(b"</iq>", TIMEOUT));
    r.split("<jid>")
        .nth(1)
        .and_then(|s| s.split("</jid>").next())
        .unwrap_or_else(|| panic!("no jid in {r}"))
        .to_string()
}

/// A new connection, logged in and bound.
pub fn session(server: &TestServer, user: &str, password: &str, resource: &str) -> Client {
    let mut c = connect(server);
    login(&mut c, user, password, resource);
    c
}

/// Sends `<iq type=TYPE id=ID><NAME xmlns='urn:M' [method=M]>base64(COMMAND)</NAME></iq>`
/// and returns the reply stanza.
pub fn iq(
    c: &mut Client,
    kind: &str,
    id: &str,
    name: &str,
    method: Option<&str>,
    command: &str,
) -> String {
    let method = method.map(|m| format!(" method='{m}'")).unwrap_or_default();
    c.send(
        format!(
            "<iq type='{kind}' id='{id}'><{name} xmlns='urn:M'{method}>{}</{name}></iq>",
            B64.encode(command)
        )
        .as_bytes(),
    );
    text(c.read_until(b"</iq>", TIMEOUT))
}

/// The decoded JSON of a result stanza.
pub fn result_json(reply: &str) -> String {
    assert!(
        reply.starts_with("<iq type='result'"),
        "not a result: {reply}"
    );
    let b64 = reply
        .split("xmlns='urn:M'")
        .nth(1)
        .unwrap()
        .split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    String::from_utf8(B64.decode(b64).unwrap()).unwrap()
}
