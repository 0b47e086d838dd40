//! The on-disk storage (`--data-dir`): an append-only, checksummed, segmented log with group
//! commit, and background compaction into snapshots. `files` has the layout and replay.
//!
//! Appenders (the workers, under a hub shard lock) encode a record into one shared buffer
//! under a short mutex and get its `Lsn`. One **sync thread** owns the log file: it takes
//! everything buffered, writes it with one `pwrite`, makes it durable with one `fdatasync`
//! (`--fsync always`: every record appended meanwhile shares that sync — group commit across
//! every connection and worker), publishes the durable `Lsn` and tells the `Listener`, which
//! answers the waiting publishers and delivers their messages. `--fsync interval` syncs
//! every `INTERVAL_MS`; `--fsync never` writes at once and never syncs.
//!
//! Faults: a failed write or sync marks the log unhealthy: waiting publishers hear `failed`
//! (their answer is `503`), `writable` turns false (new changes are refused with `503`), and
//! the sync thread retries every `RETRY_MS` with what it could not write, kept in memory.
//! A failed write is cut off the file (`ftruncate`); after a failed `fdatasync` the file is
//! not trusted again (the kernel may have dropped the dirty pages and forgotten the error)
//! and the retry goes to a new segment. When a retry succeeds, service resumes.
//!
//! A **compaction thread** wakes when the log written since the last snapshot outgrows both
//! `--compact-bytes` and the last snapshot: it writes a new snapshot of the hub (through the
//! `Listener`) and removes the segments and snapshots it makes redundant, so the disk holds
//! about what memory holds.

use crate::sync::lock;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::files::{self, HEADER};
use super::record::{self, Record, Replayed};
use super::{Fsync, Listener, Lsn, ReplayReport, Storage, SyncState, INTERVAL_MS};
use crate::metrics::Metrics;
use crate::{error, info, warn};

/// How long the sync thread waits before retrying a failed write.
pub const RETRY_MS: u64 = 200;
/// A snapshot is written in pieces of about this size.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The settings of a `Disk` (from `Config`).
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// A segment is closed and a new one begun past this size.
    pub segment_bytes: u64,
    /// Compaction runs once this much log was written since the last snapshot (and more
    /// than the snapshot's own size).
    pub compact_bytes: u64,
    /// Appended bytes not yet taken by the sync thread; past it changes get `503`.
    pub buffer_bytes: usize,
}

/// What the appenders, the sync thread and the compactor share.
struct Log {
    pending: Mutex<Pending>,
    /// Signalled when the buffer gets its first bytes, or on roll or stop.
    wake: Condvar,
    durable: AtomicU64,
    failed: AtomicU64,
    healthy: AtomicBool,
    /// Bytes in `pending.buf`.
    buffered: AtomicUsize,
    /// The boundary of the last snapshot (begun), and its size (once written).
    snapshot_lsn: AtomicU64,
    snapshot_bytes: AtomicU64,
    /// Bytes of the log's files, for the gauge.
    disk_bytes: AtomicU64,
    compact: Mutex<CompactState>,
    compact_wake: Condvar,
}

struct Pending {
    buf: Vec<u8>,
    /// The `Lsn` the next record starts at.
    next: Lsn,
    /// The next write goes to a new segment (a compaction asked).
    roll: bool,
    stop: bool,
}

#[derive(Default)]
struct CompactState {
    wanted: bool,
    stop: bool,
}

impl Log {
    fn set_disk_bytes(&self, metrics: &Metrics, bytes: u64) {
        self.disk_bytes.store(bytes, SeqCst);
        metrics.storage_log_bytes.set(bytes);
    }

    fn add_disk_bytes(&self, metrics: &Metrics, bytes: u64) {
        let total = self.disk_bytes.fetch_add(bytes, SeqCst) + bytes;
        metrics.storage_log_bytes.set(total);
    }
}

/// The current segment, owned by the sync thread.
struct Writer {
    dir: PathBuf,
    file: File,
    id: u64,
    /// Bytes in the file (header included).
    len: u64,
    /// The `Lsn` at the end of what is written.
    written: Lsn,
    /// Taken from the buffer, not yet written and synced (kept across failed attempts).
    unsynced: Vec<u8>,
    must_roll: bool,
    segment_bytes: u64,
}

impl Writer {
    fn roll(&mut self) -> io::Result<()> {
        let id = self.id + 1;
        self.file = files::create_segment(&self.dir, id, self.written)?;
        self.id = id;
        self.len = HEADER;
        self.must_roll = false;
        Ok(())
    }

