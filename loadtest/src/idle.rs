//! `talk-idle`: many idle Talk streams spread over worker processes; the
//! server's RSS per stream; fan-out latency of pushes to all of them.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::http::{escape, metrics_rss, timed_push};
use crate::sys::{ephemeral_ports, now_ns, open_fds, raise_nofile_limit, vm_rss_bytes};

/// Streams one worker takes by default before another worker is added.
const DEFAULT_PER_PROC: usize = 15_000;
/// File descriptors a worker keeps for itself (stdio, epoll, waker, …).
const FD_RESERVE: u64 = 64;
/// Above this many streams the default is eight source addresses. Linux
/// gives connect() the even half of the ephemeral range first; once that half
/// is used up (about 14,000 connections from one address to one server), every
/// connect() searches the whole range and opening streams slows down tenfold
/// (measured: 12,500 streams in 0.2 s, 17,500 in 1.4 s from 127.0.0.1 alone;
/// 0.25 s from two addresses).
const SINGLE_SOURCE_MAX: usize = 10_000;
/// Ports per source address left unused as a margin.
const PORT_RESERVE: u64 = 256;

const USAGE: &str =
    "usage: tidings-load talk-idle --streams N [--server 127.0.0.1:8080] [--channel C]
       [--procs P] [--sources 127.0.0.1,127.0.0.2,…] [--server-pid PID] [--pushes K] [--hold SECS]
       [--terminator nul|newline] [--inflight 1000] [--retries 3] [--connect-timeout 15]
       [--loss-timeout 10] [--settle-ms 1000] [--push-gap-ms 200] [--max-connect-secs 600]
       [--allow-non-loopback]";

pub(crate) enum Msg {
    Line(usize, String),
    Eof(usize),
}

/// The parent's handle on one worker process.
pub(crate) struct Worker {
    pub(crate) proc: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) streams: usize,
    pub(crate) alive: bool,
    pub(crate) ready: bool,
    pub(crate) up: usize,
    pub(crate) failed: usize,
    pub(crate) inflight: usize,
    pub(crate) retries: usize,
    pub(crate) head_notes: usize,
}

impl Worker {
    pub(crate) fn send(&mut self, line: &str) -> bool {
        let ok = match self.stdin.as_mut() {
            Some(s) => writeln!(s, "{line}").and_then(|_| s.flush()).is_ok(),
            None => false,
        };
        if !ok {
            self.alive = false;
        }
        ok
    }
}

/// The value of ` key=value` in a worker's line.
pub(crate) fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

pub(crate) fn kv_num(line: &str, key: &str) -> usize {
    kv(line, key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub(crate) enum RssSource {
    Pid(u32),
    /// Several processes (nginx's master and workers): the sum of their PSS
    /// (`smaps_rollup`), so that shared pages are counted once.
    Pids(Vec<u32>),
    Metrics(SocketAddr),
    Unavailable,
}

impl RssSource {
    pub(crate) fn read(&self) -> Option<u64> {
        match self {
            RssSource::Pid(pid) => match vm_rss_bytes(*pid) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("warning: server RSS: {e}");
                    None
                }
            },
            RssSource::Pids(pids) => {
                let mut sum = 0;
                for pid in pids {
                    match crate::sys::pss_bytes(*pid) {
                        Ok(v) => sum += v,
                        Err(e) => {
                            eprintln!("warning: server RSS: {e}");
                            return None;
                        }
                    }
                }
                Some(sum)
            }
            RssSource::Metrics(addr) => match metrics_rss(*addr) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("warning: server RSS from /metrics: {e}");
                    None
                }
            },
            RssSource::Unavailable => None,
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            RssSource::Pid(_) => "pid",
            RssSource::Pids(_) => "pss-sum",
            RssSource::Metrics(_) => "metrics",
            RssSource::Unavailable => "none",
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// `p` of sorted latencies in ms, or `na` when there are none.
pub(crate) fn pct_ms(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        "na".into()
    } else {
        ms(percentile(sorted, p))
    }
}

