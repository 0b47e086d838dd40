//! The WebDriver set-up shared by the real-browser tests (`tests/browser_demo.rs`,
//! `tests/browser_xmpp.rs`): headless Chromium driven through chromedriver, both from Debian
//! packages (`apt-get install chromium chromium-driver`; `TIDINGS_CHROMEDRIVER` /
//! `TIDINGS_CHROMIUM` override the paths).
//!
//! When they are missing a test passes vacuously, saying so, unless `TIDINGS_BROWSER_TEST` is
//! set (as `.ci/run` does): then it fails. A `Watchdog` bounds the whole test; chromedriver runs
//! in its own process group, which is killed however the test ends. Every port comes from the
//! OS. The WebDriver client is a few lines of HTTP/1.1 over `TcpStream` with `serde_json`.
//!
//! Scripts run in a page (`Session::exec`, `Session::run`) start with `tests/browser/prelude.js`
//! (`done`, `waitFor`) and then the page's own readers, given when the session is opened.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use memchr::memmem::find;
use serde_json::{json, Value};

/// How long one page-side wait may take.
pub const WAIT_MS: u64 = 10_000;
/// The key of a web element reference (W3C WebDriver).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// `done` (the async script callback) and `waitFor`, before every script.
const PRELUDE: &str = include_str!("../browser/prelude.js");

/// Flags without which headless Chromium stalls on a machine with no network.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--window-size=1000,800",
];

/// The chromedriver and chromium binaries, or `None` (after saying why) when the test
/// should pass vacuously.
pub fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        PathBuf::from(std::env::var_os(var).unwrap_or_else(|| default.into()))
    };
    let driver = path("TIDINGS_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = path("TIDINGS_CHROMIUM", "/usr/bin/chromium");
    let missing: Vec<String> = [&driver, &chromium]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((driver, chromium));
    }
    let why = format!(
        "browser test: {} not found (apt-get install -y chromium chromium-driver)",
        missing.join(" and ")
    );
    if std::env::var_os("TIDINGS_BROWSER_TEST").is_some() {
        panic!("{why}; TIDINGS_BROWSER_TEST is set, so this is a failure");
    }
    eprintln!("SKIPPED {why}; set TIDINGS_BROWSER_TEST=1 to make this a failure");
    None
}

/// A watchdog for `limit` and a ready chromedriver, or `None` (after saying why, see
/// `browser_binaries`) when the test should pass vacuously.
pub fn launch(limit: Duration) -> Option<(Watchdog, Driver)> {
    let (driver, chromium) = browser_binaries()?;
    let watchdog = Watchdog::start(limit);
    let d = Driver::start(&driver, chromium, &watchdog);
    Some((watchdog, d))
}

/// Ends the process if the test outlives its limit, after killing chromedriver's group and
/// removing the browsers' profiles (which `watch` tells it once the driver runs).
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    watched: Arc<Mutex<(i32, Option<PathBuf>)>>,
}

impl Watchdog {
    /// Starts watching; the process exits with 101 if `limit` passes before the drop.
    pub fn start(limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let watched = Arc::new(Mutex::new((0, None)));
        let w = watched.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                // Straight to stderr: the test harness's capture would swallow eprintln!.
                let _ = writeln!(
                    std::io::stderr(),
                    "browser test: still running after {limit:?}; killing the browsers"
                );
                let (pgid, dir) = w.lock().map(|g| g.clone()).unwrap_or_default();
                kill_group(pgid);
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                std::process::exit(101);
            }
        });
        Watchdog {
            stop: Some(tx),
            watched,
        }
    }

    fn watch(&self, pgid: i32, dir: &Path) {
        if let Ok(mut g) = self.watched.lock() {
            *g = (pgid, Some(dir.to_path_buf()));
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group we created for
        // chromedriver (and the browsers it starts); no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// A port no one listens on (bound by us, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// One HTTP/1.1 request to chromedriver; returns the status and the JSON body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> Result<(u16, Value), String> {
    let deadline = Instant::now() + limit;
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let (head_end, status, len, chunked) = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad status line in {head:?}"))?;
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let len = header("Content-Length").and_then(|v| v.parse::<usize>().ok());
            let chunked = header("Transfer-Encoding").is_some_and(|v| v.contains("chunked"));
            break (i + 4, status, len, chunked);
        }
        if read_some(&mut s, &mut buf, &mut tmp, deadline)? == 0 {
            return Err(format!("closed before a head: {}", buf.escape_ascii()));
        }
    };
    // Read the body: by length, or to the end of the connection (we asked for close).
    loop {
        if let Some(len) = len {
            if buf.len() >= head_end + len {
                break;
            }
        }
        if read_some(&mut s, &mut buf, &mut tmp, deadline)? == 0 {
            break;
        }
    }
    let mut body = buf[head_end..].to_vec();
    if let Some(len) = len {
        body.truncate(len);
    } else if chunked {
        body = dechunk(&body)?;
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))?
    };
    Ok((status, value))
}

fn read_some(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    tmp: &mut [u8],
    deadline: Instant,
) -> Result<usize, String> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or("chromedriver did not answer in time")?;
    s.set_read_timeout(Some(left)).unwrap();
    match s.read(tmp) {
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(n)
        }
        Err(e) => Err(format!("read from chromedriver: {e}")),
    }
}

/// Decodes a chunked body (`size CRLF data CRLF … 0 CRLF CRLF`).
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let i = find(b, b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&b[..i]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        let data = b.get(i + 2..i + 2 + size).ok_or("truncated chunk")?;
        out.extend_from_slice(data);
        b = b.get(i + 4 + size..).ok_or("truncated chunk end")?;
    }
}

