//! The parent's side of the worker processes of `talk-idle` and
//! `comet-longpoll`: the options they share (server, source addresses, how many
//! processes), starting the children (the binary re-executes itself with a
//! hidden subcommand), their line protocol, and the connect phase until every
//! child is READY.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::hist::Hist;
use crate::measure::opt_ms;
use crate::sys::{ephemeral_ports, raise_nofile_limit};

/// Connections one worker takes by default before another worker is added.
const DEFAULT_PER_PROC: usize = 15_000;
/// File descriptors a worker keeps for itself (stdio, epoll, waker, …).
const FD_RESERVE: u64 = 64;
/// Above this many connections the default is eight source addresses. Linux
/// gives connect() the even half of the ephemeral range first; once that half
/// is used up (about 14,000 connections from one address to one server), every
/// connect() searches the whole range and opening streams slows down tenfold
/// (measured: 12,500 streams in 0.2 s, 17,500 in 1.4 s from 127.0.0.1 alone;
/// 0.25 s from two addresses).
const SINGLE_SOURCE_MAX: usize = 10_000;
/// Ports per source address left unused as a margin.
const PORT_RESERVE: u64 = 256;

pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("--server {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("--server {s}: no address"))
}

pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// Checks that the server and every source address are loopback addresses.
pub fn check_loopback(server: SocketAddr, sources: &[IpAddr]) -> Result<(), String> {
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

/// A comma-separated list of IP addresses (`--sources`).
pub fn parse_ips(list: &str) -> Result<Vec<IpAddr>, String> {
    let ips: Vec<IpAddr> = list
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<IpAddr>()
                .map_err(|e| format!("--sources `{x}`: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if ips.is_empty() {
        return Err("--sources is empty".into());
    }
    Ok(ips)
}

/// `--sources`, or the default: 127.0.0.1..127.0.0.8 above 10,000 connections.
pub fn sources(arg: Option<&str>, n: usize, server: SocketAddr) -> Result<Vec<IpAddr>, String> {
    let list: Vec<IpAddr> = match arg {
        Some(s) => parse_ips(s)?,
        None if server.is_ipv6() => vec![server.ip()],
        None if n > SINGLE_SOURCE_MAX => (1..=8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
        None => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    };
    if let Some(bad) = list.iter().find(|ip| ip.is_ipv6() != server.is_ipv6()) {
        return Err(format!(
            "source {bad} and server {server} are not the same address family"
        ));
    }
    Ok(list)
}

/// Splits `n` connections over `procs` workers: `(offset, count)` each.
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

/// What the workers of a scenario are told and how they are spread: the
/// options `talk-idle` and `comet-longpoll` share.
pub struct Fleet {
    pub server: SocketAddr,
    /// Connections in all (streams or clients).
    pub n: usize,
    pub procs: usize,
    pub sources: Vec<IpAddr>,
    pub inflight: usize,
    pub retries: u32,
    pub connect_timeout_ms: u64,
    pub settle_ms: u64,
    pub max_connect_secs: u64,
}

/// The option names `Fleet::from_args` reads (besides the count).
pub const FLEET_OPTIONS: [&str; 9] = [
    "server",
    "procs",
    "sources",
    "inflight",
    "retries",
    "connect-timeout",
    "settle-ms",
    "max-connect-secs",
    "server-pid",
];

impl Fleet {
    /// `n` connections (`noun`: "streams", "clients") to `server`: works out
    /// the processes and source addresses and checks them against the
    /// open-file limit and the ephemeral ports.
    pub fn from_args(a: &Args, server: SocketAddr, n: usize, noun: &str) -> Result<Fleet, String> {
        let limit = raise_nofile_limit();
        let per_proc_max = limit.saturating_sub(FD_RESERVE) as usize;
        let procs = a
            .opt_num::<usize>("procs")?
            .unwrap_or_else(|| n.div_ceil(DEFAULT_PER_PROC))
            .clamp(1, n);
        let largest = n.div_ceil(procs);
        if largest > per_proc_max {
            return Err(format!(
                "{largest} {noun} per process exceed the open-file limit ({limit}, minus {FD_RESERVE} kept back): use --procs {} or more",
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
        Ok(Fleet {
            server,
            n,
            procs,
            sources,
            inflight: a.num("inflight", 1000)?,
            retries: a.num("retries", 3)?,
            connect_timeout_ms: a.num::<u64>("connect-timeout", 15)? * 1000,
            settle_ms: a.num("settle-ms", 1000)?,
            max_connect_secs: a.num("max-connect-secs", 600)?,
        })
    }

    pub fn source_list(&self) -> String {
        let list: Vec<String> = self.sources.iter().map(|ip| ip.to_string()).collect();
        list.join(",")
    }

    /// Starts the workers: `<subcommand> --index I --server S --<count_flag> C
    /// --offset O --sources … --inflight … --retries … --connect-timeout-ms …`
    /// followed by `extra` (the scenario's own options).
    pub fn spawn(
        &self,
        subcommand: &str,
        count_flag: &str,
        extra: &[(&str, &str)],
    ) -> Result<(Vec<Worker>, Receiver<Msg>), String> {
        let sources = self.source_list();
        let mut arg_lists = Vec::new();
        let mut counts = Vec::new();
        for (i, (offset, count)) in shares(self.n, self.procs).into_iter().enumerate() {
            let mut args: Vec<String> = [
                subcommand,
                "--index",
                &i.to_string(),
                "--server",
                &self.server.to_string(),
                count_flag,
                &count.to_string(),
                "--offset",
                &offset.to_string(),
                "--sources",
                &sources,
                "--inflight",
                &self.inflight.to_string(),
                "--retries",
                &self.retries.to_string(),
                "--connect-timeout-ms",
                &self.connect_timeout_ms.to_string(),
            ]
            .iter()
            .map(|x| x.to_string())
            .collect();
            for (k, v) in extra {
                args.push(k.to_string());
                args.push(v.to_string());
            }
            arg_lists.push(args);
            counts.push(count);
        }
        spawn_children(arg_lists, counts)
    }
}

pub enum Msg {
    Line(usize, String),
    Eof(usize),
}

/// The parent's handle on one worker process.
pub struct Worker {
    pub proc: Child,
    pub stdin: Option<ChildStdin>,
    /// Connections this worker is responsible for.
    pub streams: usize,
    pub alive: bool,
    pub ready: bool,
    /// The worker's `READY` line, once it came.
    pub ready_line: String,
    pub up: usize,
    pub failed: usize,
    pub inflight: usize,
    pub retries: usize,
}

impl Worker {
    pub fn send(&mut self, line: &str) -> bool {
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

/// Sends `line` to every live worker.
pub fn broadcast(workers: &mut [Worker], line: &str) {
    for w in workers.iter_mut().filter(|w| w.alive) {
        w.send(line);
    }
}

/// The value of ` key=value` in a worker's line.
pub fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

pub fn kv_num(line: &str, key: &str) -> usize {
    kv(line, key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Starts one child process per argument list (the binary re-executes
/// itself); `streams[i]` is what child `i` is responsible for. Each child's
/// stdout lines arrive on the returned channel.
pub fn spawn_children(
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
            ready_line: String::new(),
            up: 0,
            failed: 0,
            inflight: 0,
            retries: 0,
        });
    }
    Ok((workers, rx))
}

/// Follows the workers' `PROGRESS` and `READY` lines until every worker is
/// ready or gone, or `max_secs` have passed since `start` (`noun` names the
/// connections in the message then). `progress` is called about every 2 s
/// with the seconds since `start`.
pub fn await_ready(
    rx: &Receiver<Msg>,
    workers: &mut [Worker],
    start: Instant,
    max_secs: u64,
    noun: &str,
    mut progress: impl FnMut(&[Worker], f64),
) {
    let mut last_print = Instant::now();
    let deadline = start + Duration::from_secs(max_secs);
    loop {
        if workers.iter().all(|w| w.ready || !w.alive) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("!!! {noun} not settled after {max_secs} s; giving up");
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
                    w.ready_line = l;
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
            progress(workers, start.elapsed().as_secs_f64());
        }
    }
}

/// What bringing a fleet's connections up gave.
pub struct Started {
    pub up: usize,
    pub failed: usize,
    pub dead_workers: usize,
    pub retries: usize,
    pub connect_s: f64,
    /// Per-connection times to come up (µs), from the workers' `READY … hist=`
    /// (empty when they send none).
    pub hist: Hist,
}

/// Starts `fleet`'s workers (`subcommand`, the count as `count_flag`, then
/// `extra`) and follows them until every connection is up or failed, printing
/// progress (`verb`: "connecting", "logging in") and a summary line.
pub fn bring_up(
    fleet: &Fleet,
    subcommand: &str,
    count_flag: &str,
    extra: &[(&str, &str)],
    noun: &str,
    verb: &str,
) -> Result<(Vec<Worker>, Receiver<Msg>, Started), String> {
    let t_connect = Instant::now();
    let (mut workers, rx) = fleet.spawn(subcommand, count_flag, extra)?;
    await_ready(
        &rx,
        &mut workers,
        t_connect,
        fleet.max_connect_secs,
        noun,
        |workers, el| {
            let up: usize = workers.iter().map(|w| w.up).sum();
            let failed: usize = workers.iter().map(|w| w.failed).sum();
            let inflight: usize = workers.iter().map(|w| w.inflight).sum();
            let retries: usize = workers.iter().map(|w| w.retries).sum();
            println!(
                "{verb}: {el:.1}s up={up} failed={failed} inflight={inflight} retries={retries} ({:.0} {noun}/s)",
                up as f64 / el.max(0.001)
            );
        },
    );
    let mut st = Started {
        up: 0,
        failed: 0,
        dead_workers: 0,
        retries: 0,
        connect_s: t_connect.elapsed().as_secs_f64(),
        hist: Hist::new(),
    };
    for (i, w) in workers.iter().enumerate() {
        if !w.alive || !w.ready {
            st.dead_workers += 1;
            // whatever it had not reported up is lost
            st.failed += w.streams - w.up;
            eprintln!("!!! worker {i} did not finish {verb}");
        } else {
            st.failed += w.failed;
            match kv(&w.ready_line, "hist").map(Hist::decode) {
                Some(Ok(h)) => st.hist.merge(&h),
                Some(Err(e)) => eprintln!("!!! worker {i}: bad histogram: {e}"),
                None => {}
            }
        }
        st.up += w.up;
        st.retries += w.retries;
    }
    let times = if st.hist.count() > 0 {
        format!(
            " p50={} p99={} max={} ms",
            opt_ms(st.hist.percentile(50.0)),
            opt_ms(st.hist.percentile(99.0)),
            opt_ms(st.hist.max()),
        )
    } else {
        String::new()
    };
    println!(
        "{noun} up: {}/{} failed={} retries={} in {:.2}s ({:.0} {noun}/s){times}",
        st.up,
        fleet.n,
        st.failed,
        st.retries,
        st.connect_s,
        st.up as f64 / st.connect_s.max(0.001),
    );
    if st.failed > 0 {
        println!(
            "!!! {} of {} {noun} did not come up (see the worker messages above)",
            st.failed, fleet.n
        );
    }
    Ok((workers, rx, st))
}

/// Waits until every live worker sent a line starting with `prefix` (or the
/// deadline); `f` gets each such line. Returns how many did not answer.
pub fn gather(
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

/// What the workers counted by the end.
#[derive(Default)]
pub struct Bye {
    /// Connections that were up and closed before the end.
    pub closed: usize,
    /// Records or stanzas nobody asked for.
    pub unexpected: usize,
    pub proto_errors: usize,
    /// Talk keep-alive `noop`s, in all and the fewest a worker's streams got.
    pub keepalives: u64,
    pub min_keepalives: Option<usize>,
}

/// Ends the workers (`QUIT`, their `BYE` lines, `reap`), printing what went
/// wrong: `noun` names the connections, `what` what they receive.
pub fn finish(workers: &mut [Worker], rx: &Receiver<Msg>, noun: &str, what: &str) -> Bye {
    broadcast(workers, "QUIT");
    let mut b = Bye::default();
    gather(rx, workers, "BYE", Duration::from_secs(30), |_, l| {
        b.closed += kv_num(l, "closed");
        b.unexpected += kv_num(l, "unexpected");
        b.proto_errors += kv_num(l, "proto_errors");
        b.keepalives += kv_num(l, "keepalives") as u64;
        let m = kv_num(l, "min_keepalives");
        b.min_keepalives = Some(b.min_keepalives.map_or(m, |x| x.min(m)));
    });
    reap(workers);
    if b.closed > 0 {
        println!(
            "!!! {} {noun} that were up were closed before the end",
            b.closed
        );
    }
    if b.unexpected > 0 {
        println!("!!! {} unexpected {what} arrived", b.unexpected);
    }
    if b.proto_errors > 0 {
        println!("!!! {} protocol errors on {noun}", b.proto_errors);
    }
    b
}

/// Closes the workers' stdin and waits for them (killing one that hangs).
pub fn reap(workers: &mut [Worker]) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
