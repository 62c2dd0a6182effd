//! The one bulk read handed to Python: every counter of the engine, assembled
//! here from the telemetry of routes, destinations, mirrors, listeners,
//! upstream connections, the access log and the budgets.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::PoisonError;

use serde::Serialize;

use super::Engine;
use crate::telemetry::access_log::AccessLogReport;
use crate::telemetry::requests::{BYTES_BOUNDS, DURATION_BOUNDS_MS};
use crate::telemetry::{
    DestinationReport, ListenerReport, MirrorReport, OutlierReport, TcpMirrorReport, TcpReport,
    BUCKET_BOUNDS_SECONDS,
};
use crate::upstream::gauges::ConnectionReport;

#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub version: String,
    pub bucket_bounds_seconds: &'static [f64],
    /// Bounds of the by-outcome series' histograms (`requests` rows): Istio's.
    pub request_duration_bounds_ms: &'static [f64],
    pub request_bytes_bounds: &'static [u64],
    pub listeners: Vec<ListenerReport>,
    pub destinations: Vec<DestinationReport>,
    pub mirrors: Vec<MirrorReport>,
    pub upstream_connections: Vec<ConnectionReport>,
    pub access_log: AccessLogReport,
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

impl Engine {
    /// One bulk read of every counter.
    pub fn stats(&self) -> StatsReport {
        let (destinations, mirrors, (tcp, tcp_mirrors), (upgrades, upgrade_mirrors)) = {
            let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            let (destinations, mirrors) = registry.report();
            (
                destinations,
                mirrors,
                registry.tcp_report(),
                registry.upgrade_report(),
            )
        };
        let published = self.shared.published.load();
        StatsReport {
            version: published.table.version.clone(),
            outliers: published
                .table
                .clusters
                .iter()
                .filter_map(|c| c.outlier_report())
                .collect(),
            bucket_bounds_seconds: &BUCKET_BOUNDS_SECONDS,
            request_duration_bounds_ms: &DURATION_BOUNDS_MS,
            request_bytes_bounds: &BYTES_BOUNDS,
            listeners: self
                .shared
                .listeners
                .iter()
                .zip(&self.addresses)
                .map(|(s, a)| s.report(a.to_string()))
                .collect(),
            destinations,
            mirrors,
            upstream_connections: self.shared.connections.report(),
            access_log: self.shared.access_log.as_ref().map_or(
                AccessLogReport {
                    written: 0,
                    dropped: 0,
                },
                |log| log.report(),
            ),
            mirror_buffer_queued_bytes: self.shared.mirror_budget.queued(),
            tcp,
            tcp_mirrors,
            upgrades,
            upgrade_mirrors,
            compare_queue_depth: self.shared.compare_queue.depth.load(Relaxed),
            compare_buffer_held_bytes: self.shared.compare_queue.budget.held(),
        }
    }
}
