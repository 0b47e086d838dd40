//! `soak`: for a bounded time, thousands of clients of every protocol connect,
//! publish, acknowledge and leave at random (RSTs, hang-ups in the middle of a
//! request, while parked or streaming) over `--procs` worker processes
//! (`soak_worker.rs`). Then every client leaves, each worker drains its QST
//! queues with a clean consumer, and the parent checks what must hold after
//! such a storm: no acknowledged QST message lost or delivered again after its
//! acknowledgement, the server's connection gauges back to 0, and its RSS
//! back near where it started.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::fleet::{broadcast, gather, kv, reap, resolve, Fleet, Msg, FLEET_OPTIONS};
use crate::http::{metrics_text, parse_metric};
use crate::measure::{kib, parse_pids, verdict, RssSource};
use crate::soak_worker::{parse_mix, KINDS};
use crate::sys::now_ns;

const USAGE: &str = "usage: tidings-load soak --server ADDR --secs N [--server-pid PID]
       [--clients 3000] [--procs 2] [--seed 1] [--queues 8] [--talk-channels 16]
       [--comet-channels 16] [--mix 20,10,20,10,15,25] [--think-pct 100]
       [--settle-secs 5] [--rss-margin-kib 4096] [--reply-timeout 40]
       [--sources 127.0.0.1,…] [--inflight 1000] [--connect-timeout 15]
       [--allow-non-loopback]

--mix weighs the sessions: talk-stream,talk-push,comet-get,comet-put,qst-producer,qst-consumer";

