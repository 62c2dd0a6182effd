//! Requests that become spliced sessions: a WebSocket upgrade (sent upstream,
//! spliced after its 101) and a CONNECT a route took (a tunnel to the route's
//! destination, spliced after the 200). Both feed their sampled mirrors.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::body::Received;
use http::header::HeaderValue;
use http::{Request, Response};

use crate::body::ResponseBody;
use crate::http::headers;
use crate::http::local_reply::LocalReply;
use crate::http::upgrade::accepted;
use crate::mirror::MirrorPolicy;
use crate::proxy::forward::UpstreamBody;
use crate::proxy::tunnel;
use crate::proxy::upgrade::{self, Session};
use crate::proxy::{Connection, Published};
use crate::route::{Destination, Route};
use crate::splice::feed::{Context, Feed};
use crate::telemetry::access_log::PendingLine;

/// Where a session's request goes, and when it began.
pub struct SessionTo<'a> {
    pub route: &'a Route,
    pub destination: &'a Destination,
    pub started: Instant,
}

/// An upgrade request: sent upstream on a connection of its own (and to the
/// sampled mirrors); a 101 is passed to the client and the two upgraded
/// connections are spliced by a task of their own. No retries: the request
/// is a session's start, not an idempotent exchange to repeat.
pub async fn upgraded(
    mut parts: http::request::Parts,
    conn: &Arc<Connection>,
    published: &Published,
    to: SessionTo<'_>,
    line: Option<&mut PendingLine>,
) -> Response<ResponseBody> {
    let SessionTo {
        route,
        destination,
        started,
    } = to;
    let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let cx = session_context(conn, published);
    let feeds = session_feeds(route, |m| m.upgrade_feed(&parts, &cx));
    if let Some(line) = line {
        line.record.mirrored = !feeds.is_empty();
    }
    let result = upgrade::send(
        &published.upstreams.primary,
        &destination.cluster,
        parts,
        route.timeout,
    )
    .await;
    destination.stats.duration.record(started.elapsed());
    let (mut response, lease) = match result {
        Ok(answered) => answered,
        Err(reply) => {
            destination.stats.responses.record(reply.status().as_u16());
            return reply.into_response();
        }
    };
    destination
        .stats
        .responses
        .record(response.status().as_u16());
    let mut response = if accepted(&response) {
        let Some(client) = client else {
            return LocalReply::UpstreamProtocol.into_response();
        };
        let session = Session {
            client,
            upstream: upgrade::Upstream::Upgraded(hyper::upgrade::on(&mut response), lease),
            feeds,
            idle: cx.idle_timeout,
            stats: destination.upgrades.clone(),
            hold: conn.hold.clone(),
        };
        // From the 101 on, the client's bytes are the protocol's, not request
        // heads: the head inspector (and its header-read deadline) lets them by.
        conn.findings.stop_inspecting();
        tokio::spawn(session.run());
        // Its Connection and Upgrade headers are the client's to see.
        response.map(|_| ResponseBody::default())
    } else {
        // Refused: an ordinary response, and the mirrors' feeds end here.
        if let Err(reply) = headers::response_framing(response.headers_mut()) {
            return reply.into_response();
        }
        headers::strip_hop_by_hop(response.headers_mut());
        response.map(|body| ResponseBody::Upstream(UpstreamBody::unpooled(body)))
    };
    route.response_headers.apply(response.headers_mut());
    destination.response_headers.apply(response.headers_mut());
    response
}

/// A CONNECT that a route took: the proxy connects to the route's destination
/// (never to the authority asked for), answers 200, and a task of its own
/// splices the two connections, feeding the sampled mirrors raw.
pub async fn tunneled(
    mut request: Request<Received>,
    conn: &Arc<Connection>,
    published: &Published,
    to: SessionTo<'_>,
    line: Option<&mut PendingLine>,
) -> Response<ResponseBody> {
    let SessionTo {
        route,
        destination,
        started,
    } = to;
    let Some(client) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return LocalReply::ConnectRefused.into_response();
    };
    let stats = &destination.upgrades;
    let connect_timeout = published.upstreams.primary.settings.connect_timeout;
    let opened = tunnel::open(
        &destination.cluster,
        connect_timeout,
        &conn.shared.connections,
    )
    .await;
    destination.stats.duration.record(started.elapsed());
    let opened = match opened {
        Ok(opened) => opened,
        Err(reply) => {
            stats.connect_failed.fetch_add(1, Relaxed);
            destination.stats.responses.record(reply.status().as_u16());
            return reply.into_response();
        }
    };
    let cx = session_context(conn, published);
    let feeds = session_feeds(route, |m| m.tunnel_feed(&cx));
    if let Some(line) = line {
        line.record.mirrored = !feeds.is_empty();
    }
    destination.stats.responses.record(200);
    let session = Session {
        client,
        upstream: upgrade::Upstream::Tunnel(opened),
        feeds,
        idle: cx.idle_timeout,
        stats: stats.clone(),
        hold: conn.hold.clone(),
    };
    tokio::spawn(session.run());
    let mut response = Response::new(ResponseBody::default());
    route.response_headers.apply(response.headers_mut());
    destination.response_headers.apply(response.headers_mut());
    response
}

/// A CONNECT that was not taken: the client may already be sending what it
/// meant for the tunnel, and none of it may be read as a next request.
pub fn closed_unless_tunneled(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if !response.status().is_success() {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What a spliced session (upgrade or tunnel) and its mirror feeds run with.
fn session_context<'a>(conn: &'a Connection, published: &Published) -> Context<'a> {
    Context {
        connect_timeout: published.upstreams.mirror.settings.connect_timeout,
        idle_timeout: published.limits.idle_timeout(),
        gauges: &conn.shared.connections,
        budget: &conn.shared.mirror_budget,
    }
}

/// A session's mirror feeds, each sampled by `feed`. Noise copies exist for
/// compared answers, which a session has none of.
fn session_feeds(route: &Route, feed: impl Fn(&MirrorPolicy) -> Option<Feed>) -> Vec<Feed> {
    route
        .mirrors
        .iter()
        .filter(|m| m.compare.as_ref().is_none_or(|c| c.noise_for.is_none()))
        .filter_map(feed)
        .collect()
}
