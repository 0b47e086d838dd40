//! A real `redis-server` for the tests of `--redis` (Debian's `redis-server` package): each
//! test starts its own on a free loopback port, in a temporary directory, and it is killed
//! when dropped.
//!
//! Without `redis-server` on the `PATH` a test says it was skipped, and why, and passes;
//! with `TIDINGS_REDIS_TESTS=1` (set by `.ci/run`, which installs the package) it fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Keep an append-only file (`appendfsync always`), so a restart keeps the data.
    durable: bool,
}

/// Whether `redis-server` can be run; if not, says the test is skipped, or fails it when
/// `TIDINGS_REDIS_TESTS=1`.
pub fn available(test: &str) -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let required = std::env::var("TIDINGS_REDIS_TESTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TIDINGS_REDIS_TESTS=1 but redis-server cannot be run (apt-get install redis-server)"
        );
        // Straight to the process's stderr: the test harness captures `eprintln!` of a passing
        // test, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: redis-server is not installed (.ci/run installs it)"
        );
    }
    ok
}

/// A port the OS had free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server for `test`, or `None` when `redis-server` is missing (see `available`).
    pub fn start(test: &str) -> Option<RedisServer> {
        RedisServer::start_with(test, false)
    }

    /// As `start`, keeping an append-only file so that `restart` finds the data again.
    pub fn start_durable(test: &str) -> Option<RedisServer> {
        RedisServer::start_with(test, true)
    }

    fn start_with(test: &str, durable: bool) -> Option<RedisServer> {
        if !available(test) {
            return None;
        }
        // The engine's connect and reconnect lines are expected here, not news.
        tidings::log::set_level(tidings::log::Level::Error);
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tidings-redis-{}-{}-{test}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            durable,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.current_dir(&self.dir)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--loglevel", "warning"])
            .args(["--logfile", "redis.log"]);
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_LIMIT;
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_LIMIT:?}: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one inline command and returns the first line of the answer.
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(b"\r\n") && s.read_exact(&mut b).is_ok() {
            out.push(b[0]);
        }
        String::from_utf8_lossy(&out).trim_end().to_string()
    }

    /// Kills the server at once (`SIGKILL`): nothing is flushed, connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (with its data when durable).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
