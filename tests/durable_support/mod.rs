//! Helpers for the `--data-dir` tests (`tests/durable_*.rs`), on top of the QST helpers: a
//! temporary data directory, a server in a child process (the real binary, so that it can be
//! killed with `SIGKILL` or started under a file-size limit), and a pull that drains a queue.

#![allow(dead_code)]

#[path = "../qst_support/mod.rs"]
mod qst_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub use qst_support::*;

/// A directory removed (with what it holds) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tidings-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The log segments, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "log"));
        v.sort();
        v
    }

    /// Bytes of every log file (segments and snapshots).
    pub fn log_bytes(&self) -> u64 {
        std::fs::read_dir(&self.0)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let p = e.path();
                        p.extension().is_some_and(|x| x == "log" || x == "snap")
                    })
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts an in-process server keeping its hub in `dir`.
pub fn start_in(dir: &TempDir, tweak: impl FnOnce(&mut tidings::Config)) -> TestServer {
    let dir = dir.path().to_path_buf();
    start_with(|c| {
        c.data_dir = Some(dir);
        tweak(c);
    })
}

/// A `tidings` binary serving in a child process; killed (`SIGKILL`) on drop.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the server writes to stderr after it started.
    pub log: mpsc::Receiver<String>,
}

impl ChildServer {
    /// Starts the binary on `127.0.0.1:0` with `--data-dir dir` and `args`; `pre_exec` runs
    /// in the child before `exec` (a resource limit). Waits for its "serving on" line.
    pub fn start(dir: &TempDir, args: &[&str], limit_file_size: Option<u64>) -> ChildServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings"));
        cmd.args(["--listen", "127.0.0.1:0", "--xmpp-listen", "off"])
            .args(["--workers", "2", "--log-level", "info"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(bytes) = limit_file_size {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only async-signal-safe calls are made (signal
            // and setrlimit), on values owned by this closure.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn the tidings binary");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not start; it said: {seen:#?}");
                }
            };
            if let Some(rest) = line.split("serving on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return ChildServer {
                    child,
                    addr,
                    log: rx,
                };
            }
            seen.push(line);
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pulls a queue to the end over `c`, acknowledging each batch; returns every id in order.
pub fn drain(c: &mut Client, channel: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut query = "max=1000&format=json".to_string();
    loop {
        let r = c.pull(channel, &query);
        assert_eq!(r.status, 200, "{}", r.show());
        let ids = r.ids();
        if ids.is_empty() {
            return all;
        }
        query = format!("max=1000&format=json&etag={}", r.etag());
        all.extend(ids);
    }
}
