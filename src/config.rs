//! Every limit and timeout of the server: a named default, a command-line flag and a
//! `TIDINGS_*` environment variable (the flag wins). `--help` lists them all.
//!
//! Each flag is one row of the `config!` table below (STYLE rule 14): the row declares the
//! `Config` field, its default, the flag's name and value name, its help text and the
//! [`Kind`] that parses and shows it. The parser, `--help`, the `TIDINGS_*` variables and
//! the README's flags table (checked by a test) are all made from that table, so adding a
//! flag is one edit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;
use crate::storage::Fsync;

/// The byte that ends a Talk record (PROTOCOLS.md 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminator {
    Nul,
    Newline,
}

/// Where an nchan subscriber with no cursor starts (NCHAN.md 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstMessage {
    /// With the oldest retained message (nchan's default).
    Oldest,
    /// With the next message published.
    Newest,
}

impl Terminator {
    pub fn byte(self) -> u8 {
        match self {
            Terminator::Nul => 0,
            Terminator::Newline => b'\n',
        }
    }
}

/// One row of the flag table: what the parser, `--help`, the `TIDINGS_*` variables and the
/// README table are made from. `set` and `show` work on the row's own `Config` field.
pub struct Flag {
    /// The flag without its `--`; `TIDINGS_` + upper case with `_` for `-` in the environment.
    pub name: &'static str,
    /// What the value looks like in `--help` (`N`, `SECS`, `nul|newline`…).
    pub value: &'static str,
    /// The meaning, in Markdown (backticks are dropped in `--help`).
    pub help: &'static str,
    /// The default as the documentation states it, for a default that depends on the
    /// machine; otherwise the default is shown from `Config::default()`.
    pub default_doc: Option<&'static str>,
    /// Parses a value into the field. The error names no flag: `Config::set` adds it.
    pub set: fn(&mut Config, &str) -> Result<(), String>,
    /// The field's value as a flag would give it.
    pub show: fn(&Config) -> String,
}

/// How a flag's text becomes a field of type `T`, and back. Errors name no flag.
pub struct Kind<T> {
    pub parse: fn(&str) -> Result<T, String>,
    pub show: fn(&T) -> String,
}

