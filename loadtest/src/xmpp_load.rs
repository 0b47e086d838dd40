//! `xmpp-idle` (many authenticated, bound, idle XMPP sessions over worker
//! processes; the server's RSS per session; how long logins took) and
//! `xmpp-ping` (clients pinging the server one ping at a time each: round
//! trips per second, latency, server CPU per round trip). Both start
//! `xmpp-worker` children through the fleet, as `talk-idle` does.

use std::time::{Duration, Instant};

use crate::args::Args;
use std::sync::mpsc::Receiver;

use crate::fleet::{
    bring_up, broadcast, finish, gather, kv, kv_num, resolve, Bye, Fleet, Msg, Started, Worker,
    FLEET_OPTIONS,
};
use crate::hist::Hist;
use crate::measure::{kib, opt_ms, parse_pids, per_item, verdict, whole, RssSource};
use crate::sys::{now_ns, proc_cpu_ns};

const IDLE_USAGE: &str =
    "usage: tidings-load xmpp-idle --sessions N [--server 127.0.0.1:5222] [--server-pid PID]
       [--procs P] [--sources 127.0.0.1,127.0.0.2,…] [--user user] [--password secret]
       [--domain localhost] [--hold SECS] [--inflight 1000] [--retries 3]
       [--connect-timeout 15] [--settle-ms 1000] [--max-connect-secs 600] [--allow-non-loopback]

  Opens N XMPP sessions (stream header, SASL PLAIN, restart, bind to resource
  lt-<run>-<i>, checked, session), holds them idle, and reports the server's RSS
  before and after (/proc/PID/status with --server-pid; several pids: PSS summed),
  the memory per session and the login times.";

const BOSH_IDLE_USAGE: &str =
    "usage: tidings-load bosh-idle --sessions N [--server 127.0.0.1:8080] [--server-pid PID]
       [--wait 60] [--procs P] [--sources …] [--user user] [--password secret]
       [--domain localhost] [--hold SECS] [--inflight 1000] [--retries 3]
       [--connect-timeout 15] [--settle-ms 1000] [--max-connect-secs 600] [--allow-non-loopback]

  xmpp-idle over BOSH (POST /http-bind on the HTTP port, one keep-alive connection per
  session): session creation (wait=--wait, hold=1), SASL PLAIN, xmpp:restart, bind to
  lt-<run>-<i> (checked), session; then one empty request that the server holds (sent
  again whenever the server answers it, at its wait). Reports the server's RSS per
  session as xmpp-idle does. The server's --max-bosh-sessions must be at least N.";

const PING_USAGE: &str =
    "usage: tidings-load xmpp-ping [--clients 100] [--secs 10] [--warmup-secs 1]
       [--server 127.0.0.1:5222] [--server-pid PID] [--procs 1] [--user user] [--password secret]
       [--domain localhost] [--sources …] [--inflight 1000] [--retries 3] [--connect-timeout 15]
       [--allow-non-loopback]

  Logs the clients in as xmpp-idle does, then each sends
  <iq type='get' id='N'><ping xmlns='urn:xmpp:ping'/></iq>, waits for its result and
  sends the next, for warm-up + secs seconds. Counts the round trips sent after the
  warm-up and answered within the window: round trips per second, p50/p99/max latency,
  and the server's CPU time (/proc/PID/stat) per round trip over the window.";

/// The account and domain every session logs in with.
pub struct LoginOptions {
    pub user: String,
    pub password: String,
    pub domain: String,
}

/// The option names `LoginOptions::from_args` reads.
pub const LOGIN_OPTIONS: [&str; 3] = ["user", "password", "domain"];

impl LoginOptions {
    pub fn from_args(a: &Args) -> LoginOptions {
        LoginOptions {
            user: a.str_or("user", "user"),
            password: a.str_or("password", "secret"),
            domain: a.str_or("domain", "localhost"),
        }
    }
}

struct Settings {
    fleet: Fleet,
    login: LoginOptions,
    rss: RssSource,
    hold: u64,
    secs: u64,
    warmup_secs: u64,
    /// Over BOSH, with this `wait`; else over TCP.
    bosh_wait: Option<u64>,
}

