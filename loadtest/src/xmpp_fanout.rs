//! `xmpp-fanout`: one publish reaching N PubSub subscribers over XMPP and N
//! Talk streams on the same channel of the same server; for each transport the
//! time from the publish's write to the event's last byte read at every
//! subscriber, and every event delivered exactly once.
//!
//! The XMPP sessions are `xmpp-worker`s with `--subscribe CHANNEL` (login as in
//! `xmpp-idle`, then `<subscribe node='CHANNEL' jid='FULL-JID'/>`, checked), the
//! Talk streams `talk-idle`'s `worker`s; each publish is a `POST /push` with a
//! unique token, measured as `talk-idle` measures it (`fanout.rs`). With
//! `--apart` the two transports take turns on the same server (one fleet up,
//! its publishes, closed; then the other): what a server that cannot hold 2N
//! connections at once needs.

use std::time::Duration;

use crate::args::Args;
use crate::fanout::{publish, Group};
use crate::fleet::{bring_up, finish, resolve, Fleet, FLEET_OPTIONS};
use crate::http::push_request;
use crate::measure::{kib, parse_pids, pct_ms, percentile, verdict, RssSource};
use crate::sys::{now_ns, proc_cpu_ns};
use crate::xmpp_load::{log_in, LoginOptions, LOGIN_OPTIONS};

const USAGE: &str = "usage: tidings-load xmpp-fanout --subscribers N [--server 127.0.0.1:8080]
       [--xmpp-server 127.0.0.1:5222] [--apart [--turns 1]] [--first talk|xmpp] [--channel C]
       [--pushes 10] [--push-gap-ms 200] [--loss-timeout 10] [--server-pid PID]
       [--procs P] [--sources …] [--user user] [--password secret] [--domain localhost]
       [--terminator nul|newline] [--inflight 1000] [--retries 3] [--connect-timeout 15]
       [--settle-ms 1000] [--max-connect-secs 600] [--allow-non-loopback]

  Opens N Talk streams (GET /pull on --server) and N XMPP sessions (--xmpp-server;
  SASL PLAIN, bind to lt-<run>-<i>, session, then a PubSub subscription to the node
  C, checked) on channel C (default: a fresh one), then K times: arms every
  subscriber for a unique token, writes POST /push name=loadtest&channel=C&message=
  <token> (t0 = CLOCK_MONOTONIC just before the write) and waits until every
  subscriber has it (a Talk record, an XMPP <message> event on node C to its own
  JID) or --loss-timeout. Per transport: p50 / p99 / max from t0 to the read that
  completed the event, lost and duplicated events (any: result=FAIL).
  --apart: the transports take turns on the server (--first's fleet up, its K
  publishes, closed; then the other's; --turns times), for when 2N connections
  exceed the server's open files. With --server-pid: the server's CPU time per
  publish.";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Talk,
    Xmpp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Talk => "talk",
            Transport::Xmpp => "xmpp",
        }
    }
}

