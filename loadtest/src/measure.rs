//! Measuring the server (RSS, CPU time, open fds) and formatting figures for
//! the progress and SUMMARY lines (`na` where a value could not be measured).

use std::net::SocketAddr;

use crate::http::metrics_rss;
use crate::sys::{open_fds, proc_cpu_ns, pss_bytes, vm_rss_bytes};

pub enum RssSource {
    Pid(u32),
    /// Several processes (nginx's master and workers): the sum of their PSS
    /// (`smaps_rollup`), so that shared pages are counted once.
    Pids(Vec<u32>),
    Metrics(SocketAddr),
    Unavailable,
}

impl RssSource {
    /// Where the server's RSS comes from: `/proc/PID/status` with one
    /// `--server-pid`, the PSS sum with several, else `/metrics` (or nothing
    /// when `metrics` is false).
    pub fn new(pids: &[u32], server: SocketAddr, metrics: bool) -> Result<RssSource, String> {
        Ok(match pids {
            [] if !metrics => RssSource::Unavailable,
            [] => match metrics_rss(server) {
                Ok(_) => RssSource::Metrics(server),
                Err(e) => {
                    eprintln!(
                        "warning: no server RSS ({e}); pass --server-pid PID to measure memory"
                    );
                    RssSource::Unavailable
                }
            },
            [pid] => {
                vm_rss_bytes(*pid).map_err(|e| format!("--server-pid {pid}: {e}"))?;
                RssSource::Pid(*pid)
            }
            many => {
                for &p in many {
                    vm_rss_bytes(p).map_err(|e| format!("--server-pid {p}: {e}"))?;
                }
                RssSource::Pids(many.to_vec())
            }
        })
    }

    pub fn read(&self) -> Option<u64> {
        match self {
            RssSource::Pid(pid) => match vm_rss_bytes(*pid) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("warning: server RSS: {e}");
                    None
                }
            },
            RssSource::Pids(pids) => {
                let mut sum = 0;
                for pid in pids {
                    match pss_bytes(*pid) {
                        Ok(v) => sum += v,
                        Err(e) => {
                            eprintln!("warning: server RSS: {e}");
                            return None;
                        }
                    }
                }
                Some(sum)
            }
            RssSource::Metrics(addr) => match metrics_rss(*addr) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("warning: server RSS from /metrics: {e}");
                    None
                }
            },
            RssSource::Unavailable => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            RssSource::Pid(_) => "pid",
            RssSource::Pids(_) => "pss-sum",
            RssSource::Metrics(_) => "metrics",
            RssSource::Unavailable => "none",
        }
    }

    /// The server's process ids, when given.
    pub fn pids(&self) -> &[u32] {
        match self {
            RssSource::Pid(pid) => std::slice::from_ref(pid),
            RssSource::Pids(pids) => pids,
            _ => &[],
        }
    }

    /// User + system CPU time of the server's processes, summed, in ns.
    pub fn cpu_ns(&self) -> Option<u64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| proc_cpu_ns(p)).sum()
    }

    /// The server's open fds (one process only).
    pub fn fds(&self) -> Option<usize> {
        match self {
            RssSource::Pid(pid) => open_fds(*pid),
            _ => None,
        }
    }
}

/// `--server-pid`: none, one pid, or a comma-separated list (nginx's master
/// and workers: their memory and CPU are summed).
pub fn parse_pids(arg: Option<&str>) -> Result<Vec<u32>, String> {
    match arg {
        None => Ok(Vec::new()),
        Some(list) => list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--server-pid: `{p}` is not a pid"))
            })
            .collect(),
    }
}

/// `(rss − base) / count` in bytes, when both were measured and `count > 0`.
pub fn per_item(base: Option<u64>, rss: Option<u64>, count: usize) -> Option<f64> {
    match (base, rss) {
        (Some(b), Some(u)) if count > 0 => Some((u as f64 - b as f64) / count as f64),
        _ => None,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// `ms`, or `na`.
pub fn opt_ms(us: Option<u64>) -> String {
    us.map_or("na".into(), ms)
}

/// `p` of sorted latencies in ms, or `na` when there are none.
pub fn pct_ms(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        "na".into()
    } else {
        ms(percentile(sorted, p))
    }
}

pub fn kib(bytes: Option<u64>) -> String {
    bytes.map_or("na".into(), |b| (b / 1024).to_string())
}

/// A value with no decimals, or `na`.
pub fn whole(v: Option<f64>) -> String {
    v.map_or("na".into(), |v| format!("{v:.0}"))
}

pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lists() {
        assert_eq!(parse_pids(None), Ok(vec![]));
        assert_eq!(parse_pids(Some("7")), Ok(vec![7]));
        assert_eq!(parse_pids(Some("7, 8,9")), Ok(vec![7, 8, 9]));
        assert!(parse_pids(Some("7,x")).is_err());
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2], 0.0), 1);
    }
}
