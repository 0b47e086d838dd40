//! The `tidings` binary: read the configuration, raise the open-file limit, serve until
//! SIGTERM or SIGINT, then shut down cleanly.

use tidings::{info, warn, Config, Server};

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it starts), so that
/// only `wait_for_signal` receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own; pthread_sigmask only changes
    // this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: the set was initialised by block_signals and sig is ours to write.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn main() {
    let config = match Config::from_args_and_env(std::env::args().skip(1), std::env::vars()) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            eprintln!("tidings: {e}");
            std::process::exit(2);
        }
    };
    tidings::log::set_level(config.log_level);
    match tidings::server::raise_open_file_limit() {
        Ok(n) => {
            let room = n.saturating_sub(64);
            info!("open-file limit {n}: room for about {room} connections");
            if (room as usize) < config.max_connections {
                info!(
                    "--max-connections {} is above what the open-file limit allows",
                    config.max_connections
                );
            }
        }
        Err(e) => warn!("could not raise the open-file limit: {e}"),
    }
    let signals = block_signals();
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tidings: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let handle = server.handle();
    std::thread::Builder::new()
        .name("tidings-signals".into())
        .spawn(move || {
            let sig = wait_for_signal(&signals);
            info!("signal {sig}: shutting down");
            handle.shutdown();
        })
        .expect("spawn the signal thread");
    server.join();
    info!("stopped");
}
