//! The state every connection of an engine shares (what requests read, swapped
//! whole on reload; the counters; the budgets), and one accepted connection.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::body::MirrorBudget;
use crate::http::inspect::Findings;
use crate::mirror::compare::CompareQueue;
use crate::route::RouteTable;
use crate::snapshot::Limits;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::ListenerStats;
use crate::tls::{Bound, ClientIdentity, Terminator};
use crate::upstream::gauges::ConnectionGauges;
use crate::upstream::Upstreams;

/// What requests read: the route table and the client pools, swapped as one.
#[derive(Debug)]
pub struct Published {
    pub table: RouteTable,
    pub upstreams: Upstreams,
    /// Applied to connections accepted while this is published.
    pub limits: Limits,
    /// Each listener's TLS terminator, by index (`None`: plaintext). New
    /// handshakes use the one published now: a reload rotates certificates.
    pub tls: Vec<Option<Terminator>>,
}

/// State shared by every connection of an engine.
#[derive(Debug)]
pub struct Shared {
    pub published: ArcSwap<Published>,
    pub listeners: Vec<ListenerStats>,
    pub connections: Arc<ConnectionGauges>,
    pub access_log: Option<Arc<AccessLog>>,
    pub mirror_budget: Arc<MirrorBudget>,
    /// Compared pairs on their way to the control plane.
    pub compare_queue: Arc<CompareQueue>,
}

/// One accepted connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub shared: Arc<Shared>,
    pub listener: usize,
    /// The listener's port (for `port` match conditions).
    pub port: u16,
    /// Request head bytes accepted (hyper bounds its read buffer, not the head).
    pub max_header_bytes: usize,
    pub peer: SocketAddr,
    /// The peer's address as `x-forwarded-for` names it, made once.
    pub forwarded_for: http::HeaderValue,
    /// On a TLS listener, the certificate entry its handshake chose (requests
    /// for another entry's hosts are misdirected); `None`: plaintext.
    pub tls: Option<Bound>,
    /// What the byte-stream side saw of each request head (see `inspect`).
    pub findings: Arc<Findings>,
    /// Dropped with the last holder: the connection's task, or the session
    /// an upgrade spliced it into.
    pub hold: Arc<dyn std::fmt::Debug + Send + Sync>,
    /// What its requests are doing, for its idle timeout.
    pub activity: Arc<super::Activity>,
    /// Its answers are written by the connection's own HTTP/1.1 session,
    /// which writes fields kept as they came (`http::raw_fields`); hyper's
    /// servers write only a map.
    pub writes_raw_fields: bool,
}

impl Connection {
    /// The client's verified certificate, on a MUTUAL listener.
    pub fn client(&self) -> Option<&ClientIdentity> {
        self.tls.as_ref().and_then(Bound::client)
    }
}
