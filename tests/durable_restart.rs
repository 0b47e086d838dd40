//! `--data-dir` (issue 11): what a server kept is there after a clean restart — queues with
//! their acknowledgements and tries, retained channels with their clocks, the last pushed id —
//! under every `--fsync`; a torn or corrupt tail is cut and the rest served; a second server
//! on the same directory is refused; compaction keeps everything and shrinks the disk.

mod durable_support;

use durable_support::*;
use serde_json::Value;
use tidings::storage::Fsync;

fn comet(server: &TestServer, query: &str) -> Value {
    let r = server.get(&format!("/comet?{query}"));
    assert_eq!(r.status, 200, "{}", r.show());
    serde_json::from_slice(&r.body).unwrap()
}

fn push_ok(server: &TestServer, channel: &str, ids: &[&str]) {
    let r = server.push_xml(channel, &xml_batch(ids));
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.etag(), *ids.last().unwrap());
}

fn restart_keeps_everything(fsync: Fsync) {
    let dir = TempDir::new("restart");
    let tweak = |c: &mut tidings::Config| {
        c.fsync = fsync;
        c.qst_max_tries = 5;
    };
    let server = start_in(&dir, tweak);
    push_ok(&server, "acme/in", &["m1", "m2", "m3", "m4", "m5"]);
    // Acknowledge m1, m2; m3 is tried once (max=1) and stays pending.
    let r = server.pull("acme/in", "max=2");
    assert_eq!(r.ids(), ["m1", "m2"]);
    let r = server.pull("acme/in", "max=1&etag=m2");
    assert_eq!(r.ids(), ["m3"]);
    // A retained (non-queue) channel with a clock.
    let t1 = comet(&server, "method=put&channel=news&message=one")["time"]
        .as_u64()
        .unwrap();
    let t2 = comet(&server, "method=put&channel=news&message=two")["time"]
        .as_u64()
        .unwrap();
    let clock = comet(&server, "method=sync&channel=news")["time"]
        .as_u64()
        .unwrap();
    assert!(t1 < t2 && t2 <= clock);
    let r = server.get("/acme/qst/setaddress?address=sms://5550001");
    assert_eq!(r.status, 200, "{}", r.show());
    server.shutdown_and_join(TIMEOUT);

    let server = start_in(&dir, tweak);
    // The queue: m1, m2 acknowledged, the rest pending in order, the ETag of the last push.
    assert_eq!(server.head_etag("acme/in"), "m5");
    let r = server.pull("acme/in", "max=10");
    assert_eq!(r.ids(), ["m3", "m4", "m5"], "{fsync:?}");
    // A retried push of a kept id is still recognised.
    push_ok(&server, "acme/in", &["m4"]);
    let r = server.pull("acme/in", "max=10&etag=m5");
    assert!(r.ids().is_empty());
    assert_eq!(r.etag(), "m5", "the last acknowledged id survives");
    // The channel: both messages after 0, with their times; a new one comes after the clock.
    let got = comet(&server, "method=get&channel=news&time=0");
    let times: Vec<u64> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["time"].as_u64().unwrap())
        .collect();
    assert_eq!(times, [t1, t2], "{got}");
    let t3 = comet(&server, "method=put&channel=news&message=three")["time"]
        .as_u64()
        .unwrap();
    assert!(
        t3 > clock,
        "seq {t3} must be above the clock {clock} handed out"
    );
}

#[test]
fn a_clean_restart_keeps_queues_channels_and_clocks_with_fsync_always() {
    restart_keeps_everything(Fsync::Always);
}

#[test]
fn a_clean_restart_keeps_everything_with_fsync_interval() {
    restart_keeps_everything(Fsync::Interval);
}

#[test]
fn a_clean_restart_keeps_everything_with_fsync_never() {
    restart_keeps_everything(Fsync::Never);
}

