//! Starting and stopping a server, and the thread-safe `Handle` through which a program that
//! embeds tidings publishes into channels.
//!
//! ```no_run
//! use tidings::{Config, Draft, Server};
//!
//! let config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
//! let server = Server::start(config).expect("start");
//! println!("serving on {}", server.local_addr());
//! let handle = server.handle();
//! std::thread::spawn(move || {
//!     // From any thread: every Talk stream, comet get and QST pull on "alerts" sees it.
//!     handle.publish("alerts", Draft::with_body("door open")).expect("publish");
//! });
//! server.handle().shutdown();
//! server.join();
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::conn::Kind;
use crate::hub::{Draft, Hub, HubError, Limits, Mailbox, Origin};
use crate::info;
use crate::metrics::Metrics;
use crate::reactor::{Listener, Reactor, WakerNotify, WAKER};
use crate::storage::{self, Storage};
use crate::worker::Shared;

/// Connections waiting to be accepted, per listener (the kernel caps it at somaxconn).
const LISTEN_BACKLOG: i32 = 4096;

/// A running server: its worker threads and what they share.
pub struct Server {
    addr: SocketAddr,
    xmpp_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    storage: Arc<dyn Storage>,
}

/// What the storage's threads tell the hub: syncs done, and snapshots for compaction. Weak,
/// so that the storage (owned by the hub) does not keep the hub alive.
struct HubListener(Weak<Shared>);

impl storage::Listener for HubListener {
    fn synced(&self, durable: storage::Lsn, failed: storage::Lsn) {
        if let Some(shared) = self.0.upgrade() {
            shared.hub.synced(durable, failed);
        }
    }

    fn snapshot(&self, out: &mut dyn FnMut(&storage::Record<'_>)) -> bool {
        match self.0.upgrade() {
            Some(shared) => {
                shared.hub.snapshot(out);
                true
            }
            None => false,
        }
    }
}

/// Opens the storage `--data-dir` asks for (taking its lock), or none.
fn open_storage(config: &Config, metrics: &Arc<Metrics>) -> io::Result<Arc<dyn Storage>> {
    let Some(dir) = &config.data_dir else {
        return Ok(Arc::new(storage::Memory));
    };
    let opts = storage::disk::Options {
        dir: dir.clone(),
        fsync: config.fsync,
        segment_bytes: config.log_segment_bytes as u64,
        compact_bytes: config.log_compact_bytes as u64,
        buffer_bytes: config.log_buffer_bytes,
    };
    Ok(Arc::new(storage::disk::Disk::open(opts, metrics.clone())?))
}

/// How the hub reaches `--redis`, with the server's retention limits.
fn redis_options(config: &Config, url: &crate::redis::Url) -> crate::redis::Options {
    crate::redis::Options {
        channel_capacity: config.channel_capacity as u64,
        channel_bytes: config.channel_bytes as u64,
        queue_capacity: config.queue_capacity as u64,
        channel_ttl_ms: config.channel_ttl.as_millis() as u64,
        ..crate::redis::Options::new(url.clone())
    }
}

/// Replays the log into the hub, and says how long it took.
fn restore(hub: &Hub, config: &Config) -> io::Result<()> {
    let Some(dir) = &config.data_dir else {
        return Ok(());
    };
    let started = Instant::now();
    let r = hub.restore()?;
    info!(
        "recovered {} channels from {} ({} records, {} bytes, {} segments{}) in {} ms; \
         --fsync {}",
        hub.channel_count(),
        dir.display(),
        r.records,
        r.bytes,
        r.segments,
        if r.snapshot { " and a snapshot" } else { "" },
        started.elapsed().as_millis(),
        config.fsync.name(),
    );
    if r.cut > 0 {
        crate::warn!("cut {} bytes of torn or corrupt log tail", r.cut);
    }
    Ok(())
}

/// A cheap, cloneable, thread-safe handle on a running server.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// Why `Handle::publish` refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    BadChannel(String),
    TooLarge,
    Hub(HubError),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::BadChannel(why) => write!(f, "bad channel name: {why}"),
            PublishError::TooLarge => f.write_str("message larger than --max-message-bytes"),
            PublishError::Hub(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PublishError {}

impl Handle {
    /// Stores a message in a channel and wakes its subscribers on every worker.
    /// Returns the message's `seq`.
    pub fn publish(&self, channel: &str, draft: Draft) -> Result<u64, PublishError> {
        crate::proto::channel_name(channel.as_bytes()).map_err(|r| {
            PublishError::BadChannel(String::from_utf8_lossy(&r.body).trim().to_string())
        })?;
        if draft.size() > self.shared.config.max_message_bytes {
            return Err(PublishError::TooLarge);
        }
        let hub = &self.shared.hub;
        if hub.shared_in_redis(channel) {
            return hub
                .publish_redis_and_wait(channel, vec![draft], Origin::Embedded)
                .map_err(PublishError::Hub);
        }
        let stored = hub
            .publish(channel, vec![draft], Origin::Embedded, false)
            .map_err(PublishError::Hub)?;
        Ok(stored.last().map_or(0, |m| m.seq))
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Begins a clean shutdown: stop accepting, end streams, answer parked requests, flush.
    pub fn shutdown(&self) {
        self.shared.hub.shutdown_all();
    }
}

/// Refuses an address that another server already serves. Our own listeners share their
/// port with `SO_REUSEPORT`, which would let a second process take half the connections (and
/// half of every queue) in silence; a probe bound without it fails wherever any listener is.
/// The probe is closed before the real listeners bind.
fn refuse_if_served(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR only lets the probe past connections of an earlier run in TIME_WAIT.
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!(
                    "{addr} is already in use (another tidings or another server listens \
                     there); refusing to share it: stop that server or choose another address"
                ),
            )
        } else {
            e
        }
    })
}

fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Server {
    /// Binds the listeners and starts the workers. Returns once the server accepts.
    pub fn start(config: Config) -> io::Result<Server> {
        crate::log::set_level(config.log_level);
        let workers = config.workers.clamp(1, crate::hub::MAX_WORKERS);
        let mut polls = Vec::with_capacity(workers);
        let mut mailboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            mailboxes.push(Arc::new(Mailbox::new(Box::new(WakerNotify(waker)))));
            polls.push(poll);
        }
        let auth = match &config.credentials {
            Some(path) => crate::proto::auth::Auth::load(path)?,
            None => crate::proto::auth::Auth::default(),
        };
        if let Some(xmpp) = config.xmpp_listen {
            if auth.is_empty() && !xmpp.ip().is_loopback() {
                // The demo account must never face a network (PROTOCOLS.md 4.1).
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "--xmpp-listen {xmpp} is not a loopback address and there are no users: \
                         give --credentials, or --xmpp-listen off"
                    ),
                ));
            }
        }
        // Every worker gets its own socket for each listening address; the first socket
        // decides the port (port 0 asks the OS) and the others share it.
        // The log first: a second server on the same --data-dir stops here, before it binds.
        let metrics = Arc::new(Metrics::default());
        let storage = open_storage(&config, &metrics)?;
        let limits = Limits::from_config(&config);
        let hub = match &config.redis {
            Some(url) => {
                if config.data_dir.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "--redis and --data-dir: Redis keeps the channels, give one of the two",
                    ));
                }
                info!("keeping channels and queues in Redis at {url}");
                Hub::with_redis(
                    limits,
                    mailboxes.clone(),
                    metrics.clone(),
                    redis_options(&config, url),
                )
            }
            None => Hub::with_storage(limits, mailboxes.clone(), metrics.clone(), storage.clone()),
        };
        let hub = Arc::new(hub);
        restore(&hub, &config)?;
        hub.start_redis()?;
        let mut addresses = vec![(config.listen, Kind::Http)];
        if let Some(xmpp) = config.xmpp_listen {
            addresses.push((xmpp, Kind::Xmpp));
        }
        let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound_addrs = Vec::with_capacity(addresses.len());
        for &(wanted, kind) in &addresses {
            refuse_if_served(wanted)?;
            let first = listener(wanted)?;
            let bound = first.local_addr()?;
            bound_addrs.push(bound);
            per_worker[0].push(Listener::new(first, kind));
            for sockets in per_worker.iter_mut().skip(1) {
                sockets.push(Listener::new(listener(bound)?, kind));
            }
        }
        let addr = bound_addrs[0];
        let xmpp_addr = bound_addrs.get(1).copied();
        let store = crate::store::Store::new(auth.users());
        if let Some(state) = hub.stored_store() {
            // The log's last item store: refuse to serve a store we could not read back
            // rather than start with an empty one and overwrite it.
            store.restore(&state).map_err(|e| {
                io::Error::other(format!("the item store in --data-dir cannot be read: {e}"))
            })?;
            info!("recovered the item store ({} bytes)", state.len());
        }
        let shared = Arc::new(Shared {
            config,
            hub,
            metrics,
            auth,
            open: Default::default(),
            xmpp: Default::default(),
            store,
            bosh: Default::default(),
            status: crate::status::Status::new(addr, xmpp_addr),
        });
        storage.start(Arc::new(HubListener(Arc::downgrade(&shared))))?;
        let mut threads = Vec::with_capacity(workers);
        for (id, ((poll, listeners), mailbox)) in
            polls.into_iter().zip(per_worker).zip(mailboxes).enumerate()
        {
            let reactor = Reactor::new(id, poll, listeners, mailbox, shared.clone())?;
            let thread = std::thread::Builder::new()
                .name(format!("tidings-worker-{id}"))
                .spawn(move || reactor.run())?;
            threads.push(thread);
        }
        match xmpp_addr {
            Some(x) => {
                info!("tidings serving HTTP on {addr} and XMPP on {x} with {workers} workers")
            }
            None => info!("tidings serving on {addr} with {workers} workers"),
        }
        Ok(Server {
            addr,
            xmpp_addr,
            shared,
            threads,
            storage,
        })
    }

    /// The address the server listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The XMPP listener's address, when `--xmpp-listen` is on.
    pub fn xmpp_addr(&self) -> Option<SocketAddr> {
        self.xmpp_addr
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Waits for every worker to finish (after `Handle::shutdown`).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        // Everything the workers logged is written and synced; the directory is released.
        self.storage.close();
    }
}

/// Raises this process's soft open-file limit to its hard limit. Returns the new limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other precondition.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own; no other precondition.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
