//! `pipeline`: the same number of small requests sent (a) pipelined on one
//! connection and (b) as separate round trips on one keep-alive connection;
//! every reply must be a complete `200`. With `--server-pid`, the server's CPU
//! time (utime + stime of `/proc/PID/stat`) per request of each mode.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::args::Args;
use crate::fleet::{is_loopback, resolve};
use crate::http::{connect, escape, parse_response_head};
use crate::measure::{parse_pids, verdict, RssSource};
use crate::sys::now_ns;

const USAGE: &str = "usage: tidings-load pipeline [--server 127.0.0.1:8080] [--requests 100000]
       [--path /health] [--depth REQUESTS] [--batch 1000] [--mode both|pipelined|sequential]
       [--server-pid PID[,PID…]] [--timeout 120] [--allow-non-loopback]

  pipelined:  --requests `GET PATH HTTP/1.1` written in writes of --batch requests on
              one connection, at most --depth (default: all of them) written and not
              yet answered; a second
              thread reads and checks the replies as they come
  sequential: the same number on one keep-alive connection, one at a time
  --server-pid: the server's CPU time per request of each mode (several pids are summed)";

struct Settings {
    server: SocketAddr,
    requests: u64,
    path: String,
    depth: u64,
    batch: u64,
    pipelined: bool,
    sequential: bool,
    cpu: RssSource,
    timeout_ns: u64,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let a = Args::parse(
        argv,
        &[
            "server",
            "requests",
            "path",
            "depth",
            "batch",
            "mode",
            "server-pid",
            "timeout",
        ],
        &["allow-non-loopback"],
    )?;
    let server = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
    if !is_loopback(server.ip()) && !a.flag("allow-non-loopback") {
        return Err(format!(
            "{server} is not a loopback address (use --allow-non-loopback)"
        ));
    }
    let requests: u64 = a.num("requests", 100_000)?;
    let depth: u64 = a.num("depth", requests)?;
    let batch: u64 = a.num("batch", 1_000)?;
    if requests == 0 || depth == 0 || batch == 0 {
        return Err("--requests, --depth and --batch must be at least 1".into());
    }
    let path = a.str_or("path", "/health");
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("--path {path:?}: want an origin-form path"));
    }
    let (pipelined, sequential) = match a.str_or("mode", "both").as_str() {
        "both" => (true, true),
        "pipelined" => (true, false),
        "sequential" => (false, true),
        other => {
            return Err(format!(
                "--mode `{other}`: want both, pipelined or sequential"
            ))
        }
    };
    let pids = parse_pids(a.get("server-pid"))?;
    Ok(Settings {
        server,
        requests,
        path,
        depth,
        // a write never holds more than the depth allows
        batch: batch.min(depth),
        pipelined,
        sequential,
        cpu: RssSource::new(&pids, server, false)?,
        timeout_ns: a.num::<u64>("timeout", 120)? * 1_000_000_000,
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("pipeline", USAGE, argv, settings, |s| run_pipeline(&s))
}

/// The request every mode sends.
pub fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// Replies read off one connection, checked one by one. Input is consumed
/// from an offset and compacted only when the consumed part is the larger half,
/// so reading is linear in the bytes received.
#[derive(Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    pos: usize,
    /// Complete replies.
    pub replies: u64,
    /// Complete replies whose status was not 200.
    pub not_ok: u64,
    /// The first non-200 status line seen.
    pub first_bad: Option<String>,
}

