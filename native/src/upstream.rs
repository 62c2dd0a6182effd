//! Upstream clients: pooled keep-alive HTTP/1.1 connections, one pool set for
//! primaries and a separate one for mirrors, so a mirror can never take a
//! primary's connections.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{MirrorBody, RequestBody};
use crate::snapshot::UpstreamSettings;

pub type PrimaryClient = Client<HttpConnector, RequestBody>;
pub type MirrorClient = Client<HttpConnector, MirrorBody>;

/// The two client pools, shared across snapshots while their settings hold.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub primary: PrimaryClient,
    pub mirror: MirrorClient,
    pub settings: UpstreamSettings,
}

impl Upstreams {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Self {
            primary: client(settings),
            mirror: client(settings),
            settings: settings.clone(),
        }
    }
}

fn client<B>(settings: &UpstreamSettings) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_millis(settings.pool_idle_timeout_ms))
        .pool_max_idle_per_host(settings.pool_max_idle_per_endpoint as usize)
        // The Host header is the client's (or the mirror's shadow Host), never the endpoint's.
        .set_host(false)
        .build(connector)
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
