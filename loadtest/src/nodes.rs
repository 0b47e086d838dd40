//! `nchan-nodes`: `nchan-sub` over several servers that share one channel
//! store (tidings `--redis`, nginx + nchan with `nchan_redis_url`): the
//! subscribers are spread evenly over the nodes, the publishes all go to one
//! node, and every subscriber on every node must read every message once.
//! Reported per node: fan-out p50 / p99 (publish written → read), deliveries,
//! the node's CPU time per delivery and memory per subscriber; and the Redis
//! server's CPU per publish when its pid is given.

use std::net::SocketAddr;
use std::time::Duration;

use crate::args::Args;
use crate::fanout::{publish, Group};
use crate::fleet::{bring_up, finish, resolve, Fleet, FLEET_OPTIONS};
use crate::http::{pub_api_request, timed_request};
use crate::measure::{kib, parse_pids, pct_ms, per_item, verdict, whole, RssSource};
use crate::nchan_sub::Transport;
use crate::sys::{now_ns, proc_cpu_ns};

const USAGE: &str =
    "usage: tidings-load nchan-nodes --transport eventsource|websocket|websocket-plain|longpoll
       --servers HOST:PORT,HOST:PORT[,…] --streams N [--publish-to I]
       [--server-pids PID[,PID…]/PID[,PID…]/…] [--redis-pid PID] [--channel C]
       [--procs P (per node)] [--pushes K] [--push-gap-ms 200] [--settle-ms 1000]
       [--loss-timeout 10] [--inflight 1000] [--retries 3] [--connect-timeout 15]
       [--max-connect-secs 600] [--allow-non-loopback]

  nchan-sub over several nodes sharing their channels (tidings --redis; nginx + nchan
  with nchan_redis_url): N subscribers of `GET /sub/C`, spread evenly over the nodes
  (node i gets N/nodes, the first ones one more), and K fan-out messages published with
  `POST /pub/C` on node I (0). The parent first publishes `noop` on node I, which every
  subscriber on every node must receive first (first message `oldest`).
  --server-pids: per node, `/`-separated, the pids whose CPU and memory count for it
  (nginx: master and worker, comma-separated). --redis-pid: the redis-server shared by
  the nodes, whose CPU per publish is reported too.
  SUMMARY: the nchan-sub figures over every subscriber, then per node
  nodeI_{streams,deliveries,p50_ms,p99_ms,cpu_us_per_delivery,rss_per_stream_bytes},
  nodes_cpu_us_per_delivery (every node's CPU / every delivery), redis_cpu_us_per_push
  and all_cpu_us_per_delivery (the nodes' and redis-server's CPU / every delivery).";

struct Settings {
    fleets: Vec<Fleet>,
    pids: Vec<Vec<u32>>,
    redis_pid: Option<u32>,
    publish_to: usize,
    transport: Transport,
    channel: String,
    pushes: usize,
    loss_timeout_ms: u64,
    push_gap_ms: u64,
}

fn settings(argv: &[String]) -> Result<Settings, String> {
    let names = [
        &FLEET_OPTIONS[..],
        &[
            "servers",
            "server-pids",
            "redis-pid",
            "publish-to",
            "streams",
            "channel",
            "pushes",
            "loss-timeout",
            "push-gap-ms",
            "transport",
        ],
    ]
    .concat();
    let a = Args::parse(argv, &names, &["allow-non-loopback"])?;
    let servers: Vec<SocketAddr> = a
        .required("servers")?
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| resolve(s.trim()))
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err("--servers is empty".into());
    }
    let n: usize = a
        .required("streams")?
        .parse()
        .map_err(|_| "--streams: not a number".to_string())?;
    if n < servers.len() {
        return Err("--streams must be at least one per server".into());
    }
    let pids: Vec<Vec<u32>> = match a.get("server-pids") {
        None => vec![Vec::new(); servers.len()],
        Some(list) => list
            .split('/')
            .map(|p| parse_pids(Some(p)))
            .collect::<Result<_, _>>()?,
    };
    if pids.len() != servers.len() {
        return Err(format!(
            "--server-pids names {} nodes, --servers {}",
            pids.len(),
            servers.len()
        ));
    }
    let fleets = crate::fleet::shares(n, servers.len())
        .into_iter()
        .zip(&servers)
        .map(|((_, count), &server)| Fleet::from_args(&a, server, count, "streams"))
        .collect::<Result<Vec<_>, _>>()?;
    let publish_to: usize = a.num("publish-to", 0)?;
    if publish_to >= servers.len() {
        return Err(format!(
            "--publish-to {publish_to}: there are {} servers",
            servers.len()
        ));
    }
    Ok(Settings {
        fleets,
        pids,
        redis_pid: a.opt_num("redis-pid")?,
        publish_to,
        transport: Transport::parse(a.required("transport")?)?,
        channel: a.str_or("channel", "loadtest"),
        pushes: a.num("pushes", 5)?,
        loss_timeout_ms: a.num::<u64>("loss-timeout", 10)? * 1000,
        push_gap_ms: a.num("push-gap-ms", 200)?,
    })
}

