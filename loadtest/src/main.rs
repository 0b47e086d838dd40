//! `tidings-load`: load client for the tidings server's Talk streams.
//!
//! Subcommands: `talk-idle` (many idle streams, RSS per stream, fan-out
//! latency), `talk-echo-check` (smoke test), and the hidden `worker` that
//! `talk-idle` starts in child processes. See README.md.

mod args;
mod chunked;
mod echo;
mod http;
mod idle;
mod sys;
mod worker;

const USAGE: &str = "usage: tidings-load <scenario> [options]

scenarios:
  talk-idle        open N idle Talk streams over P worker processes, measure the
                   server's RSS per stream and the fan-out latency of K pushes
  talk-echo-check  two streams and two pushes, checked byte for byte

run `tidings-load <scenario> --help` for the options of a scenario";

/// `nul` (default) or `newline`: the Talk record terminator.
pub fn parse_terminator(s: &str) -> Result<u8, String> {
    match s {
        "nul" | "null" | "zero" | "0" => Ok(0),
        "newline" | "nl" | "lf" => Ok(b'\n'),
        other => Err(format!("--terminator `{other}`: want `nul` or `newline`")),
    }
}

fn main() {
    sys::raise_nofile_limit();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match argv.first().map(String::as_str) {
        Some("talk-idle") => idle::run(&argv[1..]),
        Some("talk-echo-check") => echo::run(&argv[1..]),
        Some("worker") => worker::run(&argv[1..]),
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
