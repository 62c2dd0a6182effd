//! Upstream clients: pooled keep-alive HTTP/1.1 connections, one pool set for
//! primaries and a separate one for mirrors, so a mirror can never take a
//! primary's connections.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::pool::{Pool, PoolSettings};
use crate::snapshot::UpstreamSettings;

/// Bytes a mirror's answer head may take, as a request head may by default
/// (`limits.maxHeaderBytes`): past it the copy fails (`protocol`) instead of
/// the worker reading endless headers for a response nobody waits for.
pub const MIRROR_MAX_HEAD_BYTES: usize = 64 * 1024;

/// The two pool sets, shared across snapshots while their settings hold.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub primary: Pool,
    pub mirror: Pool,
    pub settings: UpstreamSettings,
}

impl Upstreams {
    pub fn new(settings: &UpstreamSettings, gauges: &Arc<ConnectionGauges>) -> Self {
        let pool = |role| Pool {
            role,
            settings: PoolSettings {
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                idle_timeout: Duration::from_millis(settings.pool_idle_timeout_ms),
                max_idle_per_endpoint: settings.pool_max_idle_per_endpoint as usize,
                max_head_bytes: (role == Role::Mirror).then_some(MIRROR_MAX_HEAD_BYTES),
            },
            gauges: gauges.clone(),
        };
        Self {
            primary: pool(Role::Primary),
            mirror: pool(Role::Mirror),
            settings: settings.clone(),
        }
    }
}

// === connection counting ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Mirror,
}

#[derive(Debug, Default)]
pub(crate) struct Gauge {
    open: AtomicU64,
    opened_total: AtomicU64,
}

/// Open upstream connections by role and endpoint. The map is locked only
/// when a connection is opened and when stats are read, never per request.
#[derive(Debug, Default)]
pub struct ConnectionGauges {
    gauges: Mutex<HashMap<(Role, String), Arc<Gauge>>>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionReport {
    pub role: Role,
    pub endpoint: String,
    pub open: u64,
    pub opened_total: u64,
}

impl ConnectionGauges {
    pub(crate) fn gauge(&self, role: Role, endpoint: &str) -> Arc<Gauge> {
        let mut map = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry((role, endpoint.to_owned())).or_default().clone()
    }

    pub fn report(&self) -> Vec<ConnectionReport> {
        let map = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|((role, endpoint), g)| ConnectionReport {
                role: *role,
                endpoint: endpoint.clone(),
                open: g.open.load(Relaxed),
                opened_total: g.opened_total.load(Relaxed),
            })
            .collect()
    }
}

/// A spliced (tcp route) upstream connection's place in the open count, left
/// when it is dropped.
#[derive(Debug)]
pub struct GaugeHold(Arc<Gauge>);

impl GaugeHold {
    pub(crate) fn new(gauge: Arc<Gauge>) -> Self {
        gauge.open.fetch_add(1, Relaxed);
        gauge.opened_total.fetch_add(1, Relaxed);
        Self(gauge)
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// An upstream connection that leaves the open count when it is dropped.
#[derive(Debug)]
pub struct Counted {
    io: TokioIo<TcpStream>,
    gauge: Arc<Gauge>,
}

impl Counted {
    pub(crate) fn new(io: TokioIo<TcpStream>, gauge: Arc<Gauge>) -> Self {
        gauge.open.fetch_add(1, Relaxed);
        gauge.opened_total.fetch_add(1, Relaxed);
        Self { io, gauge }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.open.fetch_sub(1, Relaxed);
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The origin-form target sent upstream: only the path and query of what the
/// client asked for. Where it goes is always a configured endpoint.
pub fn origin_uri(path: Option<&PathAndQuery>) -> Uri {
    Uri::from(
        path.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keeps_only_the_path() {
        let target: Uri = "http://evil.example/steal?x=1".parse().unwrap();
        assert_eq!(origin_uri(target.path_and_query()), "/steal?x=1");
        assert_eq!(origin_uri(None), "/");
    }
}