    /// Writes (and with `sync`, `fdatasync`s) what is unsynced. Returns the bytes written.
    fn flush(&mut self, sync: bool) -> io::Result<u64> {
        if self.must_roll || (self.len >= self.segment_bytes && !self.unsynced.is_empty()) {
            self.roll()?;
        }
        if self.unsynced.is_empty() {
            return Ok(0);
        }
        let at = self.len;
        if let Err(e) = self.file.write_all_at(&self.unsynced, at) {
            // Cut the partial write; if even that fails, continue in a new segment.
            self.must_roll = self.file.set_len(at).is_err();
            return Err(e);
        }
        if sync {
            if let Err(e) = self.file.sync_data() {
                let _ = self.file.set_len(at);
                self.must_roll = true;
                return Err(e);
            }
        }
        let n = self.unsynced.len() as u64;
        self.len += n;
        self.written += n;
        self.unsynced.clear();
        Ok(n)
    }
}

/// The on-disk storage (see the module doc).
pub struct Disk {
    opts: Options,
    metrics: Arc<Metrics>,
    log: Arc<Log>,
    writer: Mutex<Option<Writer>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lock_file: Mutex<Option<File>>,
}

impl Disk {
    /// Takes the directory (creating it; refused if another server holds it). Call
    /// `replay`, then `start`.
    pub fn open(opts: Options, metrics: Arc<Metrics>) -> io::Result<Disk> {
        let lock_file = files::lock(&opts.dir)?;
        Ok(Disk {
            opts,
            metrics,
            log: Arc::new(Log {
                pending: Mutex::new(Pending {
                    buf: Vec::new(),
                    next: 0,
                    roll: false,
                    stop: false,
                }),
                wake: Condvar::new(),
                durable: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                healthy: AtomicBool::new(true),
                buffered: AtomicUsize::new(0),
                snapshot_lsn: AtomicU64::new(0),
                snapshot_bytes: AtomicU64::new(0),
                disk_bytes: AtomicU64::new(0),
                compact: Mutex::new(CompactState::default()),
                compact_wake: Condvar::new(),
            }),
            writer: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            lock_file: Mutex::new(Some(lock_file)),
        })
    }

