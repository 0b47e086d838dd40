//! `--data-dir` (issue 11): once a full disk has room again, service resumes by itself and
//! what was accepted before is kept. The disk fills through this process's own file-size
//! limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored), lifted again to give it room: this file
//! holds one test so the limit touches nothing else.

mod durable_support;

use durable_support::*;

fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a struct owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[test]
fn service_resumes_when_the_disk_has_room_again() {
    // SAFETY: ignoring a signal changes no memory; a write past the limit then fails
    // with EFBIG instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = TempDir::new("resume");
    set_file_size_limit(32 << 10);
    let server = start_in(&dir, |_| {});
    let body = "z".repeat(1000);
    let mut accepted = Vec::new();
    let mut full = false;
    for n in 0..200 {
        let id = format!("r{n}");
        let r = server.push_json("q", &format!(r#"[{{"id":"{id}","body":"{body}"}}]"#));
        match r.status {
            200 => accepted.push(id),
            503 => {
                full = true;
                break;
            }
            s => panic!("push {id}: {s}"),
        }
    }
    assert!(full, "the disk never filled");
    set_file_size_limit(libc::RLIM_INFINITY);
    // The log retries by itself; pushes are taken again once it has written.
    let mut n = 0;
    let resumed = wait_for(TIMEOUT, || {
        n += 1;
        let id = format!("after{n}");
        let r = server.push_json("q", &format!(r#"[{{"id":"{id}","body":"x"}}]"#));
        if r.status == 200 {
            accepted.push(id);
        }
        r.status == 200
    });
    assert!(resumed, "pushes still refused after the disk had room");
    server.shutdown_and_join(TIMEOUT);
    let server = start_in(&dir, |_| {});
    let kept = drain(&mut server.connect(), "q");
    for id in &accepted {
        assert_eq!(
            kept.iter().filter(|k| *k == id).count(),
            1,
            "{id} is not kept once: {kept:?}"
        );
    }
}
