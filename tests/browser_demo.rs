//! The chat demo (`/demo/`, `web/chat.html`) and the browser client (`/tidings.js`) in a real
//! headless Chromium, driven over the WebDriver protocol through chromedriver: two browsers
//! chat through an in-process server; then the client's JSONP transport, `onMissed`, its
//! backoff and its fatal errors are checked in a page.
//!
//! Needs `/usr/bin/chromedriver` and `/usr/bin/chromium` (Debian: `apt-get install chromium
//! chromium-driver`; `TIDINGS_CHROMEDRIVER` / `TIDINGS_CHROMIUM` override the paths). When
//! they are missing the test passes vacuously, saying so, unless `TIDINGS_BROWSER_TEST` is set
//! (as `.ci/run` does): then it fails. The whole test is bounded by `LIMIT`; chromedriver runs
//! in its own process group, which is killed however the test ends.
//!
//! The WebDriver client is a few lines of HTTP/1.1 over `TcpStream` with `serde_json`.

mod comet_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use comet_support::*;
use serde_json::{json, Value};
use tidings::Draft;

/// The longest the whole test may take; a watchdog kills the browsers and fails it after.
const LIMIT: Duration = Duration::from_secs(60);
/// How long one page-side wait may take.
const WAIT_MS: u64 = 10_000;
/// The key of a web element reference (W3C WebDriver).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const PRELUDE: &str = include_str!("browser/prelude.js");
const CLIENT_API: &str = include_str!("browser/client_api.js");

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
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
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

