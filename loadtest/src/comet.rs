//! `comet-longpoll`: N Simple Comet clients long-polling one channel from
//! worker processes (`comet-worker`), a publisher putting R messages a second
//! for SECS seconds; every client must see every put exactly once and in
//! order. Reports delivered/expected, put→delivery latency and the server's RSS.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::comet_worker::{nchan_pub_request, parse_time_reply, put_request, Dialect};
use crate::fleet::{
    await_ready, broadcast, gather, kv, kv_num, reap, resolve, Fleet, FLEET_OPTIONS,
};
use crate::hist::Hist;
use crate::http::{connect, escape, exchange};
use crate::measure::{kib, opt_ms, parse_pids, per_item, verdict, whole, RssSource};
use crate::sys::{now_ns, self_cpu_ns};

const USAGE: &str = "usage: tidings-load comet-longpoll --clients N [--server 127.0.0.1:8080]
       [--rate 10] [--duration 20] [--channel C] [--procs P] [--sources 127.0.0.1,…]
       [--server-pid PID] [--inflight 1000] [--retries 3] [--connect-timeout 15]
       [--get-timeout 40] [--loss-timeout 10] [--settle-ms 1000] [--max-connect-secs 600]
       [--dialect comet|nchan|qst] [--allow-non-loopback]
  --dialect qst: QST long-poll pulls parked on an empty queue, for the memory per
      parked pull; nothing is published (--rate and --duration are ignored)
  --server-pid takes a comma-separated list too (nginx master and workers: RSS and CPU are summed)";