pub(crate) fn kib(bytes: Option<u64>) -> String {
    bytes.map_or("na".into(), |b| (b / 1024).to_string())
}

pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("--server {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("--server {s}: no address"))
}

pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// `--sources`, or the default: 127.0.0.1..127.0.0.8 above 20,000 streams.
pub(crate) fn sources(
    arg: Option<&str>,
    n: usize,
    server: SocketAddr,
) -> Result<Vec<IpAddr>, String> {
    let list: Vec<IpAddr> = match arg {
        Some(s) => s
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| {
                x.trim()
                    .parse::<IpAddr>()
                    .map_err(|e| format!("--sources `{x}`: {e}"))
            })
            .collect::<Result<_, _>>()?,
        None if server.is_ipv6() => vec![server.ip()],
        None if n > SINGLE_SOURCE_MAX => (1..=8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
        None => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    };
    if list.is_empty() {
        return Err("--sources is empty".into());
    }
    if let Some(bad) = list.iter().find(|ip| ip.is_ipv6() != server.is_ipv6()) {
        return Err(format!(
            "source {bad} and server {server} are not the same address family"
        ));
    }
    Ok(list)
}

/// Splits `n` streams over `procs` workers: `(offset, count)` each.
pub fn shares(n: usize, procs: usize) -> Vec<(usize, usize)> {
    let base = n / procs;
    let extra = n % procs;
    let mut offset = 0;
    (0..procs)
        .map(|i| {
            let count = base + usize::from(i < extra);
            let s = (offset, count);
            offset += count;
            s
        })
        .collect()
}

struct Settings {
    server: SocketAddr,
    n: usize,
    channel: String,
    procs: usize,
    sources: Vec<IpAddr>,
    pushes: usize,
    hold: u64,
    terminator: String,
    inflight: usize,
    retries: u32,
    connect_timeout_ms: u64,
    loss_timeout_ms: u64,
    settle_ms: u64,
    push_gap_ms: u64,
    max_connect_secs: u64,
    rss: RssSource,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let a = Args::parse(
        argv,
        &[
            "server",
            "streams",
            "channel",
            "procs",
            "sources",
            "server-pid",
            "pushes",
            "hold",
            "terminator",
            "inflight",
            "retries",
            "connect-timeout",
            "loss-timeout",
            "settle-ms",
            "push-gap-ms",
            "max-connect-secs",
        ],
        &["allow-non-loopback"],
    )?;
    let server = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
    let n: usize = a
        .required("streams")?
        .parse()
        .map_err(|_| "--streams: not a number".to_string())?;
    if n == 0 {
        return Err("--streams must be at least 1".into());
    }
    let limit = raise_nofile_limit();
    let per_proc_max = limit.saturating_sub(FD_RESERVE) as usize;
    let procs = a
        .opt_num::<usize>("procs")?
        .unwrap_or_else(|| n.div_ceil(DEFAULT_PER_PROC))
        .clamp(1, n);
    let largest = n.div_ceil(procs);
    if largest > per_proc_max {
        return Err(format!(
            "{largest} streams per process exceed the open-file limit ({limit}, minus {FD_RESERVE} kept back): use --procs {} or more",
            n.div_ceil(per_proc_max.max(1))
        ));
    }
    let sources = sources(a.get("sources"), n, server)?;
    if !a.flag("allow-non-loopback") {
        check_loopback(server, &sources)?;
    }
    let ports = ephemeral_ports();
    let per_source = n.div_ceil(sources.len()) as u64;
    if per_source + PORT_RESERVE > ports {
        return Err(format!(
            "{per_source} connections per source address, but only {ports} ephemeral ports: add --sources (e.g. 127.0.0.1,…,127.0.0.{})",
            (n as u64).div_ceil(ports.saturating_sub(PORT_RESERVE).max(1)) + 1
        ));
    }
    if per_source > ports / 2 {
        eprintln!(
            "warning: {per_source} connections per source address use more than half of the {ports} ephemeral ports; connects will be slow (add --sources)"
        );
    }
    let rss = rss_source(a.opt_num::<u32>("server-pid")?, server)?;
    let terminator = a.str_or("terminator", "nul");
    crate::parse_terminator(&terminator)?;
    Ok(Settings {
        server,
        n,
        channel: a.str_or("channel", "loadtest"),
        procs,
        sources,
        pushes: a.num("pushes", 5)?,
        hold: a.num("hold", 0)?,
        terminator,
        inflight: a.num("inflight", 1000)?,
        retries: a.num("retries", 3)?,
        connect_timeout_ms: a.num::<u64>("connect-timeout", 15)? * 1000,
        loss_timeout_ms: a.num::<u64>("loss-timeout", 10)? * 1000,
        settle_ms: a.num("settle-ms", 1000)?,
        push_gap_ms: a.num("push-gap-ms", 200)?,
        max_connect_secs: a.num("max-connect-secs", 600)?,
        rss,
    })
}

