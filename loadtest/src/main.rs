//! `tidings-load`: load client for the tidings server.
//!
//! Subcommands: `talk-idle` (many idle streams, RSS per stream, fan-out
//! latency), `nchan-sub` (the same over nchan's `/sub/` API, one transport), `talk-echo-check` (smoke test), `qst` (QST producers and a
//! long-polling consumer, end to end), `comet-longpoll` (many comet clients,
//! put→delivery latency), `pipeline` (pipelined requests against round
//! trips, server CPU per request), `soak` (every protocol, clients leaving at
//! random, checks after the storm), `xmpp-idle` (many idle XMPP sessions, RSS
//! per session, login times), `xmpp-ping` (XEP-0199 round trips, server CPU per
//! round trip), `xmpp-fanout` (PubSub subscribers over XMPP beside Talk
//! streams: fan-out latency of one publish, exactly once), and the hidden `worker` / `comet-worker` / `soak-worker` /
//! `xmpp-worker` that `talk-idle` / `comet-longpoll` / `soak` / the XMPP
//! scenarios start in child processes. See README.md.

mod args;
mod bosh;
mod child;
mod chunked;
mod comet;
mod comet_worker;
mod echo;
mod fanout;
mod fleet;
mod hist;
mod http;
mod idle;
mod json;
mod measure;
mod nchan_sub;
mod nodes;
mod pipeline;
mod qst;
mod series;
mod soak;
mod soak_model;
mod soak_worker;
mod sys;
mod worker;
mod xmpp;
mod xmpp_fanout;
mod xmpp_load;
mod xmpp_worker;

const USAGE: &str = "usage: tidings-load <scenario> [options]

scenarios:
  talk-idle        open N idle Talk streams over P worker processes, measure the
                   server's RSS per stream and the fan-out latency of K pushes
  nchan-sub        the same over N subscribers of nchan's API (/sub/C, --transport
                   eventsource|websocket|longpoll), tidings or nginx + nchan alike
  nchan-nodes      nchan-sub over several nodes sharing one store (tidings --redis, nchan
                   with Redis): subscribers spread over them, publishes on one; per node
                   fan-out latency, deliveries and CPU per delivery
  talk-echo-check  two streams and two pushes, checked byte for byte
  qst              P producers push B batches of S messages to a QST queue while one
                   consumer long-polls and acknowledges; checks loss and duplicates
  comet-longpoll   N comet clients long-poll one channel while a publisher puts R
                   messages a second; checks every delivery, measures latency and RSS
  pipeline         N small requests pipelined on one connection, then N round trips
                   one at a time; checks every reply, the server's CPU per request
  soak             for N seconds thousands of clients of every protocol come and go at
                   random (RSTs, hang-ups mid-request, parked, streaming); checks no acked
                   QST message is lost or redelivered, the gauges and the RSS afterwards
  xmpp-idle        N authenticated, bound, idle XMPP sessions over P worker processes;
                   the server's RSS per session and the login times
  xmpp-ping        C XMPP clients each pinging the server (XEP-0199) one ping at a time:
                   round trips per second, p50/p99 latency, server CPU per round trip
  bosh-idle        xmpp-idle over BOSH (POST /http-bind): N bound sessions, each with one
                   request held by the server; the server's RSS per session
  xmpp-fanout      N XMPP PubSub subscribers and N Talk streams on one channel, K publishes:
                   p50/p99 from publish to the last byte read per transport, exactly once

run `tidings-load <scenario> --help` for the options of a scenario";

/// `nul` (default) or `newline`: the Talk record terminator.
pub fn parse_terminator(s: &str) -> Result<u8, String> {
    match s {
        "nul" | "null" | "zero" | "0" => Ok(0),
        "newline" | "nl" | "lf" => Ok(b'\n'),
        other => Err(format!("--terminator `{other}`: want `nul` or `newline`")),
    }
}

/// Runs a scenario: `--help` prints `usage`; options that `settings` rejects
/// print the error and `usage` (exit 2); otherwise `body`'s exit code, or 1
/// with the error it returns.
pub fn run_scenario<S>(
    name: &str,
    usage: &str,
    argv: &[String],
    settings: fn(&[String]) -> Result<S, String>,
    body: impl FnOnce(S) -> Result<i32, String>,
) -> i32 {
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return 0;
    }
    let s = match settings(argv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}\n{usage}");
            return 2;
        }
    };
    match body(s) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}

fn main() {
    sys::raise_nofile_limit();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match argv.first().map(String::as_str) {
        Some("talk-idle") => idle::run(&argv[1..]),
        Some("nchan-sub") => idle::run_sub(&argv[1..]),
        Some("nchan-nodes") => nodes::run(&argv[1..]),
        Some("talk-echo-check") => echo::run(&argv[1..]),
        Some("worker") => worker::run(&argv[1..]),
        Some("qst") => qst::run(&argv[1..]),
        Some("comet-longpoll") => comet::run(&argv[1..]),
        Some("comet-worker") => comet_worker::run(&argv[1..]),
        Some("pipeline") => pipeline::run(&argv[1..]),
        Some("soak") => soak::run(&argv[1..]),
        Some("soak-worker") => soak_worker::run(&argv[1..]),
        Some("xmpp-idle") => xmpp_load::run_idle(&argv[1..]),
        Some("xmpp-ping") => xmpp_load::run_ping(&argv[1..]),
        Some("bosh-idle") => xmpp_load::run_bosh_idle(&argv[1..]),
        Some("xmpp-fanout") => xmpp_fanout::run(&argv[1..]),
        Some("xmpp-worker") => xmpp_worker::run(&argv[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminators() {
        assert_eq!(parse_terminator("nul"), Ok(0));
        assert_eq!(parse_terminator("newline"), Ok(b'\n'));
        assert!(parse_terminator("crlf").is_err());
    }
}
