//! `--data-dir` under faults (issue 11), with the real binary in a child process: a `kill -9`
//! in the middle of concurrent pushes loses no push that was answered `200` (and stores none
//! twice); a full disk (a file-size limit) answers `503` with `Retry-After`, counts it, and
//! loses nothing accepted before.

mod durable_support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use durable_support::*;

/// One QST push of one message on `c`; the status and `Retry-After`, or `None` if the
/// connection failed (the server died).
fn push(c: &mut Client, channel: &str, id: &str, body: &str) -> Option<(u16, Option<String>)> {
    let json = format!(r#"[{{"id":"{id}","body":"{body}"}}]"#);
    let req = request_bytes(
        "POST",
        &format!("/qst/{channel}"),
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    );
    c.stream.write_all(&req).ok()?;
    let head = c.try_read_until(b"\r\n\r\n", TIMEOUT).ok()?;
    let r = parse_head(head);
    let n: usize = r.header("Content-Length")?.parse().ok()?;
    c.try_read_exact(n, TIMEOUT).ok()?;
    Some((r.status, r.header("Retry-After").map(str::to_string)))
}

/// Asserts every id in `accepted` is in `kept` exactly once, and `kept` holds no id twice.
fn assert_kept_once(accepted: &[String], kept: &[String]) {
    let mut seen = HashSet::new();
    for id in kept {
        assert!(seen.insert(id.as_str()), "{id} was stored twice");
    }
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted pushes are lost: {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn kill_9_under_concurrent_pushes_loses_no_accepted_push() {
    const PUBLISHERS: usize = 8;
    let dir = TempDir::new("kill9");
    let server = ChildServer::start(&dir, &[], None);
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|t| {
            let mut c = server.connect();
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("p{t}-{n}");
                    match push(&mut c, "crash", &id, "payload") {
                        Some((200, _)) => accepted.lock().unwrap().push(id),
                        Some((status, _)) => panic!("push {id} answered {status}"),
                        None => return,
                    }
                }
            })
        })
        .collect();
    assert!(
        wait_for(TIMEOUT, || accepted.lock().unwrap().len() >= 400),
        "the publishers did not get 400 answers"
    );
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a publisher panicked");
    }
    let accepted = accepted.lock().unwrap().clone();
    let server = ChildServer::start(&dir, &[], None);
    let kept = drain(&mut server.connect(), "crash");
    assert_kept_once(&accepted, &kept);
}

#[test]
fn a_full_disk_answers_503_counts_it_and_loses_nothing_accepted() {
    let dir = TempDir::new("full");
    // A 32 KiB file-size limit: the log segment fills after about 30 pushes of 1 KiB.
    let server = ChildServer::start(&dir, &[], Some(32 << 10));
    let body = "y".repeat(1000);
    let mut c = server.connect();
    let mut accepted = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let id = format!("f{n}");
        match push(&mut c, "full", &id, &body) {
            Some((200, _)) => accepted.push(id),
            Some((503, retry)) => {
                refused = Some(retry);
                break;
            }
            other => panic!("push {id}: {other:?}"),
        }
    }
    let retry = refused.expect("a full disk never gave 503");
    assert_eq!(retry.as_deref(), Some("1"), "503 carries Retry-After");
    assert!(accepted.len() > 5, "only {} pushes fit", accepted.len());
    // While the disk is full, changes are refused up front.
    assert_eq!(push(&mut c, "full", "late", "x").map(|r| r.0), Some(503));
    let metrics = c.get("/metrics");
    let text = metrics.text();
    assert!(
        metric_value(text, "tidings_storage_errors_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(metric_value(text, "tidings_storage_refusals_total").unwrap_or(0.0) >= 1.0);
    // Reads still work.
    assert_eq!(c.pull("full", "max=1").status, 200);
    server.kill();
    let server = ChildServer::start(&dir, &[], None);
    let kept = drain(&mut server.connect(), "full");
    assert_kept_once(&accepted, &kept);
}
