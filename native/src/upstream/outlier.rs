//! Passive health: outlier detection (an endpoint that keeps failing is ejected
//! from the pick for a while) and the mirror's connect back-off (a mirror
//! endpoint that refuses connections gets no connect attempt per copy).
//!
//! All state is per-endpoint atomics read with `Relaxed`: a healthy endpoint
//! costs one load per pick and no clock read. Ejections are rare and claimed
//! with a compare-and-swap, so two requests never eject the same endpoint twice.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use crate::http::retry::TryOutcome;
use crate::snapshot;

/// Envoy's default `max_ejection_time`: however often an endpoint was ejected,
/// it is tried again after this long.
const MAX_EJECTION_MS: u64 = 300_000;
/// First mirror connect back-off, doubled per failure up to the cap.
const BACKOFF_BASE_MS: u64 = 250;
const BACKOFF_CAP_MS: u64 = 10_000;
/// While one copy probes a backed-off endpoint, the others are dropped for at
/// most this long (the probe's outcome replaces it sooner).
const PROBE_WINDOW_MS: u64 = 1_000;
/// `ejected_until` while an ejection is being decided.
const CLAIMED: u64 = u64::MAX;

/// Milliseconds on a process-wide monotonic clock; never 0, so 0 can mean "not set".
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// How an outcome counts: every failure is a 5xx; gateway errors are 502-504
/// and the local failures Envoy maps to them (connect failure, reset, timeout).
fn classify(outcome: TryOutcome) -> (bool, bool) {
    match outcome {
        TryOutcome::Status(code) => (code >= 500, matches!(code, 502..=504)),
        TryOutcome::ConnectFailure | TryOutcome::Reset | TryOutcome::Timeout => (true, true),
    }
}

/// A cluster's outlier detection: its policy and how many endpoints are out.
#[derive(Debug)]
pub struct Outliers {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    interval_ms: u64,
    base_ejection_ms: u64,
    max_ejection_percent: u64,
    endpoints: u64,
    ejected: AtomicU32,
    /// Ejections so far (a counter for stats and tests).
    pub ejections_total: AtomicU64,
}

impl Outliers {
    pub fn new(spec: &snapshot::OutlierDetection, endpoints: usize) -> Result<Self, String> {
        if spec.max_ejection_percent > 100 {
            return Err(format!(
                "max_ejection_percent {} is over 100",
                spec.max_ejection_percent
            ));
        }
        Ok(Self {
            consecutive_5xx: spec.consecutive_5xx,
            consecutive_gateway: spec.consecutive_gateway_errors,
            interval_ms: spec.interval_ms.max(1),
            base_ejection_ms: spec.base_ejection_time_ms,
            max_ejection_percent: u64::from(spec.max_ejection_percent),
            endpoints: endpoints as u64,
            ejected: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
        })
    }

    pub fn ejected_now(&self) -> u32 {
        self.ejected.load(Relaxed)
    }

    /// Counts one answer of `health`'s endpoint; ejects it when it has failed
    /// enough times in a row and the cluster can spare it.
    pub fn record(&self, health: &Health, outcome: TryOutcome) {
        let (is_5xx, is_gateway) = classify(outcome);
        if !is_5xx {
            // Loads first: a healthy endpoint's cache line is not written per request.
            if health.consecutive_5xx.load(Relaxed) != 0 {
                health.consecutive_5xx.store(0, Relaxed);
            }
            if health.consecutive_gateway.load(Relaxed) != 0 {
                health.consecutive_gateway.store(0, Relaxed);
            }
            return;
        }
        let n5 = health.consecutive_5xx.fetch_add(1, Relaxed) + 1;
        let ng = if is_gateway {
            health.consecutive_gateway.fetch_add(1, Relaxed) + 1
        } else {
            health.consecutive_gateway.store(0, Relaxed);
            0
        };
        let tripped = (self.consecutive_5xx > 0 && n5 >= self.consecutive_5xx)
            || (self.consecutive_gateway > 0 && ng >= self.consecutive_gateway);
        if tripped {
            self.eject(health, now_ms());
        }
    }

