//! Back-to-back publishing, for `nchan-sub --back-to-back N`: P publishers each
//! send N messages on one keep-alive connection, each POST written as soon as the
//! previous one is answered (no wait for the fan-out), and every subscriber notes
//! the arrival of every message.
//!
//! A message's body is `b2b-<i>-<t_ns>`: its index over all publishers
//! (`0..P×N`) and `CLOCK_MONOTONIC` just before its POST was written, so a
//! subscriber computes the latency of each arrival itself (the clock the fan-out
//! workers already share with the parent).
//!
//! Worker side: `SERIES <total>` arms every connection that is up (answered
//! `ARMED series expected=…`); each arrival is counted per connection and
//! message (a second copy is a duplicate) and its latency goes into a
//! histogram; `SCOLLECT <deadline_ns>` asks for the `SRESULT` line once every
//! armed connection has every message (or closed), or at the deadline.
//!
//! Parent side: `run` arms the workers, runs the publishers (one thread each),
//! collects and merges what the workers saw.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::child::send;
use crate::fanout::Group;
use crate::fleet::{broadcast, gather, kv, kv_num};
use crate::hist::Hist;
use crate::http::{connect, escape, pub_api_request, read_reply};
use crate::sys::now_ns;

/// The first bytes of every series message.
pub const PREFIX: &[u8] = b"b2b-";

/// The series commands a worker takes besides its own.
#[derive(Debug, PartialEq, Eq)]
pub enum SeriesCmd {
    Arm(usize),
    Collect(u64),
}

/// `SERIES <total>` or `SCOLLECT <deadline_ns>`; `None` for any other line.
pub fn parse_cmd(line: &str) -> Option<SeriesCmd> {
    let mut w = line.split_whitespace();
    let cmd = match (w.next()?, w.next()?.parse::<u64>().ok()?) {
        ("SERIES", n) => SeriesCmd::Arm(n as usize),
        ("SCOLLECT", dl) => SeriesCmd::Collect(dl),
        _ => return None,
    };
    w.next().is_none().then_some(cmd)
}

/// The body of message `i` published at `t_ns`.
pub fn body(i: usize, t_ns: u64) -> String {
    format!("b2b-{i}-{t_ns}")
}

/// `(i, t_ns)` of a series message body.
fn parse_body(rec: &[u8]) -> Option<(usize, u64)> {
    let rest = std::str::from_utf8(rec.strip_prefix(PREFIX)?).ok()?;
    let (i, t) = rest.split_once('-')?;
    Some((i.parse().ok()?, t.parse().ok()?))
}

/// What a worker's connections received of the series.
pub struct Series {
    total: usize,
    /// Per connection: armed (it was up when the series began).
    armed: Vec<bool>,
    /// Copies received, `total` per connection.
    seen: Vec<u8>,
    /// Per connection: distinct messages received.
    distinct: Vec<u32>,
    expected: usize,
    /// Armed connections that have every message, or closed.
    done: usize,
    deliveries: u64,
    dups: u64,
    /// Armed connections that closed before they had every message.
    gone: usize,
    /// Bodies with the prefix that do not parse or are out of range.
    bad: u64,
    hist: Hist,
    last_ns: u64,
    deadline: Option<u64>,
}

impl Series {
    /// Arms the connections for which `up` yields true for `total` messages.
    pub fn arm(total: usize, up: impl Iterator<Item = bool>) -> Series {
        let armed: Vec<bool> = up.collect();
        let n = armed.len();
        Series {
            total,
            expected: armed.iter().filter(|&&a| a).count(),
            armed,
            seen: vec![0; n * total],
            distinct: vec![0; n],
            done: 0,
            deliveries: 0,
            dups: 0,
            gone: 0,
            bad: 0,
            hist: Hist::new(),
            last_ns: 0,
            deadline: None,
        }
    }

    /// Connection `idx` read the message `rec` (which starts with `PREFIX`) at `now`.
    pub fn hit(&mut self, idx: usize, rec: &[u8], now: u64) {
        if !self.armed[idx] {
            return;
        }
        let Some((i, t)) = parse_body(rec).filter(|&(i, _)| i < self.total) else {
            self.bad += 1;
            return;
        };
        let seen = &mut self.seen[idx * self.total + i];
        *seen = seen.saturating_add(1);
        if *seen > 1 {
            self.dups += 1;
            return;
        }
        self.deliveries += 1;
        self.hist.record(now.saturating_sub(t) / 1000);
        self.last_ns = self.last_ns.max(now);
        self.distinct[idx] += 1;
        if self.distinct[idx] as usize == self.total {
            self.done += 1;
        }
    }

