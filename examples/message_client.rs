//! A command-line Message client, as the reference's `demo-client.py` was: log in over XMPP,
//! send one urn:M command, print the decoded JSON answer.
//!
//! ```text
//! cargo run --example message_client -- get-item '/'
//! cargo run --example message_client -- set-item '[{"method": "create", "data": {"_path": "/example", "_kind": "Page"}}]'
//! cargo run --example message_client -- get-schema Page
//! cargo run --example message_client -- --server 127.0.0.1:5222 --user user --password secret get-user ''
//! ```
//!
//! The command is `VERB-NAME` (`get-item`, `set-item`, `get-user`, `set-user`, `get-schema`)
//! and its argument (a path query, or a JSON array of actions for `set-*`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

struct Args {
    server: String,
    user: String,
    password: String,
    domain: String,
    verb: String,
    name: String,
    argument: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: "127.0.0.1:5222".into(),
        user: "user".into(),
        password: "secret".into(),
        domain: "localhost".into(),
        verb: String::new(),
        name: String::new(),
        argument: String::new(),
    };
    let mut rest = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{what} needs a value"));
        match arg.as_str() {
            "--server" => a.server = value("--server")?,
            "--user" => a.user = value("--user")?,
            "--password" => a.password = value("--password")?,
            "--domain" => a.domain = value("--domain")?,
            _ => rest.push(arg),
        }
    }
    let [command, argument] = <[String; 2]>::try_from(rest)
        .map_err(|_| "usage: message_client [--server ADDR] [--user U] [--password P] [--domain D] VERB-NAME ARGUMENT".to_string())?;
    let (verb, name) = command
        .split_once('-')
        .ok_or(format!("{command}: expected VERB-NAME, such as get-item"))?;
    a.verb = verb.to_string();
    a.name = name.to_string();
    a.argument = argument;
    Ok(a)
}

/// Reads until `end` appears in what arrived; returns everything read.
fn read_until(sock: &mut TcpStream, buf: &mut Vec<u8>, end: &str) -> Result<String, String> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(i) = find(buf, end.as_bytes()) {
            let taken: Vec<u8> = buf.drain(..i + end.len()).collect();
            return String::from_utf8(taken).map_err(|e| e.to_string());
        }
        let n = sock.read(&mut chunk).map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            return Err(format!(
                "the server closed the stream: {}",
                String::from_utf8_lossy(buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn run(a: &Args) -> Result<(), String> {
    let mut sock = TcpStream::connect(&a.server).map_err(|e| format!("{}: {e}", a.server))?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = Vec::new();
    let header = format!("<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", a.domain);
    let send =
        |sock: &mut TcpStream, s: &str| sock.write_all(s.as_bytes()).map_err(|e| e.to_string());
    send(&mut sock, &header)?;
    read_until(&mut sock, &mut buf, "</stream:features>")?;
    let plain = B64.encode(format!("\0{}\0{}", a.user, a.password));
    send(
        &mut sock,
        &format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{plain}</auth>"),
    )?;
    let answer = read_until(&mut sock, &mut buf, "/>")?;
    if !answer.contains("<success") {
        let rest = read_until(&mut sock, &mut buf, ">").unwrap_or_default();
        return Err(format!("login refused: {answer}{rest}"));
    }
    send(&mut sock, &header)?;
    read_until(&mut sock, &mut buf, "</stream:features>")?;
    send(&mut sock, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>message_client</resource></bind></iq>")?;
    read_until(&mut sock, &mut buf, "</iq>")?;
    let payload = B64.encode(a.argument.as_bytes());
    let kind = if a.verb == "get" { "get" } else { "set" };
    send(
        &mut sock,
        &format!(
            "<iq type='{kind}' id='cmd'><{name} xmlns='urn:M' method='{verb}'>{payload}</{name}></iq>",
            name = a.name,
            verb = a.verb
        ),
    )?;
    let reply = read_until(&mut sock, &mut buf, "</iq>")?;
    send(&mut sock, "</stream:stream>").ok();
    if reply.contains("type='error'") || reply.contains("type=\"error\"") {
        return Err(format!("error: {reply}"));
    }
    let open = "xmlns='urn:M'";
    let body = reply
        .split_once(open)
        .and_then(|(_, r)| r.split_once('>'))
        .and_then(|(_, r)| r.split_once('<'))
        .map(|(b, _)| b)
        .ok_or(format!("no urn:M result in {reply}"))?;
    let json = B64
        .decode(body.trim())
        .map_err(|e| format!("result is not base64: {e}"))?;
    println!("{}", String::from_utf8_lossy(&json));
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("message_client: {e}");
        std::process::exit(1);
    }
}