fn settings(argv: &[String], count: &str, own: &[&str], bosh: bool) -> Result<Settings, String> {
    let names = [&FLEET_OPTIONS[..], &LOGIN_OPTIONS[..], &[count], own].concat();
    let a = Args::parse(argv, &names, &["allow-non-loopback"])?;
    let default_server = if bosh {
        "127.0.0.1:8080"
    } else {
        "127.0.0.1:5222"
    };
    let server = resolve(&a.str_or("server", default_server))?;
    let n: usize = match (count, a.get(count)) {
        (_, Some(v)) => v
            .replace('_', "")
            .parse()
            .map_err(|_| format!("--{count}: not a number"))?,
        ("clients", None) => 100,
        _ => return Err(format!("--{count} is required")),
    };
    if n == 0 {
        return Err(format!("--{count} must be at least 1"));
    }
    let fleet = Fleet::from_args(&a, server, n, count)?;
    let pids = parse_pids(a.get("server-pid"))?;
    Ok(Settings {
        fleet,
        login: LoginOptions::from_args(&a),
        rss: RssSource::new(&pids, server, false)?,
        hold: a.num("hold", 0)?,
        secs: a.num("secs", 10)?,
        warmup_secs: a.num("warmup-secs", 1)?,
        bosh_wait: if bosh { Some(a.num("wait", 60)?) } else { None },
    })
}

pub fn run_idle(argv: &[String]) -> i32 {
    crate::run_scenario(
        "xmpp-idle",
        IDLE_USAGE,
        argv,
        |a| settings(a, "sessions", &["hold"], false),
        |s| idle(&s),
    )
}

pub fn run_bosh_idle(argv: &[String]) -> i32 {
    crate::run_scenario(
        "bosh-idle",
        BOSH_IDLE_USAGE,
        argv,
        |a| settings(a, "sessions", &["hold", "wait"], true),
        |s| idle(&s),
    )
}

pub fn run_ping(argv: &[String]) -> i32 {
    crate::run_scenario(
        "xmpp-ping",
        PING_USAGE,
        argv,
        |a| settings(a, "clients", &["secs", "warmup-secs"], false),
        |s| ping(&s),
    )
}

/// Starts the workers and follows them until every session is up or failed;
/// `extra` goes to every worker besides the login options.
pub fn log_in(
    fleet: &Fleet,
    login: &LoginOptions,
    noun: &str,
    extra: &[(&str, &str)],
) -> Result<(Vec<Worker>, Receiver<Msg>, Started), String> {
    let run_id = format!("{:x}{:x}", std::process::id(), now_ns() % (1 << 32));
    let mut args = vec![
        ("--user", login.user.as_str()),
        ("--password", &login.password),
        ("--domain", &login.domain),
        ("--run-id", &run_id),
    ];
    args.extend_from_slice(extra);
    bring_up(
        fleet,
        "xmpp-worker",
        "--sessions",
        &args,
        noun,
        "logging in",
    )
}

