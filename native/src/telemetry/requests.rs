//! Requests by outcome, for Istio's standard request metrics: one series per
//! (response code, gRPC status, response flag, protocol), each with the
//! request's duration to the end of its answer and the body bytes either way.
//!
//! The outcomes a destination sees are few (200, a 503 `UO`, a gRPC status or
//! two), so each destination keeps a small table of series made on first use:
//! a request finds its own with a short scan of atomics and takes no lock.
//! The table is bounded: past `SLOTS` distinct outcomes a request counts in
//! one overflow series, reported with code `other`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::counters::Buckets;

/// Distinct outcomes one destination keeps apart.
const SLOTS: usize = 32;

/// Istio's default bounds for `istio_request_duration_milliseconds`.
pub const DURATION_BOUNDS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
const DURATION_BOUNDS_US: [u64; 19] = [
    500,
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];
/// Istio's default bounds for `istio_request_bytes` and `istio_response_bytes`.
pub const BYTES_BOUNDS: [u64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Envoy's response flags this proxy sets, in the order their index keeps.
pub const FLAGS: [&str; 11] = [
    "-", "NR", "UH", "UO", "UF", "UR", "UPE", "UT", "DPE", "FI", "DC",
];

/// The index of `flag` in `FLAGS` (0, `-`, for none). Every flag the proxy
/// sets is listed there: the access log takes its flag from here too.
pub fn flag_index(flag: Option<&str>) -> u8 {
    let index = flag.map_or(Some(0), |f| FLAGS.iter().position(|&known| known == f));
    debug_assert!(
        index.is_some(),
        "response flag {flag:?} is missing from FLAGS"
    );
    index.and_then(|i| u8::try_from(i).ok()).unwrap_or(0)
}

/// What a request's series is chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The status the client got; 0 when no response came (a failed copy).
    pub status: u16,
    /// A gRPC call's `grpc-status`, when it had one.
    pub grpc_status: Option<u32>,
    /// Index in `FLAGS`.
    pub flag: u8,
    pub grpc: bool,
}

impl Outcome {
    /// Packed into one non-zero word (0 marks a free slot).
    fn key(self) -> u32 {
        let grpc_status = match self.grpc_status {
            Some(s) if s <= 16 => s + 1,
            Some(_) => 18,
            None => 0,
        };
        (1 << 31)
            | (u32::from(self.grpc) << 30)
            | (u32::from(self.flag & 0x1f) << 21)
            | (grpc_status << 16)
            | u32::from(self.status)
    }

    fn from_key(key: u32) -> Self {
        let grpc_status = (key >> 16) & 0x1f;
        Self {
            status: (key & 0xffff) as u16,
            grpc_status: match grpc_status {
                0 => None,
                18 => Some(u32::MAX),
                s => Some(s - 1),
            },
            flag: ((key >> 21) & 0x1f) as u8,
            grpc: key & (1 << 30) != 0,
        }
    }
}

/// Counts of one outcome.
#[derive(Debug, Default)]
struct Series {
    /// In microseconds, by `DURATION_BOUNDS_US`.
    duration: Buckets<20>,
    request_bytes: Buckets<11>,
    response_bytes: Buckets<11>,
}

impl Series {
    fn record(&self, elapsed: Duration, request_bytes: u64, response_bytes: u64) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.duration.record(us, &DURATION_BOUNDS_US);
        self.request_bytes.record(request_bytes, &BYTES_BOUNDS);
        self.response_bytes.record(response_bytes, &BYTES_BOUNDS);
    }
}

#[derive(Debug, Default)]
struct Slot {
    key: AtomicU32,
    series: OnceLock<Box<Series>>,
}

/// One destination's (or listener's, or mirror's) requests by outcome.
#[derive(Debug)]
pub struct RequestSeries {
    slots: Box<[Slot]>,
    overflow: Series,
}

impl Default for RequestSeries {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            overflow: Series::default(),
        }
    }
}

impl RequestSeries {
    /// Counts one request: `elapsed` from its head to the end of its answer.
    pub fn record(
        &self,
        outcome: Outcome,
        elapsed: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.series(outcome.key())
            .record(elapsed, request_bytes, response_bytes);
    }

    fn series(&self, key: u32) -> &Series {
        for slot in self.slots.iter() {
            let held = slot.key.load(Ordering::Acquire);
            let mine = held == key
                || (held == 0
                    && match slot
                        .key
                        .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => true,
                        Err(now) => now == key,
                    });
            if mine {
                return slot.series.get_or_init(Box::default);
            }
        }
        &self.overflow
    }

    pub fn report(&self) -> Vec<OutcomeReport> {
        let mut out: Vec<OutcomeReport> = self
            .slots
            .iter()
            .filter_map(|slot| {
                let key = slot.key.load(Ordering::Acquire);
                let series = slot.series.get()?;
                Some(OutcomeReport::new(Some(Outcome::from_key(key)), series))
            })
            .collect();
        let overflow = OutcomeReport::new(None, &self.overflow);
        if overflow.count > 0 {
            out.push(overflow);
        }
        out.retain(|r| r.count > 0);
        out
    }
}

/// A primary request being answered: counted in `series` when its answer's
/// body ends, or is dropped because the client went away (flag `DC`).
#[derive(Debug)]
pub struct Observed {
    pub series: Arc<RequestSeries>,
    pub started: Instant,
    pub outcome: Outcome,
    /// The request body's bytes, counted as they go upstream; `None`: it had none.
    pub bytes_in: Option<Arc<AtomicU64>>,
}

