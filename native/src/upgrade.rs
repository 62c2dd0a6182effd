//! HTTP/1.1 Upgrade (WebSocket and others): the upgrade request goes upstream on a
//! connection of its own (never pooled: once upgraded it is no longer HTTP),
//! and after a 101 both upgraded connections are spliced through `splice`,
//! mirror feeds included. A CONNECT tunnel (`tunnel`) runs as the same session.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cluster::{Cluster, HeldLease};
use crate::error::LocalReply;
use crate::pool::Pool;
use crate::retry::TryOutcome;
use crate::splice::{self, Feed};
use crate::stats::TcpStats;
use crate::upstream::{origin_uri, Counted};

/// The `Upgrade` value of an upgrade request to splice (HTTP/1.1, `Connection`
/// naming `upgrade`, no body): WebSocket, or any protocol the upstream agrees
/// to with a 101 (`spdy/3.1` of `kubectl exec`, a custom one). Not `h2c`: its
/// upgraded connection is HTTP/2, whose requests this proxy would no longer
/// route; such a request loses its upgrade headers and is served as HTTP/1.1.
pub fn requested(headers: &HeaderMap, version: Version, has_body: bool) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || has_body {
        return None;
    }
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let upgrade = headers.get(header::UPGRADE)?;
    let spliceable = upgrade.to_str().is_ok_and(|v| {
        let protocols: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let h2c = |p: &&str| {
            p.split('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("h2c"))
        };
        !protocols.is_empty() && !protocols.iter().any(h2c)
    });
    (connection_upgrade && spliceable).then(|| upgrade.clone())
}

/// Puts the upgrade headers back on a request whose hop-by-hop headers went.
pub fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The request head as bytes, for a mirror spoken to without an HTTP client.
pub fn head_bytes(parts: &Parts) -> Bytes {
    let target = origin_uri(parts.uri.path_and_query());
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(parts.method.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(target.to_string().as_bytes());
    head.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

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
    parts.uri = origin_uri(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
    let request = Request::from_parts(parts, Empty::<Bytes>::new());
    let exchange = async {
        let authority = &endpoint.authority;
        let port = authority.port_u16().unwrap_or(80);
        let connecting = async {
            match authority.host().parse::<std::net::IpAddr>() {
                Ok(ip) => TcpStream::connect((ip, port)).await,
                Err(_) => TcpStream::connect((authority.host(), port)).await,
            }
        };
        let stream = tokio::time::timeout(pool.settings.connect_timeout, connecting)
            .await
            .map_err(|_| (TryOutcome::ConnectFailure, LocalReply::UpstreamConnect))?
            .map_err(|_| (TryOutcome::ConnectFailure, LocalReply::UpstreamConnect))?;
        let _ = stream.set_nodelay(true);
        let io = Counted::new(
            TokioIo::new(stream),
            pool.gauges.gauge(pool.role, authority.as_str()),
        );
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
    Tunnel(crate::tunnel::Opened),
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
                stats.connections_active.fetch_add(1, Relaxed);
                let upstream = TokioIo::new(upstream);
                splice::splice_io(client, upstream, &mut feeds, idle, &stats).await
            }
            Upstream::Tunnel(opened) => {
                stats.connections_active.fetch_add(1, Relaxed);
                splice::splice_io(client, opened.stream, &mut feeds, idle, &stats).await
            }
        };
        stats.connections_active.fetch_sub(1, Relaxed);
        if idle_ended {
            stats.idle_timeouts.fetch_add(1, Relaxed);
        }
        // Dropping the feeds lets each mirror write what it holds and close.
        drop(feeds);
        drop(hold);
    }
}

/// Whether an upstream answer accepts the upgrade.
pub fn accepted<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::SWITCHING_PROTOCOLS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn upgrades_on_http_11_without_a_body_but_h2c() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(
            requested(&ws, Version::HTTP_11, false).unwrap(),
            "WebSocket"
        );
        assert!(requested(&ws, Version::HTTP_10, false).is_none());
        assert!(requested(&ws, Version::HTTP_11, true).is_none());
        let h2c = headers(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(requested(&h2c, Version::HTTP_11, false).is_none());
        let offered = headers(&[("connection", "upgrade"), ("upgrade", "websocket, H2C")]);
        assert!(requested(&offered, Version::HTTP_11, false).is_none());
        let spdy = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
        assert_eq!(
            requested(&spdy, Version::HTTP_11, false).unwrap(),
            "SPDY/3.1"
        );
        let empty = headers(&[("connection", "upgrade"), ("upgrade", " , ")]);
        assert!(requested(&empty, Version::HTTP_11, false).is_none());
        let no_token = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(requested(&no_token, Version::HTTP_11, false).is_none());
    }

    #[test]
    fn the_mirror_head_is_origin_form_with_every_header() {
        let mut request = Request::new(());
        *request.uri_mut() = "http://x.example/chat?room=1".parse().unwrap();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("x-shadow"));
        restore(request.headers_mut(), HeaderValue::from_static("websocket"));
        let (parts, ()) = request.into_parts();
        let head = head_bytes(&parts);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: x-shadow\r\n"));
        assert!(text.contains("connection: upgrade\r\n"));
        assert!(text.contains("upgrade: websocket\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