/// Declares `Config`, its `Default` and the `FLAGS` table from one row per flag:
///
/// ```text
/// field: Type = default => { flag: "name", value: "VALUE", kind: KIND, help: "meaning" },
/// ```
///
/// with an optional `default_doc: "…"` after `help` for a default that depends on the machine.
macro_rules! config {
    ($(
        $field:ident: $ty:ty = $default:expr => {
            flag: $flag:literal,
            value: $value:literal,
            kind: $kind:expr,
            help: $help:literal
            $(, default_doc: $doc:literal)? $(,)?
        }
    ),* $(,)?) => {
        /// The server's settings. `Config::default()` is what `tidings` with no arguments
        /// runs. Each field is set by the flag named in its row of the table in `config.rs`.
        #[derive(Clone, Debug)]
        pub struct Config {
            $(#[doc = $help] pub $field: $ty,)*
        }

        impl Default for Config {
            fn default() -> Config {
                Config { $($field: $default,)* }
            }
        }

        /// Every flag, in `--help` order.
        pub const FLAGS: &[Flag] = &[$(
            Flag {
                name: $flag,
                value: $value,
                help: $help,
                default_doc: config!(@opt $($doc)?),
                set: |c, v| {
                    c.$field = ($kind.parse)(v)?;
                    Ok(())
                },
                show: |c| ($kind.show)(&c.$field),
            },
        )*];
    };
    (@opt) => { None };
    (@opt $doc:literal) => { Some($doc) };
}

config! {
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)) => {
        flag: "listen", value: "ADDR", kind: ADDR,
        help: "address to serve on",
    },
    xmpp_listen: Option<SocketAddr> = Some(SocketAddr::from(([127, 0, 0, 1], 5222))) => {
        flag: "xmpp-listen", value: "ADDR|off", kind: ADDR_OR_OFF,
        help: "address of the XMPP client listener (Message); `off` disables it",
    },
    xmpp_domain: String = "localhost".to_string() => {
        flag: "xmpp-domain", value: "NAME", kind: DOMAIN,
        help: "the XMPP domain (JIDs are `user@NAME`)",
    },
    workers: usize = std::thread::available_parallelism().map_or(1, |n| n.get()) => {
        flag: "workers", value: "N", kind: WORKERS,
        help: "reactor threads (1 to 64)",
        default_doc: "number of CPUs",
    },
    max_connections: usize = 100_000 => {
        flag: "max-connections", value: "N", kind: POSITIVE,
        help: "beyond it new connections get `503` and are closed",
    },
    long_poll_timeout: Duration = Duration::from_secs(25) => {
        flag: "long-poll-timeout", value: "SECS", kind: SECS,
        help: "QST long-poll and comet `get` hold time, and the longest BOSH `wait`",
    },
    idle_timeout: Duration = Duration::from_secs(60) => {
        flag: "idle-timeout", value: "SECS", kind: SECS,
        help: "keep-alive connection with no request is closed",
    },
    header_timeout: Duration = Duration::from_secs(10) => {
        flag: "header-timeout", value: "SECS", kind: SECS,
        help: "a request head and body must arrive within this",
    },
    talk_keepalive: Duration = Duration::from_secs(5) => {
        flag: "talk-keepalive", value: "SECS", kind: SECS,
        help: "`noop` interval on quiet Talk streams",
    },
    talk_terminator: Terminator = Terminator::Nul => {
        flag: "talk-terminator", value: "nul|newline", kind: TERMINATOR,
        help: "Talk record terminator",
    },
    talk_coalesce: Duration = Duration::ZERO => {
        flag: "talk-coalesce-ms", value: "N", kind: MILLIS,
        help: "hold a Talk stream's records this long so a burst leaves as one chunk (for \
               clients that keep only the first chunk of each read, such as rupy's C# \
               client); 0 sends at once",
    },
    channel_capacity: usize = 1024 => {
        flag: "channel-capacity", value: "N", kind: POSITIVE,
        help: "retained messages per channel",
    },
    channel_bytes: usize = 4 << 20 => {
        flag: "channel-bytes", value: "N", kind: POSITIVE,
        help: "retained bytes per channel",
    },
    channel_idle: Duration = Duration::from_secs(300) => {
        flag: "channel-idle", value: "SECS", kind: SECS,
        help: "an empty channel with no subscriber is removed after this",
    },
    channel_ttl: Duration = Duration::from_secs(3600) => {
        flag: "channel-ttl", value: "SECS", kind: SECS,
        help: "retained messages older than this are dropped (not those a QST queue still \
               holds), as nchan's `message_timeout`; a channel left empty is then removed \
               like any idle one",
    },
    retained_bytes: usize = 256 << 20 => {
        flag: "retained-bytes", value: "N", kind: POSITIVE,
        help: "retained messages of all channels together, each counted as its bytes plus \
               256; past it the oldest messages of non-queue channels are dropped first, \
               and when only unacknowledged queue messages are left publishes get `503`",
    },
    max_channels: usize = 1_000_000 => {
        flag: "max-channels", value: "N", kind: POSITIVE,
        help: "channels in the hub; creating more answers `503`",
    },
    queue_capacity: usize = 10_000 => {
        flag: "queue-capacity", value: "N", kind: POSITIVE,
        help: "unacknowledged messages per QST queue before pushes get `503`",
    },
    queue_bytes: usize = 64 << 20 => {
        flag: "queue-bytes", value: "N", kind: POSITIVE,
        help: "bytes a QST queue channel may hold before pushes get `503`",
    },
    qst_max_tries: u32 = 0 => {
        flag: "qst-max-tries", value: "N", kind: TRIES,
        help: "deliveries of an unacknowledged QST message before it is dropped (0: no cap)",
    },
    comet_max_messages: usize = 100 => {
        flag: "comet-max-messages", value: "N", kind: POSITIVE,
        help: "messages in one comet `get` answer",
    },
    max_message_bytes: usize = 64 << 10 => {
        flag: "max-message-bytes", value: "N", kind: POSITIVE,
        help: "one message (`413` past it)",
    },
    max_body_bytes: usize = 1 << 20 => {
        flag: "max-body-bytes", value: "N", kind: POSITIVE,
        help: "one request body (`413` past it)",
    },
    max_head_bytes: usize = 16 << 10 => {
        flag: "max-head-bytes", value: "N", kind: HEAD_BYTES,
        help: "one request head (`431` past it)",
    },
    max_output_bytes: usize = 1 << 20 => {
        flag: "max-output-bytes", value: "N", kind: POSITIVE,
        help: "bytes queued to one slow reader before it is closed",
    },
    stream_send_buffer: usize = 65536 => {
        flag: "stream-send-buffer", value: "N", kind: POSITIVE,
        help: "the kernel send buffer (`SO_SNDBUF`) of a streaming connection, so that \
               `--max-output-bytes` bounds what a reader that stopped reading holds",
    },
    admin_connections: usize = 16 => {
        flag: "admin-connections", value: "N", kind: COUNT,
        help: "connections past `--max-connections` kept for `/health` and `/metrics` \
               (any other request on them gets `503`); 0: refuse at once",
    },
    nchan_first_message: FirstMessage = FirstMessage::Oldest => {
        flag: "nchan-first-message", value: "oldest|newest", kind: FIRST,
        help: "where an nchan `/sub/` subscriber with no cursor starts: the oldest retained \
               message, or the next one published",
    },
    nchan_subscriber_timeout: Duration = Duration::ZERO => {
        flag: "nchan-subscriber-timeout", value: "SECS", kind: SECS_OR_NEVER,
        help: "an nchan `/sub/` subscriber waiting this long gets `408` (0: never, as nchan)",
    },
    bosh_inactivity: Duration = Duration::from_secs(60) => {
        flag: "bosh-inactivity", value: "SECS", kind: SECS,
        help: "a BOSH session with no request for this long ends (its `inactivity`)",
    },
    max_bosh_sessions: usize = 10_000 => {
        flag: "max-bosh-sessions", value: "N", kind: POSITIVE,
        help: "BOSH sessions at once (a new session request past it gets `503`)",
    },
    max_streams_per_channel: usize = 100_000 => {
        flag: "max-streams-per-channel", value: "N", kind: POSITIVE,
        help: "Talk streams and parked requests on one channel (`503` past it)",
    },
    shutdown_grace: Duration = Duration::from_secs(5) => {
        flag: "shutdown-grace", value: "SECS", kind: SECS,
        help: "time to flush final bytes on shutdown",
    },
    data_dir: Option<PathBuf> = None => {
        flag: "data-dir", value: "DIR", kind: FILE,
        help: "keep the hub (channels, queues and their acknowledgements, clocks, v1 \
               addresses) in an append-only log in DIR, replayed at start; none keeps \
               everything in memory only",
    },
    fsync: Fsync = Fsync::Always => {
        flag: "fsync", value: "always|interval|never", kind: FSYNC,
        help: "with `--data-dir`, when a push is answered: `always` once its record is on \
               disk (one `fdatasync` shared by every push meanwhile; subscribers hear of it \
               then too); `interval` at once, the log written and synced every 100 ms \
               (a crash of the machine loses at most the pushes of the last 100 ms and of \
               the sync under way); `never` at once, syncing left to the \
               OS (survives tidings dying, not the machine)",
    },
    log_segment_bytes: usize = 64 << 20 => {
        flag: "log-segment-bytes", value: "N", kind: POSITIVE,
        help: "with `--data-dir`, a log segment is closed and a new one begun past this size",
    },
    log_compact_bytes: usize = 64 << 20 => {
        flag: "log-compact-bytes", value: "N", kind: POSITIVE,
        help: "with `--data-dir`, the log is compacted (a snapshot written, older segments \
               removed) once this much was logged since the last snapshot and more than the \
               snapshot's size",
    },
    log_buffer_bytes: usize = 64 << 20 => {
        flag: "log-buffer-bytes", value: "N", kind: POSITIVE,
        help: "with `--data-dir`, log bytes appended and not yet written; past it changes get \
               `503`",
    },
    redis: Option<crate::redis::Url> = None => {
        flag: "redis", value: "URL", kind: REDIS,
        help: "`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`: keep channels and QST queues in \
               this Redis, shared with every node given the same URL (a message published on \
               any node reaches the subscribers of all, with one `seq`); none keeps them in \
               this process. Not with `--data-dir`",
    },
    credentials: Option<PathBuf> = None => {
        flag: "credentials", value: "FILE", kind: FILE,
        help: "users and the channels they may use",
    },
    cors_origin: String = "*".to_string() => {
        flag: "cors-origin", value: "ORIGIN", kind: ORIGIN,
        help: "`Access-Control-Allow-Origin`",
    },
    log_level: Level = Level::Info => {
        flag: "log-level", value: "error|warn|info|debug", kind: LEVEL,
        help: "what goes to stderr",
    },
}