impl ReplyReader {
    /// Takes input; counts every complete reply in it. `Err`: a reply that
    /// cannot be framed (no `Content-Length`, chunked, unparsable).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        loop {
            let rest = &self.buf[self.pos..];
            let Some(h) = parse_response_head(rest)? else {
                return Ok(());
            };
            if h.chunked {
                return Err("chunked reply: this scenario wants Content-Length".into());
            }
            let Some(len) = h.content_length else {
                return Err(format!(
                    "reply without Content-Length: {}",
                    escape(&rest[..h.head_len], 200)
                ));
            };
            if rest.len() < h.head_len + len {
                return Ok(());
            }
            if h.status != 200 {
                self.not_ok += 1;
                if self.first_bad.is_none() {
                    self.first_bad = Some(escape(&rest[..h.head_len.min(80)], 80));
                }
            }
            self.replies += 1;
            self.pos += h.head_len + len;
        }
    }

    /// Bytes received that are not (yet) a complete reply.
    pub fn leftover(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// What one mode measured.
struct Outcome {
    sent: u64,
    replies: u64,
    not_ok: u64,
    wall_ns: u64,
    cpu_ns: Option<u64>,
    error: Option<String>,
}

impl Outcome {
    fn ok(&self, requests: u64) -> bool {
        self.error.is_none() && self.replies == requests && self.not_ok == 0
    }

    fn cpu_us_per_req(&self) -> Option<f64> {
        self.cpu_ns
            .filter(|_| self.replies > 0)
            .map(|c| c as f64 / 1e3 / self.replies as f64)
    }

    fn print(&self, mode: &str) {
        let secs = self.wall_ns as f64 / 1e9;
        println!(
            "{mode}: sent={} replies={} not_200={} wall_s={secs:.3} req_per_s={:.0} server_cpu_ms={} server_cpu_us_per_req={}{}",
            self.sent,
            self.replies,
            self.not_ok,
            self.replies as f64 / secs.max(1e-9),
            self.cpu_ns
                .map_or("na".into(), |c| format!("{:.1}", c as f64 / 1e6)),
            fmt_opt(self.cpu_us_per_req(), 3),
            self.error
                .as_ref()
                .map_or(String::new(), |e| format!(" error={e:?}")),
        );
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("na".into(), |v| format!("{v:.decimals$}"))
}

fn run_pipeline(s: &Settings) -> Result<i32, String> {
    println!(
        "pipeline: server={} requests={} path={} depth={} batch={} cpu={}",
        s.server,
        s.requests,
        s.path,
        s.depth,
        s.batch,
        s.cpu.label()
    );
    let pip = s.pipelined.then(|| pipelined(s));
    if let Some(o) = &pip {
        o.print("pipelined");
    }
    let seq = s.sequential.then(|| sequential(s));
    if let Some(o) = &seq {
        o.print("sequential");
    }
    let field = |o: &Option<Outcome>, f: &dyn Fn(&Outcome) -> String| {
        o.as_ref().map_or("na".to_string(), f)
    };
    let ratio = match (
        pip.as_ref().and_then(Outcome::cpu_us_per_req),
        seq.as_ref().and_then(Outcome::cpu_us_per_req),
    ) {
        (Some(p), Some(q)) if q > 0.0 => Some(p / q),
        _ => None,
    };
    let pass = pip.as_ref().is_none_or(|o| o.ok(s.requests))
        && seq.as_ref().is_none_or(|o| o.ok(s.requests));
    println!(
        "SUMMARY requests={} path={} depth={} batch={} pipelined_replies={} pipelined_s={} pipelined_req_per_s={} pipelined_cpu_us_per_req={} sequential_replies={} sequential_s={} sequential_req_per_s={} sequential_cpu_us_per_req={} cpu_ratio={} result={}",
        s.requests,
        s.path,
        s.depth,
        s.batch,
        field(&pip, &|o| o.replies.to_string()),
        field(&pip, &|o| format!("{:.3}", o.wall_ns as f64 / 1e9)),
        field(&pip, &|o| format!("{:.0}", o.replies as f64 * 1e9 / o.wall_ns.max(1) as f64)),
        fmt_opt(pip.as_ref().and_then(Outcome::cpu_us_per_req), 3),
        field(&seq, &|o| o.replies.to_string()),
        field(&seq, &|o| format!("{:.3}", o.wall_ns as f64 / 1e9)),
        field(&seq, &|o| format!("{:.0}", o.replies as f64 * 1e9 / o.wall_ns.max(1) as f64)),
        fmt_opt(seq.as_ref().and_then(Outcome::cpu_us_per_req), 3),
        fmt_opt(ratio, 2),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}

/// A connection for one mode: connected, with a short read timeout so that
/// readers can watch the deadline.
fn open(s: &Settings) -> Result<TcpStream, String> {
    let sock = connect(s.server, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

fn failed(e: String) -> Outcome {
    Outcome {
        sent: 0,
        replies: 0,
        not_ok: 0,
        wall_ns: 1,
        cpu_ns: None,
        error: Some(e),
    }
}

/// Mode (a): one writer (this thread), one reader thread.
fn pipelined(s: &Settings) -> Outcome {
    let mut sock = match open(s) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let mut rsock = match sock.try_clone() {
        Ok(x) => x,
        Err(e) => return failed(e.to_string()),
    };
    let req = request(&s.path);
    let batch_bytes = req.repeat(s.batch as usize);
    let answered = Arc::new(AtomicU64::new(0));
    let requests = s.requests;
    let cpu0 = s.cpu.cpu_ns();
    let t0 = now_ns();
    let deadline = t0 + s.timeout_ns;
    let reader = {
        let answered = Arc::clone(&answered);
        std::thread::spawn(move || -> (ReplyReader, Option<String>, u64) {
            let mut rr = ReplyReader::default();
            let mut tmp = vec![0u8; 256 * 1024];
            let err = loop {
                if rr.replies >= requests {
                    break None;
                }
                if now_ns() >= deadline {
                    break Some(format!(
                        "timed out with {} of {requests} replies",
                        rr.replies
                    ));
                }
                match rsock.read(&mut tmp) {
                    Ok(0) => {
                        break Some(format!(
                            "server closed the connection after {} replies",
                            rr.replies
                        ))
                    }
                    Ok(n) => {
                        if let Err(e) = rr.feed(&tmp[..n]) {
                            break Some(e);
                        }
                        answered.store(rr.replies, Ordering::Release);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(e) => break Some(format!("read: {e}")),
                }
            };
            // unblock the writer, should it wait for replies that will not come
            answered.store(u64::MAX, Ordering::Release);
            (rr, err, now_ns())
        })
    };
    let mut sent = 0u64;
    let mut write_err = None;
    while sent < requests {
        let n = s.batch.min(requests - sent);
        // wait for room under --depth (the reader sets u64::MAX when it stops)
        loop {
            let a = answered.load(Ordering::Acquire);
            if a == u64::MAX || sent + n - a.min(sent) <= s.depth {
                break;
            }
            std::thread::yield_now();
        }
        if answered.load(Ordering::Acquire) == u64::MAX {
            break;
        }
        if let Err(e) = sock.write_all(&batch_bytes[..n as usize * req.len()]) {
            write_err = Some(format!("write after {sent} requests: {e}"));
            break;
        }
        sent += n;
    }
    if write_err.is_some() {
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
    let (rr, read_err, t1) = reader
        .join()
        .unwrap_or_else(|_| (ReplyReader::default(), Some("reader panicked".into()), 0));
    let cpu1 = s.cpu.cpu_ns();
    let mut error = write_err.or(read_err);
    if error.is_none() && rr.leftover() > 0 {
        error = Some(format!("{} bytes after the last reply", rr.leftover()));
    }
    if let Some(b) = &rr.first_bad {
        eprintln!("pipelined: first non-200 reply: {b}");
    }
    Outcome {
        sent,
        replies: rr.replies,
        not_ok: rr.not_ok,
        wall_ns: t1.saturating_sub(t0).max(1),
        cpu_ns: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        error,
    }
}

/// Mode (b): one request, wait for its reply, next.
fn sequential(s: &Settings) -> Outcome {
    let mut sock = match open(s) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let req = request(&s.path);
    let mut rr = ReplyReader::default();
    let mut tmp = vec![0u8; 64 * 1024];
    let cpu0 = s.cpu.cpu_ns();
    let t0 = now_ns();
    let deadline = t0 + s.timeout_ns;
    let mut sent = 0u64;
    let mut error = None;
    'outer: while sent < s.requests {
        if let Err(e) = sock.write_all(&req) {
            error = Some(format!("write after {sent} requests: {e}"));
            break;
        }
        sent += 1;
        while rr.replies < sent {
            if now_ns() >= deadline {
                error = Some(format!(
                    "timed out with {} of {} replies",
                    rr.replies, s.requests
                ));
                break 'outer;
            }
            match sock.read(&mut tmp) {
                Ok(0) => {
                    error = Some(format!(
                        "server closed the connection after {} replies",
                        rr.replies
                    ));
                    break 'outer;
                }
                Ok(n) => {
                    if let Err(e) = rr.feed(&tmp[..n]) {
                        error = Some(e);
                        break 'outer;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    error = Some(format!("read: {e}"));
                    break 'outer;
                }
            }
        }
    }
    let t1 = now_ns();
    let cpu1 = s.cpu.cpu_ns();
    if error.is_none() && rr.leftover() > 0 {
        error = Some(format!("{} bytes after the last reply", rr.leftover()));
    }
    if let Some(b) = &rr.first_bad {
        eprintln!("sequential: first non-200 reply: {b}");
    }
    Outcome {
        sent,
        replies: rr.replies,
        not_ok: rr.not_ok,
        wall_ns: t1.saturating_sub(t0).max(1),
        cpu_ns: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

    #[test]
    fn request_bytes() {
        assert_eq!(
            request("/health"),
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn replies_counted_at_every_split() {
        let mut all = OK.repeat(3);
        all.extend_from_slice(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
        all.extend_from_slice(OK);
        for cut in 0..=all.len() {
            let mut rr = ReplyReader::default();
            rr.feed(&all[..cut]).unwrap();
            rr.feed(&all[cut..]).unwrap();
            assert_eq!((rr.replies, rr.not_ok, rr.leftover()), (5, 1, 0), "{cut}");
            assert!(rr.first_bad.as_deref().unwrap().contains("503"));
        }
        let mut rr = ReplyReader::default();
        for b in all.chunks(1) {
            rr.feed(b).unwrap();
        }
        assert_eq!(rr.replies, 5);
    }

    #[test]
    fn unframed_replies_are_errors() {
        let mut rr = ReplyReader::default();
        assert!(rr.feed(b"HTTP/1.1 200 OK\r\n\r\nok").is_err());
        let mut rr = ReplyReader::default();
        assert!(rr
            .feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .is_err());
    }

    #[test]
    fn partial_reply_is_leftover() {
        let mut rr = ReplyReader::default();
        rr.feed(&OK[..OK.len() - 1]).unwrap();
        assert_eq!((rr.replies, rr.leftover()), (0, OK.len() - 1));
    }
}
