//! Fan-out measurement, shared by `talk-idle` and `xmpp-fanout`: one publish
//! with a unique token, and the time it takes to reach every subscriber.
//!
//! Worker side: `ARM <token>` arms every connection that is up (`Expect`), a
//! subscriber's copy of the token is a `hit` (a second copy is a duplicate),
//! `COLLECT <token> <t0_ns> <deadline_ns>` asks for the `RESULT` line once every
//! armed connection has it (or has closed) or at the deadline.
//!
//! Parent side: `publish` arms every group of workers, writes the publish on
//! its own connection (`t0` = `CLOCK_MONOTONIC` just before the write, the
//! same clock the workers read after each socket read), sends `COLLECT` and
//! gathers each group's `Delivery`.

use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::child::send;
use crate::fleet::{broadcast, gather, kv, kv_num, Msg, Worker};
use crate::http::{escape, timed_request};
use crate::measure::pct_ms;

/// `Expect::arrivals` of a connection that was not up when armed.
const NOT_ARMED: u64 = u64::MAX;

/// The fan-out commands a worker takes besides its own.
#[derive(Debug, PartialEq, Eq)]
pub enum FanCmd {
    Arm(String),
    Collect(String, u64, u64),
}

/// `ARM <token>` or `COLLECT <token> <t0_ns> <deadline_ns>`; `None` for any
/// other line (or a malformed one).
pub fn parse_cmd(line: &str) -> Option<FanCmd> {
    let mut w = line.split_whitespace();
    let cmd = match (w.next()?, w.next()?) {
        ("ARM", t) => FanCmd::Arm(t.to_string()),
        ("COLLECT", t) => {
            let t0 = w.next()?.parse().ok()?;
            let dl = w.next()?.parse().ok()?;
            FanCmd::Collect(t.to_string(), t0, dl)
        }
        _ => return None,
    };
    w.next().is_none().then_some(cmd)
}

/// The fan-out message a worker watches for.
pub struct Expect {
    pub token: Vec<u8>,
    /// Per connection: `NOT_ARMED`, `0` (waiting) or the arrival time.
    arrivals: Vec<u64>,
    expected: usize,
    received: usize,
    /// Armed connections that closed before the message arrived.
    gone: usize,
    dups: usize,
    /// `(t0_ns, deadline_ns)` once the parent asked for the result.
    collect: Option<(u64, u64)>,
}

impl Expect {
    /// Arms the connections for which `up` yields true.
    pub fn arm(token: String, up: impl Iterator<Item = bool>) -> Expect {
        let arrivals: Vec<u64> = up.map(|u| if u { 0 } else { NOT_ARMED }).collect();
        Expect {
            token: token.into_bytes(),
            expected: arrivals.iter().filter(|&&a| a == 0).count(),
            arrivals,
            received: 0,
            gone: 0,
            dups: 0,
            collect: None,
        }
    }

    /// Connection `idx` got the token at `now`.
    pub fn hit(&mut self, idx: usize, now: u64) {
        match self.arrivals[idx] {
            0 => {
                self.arrivals[idx] = now;
                self.received += 1;
            }
            NOT_ARMED => {}
            _ => self.dups += 1,
        }
    }

    /// Connection `idx` closed.
    pub fn closed(&mut self, idx: usize) {
        if self.arrivals[idx] == 0 {
            self.gone += 1;
        }
    }

    /// The `RESULT` line, latencies in µs from `t0` in connection order.
    fn result_line(&self, t0: u64) -> String {
        let mut line = format!(
            "RESULT {} expected={} received={} gone={} dups={} lat_us=",
            String::from_utf8_lossy(&self.token),
            self.expected,
            self.received,
            self.gone,
            self.dups
        );
        let mut first = true;
        for &t in &self.arrivals {
            if t != 0 && t != NOT_ARMED {
                if !first {
                    line.push(',');
                }
                first = false;
                line.push_str(&(t.saturating_sub(t0) / 1000).to_string());
            }
        }
        line
    }