fn idle(s: &Settings) -> Result<i32, String> {
    let f = &s.fleet;
    println!(
        "{}: server={} sessions={} procs={} sources={} user={} domain={} rss={}",
        if s.bosh_wait.is_some() {
            "bosh-idle"
        } else {
            "xmpp-idle"
        },
        f.server,
        f.n,
        f.procs,
        f.source_list(),
        s.login.user,
        s.login.domain,
        s.rss.label()
    );
    let rss_base = s.rss.read();
    println!("baseline: rss_kib={}", kib(rss_base));
    let wait = s.bosh_wait.map(|w| w.to_string());
    let extra: Vec<(&str, &str)> = wait.iter().map(|w| ("--bosh-wait", w.as_str())).collect();
    let (mut workers, rx, l) = log_in(f, &s.login, "sessions", &extra)?;
    std::thread::sleep(Duration::from_millis(f.settle_ms));
    let rss_up = s.rss.read();
    let per = per_item(rss_base, rss_up, l.up);
    println!(
        "memory: rss_base_kib={} rss_kib={} rss_per_session_bytes={}{}",
        kib(rss_base),
        kib(rss_up),
        whole(per),
        s.rss
            .fds()
            .map_or(String::new(), |n| format!(" server_fds={n}"))
    );
    let mut rss_end = rss_up;
    if s.hold > 0 {
        println!("holding {} sessions for {} s", l.up, s.hold);
        let start = Instant::now();
        let mut next = 5;
        while start.elapsed() < Duration::from_secs(s.hold) {
            std::thread::sleep(Duration::from_millis(200));
            if start.elapsed().as_secs() >= next {
                rss_end = s.rss.read();
                println!("hold: {next}s rss_kib={}", kib(rss_end));
                next += 5;
            }
        }
        rss_end = s.rss.read();
    }
    let Bye {
        closed, unexpected, ..
    } = finish(&mut workers, &rx, "sessions", "stanzas");
    let pass = l.failed == 0 && l.up == f.n && l.dead_workers == 0 && closed == 0;
    println!(
        "SUMMARY transport={} sessions={} up={} failed={} procs={} retries={} connect_s={:.2} logins_per_s={:.0} login_p50_ms={} login_p99_ms={} login_max_ms={} rss_source={} rss_base_kib={} rss_kib={} rss_per_session_bytes={} rss_per_session_kib={} rss_end_kib={} closed={closed} unexpected={unexpected} result={}",
        if s.bosh_wait.is_some() { "bosh" } else { "tcp" },
        f.n,
        l.up,
        l.failed,
        f.procs,
        l.retries,
        l.connect_s,
        l.up as f64 / l.connect_s.max(0.001),
        opt_ms(l.hist.percentile(50.0)),
        opt_ms(l.hist.percentile(99.0)),
        opt_ms(l.hist.max()),
        s.rss.label(),
        kib(rss_base),
        kib(rss_up),
        whole(per),
        per.map_or("na".into(), |v| format!("{:.2}", v / 1024.0)),
        kib(rss_end),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}

fn ping(s: &Settings) -> Result<i32, String> {
    let f = &s.fleet;
    println!(
        "xmpp-ping: server={} clients={} procs={} secs={} warmup_secs={} user={} domain={}",
        f.server, f.n, f.procs, s.secs, s.warmup_secs, s.login.user, s.login.domain
    );
    let (mut workers, rx, l) = log_in(f, &s.login, "clients", &[])?;
    let mut sent = 0;
    let mut answered = 0;
    let mut counted = 0;
    let mut errors = 0;
    let mut unanswered = 0;
    let mut hist = Hist::new();
    let mut silent = 0;
    let (mut server_cpu, mut clients_cpu) = (None, None);
    let window_ns = s.secs.max(1) * 1_000_000_000;
    if l.up > 0 {
        let start = now_ns();
        let t0 = start + s.warmup_secs * 1_000_000_000;
        let t1 = t0 + window_ns;
        let child_pids: Vec<u32> = workers.iter().map(|w| w.proc.id()).collect();
        let clients_ns = || -> Option<u64> { child_pids.iter().map(|&p| proc_cpu_ns(p)).sum() };
        broadcast(&mut workers, &format!("PING {t0} {t1}"));
        std::thread::sleep(Duration::from_nanos(t0.saturating_sub(now_ns())));
        let (s0, c0) = (s.rss.cpu_ns(), clients_ns());
        std::thread::sleep(Duration::from_nanos(t1.saturating_sub(now_ns())));
        let (s1, c1) = (s.rss.cpu_ns(), clients_ns());
        server_cpu = s0.zip(s1).map(|(a, b)| b.saturating_sub(a));
        clients_cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
        silent = gather(
            &rx,
            &mut workers,
            "PINGED",
            Duration::from_secs(30),
            |_, line| {
                sent += kv_num(line, "sent");
                answered += kv_num(line, "answered");
                counted += kv_num(line, "counted");
                errors += kv_num(line, "errors");
                unanswered += kv_num(line, "unanswered");
                match kv(line, "hist").map(Hist::decode) {
                    Some(Ok(h)) => hist.merge(&h),
                    _ => eprintln!("!!! a PINGED line without a histogram"),
                }
            },
        );
    }
    let Bye {
        closed, unexpected, ..
    } = finish(&mut workers, &rx, "sessions", "stanzas");
    let secs = window_ns as f64 / 1e9;
    let rt_per_s = counted as f64 / secs;
    let per_rt = |ns: Option<u64>| match ns {
        Some(ns) if counted > 0 => format!("{:.2}", ns as f64 / 1e3 / counted as f64),
        _ => "na".into(),
    };
    let pct = |ns: Option<u64>| ns.map_or("na".into(), |v| format!("{:.0}", v as f64 / 1e7 / secs));
    if errors > 0 {
        println!("!!! {errors} pings answered with an error");
    }
    if unanswered > 0 {
        println!("!!! {unanswered} pings not answered within 5 s of the end");
    }
    let pass = l.failed == 0
        && l.up == f.n
        && l.dead_workers == 0
        && closed == 0
        && errors == 0
        && unanswered == 0
        && silent == 0
        && counted > 0;
    println!(
        "SUMMARY clients={} up={} failed={} procs={} connect_s={:.2} login_p50_ms={} login_p99_ms={} secs={} sent={sent} answered={answered} round_trips={counted} rt_per_s={rt_per_s:.0} rt_p50_ms={} rt_p99_ms={} rt_max_ms={} errors={errors} unanswered={unanswered} server_cpu_us_per_rt={} server_cpu_pct={} clients_cpu_pct={} closed={closed} unexpected={unexpected} result={}",
        f.n,
        l.up,
        l.failed,
        f.procs,
        l.connect_s,
        opt_ms(l.hist.percentile(50.0)),
        opt_ms(l.hist.percentile(99.0)),
        s.secs.max(1),
        opt_ms(hist.percentile(50.0)),
        opt_ms(hist.percentile(99.0)),
        opt_ms(hist.max()),
        per_rt(server_cpu),
        pct(server_cpu),
        pct(clients_cpu),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}
