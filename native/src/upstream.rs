//! Upstream clients: pooled keep-alive HTTP/1.1 connections, one pool set for
//! primaries and a separate one for mirrors, so a mirror can never take a
//! primary's connections.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpStream;

use crate::body::{MirrorBody, RequestBody};
use crate::snapshot::UpstreamSettings;

pub type PrimaryClient = Client<CountingConnector, RequestBody>;
pub type MirrorClient = Client<CountingConnector, MirrorBody>;

/// The two client pools, shared across snapshots while their settings hold.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub primary: PrimaryClient,
    pub mirror: MirrorClient,
    pub settings: UpstreamSettings,
}

impl Upstreams {
    pub fn new(settings: &UpstreamSettings, gauges: &Arc<ConnectionGauges>) -> Self {
        Self {
            primary: client(settings, Role::Primary, gauges),
            mirror: client(settings, Role::Mirror, gauges),
            settings: settings.clone(),
        }
    }
}

fn client<B>(
    settings: &UpstreamSettings,
    role: Role,
    gauges: &Arc<ConnectionGauges>,
) -> Client<CountingConnector, B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
    connector.enforce_http(true);
    let connector = CountingConnector {
        inner: connector,
        role,
        gauges: gauges.clone(),
    };
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_millis(settings.pool_idle_timeout_ms))
        .pool_max_idle_per_host(settings.pool_max_idle_per_endpoint as usize)
        // The Host header is the client's (or the mirror's shadow Host), never the endpoint's.
        .set_host(false)
        .build(connector)
}

// === connection counting ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Mirror,
}

#[derive(Debug, Default)]
struct Gauge {
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
    fn gauge(&self, role: Role, endpoint: &str) -> Arc<Gauge> {
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

/// HttpConnector that counts the connections it opens until they close.
#[derive(Debug, Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    role: Role,
    gauges: Arc<ConnectionGauges>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let gauge = self
            .gauges
            .gauge(self.role, uri.authority().map_or("", Authority::as_str));
        let connecting = tower_service::Service::call(&mut self.inner, uri);
        Box::pin(async move {
            let io = connecting.await?;
            gauge.open.fetch_add(1, Relaxed);
            gauge.opened_total.fetch_add(1, Relaxed);
            Ok(Counted { io, gauge })
        })
    }
}

/// An upstream connection that leaves the open count when it is dropped.
#[derive(Debug)]
pub struct Counted {
    io: TokioIo<TcpStream>,
    gauge: Arc<Gauge>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.open.fetch_sub(1, Relaxed);
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
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

/// `http://{endpoint}{path?query}`: where a request goes is always a configured
/// endpoint; the client's target only contributes its path.
pub fn upstream_uri(endpoint: &Authority, path: Option<&PathAndQuery>) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(endpoint.clone());
    parts.path_and_query = Some(
        path.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_takes_the_endpoint_and_only_the_path() {
        let endpoint: Authority = "127.0.0.1:9081".parse().unwrap();
        let target: Uri = "http://evil.example/steal?x=1".parse().unwrap();
        let uri = upstream_uri(&endpoint, target.path_and_query());
        assert_eq!(uri, "http://127.0.0.1:9081/steal?x=1");
        assert_eq!(upstream_uri(&endpoint, None), "http://127.0.0.1:9081/");
    }
}