impl Observed {
    /// Marks the outcome with `flag` (`DC`, `UR`) unless the proxy already
    /// flagged the answer for a cause of its own.
    pub fn flag_unless_flagged(&mut self, flag: &'static str) {
        if self.outcome.flag == 0 {
            self.outcome.flag = flag_index(Some(flag));
        }
    }

    /// The outcome's flag; `None` for an upstream's own answer.
    pub fn flag(&self) -> Option<&'static str> {
        (self.outcome.flag != 0).then(|| FLAGS[usize::from(self.outcome.flag) % FLAGS.len()])
    }

    pub fn finish(self, bytes_out: u64) {
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        self.series
            .record(self.outcome, self.started.elapsed(), bytes_in, bytes_out);
    }
}

/// One outcome's counts, as the stats read hands them to Python.
#[derive(Debug, Serialize)]
pub struct OutcomeReport {
    /// The status, or `other` for the overflow series.
    pub response_code: String,
    /// The gRPC status, `other` past 16; absent when the call had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    pub response_flags: &'static str,
    /// `grpc` or `http`.
    pub protocol: &'static str,
    pub count: u64,
    /// Per-bucket counts of `DURATION_BOUNDS_MS` and +Inf.
    pub duration_ms: Vec<u64>,
    pub duration_sum_ms: f64,
    pub request_bytes: Vec<u64>,
    pub request_bytes_sum: u64,
    pub response_bytes: Vec<u64>,
    pub response_bytes_sum: u64,
}

impl OutcomeReport {
    fn new(outcome: Option<Outcome>, s: &Series) -> Self {
        let duration_ms = s.duration.counts();
        Self {
            response_code: outcome.map_or_else(|| "other".to_owned(), |o| o.status.to_string()),
            grpc_status: outcome.and_then(|o| o.grpc_status).map(|g| match g {
                0..=16 => g.to_string(),
                _ => "other".to_owned(),
            }),
            response_flags: FLAGS[usize::from(outcome.map_or(0, |o| o.flag)) % FLAGS.len()],
            protocol: if outcome.is_some_and(|o| o.grpc) {
                "grpc"
            } else {
                "http"
            },
            count: duration_ms.iter().sum(),
            duration_ms,
            duration_sum_ms: s.duration.sum() as f64 / 1000.0,
            request_bytes: s.request_bytes.counts(),
            request_bytes_sum: s.request_bytes.sum(),
            response_bytes: s.response_bytes.counts(),
            response_bytes_sum: s.response_bytes.sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, grpc_status: Option<u32>, flag: &str) -> Outcome {
        Outcome {
            status,
            grpc_status,
            flag: flag_index(Some(flag)),
            grpc: grpc_status.is_some(),
        }
    }

    #[test]
    fn an_outcome_survives_its_key() {
        for o in [
            outcome(200, None, "-"),
            outcome(503, None, "UO"),
            outcome(200, Some(0), "-"),
            outcome(200, Some(16), "-"),
            outcome(0, None, "DC"),
            outcome(599, None, "UPE"),
        ] {
            assert_eq!(Outcome::from_key(o.key()), o);
            assert_ne!(o.key(), 0);
        }
        assert_eq!(
            Outcome::from_key(outcome(200, Some(99), "-").key()).grpc_status,
            Some(u32::MAX)
        );
    }

    #[test]
    fn outcomes_are_counted_apart_with_their_durations_and_bytes() {
        let s = RequestSeries::default();
        s.record(outcome(200, None, "-"), Duration::from_micros(400), 0, 1000);
        s.record(outcome(200, None, "-"), Duration::from_millis(30), 5, 1001);
        s.record(outcome(503, None, "UO"), Duration::from_millis(2), 0, 19);
        let mut report = s.report();
        report.sort_by(|a, b| a.response_code.cmp(&b.response_code));
        let ok = &report[0];
        assert_eq!((ok.response_code.as_str(), ok.count), ("200", 2));
        assert_eq!(ok.duration_ms[0], 1, "0.4 ms is under 0.5");
        assert_eq!(ok.duration_ms[5], 1, "30 ms is in (25, 50]");
        assert_eq!(ok.request_bytes[0], 1, "no body: the first bucket (<= 1)");
        assert_eq!(ok.request_bytes[1], 1, "5 bytes: (1, 10]");
        assert_eq!(
            ok.response_bytes[3], 1,
            "1000 bytes: on the bound (100, 1000]"
        );
        assert_eq!(ok.response_bytes[4], 1, "1001 bytes: (1000, 10000]");
        assert_eq!(ok.response_bytes_sum, 2001);
        assert!((ok.duration_sum_ms - 30.4).abs() < 1e-9);
        assert_eq!(report[1].response_flags, "UO");
        assert_eq!(report[1].protocol, "http");
    }

    #[test]
    fn past_the_table_outcomes_count_in_one_overflow_series() {
        let s = RequestSeries::default();
        for status in 200..(200 + SLOTS as u16 + 5) {
            s.record(outcome(status, None, "-"), Duration::ZERO, 0, 0);
        }
        let report = s.report();
        assert_eq!(report.len(), SLOTS + 1);
        let other = report.iter().find(|r| r.response_code == "other").unwrap();
        assert_eq!(other.count, 5);
        assert_eq!(
            report.iter().map(|r| r.count).sum::<u64>(),
            SLOTS as u64 + 5
        );
    }

    #[test]
    fn threads_racing_for_slots_lose_no_count() {
        let s = std::sync::Arc::new(RequestSeries::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u16 {
                        let o = outcome(200 + (i + t) % 8, None, "-");
                        s.record(o, Duration::ZERO, 0, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let report = s.report();
        assert_eq!(report.len(), 8, "each outcome took one slot");
        assert_eq!(report.iter().map(|r| r.count).sum::<u64>(), 4000);
    }
}
