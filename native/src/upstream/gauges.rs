//! Open upstream connections, by role and endpoint: the gauges behind
//! `pymirror_upstream_connections`, and the stream wrapper that keeps them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::telemetry::{self, Held};
use crate::transport::Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Mirror,
}

#[derive(Debug, Default)]
pub struct Gauge {
    open: AtomicU64,
    opened_total: AtomicU64,
    /// TLS handshakes originated: full, resumed (a cached session), failed.
    tls_full: AtomicU64,
    tls_resumed: AtomicU64,
    tls_failed: AtomicU64,
}

impl Gauge {
    pub(crate) fn tls_handshake(&self, resumed: bool) {
        let count = if resumed {
            &self.tls_resumed
        } else {
            &self.tls_full
        };
        count.fetch_add(1, Relaxed);
    }

    pub(crate) fn tls_failed(&self) {
        self.tls_failed.fetch_add(1, Relaxed);
    }
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
    pub tls_full: u64,
    pub tls_resumed: u64,
    pub tls_failed: u64,
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
                tls_full: g.tls_full.load(Relaxed),
                tls_resumed: g.tls_resumed.load(Relaxed),
                tls_failed: g.tls_failed.load(Relaxed),
            })
            .collect()
    }
}

impl telemetry::gauge::Gauge for Arc<Gauge> {
    fn gauge(&self) -> &AtomicU64 {
        &self.open
    }
}

/// An upstream connection's place in the open count (and one more in the
/// opened total), left when it is dropped.
#[derive(Debug)]
pub struct GaugeHold(#[allow(dead_code)] Held<Arc<Gauge>>);

impl GaugeHold {
    pub(crate) fn new(gauge: Arc<Gauge>) -> Self {
        gauge.opened_total.fetch_add(1, Relaxed);
        Self(Held::new(gauge))
    }
}

/// An upstream connection that leaves the open count when it is dropped.
#[derive(Debug)]
pub struct Counted {
    io: TokioIo<Stream>,
    _open: GaugeHold,
}

impl Counted {
    pub(crate) fn new(io: TokioIo<Stream>, gauge: Arc<Gauge>) -> Self {
        Self {
            io,
            _open: GaugeHold::new(gauge),
        }
    }

    /// The connection itself, for the project's own HTTP/1.1 (`http1`).
    pub(crate) fn stream_mut(&mut self) -> &mut Stream {
        self.io.inner_mut()
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
