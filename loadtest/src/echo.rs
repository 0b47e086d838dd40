//! `talk-echo-check`: two streams and a couple of pushes, checked byte for
//! byte against PROTOCOLS.md section 3. A smoke test for the client itself and
//! for the server's Talk endpoint.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::args::Args;
use crate::chunked::{ChunkParser, Status};
use crate::fleet::{is_loopback, resolve};
use crate::http::{
    connect, escape, head_end, pull_request, push_request, read_reply, read_until,
    HEADLESS_PULL_HEAD, HEADLESS_PUSH_REPLY,
};
use crate::sys::now_ns;

const USAGE: &str = "usage: tidings-load talk-echo-check [--server 127.0.0.1:8080] [--channel C] [--terminator nul|newline] [--allow-non-loopback]";

/// One open Talk stream read with blocking reads.
struct Probe {
    name: String,
    sock: TcpStream,
    parser: ChunkParser,
    records: VecDeque<Vec<u8>>,
    ended: bool,
}

impl Probe {
    /// Opens a headless stream and checks the reply head and first chunk byte
    /// for byte. Returns the probe and the differences found.
    fn open(
        server: SocketAddr,
        name: &str,
        channel: &str,
        term: u8,
        diffs: &mut Vec<String>,
    ) -> Result<Probe, String> {
        let mut sock = connect(server, Duration::from_secs(5))?;
        sock.write_all(&pull_request(name, channel))
            .map_err(|e| format!("{name}: write pull: {e}"))?;
        let mut first_chunk = b"5\r\nnoop".to_vec();
        first_chunk.push(term);
        first_chunk.extend_from_slice(b"\r\n");
        // Read until the head and the first chunk are in (or 5 s pass).
        let deadline = now_ns() + 5_000_000_000;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(end) = head_end(&buf) {
                if buf.len() >= end + first_chunk.len() {
                    break;
                }
            }
            if now_ns() >= deadline {
                break;
            }
            match read_until(&mut sock, &mut tmp, deadline)
                .map_err(|e| format!("{name}: read: {e}"))?
            {
                Some(0) => break,
                Some(n) => buf.extend_from_slice(&tmp[..n]),
                None => {}
            }
        }
        let Some(end) = head_end(&buf) else {
            return Err(format!(
                "{name}: no complete reply head within 5 s; got \"{}\"",
                escape(&buf, 300)
            ));
        };
        let head = &buf[..end];
        if head == HEADLESS_PULL_HEAD {
            println!("ok   {name}: pull reply head is byte-exact");
        } else {
            diffs.push(format!(
                "{name}: pull reply head: want \"{}\", got \"{}\"",
                escape(HEADLESS_PULL_HEAD, 200),
                escape(head, 300)
            ));
        }
        let body = &buf[end..];
        if body.starts_with(&first_chunk) {
            println!(
                "ok   {name}: first chunk is \"{}\"",
                escape(&first_chunk, 40)
            );
        } else {
            diffs.push(format!(
                "{name}: first chunk: want \"{}\", got \"{}\"",
                escape(&first_chunk, 40),
                escape(body, 80)
            ));
        }
        let mut p = Probe {
            name: name.to_string(),
            sock,
            parser: ChunkParser::new(term),
            records: VecDeque::new(),
            ended: false,
        };
        p.feed(body)?;
        Ok(p)
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        let records = &mut self.records;
        match self.parser.feed(data, |_, r| records.push_back(r.to_vec())) {
            Ok(Status::Open) => Ok(()),
            Ok(Status::Ended) => {
                self.ended = true;
                Ok(())
            }
            Err(e) => Err(format!("{}: stream framing: {e}", self.name)),
        }
    }

    /// The next record that is not a `noop`, waiting up to `timeout`.
    fn next_message(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        let deadline = now_ns() + timeout.as_nanos() as u64;
        let mut tmp = [0u8; 4096];
        loop {
            while let Some(r) = self.records.pop_front() {
                if r != b"noop" {
                    return Ok(Some(r));
                }
            }
            if self.ended {
                return Err(format!("{}: the server ended the stream", self.name));
            }
            if now_ns() >= deadline {
                return Ok(None);
            }
            match read_until(&mut self.sock, &mut tmp, deadline)
                .map_err(|e| format!("{}: read: {e}", self.name))?
            {
                Some(0) => return Err(format!("{}: the server closed the stream", self.name)),
                Some(n) => self.feed(&tmp[..n])?,
                None => {}
            }
        }
    }
}

