//! HTTP/1.1 Upgrade (WebSocket and others): the upgrade request goes upstream on a
//! connection of its own (never pooled: once upgraded it is no longer HTTP),
//! and after a 101 both upgraded connections are spliced through `splice`,
//! mirror feeds included. A CONNECT tunnel (`tunnel`) runs as the same session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::http::local_reply::LocalReply;
use crate::http::retry::TryOutcome;
use crate::splice::feed::Feed;
use crate::splice::relay;
use crate::telemetry::Held;
use crate::telemetry::TcpStats;
use crate::tls::Alpn;
use crate::upstream::cluster::{Cluster, HeldLease};
use crate::upstream::dial::{dial, DialError, Originate};
use crate::upstream::gauges::Counted;
use crate::upstream::pool::Pool;
use crate::upstream::protocol;

/// Sends the upgrade request to one endpoint of `cluster` on a new connection;
/// with the answer comes the hold on that endpoint, for the session to keep.
pub async fn send(
    pool: &Pool,
    cluster: &Arc<Cluster>,
    mut parts: Parts,
    timeout: Option<Duration>,
) -> Result<(Response<Incoming>, HeldLease), LocalReply> {
    let lease = cluster.acquire_held().map_err(LocalReply::from)?;
    let endpoint = lease.endpoint();
    protocol::for_upstream(&mut parts);
    // Auto SNI: the upgrade request's Host names the server.
    let host = || parts.headers.get(http::header::HOST)?.to_str().ok();
    let tls_failed = (TryOutcome::ConnectFailure, LocalReply::UpstreamTls);
    let name = cluster.tls_name(host);
    let request = Request::from_parts(parts, Empty::<Bytes>::new());
    let exchange = async {
        let name = name.map_err(|_| tls_failed)?;
        let authority = &endpoint.authority;
        let gauge = pool.gauges.gauge(pool.role, authority.as_str());
        let tls = cluster
            .tls
            .as_ref()
            .zip(name)
            .map(|(originator, name)| Originate {
                originator,
                name,
                alpn: Alpn::Http1,
            });
        let stream = dial(
            authority,
            pool.settings.connect_timeout,
            pool.settings.receive_buffer,
            tls,
            &gauge,
        )
        .await
        .map_err(|e| match e {
            DialError::Tls => tls_failed,
            DialError::Failed | DialError::TimedOut => {
                (TryOutcome::ConnectFailure, LocalReply::UpstreamConnect)
            }
        })?;
        let io = Counted::new(TokioIo::new(stream), gauge);
        let (mut sender, connection) = http1::handshake(io)
            .await
            .map_err(|_| (TryOutcome::Reset, LocalReply::UpstreamReset))?;
        // `with_upgrades` hands the socket to `hyper::upgrade::on` after a 101.
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        sender.send_request(request).await.map_err(|e| {
            let reply = if e.is_parse() {
                LocalReply::UpstreamProtocol
            } else {
                LocalReply::UpstreamReset
            };
            (TryOutcome::Reset, reply)
        })
    };
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or(Err((TryOutcome::Timeout, LocalReply::UpstreamTimeout))),
        None => exchange.await,
    };
    match result {
        Ok(response) => {
            cluster.record(endpoint, TryOutcome::Status(response.status().as_u16()));
            Ok((response, lease))
        }
        Err((outcome, reply)) => {
            cluster.record(endpoint, outcome);
            Err(reply)
        }
    }
}

/// The upstream side of a session.
pub enum Upstream {
    /// An upstream that answered the Upgrade with 101: hyper hands it over.
    /// The lease keeps the session counted by the destination's limit.
    Upgraded(OnUpgrade, HeldLease),
    /// A CONNECT tunnel's connection, opened by the proxy itself.
    Tunnel(crate::proxy::tunnel::Opened),
}

/// An accepted upgrade (or CONNECT): the two sides to splice once both are
/// handed over.
pub struct Session {
    pub client: OnUpgrade,
    pub upstream: Upstream,
    pub feeds: Vec<Feed>,
    pub idle: Option<Duration>,
    pub stats: std::sync::Arc<TcpStats>,
    /// The client connection's place in the listener's count and drain.
    pub hold: std::sync::Arc<dyn std::fmt::Debug + Send + Sync>,
}

impl Session {
    /// Runs after the 101 is written to the client (hyper hands the client's
    /// socket over only then); ends when both sides are done or idle.
    pub async fn run(self) {
        let Session {
            client,
            upstream,
            mut feeds,
            idle,
            stats,
            hold,
        } = self;
        use std::sync::atomic::Ordering::Relaxed;
        stats.connections_total.fetch_add(1, Relaxed);
        let Ok(client) = client.await else {
            return;
        };
        let client = TokioIo::new(client);
        let idle_ended = match upstream {
            Upstream::Upgraded(upstream, _lease) => {
                let Ok(upstream) = upstream.await else {
                    return;
                };
                let _active = Held::new(&stats.connections_active);
                let upstream = TokioIo::new(upstream);
                relay::splice_io(client, upstream, &mut feeds, idle, &stats).await
            }
            Upstream::Tunnel(opened) => {
                let _active = Held::new(&stats.connections_active);
                relay::splice_io(client, opened.stream, &mut feeds, idle, &stats).await
            }
        };
        if idle_ended {
            stats.idle_timeouts.fetch_add(1, Relaxed);
        }
        // Dropping the feeds lets each mirror write what it holds and close.
        drop(feeds);
        drop(hold);
    }
}
