//! Every limit and timeout of the server: a named default, a command-line flag and a
//! `TIDINGS_*` environment variable (the flag wins). `--help` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;

/// The byte that ends a Talk record (PROTOCOLS.md 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminator {
    Nul,
    Newline,
}

impl Terminator {
    pub fn byte(self) -> u8 {
        match self {
            Terminator::Nul => 0,
            Terminator::Newline => b'\n',
        }
    }
}

/// The server's settings. `Config::default()` is what `tidings` with no arguments runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_connections: usize,
    pub long_poll_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub talk_keepalive: Duration,
    pub talk_terminator: Terminator,
    /// Hold a Talk stream's records this long so a burst leaves as one chunk (0: send at once).
    pub talk_coalesce: Duration,
    pub channel_capacity: usize,
    pub channel_bytes: usize,
    pub channel_idle: Duration,
    pub max_channels: usize,
    pub queue_capacity: usize,
    pub queue_bytes: usize,
    pub qst_max_tries: u32,
    pub comet_max_messages: usize,
    pub max_message_bytes: usize,
    pub max_body_bytes: usize,
    pub max_head_bytes: usize,
    pub max_output_bytes: usize,
    pub max_streams_per_channel: usize,
    pub shutdown_grace: Duration,
    pub credentials: Option<PathBuf>,
    pub cors_origin: String,
    pub log_level: Level,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 100_000,
            long_poll_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            talk_keepalive: Duration::from_secs(5),
            talk_terminator: Terminator::Nul,
            talk_coalesce: Duration::ZERO,
            channel_capacity: 1024,
            channel_bytes: 4 << 20,
            channel_idle: Duration::from_secs(300),
            max_channels: 1_000_000,
            queue_capacity: 10_000,
            queue_bytes: 64 << 20,
            qst_max_tries: 0,
            comet_max_messages: 100,
            max_message_bytes: 64 << 10,
            max_body_bytes: 1 << 20,
            max_head_bytes: 16 << 10,
            max_output_bytes: 1 << 20,
            max_streams_per_channel: 100_000,
            shutdown_grace: Duration::from_secs(5),
            credentials: None,
            cors_origin: "*".to_string(),
            log_level: Level::Info,
        }
    }
}

/// One line of `--help`: flag, value name, meaning. The default is printed from `Config`.
const FLAGS: &[(&str, &str, &str)] = &[
    ("listen", "ADDR", "address to serve on"),
    (
        "workers",
        "N",
        "reactor threads (1..=64); default: number of CPUs",
    ),
    (
        "max-connections",
        "N",
        "beyond it new connections are refused",
    ),
    (
        "long-poll-timeout",
        "SECS",
        "QST long-poll and comet get hold time",
    ),
    (
        "idle-timeout",
        "SECS",
        "keep-alive connection with no request is closed",
    ),
    (
        "header-timeout",
        "SECS",
        "a request head or body must arrive within this",
    ),
    (
        "talk-keepalive",
        "SECS",
        "noop interval on quiet Talk streams",
    ),
    ("talk-terminator", "nul|newline", "Talk record terminator"),
    ("channel-capacity", "N", "retained messages per channel"),
    ("channel-bytes", "N", "retained bytes per channel"),
    (
        "channel-idle",
        "SECS",
        "an empty channel with no subscriber is removed after this",
    ),
    (
        "max-channels",
        "N",
        "channels in the hub; creating more answers 503",
    ),
    (
        "queue-capacity",
        "N",
        "unacknowledged messages per QST queue before pushes get 503",
    ),
    (
        "queue-bytes",
        "N",
        "bytes a QST queue channel may hold before pushes get 503",
    ),
    (
        "qst-max-tries",
        "N",
        "deliveries of an unacknowledged QST message before it is dropped (0: no cap)",
    ),
    ("comet-max-messages", "N", "messages in one comet get reply"),
    ("max-message-bytes", "N", "one message"),
    ("max-body-bytes", "N", "one request body"),
    ("max-head-bytes", "N", "one request head"),
    (
        "max-output-bytes",
        "N",
        "bytes queued to one slow reader before it is closed",
    ),
    (
        "max-streams-per-channel",
        "N",
        "Talk streams and parked requests on one channel",
    ),
    (
        "shutdown-grace",
        "SECS",
        "time to flush final bytes on shutdown",
    ),
    ("credentials", "FILE", "users and the channels they may use"),
    ("cors-origin", "ORIGIN", "Access-Control-Allow-Origin"),
    ("log-level", "error|warn|info|debug", "what goes to stderr"),
];

