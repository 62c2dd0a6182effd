//! The counter sets of routes, destinations and mirrors, created per label set
//! when a snapshot is compiled and kept in a registry, so that a reload keeps
//! counting into the same series (Prometheus counters must not go back to zero
//! because a route was re-declared). A request touches only the counters of its
//! own route, destination and mirrors: no hashing, no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::counters::{GrpcCounts, Histogram, StatusCounts};
use super::key::StatsKey;
use super::reasons::ClosedList;
use super::reasons::{Counts, DropReason, FailReason, SkipReason, TcpCutReason};
use super::report::{
    CompareReport, DestinationReport, ListenerReport, MirrorReport, TcpMirrorReport, TcpReport,
};
use super::requests::RequestSeries;

/// What a primary destination of one route answered.
#[derive(Debug, Default)]
pub struct DestinationStats {
    pub responses: StatusCounts,
    /// gRPC calls' answers by `grpc-status` (theirs is always HTTP 200).
    pub grpc: GrpcCounts,
    pub duration: Histogram,
    /// By outcome, to the end of the answer (Istio's request metrics).
    pub requests: Arc<RequestSeries>,
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
    failures: Counts<FailReason>,
    /// Body bytes read from the mirror's answers.
    pub answer_bytes: AtomicU64,
    /// The mirror did not finish within the mirror timeout.
    pub timed_out: AtomicU64,
    /// Copies admitted and not yet finished (a gauge).
    pub in_flight: AtomicU64,
    dropped: Counts<DropReason>,
    pub responses: StatusCounts,
    pub grpc: GrpcCounts,
    pub duration: Histogram,
    /// Copies sent, by outcome (Istio's request metrics).
    pub requests: RequestSeries,
    /// Comparisons of this mirror's answers with the primary's.
    pub compare: CompareStats,
}

impl MirrorStats {
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        self.dropped.add(reason);
    }

    pub fn failed(&self, reason: FailReason) {
        self.failed.fetch_add(1, Relaxed);
        self.failures.add(reason);
    }
}

/// Counts of one mirror policy's comparisons (reported with its stats).
#[derive(Debug, Default)]
pub struct CompareStats {
    /// Copies chosen for comparison.
    pub sampled: AtomicU64,
    /// Pairs handed to the control plane.
    pub queued: AtomicU64,
    skipped: Counts<SkipReason>,
}

impl CompareStats {
    pub fn skipped(&self, reason: SkipReason) {
        self.skipped.add(reason);
    }

    pub fn report(&self) -> CompareReport {
        CompareReport {
            sampled: self.sampled.load(Relaxed),
            queued: self.queued.load(Relaxed),
            skipped: self.skipped.report(),
        }
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
    cut: Counts<TcpCutReason>,
}

impl TcpMirrorStats {
    #[inline]
    pub fn cut(&self, reason: TcpCutReason) {
        self.cut.add(reason);
    }

    pub fn cut_count(&self, reason: TcpCutReason) -> u64 {
        self.cut.get(reason)
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
    /// Requests that reached no destination (no route, refused), by outcome.
    pub requests: Arc<RequestSeries>,
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
                grpc_responses: s.grpc.report(),
                duration: s.duration.report(),
                requests: s.requests.report(),
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
                failures: s.failures.report(),
                answer_bytes: s.answer_bytes.load(Relaxed),
                timed_out: s.timed_out.load(Relaxed),
                in_flight: s.in_flight.load(Relaxed),
                dropped: s.dropped.report(),
                responses: s.responses.report(),
                grpc_responses: s.grpc.report(),
                duration: s.duration.report(),
                requests: s.requests.report(),
                compare: s.compare.report(),
            })
            .collect();
        (destinations, mirrors)
    }
}

impl ListenerStats {
    pub fn report(&self, address: String) -> ListenerReport {
        ListenerReport {
            address,
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            unrouted: self.unrouted.load(Relaxed),
            requests: self.requests.report(),
        }
    }
}

/// One cluster's outlier detection.
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