struct Settings {
    fleet: Fleet,
    pids: Vec<u32>,
    secs: u64,
    seed: u64,
    queues: usize,
    talk_channels: usize,
    comet_channels: usize,
    mix: String,
    think_pct: u64,
    settle_secs: u64,
    rss_margin_kib: u64,
    reply_timeout: u64,
    run: String,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let mut valued: Vec<&str> = FLEET_OPTIONS.to_vec();
    valued.extend([
        "secs",
        "clients",
        "seed",
        "queues",
        "talk-channels",
        "comet-channels",
        "mix",
        "think-pct",
        "settle-secs",
        "rss-margin-kib",
        "reply-timeout",
        "run",
    ]);
    // Sessions come and go: spread them over eight source addresses (ports in
    // TIME_WAIT after clean closes) and two workers unless told otherwise.
    let mut argv = argv.to_vec();
    if !argv.iter().any(|a| a.starts_with("--sources")) {
        argv.push("--sources".into());
        argv.push(
            (1..=8)
                .map(|i| format!("127.0.0.{i}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if !argv.iter().any(|a| a.starts_with("--procs")) {
        argv.extend(["--procs".to_string(), "2".to_string()]);
    }
    let a = Args::parse(&argv, &valued, &["allow-non-loopback"])?;
    let server: SocketAddr = resolve(a.required("server")?)?;
    let secs: u64 = a
        .required("secs")?
        .parse()
        .map_err(|_| "--secs: a number")?;
    if secs == 0 || secs > 24 * 3600 {
        return Err("--secs must be 1 to 86400".into());
    }
    let clients: usize = a.num("clients", 3000)?;
    if clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let fleet = Fleet::from_args(&a, server, clients, "clients")?;
    let queues: usize = a.num("queues", 8)?;
    if queues < fleet.procs {
        return Err(format!(
            "--queues {queues}: at least one per worker process (--procs {})",
            fleet.procs
        ));
    }
    let mix = a.str_or("mix", "20,10,20,10,15,25");
    parse_mix(&mix)?;
    let seed: u64 = a.num("seed", 1)?;
    let run = match a.get("run") {
        Some(r) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()) => r.to_string(),
        Some(r) => return Err(format!("--run `{r}`: letters and digits only")),
        None => format!("s{seed}x{:x}", (now_ns() / 1_000_000) % (1 << 24)),
    };
    Ok(Settings {
        pids: parse_pids(a.get("server-pid"))?,
        fleet,
        secs,
        seed,
        queues,
        talk_channels: a.num::<usize>("talk-channels", 16)?.max(1),
        comet_channels: a.num::<usize>("comet-channels", 16)?.max(1),
        mix,
        think_pct: a.num("think-pct", 100)?,
        settle_secs: a.num("settle-secs", 5)?,
        rss_margin_kib: a.num("rss-margin-kib", 4096)?,
        reply_timeout: a.num("reply-timeout", 40)?,
        run,
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("soak", USAGE, argv, settings, run_soak)
}

/// `tidings_requests_total` by `protocol/status`.
pub fn request_counts(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("tidings_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                (a.trim() == k).then(|| b.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(p), Some(s), Ok(v)) = (
            label("protocol"),
            label("status"),
            value.trim().parse::<f64>(),
        ) {
            m.insert(format!("{p}/{s}"), v);
        }
    }
    m
}

fn metric(text: &Option<String>, name: &str) -> String {
    text.as_deref()
        .and_then(|t| parse_metric(t, name))
        .map_or("na".into(), |v| format!("{v:.0}"))
}

fn run_soak(s: Settings) -> Result<i32, String> {
    let server = s.fleet.server;
    let rss = RssSource::new(&s.pids, server, true)?;
    let before_metrics = metrics_text(server).ok();
    let rss_start = rss.read();
    println!(
        "soak: server={server} secs={} clients={} procs={} seed={} run={} queues={} talk_channels={} comet_channels={} mix={} sources={} rss_start_kib={}",
        s.secs,
        s.fleet.n,
        s.fleet.procs,
        s.seed,
        s.run,
        s.queues,
        s.talk_channels,
        s.comet_channels,
        s.mix,
        s.fleet.source_list(),
        kib(rss_start)
    );
    let (q, tc, cc, seed, tp, rt, pr) = (
        s.queues.to_string(),
        s.talk_channels.to_string(),
        s.comet_channels.to_string(),
        s.seed.to_string(),
        s.think_pct.to_string(),
        s.reply_timeout.to_string(),
        s.fleet.procs.to_string(),
    );
    let ids = format!("{}i{:x}", s.run, (now_ns() / 1_000_000) % (1 << 32));
    let extra: Vec<(&str, &str)> = vec![
        ("--run", &s.run),
        ("--ids", &ids),
        ("--seed", &seed),
        ("--procs", &pr),
        ("--queues", &q),
        ("--talk-channels", &tc),
        ("--comet-channels", &cc),
        ("--mix", &s.mix),
        ("--think-pct", &tp),
        ("--reply-timeout", &rt),
    ];
    let (mut workers, rx) = s.fleet.spawn("soak-worker", "--clients", &extra)?;
    let start = Instant::now();
    let end = start + Duration::from_secs(s.secs);
    let mut rss_peak = rss_start;
    let mut last_print = Instant::now();
    let mut progress: Vec<String> = vec![String::new(); workers.len()];
    let mut crashed = 0usize;
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(1000)) {
            Ok(Msg::Line(i, l)) => {
                if l.starts_with("PROGRESS") {
                    progress[i] = l;
                }
            }
            Ok(Msg::Eof(i)) => {
                if workers[i].alive {
                    eprintln!("!!! soak worker {i} exited during the run");
                    crashed += 1;
                }
                workers[i].alive = false;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(r) = rss.read() {
            rss_peak = Some(rss_peak.map_or(r, |p| p.max(r)));
        }
        if last_print.elapsed() >= Duration::from_secs(30) {
            last_print = Instant::now();
            let sum = |key: &str| -> usize {
                progress
                    .iter()
                    .map(|l| {
                        kv(l, key)
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0)
                    })
                    .sum()
            };
            println!(
                "  t={:.0}s connected={} streaming={} waiting={} sessions={} replies={} errors={} qst_ids={} rss_kib={} rss_peak_kib={} server_fds={}",
                start.elapsed().as_secs_f64(),
                sum("connected"),
                sum("streaming"),
                sum("waiting"),
                sum("sessions"),
                sum("replies"),
                sum("errors"),
                sum("qst_ids"),
                kib(rss.read()),
                kib(rss_peak),
                rss.fds().map_or("na".into(), |f| f.to_string())
            );
        }
    }
    let run_s = start.elapsed().as_secs_f64();
    let rss_end_of_load = rss.read();
    if let Some(r) = rss_end_of_load {
        rss_peak = Some(rss_peak.map_or(r, |p| p.max(r)));
    }
    println!("stopping: every client leaves, then each worker drains its queues");
    broadcast(&mut workers, "STOP");
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let missing = gather(
        &rx,
        &mut workers,
        "DONE",
        Duration::from_secs(300),
        |_, l| {
            for w in l.split_whitespace().skip(1) {
                if let Some((k, v)) = w.split_once('=') {
                    if let Ok(v) = v.parse::<u64>() {
                        *totals.entry(k.to_string()).or_insert(0) += v;
                    }
                }
            }
        },
    );
    reap(&mut workers);
    let left_s = start.elapsed().as_secs_f64() - run_s;
    std::thread::sleep(Duration::from_secs(s.settle_secs));
    let rss_after = rss.read();
    let fds_after = rss.fds();
    let after_metrics = metrics_text(server).ok();
    let t = |k: &str| totals.get(k).copied().unwrap_or(0);

    println!("--- counters (all workers) ---");
    let mut line = String::new();
    for (k, v) in &totals {
        line.push_str(&format!(" {k}={v}"));
        if line.len() > 100 {
            println!(" {}", line.trim());
            line.clear();
        }
    }
    if !line.is_empty() {
        println!(" {}", line.trim());
    }

    // Throughput by protocol, from the clients' side.
    println!("--- throughput over {run_s:.0} s (replies/s, client side) ---");
    let mut reqs_total = 0;
    for proto in [
        "talk_pull",
        "talk_push",
        "comet_sync",
        "comet_get",
        "comet_put",
        "qst_push",
        "qst_pull",
    ] {
        let r = t(&format!("replies_{proto}"));
        reqs_total += r;
        println!(
            "  {proto:<10} replies={r} per_s={:.1} 200={} 503={} other={}",
            r as f64 / run_s,
            t(&format!("status_200_{proto}")),
            t(&format!("status_503_{proto}")),
            t(&format!("status_other_{proto}"))
        );
    }
    let errors: u64 = totals
        .iter()
        .filter(|(k, _)| k.starts_with("err_"))
        .map(|(_, v)| v)
        .sum();
    let s503: u64 = totals
        .iter()
        .filter(|(k, _)| k.starts_with("status_503_"))
        .map(|(_, v)| v)
        .sum();
    let hangups: u64 = totals
        .iter()
        .filter(|(k, _)| k.starts_with("hangup_"))
        .map(|(_, v)| v)
        .sum();
    let sessions: u64 = KINDS
        .iter()
        .map(|k| t(&format!("sessions_{}", k.name())))
        .sum();
    // Server side: requests answered during the run, by protocol and status.
    if let (Some(b), Some(a)) = (&before_metrics, &after_metrics) {
        let (b, a) = (request_counts(b), request_counts(a));
        let mut line = String::from("  server tidings_requests_total during the run:");
        for (k, v) in &a {
            let d = v - b.get(k).copied().unwrap_or(0.0);
            if d > 0.0 {
                line.push_str(&format!(" {k}={d:.0}"));
            }
        }
        println!("{line}");
    }

    let open = after_metrics
        .as_deref()
        .and_then(|m| parse_metric(m, "tidings_connections_open"));
    let parked = after_metrics
        .as_deref()
        .and_then(|m| parse_metric(m, "tidings_connections_parked"));
    let streaming = after_metrics
        .as_deref()
        .and_then(|m| parse_metric(m, "tidings_connections_streaming"));
    let retained = after_metrics
        .as_deref()
        .and_then(|m| parse_metric(m, "tidings_retained_bytes"));
    let diff_kib = match (rss_start, rss_after) {
        (Some(a), Some(b)) => Some((b as i64 - a as i64) / 1024),
        _ => None,
    };
    // The messages the channels keep after the run (retention) are not a
    // leak: the margin allows for them plus --rss-margin-kib.
    let allowed_kib = s.rss_margin_kib as i64 + retained.map_or(0, |r| r as i64 / 1024);
    let lost = t("qst_lost");
    let post_ack = t("qst_post_ack_redeliveries");
    let qst_ok = lost == 0
        && post_ack == 0
        && t("qst_phantom") == 0
        && t("qst_wrong_queue") == 0
        && t("qst_unexpected") == 0
        && t("qst_vanished_unresolved") == 0
        && t("err_drain") == 0
        && t("err_drain_unacked") == 0;
    // The metrics request itself is one open connection.
    let gauges_ok = open.is_some_and(|v| v <= 1.0)
        && parked.is_some_and(|v| v == 0.0)
        && streaming.is_some_and(|v| v == 0.0);
    let rss_ok = diff_kib.is_some_and(|d| d <= allowed_kib);
    let workers_ok = crashed == 0 && missing == 0;
    println!("--- checks ---");
    println!(
        "  qst: accepted={} lost={lost} ack_unconfirmed={} never_delivered={} post_ack_redeliveries={post_ack} redeliveries={} phantom={} wrong_queue={} unexpected={} vanished_msgs={} vanished_redelivered={} vanished_acked_by_other={} vanished_unresolved={} maybe={} maybe_stored={} drained={} -> {}",
        t("qst_accepted"),
        t("qst_ack_unconfirmed"),
        t("qst_never_delivered"),
        t("qst_redeliveries"),
        t("qst_phantom"),
        t("qst_wrong_queue"),
        t("qst_unexpected"),
        t("qst_vanished_msgs"),
        t("qst_vanished_redelivered"),
        t("qst_vanished_acked_by_other"),
        t("qst_vanished_unresolved"),
        t("qst_maybe"),
        t("qst_maybe_stored"),
        t("qst_drained_msgs"),
        verdict(qst_ok)
    );
    println!(
        "  gauges after: open={} parked={} streaming={} channels={} retained_bytes={} read_buffer_bytes={} -> {}",
        metric(&after_metrics, "tidings_connections_open"),
        metric(&after_metrics, "tidings_connections_parked"),
        metric(&after_metrics, "tidings_connections_streaming"),
        metric(&after_metrics, "tidings_channels"),
        metric(&after_metrics, "tidings_retained_bytes"),
        metric(&after_metrics, "tidings_read_buffer_bytes"),
        verdict(gauges_ok)
    );
    println!(
        "  rss: start={} KiB peak={} KiB end_of_load={} KiB after={} KiB (settle {} s) after-start={} KiB allowed={allowed_kib} KiB (margin {} + retained) -> {}",
        kib(rss_start),
        kib(rss_peak),
        kib(rss_end_of_load),
        kib(rss_after),
        s.settle_secs,
        diff_kib.map_or("na".into(), |d| d.to_string()),
        s.rss_margin_kib,
        verdict(rss_ok)
    );
    let pass = qst_ok && gauges_ok && rss_ok && workers_ok;
    println!(
        "SUMMARY secs={} run_s={run_s:.0} leave_and_drain_s={left_s:.1} clients={} procs={} seed={} run={} sessions={sessions} replies={reqs_total} replies_per_s={:.0} errors={errors} status_503={s503} hangups={hangups} qst_accepted={} qst_delivered={} qst_redeliveries={} qst_lost={lost} qst_ack_unconfirmed={} qst_post_ack_redeliveries={post_ack} qst_vanished_msgs={} qst_vanished_unresolved={} rss_source={} rss_start_kib={} rss_peak_kib={} rss_after_kib={} rss_after_minus_start_kib={} retained_bytes={} conn_open={} conn_parked={} conn_streaming={} server_fds_after={} workers_crashed={crashed} workers_unanswered={missing} qst={} gauges={} rss={} result={}",
        s.secs,
        s.fleet.n,
        s.fleet.procs,
        s.seed,
        s.run,
        reqs_total as f64 / run_s,
        t("qst_accepted"),
        t("qst_delivered"),
        t("qst_redeliveries"),
        t("qst_ack_unconfirmed"),
        t("qst_vanished_msgs"),
        t("qst_vanished_unresolved"),
        rss.label(),
        kib(rss_start),
        kib(rss_peak),
        kib(rss_after),
        diff_kib.map_or("na".into(), |d| d.to_string()),
        metric(&after_metrics, "tidings_retained_bytes"),
        metric(&after_metrics, "tidings_connections_open"),
        metric(&after_metrics, "tidings_connections_parked"),
        metric(&after_metrics, "tidings_connections_streaming"),
        fds_after.map_or("na".into(), |f| f.to_string()),
        verdict(qst_ok),
        verdict(gauges_ok),
        verdict(rss_ok),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_count_lines() {
        let text = "# HELP x\ntidings_requests_total{protocol=\"qst\",status=\"200\"} 12\ntidings_requests_total{protocol=\"talk\",status=\"503\"} 3\nother 1\n";
        let m = request_counts(text);
        assert_eq!(m.get("qst/200"), Some(&12.0));
        assert_eq!(m.get("talk/503"), Some(&3.0));
        assert_eq!(m.len(), 2);
    }
}
