//! `qst`: QST end to end (PROTOCOLS.md section 1). P producer threads push B
//! batches of S JSON messages each (`POST /qst/C`, retried on 503 after
//! `Retry-After`) while one consumer long-polls `GET /qst/C?format=json` on a
//! keep-alive connection and acknowledges each reply by echoing its `ETag`.
//! Checks that every accepted id is pulled, counts redeliveries (allowed before
//! the acknowledgement) and duplicates after it (not allowed), and reports the
//! end-to-end message rate (first push to last new pull).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::args::Args;
use crate::fleet::{check_loopback, resolve};
use crate::hist::Hist;
use crate::http::{escape, exchange, header, pct};
use crate::json::{self, Value};
use crate::measure::{opt_ms, verdict};
use crate::sys::now_ns;

const USAGE: &str = "usage: tidings-load qst --producers P --batches B --batch-size S
       [--server 127.0.0.1:8080] [--channel C] [--consumer-max 100] [--body-bytes 64]
       [--drain-timeout 10] [--max-push-attempts 100] [--allow-non-loopback]";

struct Settings {
    server: SocketAddr,
    producers: usize,
    batches: usize,
    batch_size: usize,
    channel: String,
    /// The channel was named by the user (it may hold earlier messages).
    named: bool,
    consumer_max: usize,
    body_bytes: usize,
    drain_timeout_ns: u64,
    max_push_attempts: u32,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let a = Args::parse(
        argv,
        &[
            "server",
            "producers",
            "batches",
            "batch-size",
            "channel",
            "consumer-max",
            "body-bytes",
            "drain-timeout",
            "max-push-attempts",
        ],
        &["allow-non-loopback"],
    )?;
    let server = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
    if !a.flag("allow-non-loopback") {
        check_loopback(server, &[])?;
    }
    let producers: usize = a.num("producers", 4)?;
    let batches: usize = a.num("batches", 500)?;
    let batch_size: usize = a.num("batch-size", 10)?;
    if producers == 0 || producers > 256 {
        return Err("--producers must be 1 to 256".into());
    }
    if batches == 0 || batch_size == 0 {
        return Err("--batches and --batch-size must be at least 1".into());
    }
    if producers * batches * batch_size > 10_000_000 {
        return Err("more than 10,000,000 messages in all: too many".into());
    }
    let consumer_max: usize = a.num("consumer-max", 100)?;
    if !(1..=1000).contains(&consumer_max) {
        return Err("--consumer-max must be 1 to 1000 (PROTOCOLS.md 1.4)".into());
    }
    let (channel, named) = match a.get("channel") {
        Some("") => return Err("--channel is empty".into()),
        Some(c) => (c.to_string(), true),
        None => (
            format!(
                "qst-load-{:x}{:x}",
                std::process::id(),
                now_ns() % (1 << 32)
            ),
            false,
        ),
    };
    Ok(Settings {
        server,
        producers,
        batches,
        batch_size,
        channel,
        named,
        consumer_max,
        body_bytes: a.num("body-bytes", 64)?,
        drain_timeout_ns: a.num::<u64>("drain-timeout", 10)? * 1_000_000_000,
        max_push_attempts: a.num::<u32>("max-push-attempts", 100)?.max(1),
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("qst", USAGE, argv, settings, |s| run_qst(Arc::new(s)))
}

/// The id of message `n` of producer `p`.
pub fn message_id(p: usize, n: usize) -> String {
    format!("p{p}-{n}")
}

/// `(producer, n)` of an id made by `message_id`.
pub fn parse_id(id: &str) -> Option<(usize, usize)> {
    let rest = id.strip_prefix('p')?;
    let (p, n) = rest.split_once('-')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(p) || !digits(n) {
        return None;
    }
    Some((p.parse().ok()?, n.parse().ok()?))
}

/// The JSON body of batch `b` of producer `p`: `[{"id":"p<p>-<n>","body":"…"},…]`.
pub fn batch_body(p: usize, b: usize, size: usize, body_bytes: usize) -> (Vec<u8>, String) {
    let mut out = Vec::with_capacity(size * (body_bytes + 32) + 2);
    out.push(b'[');
    let mut last = String::new();
    for k in 0..size {
        let n = b * size + k;
        let id = message_id(p, n);
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\",\"body\":\"");
        let mut text = format!("message {n} of producer {p} ");
        while text.len() < body_bytes {
            text.push('x');
        }
        text.truncate(body_bytes.max(1));
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\"}");
        last = id;
    }
    out.push(b']');
    (out, last)
}

