//! Small system helpers: a system-wide monotonic clock, the open-file limit,
//! the ephemeral port range and a process's resident memory.

use std::fs;

/// `CLOCK_MONOTONIC` in nanoseconds. Unlike `std::time::Instant`, its values
/// are comparable between processes on the same machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft open-file limit to the hard limit; returns the soft limit
/// now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// How many local ports the kernel hands out (`ip_local_port_range`).
pub fn ephemeral_ports() -> u64 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
            let lo = it.next()??;
            let hi = it.next()??;
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(28_232)
}

/// `VmRSS` of a process, in bytes.
pub fn vm_rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_vm_rss(&status).ok_or_else(|| format!("{path}: no VmRSS line"))
}

/// Proportional set size of a process (`Pss` of `/proc/PID/smaps_rollup`): its
/// private pages plus its share of pages shared with other processes, in bytes.
pub fn pss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_kib_line(&text, "Pss:").ok_or_else(|| format!("{path}: no Pss line"))
}

/// `<key> <n> kB` → bytes.
pub fn parse_kib_line(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let n: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(n * 1024)
}

pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let unit = words.next().unwrap_or("kB");
    Some(match unit {
        "kB" => n * 1024,
        "mB" | "MB" => n * 1024 * 1024,
        _ => n,
    })
}

/// User + system CPU time a process has used, in nanoseconds (`/proc/PID/stat`).
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = parse_stat_cpu_ticks(&stat)?;
    Some(ticks * 1_000_000_000 / (if tck > 0 { tck as u64 } else { 100 }))
}

/// `utime + stime` (clock ticks) from a `/proc/PID/stat` line. The command
/// name in parentheses may hold spaces and `)`: fields are counted after the
/// last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time (user + system, ns) of this process, all threads.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// How many file descriptors a process has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parses() {
        let s = "Name:\ttidings\nVmPeak:\t  100 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(s), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn stat_cpu_parses() {
        let line = "4242 (tid (x) y) S 1 4242 4242 0 -1 4194560 800 0 0 0 150 25 0 0 20 0 3 0 100 1000 200\n";
        assert_eq!(parse_stat_cpu_ticks(line), Some(175));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(proc_cpu_ns(std::process::id()).is_some());
    }

    #[test]
    fn pss_parses() {
        let t = "55d0-7ff [rollup]\nRss:                3000 kB\nPss:                1234 kB\nPss_Dirty:  10 kB\n";
        assert_eq!(parse_kib_line(t, "Pss:"), Some(1234 * 1024));
        assert_eq!(parse_kib_line(t, "Swap:"), None);
        assert!(pss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn own_rss_is_readable() {
        let rss = vm_rss_bytes(std::process::id()).unwrap();
        assert!(rss > 0);
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }
}
