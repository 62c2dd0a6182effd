//! Counters and histograms: atomics indexed by Snapshot ids, bumped with `Relaxed`.
//!
//! A request touches only the counters of its own route, destination and mirrors;
//! no hashing, no lock. Counter sets are keyed by their labels in a registry so
//! that a reload keeps counting into the same series (Prometheus counters must
//! not go back to zero because a route was re-declared).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
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

/// A fixed-bucket histogram. Bucket counts are not cumulative here; the
/// exposition layer accumulates them.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 17],
    sum_micros: AtomicU64,
}

impl Histogram {
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = BUCKET_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    pub fn report(&self) -> HistogramReport {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        HistogramReport {
            count: buckets.iter().sum(),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
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
        let mut out: HashMap<String, u64> = self
            .codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then(|| ((i + 100).to_string(), n))
            })
            .collect();
        let other = self.other.load(Relaxed);
        if other > 0 {
            out.insert("other".to_owned(), other);
        }
        out
    }
}

/// The labels of a counter set: virtual service, route, destination host, subset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StatsKey {
    pub virtual_service: String,
    pub route: String,
    pub host: String,
    pub subset: Option<String>,
}

/// What a primary destination of one route answered.
#[derive(Debug, Default)]
pub struct DestinationStats {
    pub responses: StatusCounts,
    pub duration: Histogram,
}

/// Why a mirror copy was not sent, or was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The mirror already had `max_in_flight` copies outstanding.
    InFlightLimit,
    /// The copy's body buffer filled up (the mirror read slower than the
    /// primary), or the body was larger than the buffer allows.
    BodyBuffer,
    /// The mirror's cluster has no endpoint.
    NoEndpoint,
    /// The client's request body broke off before it was complete.
    RequestAborted,
    /// `after_primary_success` is set and the primary failed (or never answered).
    PrimaryFailed,
    /// The engine-wide budget of bytes queued for copies is spent.
    BufferBudget,
    /// Every mirror endpoint is ejected by outlier detection or backing off
    /// after refusing connections: no connect attempt is made.
    Ejected,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        Self::InFlightLimit,
        Self::BodyBuffer,
        Self::NoEndpoint,
        Self::RequestAborted,
        Self::PrimaryFailed,
        Self::BufferBudget,
        Self::Ejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::InFlightLimit => "in_flight_limit",
            Self::BodyBuffer => "body_buffer",
            Self::NoEndpoint => "no_endpoint",
            Self::RequestAborted => "request_aborted",
            Self::PrimaryFailed => "primary_failed",
            Self::BufferBudget => "buffer_budget",
            Self::Ejected => "ejected",
        }
    }
}

/// Why a copy failed: what went wrong with the mirror's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No connection could be opened.
    Connect,
    /// The connection was reset or closed before the answer's head was complete.
    Reset,
    /// The answer's head does not parse as HTTP/1.1, or is larger than allowed.
    Protocol,
    /// The answer's Content-Length is malformed or lists differing values.
    Framing,
    /// The body ended (closed or reset) short of what its framing announced.
    BodyIncomplete,
}

impl FailReason {
    pub const ALL: [FailReason; 5] = [
        Self::Connect,
        Self::Reset,
        Self::Protocol,
        Self::Framing,
        Self::BodyIncomplete,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
            Self::Framing => "framing",
            Self::BodyIncomplete => "body_incomplete",
        }
    }
}

/// What became of one mirror policy's copies.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// The mirror answered (any status) and its body was read to its end
    /// within the drain limit, then dropped (or compared).
    pub answered: AtomicU64,
    /// The mirror answered, but its body went past the drain limit (or a
    /// compared copy's capture limit): reading stopped and the connection
    /// was closed, so that what v2 sends costs a bounded amount.
    pub cut: AtomicU64,
    /// Connecting or exchanging with the mirror failed (see `failures`).
    pub failed: AtomicU64,
    failures: [AtomicU64; FailReason::ALL.len()],
    /// Body bytes read from the mirror's answers.
    pub answer_bytes: AtomicU64,
    /// The mirror did not finish within the mirror timeout.
    pub timed_out: AtomicU64,
    /// Copies admitted and not yet finished (a gauge).
    pub in_flight: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub responses: StatusCounts,
    pub duration: Histogram,
    /// Comparisons of this mirror's answers with the primary's.
    pub compare: crate::compare::CompareStats,
}