pub fn run(argv: &[String]) -> i32 {
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let s = match settings(argv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("talk-idle: {e}\n{USAGE}");
            return 2;
        }
    };
    match run_idle(&s) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("talk-idle: {e}");
            1
        }
    }
}

fn spawn_workers(s: &Settings, run_id: &str) -> Result<(Vec<Worker>, Receiver<Msg>), String> {
    let sources: Vec<String> = s.sources.iter().map(|ip| ip.to_string()).collect();
    let sources = sources.join(",");
    let mut arg_lists = Vec::new();
    let mut counts = Vec::new();
    for (i, (offset, count)) in shares(s.n, s.procs).into_iter().enumerate() {
        let args: Vec<String> = [
            "worker",
            "--index",
            &i.to_string(),
            "--server",
            &s.server.to_string(),
            "--streams",
            &count.to_string(),
            "--offset",
            &offset.to_string(),
            "--channel",
            &s.channel,
            "--sources",
            &sources,
            "--run-id",
            run_id,
            "--terminator",
            &s.terminator,
            "--inflight",
            &s.inflight.to_string(),
            "--retries",
            &s.retries.to_string(),
            "--connect-timeout-ms",
            &s.connect_timeout_ms.to_string(),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        arg_lists.push(args);
        counts.push(count);
    }
    spawn_children(arg_lists, counts)
}

/// Starts one child process per argument list (the binary re-executes
/// itself); `streams[i]` is what child `i` is responsible for. Each child's
/// stdout lines arrive on the returned channel.
pub(crate) fn spawn_children(
    arg_lists: Vec<Vec<String>>,
    streams: Vec<usize>,
) -> Result<(Vec<Worker>, Receiver<Msg>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for (i, (args, count)) in arg_lists.into_iter().zip(streams).enumerate() {
        let mut proc = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn worker {i}: {e}"))?;
        let stdout = proc.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Msg::Line(i, l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(Msg::Eof(i));
        });
        workers.push(Worker {
            stdin: proc.stdin.take(),
            proc,
            streams: count,
            alive: true,
            ready: false,
            up: 0,
            failed: 0,
            inflight: 0,
            retries: 0,
            head_notes: 0,
        });
    }
    Ok((workers, rx))
}

/// Closes the workers' stdin and waits for them (killing one that hangs).
pub(crate) fn reap(workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        w.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match w.proc.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = w.proc.kill();
                    let _ = w.proc.wait();
                    break;
                }
            }
        }
    }
}

