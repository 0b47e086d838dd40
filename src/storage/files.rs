//! The files of a `--data-dir`: the lock, the log's segments and snapshots, and replay.
//!
//! ```text
//! DIR/LOCK                        flock(2)ed by the server using DIR; holds its pid
//! DIR/<id:020>.log                a segment: header (magic, base Lsn), then records
//! DIR/snapshot-<lsn:020>.snap     a snapshot: header (magic, boundary Lsn), records, End
//! DIR/*.tmp                       a snapshot being written (removed at start)
//! ```
//!
//! The log is one stream of records cut into segments; an `Lsn` is a position in that
//! stream, and a segment's header says where in it the segment starts (`base`). A segment
//! ends where the next one starts: bytes of a segment past the next one's base were
//! rewritten there after a failed write, and are ignored. A snapshot with boundary `B` holds
//! the whole state as of some moment after `B` was read; replay applies it, then every record
//! of the segments from `B` on (replaying a change the snapshot already holds is harmless:
//! see `hub::restore`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::record::{self, Frame, Replayed};
use super::{Lsn, ReplayReport};
use crate::warn;

pub const SEGMENT_MAGIC: &[u8; 8] = b"TDLOG\x00\x00\x01";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TDSNAP\x00\x01";
/// Magic and `Lsn`.
pub const HEADER: u64 = 16;

/// Takes the directory's lock: creates the directory, opens `LOCK` and `flock`s it, so a
/// second server on the same directory is refused while this one runs (the kernel drops
/// the lock when the process dies, even by `kill -9`).
pub fn lock(dir: &Path) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "--data-dir {} is in use by another tidings (pid {}); refusing to share it",
                dir.display(),
                holder.trim()
            ),
        ));
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

pub fn snapshot_path(dir: &Path, boundary: Lsn) -> PathBuf {
    dir.join(format!("snapshot-{boundary:020}.snap"))
}

/// The log files of a directory, each list in order.
#[derive(Debug, Default)]
pub struct Listing {
    pub segments: Vec<(u64, PathBuf)>,
    pub snapshots: Vec<(Lsn, PathBuf)>,
    pub temps: Vec<PathBuf>,
    /// Bytes of every segment and snapshot.
    pub bytes: u64,
}

pub fn list(dir: &Path) -> io::Result<Listing> {
    let mut l = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let number = |s: &str| s.parse::<u64>().ok();
        if let Some(id) = name.strip_suffix(".log").and_then(number) {
            l.bytes += entry.metadata().map_or(0, |m| m.len());
            l.segments.push((id, path));
        } else if let Some(b) = name
            .strip_prefix("snapshot-")
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(number)
        {
            l.bytes += entry.metadata().map_or(0, |m| m.len());
            l.snapshots.push((b, path));
        } else if name.ends_with(".tmp") {
            l.temps.push(path);
        }
    }
    l.segments.sort();
    l.snapshots.sort();
    Ok(l)
}

/// The header's `Lsn`, if `bytes` start with `magic`.
pub fn header(bytes: &[u8], magic: &[u8; 8]) -> Option<Lsn> {
    let h = bytes.get(..HEADER as usize)?;
    (&h[..8] == magic).then(|| u64::from_le_bytes(h[8..16].try_into().unwrap_or_default()))
}

/// A segment's base, reading only its header.
pub fn segment_base(path: &Path) -> Option<Lsn> {
    use std::io::Read;
    let mut h = [0; HEADER as usize];
    File::open(path).ok()?.read_exact(&mut h).ok()?;
    header(&h, SEGMENT_MAGIC)
}

pub fn header_bytes(magic: &[u8; 8], lsn: Lsn) -> [u8; HEADER as usize] {
    let mut h = [0; HEADER as usize];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&lsn.to_le_bytes());
    h
}

/// Makes the directory's entries durable (a new, renamed or removed file).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `id` starting at `base`, its header on disk and its name in the
/// directory.
pub fn create_segment(dir: &Path, id: u64, base: Lsn) -> io::Result<File> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let written = file
        .write_all(&header_bytes(SEGMENT_MAGIC, base))
        .and_then(|()| file.sync_all())
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Where replay ended: the next segment to create and where the log continues.
#[derive(Debug, Default)]
pub struct Recovered {
    pub report: ReplayReport,
    /// The end of the last good record (or the snapshot's boundary): the next segment's base.
    pub end: Lsn,
    pub next_segment: u64,
    pub snapshot: Lsn,
    /// Bytes of every segment and snapshot after replay (and the cut).
    pub disk_bytes: u64,
}

