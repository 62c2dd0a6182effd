//! Counters that are not a closed list: latency histograms with fixed
//! buckets, and responses by status code. Atomics bumped with `Relaxed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the duration histogram buckets, in seconds (the last bucket is +Inf).
pub const BUCKET_BOUNDS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const BUCKET_BOUNDS_MICROS: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Counts of values by fixed upper bounds (`N - 1` of them; the last bucket
/// is +Inf), and their sum. Bucket counts are not cumulative here; the
/// exposition layer accumulates them.
#[derive(Debug)]
pub struct Buckets<const N: usize> {
    counts: [AtomicU64; N],
    sum: AtomicU64,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Buckets<N> {
    /// Counts `value` in the first bucket whose bound is at least `value`.
    #[inline]
    pub fn record(&self, value: u64, bounds: &[u64]) {
        debug_assert_eq!(bounds.len() + 1, N);
        self.counts[bounds.partition_point(|&bound| bound < value)].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// The count of each bucket, in order.
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Relaxed)).collect()
    }

    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }
}

/// Durations in `BUCKET_BOUNDS_SECONDS`, kept in microseconds.
#[derive(Debug, Default)]
pub struct Histogram(Buckets<17>);

impl Histogram {
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.record(micros, &BUCKET_BOUNDS_MICROS);
    }

    pub fn report(&self) -> HistogramReport {
        let buckets = self.0.counts();
        HistogramReport {
            count: buckets.iter().sum(),
            sum_seconds: self.0.sum() as f64 / 1e6,
            buckets,
        }
    }
}

/// Responses by status code, 100..=599; anything else lands in `other`.
#[derive(Debug)]
pub struct StatusCounts {
    codes: Box<[AtomicU64]>,
    other: AtomicU64,
}

impl Default for StatusCounts {
    fn default() -> Self {
        Self {
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            other: AtomicU64::new(0),
        }
    }
}

impl StatusCounts {
    #[inline]
    pub fn record(&self, status: u16) {
        match self.codes.get(usize::from(status).wrapping_sub(100)) {
            Some(counter) => counter.fetch_add(1, Relaxed),
            None => self.other.fetch_add(1, Relaxed),
        };
    }

    pub fn report(&self) -> HashMap<String, u64> {
        report_codes(&self.codes, 100, &self.other)
    }
}

/// gRPC answers by `grpc-status`, 0..=16 (OK to UNAUTHENTICATED); anything
/// else lands in `other`.
#[derive(Debug, Default)]
pub struct GrpcCounts {
    codes: [AtomicU64; 17],
    other: AtomicU64,
}

impl GrpcCounts {
    pub fn record(&self, status: u32) {
        match usize::try_from(status).ok().and_then(|i| self.codes.get(i)) {
            Some(counter) => counter.fetch_add(1, Relaxed),
            None => self.other.fetch_add(1, Relaxed),
        };
    }

    pub fn report(&self) -> HashMap<String, u64> {
        report_codes(&self.codes, 0, &self.other)
    }
}

/// The non-zero counts of `codes` (the first one is code `first`), by code,
/// and `other` when it is not zero.
fn report_codes(codes: &[AtomicU64], first: usize, other: &AtomicU64) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = codes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let n = c.load(Relaxed);
            (n > 0).then(|| ((i + first).to_string(), n))
        })
        .collect();
    let other = other.load(Relaxed);
    if other > 0 {
        out.insert("other".to_owned(), other);
    }
    out
}

#[derive(Debug, Serialize)]
pub struct HistogramReport {
    pub count: u64,
    pub sum_seconds: f64,
    /// One count per bucket of `BUCKET_BOUNDS_SECONDS`, then the +Inf bucket.
    pub buckets: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_are_counted_by_code_and_the_rest_as_other() {
        let counts = GrpcCounts::default();
        for status in [0, 0, 5, 16, 17, u32::MAX] {
            counts.record(status);
        }
        let report = counts.report();
        assert_eq!(report.get("0"), Some(&2));
        assert_eq!(report.get("5"), Some(&1));
        assert_eq!(report.get("16"), Some(&1));
        assert_eq!(report.get("other"), Some(&2));
        assert_eq!(report.len(), 4);
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.record(Duration::from_micros(500)); // on the bound: first bucket
        h.record(Duration::from_micros(501));
        h.record(Duration::from_secs(100)); // past every bound: +Inf
        let r = h.report();
        assert_eq!(r.count, 3);
        assert_eq!(r.buckets[0], 1);
        assert_eq!(r.buckets[1], 1);
        assert_eq!(r.buckets[16], 1);
        assert!((r.sum_seconds - 100.001001).abs() < 1e-9);
    }

    #[test]
    fn status_counts_keep_codes_apart() {
        let s = StatusCounts::default();
        s.record(200);
        s.record(200);
        s.record(503);
        s.record(99);
        s.record(600);
        let r = s.report();
        assert_eq!(r["200"], 2);
        assert_eq!(r["503"], 1);
        assert_eq!(r["other"], 2);
        assert_eq!(r.len(), 3);
    }
}