#[test]
fn tries_survive_a_restart() {
    let dir = TempDir::new("tries");
    let tweak = |c: &mut tidings::Config| c.qst_max_tries = 2;
    let server = start_in(&dir, tweak);
    push_ok(&server, "q", &["a", "b"]);
    assert_eq!(server.pull("q", "max=1").ids(), ["a"]);
    assert_eq!(server.pull("q", "max=1").ids(), ["a"]);
    server.shutdown_and_join(TIMEOUT);
    let server = start_in(&dir, tweak);
    // `a` was tried twice before the restart: it expires now.
    assert_eq!(server.pull("q", "max=10").ids(), ["b"]);
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_served() {
    let dir = TempDir::new("torn");
    let server = start_in(&dir, |_| {});
    for i in 1..=10 {
        push_ok(&server, "q", &[&format!("m-{i}")]);
    }
    server.shutdown_and_join(TIMEOUT);
    // Tear the last record (as a crash in the middle of a write would).
    let seg = dir.segments().pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let server = start_in(&dir, |_| {});
    let mut c = server.connect();
    let kept = drain(&mut c, "q");
    assert_eq!(kept, ids("m", 9), "the nine whole records are served");
    // The log goes on after the cut: a new push survives the next restart.
    push_ok(&server, "q", &["m11"]);
    server.shutdown_and_join(TIMEOUT);
    let server = start_in(&dir, |_| {});
    assert_eq!(server.pull("q", "max=10").ids(), ["m11"]);
}

#[test]
fn a_corrupt_record_is_cut_with_what_follows() {
    let dir = TempDir::new("corrupt");
    let server = start_in(&dir, |_| {});
    push_ok(&server, "q", &["a"]);
    push_ok(&server, "q", &["b"]);
    server.shutdown_and_join(TIMEOUT);
    // Flip a byte in the last record's payload: its checksum no longer matches.
    let seg = dir.segments().pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let server = start_in(&dir, |_| {});
    assert_eq!(server.pull("q", "max=10").ids(), ["a"]);
}

#[test]
fn a_second_server_on_the_same_dir_is_refused() {
    let dir = TempDir::new("lock");
    let _server = start_in(&dir, |_| {});
    let mut config = test_config();
    config.data_dir = Some(dir.path().to_path_buf());
    let err = match tidings::Server::start(config) {
        Ok(_) => panic!("a second server started on the same --data-dir"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn compaction_keeps_what_is_pending_and_shrinks_the_log() {
    let dir = TempDir::new("compact");
    let tweak = |c: &mut tidings::Config| {
        c.log_compact_bytes = 16 << 10;
        c.log_segment_bytes = 8 << 10;
        // Acknowledged messages leave memory soon (a queue keeps only the unacknowledged).
        c.channel_capacity = 60;
    };
    let server = start_in(&dir, tweak);
    let body = "x".repeat(100);
    // Five rounds of 300 messages, each acknowledged but the last 50 of the last round.
    let mut pending = Vec::new();
    for round in 0..5 {
        let all = ids(&format!("r{round}"), 300);
        for chunk in all.chunks(20) {
            let msgs: String = chunk.iter().map(|id| xml_msg(id, &body)).collect();
            let r = server.push_xml("q", &xml_doc(&msgs));
            assert_eq!(r.status, 200, "{}", r.show());
        }
        let upto = if round == 4 { 249 } else { 299 };
        let r = server.pull("q", &format!("max=1&etag={}", all[upto]));
        assert_eq!(r.status, 200);
        pending = all[upto + 1..].to_vec();
    }
    let written = server
        .metric("tidings_storage_bytes_written_total")
        .unwrap();
    // Compaction runs in the background, with fsyncs: on a loaded machine it can take
    // seconds, so this bounded wait is generous.
    assert!(
        wait_for(std::time::Duration::from_secs(30), || server
            .metric("tidings_storage_compactions_total")
            .unwrap_or(0.0)
            >= 1.0
            && (dir.log_bytes() as f64) < written / 4.0),
        "the log holds {} bytes after {written} written",
        dir.log_bytes(),
    );
    server.shutdown_and_join(TIMEOUT);
    let server = start_in(&dir, tweak);
    let mut c = server.connect();
    assert_eq!(drain(&mut c, "q"), pending);
}

#[test]
fn a_subscriber_hears_of_a_push_once_it_is_answered() {
    let dir = TempDir::new("deliver");
    let server = start_in(&dir, |_| {});
    let mut stream = std::ops::Deref::deref(&server).pull("/pull?name=n&channel=t", false);
    let r = server.push_json("t", r#"[{"id":"x","body":"hello"}]"#);
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(stream.next_text().contains("hello"));
}