impl Config {
    /// The value of a flag, as `--help` shows it.
    fn show(&self, flag: &str) -> String {
        let secs = |d: &Duration| d.as_secs().to_string();
        match flag {
            "listen" => self.listen.to_string(),
            "workers" => self.workers.to_string(),
            "max-connections" => self.max_connections.to_string(),
            "long-poll-timeout" => secs(&self.long_poll_timeout),
            "idle-timeout" => secs(&self.idle_timeout),
            "header-timeout" => secs(&self.header_timeout),
            "talk-keepalive" => secs(&self.talk_keepalive),
            "talk-terminator" => match self.talk_terminator {
                Terminator::Nul => "nul".into(),
                Terminator::Newline => "newline".into(),
            },
            "channel-capacity" => self.channel_capacity.to_string(),
            "channel-bytes" => self.channel_bytes.to_string(),
            "channel-idle" => secs(&self.channel_idle),
            "max-channels" => self.max_channels.to_string(),
            "queue-capacity" => self.queue_capacity.to_string(),
            "queue-bytes" => self.queue_bytes.to_string(),
            "qst-max-tries" => self.qst_max_tries.to_string(),
            "comet-max-messages" => self.comet_max_messages.to_string(),
            "max-message-bytes" => self.max_message_bytes.to_string(),
            "max-body-bytes" => self.max_body_bytes.to_string(),
            "max-head-bytes" => self.max_head_bytes.to_string(),
            "max-output-bytes" => self.max_output_bytes.to_string(),
            "max-streams-per-channel" => self.max_streams_per_channel.to_string(),
            "shutdown-grace" => secs(&self.shutdown_grace),
            "credentials" => self
                .credentials
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
            "cors-origin" => self.cors_origin.clone(),
            "log-level" => self.log_level.name().into(),
            _ => String::new(),
        }
    }

