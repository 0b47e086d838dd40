//! `talk-idle`: many idle Talk streams spread over worker processes; the
//! server's RSS per stream; fan-out latency of pushes to all of them.

use std::time::{Duration, Instant};

use crate::args::Args;
use crate::fanout::{publish, Group};
use crate::fleet::{bring_up, finish, kv_num, resolve, Fleet, Msg, FLEET_OPTIONS};
use crate::hist::Hist;
use crate::http::{nchan_pub, pub_api_request, push_request, timed_request};
use crate::measure::{kib, opt_ms, parse_pids, pct_ms, per_item, verdict, whole, RssSource};
use crate::nchan_sub::Transport;
use crate::series;
use crate::sys::now_ns;

const USAGE: &str =
    "usage: tidings-load talk-idle --streams N [--server 127.0.0.1:8080] [--channel C]
       [--procs P] [--sources 127.0.0.1,127.0.0.2,…] [--server-pid PID] [--pushes K] [--hold SECS]
       [--terminator nul|newline] [--inflight 1000] [--retries 3] [--connect-timeout 15]
       [--loss-timeout 10] [--settle-ms 1000] [--push-gap-ms 200] [--max-connect-secs 600]
       [--dialect talk|nchan] [--allow-non-loopback]

  --dialect nchan: nginx + nchan http-chunked subscribers instead of Talk streams
      (`GET /pull?channel=C` with `TE: chunked`; a location as in bench/lib.sh, with
      `nchan_subscriber_first_message oldest`). The channel first gets a `noop`
      message, which every subscriber receives first; pushes are `POST /pub?channel=C`
      (any 2xx); records end in `\n`. --server-pid then takes nginx's master and
      workers, comma-separated (PSS and CPU summed).";

const SUB_USAGE: &str =
    "usage: tidings-load nchan-sub --transport eventsource|websocket|websocket-plain|longpoll
       --streams N [--server 127.0.0.1:8080] [--channel C] [--procs P] [--sources …]
       [--server-pid PID[,PID…]] [--pushes K] [--hold SECS] [--inflight 1000] [--retries 3]
       [--connect-timeout 15] [--loss-timeout 10] [--settle-ms 1000] [--push-gap-ms 200]
       [--max-connect-secs 600] [--back-to-back M] [--publishers P] [--allow-non-loopback]

  N subscribers of nchan's API, `GET /sub/C` over one transport, against tidings or
  nginx + nchan alike (locations `/pub/(.+)` and `/sub/(.+)` as in bench/lib.sh, first
  message `oldest`): the parent first publishes `noop` (`POST /pub/C`), which every
  subscriber must receive first; then, as talk-idle, the server's memory per
  subscriber and K fan-out messages (`POST /pub/C`, any 2xx), each to be read exactly
  once by every subscriber. websocket asks for ws+meta.nchan (as NchanSubscriber);
  longpoll re-polls with If-Modified-Since / If-None-Match on the same connection.

  --back-to-back M (after the K fan-out messages): P publishers (1) each POST M
  messages to /pub/C on one keep-alive connection, each as soon as the previous one
  is answered; every subscriber must read every message once. Reported: p50/p99 of
  arrival − the time its POST was written (b2b_p50_ms, b2b_p99_ms), deliveries per
  second (from the first POST to the last arrival), lost, duplicated, the server's
  CPU per delivery, the POST round trip. Keep P×M within the channel's retention
  (1,024 here for tidings and nchan): a long-poll subscriber that falls behind
  further loses messages.";

/// `talk` (false) or `nchan` (true).
pub fn parse_dialect(s: &str) -> Result<bool, String> {
    match s {
        "talk" => Ok(false),
        "nchan" => Ok(true),
        other => Err(format!("--dialect `{other}`: want `talk` or `nchan`")),
    }
}