/// Pushes on a fresh connection; returns the raw reply bytes and status.
fn push(
    server: SocketAddr,
    name: &str,
    channel: &str,
    message: &str,
    headless: bool,
) -> Result<(u16, Vec<u8>), String> {
    let mut sock = connect(server, Duration::from_secs(5))?;
    sock.write_all(&push_request(name, channel, message, headless))
        .map_err(|e| format!("write push: {e}"))?;
    let reply = read_reply(
        &mut sock,
        Duration::from_secs(5),
        Duration::from_millis(300),
    )?;
    Ok((reply.status, reply.raw()))
}

fn expect_message(p: &mut Probe, want: &str, diffs: &mut Vec<String>) -> Result<(), String> {
    match p.next_message(Duration::from_secs(5))? {
        Some(r) if r == want.as_bytes() => {
            println!("ok   {}: received {:?}", p.name, want);
        }
        Some(r) => diffs.push(format!(
            "{}: want record \"{}\", got \"{}\"",
            p.name,
            want,
            escape(&r, 200)
        )),
        None => diffs.push(format!("{}: {:?} did not arrive within 5 s", p.name, want)),
    }
    Ok(())
}

pub fn run(argv: &[String]) -> i32 {
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let parsed = Args::parse(
        argv,
        &["server", "channel", "terminator"],
        &["allow-non-loopback"],
    )
    .and_then(|a| {
        let server = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
        if !is_loopback(server.ip()) && !a.flag("allow-non-loopback") {
            return Err(format!(
                "{server} is not a loopback address (use --allow-non-loopback)"
            ));
        }
        let term = crate::parse_terminator(&a.str_or("terminator", "nul"))?;
        Ok((server, a.get("channel").map(str::to_string), term))
    });
    let (server, channel, term) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("talk-echo-check: {e}\n{USAGE}");
            return 2;
        }
    };
    let rid = format!("{:x}", now_ns() % (1 << 40));
    let channel = channel.unwrap_or_else(|| format!("echo-check-{rid}"));
    let mut diffs = Vec::new();
    match check(server, &channel, term, &rid, &mut diffs) {
        Ok(()) if diffs.is_empty() => {
            println!("OK");
            0
        }
        Ok(()) => {
            for d in &diffs {
                println!("DIFF {d}");
            }
            println!("FAILED: {} difference(s)", diffs.len());
            1
        }
        Err(e) => {
            for d in &diffs {
                println!("DIFF {d}");
            }
            println!("FAILED: {e}");
            1
        }
    }
}

fn check(
    server: SocketAddr,
    channel: &str,
    term: u8,
    rid: &str,
    diffs: &mut Vec<String>,
) -> Result<(), String> {
    let name_a = format!("echo-a-{rid}");
    let name_b = format!("echo-b-{rid}");
    let mut a = Probe::open(server, &name_a, channel, term, diffs)?;
    let mut b = Probe::open(server, &name_b, channel, term, diffs)?;
    // Give the server a moment to attach both streams before pushing.
    std::thread::sleep(Duration::from_millis(100));

    // 1. An ordinary (non-headless) push from a third name reaches both streams.
    let msg1 = format!("hello {rid} & ünïcode=1");
    let (status, raw) = push(server, "echo-sender", channel, &msg1, false)?;
    if status == 200 && raw.ends_with(b"\r\n\r\nnoop") {
        println!("ok   push (with headers): 200, body \"noop\"");
    } else {
        diffs.push(format!(
            "push (with headers): want 200 with body \"noop\", got \"{}\"",
            escape(&raw, 300)
        ));
    }
    expect_message(&mut a, &msg1, diffs)?;
    expect_message(&mut b, &msg1, diffs)?;

    // 2. A headless push from A's name: byte-exact reply; B gets it, A does not.
    let msg2 = format!("from-a-{rid}");
    let (status, raw) = push(server, &name_a, channel, &msg2, true)?;
    if raw == HEADLESS_PUSH_REPLY {
        println!("ok   headless push reply is byte-exact");
    } else {
        diffs.push(format!(
            "headless push reply (status {status}): want \"{}\", got \"{}\"",
            escape(HEADLESS_PUSH_REPLY, 100),
            escape(&raw, 300)
        ));
    }
    expect_message(&mut b, &msg2, diffs)?;
    match a.next_message(Duration::from_secs(1))? {
        None => println!("ok   {name_a}: did not receive its own message"),
        Some(r) => diffs.push(format!(
            "{name_a}: received \"{}\", but a sender's own message must not reach its stream",
            escape(&r, 200)
        )),
    }
    Ok(())
}