impl MirrorStats {
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn failed(&self, reason: FailReason) {
        self.failed.fetch_add(1, Relaxed);
        self.failures[reason as usize].fetch_add(1, Relaxed);
    }
}

/// One tcp route destination's connections and bytes.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    /// No connection to the destination could be opened (refused, timed out,
    /// no endpoint, or the cluster's connection limit reached).
    pub connect_failed: AtomicU64,
    /// Client -> upstream.
    pub bytes_received: AtomicU64,
    /// Upstream -> client.
    pub bytes_sent: AtomicU64,
    /// Connections closed for the idle timeout.
    pub idle_timeouts: AtomicU64,
}

/// Why a tcp mirror connection was cut (or never opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpCutReason {
    /// The mirror read slower than the client wrote: its bounded buffer filled.
    BufferFull,
    /// The mirror could not be connected to (refused, timed out).
    ConnectFailed,
    /// Writing to (or reading from) the mirror failed: reset, closed.
    Failed,
    /// The client's side ended and the mirror did not take the rest in time.
    Timeout,
    /// The mirror's cluster has no usable endpoint.
    NoEndpoint,
    /// An upgraded session's mirror did not answer its upgrade request with 101.
    NotUpgraded,
}

impl TcpCutReason {
    pub const ALL: [TcpCutReason; 6] = [
        Self::BufferFull,
        Self::ConnectFailed,
        Self::Failed,
        Self::Timeout,
        Self::NoEndpoint,
        Self::NotUpgraded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::BufferFull => "buffer_full",
            Self::ConnectFailed => "connect_failed",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::NoEndpoint => "no_endpoint",
            Self::NotUpgraded => "not_upgraded",
        }
    }
}

/// What became of one tcp mirror's connections.
#[derive(Debug, Default)]
pub struct TcpMirrorStats {
    /// Connections sampled for this mirror (a mirror connection was attempted).
    pub opened: AtomicU64,
    /// Mirror connections that took every byte of their client's stream.
    pub completed: AtomicU64,
    /// Mirror connections open now (a gauge).
    pub active: AtomicU64,
    /// Bytes written to the mirror.
    pub bytes_sent: AtomicU64,
    /// Client bytes the mirror never got because its connection was cut.
    pub bytes_dropped: AtomicU64,
    cut: [AtomicU64; TcpCutReason::ALL.len()],
}

impl TcpMirrorStats {
    #[inline]
    pub fn cut(&self, reason: TcpCutReason) {
        self.cut[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn cut_count(&self, reason: TcpCutReason) -> u64 {
        self.cut[reason as usize].load(Relaxed)
    }
}

/// Per-listener counts of what never reached a route.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    /// Connections closed at accept because the listener had `max_connections` open.
    pub connections_refused: AtomicU64,
    /// Requests answered 404 because no virtual host or route matched.
    pub unrouted: AtomicU64,
}

/// All counter sets ever created by this engine, by label. Touched only when a
/// snapshot is compiled and when stats are read, never per request.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    destinations: HashMap<StatsKey, Arc<DestinationStats>>,
    mirrors: HashMap<StatsKey, Arc<MirrorStats>>,
    tcp: HashMap<StatsKey, Arc<TcpStats>>,
    tcp_mirrors: HashMap<StatsKey, Arc<TcpMirrorStats>>,
    /// Upgraded sessions (WebSocket and other upgrades, CONNECT tunnels) of
    /// HTTP routes, by destination and mirror.
    upgrades: HashMap<StatsKey, Arc<TcpStats>>,
    upgrade_mirrors: HashMap<StatsKey, Arc<TcpMirrorStats>>,
}

impl StatsRegistry {
    pub fn destination(&mut self, key: StatsKey) -> Arc<DestinationStats> {
        self.destinations.entry(key).or_default().clone()
    }

    pub fn mirror(&mut self, key: StatsKey) -> Arc<MirrorStats> {
        self.mirrors.entry(key).or_default().clone()
    }

    pub fn tcp(&mut self, key: StatsKey) -> Arc<TcpStats> {
        self.tcp.entry(key).or_default().clone()
    }

    pub fn tcp_mirror(&mut self, key: StatsKey) -> Arc<TcpMirrorStats> {
        self.tcp_mirrors.entry(key).or_default().clone()
    }

    pub fn upgrade(&mut self, key: StatsKey) -> Arc<TcpStats> {
        self.upgrades.entry(key).or_default().clone()
    }