struct Settings {
    talk: Fleet,
    xmpp: Fleet,
    login: LoginOptions,
    channel: String,
    pushes: usize,
    push_gap_ms: u64,
    loss_timeout_ms: u64,
    terminator: String,
    apart: bool,
    /// With `--apart`: how many times each transport takes its turn.
    turns: usize,
    first: Transport,
    rss: RssSource,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let own = [
        "subscribers",
        "xmpp-server",
        "first",
        "turns",
        "channel",
        "pushes",
        "push-gap-ms",
        "loss-timeout",
        "terminator",
    ];
    let names = [&FLEET_OPTIONS[..], &LOGIN_OPTIONS[..], &own[..]].concat();
    let a = Args::parse(argv, &names, &["allow-non-loopback", "apart"])?;
    let n: usize = a.required("subscribers").and_then(|v| {
        v.replace('_', "")
            .parse()
            .map_err(|_| "--subscribers: not a number".to_string())
    })?;
    if n == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    let http = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
    let xmpp = resolve(&a.str_or("xmpp-server", "127.0.0.1:5222"))?;
    let first = match a.str_or("first", "talk").as_str() {
        "talk" => Transport::Talk,
        "xmpp" => Transport::Xmpp,
        other => return Err(format!("--first `{other}`: want `talk` or `xmpp`")),
    };
    let terminator = a.str_or("terminator", "nul");
    crate::parse_terminator(&terminator)?;
    let channel = a.get("channel").map_or_else(
        || format!("fanout-{:x}{:x}", std::process::id(), now_ns() % (1 << 32)),
        str::to_string,
    );
    if !channel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("--channel: letters, digits, `-`, `_` and `.` only".into());
    }
    let pids = parse_pids(a.get("server-pid"))?;
    Ok(Settings {
        talk: Fleet::from_args(&a, http, n, "streams")?,
        xmpp: Fleet::from_args(&a, xmpp, n, "sessions")?,
        login: LoginOptions::from_args(&a),
        channel,
        pushes: a.num("pushes", 10)?,
        push_gap_ms: a.num("push-gap-ms", 200)?,
        loss_timeout_ms: a.num::<u64>("loss-timeout", 10)? * 1000,
        terminator,
        apart: a.flag("apart"),
        turns: a.num::<usize>("turns", 1)?.max(1),
        first,
        rss: RssSource::new(&pids, http, true)?,
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("xmpp-fanout", USAGE, argv, settings, |s| fanout(&s))
}

/// One transport's figures over the run.
#[derive(Default)]
struct Tally {
    up: usize,
    failed: usize,
    dead_workers: usize,
    publishes: usize,
    expected: usize,
    received: usize,
    lost: usize,
    dups: usize,
    closed: usize,
    unexpected: usize,
    proto_errors: usize,
    /// Every subscriber's latency of every publish (µs).
    lats: Vec<u64>,
    /// Per publish: p50, p99 and the last subscriber's latency (µs).
    p50s: Vec<u64>,
    p99s: Vec<u64>,
    lasts: Vec<u64>,
    /// Phases this transport was measured in.
    phases: usize,
    /// Server and client-process CPU time over those phases' publishes (ns).
    server_cpu_ns: Option<u64>,
    clients_cpu_ns: Option<u64>,
    /// Subscribers of every transport in that phase (what one publish reached).
    phase_subscribers: usize,
}

impl Tally {
    fn ok(&self, n: usize) -> bool {
        self.up == n
            && self.failed == 0
            && self.dead_workers == 0
            && self.lost == 0
            && self.dups == 0
            && self.closed == 0
            && self.unexpected == 0
            && self.proto_errors == 0
            && self.received == self.expected
            && self.publishes > 0
    }

    /// `<label>_key=value …` for the SUMMARY line.
    fn summary(&mut self, label: &str) -> String {
        self.lats.sort_unstable();
        let median = |v: &mut Vec<u64>| -> String {
            v.sort_unstable();
            pct_ms(v, 50.0)
        };
        let per_delivery = |cpu: Option<f64>| match cpu {
            Some(ns) if self.phase_subscribers > 0 => {
                format!("{:.2}", ns / 1e3 / self.phase_subscribers as f64)
            }
            _ => "na".into(),
        };
        let ms = |cpu: Option<f64>| cpu.map_or("na".into(), |ns| format!("{:.2}", ns / 1e6));
        let per_publish = |ns: Option<u64>| {
            ns.filter(|_| self.publishes > 0)
                .map(|ns| ns as f64 / self.publishes as f64)
        };
        let (server_cpu, clients_cpu) = (
            per_publish(self.server_cpu_ns),
            per_publish(self.clients_cpu_ns),
        );
        format!(
            "{label}_up={} {label}_failed={} {label}_publishes={} {label}_expected={} {label}_received={} {label}_lost={} {label}_dups={} {label}_closed={} {label}_unexpected={} {label}_proto_errors={} {label}_p50_ms={} {label}_p99_ms={} {label}_max_ms={} {label}_median_p99_ms={} {label}_median_last_ms={} {label}_server_cpu_ms_per_publish={} {label}_server_cpu_us_per_delivery={} {label}_clients_cpu_ms_per_publish={}",
            self.up,
            self.failed,
            self.publishes,
            self.expected,
            self.received,
            self.lost,
            self.dups,
            self.closed,
            self.unexpected,
            self.proto_errors,
            pct_ms(&self.lats, 50.0),
            pct_ms(&self.lats, 99.0),
            pct_ms(&self.lats, 100.0),
            median(&mut self.p99s),
            median(&mut self.lasts),
            ms(server_cpu),
            per_delivery(server_cpu),
            ms(clients_cpu),
        )
    }
}

/// Brings up the fleet of `t`.
fn start(s: &Settings, t: Transport) -> Result<(Group, crate::fleet::Started), String> {
    let (workers, rx, st) = match t {
        Transport::Talk => {
            let run_id = format!("{:x}{:x}", std::process::id(), now_ns() % (1 << 32));
            bring_up(
                &s.talk,
                "worker",
                "--streams",
                &[
                    ("--channel", &s.channel),
                    ("--run-id", &run_id),
                    ("--terminator", &s.terminator),
                ],
                "streams",
                "connecting",
            )?
        }
        Transport::Xmpp => log_in(
            &s.xmpp,
            &s.login,
            "sessions",
            &[("--subscribe", &s.channel)],
        )?,
    };
    let g = Group {
        label: t.label(),
        workers,
        rx,
    };
    Ok((g, st))
}

/// One phase: the fleets of `ts` up together, `--pushes` publishes reaching
/// all of them, the fleets closed.
fn phase(s: &Settings, ts: &[Transport], tallies: &mut [Tally; 2]) -> Result<(), String> {
    let mut groups = Vec::new();
    for &t in ts {
        let (g, st) = start(s, t)?;
        let tl = &mut tallies[t as usize];
        // every phase of a transport brings all of its subscribers up
        tl.up = if tl.phases == 0 {
            st.up
        } else {
            tl.up.min(st.up)
        };
        tl.phases += 1;
        tl.failed += st.failed;
        tl.dead_workers += st.dead_workers;
        groups.push(g);
    }
    std::thread::sleep(Duration::from_millis(s.talk.settle_ms));
    println!(
        "phase {}: rss_kib={}{}",
        ts.iter().map(|t| t.label()).collect::<Vec<_>>().join("+"),
        kib(s.rss.read()),
        s.rss
            .fds()
            .map_or(String::new(), |n| format!(" server_fds={n}"))
    );
    let child_pids: Vec<u32> = groups
        .iter()
        .flat_map(|g| g.workers.iter().map(|w| w.proc.id()))
        .collect();
    let clients_ns = || -> Option<u64> { child_pids.iter().map(|&p| proc_cpu_ns(p)).sum() };
    let (server0, clients0) = (s.rss.cpu_ns(), clients_ns());
    for k in 1..=s.pushes {
        let token = format!("fanout-{k}-{}", now_ns());
        let req = push_request("loadtest", &s.channel, &token, false);
        let p = publish(
            &mut groups,
            s.talk.server,
            &req,
            &token,
            s.loss_timeout_ms,
            |status| status == 200,
        );
        if !p.ok {
            return Err(format!("publish {k} was not accepted"));
        }
        for (d, &t) in p.groups.iter().zip(ts) {
            println!(
                "publish {k}/{} {}: token={token} {} push_reply_ms={:.3}",
                s.pushes,
                t.label(),
                d.figures(),
                p.reply_ms
            );
            let tl = &mut tallies[t as usize];
            tl.publishes += 1;
            tl.expected += d.expected;
            tl.received += d.received;
            tl.lost += d.lost;
            tl.dups += d.dups;
            tl.lats.extend_from_slice(&d.lats);
            if !d.lats.is_empty() {
                tl.p50s.push(percentile(&d.lats, 50.0));
                tl.p99s.push(percentile(&d.lats, 99.0));
                tl.lasts.push(percentile(&d.lats, 100.0));
            }
        }
        std::thread::sleep(Duration::from_millis(s.push_gap_ms));
    }
    let spent = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let server_cpu = spent(server0, s.rss.cpu_ns());
    let subscribers: usize = ts.iter().map(|&t| tallies[t as usize].up).sum();
    let clients_cpu = spent(clients0, clients_ns());
    for (mut g, &t) in groups.into_iter().zip(ts) {
        let (noun, what) = match t {
            Transport::Talk => ("streams", "records"),
            Transport::Xmpp => ("sessions", "stanzas"),
        };
        let b = finish(&mut g.workers, &g.rx, noun, what);
        let tl = &mut tallies[t as usize];
        tl.closed += b.closed;
        tl.unexpected += b.unexpected;
        tl.proto_errors += b.proto_errors;
        let add = |sum: Option<u64>, v: Option<u64>| Some(sum.unwrap_or(0) + v?);
        tl.server_cpu_ns = add(tl.server_cpu_ns, server_cpu);
        tl.clients_cpu_ns = add(tl.clients_cpu_ns, clients_cpu);
        tl.phase_subscribers = subscribers;
    }
    Ok(())
}

fn fanout(s: &Settings) -> Result<i32, String> {
    let n = s.talk.n;
    println!(
        "xmpp-fanout: server={} xmpp_server={} subscribers={n} per transport, channel={} mode={} pushes={} procs={}+{} sources={} rss={}",
        s.talk.server,
        s.xmpp.server,
        s.channel,
        if s.apart { "apart" } else { "together" },
        s.pushes,
        s.talk.procs,
        s.xmpp.procs,
        s.talk.source_list(),
        s.rss.label()
    );
    println!("baseline: rss_kib={}", kib(s.rss.read()));
    let mut tallies = [Tally::default(), Tally::default()];
    let second = match s.first {
        Transport::Talk => Transport::Xmpp,
        Transport::Xmpp => Transport::Talk,
    };
    if s.apart {
        for _ in 0..s.turns {
            phase(s, &[s.first], &mut tallies)?;
            phase(s, &[second], &mut tallies)?;
        }
    } else {
        phase(s, &[s.first, second], &mut tallies)?;
    }
    let pass = tallies.iter().all(|t| t.ok(n));
    let ratio = |f: fn(&Tally) -> Option<u64>| match (f(&tallies[1]), f(&tallies[0])) {
        (Some(x), Some(t)) if t > 0 => format!("{:.2}", x as f64 / t as f64),
        _ => "na".into(),
    };
    let p99 = |t: &Tally| {
        let mut v = t.lats.clone();
        v.sort_unstable();
        (!v.is_empty()).then(|| percentile(&v, 99.0))
    };
    let last = |t: &Tally| {
        let mut v = t.lasts.clone();
        v.sort_unstable();
        (!v.is_empty()).then(|| percentile(&v, 50.0))
    };
    let (ratio_p99, ratio_last) = (ratio(p99), ratio(last));
    let [talk, xmpp] = &mut tallies;
    println!(
        "SUMMARY subscribers={n} mode={} turns={} first={} channel={} {} {} xmpp_talk_p99_ratio={ratio_p99} xmpp_talk_last_ratio={ratio_last} result={}",
        if s.apart { "apart" } else { "together" },
        if s.apart { s.turns } else { 1 },
        s.first.label(),
        s.channel,
        talk.summary("talk"),
        xmpp.summary("xmpp"),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}