struct Settings {
    fleet: Fleet,
    channel: String,
    pushes: usize,
    hold: u64,
    terminator: String,
    loss_timeout_ms: u64,
    push_gap_ms: u64,
    rss: RssSource,
    nchan: bool,
    transport: Option<Transport>,
    /// `--back-to-back`: messages per publisher (0: none).
    back_to_back: usize,
    publishers: usize,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let names = [
        &FLEET_OPTIONS[..],
        &[
            "streams",
            "channel",
            "pushes",
            "hold",
            "terminator",
            "loss-timeout",
            "push-gap-ms",
            "dialect",
            "transport",
            "back-to-back",
            "publishers",
        ],
    ]
    .concat();
    let a = Args::parse(argv, &names, &["allow-non-loopback"])?;
    let server = resolve(&a.str_or("server", "127.0.0.1:8080"))?;
    let n: usize = a
        .required("streams")?
        .parse()
        .map_err(|_| "--streams: not a number".to_string())?;
    if n == 0 {
        return Err("--streams must be at least 1".into());
    }
    let fleet = Fleet::from_args(&a, server, n, "streams")?;
    let nchan = parse_dialect(&a.str_or("dialect", "talk"))?;
    let transport = a.get("transport").map(Transport::parse).transpose()?;
    let pids = parse_pids(a.get("server-pid"))?;
    // nginx has no /metrics to fall back on
    let rss = RssSource::new(&pids, server, !nchan)?;
    let terminator = if nchan {
        "newline".to_string()
    } else {
        a.str_or("terminator", "nul")
    };
    crate::parse_terminator(&terminator)?;
    Ok(Settings {
        fleet,
        channel: a.str_or("channel", "loadtest"),
        pushes: a.num("pushes", 5)?,
        hold: a.num("hold", 0)?,
        terminator,
        loss_timeout_ms: a.num::<u64>("loss-timeout", 10)? * 1000,
        push_gap_ms: a.num("push-gap-ms", 200)?,
        rss,
        nchan,
        transport,
        back_to_back: a.num("back-to-back", 0)?,
        publishers: a.num::<usize>("publishers", 1)?.max(1),
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("talk-idle", USAGE, argv, settings, |s| run_idle(&s))
}

/// `nchan-sub`: `talk-idle`'s measurements over subscribers of nchan's API.
pub fn run_sub(argv: &[String]) -> i32 {
    crate::run_scenario("nchan-sub", SUB_USAGE, argv, settings, |s| {
        if s.transport.is_none() {
            return Err("--transport is required".into());
        }
        run_idle(&s)
    })
}

/// The request that publishes `body` (a fan-out token or the first `noop`).
fn publish_request(s: &Settings, body: &str) -> Vec<u8> {
    if s.transport.is_some() {
        pub_api_request(&s.channel, body.as_bytes())
    } else if s.nchan {
        // records of nchan's http-chunked stream end in `\n` here
        nchan_pub(&s.channel, format!("{body}\n").as_bytes())
    } else {
        push_request("loadtest", &s.channel, body, false)
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
    let f = &s.fleet;
    let run_id = format!("{:x}{:x}", std::process::id(), now_ns() % (1 << 32));
    println!(
        "{}: dialect={} transport={} server={} streams={} procs={} sources={} channel={} terminator={} rss={}",
        if s.transport.is_some() { "nchan-sub" } else { "talk-idle" },
        if s.nchan { "nchan" } else { "talk" },
        s.transport.map_or("talk", Transport::name),
        f.server,
        f.n,
        f.procs,
        f.source_list(),
        s.channel,
        s.terminator,
        s.rss.label()
    );
    let rss_base = s.rss.read();
    println!("baseline: rss_kib={}", kib(rss_base));
    if s.nchan || s.transport.is_some() {
        // every subscriber gets this buffered message first, as a Talk stream its `noop`
        let r = timed_request(f.server, &publish_request(s, "noop"), |_| {})?;
        if !(200..300).contains(&r.reply.status) {
            return Err(format!(
                "nchan publish of the first noop: status {}",
                r.reply.status
            ));
        }
    }

    let mut extra = vec![
        ("--channel", s.channel.as_str()),
        ("--run-id", &run_id),
        ("--terminator", &s.terminator),
        ("--dialect", if s.nchan { "nchan" } else { "talk" }),
    ];
    if let Some(t) = s.transport {
        extra.push(("--transport", t.name()));
    }
    let (workers, rx, st) = bring_up(f, "worker", "--streams", &extra, "streams", "connecting")?;
    let mut t = Totals {
        up: st.up,
        failed: st.failed,
        dead_workers: st.dead_workers,
        ..Totals::default()
    };
    let connect_s = st.connect_s;
    t.head_notes = workers
        .iter()
        .map(|w| kv_num(&w.ready_line, "head_notes"))
        .sum();
    if t.head_notes > 0 {
        println!(
            "!!! {} stream replies had a head that is not byte-exact",
            t.head_notes
        );
    }

    std::thread::sleep(Duration::from_millis(f.settle_ms));
    let rss_up = s.rss.read();
    let fds = s.rss.fds();
    let per_stream = per_item(rss_base, rss_up, t.up);
    println!(
        "memory: rss_base_kib={} rss_kib={} rss_per_stream_bytes={} rss_per_stream_kib={}{}",
        kib(rss_base),
        kib(rss_up),
        whole(per_stream),
        per_stream.map_or("na".into(), |v| format!("{:.2}", v / 1024.0)),
        fds.map_or(String::new(), |f| format!(" server_fds={f}"))
    );

    // Fan-out.
    let cpu_before = s.rss.cpu_ns();
    let mut all_lats: Vec<u64> = Vec::new();
    // per push: publish write → the last subscriber's read
    let mut last_lats: Vec<u64> = Vec::new();
    let mut g = [Group {
        label: "talk",
        workers,
        rx,
    }];
    if t.up > 0 {
        for k in 1..=s.pushes {
            let token = format!("fanout-{k}-{}", now_ns());
            let req = publish_request(s, &token);
            let accepted = |status: u16| {
                if s.nchan || s.transport.is_some() {
                    (200..300).contains(&status)
                } else {
                    status == 200
                }
            };
            let p = publish(&mut g, f.server, &req, &token, s.loss_timeout_ms, accepted);
            if !p.ok {
                t.push_errors += 1;
            }
            let Some(d) = p.groups.first() else {
                continue;
            };
            t.lost += d.lost;
            t.dups += d.dups;
            println!(
                "push {k}/{}: token={token} {} push_reply_ms={}",
                s.pushes,
                d.figures(),
                if p.reply_ms.is_nan() {
                    "na".to_string()
                } else {
                    format!("{:.3}", p.reply_ms)
                },
            );
            if let Some(&last) = d.lats.last() {
                last_lats.push(last);
            }
            all_lats.extend_from_slice(&d.lats);
            std::thread::sleep(Duration::from_millis(s.push_gap_ms));
        }
    }
    all_lats.sort_unstable();
    last_lats.sort_unstable();
    // The server's CPU time per push (the pauses between pushes are idle but for
    // keep-alive noops): how much of the fan-out latency is the server's own work.
    let cpu_per_push = match (cpu_before, s.rss.cpu_ns()) {
        (Some(a), Some(b)) if s.pushes > 0 && t.up > 0 => {
            let per = b.saturating_sub(a) as f64 / s.pushes as f64;
            println!(
                "server cpu: {:.2} ms per push ({:.2} us per stream)",
                per / 1e6,
                per / 1e3 / t.up as f64
            );
            Some((per / 1e6, per / 1e3 / t.up as f64))
        }
        _ => None,
    };
    let b2b = (s.back_to_back > 0 && t.up > 0).then(|| back_to_back(s, &mut g[0]));
    let [Group {
        mut workers, rx, ..
    }] = g;
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

    let b = finish(&mut workers, &rx, "streams", "records");
    t.closed = b.closed;
    t.unexpected = b.unexpected;
    t.proto_errors = b.proto_errors;
    t.keepalives = b.keepalives;
    t.min_keepalives = b.min_keepalives;

    let pass = t.failed == 0
        && b2b.as_ref().is_none_or(|b| b.pass)
        && t.up == f.n
        && t.lost == 0
        && t.closed == 0
        && t.dups == 0
        && t.proto_errors == 0
        && t.head_notes == 0
        && t.push_errors == 0
        && t.dead_workers == 0;
    println!(
        "SUMMARY transport={} streams={} up={} failed={} procs={} connect_s={connect_s:.2} rss_source={} rss_base_kib={} rss_kib={} rss_per_stream_bytes={} rss_per_stream_kib={} rss_after_fanout_kib={} rss_end_kib={} pushes={} fanout_p50_ms={} fanout_p99_ms={} fanout_max_ms={} fanout_last_p50_ms={} fanout_last_max_ms={} lost={} dups={} closed={} unexpected={} proto_errors={} head_mismatch={} push_errors={} keepalives={} min_keepalives={} server_cpu_ms_per_push={} server_cpu_us_per_delivery={}{} result={}",
        s.transport.map_or("talk", Transport::name),
        f.n,
        t.up,
        t.failed,
        f.procs,
        s.rss.label(),
        kib(rss_base),
        kib(rss_up),
        whole(per_stream),
        per_stream.map_or("na".into(), |v| format!("{:.2}", v / 1024.0)),
        kib(rss_after),
        kib(rss_end),
        s.pushes,
        pct_ms(&all_lats, 50.0),
        pct_ms(&all_lats, 99.0),
        pct_ms(&all_lats, 100.0),
        pct_ms(&last_lats, 50.0),
        pct_ms(&last_lats, 100.0),
        t.lost,
        t.dups,
        t.closed,
        t.unexpected,
        t.proto_errors,
        t.head_notes,
        t.push_errors,
        t.keepalives,
        t.min_keepalives.map_or("na".into(), |m| m.to_string()),
        cpu_per_push.map_or("na".into(), |v| format!("{:.2}", v.0)),
        cpu_per_push.map_or("na".into(), |v| format!("{:.2}", v.1)),
        b2b.as_ref().map_or(String::new(), |b| b.fields.clone()),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}

/// What `--back-to-back` measured: the `b2b_…` fields of the SUMMARY line.
struct BackToBack {
    fields: String,
    pass: bool,
}

/// Runs the back-to-back series (`series::run`) and prints what it measured.
fn back_to_back(s: &Settings, g: &mut Group) -> BackToBack {
    println!(
        "back-to-back: {} publisher(s) x {} messages",
        s.publishers, s.back_to_back
    );
    let cpu0 = s.rss.cpu_ns();
    let o = series::run(
        g,
        s.fleet.server,
        &s.channel,
        s.publishers,
        s.back_to_back,
        s.loss_timeout_ms,
    );
    let cpu = match (cpu0, s.rss.cpu_ns()) {
        (Some(a), Some(b)) if o.deliveries > 0 => {
            format!(
                "{:.2}",
                b.saturating_sub(a) as f64 / 1e3 / o.deliveries as f64
            )
        }
        _ => "na".into(),
    };
    let pct = |h: &Hist, p: f64| opt_ms(h.percentile(p));
    let per_s = if o.span_s > 0.0 {
        format!("{:.0}", o.deliveries as f64 / o.span_s)
    } else {
        "na".into()
    };
    let fields = format!(
        " b2b_publishers={} b2b_messages={} b2b_accepted={} b2b_pub_errors={} b2b_subscribers={} b2b_deliveries={} b2b_lost={} b2b_dups={} b2b_gone={} b2b_bad={} b2b_p50_ms={} b2b_p99_ms={} b2b_max_ms={} b2b_deliveries_per_s={per_s} b2b_publish_s={:.3} b2b_span_s={:.3} b2b_post_p50_ms={} b2b_post_p99_ms={} b2b_server_cpu_us_per_delivery={cpu}",
        s.publishers,
        o.total,
        o.accepted,
        o.pub_errors,
        o.expected,
        o.deliveries,
        o.lost,
        o.dups,
        o.gone,
        o.bad,
        pct(&o.lat, 50.0),
        pct(&o.lat, 99.0),
        opt_ms(o.lat.max()),
        o.publish_s,
        o.span_s,
        pct(&o.rtt, 50.0),
        pct(&o.rtt, 99.0),
    );
    println!("back-to-back:{fields}");
    if o.lost > 0 || o.dups > 0 {
        println!(
            "!!! back-to-back: {} deliveries lost, {} duplicated (of {} subscribers x {} messages)",
            o.lost, o.dups, o.expected, o.total
        );
    }
    BackToBack {
        fields,
        pass: o.lost == 0
            && o.dups == 0
            && o.pub_errors == 0
            && o.bad == 0
            && o.accepted == o.total,
    }
}