/// Ends the process if the test outlives `LIMIT`, after killing chromedriver's group and
/// removing the browsers' profiles (which `watch` tells it once the driver runs).
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    watched: Arc<Mutex<(i32, Option<PathBuf>)>>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let watched = Arc::new(Mutex::new((0, None)));
        let w = watched.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(LIMIT) {
                // Straight to stderr: the test harness's capture would swallow eprintln!.
                let _ = writeln!(
                    std::io::stderr(),
                    "browser test: still running after {LIMIT:?}; killing the browsers"
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
fn free_port() -> u16 {
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
            return Err(format!("closed before a head: {}", show(&buf)));
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
struct Driver {
    child: Child,
    port: u16,
    sessions: Vec<String>,
    dir: PathBuf,
    chromium: PathBuf,
}

impl Driver {
    fn start(driver: &Path, chromium: PathBuf, watchdog: &Watchdog) -> Driver {
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
        let mut last = String::new();
        let ready = wait_for(Duration::from_secs(15), || {
            match http(port, "GET", "/status", None, Duration::from_secs(2)) {
                Ok((200, v)) if v["value"]["ready"] == json!(true) => true,
                Ok((s, v)) => {
                    last = format!("{s} {v}");
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
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
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match http(
            self.port,
            method,
            path,
            body.as_ref(),
            Duration::from_secs(30),
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

    /// A new browser (its own Chromium with a fresh profile).
    fn session(&mut self, label: &str) -> Session {
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
        }
    }

    /// Ends the sessions (their browsers quit), then the driver's whole process group.
    fn shutdown(&mut self) {
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
struct Session {
    id: String,
    label: String,
}

impl Session {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    fn navigate(&self, d: &Driver, url: &str) {
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

    /// Types `text` into the element `css` as a user would.
    fn type_into(&self, d: &Driver, css: &str, text: &str) {
        let el = self.find(d, css);
        d.cmd(
            "POST",
            &self.path(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, d: &Driver, css: &str) {
        let el = self.find(d, css);
        d.cmd(
            "POST",
            &self.path(&format!("/element/{el}/click")),
            Some(json!({})),
        );
    }

    /// Runs `body` (after the prelude) as a synchronous script; returns its value.
    fn exec(&self, d: &Driver, body: &str, args: Value) -> Value {
        let script = format!("{PRELUDE}\n{body}");
        d.cmd(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `body` (after the prelude) as an async script that ends with `done({ok,
    /// value})`; panics with the value unless `ok`.
    fn run(&self, d: &Driver, what: &str, body: &str, args: Value) -> Value {
        let script = format!("{PRELUDE}\n{body}");
        let r = d.cmd(
            "POST",
            &self.path("/execute/async"),
            Some(json!({ "script": script, "args": args })),
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

    /// Waits until the JS expression `cond` holds; returns the chat lines then.
    fn wait_until(&self, d: &Driver, what: &str, cond: &str) -> Vec<Value> {
        let body = format!("waitFor(() => ({cond}) && chatLines(), {WAIT_MS}, chatLines);");
        let v = self.run(d, what, &body, json!([]));
        v.as_array().cloned().unwrap_or_default()
    }

    /// One phase of `tests/browser/client_api.js`.
    fn api(&self, d: &Driver, phase: &str, params: Value) -> Value {
        let mut params = params;
        params["ms"] = json!(WAIT_MS);
        self.run(d, phase, CLIENT_API, json!([phase, params]))
    }
}

/// A chat line as the page shows it: (from, text, time).
fn line(v: &Value) -> (String, String, u64) {
    (
        v["from"].as_str().unwrap().to_string(),
        v["text"].as_str().unwrap().to_string(),
        v["time"].as_u64().unwrap(),
    )
}

#[test]
fn chat_demo_between_two_browsers() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let t0 = Instant::now();
    let watchdog = Watchdog::start();
    let server = start_with(|c| {
        // Short long-polls: the pages also go through timeout answers while the test runs.
        c.long_poll_timeout = Duration::from_secs(2);
        c.channel_capacity = 5;
    });
    let base = format!("http://{}", server.addr);
    let mut d = Driver::start(&driver_bin, chromium, &watchdog);
    let alice = d.session("alice");
    let bob = d.session("bob");
    eprintln!("browser test: two browsers up after {:?}", t0.elapsed());

    alice.navigate(&d, &format!("{base}/demo/?name=alice"));
    bob.navigate(&d, &format!("{base}/demo/?name=bob"));
    for s in [&alice, &bob] {
        let title = s.exec(&d, "return document.title;", json!([]));
        assert_eq!(title, json!("tidings chat"), "{}", s.label);
        s.wait_until(
            &d,
            "live",
            "document.querySelector('#status').dataset.state === 'live'",
        );
        let chan = s.exec(
            &d,
            "return document.querySelector('#channel').value;",
            json!([]),
        );
        assert_eq!(chan, json!("chat"), "the default channel");
    }

    // Bob speaks; Alice hears it, and Bob sees his own line once.
    bob.type_into(&d, "#text", "hello from bob");
    bob.click(&d, "#send");
    let seen = alice.wait_until(
        &d,
        "bob's line",
        "chatLines().some((l) => l.from === 'bob' && l.text === 'hello from bob')",
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    let mine = bob.wait_until(&d, "own line", "chatLines().some((l) => l.mine)");
    assert_eq!(mine.len(), 1, "{mine:?}");
    let cleared = bob.exec(
        &d,
        "return document.querySelector('#text').value;",
        json!([]),
    );
    assert_eq!(cleared, json!(""), "the input is cleared after sending");

    // Alice answers with markup, which must show as text.
    alice.type_into(&d, "#text", "hi bob <b>not bold</b> ✓");
    alice.click(&d, "#send");
    bob.wait_until(
        &d,
        "alice's line",
        "chatLines().some((l) => l.from === 'alice' && l.text === 'hi bob <b>not bold</b> ✓')",
    );
    let markup = bob.exec(
        &d,
        "return document.querySelectorAll('#log b').length;",
        json!([]),
    );
    assert_eq!(markup, json!(0), "message text is never parsed as HTML");

    // A message from another protocol (here the embedding program) shows as it came.
    let notice = server
        .handle
        .publish("chat", Draft::with_body("server notice"))
        .unwrap();
    let mut views = Vec::new();
    for s in [&alice, &bob] {
        let lines = s.wait_until(
            &d,
            "notice",
            "chatLines().some((l) => l.foreign && l.text === 'server notice')",
        );
        views.push(lines.iter().map(line).collect::<Vec<_>>());
    }
    // Both pages show the same three lines, once each, in the server's order.
    assert_eq!(views[0], views[1], "both browsers show the same log");
    let texts: Vec<&str> = views[0].iter().map(|l| l.1.as_str()).collect();
    assert_eq!(
        texts,
        [
            "hello from bob",
            "hi bob <b>not bold</b> ✓",
            "server notice"
        ]
    );
    assert!(views[0].windows(2).all(|w| w[0].2 < w[1].2));
    assert_eq!(views[0][2].2, notice);
    // What the pages sent is the demo's JSON.
    let stored = server.get_after("chat", 0);
    let data: Vec<Value> = messages(&stored).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data[0], json!({"from": "bob", "text": "hello from bob"}));
    assert_eq!(data[1]["from"], json!("alice"));
    eprintln!("browser test: chat checked after {:?}", t0.elapsed());

    // The client API, in Alice's page. JSONP: every message once, in order; tags cleaned up.
    let opened = alice.api(&d, "jsonp-open", json!({ "channel": "jp" }));
    assert!(
        opened.as_u64().is_some(),
        "onOpen gives the cursor: {opened}"
    );
    let times: Vec<u64> = ["one", "{\"n\":2}", "[3]"]
        .iter()
        .map(|b| server.handle.publish("jp", Draft::with_body(*b)).unwrap())
        .collect();
    alice.api(&d, "jsonp-collect", json!({ "count": 3 }));
    let r = alice.api(&d, "jsonp-finish", json!({ "channel": "jp" }));
    let got: Vec<(u64, Value)> = r["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["time"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (times[0], json!("one")),
            (times[1], json!({"n": 2})),
            (times[2], json!([3]))
        ]
    );
    assert_eq!(r["errors"], json!([]));
    assert_eq!(r["cursor"], json!(times[2]));
    assert_eq!(r["scripts"], json!(0), "JSONP script tags are removed");
    assert!(
        r["globals"].as_u64().unwrap() <= 1,
        "callback names are released (one may wait for a cancelled answer): {r}"
    );
    let published = r["published"].as_u64().unwrap();
    assert!(published > times[2]);
    let v = server.get_after("jp", times[2]);
    assert_eq!(messages(&v), vec![(published, json!({"via": "jsonp"}))]);

    // onMissed: 8 messages into a channel that keeps 5.
    for i in 0..8 {
        server
            .handle
            .publish("dropped", Draft::with_body(i.to_string()))
            .unwrap();
    }
    let r = alice.api(&d, "missed", json!({ "channel": "dropped", "count": 5 }));
    assert_eq!(r["missed"], json!([{ "after": 1 }]));
    let data: Vec<Value> = r["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec![json!(3), json!(4), json!(5), json!(6), json!(7)]);

    // Backoff against a closed port: attempts count up, delays stay under the cap, stop()
    // ends the retries.
    let closed = free_port();
    let r = alice.api(
        &d,
        "backoff",
        json!({ "url": format!("http://127.0.0.1:{closed}/comet") }),
    );
    let errs = r["errs"].as_array().unwrap();
    for (i, e) in errs.iter().enumerate() {
        assert_eq!(e["attempt"], json!(i + 1), "{r}");
        assert_eq!(e["fatal"], json!(false));
        assert_eq!(e["status"], json!(0));
        let delay = e["retryIn"].as_u64().unwrap();
        let cap = (20u64 << i).min(80);
        assert!(
            delay >= cap / 2 && delay <= cap,
            "attempt {}: {delay} ms, cap {cap}",
            i + 1
        );
    }
    assert_eq!(r["after"], json!(0), "no retry after stop(): {r}");

    // A 400 is final.
    let r = alice.api(&d, "fatal", json!({}));
    assert_eq!(
        r["errs"],
        json!([{ "status": 400, "fatal": true, "retryIn": null }])
    );
    assert_eq!(r["states"], json!(["connecting", "stopped"]));

    // The pages are still live and saw nothing twice.
    for s in [&alice, &bob] {
        let n = s.exec(&d, "return chatLines().length;", json!([]));
        assert_eq!(n, json!(3), "{}", s.label);
    }
    d.shutdown();
    drop(watchdog);
    let took = t0.elapsed();
    eprintln!("browser test: passed in {took:?}");
    assert!(took < LIMIT);
}