/// Checks a snapshot: header, every record whole, and an `End` counting them. Returns its
/// boundary.
fn valid_snapshot(bytes: &[u8]) -> Option<Lsn> {
    let boundary = header(bytes, SNAPSHOT_MAGIC)?;
    let mut off = HEADER as usize;
    let mut count = 0u64;
    loop {
        match record::frame(&bytes[off..]) {
            Frame::Record(payload, len) => {
                off += len;
                if let Some(Replayed::End { records }) = record::decode(payload) {
                    return (records == count && off == bytes.len()).then_some(boundary);
                }
                count += 1;
            }
            Frame::Torn | Frame::Corrupt => return None,
        }
    }
}

/// Replays a directory (see the module doc): the newest whole snapshot, then the segments.
/// A torn or corrupt tail of the last segment is cut off the file.
pub fn replay(dir: &Path, apply: &mut dyn FnMut(Replayed)) -> io::Result<Recovered> {
    let listing = list(dir)?;
    for t in &listing.temps {
        let _ = fs::remove_file(t);
    }
    let mut out = Recovered::default();
    for (_, path) in listing.snapshots.iter().rev() {
        let bytes = fs::read(path)?;
        let Some(boundary) = valid_snapshot(&bytes) else {
            warn!("ignoring the damaged snapshot {}", path.display());
            continue;
        };
        let mut off = HEADER as usize;
        while let Frame::Record(payload, len) = record::frame(&bytes[off..]) {
            off += len;
            match record::decode(payload) {
                Some(Replayed::End { .. }) | None => break,
                Some(r) => apply(r),
            }
            out.report.records += 1;
        }
        out.report.bytes += bytes.len() as u64;
        out.report.snapshot = true;
        out.snapshot = boundary;
        out.end = boundary;
        break;
    }
    let n = listing.segments.len();
    for (i, (id, path)) in listing.segments.iter().enumerate() {
        out.next_segment = id + 1;
        let last = i + 1 == n;
        let limit = listing
            .segments
            .get(i + 1)
            .and_then(|(_, p)| segment_base(p))
            .unwrap_or(Lsn::MAX);
        let bytes = fs::read(path)?;
        if bytes.len() as u64 == HEADER && !last && header(&bytes, SEGMENT_MAGIC).is_some() {
            // Begun by a server that stopped before writing (a start that failed later).
            fs::remove_file(path)?;
            continue;
        }
        out.report.bytes += bytes.len() as u64;
        out.report.segments += 1;
        let Some(base) = header(&bytes, SEGMENT_MAGIC) else {
            warn!(
                "log segment {} has no header: {} bytes skipped",
                path.display(),
                bytes.len()
            );
            if last {
                out.report.cut += bytes.len() as u64;
                fs::remove_file(path)?;
            }
            continue;
        };
        if base > out.end && (out.report.records > 0 || out.report.snapshot) {
            warn!(
                "the log jumps from {} to {} at segment {}: records in between are missing",
                out.end,
                base,
                path.display()
            );
        }
        let mut off = HEADER as usize;
        let mut damaged = false;
        while off < bytes.len() {
            let start = base + (off as u64 - HEADER);
            if start >= limit {
                break;
            }
            let Frame::Record(payload, len) = record::frame(&bytes[off..]) else {
                damaged = true;
                break;
            };
            let Some(rec) = record::decode(payload) else {
                damaged = true;
                break;
            };
            off += len;
            let end = start + len as u64;
            if start >= out.snapshot {
                apply(rec);
                out.report.records += 1;
            }
            out.end = out.end.max(end);
        }
        if damaged {
            let rest = (bytes.len() - off) as u64;
            if last {
                warn!(
                    "the log's tail was torn or corrupt: cut {rest} bytes at the end of {} \
                     (the last good record ends at position {})",
                    path.display(),
                    out.end
                );
                OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(off as u64)?;
                out.report.cut += rest;
            } else if base + (off as u64 - HEADER) < limit {
                warn!(
                    "log segment {} is damaged: {rest} bytes skipped before the next segment",
                    path.display()
                );
            }
        }
        if base > out.end {
            out.end = base;
        }
    }
    out.next_segment = out.next_segment.max(1);
    out.disk_bytes = list(dir)?.bytes;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Record;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            // The cuts these tests make are expected: no warning lines.
            crate::log::set_level(crate::log::Level::Error);
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "tidings-files-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn clock(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        record::encode(
            &mut out,
            &Record::Clock {
                channel: "c",
                clock: n,
            },
        );
        out
    }

    /// Writes segment `id` at `base` holding `bytes`.
    fn segment(dir: &Path, id: u64, base: Lsn, bytes: &[u8]) {
        let mut all = header_bytes(SEGMENT_MAGIC, base).to_vec();
        all.extend_from_slice(bytes);
        fs::write(segment_path(dir, id), all).unwrap();
    }

    fn clocks(dir: &Path) -> (Vec<u64>, Recovered) {
        let mut got = Vec::new();
        let r = replay(dir, &mut |rec| match rec {
            Replayed::Clock { clock, .. } => got.push(clock),
            other => panic!("{other:?}"),
        })
        .unwrap();
        (got, r)
    }

    proptest! {
        /// A segment cut anywhere replays as the whole records before the cut; the file is
        /// cut there, so a second replay finds nothing to cut.
        #[test]
        fn a_cut_anywhere_keeps_the_whole_records_before_it(n in 1..20u64, cut in any::<usize>()) {
            let dir = Dir::new();
            let mut log = Vec::new();
            let mut ends = Vec::new();
            for i in 1..=n {
                log.extend(clock(i));
                ends.push(log.len());
            }
            let cut = cut % (log.len() + 1);
            segment(&dir.0, 1, 0, &log[..cut]);
            let (got, r) = clocks(&dir.0);
            let whole = ends.iter().filter(|&&e| e <= cut).count() as u64;
            prop_assert_eq!(got, (1..=whole).collect::<Vec<_>>());
            let good = ends.iter().copied().filter(|&e| e <= cut).max().unwrap_or(0);
            prop_assert_eq!(r.report.cut, (cut - good) as u64);
            prop_assert_eq!(r.end, good as u64);
            let (again, r2) = clocks(&dir.0);
            prop_assert_eq!(again.len() as u64, whole);
            prop_assert_eq!(r2.report.cut, 0);
        }
    }

    #[test]
    fn a_segment_ends_where_the_next_begins() {
        // A write that failed halfway left records in segment 1 that were written again,
        // whole, at the start of segment 2: they count once.
        let dir = Dir::new();
        let (a, b, c) = (clock(1), clock(2), clock(3));
        let mut first = a.clone();
        first.extend(&b[..b.len() / 2]);
        segment(&dir.0, 1, 0, &first);
        let mut second = b.clone();
        second.extend(&c);
        segment(&dir.0, 2, a.len() as u64, &second);
        let (got, r) = clocks(&dir.0);
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(r.report.cut, 0, "only the last segment's tail is cut");
        assert_eq!(r.next_segment, 3);
    }

    #[test]
    fn a_snapshot_then_the_records_from_its_boundary() {
        let dir = Dir::new();
        let (a, b) = (clock(1), clock(2));
        let mut log = a.clone();
        log.extend(&b);
        segment(&dir.0, 1, 0, &log);
        // A snapshot whose boundary is after `a`: it holds clock 10; `a` is skipped.
        let mut snap = header_bytes(SNAPSHOT_MAGIC, a.len() as u64).to_vec();
        snap.extend(clock(10));
        record::encode(&mut snap, &Record::End { records: 1 });
        fs::write(snapshot_path(&dir.0, a.len() as u64), &snap).unwrap();
        let (got, r) = clocks(&dir.0);
        assert_eq!(got, [10, 2]);
        assert!(r.report.snapshot);
        // A damaged snapshot is ignored: everything comes from the segments.
        let n = snap.len();
        snap[n - 1] ^= 1;
        fs::write(snapshot_path(&dir.0, a.len() as u64), &snap).unwrap();
        let (got, _) = clocks(&dir.0);
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = Dir::new();
        let first = lock(&dir.0).unwrap();
        let err = lock(&dir.0).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        lock(&dir.0).unwrap();
    }
}