pub fn run(argv: &[String]) -> i32 {
    crate::run_scenario("nchan-nodes", USAGE, argv, settings, |s| run_nodes(&s))
}

/// What one node's subscribers and process did.
#[derive(Default)]
struct Node {
    up: usize,
    failed: usize,
    dead_workers: usize,
    received: usize,
    lost: usize,
    dups: usize,
    lats: Vec<u64>,
    cpu_ns: Option<u64>,
    rss_per_stream: Option<f64>,
}

fn run_nodes(s: &Settings) -> Result<i32, String> {
    let run_id = format!("{:x}{:x}", std::process::id(), now_ns() % (1 << 32));
    let pub_server = s.fleets[s.publish_to].server;
    let list: Vec<String> = s.fleets.iter().map(|f| f.server.to_string()).collect();
    println!(
        "nchan-nodes: transport={} servers={} publish_to={pub_server} streams={} channel={}",
        s.transport.name(),
        list.join(","),
        s.fleets.iter().map(|f| f.n).sum::<usize>(),
        s.channel
    );
    // nginx has no /metrics; tidings' /metrics is only asked for without pids
    let rss: Vec<RssSource> = s
        .fleets
        .iter()
        .zip(&s.pids)
        .map(|(f, p)| RssSource::new(p, f.server, false))
        .collect::<Result<_, _>>()?;
    let rss_base: Vec<Option<u64>> = rss.iter().map(RssSource::read).collect();

    // every subscriber gets this stored message first, from whichever node it is on
    let r = timed_request(pub_server, &pub_api_request(&s.channel, b"noop"), |_| {})?;
    if !(200..300).contains(&r.reply.status) {
        return Err(format!(
            "publish of the first noop: status {}",
            r.reply.status
        ));
    }

    let extra = [
        ("--channel", s.channel.as_str()),
        ("--run-id", &run_id),
        ("--terminator", "newline"),
        ("--dialect", "talk"),
        ("--transport", s.transport.name()),
    ];
    let mut nodes: Vec<Node> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, f) in s.fleets.iter().enumerate() {
        println!("node {i} ({}): {} subscribers", f.server, f.n);
        let (workers, rx, st) =
            bring_up(f, "worker", "--streams", &extra, "streams", "connecting")?;
        nodes.push(Node {
            up: st.up,
            failed: st.failed,
            dead_workers: st.dead_workers,
            ..Node::default()
        });
        groups.push(Group {
            label: Box::leak(format!("node{i}").into_boxed_str()),
            workers,
            rx,
        });
    }
    let settle = s.fleets[0].settle_ms;
    std::thread::sleep(Duration::from_millis(settle));
    for (i, (node, src)) in nodes.iter_mut().zip(&rss).enumerate() {
        node.rss_per_stream = per_item(rss_base[i], src.read(), node.up);
    }

    let cpu0: Vec<Option<u64>> = rss.iter().map(RssSource::cpu_ns).collect();
    let redis0 = s.redis_pid.and_then(proc_cpu_ns);
    let mut all_lats: Vec<u64> = Vec::new();
    let mut last_lats: Vec<u64> = Vec::new();
    let mut push_errors = 0;
    let up: usize = nodes.iter().map(|n| n.up).sum();
    if up > 0 {
        for k in 1..=s.pushes {
            let token = format!("fanout-{k}-{}", now_ns());
            let req = pub_api_request(&s.channel, token.as_bytes());
            let p = publish(
                &mut groups,
                pub_server,
                &req,
                &token,
                s.loss_timeout_ms,
                |st| (200..300).contains(&st),
            );
            if !p.ok {
                push_errors += 1;
            }
            let mut last = 0;
            let mut line = format!("push {k}/{}:", s.pushes);
            for (i, (d, node)) in p.groups.iter().zip(nodes.iter_mut()).enumerate() {
                node.received += d.received;
                node.lost += d.lost;
                node.dups += d.dups;
                node.lats.extend_from_slice(&d.lats);
                all_lats.extend_from_slice(&d.lats);
                last = last.max(d.lats.last().copied().unwrap_or(0));
                line.push_str(&format!(" node{i} {}", d.figures()));
            }
            println!("{line} push_reply_ms={:.3}", p.reply_ms);
            last_lats.push(last);
            std::thread::sleep(Duration::from_millis(s.push_gap_ms));
        }
    }
    for ((node, src), c0) in nodes.iter_mut().zip(&rss).zip(&cpu0) {
        node.cpu_ns = match (c0, src.cpu_ns()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(*a)),
            _ => None,
        };
    }
    let redis_cpu = match (redis0, s.redis_pid.and_then(proc_cpu_ns)) {
        (Some(a), Some(b)) if s.pushes > 0 => Some(b.saturating_sub(a) as f64 / s.pushes as f64),
        _ => None,
    };

    let mut closed = 0;
    let mut unexpected = 0;
    let mut proto_errors = 0;
    for g in groups.iter_mut() {
        let b = finish(&mut g.workers, &g.rx, "streams", "records");
        closed += b.closed;
        unexpected += b.unexpected;
        proto_errors += b.proto_errors;
    }

    all_lats.sort_unstable();
    last_lats.sort_unstable();
    let sum = |f: fn(&Node) -> usize| nodes.iter().map(f).sum::<usize>();
    let (failed, lost, dups, received) = (
        sum(|n| n.failed),
        sum(|n| n.lost),
        sum(|n| n.dups),
        sum(|n| n.received),
    );
    let dead = sum(|n| n.dead_workers);
    let n_all: usize = s.fleets.iter().map(|f| f.n).sum();
    let pass = failed == 0
        && up == n_all
        && lost == 0
        && dups == 0
        && closed == 0
        && proto_errors == 0
        && push_errors == 0
        && dead == 0;
    let per_delivery = |cpu: Option<u64>, n: usize| match cpu {
        Some(c) if n > 0 => format!("{:.2}", c as f64 / 1e3 / n as f64),
        _ => "na".into(),
    };
    let mut per_node = String::new();
    let mut nodes_cpu = Some(0u64);
    for (i, node) in nodes.iter_mut().enumerate() {
        node.lats.sort_unstable();
        nodes_cpu = nodes_cpu.zip(node.cpu_ns).map(|(a, b)| a + b);
        per_node.push_str(&format!(
            " node{i}_streams={} node{i}_deliveries={} node{i}_p50_ms={} node{i}_p99_ms={} node{i}_cpu_us_per_delivery={} node{i}_rss_per_stream_bytes={}",
            node.up,
            node.received,
            pct_ms(&node.lats, 50.0),
            pct_ms(&node.lats, 99.0),
            per_delivery(node.cpu_ns, node.received),
            whole(node.rss_per_stream),
        ));
    }
    println!(
        "SUMMARY transport={} nodes={} streams={n_all} up={up} failed={failed} pushes={} fanout_p50_ms={} fanout_p99_ms={} fanout_max_ms={} fanout_last_p50_ms={} fanout_last_max_ms={} deliveries={received} lost={lost} dups={dups} closed={closed} unexpected={unexpected} proto_errors={proto_errors} push_errors={push_errors}{per_node} nodes_cpu_us_per_delivery={} redis_cpu_us_per_push={} all_cpu_us_per_delivery={} rss_base_kib={} result={}",
        s.transport.name(),
        s.fleets.len(),
        s.pushes,
        pct_ms(&all_lats, 50.0),
        pct_ms(&all_lats, 99.0),
        pct_ms(&all_lats, 100.0),
        pct_ms(&last_lats, 50.0),
        pct_ms(&last_lats, 100.0),
        per_delivery(nodes_cpu, received),
        redis_cpu.map_or("na".into(), |v| format!("{:.1}", v / 1e3)),
        per_delivery(
            nodes_cpu.zip(redis_cpu).map(|(a, r)| a + (r * s.pushes as f64) as u64),
            received
        ),
        kib(rss_base[0]),
        verdict(pass)
    );
    Ok(if pass { 0 } else { 1 })
}
