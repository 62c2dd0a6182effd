//! What the counters read as, for the one bulk read handed to Python
//! (serialised to JSON; the engine assembles the whole report).

use serde::Serialize;
use std::collections::HashMap;

use super::counters::HistogramReport;
use super::key::StatsKey;
use super::requests::OutcomeReport;

#[derive(Debug, Serialize)]
pub struct DestinationReport {
    #[serde(flatten)]
    pub key: StatsKey,
    pub responses: HashMap<String, u64>,
    /// gRPC answers by `grpc-status`.
    pub grpc_responses: HashMap<String, u64>,
    pub duration: HistogramReport,
    pub requests: Vec<OutcomeReport>,
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
    pub grpc_responses: HashMap<String, u64>,
    pub duration: HistogramReport,
    pub requests: Vec<OutcomeReport>,
    pub compare: CompareReport,
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
    pub requests: Vec<OutcomeReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierReport {
    pub host: String,
    pub subset: Option<String>,
    /// Endpoints out of the pick now.
    pub ejected: u32,
    /// Ejections since the configuration was applied.
    pub ejections_total: u64,
}

#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub sampled: u64,
    pub queued: u64,
    pub skipped: std::collections::HashMap<String, u64>,
}