    pub fn upgrade_mirror(&mut self, key: StatsKey) -> Arc<TcpMirrorStats> {
        self.upgrade_mirrors.entry(key).or_default().clone()
    }

    pub fn tcp_report(&self) -> (Vec<TcpReport>, Vec<TcpMirrorReport>) {
        (
            spliced_report(&self.tcp, false),
            spliced_mirror_report(&self.tcp_mirrors, false),
        )
    }

    /// Like `tcp_report`, for upgraded sessions. Every HTTP destination has an
    /// entry; only those that have seen a session are reported.
    pub fn upgrade_report(&self) -> (Vec<TcpReport>, Vec<TcpMirrorReport>) {
        (
            spliced_report(&self.upgrades, true),
            spliced_mirror_report(&self.upgrade_mirrors, true),
        )
    }

    pub fn report(&self) -> (Vec<DestinationReport>, Vec<MirrorReport>) {
        let destinations = self
            .destinations
            .iter()
            .map(|(key, s)| DestinationReport {
                key: key.clone(),
                responses: s.responses.report(),
                duration: s.duration.report(),
            })
            .collect();
        let mirrors = self
            .mirrors
            .iter()
            .map(|(key, s)| MirrorReport {
                key: key.clone(),
                answered: s.answered.load(Relaxed),
                cut: s.cut.load(Relaxed),
                failed: s.failed.load(Relaxed),
                failures: FailReason::ALL
                    .iter()
                    .map(|&r| (r.label().to_owned(), s.failures[r as usize].load(Relaxed)))
                    .collect(),
                answer_bytes: s.answer_bytes.load(Relaxed),
                timed_out: s.timed_out.load(Relaxed),
                in_flight: s.in_flight.load(Relaxed),
                dropped: DropReason::ALL
                    .iter()
                    .map(|&r| (r.label().to_owned(), s.dropped[r as usize].load(Relaxed)))
                    .collect(),
                responses: s.responses.report(),
                duration: s.duration.report(),
                compare: s.compare.report(),
            })
            .collect();
        (destinations, mirrors)
    }
}

// === reports: the one bulk read handed to Python ===