/// A chromedriver process in its own process group, with the sessions it runs.
pub struct Driver {
    child: Child,
    port: u16,
    sessions: Vec<String>,
    dir: PathBuf,
    chromium: PathBuf,
}

impl Driver {
    /// Starts chromedriver on a free port and waits (bounded) until it is ready; tells
    /// `watchdog` what to kill.
    pub fn start(driver: &Path, chromium: PathBuf, watchdog: &Watchdog) -> Driver {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("tidings-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        // process_group(0): the group id is the child's pid.
        watchdog.watch(child.id() as i32, &dir);
        let mut d = Driver {
            child,
            port,
            sessions: Vec::new(),
            dir,
            chromium,
        };
        // Poll /status until it says ready (a bounded retry, not a synchronising sleep).
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        let ready = loop {
            match http(port, "GET", "/status", None, Duration::from_secs(2)) {
                Ok((200, v)) if v["value"]["ready"] == json!(true) => break true,
                Ok((s, v)) => last = format!("{s} {v}"),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !ready {
            let log = d.log_tail();
            d.shutdown();
            panic!("chromedriver not ready on port {port}: {last}\n{log}");
        }
        d
    }

    fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The last lines of chromedriver's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A WebDriver command; panics with the driver's error and log on failure.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match http(
            self.port,
            method,
            path,
            body.as_ref(),
            // Starting a browser on a loaded 2-core machine has taken over 30 s.
            Duration::from_secs(90),
        ) {
            Ok((200, v)) => v["value"].clone(),
            Ok((status, v)) => panic!(
                "WebDriver {method} {path} -> {status}: {} {}\n{}",
                v["value"]["error"],
                v["value"]["message"],
                self.log_tail()
            ),
            Err(e) => panic!("WebDriver {method} {path}: {e}\n{}", self.log_tail()),
        }
    }

    /// A new browser (its own Chromium with a fresh profile). Its scripts start with the
    /// prelude, then `readers` (the page's own JS helpers).
    pub fn session(&mut self, label: &str, readers: &'static str) -> Session {
        let profile = self.dir.join(format!("profile-{label}"));
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.chromium.display().to_string(),
                        "args": args,
                    },
                    "timeouts": { "script": WAIT_MS + 5_000, "pageLoad": 15_000, "implicit": 0 },
                }
            }
        });
        let v = self.cmd("POST", "/session", Some(caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        self.sessions.push(id.clone());
        Session {
            id,
            label: label.to_string(),
            readers,
        }
    }

    /// Ends the sessions (their browsers quit), then the driver's whole process group.
    pub fn shutdown(&mut self) {
        for id in self.sessions.drain(..) {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{id}"),
                None,
                Duration::from_secs(5),
            );
        }
        let _ = self.child.kill();
        kill_group(self.pgid());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One browser.
pub struct Session {
    id: String,
    pub label: String,
    readers: &'static str,
}

impl Session {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    pub fn navigate(&self, d: &Driver, url: &str) {
        d.cmd("POST", &self.path("/url"), Some(json!({ "url": url })));
    }

    fn find(&self, d: &Driver, css: &str) -> String {
        let v = d.cmd(
            "POST",
            &self.path("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no element {css}: {v}", self.label))
            .to_string()
    }

    /// A command on the element `css`: `value` (type), `clear` or `click`.
    fn on_element(&self, d: &Driver, css: &str, command: &str, body: Value) {
        let el = self.find(d, css);
        d.cmd(
            "POST",
            &self.path(&format!("/element/{el}/{command}")),
            Some(body),
        );
    }

    /// Types `text` into the element `css` as a user would.
    pub fn type_into(&self, d: &Driver, css: &str, text: &str) {
        self.on_element(d, css, "value", json!({ "text": text }));
    }

    /// Empties the input `css`.
    pub fn clear(&self, d: &Driver, css: &str) {
        self.on_element(d, css, "clear", json!({}));
    }

    pub fn click(&self, d: &Driver, css: &str) {
        self.on_element(d, css, "click", json!({}));
    }

    fn script(&self, body: &str) -> String {
        format!("{PRELUDE}\n{}\n{body}", self.readers)
    }

    /// Runs `body` (after the prelude and readers) as a synchronous script; returns its value.
    pub fn exec(&self, d: &Driver, body: &str, args: Value) -> Value {
        d.cmd(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({ "script": self.script(body), "args": args })),
        )
    }

    /// Runs `body` (after the prelude and readers) as an async script that ends with
    /// `done({ok, value})`; panics with the value unless `ok`.
    pub fn run(&self, d: &Driver, what: &str, body: &str, args: Value) -> Value {
        let r = d.cmd(
            "POST",
            &self.path("/execute/async"),
            Some(json!({ "script": self.script(body), "args": args })),
        );
        assert_eq!(
            r["ok"],
            json!(true),
            "{} {what}: the page showed {}",
            self.label,
            r["value"]
        );
        r["value"].clone()
    }

    /// Waits (in the page, at most `WAIT_MS`) until the JS expression `cond` holds, then
    /// returns the value of the JS expression `then`; on a timeout panics with what `then`
    /// gave.
    pub fn wait_until(&self, d: &Driver, what: &str, cond: &str, then: &str) -> Value {
        let body = format!("waitFor(() => ({cond}) && ({then}), {WAIT_MS}, () => ({then}));");
        self.run(d, what, &body, json!([]))
    }
}