    /// Sets one flag from its text value.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        fn num(flag: &str, v: &str) -> Result<usize, String> {
            v.parse::<usize>()
                .map_err(|_| format!("--{flag}: expected a non-negative integer, got {v:?}"))
        }
        fn secs(flag: &str, v: &str) -> Result<Duration, String> {
            let n: f64 = v
                .parse()
                .map_err(|_| format!("--{flag}: expected seconds, got {v:?}"))?;
            if !(n > 0.0 && n < 1e9) {
                return Err(format!("--{flag}: must be more than 0 seconds"));
            }
            Ok(Duration::from_secs_f64(n))
        }
        fn positive(flag: &str, v: &str) -> Result<usize, String> {
            match num(flag, v)? {
                0 => Err(format!("--{flag}: must be at least 1")),
                n => Ok(n),
            }
        }
        match flag {
            "listen" => {
                self.listen = value
                    .parse()
                    .map_err(|_| format!("--listen: expected IP:PORT, got {value:?}"))?
            }
            "workers" => {
                let n = positive(flag, value)?;
                if n > crate::hub::MAX_WORKERS {
                    return Err(format!("--workers: at most {}", crate::hub::MAX_WORKERS));
                }
                self.workers = n;
            }
            "max-connections" => self.max_connections = positive(flag, value)?,
            "long-poll-timeout" => self.long_poll_timeout = secs(flag, value)?,
            "idle-timeout" => self.idle_timeout = secs(flag, value)?,
            "header-timeout" => self.header_timeout = secs(flag, value)?,
            "talk-keepalive" => self.talk_keepalive = secs(flag, value)?,
            "talk-terminator" => {
                self.talk_terminator = match value {
                    "nul" => Terminator::Nul,
                    "newline" => Terminator::Newline,
                    _ => return Err(format!("--talk-terminator: nul or newline, got {value:?}")),
                }
            }
            "channel-capacity" => self.channel_capacity = positive(flag, value)?,
            "channel-bytes" => self.channel_bytes = positive(flag, value)?,
            "channel-idle" => self.channel_idle = secs(flag, value)?,
            "max-channels" => self.max_channels = positive(flag, value)?,
            "queue-capacity" => self.queue_capacity = positive(flag, value)?,
            "queue-bytes" => self.queue_bytes = positive(flag, value)?,
            "qst-max-tries" => {
                self.qst_max_tries = u32::try_from(num(flag, value)?)
                    .map_err(|_| "--qst-max-tries: too large".to_string())?
            }
            "comet-max-messages" => self.comet_max_messages = positive(flag, value)?,
            "max-message-bytes" => self.max_message_bytes = positive(flag, value)?,
            "max-body-bytes" => self.max_body_bytes = positive(flag, value)?,
            "max-head-bytes" => {
                let n = positive(flag, value)?;
                if n < 256 {
                    return Err("--max-head-bytes: at least 256".into());
                }
                self.max_head_bytes = n;
            }
            "max-output-bytes" => self.max_output_bytes = positive(flag, value)?,
            "max-streams-per-channel" => self.max_streams_per_channel = positive(flag, value)?,
            "shutdown-grace" => self.shutdown_grace = secs(flag, value)?,
            "credentials" => self.credentials = Some(PathBuf::from(value)),
            "cors-origin" => {
                if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return Err("--cors-origin: control characters are not allowed".into());
                }
                self.cors_origin = value.to_string()
            }
            "log-level" => {
                self.log_level = Level::parse(value).ok_or_else(|| {
                    format!("--log-level: error, warn, info or debug, got {value:?}")
                })?
            }
            _ => return Err(format!("unknown flag --{flag} (see --help)")),
        }
        Ok(())
    }

    /// Builds the configuration from `TIDINGS_*` variables, then the arguments (without the
    /// program name). `Ok(None)` means `--help` was asked for and printed.
    pub fn from_args_and_env(
        args: impl IntoIterator<Item = String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Option<Config>, String> {
        let mut config = Config::default();
        for (key, value) in env {
            if let Some(name) = key.strip_prefix("TIDINGS_") {
                let flag = name.to_ascii_lowercase().replace('_', "-");
                if FLAGS.iter().any(|(f, _, _)| *f == flag) {
                    config
                        .set(&flag, &value)
                        .map_err(|e| format!("{key}: {e}"))?;
                }
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                print!("{}", config.help());
                return Ok(None);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?} (see --help)"));
            };
            let (flag, value) = match flag.split_once('=') {
                Some((f, v)) => (f.to_string(), v.to_string()),
                None => {
                    let v = args
                        .next()
                        .ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), v)
                }
            };
            config.set(&flag, &value)?;
        }
        Ok(Some(config))
    }

    /// The `--help` text: every flag with its value name, default and meaning.
    pub fn help(&self) -> String {
        let mut s = String::from(
            "tidings: a message relay for QST, Simple Comet and Talk clients over HTTP\n\n\
             usage: tidings [--flag VALUE]...\n\
             Each flag can also be set as TIDINGS_<FLAG> (upper case, - as _).\n\n",
        );
        for (flag, value, meaning) in FLAGS {
            let left = format!("  --{flag} {value}");
            s.push_str(&format!(
                "{left:<44} {meaning} [default: {}]\n",
                Config::default().show(flag)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Config>, String> {
        Config::from_args_and_env(args.iter().map(|s| s.to_string()), Vec::new())
    }

    #[test]
    fn defaults_serve_on_8080() {
        let c = parse(&[]).unwrap().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.long_poll_timeout, Duration::from_secs(25));
        assert_eq!(c.talk_terminator, Terminator::Nul);
    }

    #[test]
    fn flags_and_env() {
        let c = Config::from_args_and_env(
            ["--workers", "3", "--talk-terminator=newline"].map(String::from),
            [("TIDINGS_CHANNEL_CAPACITY".to_string(), "7".to_string())],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.channel_capacity, 7);
        assert_eq!(c.talk_terminator, Terminator::Newline);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--workers", "0"]).is_err());
        assert!(parse(&["--workers", "65"]).is_err());
        assert!(parse(&["--nope", "1"]).is_err());
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--idle-timeout", "-1"]).is_err());
        assert!(parse(&["--talk-terminator", "tab"]).is_err());
    }

    #[test]
    fn help_lists_every_flag() {
        let help = Config::default().help();
        for (flag, _, _) in FLAGS {
            assert!(help.contains(&format!("--{flag} ")), "{flag}");
            assert!(!Config::default().show(flag).is_empty() || *flag == "cors-origin");
        }
    }
}