#[derive(Debug, Serialize)]
pub struct HistogramReport {
    pub count: u64,
    pub sum_seconds: f64,
    /// One count per bucket of `BUCKET_BOUNDS_SECONDS`, then the +Inf bucket.
    pub buckets: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct DestinationReport {
    #[serde(flatten)]
    pub key: StatsKey,
    pub responses: HashMap<String, u64>,
    pub duration: HistogramReport,
}

#[derive(Debug, Serialize)]
pub struct MirrorReport {
    #[serde(flatten)]
    pub key: StatsKey,
    pub answered: u64,
    pub cut: u64,
    pub failed: u64,
    pub failures: HashMap<String, u64>,
    pub answer_bytes: u64,
    pub timed_out: u64,
    pub in_flight: u64,
    pub dropped: HashMap<String, u64>,
    pub responses: HashMap<String, u64>,
    pub duration: HistogramReport,
    pub compare: crate::compare::CompareReport,
}

#[derive(Debug, Serialize)]
pub struct TcpReport {
    #[serde(flatten)]
    pub key: StatsKey,
    pub connections_total: u64,
    pub connections_active: u64,
    pub connect_failed: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub idle_timeouts: u64,
}

#[derive(Debug, Serialize)]
pub struct TcpMirrorReport {
    #[serde(flatten)]
    pub key: StatsKey,
    pub opened: u64,
    pub completed: u64,
    pub active: u64,
    pub bytes_sent: u64,
    pub bytes_dropped: u64,
    pub cut: HashMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ListenerReport {
    pub address: String,
    pub connections_total: u64,
    pub connections_active: u64,
    pub connections_refused: u64,
    pub unrouted: u64,
}

impl ListenerStats {
    pub fn report(&self, address: String) -> ListenerReport {
        ListenerReport {
            address,
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            unrouted: self.unrouted.load(Relaxed),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub version: String,
    pub bucket_bounds_seconds: &'static [f64],
    pub listeners: Vec<ListenerReport>,
    pub destinations: Vec<DestinationReport>,
    pub mirrors: Vec<MirrorReport>,
    pub upstream_connections: Vec<crate::upstream::ConnectionReport>,
    pub access_log: crate::access_log::AccessLogReport,
    /// Bytes queued for mirror copies right now, against the engine-wide budget.
    pub mirror_buffer_queued_bytes: u64,
    /// Tcp routes, one entry per destination.
    pub tcp: Vec<TcpReport>,
    pub tcp_mirrors: Vec<TcpMirrorReport>,
    /// Upgraded sessions (WebSocket and other upgrades, CONNECT tunnels) of
    /// HTTP routes, as for tcp routes: only destinations and mirrors that have
    /// seen one.
    pub upgrades: Vec<TcpReport>,
    pub upgrade_mirrors: Vec<TcpMirrorReport>,
    /// Compared pairs waiting for the control plane to drain them.
    pub compare_queue_depth: u64,
    /// Bytes held by compare captures now, against the engine's compare budget.
    pub compare_buffer_held_bytes: u64,
    /// Outlier detection, per cluster that has it (it starts over on reload).
    pub outliers: Vec<OutlierReport>,
}

/// One cluster's outlier detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierReport {
    pub host: String,
    pub subset: Option<String>,
    /// Endpoints out of the pick now.
    pub ejected: u32,
    /// Ejections since the configuration was applied.
    pub ejections_total: u64,
}

fn spliced_report(map: &HashMap<StatsKey, Arc<TcpStats>>, only_used: bool) -> Vec<TcpReport> {
    map.iter()
        .filter(|(_, s)| {
            // A tunnel that could not be opened counts as a try.
            !only_used || s.connections_total.load(Relaxed) + s.connect_failed.load(Relaxed) > 0
        })
        .map(|(key, s)| TcpReport {
            key: key.clone(),
            connections_total: s.connections_total.load(Relaxed),
            connections_active: s.connections_active.load(Relaxed),
            connect_failed: s.connect_failed.load(Relaxed),
            bytes_received: s.bytes_received.load(Relaxed),
            bytes_sent: s.bytes_sent.load(Relaxed),
            idle_timeouts: s.idle_timeouts.load(Relaxed),
        })
        .collect()
}

fn spliced_mirror_report(
    map: &HashMap<StatsKey, Arc<TcpMirrorStats>>,
    only_used: bool,
) -> Vec<TcpMirrorReport> {
    map.iter()
        .filter(|(_, s)| !only_used || s.opened.load(Relaxed) > 0)
        .map(|(key, s)| TcpMirrorReport {
            key: key.clone(),
            opened: s.opened.load(Relaxed),
            completed: s.completed.load(Relaxed),
            active: s.active.load(Relaxed),
            bytes_sent: s.bytes_sent.load(Relaxed),
            bytes_dropped: s.bytes_dropped.load(Relaxed),
            cut: TcpCutReason::ALL
                .iter()
                .map(|&r| (r.label().to_owned(), s.cut_count(r)))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_reported_once_a_destination_or_mirror_has_had_one() {
        let key = |route: &str| StatsKey {
            virtual_service: "vs".into(),
            route: route.into(),
            host: "h".into(),
            subset: None,
        };
        let mut registry = StatsRegistry::default();
        let used = registry.upgrade(key("used"));
        let _idle = registry.upgrade(key("idle"));
        let refused = registry.upgrade(key("refused"));
        let mirror = registry.upgrade_mirror(key("used"));
        assert!(registry.upgrade_report().0.is_empty());
        used.connections_total.fetch_add(1, Relaxed);
        refused.connect_failed.fetch_add(1, Relaxed);
        mirror.opened.fetch_add(1, Relaxed);
        mirror.cut(TcpCutReason::NotUpgraded);
        let (mut sessions, mirrors) = registry.upgrade_report();
        sessions.sort_by(|a, b| a.key.route.cmp(&b.key.route));
        let routes: Vec<_> = sessions.iter().map(|s| s.key.route.as_str()).collect();
        assert_eq!(routes, ["refused", "used"], "a failed tunnel is a try");
        assert_eq!(mirrors[0].cut["not_upgraded"], 1);
        assert!(
            registry.tcp_report().0.is_empty(),
            "tcp routes report apart"
        );
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

    #[test]
    fn registry_reuses_counters_for_the_same_labels() {
        let mut reg = StatsRegistry::default();
        let key = StatsKey {
            virtual_service: "reviews".into(),
            route: "0".into(),
            host: "reviews".into(),
            subset: Some("v1".into()),
        };
        let a = reg.destination(key.clone());
        a.responses.record(200);
        let b = reg.destination(key);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(reg.report().0[0].responses["200"], 1);
    }
}
