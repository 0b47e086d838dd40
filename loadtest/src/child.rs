//! The worker process's side, shared by `worker` (talk-idle) and
//! `comet-worker`: its common options, the line protocol with the parent
//! (commands on stdin, reports on stdout), opening non-blocking connections
//! from a source address in batches with retries, and the steps of a mio loop.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::args::Args;
use crate::fleet::parse_ips;
use crate::sys::raise_nofile_limit;

/// The token of the waker that says a command arrived on stdin.
pub const WAKE: Token = Token(usize::MAX);
/// How many problems of each kind a worker prints before it only counts them.
pub const PRINT_LIMIT: usize = 5;

/// The options every worker gets from `Fleet::spawn`.
pub struct Common {
    pub index: usize,
    pub server: SocketAddr,
    /// Connections of this worker.
    pub count: usize,
    /// Global index of this worker's first connection (names and source choice).
    pub offset: usize,
    pub sources: Vec<IpAddr>,
    pub inflight: usize,
    pub retries: u32,
    pub connect_timeout_ns: u64,
}

/// The option names `Common::from_args` reads, besides the count.
pub const COMMON_OPTIONS: [&str; 7] = [
    "index",
    "server",
    "offset",
    "sources",
    "inflight",
    "retries",
    "connect-timeout-ms",
];

impl Common {
    pub fn from_args(a: &Args, count_key: &str) -> Result<Common, String> {
        let server: SocketAddr = a
            .required("server")?
            .parse()
            .map_err(|e| format!("--server: {e}"))?;
        Ok(Common {
            index: a.num("index", 0)?,
            server,
            count: a.num(count_key, 0)?,
            offset: a.num("offset", 0)?,
            sources: parse_ips(a.required("sources")?)?,
            inflight: a.num::<usize>("inflight", 1000)?.max(1),
            retries: a.num("retries", 3)?,
            connect_timeout_ns: a.num::<u64>("connect-timeout-ms", 15_000)? * 1_000_000,
        })
    }

    /// The source address of connection `idx` (round-robin over the global index).
    pub fn source(&self, idx: usize) -> IpAddr {
        self.sources[(self.offset + idx) % self.sources.len()]
    }

    /// Checks that `count` connections fit the open-file limit; `tag` is
    /// the worker's name in messages (`worker`, `comet-worker`).
    pub fn check_fd_room(&self, tag: &str, noun: &str) -> Result<(), String> {
        let limit = raise_nofile_limit();
        if self.count as u64 + 32 > limit {
            return Err(format!(
                "[{tag} {}] {} {noun} need more than the open-file limit {limit}",
                self.index, self.count
            ));
        }
        Ok(())
    }
}

/// Sends one line to the parent; exits if the parent is gone.
pub fn send(line: &str) {
    let mut out = io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(3);
    }
}

/// `PROGRESS …`: sent about once a second while connecting.
pub fn send_progress(up: usize, failed: usize, inflight: usize, retries: usize) {
    send(&format!(
        "PROGRESS up={up} failed={failed} inflight={inflight} retries={retries}"
    ));
}

/// Reads the parent's commands from stdin on a thread: each line goes through
/// `parse` onto the returned channel and wakes the poll; stdin's end sends `quit`.
pub fn read_commands<T: Send + 'static>(
    poll: &Poll,
    parse: fn(&str) -> T,
    quit: T,
) -> io::Result<Receiver<T>> {
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (tx, rx) = mpsc::channel::<T>();
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(parse(line.trim_end())).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            }
        }
        let _ = tx.send(quit);
        let _ = waker.wake();
    });
    Ok(rx)
}