    /// Connection `idx` closed.
    pub fn closed(&mut self, idx: usize) {
        if self.armed[idx] && (self.distinct[idx] as usize) < self.total {
            self.armed[idx] = false;
            self.gone += 1;
            self.done += 1;
        }
    }

    fn result_line(&self) -> String {
        let want = self.expected as u64 * self.total as u64;
        format!(
            "SRESULT expected={} deliveries={} lost={} dups={} gone={} bad={} last_ns={} hist={}",
            self.expected,
            self.deliveries,
            want.saturating_sub(self.deliveries),
            self.dups,
            self.gone,
            self.bad,
            self.last_ns,
            self.hist.encode()
        )
    }

    /// The `SRESULT` line once every armed connection is done or the deadline
    /// passed (`Ok`); else the time left (`Err`); `None` before `SCOLLECT`.
    fn due(&mut self, now: u64) -> Option<Result<String, u64>> {
        let deadline = self.deadline?;
        if self.done < self.expected && now < deadline {
            return Some(Err(deadline - now));
        }
        self.deadline = None;
        Some(Ok(self.result_line()))
    }
}

/// Handles a series command: arms the connections `up` yields true for (and
/// says `ARMED`), or starts collecting.
pub fn handle(series: &mut Option<Series>, cmd: SeriesCmd, up: impl Iterator<Item = bool>) {
    match cmd {
        SeriesCmd::Arm(total) => {
            let s = Series::arm(total, up);
            send(&format!("ARMED series expected={}", s.expected));
            *series = Some(s);
        }
        SeriesCmd::Collect(deadline) => match series.as_mut() {
            Some(s) => s.deadline = Some(deadline),
            None => send("SRESULT expected=0 deliveries=0 lost=0 dups=0 gone=0 bad=0 last_ns=0 error=not-armed hist=0;"),
        },
    }
}

/// Sends the `SRESULT` line when it is due; returns how long to wait for it.
pub fn check(series: &mut Option<Series>, now: u64) -> Option<u64> {
    match series.as_mut()?.due(now)? {
        Ok(line) => {
            send(&line);
            None
        }
        Err(left) => Some(left),
    }
}

/// What one publisher did.
#[derive(Default)]
struct PubStats {
    accepted: usize,
    /// Failed writes or reads, refused statuses (the first one printed).
    errors: usize,
    /// POST round trips, µs.
    rtt: Hist,
}

/// Publisher `p` of `n` messages (indices `p×n..`) on one keep-alive connection.
fn publisher(server: SocketAddr, channel: &str, p: usize, n: usize) -> PubStats {
    let mut st = PubStats::default();
    let mut sock = None;
    for k in 0..n {
        if sock.is_none() {
            match connect(server, Duration::from_secs(5)) {
                Ok(s) => sock = Some(s),
                Err(e) => {
                    st.errors += 1;
                    println!("!!! publisher {p}: {e}");
                    continue;
                }
            }
        }
        let s = sock.as_mut().expect("connected");
        let t0 = now_ns();
        let req = pub_api_request(channel, body(p * n + k, t0).as_bytes());
        let res = s
            .write_all(&req)
            .map_err(|e| format!("write: {e}"))
            .and_then(|_| read_reply(s, Duration::from_secs(10), Duration::from_millis(100)));
        match res {
            Ok(r) if (200..300).contains(&r.status) => {
                st.accepted += 1;
                st.rtt.record((now_ns() - t0) / 1000);
            }
            Ok(r) => {
                st.errors += 1;
                if st.errors == 1 {
                    println!(
                        "!!! publisher {p}: status {} ({:?})",
                        r.status,
                        escape(&r.raw(), 200)
                    );
                }
                sock = None;
            }
            Err(e) => {
                st.errors += 1;
                if st.errors == 1 {
                    println!("!!! publisher {p}: {e}");
                }
                sock = None;
            }
        }
    }
    st
}

/// What the series did, over every worker.
pub struct Outcome {
    pub total: usize,
    pub expected: usize,
    pub accepted: usize,
    pub pub_errors: usize,
    pub deliveries: u64,
    pub lost: u64,
    pub dups: u64,
    pub gone: usize,
    pub bad: u64,
    /// Arrival − send of every delivery, µs.
    pub lat: Hist,
    /// POST round trips, µs.
    pub rtt: Hist,
    /// From the first POST written to the last POST answered, and to the last arrival.
    pub publish_s: f64,
    pub span_s: f64,
}