/// A non-negative integer.
fn num(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .map_err(|_| format!("expected a non-negative integer, got {v:?}"))
}

/// An integer of at least 1.
fn positive(v: &str) -> Result<usize, String> {
    match num(v)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn show_num<T: ToString>(n: &T) -> String {
    n.to_string()
}

const COUNT: Kind<usize> = Kind {
    parse: num,
    show: show_num,
};

const ADDR_OR_OFF: Kind<Option<SocketAddr>> = Kind {
    parse: |v| {
        if v == "off" {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("expected IP:PORT or off, got {v:?}"))
    },
    show: |v| v.map_or("off".to_string(), |a| a.to_string()),
};

const DOMAIN: Kind<String> = Kind {
    parse: |v| {
        let ok = !v.is_empty()
            && v.len() <= 255
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if ok {
            Ok(v.to_ascii_lowercase())
        } else {
            Err(format!(
                "expected a domain name (letters, digits, '.', '-'), got {v:?}"
            ))
        }
    },
    show: |v| v.clone(),
};

const ADDR: Kind<SocketAddr> = Kind {
    parse: |v| {
        v.parse()
            .map_err(|_| format!("expected IP:PORT, got {v:?}"))
    },
    show: show_num,
};

const POSITIVE: Kind<usize> = Kind {
    parse: positive,
    show: show_num,
};

const WORKERS: Kind<usize> = Kind {
    parse: |v| match positive(v)? {
        n if n > crate::hub::MAX_WORKERS => Err(format!("at most {}", crate::hub::MAX_WORKERS)),
        n => Ok(n),
    },
    show: show_num,
};

const HEAD_BYTES: Kind<usize> = Kind {
    parse: |v| match positive(v)? {
        n if n < 256 => Err("at least 256".into()),
        n => Ok(n),
    },
    show: show_num,
};

const TRIES: Kind<u32> = Kind {
    parse: |v| u32::try_from(num(v)?).map_err(|_| "too large".to_string()),
    show: show_num,
};

/// Seconds, fractions allowed, more than 0 and under 10⁹.
const SECS: Kind<Duration> = Kind {
    parse: |v| {
        let n: f64 = v
            .parse()
            .map_err(|_| format!("expected seconds, got {v:?}"))?;
        if !(n > 0.0 && n < 1e9) {
            return Err("must be more than 0 seconds".into());
        }
        Ok(Duration::from_secs_f64(n))
    },
    show: |d| match d.subsec_nanos() {
        0 => d.as_secs().to_string(),
        _ => d.as_secs_f64().to_string(),
    },
};

/// Whole milliseconds, 0 allowed, under 10⁹ seconds (like `SECS`).
const MILLIS: Kind<Duration> = Kind {
    parse: |v| match num(v)? {
        n if n >= 1_000_000_000_000 => Err("must be under 1000000000000 ms".into()),
        n => Ok(Duration::from_millis(n as u64)),
    },
    show: |d| d.as_millis().to_string(),
};

const FSYNC: Kind<Fsync> = Kind {
    parse: Fsync::parse,
    show: |f| f.name().into(),
};

const TERMINATOR: Kind<Terminator> = Kind {
    parse: |v| match v {
        "nul" => Ok(Terminator::Nul),
        "newline" => Ok(Terminator::Newline),
        _ => Err(format!("nul or newline, got {v:?}")),
    },
    show: |t| match t {
        Terminator::Nul => "nul".into(),
        Terminator::Newline => "newline".into(),
    },
};

const FIRST: Kind<FirstMessage> = Kind {
    parse: |v| match v {
        "oldest" => Ok(FirstMessage::Oldest),
        "newest" => Ok(FirstMessage::Newest),
        _ => Err(format!("oldest or newest, got {v:?}")),
    },
    show: |t| match t {
        FirstMessage::Oldest => "oldest".into(),
        FirstMessage::Newest => "newest".into(),
    },
};

/// Whole seconds, 0 allowed (0: never).
const SECS_OR_NEVER: Kind<Duration> = Kind {
    parse: |v| match num(v)? {
        n if n >= 1_000_000_000 => Err("must be under 1000000000 s".into()),
        n => Ok(Duration::from_secs(n as u64)),
    },
    show: |d| d.as_secs().to_string(),
};

const REDIS: Kind<Option<crate::redis::Url>> = Kind {
    parse: |v| match v {
        "none" => Ok(None),
        _ => crate::redis::Url::parse(v).map(Some),
    },
    show: |u| u.as_ref().map_or("none".into(), |u| u.to_string()),
};

const FILE: Kind<Option<PathBuf>> = Kind {
    parse: |v| Ok(Some(PathBuf::from(v))),
    show: |p| {
        p.as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    },
};

/// A header value: no control characters.
const ORIGIN: Kind<String> = Kind {
    parse: |v| match v.bytes().any(|b| b < 0x20 || b == 0x7f) {
        true => Err("control characters are not allowed".into()),
        false => Ok(v.to_string()),
    },
    show: |s| s.clone(),
};

const LEVEL: Kind<Level> = Kind {
    parse: |v| Level::parse(v).ok_or_else(|| format!("error, warn, info or debug, got {v:?}")),
    show: |l| l.name().into(),
};

/// The row of a flag, by name (without `--`).
pub fn flag(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

impl Flag {
    /// The default as `--help` and the README state it.
    pub fn default_text(&self) -> String {
        match self.default_doc {
            Some(doc) => doc.to_string(),
            None => (self.show)(&Config::default()),
        }
    }
}

impl Config {
    /// Sets one flag from its text value. The error names the flag (`--workers: at most 64`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let flag = flag(name).ok_or_else(|| format!("unknown flag --{name} (see --help)"))?;
        (flag.set)(self, value).map_err(|e| format!("--{name}: {e}"))
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
                let name = name.to_ascii_lowercase().replace('_', "-");
                if flag(&name).is_some() {
                    config
                        .set(&name, &value)
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
        let default = Config::default();
        for f in FLAGS {
            let left = format!("  --{} {}", f.name, f.value);
            let shown = match f.default_doc {
                Some(doc) => format!("{doc}, here {}", (f.show)(&default)),
                None => (f.show)(&default),
            };
            s.push_str(&format!(
                "{left:<44} {} [default: {shown}]\n",
                f.help.replace('`', "")
            ));
        }
        s
    }

    /// The README's flags table (Markdown), made from `FLAGS`; a test keeps README.md equal
    /// to it.
    pub fn markdown_table() -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let mut s = String::from("| flag | default | meaning |\n|---|---|---|\n");
        for f in FLAGS {
            let default = f.default_text();
            let default = if f.default_doc.is_some()
                || default == "none"
                || default.bytes().all(|b| b.is_ascii_digit())
            {
                default
            } else {
                format!("`{default}`")
            };
            s.push_str(&format!(
                "| `--{} {}` | {} | {} |\n",
                f.name,
                cell(f.value),
                cell(&default),
                cell(f.help)
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
        assert_eq!(c.talk_coalesce, Duration::ZERO);
    }

    #[test]
    fn defaults_are_unchanged() {
        let c = Config::default();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.workers, cpus);
        assert_eq!(
            (c.max_connections, c.channel_capacity, c.channel_bytes),
            (100_000, 1024, 4 << 20)
        );
        assert_eq!(
            (
                c.max_channels,
                c.queue_capacity,
                c.queue_bytes,
                c.qst_max_tries
            ),
            (1_000_000, 10_000, 64 << 20, 0)
        );
        assert_eq!(
            (c.comet_max_messages, c.max_message_bytes, c.max_body_bytes),
            (100, 64 << 10, 1 << 20)
        );
        assert_eq!(
            (
                c.max_head_bytes,
                c.max_output_bytes,
                c.max_streams_per_channel
            ),
            (16 << 10, 1 << 20, 100_000)
        );
        let secs = Duration::from_secs;
        assert_eq!(
            (c.idle_timeout, c.header_timeout, c.talk_keepalive),
            (secs(60), secs(10), secs(5))
        );
        assert_eq!((c.channel_idle, c.shutdown_grace), (secs(300), secs(5)));
        assert_eq!(c.credentials, None);
        assert_eq!(c.cors_origin, "*");
        assert_eq!(c.log_level, Level::Info);
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
    fn flag_wins_over_env() {
        let env = [
            ("TIDINGS_WORKERS".to_string(), "5".to_string()),
            ("TIDINGS_TALK_COALESCE_MS".to_string(), "20".to_string()),
            ("TIDINGS_NOT_A_FLAG".to_string(), "x".to_string()),
        ];
        let c = Config::from_args_and_env(["--workers=2"].map(String::from), env)
            .unwrap()
            .unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.talk_coalesce, Duration::from_millis(20));
        let e = Config::from_args_and_env(
            Vec::new(),
            [("TIDINGS_WORKERS".to_string(), "0".to_string())],
        )
        .unwrap_err();
        assert_eq!(e, "TIDINGS_WORKERS: --workers: must be at least 1");
    }

    #[test]
    fn talk_coalesce_ms() {
        let c = parse(&["--talk-coalesce-ms", "15"]).unwrap().unwrap();
        assert_eq!(c.talk_coalesce, Duration::from_millis(15));
        let c = parse(&["--talk-coalesce-ms=0"]).unwrap().unwrap();
        assert_eq!(c.talk_coalesce, Duration::ZERO);
        assert_eq!(
            parse(&["--talk-coalesce-ms", "1.5"]).unwrap_err(),
            "--talk-coalesce-ms: expected a non-negative integer, got \"1.5\""
        );
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
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--workers", "0"], "--workers: must be at least 1"),
            (&["--workers", "65"], "--workers: at most 64"),
            (&["--nope", "1"], "unknown flag --nope (see --help)"),
            (&["--listen"], "--listen needs a value"),
            (&["listen"], "unexpected argument \"listen\" (see --help)"),
            (&["--listen", "x"], "--listen: expected IP:PORT, got \"x\""),
            (
                &["--max-connections", "-3"],
                "--max-connections: expected a non-negative integer, got \"-3\"",
            ),
            (
                &["--idle-timeout", "x"],
                "--idle-timeout: expected seconds, got \"x\"",
            ),
            (
                &["--idle-timeout", "-1"],
                "--idle-timeout: must be more than 0 seconds",
            ),
            (
                &["--talk-terminator", "tab"],
                "--talk-terminator: nul or newline, got \"tab\"",
            ),
            (
                &["--qst-max-tries", "4294967296"],
                "--qst-max-tries: too large",
            ),
            (
                &["--max-head-bytes", "255"],
                "--max-head-bytes: at least 256",
            ),
            (
                &["--cors-origin", "a\nb"],
                "--cors-origin: control characters are not allowed",
            ),
            (
                &["--log-level", "loud"],
                "--log-level: error, warn, info or debug, got \"loud\"",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args).unwrap_err(), *want, "{args:?}");
        }
    }

    #[test]
    fn every_flag_round_trips_its_default() {
        let default = Config::default();
        for f in FLAGS {
            let shown = (f.show)(&default);
            assert!(!shown.is_empty(), "{}", f.name);
            if f.name == "credentials" {
                continue; // "none" is how the absence is shown, not a value to set
            }
            let mut c = Config::default();
            c.set(f.name, &shown).unwrap();
            assert_eq!((f.show)(&c), shown, "{}", f.name);
        }
        let names: std::collections::HashSet<_> = FLAGS.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FLAGS.len(), "a flag is listed twice");
    }

    #[test]
    fn help_lists_every_flag() {
        let help = Config::default().help();
        for f in FLAGS {
            let line = help
                .lines()
                .find(|l| l.starts_with(&format!("  --{} ", f.name)))
                .unwrap_or_else(|| panic!("--{} is not in --help", f.name));
            assert!(
                line.contains(&format!("[default: {}", f.default_text())),
                "{line}"
            );
            assert!(!line.contains('`'), "{line}");
        }
    }

    /// README.md's flags table is `Config::markdown_table()`, row for row. To update it after
    /// adding a flag, run this test with `UPDATE_README=1`.
    #[test]
    fn readme_flags_table_matches_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let want = Config::markdown_table();
        let start = readme
            .find("| flag | default | meaning |\n")
            .expect("README.md has a flags table");
        let len = readme[start..]
            .split_inclusive('\n')
            .take_while(|l| l.starts_with('|'))
            .map(str::len)
            .sum::<usize>();
        let have = &readme[start..start + len];
        if have != want && std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{want}{}", &readme[..start], &readme[start + len..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        let rows = |t: &str| -> Vec<(String, String)> {
            t.lines()
                .skip(2)
                .map(|l| {
                    let cells: Vec<&str> = l.split(" | ").collect();
                    (
                        cells[0].to_string(),
                        cells.get(1).unwrap_or(&"").to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(
            rows(have),
            rows(&want),
            "README.md lists other flags or defaults than the table"
        );
        assert_eq!(
            have, want,
            "README.md's flags table differs from the table; rerun with UPDATE_README=1"
        );
    }
}