/// Where the server's RSS comes from: `/proc/PID/status` with `--server-pid`,
/// else `/metrics`.
pub(crate) fn rss_source(pid: Option<u32>, server: SocketAddr) -> Result<RssSource, String> {
    Ok(match pid {
        Some(pid) => {
            vm_rss_bytes(pid).map_err(|e| format!("--server-pid {pid}: {e}"))?;
            RssSource::Pid(pid)
        }
        None => match metrics_rss(server) {
            Ok(_) => RssSource::Metrics(server),
            Err(e) => {
                eprintln!("warning: no server RSS ({e}); pass --server-pid PID to measure memory");
                RssSource::Unavailable
            }
        },
    })
}

/// Checks that the server and every source address are loopback addresses.
pub(crate) fn check_loopback(server: SocketAddr, sources: &[IpAddr]) -> Result<(), String> {
    if let Some(bad) = std::iter::once(server.ip())
        .chain(sources.iter().copied())
        .find(|ip| !is_loopback(*ip))
    {
        return Err(format!(
            "{bad} is not a loopback address; this tool only loads servers on this machine unless --allow-non-loopback is given"
        ));
    }
    Ok(())
}

/// Waits until every live worker sent a line starting with `prefix` (or the
/// deadline); `f` gets each such line.
pub(crate) fn gather(
    rx: &Receiver<Msg>,
    workers: &mut [Worker],
    prefix: &str,
    timeout: Duration,
    mut f: impl FnMut(usize, &str),
) -> usize {
    let deadline = Instant::now() + timeout;
    let mut answered = vec![false; workers.len()];
    loop {
        let missing = workers
            .iter()
            .zip(&answered)
            .filter(|(w, a)| w.alive && !**a)
            .count();
        if missing == 0 {
            return 0;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("!!! {missing} worker(s) did not answer {prefix} within {timeout:?}");
            return missing;
        }
        match rx.recv_timeout(left) {
            Ok(Msg::Line(i, l)) => {
                if l.starts_with(prefix) {
                    answered[i] = true;
                    f(i, &l);
                }
            }
            Ok(Msg::Eof(i)) => {
                if workers[i].alive && !answered[i] {
                    eprintln!("!!! worker {i} exited");
                }
                workers[i].alive = false;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return missing,
        }
    }
}

#[derive(Default)]
struct Totals {
    up: usize,
    failed: usize,
    lost: usize,
    closed: usize,
    dups: usize,
    unexpected: usize,
    proto_errors: usize,
    head_notes: usize,
    push_errors: usize,
    dead_workers: usize,
    keepalives: u64,
    min_keepalives: Option<usize>,
}

fn run_idle(s: &Settings) -> Result<i32, String> {
    let run_id = format!("{:x}{:x}", std::process::id(), now_ns() % (1 << 32));
    let source_list: Vec<String> = s.sources.iter().map(|ip| ip.to_string()).collect();
    println!(
        "talk-idle: server={} streams={} procs={} sources={} channel={} terminator={} rss={}",
        s.server,
        s.n,
        s.procs,
        source_list.join(","),
        s.channel,
        s.terminator,
        s.rss.label()
    );
    let rss_base = s.rss.read();
    println!("baseline: rss_kib={}", kib(rss_base));

    let t_connect = Instant::now();
    let (mut workers, rx) = spawn_workers(s, &run_id)?;
    let mut t = Totals::default();

    // Connect phase: follow progress until every worker is READY.
    let mut last_print = Instant::now();
    let connect_deadline = t_connect + Duration::from_secs(s.max_connect_secs);
    loop {
        if workers.iter().all(|w| w.ready || !w.alive) {
            break;
        }
        if Instant::now() > connect_deadline {
            eprintln!(
                "!!! streams not settled after {} s; giving up",
                s.max_connect_secs
            );
            break;
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Msg::Line(i, l)) => {
                let w = &mut workers[i];
                if l.starts_with("PROGRESS") || l.starts_with("READY") {
                    w.up = kv_num(&l, "up");
                    w.failed = kv_num(&l, "failed");
                    w.inflight = kv_num(&l, "inflight");
                    w.retries = kv_num(&l, "retries");
                }
                if l.starts_with("READY") {
                    w.ready = true;
                    w.inflight = 0;
                    w.head_notes = kv_num(&l, "head_notes");
                }
            }
            Ok(Msg::Eof(i)) => {
                eprintln!("!!! worker {i} exited while connecting");
                workers[i].alive = false;
            }
            Err(_) => {}
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let up: usize = workers.iter().map(|w| w.up).sum();
            let failed: usize = workers.iter().map(|w| w.failed).sum();
            let inflight: usize = workers.iter().map(|w| w.inflight).sum();
            let retries: usize = workers.iter().map(|w| w.retries).sum();
            let el = t_connect.elapsed().as_secs_f64();
            println!(
                "connecting: {el:.1}s up={up} failed={failed} inflight={inflight} retries={retries} ({:.0} streams/s)",
                up as f64 / el.max(0.001)
            );
        }
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    for (i, w) in workers.iter().enumerate() {
        if !w.alive || !w.ready {
            t.dead_workers += 1;
            // whatever it had not reported up is lost
            t.failed += w.streams - w.up;
            eprintln!("!!! worker {i} did not finish connecting");
        } else {
            t.failed += w.failed;
        }
        t.up += w.up;
        t.head_notes += w.head_notes;
    }
    let retries: usize = workers.iter().map(|w| w.retries).sum();
    println!(
        "streams up: {}/{} failed={} retries={} in {connect_s:.2}s ({:.0} streams/s)",
        t.up,
        s.n,
        t.failed,
        retries,
        t.up as f64 / connect_s.max(0.001)
    );
    if t.failed > 0 {
        println!(
            "!!! {} of {} streams did not come up (see the worker messages above)",
            t.failed, s.n
        );
    }
    if t.head_notes > 0 {
        println!(
            "!!! {} stream replies had a head that is not byte-exact",
            t.head_notes
        );
    }

    std::thread::sleep(Duration::from_millis(s.settle_ms));
    let rss_up = s.rss.read();
    let fds = match s.rss {
        RssSource::Pid(pid) => open_fds(pid),
        _ => None,
    };
    let per_stream = match (rss_base, rss_up) {
        (Some(b), Some(u)) if t.up > 0 => Some((u as f64 - b as f64) / t.up as f64),
        _ => None,
    };
    println!(
        "memory: rss_base_kib={} rss_kib={} rss_per_stream_bytes={} rss_per_stream_kib={}{}",
        kib(rss_base),
        kib(rss_up),
        per_stream.map_or("na".into(), |v| format!("{v:.0}")),
        per_stream.map_or("na".into(), |v| format!("{:.2}", v / 1024.0)),
        fds.map_or(String::new(), |f| format!(" server_fds={f}"))
    );

    // Fan-out.
    let server_pid = match s.rss {
        RssSource::Pid(pid) => Some(pid),
        _ => None,
    };
    let cpu_before = server_pid.and_then(crate::sys::proc_cpu_ns);
    let mut all_lats: Vec<u64> = Vec::new();
    if t.up > 0 {
        for k in 1..=s.pushes {
            let token = format!("fanout-{k}-{}", now_ns());
            let mut expected = 0;
            for w in workers.iter_mut().filter(|w| w.alive) {
                w.send(&format!("ARM {token}"));
            }
            gather(
                &rx,
                &mut workers,
                "ARMED",
                Duration::from_secs(10),
                |_, l| {
                    expected += kv_num(l, "expected");
                },
            );
            let loss_ns = s.loss_timeout_ms * 1_000_000;
            let mut collecting = false;
            let pushed = timed_push(s.server, "loadtest", &s.channel, &token, false, |t0| {
                collecting = true;
                for w in workers.iter_mut().filter(|w| w.alive) {
                    w.send(&format!("COLLECT {token} {t0} {}", t0 + loss_ns));
                }
            });
            let push_ok = matches!(&pushed, Ok(p) if p.reply.status == 200);
            let push_ms = match &pushed {
                Ok(p) => {
                    if p.reply.status != 200 {
                        t.push_errors += 1;
                        println!(
                            "!!! push {k}: status {} (reply {:?})",
                            p.reply.status,
                            escape(&p.reply.raw(), 200)
                        );
                    }
                    (p.replied_ns - p.t0_ns) as f64 / 1e6
                }
                Err(e) => {
                    t.push_errors += 1;
                    println!("!!! push {k} failed: {e}");
                    f64::NAN
                }
            };
            if !collecting {
                continue;
            }
            let mut received = 0;
            let mut gone = 0;
            let mut dups = 0;
            let mut lats: Vec<u64> = Vec::with_capacity(expected);
            gather(
                &rx,
                &mut workers,
                "RESULT",
                Duration::from_millis(s.loss_timeout_ms + 10_000),
                |_, l| {
                    received += kv_num(l, "received");
                    gone += kv_num(l, "gone");
                    dups += kv_num(l, "dups");
                    if let Some(list) = kv(l, "lat_us") {
                        lats.extend(list.split(',').filter_map(|x| x.parse::<u64>().ok()));
                    }
                },
            );
            lats.sort_unstable();
            // A push the server did not accept stored nothing: what the
            // streams did not get is a push error, not a lost message.
            let lost = if push_ok {
                expected.saturating_sub(received)
            } else {
                0
            };
            t.lost += lost;
            t.dups += dups;
            println!(
                "push {k}/{}: token={token} received={received}/{expected} p50_ms={} p99_ms={} max_ms={} push_reply_ms={}{}",
                s.pushes,
                pct_ms(&lats, 50.0),
                pct_ms(&lats, 99.0),
                pct_ms(&lats, 100.0),
                if push_ms.is_nan() {
                    "na".to_string()
                } else {
                    format!("{push_ms:.3}")
                },
                if dups > 0 {
                    format!(" DUPLICATES={dups}")
                } else {
                    String::new()
                }
            );
            if lost > 0 {
                println!(
                    "!!! LOST: {lost} of {expected} streams did not receive {token} within {} ms ({gone} of them closed)",
                    s.loss_timeout_ms
                );
            }
            all_lats.extend_from_slice(&lats);
            std::thread::sleep(Duration::from_millis(s.push_gap_ms));
        }
    }
    all_lats.sort_unstable();
    // The server's CPU time per push (the pauses between pushes are idle but for
    // keep-alive noops): how much of the fan-out latency is the server's own work.
    let cpu_per_push = match (cpu_before, server_pid.and_then(crate::sys::proc_cpu_ns)) {
        (Some(a), Some(b)) if s.pushes > 0 && t.up > 0 => {
            let per = b.saturating_sub(a) as f64 / s.pushes as f64;
            println!(
                "server cpu: {:.2} ms per push ({:.2} us per stream)",
                per / 1e6,
                per / 1e3 / t.up as f64
            );
            Some(per / 1e6)
        }
        _ => None,
    };
    let rss_after = if s.pushes > 0 { s.rss.read() } else { rss_up };

    if s.hold > 0 {
        println!("holding {} streams for {} s", t.up, s.hold);
        let start = Instant::now();
        let mut next_print = 5;
        while start.elapsed() < Duration::from_secs(s.hold) {
            std::thread::sleep(Duration::from_millis(200));
            // drain worker messages; note exits
            while let Ok(m) = rx.try_recv() {
                if let Msg::Eof(i) = m {
                    eprintln!("!!! worker {i} exited during hold");
                    workers[i].alive = false;
                }
            }
            if start.elapsed().as_secs() >= next_print {
                println!("hold: {}s rss_kib={}", next_print, kib(s.rss.read()));
                next_print += 5;
            }
        }
    }
    let rss_end = if s.hold > 0 { s.rss.read() } else { rss_after };

    for w in workers.iter_mut().filter(|w| w.alive) {
        w.send("QUIT");
    }
    let mut min_keep: Option<usize> = None;
    gather(&rx, &mut workers, "BYE", Duration::from_secs(30), |_, l| {
        t.closed += kv_num(l, "closed");
        t.keepalives += kv_num(l, "keepalives") as u64;
        t.unexpected += kv_num(l, "unexpected");
        t.proto_errors += kv_num(l, "proto_errors");
        let m = kv_num(l, "min_keepalives");
        min_keep = Some(min_keep.map_or(m, |x: usize| x.min(m)));
    });
    t.min_keepalives = min_keep;
    reap(&mut workers);
    if t.closed > 0 {
        println!(
            "!!! {} streams that were up were closed before the end",
            t.closed
        );
    }
    if t.unexpected > 0 {
        println!("!!! {} unexpected records arrived", t.unexpected);
    }
    if t.proto_errors > 0 {
        println!("!!! {} protocol errors on streams", t.proto_errors);
    }

    let pass = t.failed == 0
        && t.up == s.n
        && t.lost == 0
        && t.closed == 0
        && t.dups == 0
        && t.proto_errors == 0
        && t.head_notes == 0
        && t.push_errors == 0
        && t.dead_workers == 0;
    println!(
        "SUMMARY streams={} up={} failed={} procs={} connect_s={connect_s:.2} rss_source={} rss_base_kib={} rss_kib={} rss_per_stream_bytes={} rss_per_stream_kib={} rss_after_fanout_kib={} rss_end_kib={} pushes={} fanout_p50_ms={} fanout_p99_ms={} fanout_max_ms={} lost={} dups={} closed={} unexpected={} proto_errors={} head_mismatch={} push_errors={} keepalives={} min_keepalives={} server_cpu_ms_per_push={} result={}",
        s.n,
        t.up,
        t.failed,
        s.procs,
        s.rss.label(),
        kib(rss_base),
        kib(rss_up),
        per_stream.map_or("na".into(), |v| format!("{v:.0}")),
        per_stream.map_or("na".into(), |v| format!("{:.2}", v / 1024.0)),
        kib(rss_after),
        kib(rss_end),
        s.pushes,
        pct_ms(&all_lats, 50.0),
        pct_ms(&all_lats, 99.0),
        pct_ms(&all_lats, 100.0),
        t.lost,
        t.dups,
        t.closed,
        t.unexpected,
        t.proto_errors,
        t.head_notes,
        t.push_errors,
        t.keepalives,
        t.min_keepalives.map_or("na".into(), |m| m.to_string()),
        cpu_per_push.map_or("na".into(), |v| format!("{v:.2}")),
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(if pass { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2], 0.0), 1);
    }

    #[test]
    fn shares_cover_everything() {
        assert_eq!(shares(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        let s = shares(19_999, 2);
        assert_eq!(s.iter().map(|x| x.1).sum::<usize>(), 19_999);
        assert_eq!(s[1].0, s[0].1);
    }

    #[test]
    fn worker_lines() {
        let l = "READY up=10 failed=2 head_notes=0 lat_us=1,2,3";
        assert_eq!(kv_num(l, "up"), 10);
        assert_eq!(kv_num(l, "failed"), 2);
        assert_eq!(kv(l, "lat_us"), Some("1,2,3"));
        assert_eq!(kv_num(l, "missing"), 0);
        assert_eq!(kv(l, "p"), None);
    }

    #[test]
    fn default_sources() {
        let srv: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(sources(None, 10_000, srv).unwrap().len(), 1);
        assert_eq!(sources(None, 12_000, srv).unwrap().len(), 8);
        let many = sources(None, 30_000, srv).unwrap();
        assert_eq!(many.len(), 8);
        assert_eq!(many[7].to_string(), "127.0.0.8");
        assert_eq!(
            sources(Some("127.0.0.2, 127.0.0.3"), 5, srv).unwrap().len(),
            2
        );
        assert!(sources(Some("::1"), 5, srv).is_err());
    }
}