/// Arms `g`'s workers, runs `publishers` back-to-back publishers of `n` messages
/// each on `channel`, and gathers what the subscribers got within `loss_ms` of
/// the last publish.
pub fn run(
    g: &mut Group,
    server: SocketAddr,
    channel: &str,
    publishers: usize,
    n: usize,
    loss_ms: u64,
) -> Outcome {
    let total = publishers * n;
    broadcast(&mut g.workers, &format!("SERIES {total}"));
    let mut expected = 0;
    gather(
        &g.rx,
        &mut g.workers,
        "ARMED series",
        Duration::from_secs(10),
        |_, l| expected += kv_num(l, "expected"),
    );
    let start = now_ns();
    let stats: Vec<PubStats> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..publishers)
            .map(|p| sc.spawn(move || publisher(server, channel, p, n)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("publisher thread"))
            .collect()
    });
    let published = now_ns();
    broadcast(
        &mut g.workers,
        &format!("SCOLLECT {}", published + loss_ms * 1_000_000),
    );
    let mut out = Outcome {
        total,
        expected,
        accepted: stats.iter().map(|s| s.accepted).sum(),
        pub_errors: stats.iter().map(|s| s.errors).sum(),
        deliveries: 0,
        lost: 0,
        dups: 0,
        gone: 0,
        bad: 0,
        lat: Hist::new(),
        rtt: Hist::new(),
        publish_s: (published - start) as f64 / 1e9,
        span_s: 0.0,
    };
    for s in &stats {
        out.rtt.merge(&s.rtt);
    }
    let mut last = published;
    let wait = Duration::from_millis(loss_ms + 10_000);
    gather(&g.rx, &mut g.workers, "SRESULT", wait, |i, l| {
        out.deliveries += kv_num(l, "deliveries") as u64;
        out.lost += kv_num(l, "lost") as u64;
        out.dups += kv_num(l, "dups") as u64;
        out.gone += kv_num(l, "gone");
        out.bad += kv_num(l, "bad") as u64;
        last = last.max(kv_num(l, "last_ns") as u64);
        match kv(l, "hist").map(Hist::decode) {
            Some(Ok(h)) => out.lat.merge(&h),
            other => println!("!!! worker {i}: SRESULT histogram {other:?}"),
        }
    });
    out.span_s = (last - start) as f64 / 1e9;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_bodies_parse() {
        assert_eq!(parse_cmd("SERIES 400"), Some(SeriesCmd::Arm(400)));
        assert_eq!(parse_cmd("SCOLLECT 99"), Some(SeriesCmd::Collect(99)));
        assert_eq!(parse_cmd("SERIES x"), None);
        assert_eq!(parse_cmd("SERIES 4 5"), None);
        assert_eq!(parse_cmd("ARM t"), None);
        assert_eq!(parse_body(body(7, 123).as_bytes()), Some((7, 123)));
        assert_eq!(parse_body(b"b2b-7"), None);
        assert_eq!(parse_body(b"fanout-1-2"), None);
    }

    #[test]
    fn arrivals_duplicates_closes_and_the_result() {
        let mut s = Series::arm(2, [true, false, true].into_iter());
        assert_eq!(s.expected, 2);
        s.hit(0, b"b2b-0-1000000", 3_000_000);
        s.hit(0, b"b2b-0-1000000", 3_500_000);
        s.hit(1, b"b2b-0-1000000", 3_000_000);
        s.hit(0, b"b2b-1-2000000", 4_000_000);
        s.hit(2, b"b2b-9-2000000", 4_000_000);
        s.closed(0);
        assert_eq!((s.deliveries, s.dups, s.bad, s.done), (2, 1, 1, 1));
        assert!(s.due(5).is_none(), "not collecting yet");
        s.deadline = Some(10_000_000);
        assert_eq!(s.due(5_000_000), Some(Err(5_000_000)));
        s.closed(2);
        assert_eq!(
            s.due(6_000_000),
            Some(Ok(
                "SRESULT expected=2 deliveries=2 lost=2 dups=1 gone=1 bad=1 last_ns=4000000 hist=2000;1512:2"
                    .into()
            ))
        );
    }
}