    /// The `RESULT` line once every armed connection has the message or
    /// closed, or the deadline passed (`Ok`); else the time left (`Err`).
    fn due(&mut self, now: u64) -> Option<Result<String, u64>> {
        let (t0, deadline) = self.collect?;
        if self.received + self.gone < self.expected && now < deadline {
            return Some(Err(deadline - now));
        }
        self.collect = None;
        Some(Ok(self.result_line(t0)))
    }
}

/// Handles a fan-out command: arms the connections `up` yields true for
/// (and says `ARMED`), or starts collecting.
pub fn handle(expect: &mut Option<Expect>, cmd: FanCmd, up: impl Iterator<Item = bool>) {
    match cmd {
        FanCmd::Arm(token) => {
            let x = Expect::arm(token, up);
            send(&format!(
                "ARMED {} expected={}",
                String::from_utf8_lossy(&x.token),
                x.expected
            ));
            *expect = Some(x);
        }
        FanCmd::Collect(token, t0, deadline) => match expect.as_mut() {
            Some(x) if x.token == token.as_bytes() => x.collect = Some((t0, deadline)),
            _ => send(&format!(
                "RESULT {token} expected=0 received=0 gone=0 dups=0 error=not-armed lat_us="
            )),
        },
    }
}

/// Sends the `RESULT` line when it is due; returns how long to wait for it.
pub fn check(expect: &mut Option<Expect>, now: u64) -> Option<u64> {
    match expect.as_mut()?.due(now)? {
        Ok(line) => {
            send(&line);
            None
        }
        Err(left) => Some(left),
    }
}

/// The parent's side of one kind of worker process.
pub struct Group {
    /// `talk`, `xmpp`, …: the name in the lines printed.
    pub label: &'static str,
    pub workers: Vec<Worker>,
    pub rx: Receiver<Msg>,
}

/// What one publish did at one group's subscribers.
#[derive(Default)]
pub struct Delivery {
    pub expected: usize,
    pub received: usize,
    /// Subscribers that closed before the message came.
    pub gone: usize,
    pub dups: usize,
    /// Subscribers that never got it (0 when the publish was refused).
    pub lost: usize,
    /// Latencies in µs, sorted.
    pub lats: Vec<u64>,
}

impl Delivery {
    /// ` received=…/… p50_ms=… p99_ms=… max_ms=…[ DUPLICATES=…]`
    pub fn figures(&self) -> String {
        format!(
            "received={}/{} p50_ms={} p99_ms={} max_ms={}{}",
            self.received,
            self.expected,
            pct_ms(&self.lats, 50.0),
            pct_ms(&self.lats, 99.0),
            pct_ms(&self.lats, 100.0),
            if self.dups > 0 {
                format!(" DUPLICATES={}", self.dups)
            } else {
                String::new()
            }
        )
    }
}

/// One publish.
pub struct Published {
    /// The publish was written and answered with an accepted status.
    pub ok: bool,
    /// From the write to the complete reply, in ms (NaN when none came).
    pub reply_ms: f64,
    /// Per group, in order; empty when the publish could not be written.
    pub groups: Vec<Delivery>,
}