    fn eject(&self, health: &Health, now: u64) {
        // Counting starts over whether or not the ejection happens: a further
        // run of failures is needed to try again.
        health.consecutive_5xx.store(0, Relaxed);
        health.consecutive_gateway.store(0, Relaxed);
        if health
            .ejected_until
            .compare_exchange(0, CLAIMED, Relaxed, Relaxed)
            .is_err()
        {
            return; // already out (or being taken out by another request)
        }
        // Never beyond max_ejection_percent of the cluster, this ejection included.
        let admitted = self.ejected.fetch_update(Relaxed, Relaxed, |out| {
            (u64::from(out + 1) * 100 <= self.max_ejection_percent * self.endpoints)
                .then_some(out + 1)
        });
        if admitted.is_err() {
            health.ejected_until.store(0, Relaxed);
            return;
        }
        // Envoy's multiplier: one more per ejection, one less per interval the
        // endpoint stayed in service since its last ejection ended.
        let last_end = health.last_ejection_end.load(Relaxed);
        let forgiven = now.saturating_sub(last_end) / self.interval_ms;
        let times = health.times_ejected.load(Relaxed);
        let times = u32::try_from(u64::from(times).saturating_sub(forgiven)).unwrap_or(0) + 1;
        health.times_ejected.store(times, Relaxed);
        let lasts = self
            .base_ejection_ms
            .saturating_mul(u64::from(times))
            .min(MAX_EJECTION_MS.max(self.base_ejection_ms));
        health.ejected_until.store(now + lasts.max(1), Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
    }

    /// Whether the endpoint is out of the pick now; an ejection that has run
    /// its time is ended here, lazily, by whichever request sees it first.
    #[inline]
    pub fn is_ejected(&self, health: &Health) -> bool {
        let until = health.ejected_until.load(Relaxed);
        if until == 0 {
            return false;
        }
        if until == CLAIMED {
            return true;
        }
        let now = now_ms();
        if now < until {
            return true;
        }
        if health
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            health.last_ejection_end.store(now, Relaxed);
            self.ejected.fetch_sub(1, Relaxed);
        }
        false
    }
}

/// One endpoint's passive-health state.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// `now_ms()` when the current ejection ends; 0: in service.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    last_ejection_end: AtomicU64,
    /// The mirror's connect back-off (independent of outlier detection).
    pub backoff: Backoff,
}

/// Mirror copies to an endpoint that refuses connections are dropped at once
/// for a while, instead of costing a connect attempt each. When the back-off
/// runs out, one copy probes; the rest keep being dropped until it is done.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: AtomicU32,
    /// `now_ms()` until which copies are dropped; 0: none.
    until: AtomicU64,
}

impl Backoff {
    /// Whether a copy may try this endpoint now.
    #[inline]
    pub fn admits(&self) -> bool {
        let until = self.until.load(Relaxed);
        if until == 0 {
            return true;
        }
        let now = now_ms();
        now >= until
            && self
                .until
                .compare_exchange(until, now + PROBE_WINDOW_MS, Relaxed, Relaxed)
                .is_ok()
    }

    pub fn connect_failed(&self) {
        let n = self.failures.fetch_add(1, Relaxed).min(16);
        let wait = (BACKOFF_BASE_MS << n).min(BACKOFF_CAP_MS);
        self.until.store(now_ms() + wait, Relaxed);
    }

