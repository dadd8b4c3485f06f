//! Page-in latency percentiles from `VNOP_PAGEIN` durations, in memory that
//! does not grow with the number of page-ins.
//!
//! A log-linear histogram: durations below 128 ns have a bucket each; above,
//! each power of two is cut into 128 buckets, so a reported percentile is at
//! most 1/128 (0.8 %) above the true value (HdrHistogram's scheme with two
//! significant binary digits more than "1 %"). A file keeps only the buckets
//! its page-ins fell in (hashed; sorted only to read percentiles), so a
//! report holds O(files × distinct buckets), at most 3 328 buckets a file
//! for a `u32` duration.

use rustc_hash::FxHashMap;
use schemars::JsonSchema;
use serde::Serialize;

/// Bits of mantissa kept: 2^7 = 128 buckets per power of two.
const MANTISSA_BITS: u32 = 7;
const SUB_BUCKETS: u64 = 1 << MANTISSA_BITS;

/// The bucket of a duration.
fn bucket_of(v: u64) -> u16 {
    if v < SUB_BUCKETS {
        return v as u16;
    }
    let exp = 63 - v.leading_zeros(); // >= MANTISSA_BITS
    let shift = exp - MANTISSA_BITS;
    let mantissa = (v >> shift) & (SUB_BUCKETS - 1);
    // Group 1 is [128, 256) at width 1, group 2 [256, 512) at width 2, ...
    (u64::from(shift + 1) * SUB_BUCKETS + mantissa) as u16
}

/// The highest duration a bucket holds.
fn bucket_high(b: u16) -> u64 {
    let b = u64::from(b);
    if b < SUB_BUCKETS {
        return b;
    }
    let shift = b / SUB_BUCKETS - 1;
    let mantissa = b % SUB_BUCKETS;
    let low = (SUB_BUCKETS + mantissa) << shift;
    low + ((1u64 << shift) - 1)
}

/// Durations of one file's page-ins (or all of them), by bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Count by bucket.
    buckets: FxHashMap<u16, u64>,
    count: u64,
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Counts one duration.
    pub fn record(&mut self, ns: u64) {
        self.add(bucket_of(ns), 1);
        self.count += 1;
        self.max = self.max.max(ns);
    }

    fn add(&mut self, b: u16, n: u64) {
        *self.buckets.entry(b).or_insert(0) += n;
    }

    /// Adds every duration of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (&b, &n) in &other.buckets {
            self.add(b, n);
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn sorted(&self) -> Vec<(u16, u64)> {
        let mut v: Vec<(u16, u64)> = self.buckets.iter().map(|(&b, &n)| (b, n)).collect();
        v.sort_unstable();
        v
    }

    /// The `q` quantile (0 < q <= 1) by nearest rank: the smallest duration
    /// at least `q` of the page-ins took no longer than, rounded up to its
    /// bucket's top (never above the maximum). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.quantile_in(&self.sorted(), q)
    }

    fn quantile_in(&self, sorted: &[(u16, u64)], q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for &(b, n) in sorted {
            seen += n;
            if seen >= rank {
                return Some(bucket_high(b).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50, p90, p99 and the maximum.
    pub fn summary(&self) -> Option<Latency> {
        let sorted = self.sorted();
        Some(Latency {
            count: self.count,
            p50_ns: self.quantile_in(&sorted, 0.50)?,
            p90_ns: self.quantile_in(&sorted, 0.90)?,
            p99_ns: self.quantile_in(&sorted, 0.99)?,
            max_ns: self.max,
        })
    }
}

/// Page-in latency figures (`VNOP_PAGEIN` durations).
#[derive(Clone, Copy, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Latency {
    /// Page-ins measured.
    pub count: u64,
    /// Median, in ns (at most 0.8 % above the exact value).
    pub p50_ns: u64,
    /// 90th percentile, in ns.
    pub p90_ns: u64,
    /// 99th percentile, in ns.
    pub p99_ns: u64,
    /// The longest, exact, in ns.
    pub max_ns: u64,
}

/// A duration for people: ns, µs, ms or s with three significant digits.
pub fn human_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.3}", v / 1e3)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + "us"
    } else if ns < 1_000_000_000 {
        format!("{:.3}", v / 1e6)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + "ms"
    } else {
        format!("{:.3}", v / 1e9)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_128_and_within_a_128th_above() {
        for v in (0..200_000u64).chain([u64::from(u32::MAX), u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            let high = bucket_high(b);
            assert!(high >= v, "{v} above its bucket's top {high}");
            if v < 128 {
                assert_eq!(high, v);
            } else {
                assert!((high - v) as f64 <= v as f64 / 128.0, "{v} -> {high}");
            }
            // Buckets are ordered like the values.
            if v > 0 && v < 200_000 {
                assert!(bucket_of(v - 1) <= b);
            }
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 µs, one page-in each: p50 is 500 µs, p90 900, p99 990.
        let mut h = Histogram::new();
        for us in (1..=1000u64).rev() {
            h.record(us * 1000);
        }
        let s = h.summary().unwrap();
        assert_eq!((s.count, s.max_ns), (1000, 1_000_000));
        for (got, want) in [
            (s.p50_ns, 500_000),
            (s.p90_ns, 900_000),
            (s.p99_ns, 990_000),
        ] {
            assert!(
                got >= want && got as f64 <= want as f64 * (1.0 + 1.0 / 128.0),
                "{got} vs {want}"
            );
        }
        // Small values are exact.
        let mut h = Histogram::new();
        [5, 5, 5, 7, 100].iter().for_each(|&v| h.record(v));
        assert_eq!(
            (
                h.quantile(0.5),
                h.quantile(0.8),
                h.quantile(0.99),
                h.quantile(1.0)
            ),
            (Some(5), Some(7), Some(100), Some(100))
        );
        assert_eq!(Histogram::new().summary(), None);
    }

    #[test]
    fn merging_is_recording_both() {
        let (mut a, mut b, mut both) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in [10, 20_000, 3_000_000] {
            a.record(v);
            both.record(v);
        }
        for v in [20_001, 5, 9_999_999] {
            b.record(v);
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a, both);
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(25_000), "25us");
        assert_eq!(human_ns(1_234_567), "1.235ms");
        assert_eq!(human_ns(2_000_000_000), "2s");
    }
}
