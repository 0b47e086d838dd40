//! Message over XMPP, the stream level (PROTOCOLS.md 4.1), over raw TCP: header and features,
//! SASL PLAIN and SCRAM-SHA-1, three failures, restart and bind, bind conflict, ping, roster,
//! disco, message routing between sessions on different workers, every stream error, the
//! header timeout, and the end of the stream at shutdown.

#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use xmpp_support::*;

#[test]
fn header_features_and_the_demo_account() {
    let server = xmpp(|_| {});
    let mut c = connect(&server);
    let r = open(&mut c);
    assert!(r.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='"), "{r}");
    assert!(r.contains("from='localhost' version='1.0' xml:lang='en'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"), "{r}");
    let id = r.split("id='").nth(1).unwrap().split('\'').next().unwrap();
    assert_eq!(id.len(), 32, "an unguessable id");
    drop(c);
    let mut c = connect(&server);
    assert_eq!(
        login(&mut c, "user", "secret", "desk"),
        "user@localhost/desk"
    );
    c.send(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        text(c.read_until(b"/>", TIMEOUT)),
        "<iq type='result' id='p1'/>"
    );
    c.send(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    assert_eq!(
        text(c.read_until(b"</iq>", TIMEOUT)),
        "<iq type='result' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
    );
    server.wait_metric("tidings_xmpp_sessions", 1.0);
    c.send(b"</stream:stream>");
    assert_eq!(text(c.read_to_eof()), "</stream:stream>");
    server.wait_metric("tidings_xmpp_sessions", 0.0);
}

#[test]
fn users_come_from_the_credentials_file() {
    let dir = std::env::temp_dir().join(format!("tidings-xmpp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(&file, "alice:wonderland private/*\n").unwrap();
    let server = start_with(|c| {
        c.xmpp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.credentials = Some(file.clone());
    });
    let mut c = connect(&server);
    assert_eq!(
        login(&mut c, "alice", "wonderland", "r"),
        "alice@localhost/r"
    );
    let mut demo = connect(&server);
    open(&mut demo);
    demo.send(
        format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
            B64.encode("\0user\0secret")
        )
        .as_bytes(),
    );
    assert!(
        text(demo.read_until(b"</failure>", TIMEOUT)).contains("<not-authorized/>"),
        "no demo account once there are users"
    );
}

#[test]
fn scram_sha1_against_the_server() {
    use hmac::{Hmac, Mac};
    use sha1::{Digest, Sha1};
    let server = xmpp(|_| {});
    let mut c = connect(&server);
    open(&mut c);
    let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
    c.send(
        format!(
            "<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>{}</auth>",
            B64.encode(format!("n,,{client_first_bare}"))
        )
        .as_bytes(),
    );
    let r = text(c.read_until(b"</challenge>", TIMEOUT));
    let challenge = r.split('>').nth(1).unwrap().split('<').next().unwrap();
    let server_first = String::from_utf8(B64.decode(challenge).unwrap()).unwrap();
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0;
    for a in server_first.split(',') {
        match a.split_at(2) {
            ("r=", v) => nonce = v,
            ("s=", v) => salt = B64.decode(v).unwrap(),
            ("i=", v) => iterations = v.parse().unwrap(),
            _ => {}
        }
    }
    let mut salted = [0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(b"secret", &salt, iterations, &mut salted);
    let hmac = |k: &[u8], d: &[u8]| {
        let mut m = Hmac::<Sha1>::new_from_slice(k).unwrap();
        m.update(d);
        m.finalize().into_bytes()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha1::digest(client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    c.send(
        format!(
            "<response xmlns='{SASL}'>{}</response>",
            B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
        )
        .as_bytes(),
    );
    let r = text(c.read_until(b"</success>", TIMEOUT));
    let server_key = hmac(&salted, b"Server Key");
    let expected = format!(
        "v={}",
        B64.encode(hmac(&server_key, auth_message.as_bytes()))
    );
    assert_eq!(
        r,
        format!("<success xmlns='{SASL}'>{}</success>", B64.encode(expected))
    );
}

#[test]
fn three_bad_passwords_close_the_stream() {
    let server = xmpp(|_| {});
    let mut c = connect(&server);
    open(&mut c);
    let bad = B64.encode("\0user\0nope");
    for _ in 0..2 {
        c.send(format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{bad}</auth>").as_bytes());
        assert_eq!(
            text(c.read_until(b"</failure>", TIMEOUT)),
            format!("<failure xmlns='{SASL}'><not-authorized/></failure>")
        );
    }
    c.send(format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{bad}</auth>").as_bytes());
    assert_eq!(
        text(c.read_to_eof()),
        format!("<failure xmlns='{SASL}'><not-authorized/></failure></stream:stream>")
    );
}

#[test]
fn messages_go_to_full_and_bare_jids_across_workers_with_the_sender_stamped() {
    let server = xmpp(|_| {});
    let mut bobs: Vec<Client> = (0..4).map(|_| connect(&server)).collect();
    for (i, b) in bobs.iter_mut().enumerate() {
        login(b, "user", "secret", &format!("bob{i}"));
    }
    let mut alice = connect(&server);
    login(&mut alice, "user", "secret", "alice");
    alice.send(b"<message to='user@localhost/bob2' from='forged@elsewhere' type='chat'><body>just you</body></message>");
    let got = text(bobs[2].read_until(b"</message>", TIMEOUT));
    assert_eq!(got, "<message from='user@localhost/alice' to='user@localhost/bob2' type='chat'><body>just you</body></message>");
    bobs[0].expect_silence(Duration::from_millis(100));
    alice.send(b"<message to='user@localhost'><body>all of you</body></message>");
    for b in bobs.iter_mut() {
        assert!(text(b.read_until(b"</message>", TIMEOUT)).contains("all of you"));
    }
    assert!(
        text(alice.read_until(b"</message>", TIMEOUT)).contains("all of you"),
        "the sender's own bare JID includes it"
    );
    // Nobody online: dropped silently, the stream goes on.
    alice.send(b"<message to='nobody@localhost'><body>x</body></message><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        text(alice.read_until(b"/>", TIMEOUT)),
        "<iq type='result' id='p'/>"
    );
}

#[test]
fn binding_a_bound_full_jid_replaces_the_older_session() {
    let server = xmpp(|_| {});
    let mut old = connect(&server);
    login(&mut old, "user", "secret", "same");
    let mut new = connect(&server);
    login(&mut new, "user", "secret", "same");
    let end = text(old.read_to_eof());
    assert_eq!(end, "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
    new.send(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        text(new.read_until(b"/>", TIMEOUT)),
        "<iq type='result' id='p'/>"
    );
}

fn stream_error_after(
    input: &[u8],
    opened: bool,
    condition: &str,
    tweak: impl FnOnce(&mut tidings::Config),
) {
    let server = start_with(|c| {
        c.xmpp_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    });
    let mut c = connect(&server);
    if opened {
        open(&mut c);
    }
    c.send(input);
    let r = text(c.read_to_eof());
    assert!(
        r.ends_with(&format!("<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")),
        "{condition}: {r}"
    );
    // Nothing else broke: the server still serves.
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn every_stream_error() {
    stream_error_after(
        b"<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
        true,
        "not-authorized",
        |_| {},
    );
    stream_error_after(b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", false, "restricted-xml", |_| {});
    stream_error_after(
        b"<message><body>&xxe;</body></message>",
        true,
        "restricted-xml",
        |_| {},
    );
    stream_error_after(b"\x00\x01garbage<<>>", false, "not-well-formed", |_| {});
    stream_error_after(b"<stream:stream to='elsewhere' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", false, "host-unknown", |_| {});
    stream_error_after(b"<stream:stream to='localhost' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>", false, "invalid-namespace", |_| {});
    let big = format!("<message><body>{}</body></message>", "x".repeat(5000));
    stream_error_after(big.as_bytes(), true, "policy-violation", |c| {
        c.max_message_bytes = 4096
    });
    let deep = "<a>".repeat(100_000);
    stream_error_after(deep.as_bytes(), true, "policy-violation", |_| {});
}

#[test]
fn an_unauthenticated_stream_is_closed_at_the_header_timeout() {
    let server = start_with(|c| {
        c.xmpp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.header_timeout = Duration::from_millis(500);
    });
    let mut c = connect(&server);
    open(&mut c);
    c.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mecha");
    c.expect_closed_within(Duration::from_secs(3));
}

#[test]
fn shutdown_ends_every_stream() {
    let server = xmpp(|_| {});
    let mut c = connect(&server);
    login(&mut c, "user", "secret", "r");
    server.handle.shutdown();
    assert_eq!(text(c.read_to_eof()), "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
}

#[test]
fn an_xmpp_connection_past_max_connections_is_refused() {
    let server = start_with(|c| {
        c.xmpp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.max_connections = 1;
        c.admin_connections = 4;
    });
    let mut first = connect(&server);
    open(&mut first);
    // The admin reserve is HTTP's; an XMPP client past the limit is closed at once.
    let mut second = connect(&server);
    assert_eq!(text(second.read_to_eof()), "");
    assert_eq!(server.metrics().connections_refused.get(), 1);
    assert_eq!(
        server.get("/health").status,
        200,
        "the reserve still answers /health"
    );
}