pub fn push_request(channel: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /qst/{} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        pct(channel),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn pull_request(channel: &str, max: usize, long_poll: bool, etag: Option<&str>) -> Vec<u8> {
    let mut q = format!(
        "GET /qst/{}?format=json&max={max}&long-polling={long_poll}",
        pct(channel)
    );
    if let Some(e) = etag {
        q.push_str("&etag=");
        q.push_str(&pct(e));
    }
    q.push_str(" HTTP/1.1\r\nHost: x\r\n\r\n");
    q.into_bytes()
}

/// The ids of a JSON pull reply, in order.
pub fn pulled_ids(body: &[u8]) -> Result<Vec<String>, String> {
    let v = json::parse(body)?;
    let list = v
        .as_array()
        .ok_or_else(|| format!("not a JSON array: {:?}", escape(body, 120)))?;
    list.iter()
        .map(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("a message without a string id: {m:?}"))
        })
        .collect()
}

/// `Retry-After` in seconds (an HTTP date or nonsense → 1 s), capped at 30 s.
pub fn retry_after(value: Option<&str>) -> Duration {
    let secs = value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .min(30);
    Duration::from_secs(secs)
}

#[derive(Default)]
struct ProducerStats {
    first_write_ns: u64,
    last_ok_ns: u64,
    /// Batches answered 200.
    accepted: usize,
    /// Batches given up on (their ids may or may not be stored).
    abandoned: Vec<usize>,
    refused_503: usize,
    io_errors: usize,
    http_errors: usize,
    etag_mismatch: usize,
    latency: Hist,
}

