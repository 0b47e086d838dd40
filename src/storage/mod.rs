//! Storage: what the hub keeps, behind one narrow interface (DESIGN.md, "storage").
//!
//! The hub describes every change of its state as a `Record` (a message stored, a queue's
//! acknowledgement state, a clock, a trim, a v1 address) and hands it to a `Storage`:
//!
//! - `append` takes a record and returns its log sequence number (`Lsn`): the position of its
//!   end in the log. Called under the hub's shard lock, so the records of one channel are in
//!   the log in the order their changes happened; it only copies bytes into a buffer.
//! - `sync` says whether a record is durable yet (or its write failed), so a publisher can be
//!   answered and its subscribers told only then.
//! - `replay` feeds every record back at start-up, oldest first, to rebuild the hub.
//! - `compact` writes a snapshot of the hub's state and drops the log it makes redundant.
//!
//! Two implementations: `Memory` (no `--data-dir`: keeps nothing, every record is "durable" at
//! once) and `disk::Disk` (an append-only, checksummed, segmented log with group commit by a
//! sync thread). A Redis-backed one would be a third.
//!
//! Only this module, the reactor and the connection I/O make system calls (DESIGN.md).

pub mod disk;
mod files;
pub mod record;

use std::io;
use std::sync::Arc;

pub use record::{MessageRecord, QueueState, Record, Replayed, StoredMessage};

/// A log sequence number: the log's length in bytes after a record (0: nothing logged).
pub type Lsn = u64;

/// When a push is answered, relative to the disk (`--fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Answered (and delivered) only once its record is on disk (`fdatasync`), with group
    /// commit: one sync for every record appended meanwhile.
    Always,
    /// Answered at once; the log is written and synced every `INTERVAL_MS` (a crash loses at
    /// most that much).
    Interval,
    /// Answered at once; the log is written at once and never synced (survives the process
    /// dying, not the machine).
    Never,
}

/// The `--fsync interval` period: a crash loses at most this much.
pub const INTERVAL_MS: u64 = 100;

impl Fsync {
    pub fn parse(v: &str) -> Result<Fsync, String> {
        match v {
            "always" => Ok(Fsync::Always),
            "interval" => Ok(Fsync::Interval),
            "never" => Ok(Fsync::Never),
            _ => Err(format!("always, interval or never, got {v:?}")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        }
    }
}

/// Where a record stands (`Storage::sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// On disk, as far as `--fsync` promises.
    Durable,
    /// Being written: the listener hears when it is done.
    Pending,
    /// Its write failed (full disk, I/O error): the publisher gets `503`.
    Failed,
}

/// What replay found.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub records: u64,
    /// Bytes of log read (snapshot and segments).
    pub bytes: u64,
    /// Bytes cut from a torn or corrupt tail.
    pub cut: u64,
    pub segments: usize,
    pub snapshot: bool,
}

/// Who hears from a storage's threads: the hub (through the server, which owns both).
pub trait Listener: Send + Sync {
    /// Records up to `durable` are on disk; those up to `failed` (if above) could not be
    /// written and their publishers must be told. Called by the sync thread, no lock held.
    fn synced(&self, durable: Lsn, failed: Lsn);
    /// Writes every record needed to rebuild the current state (a snapshot), through `out`.
    /// `false`: the state is gone (the server stopped), so no snapshot must be made.
    fn snapshot(&self, out: &mut dyn FnMut(&Record<'_>)) -> bool;
}

/// The hub's storage (see the module doc).
pub trait Storage: Send + Sync {
    /// Whether records are kept at all: `false` lets the hub skip making them.
    fn keeps(&self) -> bool;
    /// Whether a publisher waits for `sync` before its answer and its deliveries
    /// (`--fsync always`).
    fn waits(&self) -> bool;
    /// Whether appends are taken now: `false` while the disk is failing or the unwritten
    /// buffer is full. Changes are then refused with `503`.
    fn writable(&self) -> bool;
    /// Buffers one record; returns its `Lsn`. Cheap: a copy under a short lock.
    fn append(&self, rec: &Record<'_>) -> Lsn;
    /// Where the record ending at `lsn` stands.
    fn sync(&self, lsn: Lsn) -> SyncState;
    /// Feeds every record of the log to `apply`, oldest first. Call once, before `start`.
    fn replay(&self, apply: &mut dyn FnMut(Replayed)) -> io::Result<ReplayReport>;
    /// Writes a snapshot from `listener` and removes the log it makes redundant. Returns
    /// whether it compacted anything.
    fn compact(&self, listener: &dyn Listener) -> io::Result<bool>;
    /// Starts the storage's threads (sync, compaction), which report to `listener`.
    fn start(&self, listener: Arc<dyn Listener>) -> io::Result<()>;
    /// Writes and syncs everything buffered, stops the threads, releases the directory.
    fn close(&self);
}

/// No storage: nothing is kept, everything is durable at once (no `--data-dir`).
#[derive(Debug, Default)]
pub struct Memory;

impl Storage for Memory {
    fn keeps(&self) -> bool {
        false
    }
    fn waits(&self) -> bool {
        false
    }
    fn writable(&self) -> bool {
        true
    }
    fn append(&self, _rec: &Record<'_>) -> Lsn {
        0
    }
    fn sync(&self, _lsn: Lsn) -> SyncState {
        SyncState::Durable
    }
    fn replay(&self, _apply: &mut dyn FnMut(Replayed)) -> io::Result<ReplayReport> {
        Ok(ReplayReport::default())
    }
    fn compact(&self, _listener: &dyn Listener) -> io::Result<bool> {
        Ok(false)
    }
    fn start(&self, _listener: Arc<dyn Listener>) -> io::Result<()> {
        Ok(())
    }
    fn close(&self) {}
}