    fn compactor(&self) -> Compactor {
        Compactor {
            dir: self.opts.dir.clone(),
            log: self.log.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl Storage for Disk {
    fn keeps(&self) -> bool {
        true
    }

    fn waits(&self) -> bool {
        self.opts.fsync == Fsync::Always
    }

    fn writable(&self) -> bool {
        self.log.healthy.load(SeqCst) && self.log.buffered.load(SeqCst) < self.opts.buffer_bytes
    }

    fn append(&self, rec: &Record<'_>) -> Lsn {
        let mut p = lock(&self.log.pending);
        let was_empty = p.buf.is_empty();
        let n = record::encode(&mut p.buf, rec);
        p.next += n as u64;
        let lsn = p.next;
        self.log.buffered.store(p.buf.len(), SeqCst);
        drop(p);
        if was_empty {
            self.log.wake.notify_one();
        }
        lsn
    }

    fn sync(&self, lsn: Lsn) -> SyncState {
        if self.opts.fsync != Fsync::Always || self.log.durable.load(SeqCst) >= lsn {
            SyncState::Durable
        } else if self.log.failed.load(SeqCst) >= lsn {
            SyncState::Failed
        } else {
            SyncState::Pending
        }
    }

    fn replay(&self, apply: &mut dyn FnMut(Replayed)) -> io::Result<ReplayReport> {
        let dir = &self.opts.dir;
        let r = files::replay(dir, apply)?;
        let file = files::create_segment(dir, r.next_segment, r.end)?;
        *lock(&self.writer) = Some(Writer {
            dir: dir.clone(),
            file,
            id: r.next_segment,
            len: HEADER,
            written: r.end,
            unsynced: Vec::new(),
            must_roll: false,
            segment_bytes: self.opts.segment_bytes,
        });
        lock(&self.log.pending).next = r.end;
        self.log.durable.store(r.end, SeqCst);
        self.log.snapshot_lsn.store(r.snapshot, SeqCst);
        let snapshot_bytes = files::list(dir)?
            .snapshots
            .last()
            .and_then(|(_, p)| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        self.log.snapshot_bytes.store(snapshot_bytes, SeqCst);
        self.log
            .set_disk_bytes(&self.metrics, r.disk_bytes + HEADER);
        Ok(r.report)
    }

    fn compact(&self, listener: &dyn Listener) -> io::Result<bool> {
        self.compactor().compact(listener)
    }

    fn start(&self, listener: Arc<dyn Listener>) -> io::Result<()> {
        let writer = lock(&self.writer)
            .take()
            .ok_or_else(|| io::Error::other("storage started before replay"))?;
        let sync = SyncThread {
            log: self.log.clone(),
            metrics: self.metrics.clone(),
            listener: listener.clone(),
            fsync: self.opts.fsync,
            compact_bytes: self.opts.compact_bytes,
            dir: self.opts.dir.clone(),
        };
        let mut threads = lock(&self.threads);
        threads.push(
            std::thread::Builder::new()
                .name("tidings-log-sync".into())
                .spawn(move || sync.run(writer))?,
        );
        let compactor = self.compactor();
        threads.push(
            std::thread::Builder::new()
                .name("tidings-log-compact".into())
                .spawn(move || compactor.run(&*listener))?,
        );
        Ok(())
    }

    fn close(&self) {
        lock(&self.log.pending).stop = true;
        self.log.wake.notify_all();
        lock(&self.log.compact).stop = true;
        self.log.compact_wake.notify_all();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        lock(&self.lock_file).take();
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.close();
    }
}

/// When the sync thread should next write.
enum Wait {
    Now,
    Until(Instant),
    Forever,
}

struct SyncThread {
    log: Arc<Log>,
    metrics: Arc<Metrics>,
    listener: Arc<dyn Listener>,
    fsync: Fsync,
    compact_bytes: u64,
    dir: PathBuf,
}

impl SyncThread {
    /// `last_take`: when the previous write took the buffer (interval syncs are counted
    /// from there, so a record waits at most `INTERVAL_MS` to be taken).
    fn wait(&self, p: &Pending, unsynced: bool, last_take: Instant) -> Wait {
        let has = !p.buf.is_empty() || unsynced;
        if p.stop || p.roll {
            Wait::Now
        } else if !has {
            Wait::Forever
        } else if !self.log.healthy.load(SeqCst) {
            Wait::Until(last_take + Duration::from_millis(RETRY_MS))
        } else if self.fsync == Fsync::Interval {
            Wait::Until(last_take + Duration::from_millis(INTERVAL_MS))
        } else {
            Wait::Now
        }
    }

    fn run(self, mut w: Writer) {
        let mut last_take = Instant::now();
        let mut attempts_after_stop = 0;
        loop {
            let (end, stop) = {
                let mut p = lock(&self.log.pending);
                loop {
                    match self.wait(&p, !w.unsynced.is_empty(), last_take) {
                        Wait::Now => break,
                        Wait::Forever => {
                            p = self.log.wake.wait(p).unwrap_or_else(|e| e.into_inner())
                        }
                        Wait::Until(t) => {
                            let now = Instant::now();
                            if now >= t {
                                break;
                            }
                            p = self
                                .log
                                .wake
                                .wait_timeout(p, t - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                }
                if w.unsynced.is_empty() {
                    std::mem::swap(&mut w.unsynced, &mut p.buf);
                } else {
                    w.unsynced.extend_from_slice(&p.buf);
                    p.buf.clear();
                }
                self.log.buffered.store(0, SeqCst);
                w.must_roll |= std::mem::take(&mut p.roll);
                (p.next, p.stop)
            };
            let started = Instant::now();
            last_take = started;
            let result = w.flush(self.fsync != Fsync::Never);
            let finished = Instant::now();
            match result {
                Ok(n) => {
                    if n > 0 {
                        self.metrics.storage_bytes_written.add(n);
                        self.log.add_disk_bytes(&self.metrics, n);
                        if self.fsync != Fsync::Never {
                            self.metrics.storage_syncs.inc();
                            let us = (finished - started).as_micros() as u64;
                            self.metrics.storage_sync_micros.add(us);
                        }
                    }
                    if !self.log.healthy.swap(true, SeqCst) {
                        info!("the log in {} is written again", self.dir.display());
                    }
                    self.log.durable.store(end, SeqCst);
                    self.listener.synced(end, self.log.failed.load(SeqCst));
                }
                Err(e) => {
                    self.metrics.storage_errors.inc();
                    if self.log.healthy.swap(false, SeqCst) {
                        error!(
                            "writing the log in {} failed: {e}; changes get 503 until it works again",
                            self.dir.display()
                        );
                    }
                    self.log.failed.store(end, SeqCst);
                    self.listener.synced(self.log.durable.load(SeqCst), end);
                }
            }
            self.maybe_compact(end);
            if stop {
                attempts_after_stop += 1;
                if w.unsynced.is_empty() || attempts_after_stop >= 3 {
                    if !w.unsynced.is_empty() {
                        error!(
                            "stopping with {} bytes of log not written",
                            w.unsynced.len()
                        );
                    }
                    return;
                }
            }
        }
    }

    fn maybe_compact(&self, end: Lsn) {
        let since = end.saturating_sub(self.log.snapshot_lsn.load(SeqCst));
        let threshold = self.compact_bytes.max(self.log.snapshot_bytes.load(SeqCst));
        if since > threshold && self.log.healthy.load(SeqCst) {
            lock(&self.log.compact).wanted = true;
            self.log.compact_wake.notify_one();
        }
    }
}

/// Writes snapshots and removes what they make redundant.
struct Compactor {
    dir: PathBuf,
    log: Arc<Log>,
    metrics: Arc<Metrics>,
}

impl Compactor {
    fn run(self, listener: &dyn Listener) {
        loop {
            {
                let mut c = lock(&self.log.compact);
                while !c.wanted && !c.stop {
                    c = self
                        .log
                        .compact_wake
                        .wait(c)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if c.stop {
                    return;
                }
                c.wanted = false;
            }
            if let Err(e) = self.compact(listener) {
                self.metrics.storage_errors.inc();
                warn!("compacting the log in {} failed: {e}", self.dir.display());
            }
        }
    }

    fn compact(&self, listener: &dyn Listener) -> io::Result<bool> {
        let started = Instant::now();
        let boundary = {
            let mut p = lock(&self.log.pending);
            p.roll = true;
            p.next
        };
        self.log.wake.notify_one();
        if boundary <= self.log.snapshot_lsn.load(SeqCst) && boundary > 0 {
            return Ok(false);
        }
        self.log.snapshot_lsn.store(boundary, SeqCst);
        let path = files::snapshot_path(&self.dir, boundary);
        let tmp = path.with_extension("tmp");
        let bytes = match write_snapshot(&tmp, boundary, listener) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &path)?;
        files::sync_dir(&self.dir)?;
        self.log.snapshot_bytes.store(bytes, SeqCst);
        // Remove what the snapshot makes redundant: older snapshots, and every segment that
        // ends (where the next begins) at or before the boundary.
        let listing = files::list(&self.dir)?;
        for (b, p) in &listing.snapshots {
            if *b < boundary {
                std::fs::remove_file(p)?;
            }
        }
        for pair in listing.segments.windows(2) {
            if files::segment_base(&pair[1].1).is_some_and(|base| base <= boundary) {
                std::fs::remove_file(&pair[0].1)?;
            }
        }
        files::sync_dir(&self.dir)?;
        let after = files::list(&self.dir)?.bytes;
        self.log.set_disk_bytes(&self.metrics, after);
        self.metrics.storage_compactions.inc();
        info!(
            "compacted the log in {}: a {bytes}-byte snapshot, {after} bytes on disk, in {} ms",
            self.dir.display(),
            started.elapsed().as_millis()
        );
        Ok(true)
    }
}

/// Writes a snapshot file from the listener: header, records, `End`; synced. Returns its
/// size.
fn write_snapshot(tmp: &Path, boundary: Lsn, listener: &dyn Listener) -> io::Result<u64> {
    let mut file = File::create(tmp)?;
    file.write_all(&files::header_bytes(files::SNAPSHOT_MAGIC, boundary))?;
    let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK + 4096);
    let mut count = 0u64;
    let mut total = HEADER;
    let mut failed: Option<io::Error> = None;
    let whole = listener.snapshot(&mut |rec| {
        record::encode(&mut buf, rec);
        count += 1;
        if buf.len() >= SNAPSHOT_CHUNK {
            if failed.is_none() {
                failed = file.write_all(&buf).err();
            }
            total += buf.len() as u64;
            buf.clear();
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if !whole {
        return Err(io::Error::other("the hub is gone"));
    }
    record::encode(&mut buf, &Record::End { records: count });
    file.write_all(&buf)?;
    total += buf.len() as u64;
    file.sync_all()?;
    Ok(total)
}