fn producer(s: &Settings, p: usize) -> ProducerStats {
    let mut st = ProducerStats::default();
    let mut sock: Option<TcpStream> = None;
    for b in 0..s.batches {
        let (body, last_id) = batch_body(p, b, s.batch_size, s.body_bytes);
        let req = push_request(&s.channel, &body);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > s.max_push_attempts {
                st.abandoned.push(b);
                eprintln!(
                    "!!! producer {p}: batch {b} given up after {} attempts",
                    attempts - 1
                );
                break;
            }
            let t0 = now_ns();
            if st.first_write_ns == 0 {
                st.first_write_ns = t0;
            }
            match exchange(s.server, &mut sock, &req, Duration::from_secs(30)) {
                Ok(r) if r.status == 200 => {
                    let now = now_ns();
                    st.latency.record((now - t0) / 1000);
                    st.last_ok_ns = now;
                    st.accepted += 1;
                    let etag = header(&r.head, "etag");
                    if etag.as_deref() != Some(last_id.as_str()) {
                        st.etag_mismatch += 1;
                        if st.etag_mismatch <= 3 {
                            eprintln!(
                                "!!! producer {p}: batch {b}: ETag {etag:?}, want {last_id:?}"
                            );
                        }
                    }
                    break;
                }
                Ok(r) if r.status == 503 => {
                    st.refused_503 += 1;
                    std::thread::sleep(retry_after(header(&r.head, "retry-after").as_deref()));
                }
                Ok(r) => {
                    st.http_errors += 1;
                    if st.http_errors <= 3 {
                        eprintln!(
                            "!!! producer {p}: batch {b}: status {}: {:?}",
                            r.status,
                            escape(&r.raw(), 200)
                        );
                    }
                    if (400..500).contains(&r.status) {
                        st.abandoned.push(b);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    st.io_errors += 1;
                    if st.io_errors <= 3 {
                        eprintln!("!!! producer {p}: batch {b}: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    st
}

/// The consumer's bookkeeping of ids and acknowledgements.
#[derive(Default)]
pub struct Ledger {
    /// Ids covered by an acknowledgement the server has answered.
    acked: HashSet<String>,
    /// Ids pulled but not yet acknowledged.
    unacked: HashSet<String>,
    /// Ids of the last reply: acknowledged by the next request's `etag`.
    pending_ack: Vec<String>,
    /// Per producer, the highest `n` pulled so far.
    high: HashMap<usize, usize>,
    pub unique: usize,
    pub redeliveries: usize,
    pub post_ack_dups: usize,
    pub out_of_order: usize,
    pub unexpected: usize,
}

impl Ledger {
    /// The server answered a request that carried the acknowledgement of the
    /// previous reply: those ids are now acknowledged.
    pub fn acknowledged(&mut self) {
        for id in self.pending_ack.drain(..) {
            self.unacked.remove(&id);
            self.acked.insert(id);
        }
    }

    /// Takes the ids of a reply; returns how many were new.
    pub fn pulled(&mut self, ids: Vec<String>, producers: usize) -> usize {
        let mut new = 0;
        for id in ids {
            if self.acked.contains(&id) {
                self.post_ack_dups += 1;
            } else if self.unacked.contains(&id) {
                self.redeliveries += 1;
            } else {
                match parse_id(&id) {
                    Some((p, n)) if p < producers => {
                        let h = self.high.entry(p).or_insert(n);
                        if n < *h {
                            self.out_of_order += 1;
                        }
                        *h = (*h).max(n);
                    }
                    _ => self.unexpected += 1,
                }
                self.unique += 1;
                new += 1;
                self.unacked.insert(id.clone());
            }
            self.pending_ack.push(id);
        }
        new
    }

    pub fn seen(&self, id: &str) -> bool {
        self.acked.contains(id) || self.unacked.contains(id)
    }
}

#[derive(Default)]
struct ConsumerStats {
    ledger: Ledger,
    pulls: usize,
    empty_pulls: usize,
    messages: usize,
    last_new_ns: u64,
    etag_mismatch: usize,
    http_errors: usize,
    io_errors: usize,
    residual: usize,
    final_etag_ok: bool,
    final_error: Option<String>,
}

fn consumer(s: &Settings, expected: usize, producers_done: &AtomicUsize) -> ConsumerStats {
    let mut st = ConsumerStats::default();
    let mut sock: Option<TcpStream> = None;
    let mut etag: Option<String> = None;
    let mut idle_since: Option<u64> = None;
    loop {
        let all_pushed = producers_done.load(Ordering::SeqCst) == s.producers;
        if st.ledger.unique >= expected && all_pushed {
            break;
        }
        // Once every producer has finished, stop long-polling on an empty
        // queue (a held request would wait the server's whole long-poll timeout).
        let long_poll = !(all_pushed && idle_since.is_some());
        if let Some(since) = idle_since {
            if all_pushed && now_ns() - since > s.drain_timeout_ns {
                eprintln!(
                    "!!! consumer: nothing new for {} s after the last push; stopping",
                    s.drain_timeout_ns / 1_000_000_000
                );
                break;
            }
        }
        let req = pull_request(&s.channel, s.consumer_max, long_poll, etag.as_deref());
        let reply = match exchange(s.server, &mut sock, &req, Duration::from_secs(60)) {
            Ok(r) => r,
            Err(e) => {
                st.io_errors += 1;
                if st.io_errors <= 3 {
                    eprintln!("!!! consumer: {e}");
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if reply.status != 200 {
            st.http_errors += 1;
            if st.http_errors <= 3 {
                eprintln!(
                    "!!! consumer: status {}: {:?}",
                    reply.status,
                    escape(&reply.raw(), 200)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // The server applied the acknowledgement before it answered.
        st.ledger.acknowledged();
        let now = now_ns();
        st.pulls += 1;
        let ids = match pulled_ids(&reply.body) {
            Ok(ids) => ids,
            Err(e) => {
                st.http_errors += 1;
                eprintln!("!!! consumer: unparsable pull reply: {e}");
                continue;
            }
        };
        let hdr = header(&reply.head, "etag").unwrap_or_default();
        if ids.is_empty() {
            st.empty_pulls += 1;
            idle_since.get_or_insert(now);
            if !long_poll {
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            idle_since = None;
            if ids.last().map(String::as_str) != Some(hdr.as_str()) {
                st.etag_mismatch += 1;
                if st.etag_mismatch <= 3 {
                    eprintln!(
                        "!!! consumer: ETag {hdr:?} but the last id of the reply is {:?}",
                        ids.last()
                    );
                }
            }
        }
        st.messages += ids.len();
        if st.ledger.pulled(ids, s.producers) > 0 {
            st.last_new_ns = now;
        }
        if !hdr.is_empty() {
            etag = Some(hdr);
        }
    }
    // Acknowledge the last reply and check that nothing is left.
    let req = pull_request(&s.channel, s.consumer_max, false, etag.as_deref());
    match exchange(s.server, &mut sock, &req, Duration::from_secs(30)) {
        Ok(r) if r.status == 200 => {
            st.ledger.acknowledged();
            let hdr = header(&r.head, "etag").unwrap_or_default();
            match pulled_ids(&r.body) {
                Ok(ids) => {
                    st.residual = ids.len();
                    st.final_etag_ok = !ids.is_empty() || etag.as_deref().unwrap_or("") == hdr;
                    st.ledger.pulled(ids, s.producers);
                }
                Err(e) => st.final_error = Some(e),
            }
        }
        Ok(r) => st.final_error = Some(format!("status {}", r.status)),
        Err(e) => st.final_error = Some(e),
    }
    st
}

fn run_qst(s: Arc<Settings>) -> Result<i32, String> {
    let expected_all = s.producers * s.batches * s.batch_size;
    println!(
        "qst: server={} channel={} producers={} batches={} batch_size={} messages={} consumer_max={} body_bytes={}",
        s.server, s.channel, s.producers, s.batches, s.batch_size, expected_all, s.consumer_max, s.body_bytes
    );
    // A channel that already holds messages may hold ids like ours: the server
    // would keep the old ones and not store ours twice.
    if s.named {
        let mut sock = None;
        let head = format!("HEAD /qst/{} HTTP/1.1\r\nHost: x\r\n\r\n", pct(&s.channel));
        if let Ok(r) = exchange(
            s.server,
            &mut sock,
            head.as_bytes(),
            Duration::from_secs(10),
        ) {
            let last = header(&r.head, "etag").unwrap_or_default();
            if !last.is_empty() {
                eprintln!(
                    "warning: channel {:?} was used before (last id {last:?}); ids p<i>-<n> may collide with old ones and be missing: use a fresh --channel (or none: a fresh one is made up)",
                    s.channel
                );
            }
        }
    }

    let done = Arc::new(AtomicUsize::new(0));
    let consumer_thread = {
        let s = Arc::clone(&s);
        let done = Arc::clone(&done);
        std::thread::spawn(move || consumer(&s, expected_all, &done))
    };
    let producer_threads: Vec<_> = (0..s.producers)
        .map(|p| {
            let s = Arc::clone(&s);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let st = producer(&s, p);
                done.fetch_add(1, Ordering::SeqCst);
                st
            })
        })
        .collect();
    let mut prods = Vec::new();
    for t in producer_threads {
        prods.push(t.join().map_err(|_| "a producer panicked".to_string())?);
    }
    let pushed_ns = now_ns();
    let cons = consumer_thread
        .join()
        .map_err(|_| "the consumer panicked".to_string())?;

    let first_push = prods
        .iter()
        .map(|p| p.first_write_ns)
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let last_ok = prods.iter().map(|p| p.last_ok_ns).max().unwrap_or(0);
    let mut latency = Hist::new();
    let (mut accepted_batches, mut r503, mut io_errors, mut http_errors, mut etag_mismatch) =
        (0, 0, 0, 0, 0);
    let mut abandoned = 0;
    let mut missing = 0usize;
    let mut missing_sample = Vec::new();
    for (p, st) in prods.iter().enumerate() {
        latency.merge(&st.latency);
        accepted_batches += st.accepted;
        r503 += st.refused_503;
        io_errors += st.io_errors;
        http_errors += st.http_errors;
        etag_mismatch += st.etag_mismatch;
        abandoned += st.abandoned.len();
        for b in 0..s.batches {
            if st.abandoned.contains(&b) {
                continue;
            }
            for k in 0..s.batch_size {
                let id = message_id(p, b * s.batch_size + k);
                if !cons.ledger.seen(&id) {
                    missing += 1;
                    if missing_sample.len() < 5 {
                        missing_sample.push(id);
                    }
                }
            }
        }
    }
    let accepted_msgs = accepted_batches * s.batch_size;
    let l = &cons.ledger;
    let elapsed_s = cons.last_new_ns.saturating_sub(first_push) as f64 / 1e9;
    let push_s = last_ok.saturating_sub(first_push) as f64 / 1e9;
    let rate = if elapsed_s > 0.0 {
        l.unique as f64 / elapsed_s
    } else {
        0.0
    };
    let _ = pushed_ns;
    println!(
        "pushed: {accepted_batches} batches ({accepted_msgs} messages) in {push_s:.2}s ({:.0} msg/s) push_p50_ms={} push_p99_ms={} push_max_ms={} 503s={r503} io_errors={io_errors} http_errors={http_errors} etag_mismatch={etag_mismatch} abandoned={abandoned}",
        accepted_msgs as f64 / push_s.max(1e-9),
        opt_ms(latency.percentile(50.0)),
        opt_ms(latency.percentile(99.0)),
        opt_ms(latency.max()),
    );
    println!(
        "pulled: {} unique in {} pulls ({} empty, {:.1} messages a pull) redeliveries={} post_ack_dups={} out_of_order={} unexpected={} etag_mismatch={} http_errors={} io_errors={} residual={}",
        l.unique,
        cons.pulls,
        cons.empty_pulls,
        cons.messages as f64 / (cons.pulls - cons.empty_pulls).max(1) as f64,
        l.redeliveries,
        l.post_ack_dups,
        l.out_of_order,
        l.unexpected,
        cons.etag_mismatch,
        cons.http_errors,
        cons.io_errors,
        cons.residual
    );
    if missing > 0 {
        println!("!!! LOST: {missing} accepted messages never pulled, e.g. {missing_sample:?}");
    }
    if let Some(e) = &cons.final_error {
        println!("!!! final acknowledging pull failed: {e}");
    }
    if !cons.final_etag_ok && cons.final_error.is_none() {
        println!("!!! the final empty pull did not echo the last acknowledged id as ETag");
    }
    let pass = missing == 0
        && l.post_ack_dups == 0
        && l.out_of_order == 0
        && l.unexpected == 0
        && abandoned == 0
        && etag_mismatch == 0
        && cons.etag_mismatch == 0
        && cons.residual == 0
        && cons.final_error.is_none()
        && cons.final_etag_ok
        && http_errors == 0
        && cons.http_errors == 0;
    println!(
        "SUMMARY producers={} batches={} batch_size={} consumer_max={} expected={expected_all} accepted={accepted_msgs} pulled={} missing={missing} post_ack_dups={} redeliveries={} out_of_order={} unexpected={} residual={} pulls={} empty_pulls={} push_503={r503} push_io_errors={io_errors} push_http_errors={http_errors} push_etag_mismatch={etag_mismatch} pull_etag_mismatch={} abandoned_batches={abandoned} push_p50_ms={} push_p99_ms={} push_s={push_s:.3} elapsed_s={elapsed_s:.3} msgs_per_s={rate:.0} result={}",
        s.producers,
        s.batches,
        s.batch_size,
        s.consumer_max,
        l.unique,
        l.post_ack_dups,
        l.redeliveries,
        l.out_of_order,
        l.unexpected,
        cons.residual,
        cons.pulls,
        cons.empty_pulls,
        cons.etag_mismatch,
        opt_ms(latency.percentile(50.0)),
        opt_ms(latency.percentile(99.0)),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(message_id(3, 41), "p3-41");
        assert_eq!(parse_id("p3-41"), Some((3, 41)));
        for bad in ["p3", "p-1", "p3-", "q3-1", "p3-1-2", "p+3-1", "p3-x"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn batch_bodies_are_valid_json() {
        let (body, last) = batch_body(2, 3, 4, 20);
        assert_eq!(last, "p2-15");
        assert_eq!(
            pulled_ids(&body).unwrap(),
            ["p2-12", "p2-13", "p2-14", "p2-15"]
        );
        let v = json::parse(&body).unwrap();
        let first = &v.as_array().unwrap()[0];
        assert_eq!(first.get("body").and_then(Value::as_str).unwrap().len(), 20);
    }

    #[test]
    fn requests() {
        let r = push_request("a/b", b"[]");
        assert_eq!(
            r,
            b"POST /qst/a%2Fb HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]".to_vec()
        );
        assert_eq!(
            pull_request("c", 100, true, None),
            b"GET /qst/c?format=json&max=100&long-polling=true HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_vec()
        );
        assert_eq!(
            pull_request("c", 5, false, Some("p0-9")),
            b"GET /qst/c?format=json&max=5&long-polling=false&etag=p0-9 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn pulled_id_lists() {
        assert_eq!(pulled_ids(b"[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            pulled_ids(br#"[{"id":"a","from":"","body":"x"},{"body":"y","id":"b\u0021"}]"#)
                .unwrap(),
            ["a", "b!"]
        );
        assert!(pulled_ids(br#"[{"body":"x"}]"#).is_err());
        assert!(pulled_ids(br#"[{"id":5}]"#).is_err());
        assert!(pulled_ids(br#"{"id":"a"}"#).is_err());
        assert!(pulled_ids(b"<messages/>").is_err());
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(retry_after(Some("2")), Duration::from_secs(2));
        assert_eq!(retry_after(Some(" 0 ")), Duration::from_secs(0));
        assert_eq!(retry_after(None), Duration::from_secs(1));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(Some("3600")), Duration::from_secs(30));
    }

    #[test]
    fn ledger_counts_redelivery_and_post_ack_duplicates() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut l = Ledger::default();
        assert_eq!(l.pulled(ids(&["p0-0", "p0-1"]), 2), 2);
        // the same reply again before any acknowledgement: redelivery
        assert_eq!(l.pulled(ids(&["p0-1", "p1-0"]), 2), 1);
        assert_eq!(l.redeliveries, 1);
        l.acknowledged();
        assert_eq!(l.pulled(ids(&["p0-0"]), 2), 0);
        assert_eq!(l.post_ack_dups, 1);
        assert_eq!(l.pulled(ids(&["p1-2", "p1-1"]), 2), 2);
        assert_eq!(l.out_of_order, 1);
        assert_eq!(l.pulled(ids(&["zzz", "p7-0"]), 2), 2);
        assert_eq!(l.unexpected, 2);
        assert_eq!(l.unique, 7);
        assert!(l.seen("p1-1") && l.seen("p0-0") && !l.seen("p0-9"));
    }
}