struct Settings {
    fleet: Fleet,
    rate: f64,
    duration: f64,
    channel: String,
    get_timeout_ms: u64,
    loss_timeout_ms: u64,
    rss: RssSource,
    dialect: Dialect,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let names = [
        &FLEET_OPTIONS[..],
        &[
            "clients",
            "rate",
            "duration",
            "channel",
            "get-timeout",
            "loss-timeout",
            "dialect",
        ],
    ]
    .concat();
    let a = Args::parse(argv, &names, &["allow-non-loopback"])?;
    let server = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
    let dialect = Dialect::parse(&a.str_or("dialect", "comet"))?;
    let n: usize = a
        .required("clients")?
        .replace('_', "")
        .parse()
        .map_err(|_| "--clients: not a number".to_string())?;
    if n == 0 {
        return Err("--clients must be at least 1".into());
    }
    let rate: f64 = a.num("rate", 10.0)?;
    let duration: f64 = a.num("duration", 20.0)?;
    if !(rate > 0.0 && rate <= 10_000.0) {
        return Err("--rate must be in (0, 10000]".into());
    }
    if !(duration > 0.0 && duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".into());
    }
    let fleet = Fleet::from_args(&a, server, n, "clients")?;
    let pids = parse_pids(a.get("server-pid"))?;
    // nginx has no /metrics to fall back on.
    let rss = RssSource::new(&pids, server, dialect != Dialect::Nchan)?;
    let channel = match a.get("channel") {
        Some(c) if !c.is_empty() => c.to_string(),
        Some(_) => return Err("--channel is empty".into()),
        None => format!(
            "comet-load-{:x}{:x}",
            std::process::id(),
            now_ns() % (1 << 32)
        ),
    };
    Ok(Settings {
        fleet,
        rate,
        duration,
        channel,
        get_timeout_ms: a.num::<u64>("get-timeout", 40)? * 1000,
        loss_timeout_ms: a.num::<u64>("loss-timeout", 10)? * 1000,
        rss,
        dialect,
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("comet-longpoll", USAGE, argv, settings, |s| run_comet(&s))
}

/// The publisher's keep-alive connection.
struct Publisher {
    server: SocketAddr,
    channel: String,
    dialect: Dialect,
    sock: Option<TcpStream>,
    connects: usize,
}

impl Publisher {
    /// One put; `Ok((status, time))`, the time `None` on a non-200.
    fn put(&mut self, seq: u64) -> Result<(u16, Option<u64>), String> {
        if self.sock.is_none() {
            self.sock = Some(connect(self.server, Duration::from_secs(5))?);
            self.connects += 1;
        }
        let req = match self.dialect {
            Dialect::Comet => put_request(&self.channel, seq, now_ns()),
            Dialect::Nchan => nchan_pub_request(&self.channel, seq, now_ns()),
            Dialect::Qst => return Err("the qst dialect publishes nothing".into()),
        };
        let reply = exchange(self.server, &mut self.sock, &req, Duration::from_secs(10))?;
        if self.dialect == Dialect::Nchan && (200..300).contains(&reply.status) {
            return Ok((reply.status, Some(seq)));
        }
        if reply.status != 200 {
            return Err(format!(
                "put {seq}: status {} ({:?})",
                reply.status,
                escape(&reply.raw(), 200)
            ));
        }
        let t = parse_time_reply(&reply.body).map_err(|e| format!("put {seq}: {e}"))?;
        Ok((reply.status, Some(t)))
    }
}

#[derive(Default)]
struct Totals {
    up: usize,
    failed: usize,
    complete: usize,
    short_clients: usize,
    min_received: Option<u64>,
    received: u64,
    dups: u64,
    gaps: u64,
    replies: u64,
    empty_replies: u64,
    messages: u64,
    missed: u64,
    stale: u64,
    unexpected: u64,
    reconnects: u64,
    closed_by_server: u64,
    stuck: u64,
    http_errors: u64,
    proto_errors: u64,
    dead_workers: usize,
}

fn run_comet(s: &Settings) -> Result<i32, String> {
    let f = &s.fleet;
    let puts_total = if s.dialect == Dialect::Qst {
        0
    } else {
        (s.rate * s.duration).round().max(1.0) as u64
    };
    println!(
        "comet-longpoll: dialect={} server={} clients={} procs={} sources={} channel={} rate={}/s duration={}s puts={} rss={}",
        s.dialect.name(),
        f.server,
        f.n,
        f.procs,
        f.source_list(),
        s.channel,
        s.rate,
        s.duration,
        puts_total,
        s.rss.label()
    );
    let rss_base = s.rss.read();
    println!("baseline: rss_kib={}", kib(rss_base));

    let t_connect = Instant::now();
    let (mut workers, rx) = f.spawn(
        "comet-worker",
        "--clients",
        &[
            ("--channel", &s.channel),
            ("--get-timeout-ms", &s.get_timeout_ms.to_string()),
            ("--dialect", s.dialect.name()),
        ],
    )?;
    let mut t = Totals::default();
    let mut result_cpu_ms = 0u64;
    await_ready(
        &rx,
        &mut workers,
        t_connect,
        f.max_connect_secs,
        "clients",
        |workers, el| {
            let up: usize = workers.iter().map(|w| w.up).sum();
            let failed: usize = workers.iter().map(|w| w.failed).sum();
            println!("connecting: {el:.1}s up={up} failed={failed}");
        },
    );
    let ready_cpu_ms: u64 = workers
        .iter()
        .map(|w| kv_num(&w.ready_line, "cpu_ms") as u64)
        .sum();
    let connect_s = t_connect.elapsed().as_secs_f64();
    for (i, w) in workers.iter().enumerate() {
        if !w.alive || !w.ready {
            t.dead_workers += 1;
            eprintln!("!!! worker {i} did not finish connecting");
        }
        t.up += w.up;
        t.failed += if w.ready { w.failed } else { w.streams - w.up };
    }
    println!(
        "clients up: {}/{} failed={} in {connect_s:.2}s",
        t.up, f.n, t.failed
    );

    std::thread::sleep(Duration::from_millis(f.settle_ms));
    let rss_parked = s.rss.read();
    let fds = s.rss.fds();
    let per_client = per_item(rss_base, rss_parked, t.up);
    println!(
        "memory: rss_base_kib={} rss_parked_kib={} rss_per_parked_client_bytes={}{}",
        kib(rss_base),
        kib(rss_parked),
        whole(per_client),
        fds.map_or(String::new(), |f| format!(" server_fds={f}"))
    );

    // Publish.
    let mut publisher = Publisher {
        server: f.server,
        channel: s.channel.clone(),
        dialect: s.dialect,
        sock: None,
        connects: 0,
    };
    let mut accepted = 0u64;
    let mut put_errors = 0usize;
    let mut put_lat = Hist::new();
    let mut last_time = 0u64;
    let mut time_regressions = 0usize;
    let mut rss_max = rss_parked;
    let mut late_puts = 0u64;
    let gap_ns = (1e9 / s.rate) as u64;
    let t0 = now_ns();
    let server_cpu0 = s.rss.cpu_ns();
    let self_cpu0 = self_cpu_ns();
    let mut next_rss = t0 + 1_000_000_000;
    let mut next_print = t0 + 5_000_000_000;
    let mut first_put_ns = 0u64;
    for k in 1..=puts_total {
        let due = t0 + (k - 1) * gap_ns;
        let now = now_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        } else if now - due > gap_ns {
            late_puts += 1;
        }
        let before = now_ns();
        if k == 1 {
            first_put_ns = before;
        }
        match publisher.put(k) {
            Ok((_, Some(time))) => {
                accepted += 1;
                put_lat.record((now_ns() - before) / 1000);
                if time <= last_time {
                    time_regressions += 1;
                }
                last_time = time;
            }
            Ok((_, None)) => put_errors += 1,
            Err(e) => {
                put_errors += 1;
                if put_errors <= 5 {
                    println!("!!! {e}");
                }
            }
        }
        let now = now_ns();
        if now >= next_rss {
            next_rss = now + 1_000_000_000;
            if let Some(r) = s.rss.read() {
                rss_max = Some(rss_max.map_or(r, |m| m.max(r)));
            }
        }
        if now >= next_print {
            next_print = now + 5_000_000_000;
            println!(
                "publishing: {:.1}s puts={k}/{puts_total} accepted={accepted} errors={put_errors}",
                (now - first_put_ns) as f64 / 1e9
            );
        }
    }
    let publish_s = (now_ns() - t0) as f64 / 1e9;
    println!(
        "published: {accepted}/{puts_total} accepted in {publish_s:.2}s ({:.1}/s) put_p50_ms={} put_p99_ms={} put_max_ms={} late={late_puts} publisher_connections={}",
        accepted as f64 / publish_s.max(1e-9),
        opt_ms(put_lat.percentile(50.0)),
        opt_ms(put_lat.percentile(99.0)),
        opt_ms(put_lat.max()),
        publisher.connects,
    );

    // Collect.
    let loss_ns = s.loss_timeout_ms * 1_000_000;
    let collect_deadline = now_ns() + loss_ns;
    broadcast(
        &mut workers,
        &format!("COLLECT {accepted} {collect_deadline}"),
    );
    let mut hist = Hist::new();
    let mut bad_hist = 0usize;
    let missing = gather(
        &rx,
        &mut workers,
        "RESULT",
        Duration::from_millis(s.loss_timeout_ms + 15_000),
        |_, l| {
            t.complete += kv_num(l, "complete");
            t.short_clients += kv_num(l, "short_clients");
            let m = kv(l, "min_received")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            t.min_received = Some(t.min_received.map_or(m, |x: u64| x.min(m)));
            let n = |k: &str| kv(l, k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            t.received += n("received");
            t.dups += n("dups");
            t.gaps += n("gaps");
            t.replies += n("replies");
            t.empty_replies += n("empty_replies");
            t.messages += n("messages");
            t.missed += n("missed");
            t.stale += n("stale");
            t.unexpected += n("unexpected");
            t.reconnects += n("reconnects");
            t.closed_by_server += n("closed_by_server");
            t.stuck += n("stuck");
            t.http_errors += n("http_errors");
            t.proto_errors += n("proto_errors");
            result_cpu_ms += n("cpu_ms");
            match kv(l, "hist").map(Hist::decode) {
                Some(Ok(h)) => hist.merge(&h),
                _ => bad_hist += 1,
            }
        },
    );
    t.dead_workers += missing;
    let collected_s = (now_ns() - t0) as f64 / 1e9;
    let server_cpu = match (server_cpu0, s.rss.cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let publisher_cpu = self_cpu_ns().saturating_sub(self_cpu0);
    let clients_cpu = result_cpu_ms.saturating_sub(ready_cpu_ms) * 1_000_000;
    // CPU used while publishing and collecting, in % of one core.
    let pct = |ns: u64| format!("{:.0}", ns as f64 / (collected_s * 1e9) * 100.0);
    println!(
        "cpu over {collected_s:.2}s (% of one core): server={} clients={} publisher={}",
        server_cpu.map_or("na".into(), pct),
        pct(clients_cpu),
        pct(publisher_cpu)
    );
    let rss_end = s.rss.read();
    if let Some(r) = rss_end {
        rss_max = Some(rss_max.map_or(r, |m| m.max(r)));
    }

    broadcast(&mut workers, "QUIT");
    reap(&mut workers);

    let expected = t.up as u64 * accepted;
    let lost = expected.saturating_sub(t.received);
    let extra = t.received.saturating_sub(expected);
    if lost > 0 {
        println!(
            "!!! LOST: {lost} of {expected} deliveries missing after {} ms ({} clients short; fewest received by one client: {})",
            s.loss_timeout_ms,
            t.short_clients,
            t.min_received.unwrap_or(0)
        );
    }
    for (what, n) in [
        ("duplicate deliveries", t.dups),
        ("skipped puts (gaps)", t.gaps),
        ("replies with \"missed\":true", t.missed),
        ("messages or reply times not after the cursor", t.stale),
        ("unexpected messages", t.unexpected),
        ("HTTP errors", t.http_errors),
        ("protocol errors", t.proto_errors),
        ("gets not answered within --get-timeout", t.stuck),
    ] {
        if n > 0 {
            println!("!!! {n} {what}");
        }
    }
    if bad_hist > 0 {
        println!("!!! {bad_hist} worker result(s) without a latency histogram");
    }
    let msgs_per_reply = if t.replies > 0 {
        format!(
            "{:.2}",
            t.messages as f64 / (t.replies - t.empty_replies).max(1) as f64
        )
    } else {
        "na".into()
    };
    let pass = t.failed == 0
        && t.up == f.n
        && t.dead_workers == 0
        && lost == 0
        && extra == 0
        && t.dups == 0
        && t.gaps == 0
        && t.missed == 0
        && t.stale == 0
        && t.unexpected == 0
        && t.http_errors == 0
        && t.proto_errors == 0
        && put_errors == 0
        && time_regressions == 0
        && bad_hist == 0;
    println!(
        "SUMMARY dialect={} clients={} up={} failed={} procs={} connect_s={connect_s:.2} rate={} duration_s={} puts={puts_total} accepted={accepted} put_errors={put_errors} late_puts={late_puts} put_p50_ms={} put_p99_ms={} expected={expected} delivered={} lost={lost} extra={extra} dups={} gaps={} missed={} stale={} unexpected={} latency_samples={} latency_p50_ms={} latency_p99_ms={} latency_max_ms={} replies={} empty_replies={} msgs_per_reply={msgs_per_reply} reconnects={} closed_by_server={} stuck={} http_errors={} proto_errors={} collected_s={collected_s:.2} server_cpu_pct={} server_cpu_us_per_delivery={} clients_cpu_pct={} rss_source={} rss_base_kib={} rss_parked_kib={} rss_per_parked_client_bytes={} rss_max_kib={} rss_end_kib={} result={}",
        s.dialect.name(),
        f.n,
        t.up,
        t.failed,
        f.procs,
        s.rate,
        s.duration,
        opt_ms(put_lat.percentile(50.0)),
        opt_ms(put_lat.percentile(99.0)),
        t.received.min(expected),
        t.dups,
        t.gaps,
        t.missed,
        t.stale,
        t.unexpected,
        hist.count(),
        opt_ms(hist.percentile(50.0)),
        opt_ms(hist.percentile(99.0)),
        opt_ms(hist.max()),
        t.replies,
        t.empty_replies,
        t.reconnects,
        t.closed_by_server,
        t.stuck,
        t.http_errors,
        t.proto_errors,
        server_cpu.map_or("na".into(), pct),
        // over the publishing and collecting window, per message delivered to a client
        server_cpu
            .filter(|_| t.received > 0)
            .map_or("na".into(), |c| format!(
                "{:.2}",
                c as f64 / 1e3 / t.received.min(expected) as f64
            )),
        pct(clients_cpu),
        s.rss.label(),
        kib(rss_base),
        kib(rss_parked),
        whole(per_client),
        kib(rss_max),
        kib(rss_end),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}
