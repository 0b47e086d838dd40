//! A compact latency histogram (microseconds) that worker processes send to
//! the parent as text: exact below 1,024 µs, then 512 buckets per power of
//! two (relative error below 0.2 %). Millions of samples cost a few KiB.

use std::collections::BTreeMap;

const EXACT: u64 = 1024;
const SUB_BITS: u32 = 9; // 512 sub-buckets per octave

/// The bucket of a value.
pub fn bucket(v: u64) -> u32 {
    if v < EXACT {
        return v as u32;
    }
    let msb = 63 - v.leading_zeros(); // >= 10
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) as u32 - (1 << SUB_BITS); // 0..512
    EXACT as u32 + (msb - 10) * (1 << SUB_BITS) + sub
}

/// The smallest value of a bucket.
pub fn bucket_low(b: u32) -> u64 {
    if (b as u64) < EXACT {
        return b as u64;
    }
    let rel = b - EXACT as u32;
    let msb = 10 + rel / (1 << SUB_BITS);
    let sub = (rel % (1 << SUB_BITS)) as u64;
    let shift = msb - SUB_BITS;
    ((1u64 << SUB_BITS) + sub) << shift
}

/// The largest value of a bucket.
pub fn bucket_high(b: u32) -> u64 {
    if (b as u64) < EXACT {
        return b as u64;
    }
    let rel = b - EXACT as u32;
    let msb = 10 + rel / (1 << SUB_BITS);
    bucket_low(b) + (1u64 << (msb - SUB_BITS)) - 1
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Hist {
    counts: BTreeMap<u32, u64>,
    total: u64,
    max: u64,
}

impl Hist {
    pub fn new() -> Hist {
        Hist::default()
    }

    pub fn record(&mut self, v: u64) {
        *self.counts.entry(bucket(v)).or_insert(0) += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The exact largest value recorded.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn merge(&mut self, other: &Hist) {
        for (&b, &n) in &other.counts {
            *self.counts.entry(b).or_insert(0) += n;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Nearest-rank percentile: the upper bound of the bucket holding it
    /// (never above the largest value recorded). `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let rank = rank.min(self.total);
        let mut seen = 0;
        for (&b, &n) in &self.counts {
            seen += n;
            if seen >= rank {
                return Some(bucket_high(b).min(self.max));
            }
        }
        Some(self.max)
    }

    /// `max;bucket:count,bucket:count,…` (empty buckets left out).
    pub fn encode(&self) -> String {
        let mut s = format!("{};", self.max);
        for (i, (b, n)) in self.counts.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{b}:{n}"));
        }
        s
    }

    pub fn decode(text: &str) -> Result<Hist, String> {
        let (max, rest) = text
            .split_once(';')
            .ok_or_else(|| format!("histogram without `;`: {text:?}"))?;
        let mut h = Hist {
            max: max.parse().map_err(|_| format!("histogram max {max:?}"))?,
            ..Hist::default()
        };
        for pair in rest.split(',').filter(|p| !p.is_empty()) {
            let (b, n) = pair
                .split_once(':')
                .ok_or_else(|| format!("histogram pair {pair:?}"))?;
            let b: u32 = b.parse().map_err(|_| format!("histogram bucket {b:?}"))?;
            let n: u64 = n.parse().map_err(|_| format!("histogram count {n:?}"))?;
            *h.counts.entry(b).or_insert(0) += n;
            h.total += n;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_contain_their_values() {
        let mut v = 0u64;
        while v < 1u64 << 40 {
            let b = bucket(v);
            assert!(bucket_low(b) <= v && v <= bucket_high(b), "{v} in {b}");
            if v >= EXACT {
                let width = bucket_high(b) - bucket_low(b) + 1;
                assert!(width as f64 / bucket_low(b) as f64 <= 0.002, "{v}");
            }
            v = v * 3 / 2 + 1;
        }
        for v in [1023u64, 1024, 1025, 2047, 2048, 4095, 4096, u64::MAX / 2] {
            let b = bucket(v);
            assert!(bucket_low(b) <= v && v <= bucket_high(b), "{v}");
        }
        assert_eq!(bucket(1023) + 1, bucket(1024));
        assert_eq!(bucket(2047) + 1, bucket(2048));
        assert!(bucket(u64::MAX) > bucket(u64::MAX / 2));
    }

    #[test]
    fn percentiles() {
        let mut h = Hist::new();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
        let mut big = Hist::new();
        for v in [10_000u64, 20_000, 30_000, 1_000_000] {
            big.record(v);
        }
        let p50 = big.percentile(50.0).unwrap();
        assert!((20_000..=20_040).contains(&p50), "{p50}");
        assert_eq!(big.percentile(100.0), Some(1_000_000));
        assert_eq!(big.max(), Some(1_000_000));
    }

    #[test]
    fn encode_decode_merge() {
        let mut a = Hist::new();
        for v in [5u64, 5, 7, 5000, 123_456] {
            a.record(v);
        }
        let text = a.encode();
        let b = Hist::decode(&text).unwrap();
        assert_eq!(a, b);
        let mut m = Hist::new();
        m.merge(&a);
        m.merge(&b);
        assert_eq!(m.count(), 10);
        assert_eq!(m.max(), Some(123_456));
        assert_eq!(Hist::decode("0;").unwrap().count(), 0);
        assert!(Hist::decode("nope").is_err());
        assert!(Hist::decode("1;3").is_err());
        assert!(Hist::decode("1;a:3").is_err());
    }
}