/// One wait of the loop: polls for up to `timeout_ns` (at least 1 ms). An
/// interrupted wait returns no events.
pub fn wait(poll: &mut Poll, events: &mut Events, timeout_ns: u64) -> io::Result<()> {
    match poll.poll(
        events,
        Some(Duration::from_nanos(timeout_ns.max(1_000_000))),
    ) {
        Err(e) if e.kind() != ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

/// Hands each socket event to `on_event`; true when the waker fired (a
/// command is waiting).
pub fn dispatch(events: &Events, mut on_event: impl FnMut(usize, &Event)) -> bool {
    let mut woke = false;
    for ev in events.iter() {
        if ev.token() == WAKE {
            woke = true;
        } else {
            on_event(ev.token().0, ev);
        }
    }
    woke
}

/// A non-blocking socket bound to `src` (port chosen at connect time) with a
/// connect to `server` in progress.
pub fn open_socket(src: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    // Close with RST: no TIME_WAIT left behind, so runs can follow each other
    // without exhausting the ephemeral ports.
    sock.set_linger(Some(Duration::ZERO))?;
    // Let connect() pick the port for the whole 4-tuple rather than bind().
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.bind(&SocketAddr::new(src, 0).into())?;
    match sock.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}

/// Where a connect in progress stands after event `ev`.
pub enum Connect {
    /// Not decided yet: wait for another event.
    Pending,
    Done,
    Failed(String),
}

pub fn connect_state(sock: &TcpStream, ev: &Event) -> Connect {
    if !(ev.is_writable() || ev.is_error() || ev.is_read_closed() || ev.is_write_closed()) {
        return Connect::Pending;
    }
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => return Connect::Failed(e.to_string()),
        Ok(None) => {}
    }
    match sock.peer_addr() {
        Ok(_) => Connect::Done,
        Err(e) if e.kind() == ErrorKind::NotConnected => Connect::Pending,
        Err(e) => Connect::Failed(e.to_string()),
    }
}

/// Writes from `*done` on; `Ok(true)` once the whole request is out.
pub fn write_some(sock: &mut TcpStream, req: &[u8], done: &mut usize) -> io::Result<bool> {
    while *done < req.len() {
        match sock.write(&req[*done..]) {
            Ok(n) => *done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The connections still to start: first attempts in order, and retries
/// (or reconnects) once their backoff has passed.
pub struct StartQueue {
    pending: VecDeque<usize>,
    retry: BinaryHeap<Reverse<(u64, usize)>>,
}

impl StartQueue {
    /// Connections `0..n`, none started.
    pub fn new(n: usize) -> StartQueue {
        StartQueue {
            pending: (0..n).collect(),
            retry: BinaryHeap::new(),
        }
    }

    pub fn retry_at(&mut self, due_ns: u64, idx: usize) {
        self.retry.push(Reverse((due_ns, idx)));
    }

    pub fn has_retries(&self) -> bool {
        !self.retry.is_empty()
    }

    pub fn first_attempts_done(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.retry.is_empty()
    }

    /// The next connection to start now while `inflight` of at most `max`
    /// attempts are under way: a retry that is due first, then a first
    /// attempt. A due retry for which `free(idx)` holds does not count
    /// against `max`.
    pub fn next(
        &mut self,
        now: u64,
        inflight: usize,
        max: usize,
        free: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if let Some(&Reverse((due, idx))) = self.retry.peek() {
            if due <= now && (free(idx) || inflight < max) {
                self.retry.pop();
                return Some(idx);
            }
        }
        if inflight >= max {
            return None;
        }
        self.pending.pop_front()
    }
}

/// Backoff before retry `attempts` (≥ 1) of a connect: 50 ms, 100 ms,
/// 200 ms, … capped at 2 s.
pub fn backoff_ms(attempts: u32) -> u64 {
    (50u64 << (attempts - 1).min(6)).min(2000)
}

/// Counts one more `key`; returns the count.
pub fn bump(map: &mut BTreeMap<String, usize>, key: &str) -> usize {
    let n = map.entry(key.to_string()).or_insert(0);
    *n += 1;
    *n
}

/// `reason ×count; …` of counted reasons.
pub fn reason_list(map: &BTreeMap<String, usize>) -> String {
    let list: Vec<String> = map.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    list.join("; ")
}

/// The whole of a worker process's `run`: parses its options (`parse`), checks that the
/// open-file limit leaves room for them (`common`), runs `body`; returns the exit code (2
/// for bad options or no room, 1 for an error of the run). `tag` names the process in
/// messages, `noun` what it holds (`streams`, `clients`, `sessions`).
pub fn worker_main<C>(
    argv: &[String],
    tag: &str,
    noun: &str,
    parse: fn(&[String]) -> Result<C, String>,
    common: fn(&C) -> &Common,
    body: fn(C) -> std::io::Result<()>,
) -> i32 {
    let cfg = match parse(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{tag}: {e}");
            return 2;
        }
    };
    if let Err(e) = common(&cfg).check_fd_room(tag, noun) {
        eprintln!("{e}");
        return 2;
    }
    match body(cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{tag}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_queue_order_and_limit() {
        let mut q = StartQueue::new(3);
        assert_eq!(q.next(0, 0, 2, |_| false), Some(0));
        assert_eq!(q.next(0, 2, 2, |_| false), None);
        q.retry_at(5, 0);
        assert_eq!(q.next(4, 1, 2, |_| false), Some(1));
        assert_eq!(q.next(5, 1, 2, |_| false), Some(0));
        q.retry_at(5, 0);
        assert_eq!(q.next(5, 2, 2, |_| false), None);
        assert_eq!(q.next(5, 2, 2, |i| i == 0), Some(0));
        assert!(!q.is_empty());
        assert_eq!(q.next(5, 0, 2, |_| false), Some(2));
        assert!(q.is_empty());
        assert_eq!(backoff_ms(1), 50);
        assert_eq!(backoff_ms(3), 200);
        assert_eq!(backoff_ms(9), 2000);
    }
}