    pub fn connected(&self) {
        if self.until.load(Relaxed) != 0 || self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
            self.until.store(0, Relaxed);
        }
    }

    #[cfg(test)]
    pub fn is_backing_off(&self) -> bool {
        self.until.load(Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(c5xx: u32, gateway: u32, max_percent: u32, endpoints: usize) -> Outliers {
        Outliers::new(
            &snapshot::OutlierDetection {
                consecutive_5xx: c5xx,
                consecutive_gateway_errors: gateway,
                interval_ms: 10_000,
                base_ejection_time_ms: 30_000,
                max_ejection_percent: max_percent,
            },
            endpoints,
        )
        .unwrap()
    }

    fn fail(o: &Outliers, h: &Health, outcome: TryOutcome, times: u32) {
        for _ in 0..times {
            o.record(h, outcome);
        }
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_resets_the_count() {
        let o = policy(3, 0, 100, 2);
        let h = Health::default();
        fail(&o, &h, TryOutcome::Status(500), 2);
        o.record(&h, TryOutcome::Status(200));
        fail(&o, &h, TryOutcome::Status(500), 2);
        assert!(!o.is_ejected(&h));
        o.record(&h, TryOutcome::ConnectFailure);
        assert!(o.is_ejected(&h));
        assert_eq!(o.ejected_now(), 1);
        assert_eq!(o.ejections_total.load(Relaxed), 1);
    }

    #[test]
    fn gateway_errors_count_apart_from_other_5xx() {
        let o = policy(0, 2, 100, 1);
        let h = Health::default();
        o.record(&h, TryOutcome::Status(503));
        o.record(&h, TryOutcome::Status(500)); // not a gateway error: the run breaks
        o.record(&h, TryOutcome::Status(502));
        assert!(!o.is_ejected(&h));
        o.record(&h, TryOutcome::Timeout);
        assert!(o.is_ejected(&h));
        // 4xx is the client's fault, never the endpoint's.
        let o = policy(1, 0, 100, 1);
        let h = Health::default();
        o.record(&h, TryOutcome::Status(404));
        assert!(!o.is_ejected(&h));
    }

    #[test]
    fn max_ejection_percent_bounds_the_ejected_share() {
        let o = policy(1, 0, 50, 4);
        let hs: Vec<Health> = (0..4).map(|_| Health::default()).collect();
        for h in &hs {
            o.record(h, TryOutcome::Status(500));
        }
        let out = hs.iter().filter(|h| o.is_ejected(h)).count();
        assert_eq!(out, 2);
        // Default 10% of two endpoints: none may go.
        let o = policy(1, 0, 10, 2);
        let h = Health::default();
        o.record(&h, TryOutcome::Status(500));
        assert!(!o.is_ejected(&h));
        assert!(Outliers::new(
            &snapshot::OutlierDetection {
                consecutive_5xx: 1,
                consecutive_gateway_errors: 0,
                interval_ms: 1,
                base_ejection_time_ms: 1,
                max_ejection_percent: 101,
            },
            1
        )
        .is_err());
    }

    #[test]
    fn ejection_ends_after_its_time_and_repeats_last_longer() {
        let o = policy(1, 0, 100, 1);
        let h = Health::default();
        let now = now_ms();
        o.eject(&h, now);
        let first = h.ejected_until.load(Relaxed) - now;
        assert_eq!(first, 30_000);
        // Pretend the ejection ran out: the next pick ends it.
        h.ejected_until.store(now_ms(), Relaxed);
        assert!(!o.is_ejected(&h));
        assert_eq!(o.ejected_now(), 0);
        // Ejected again at once: twice as long.
        let now = now_ms();
        o.eject(&h, now);
        assert_eq!(h.ejected_until.load(Relaxed) - now, 60_000);
        // After many clean intervals the multiplier is forgiven.
        h.ejected_until.store(1, Relaxed);
        assert!(!o.is_ejected(&h));
        h.last_ejection_end.store(1, Relaxed);
        let later = now_ms() + 100_000;
        o.eject(&h, later);
        assert_eq!(h.ejected_until.load(Relaxed) - later, 30_000);
    }

    #[test]
    fn backoff_drops_then_lets_one_probe_through() {
        let b = Backoff::default();
        assert!(b.admits());
        b.connect_failed();
        assert!(!b.admits());
        assert!(b.is_backing_off());
        // Run the back-off out: exactly one copy gets to probe.
        b.until.store(now_ms(), Relaxed);
        assert!(b.admits());
        assert!(!b.admits());
        // The probe failed again: a longer back-off.
        b.connect_failed();
        let wait = b.until.load(Relaxed) - now_ms();
        assert!(
            wait > BACKOFF_BASE_MS && wait <= 2 * BACKOFF_BASE_MS,
            "{wait}"
        );
        b.connected();
        assert!(b.admits());
        for _ in 0..40 {
            b.connect_failed();
        }
        assert!(b.until.load(Relaxed) - now_ms() <= BACKOFF_CAP_MS);
    }
}