/// Arms every group for `token`, writes `req` to `server` on a fresh connection,
/// and gathers what each group's subscribers got within `loss_ms`. A status that
/// `accepted` refuses, or a failed write, is printed with `!!!`.
pub fn publish(
    groups: &mut [Group],
    server: SocketAddr,
    req: &[u8],
    token: &str,
    loss_ms: u64,
    accepted: impl Fn(u16) -> bool,
) -> Published {
    let mut expected = vec![0; groups.len()];
    for (g, e) in groups.iter_mut().zip(expected.iter_mut()) {
        broadcast(&mut g.workers, &format!("ARM {token}"));
        gather(
            &g.rx,
            &mut g.workers,
            "ARMED",
            Duration::from_secs(10),
            |_, l| {
                *e += kv_num(l, "expected");
            },
        );
    }
    let mut written = false;
    let pushed = timed_request(server, req, |t0| {
        written = true;
        let line = format!("COLLECT {token} {t0} {}", t0 + loss_ms * 1_000_000);
        for g in groups.iter_mut() {
            broadcast(&mut g.workers, &line);
        }
    });
    let (ok, reply_ms) = match &pushed {
        Ok(p) if accepted(p.reply.status) => (true, (p.replied_ns - p.t0_ns) as f64 / 1e6),
        Ok(p) => {
            println!(
                "!!! publish {token}: status {} (reply {:?})",
                p.reply.status,
                escape(&p.reply.raw(), 200)
            );
            (false, (p.replied_ns - p.t0_ns) as f64 / 1e6)
        }
        Err(e) => {
            println!("!!! publish {token} failed: {e}");
            (false, f64::NAN)
        }
    };
    let mut out = Published {
        ok,
        reply_ms,
        groups: Vec::new(),
    };
    if !written {
        return out;
    }
    for (g, expected) in groups.iter_mut().zip(expected) {
        let mut d = Delivery {
            expected,
            ..Delivery::default()
        };
        let wait = Duration::from_millis(loss_ms + 10_000);
        gather(&g.rx, &mut g.workers, "RESULT", wait, |_, l| {
            d.received += kv_num(l, "received");
            d.gone += kv_num(l, "gone");
            d.dups += kv_num(l, "dups");
            if let Some(list) = kv(l, "lat_us") {
                d.lats
                    .extend(list.split(',').filter_map(|x| x.parse::<u64>().ok()));
            }
        });
        d.lats.sort_unstable();
        // A publish the server did not accept stored nothing: what the
        // subscribers did not get is a publish error, not a lost message.
        if ok {
            d.lost = d.expected.saturating_sub(d.received);
        }
        if d.lost > 0 {
            println!(
                "!!! LOST: {} of {} {} subscribers did not receive {token} within {loss_ms} ms ({} of them closed)",
                d.lost, d.expected, g.label, d.gone
            );
        }
        out.groups.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_cmd("ARM fanout-1-2"),
            Some(FanCmd::Arm("fanout-1-2".into()))
        );
        assert_eq!(
            parse_cmd("COLLECT tok 5 9"),
            Some(FanCmd::Collect("tok".into(), 5, 9))
        );
        assert_eq!(parse_cmd("COLLECT tok x 9"), None);
        assert_eq!(parse_cmd("COLLECT tok 5"), None);
        assert_eq!(parse_cmd("ARM"), None);
        assert_eq!(parse_cmd("ARM a b"), None);
        assert_eq!(parse_cmd("QUIT"), None);
    }

    #[test]
    fn arrivals_duplicates_and_closes() {
        let mut x = Expect::arm("t".into(), [true, false, true, true].into_iter());
        assert_eq!(x.expected, 3);
        x.hit(0, 1_500_000);
        x.hit(0, 1_600_000);
        x.hit(1, 1_700_000);
        x.closed(0);
        x.closed(3);
        assert_eq!((x.received, x.dups, x.gone), (1, 1, 1));
        assert!(x.due(5).is_none(), "not collecting yet");
        x.collect = Some((1_000_000, 9_000_000));
        assert_eq!(x.due(2_000_000), Some(Err(7_000_000)));
        x.hit(2, 3_000_000);
        assert_eq!(
            x.due(3_000_000),
            Some(Ok(
                "RESULT t expected=3 received=2 gone=1 dups=1 lat_us=500,2000".into()
            ))
        );
        assert!(x.due(3_000_000).is_none(), "reported once");
    }

    #[test]
    fn a_late_collect_reports_at_the_deadline() {
        let mut x = Expect::arm("t".into(), [true, true].into_iter());
        x.collect = Some((0, 10));
        x.hit(1, 4_000);
        assert_eq!(
            x.due(10),
            Some(Ok(
                "RESULT t expected=2 received=1 gone=0 dups=0 lat_us=4".into()
            ))
        );
    }
}
