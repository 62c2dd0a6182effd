//! One request's way through the proxy: pick the virtual host and route, admit
//! mirror copies, forward to the primary, count. No Python, no lock.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use crate::access_log::{AccessLog, PendingLine};
use crate::body::{CapturedBody, ClientBody, MirrorBudget, RequestBody, ResponseBody};
use crate::compare::{CompareQueue, PrimaryCapture};
use crate::error::{plain_response, LocalReply};
use crate::forward::{self, Forward};
use crate::headers;
use crate::inspect::{Findings, Verdict};
use crate::matcher::RequestView;
use crate::mirror::CompareSlot;
use crate::session::{self, SessionTo};
use crate::snapshot::Limits;
use crate::stats::ListenerStats;
use crate::table::{Action, RouteTable};
use crate::upgrade;
use crate::upstream::{ConnectionGauges, Upstreams};

/// What requests read: the route table and the client pools, swapped as one.
#[derive(Debug)]
pub struct Published {
    pub table: RouteTable,
    pub upstreams: Upstreams,
    /// Applied to connections accepted while this is published.
    pub limits: Limits,
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
#[derive(Debug)]
pub struct Connection {
    pub shared: Arc<Shared>,
    pub listener: usize,
    /// The listener's port (for `port` match conditions).
    pub port: u16,
    /// Request head bytes accepted (hyper bounds its read buffer, not the head).
    pub max_header_bytes: usize,
    pub peer: SocketAddr,
    /// What the byte-stream side saw of each request head (see `inspect`).
    pub findings: Arc<Findings>,
    /// Dropped with the last holder: the connection's task, or the session
    /// an upgrade spliced it into.
    pub hold: Arc<dyn std::fmt::Debug + Send + Sync>,
}

pub async fn handle(
    mut request: Request<Incoming>,
    conn: Arc<Connection>,
) -> Result<Response<ClientBody>, Infallible> {
    // Loaded once: this request finishes on this table even if a reload lands meanwhile.
    let published = conn.shared.published.load_full();
    // Every request gets an id, routed or not, so that log lines can name it.
    headers::ensure_request_id(request.headers_mut());
    let Some(log) = conn.shared.access_log.clone() else {
        let response = proxy(request, &conn, &published, None).await;
        return Ok(response.map(ClientBody::plain));
    };
    let (parts, body) = request.into_parts();
    let mut line = PendingLine::start(log, &parts);
    let response = proxy(
        Request::from_parts(parts, body),
        &conn,
        &published,
        Some(&mut line),
    )
    .await;
    line.record.status = response.status().as_u16();
    Ok(response.map(|body| ClientBody::logged(body, line)))
}

async fn proxy(
    request: Request<Incoming>,
    conn: &Arc<Connection>,
    published: &Published,
    line: Option<&mut PendingLine>,
) -> Response<ResponseBody> {
    if request.method() != Method::CONNECT {
        return route_and_forward(request, false, conn, published, line).await;
    }
    let mut response = route_and_forward(request, true, conn, published, line).await;
    if !response.status().is_success() {
        // The client may already be sending what it meant for the tunnel:
        // none of it may be read as a next request.
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `connect`: the request is a CONNECT (decided once, by `proxy`).
async fn route_and_forward(
    request: Request<Incoming>,
    connect: bool,
    conn: &Arc<Connection>,
    published: &Published,
    mut line: Option<&mut PendingLine>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    // Taken for every request, in order, before anything else can answer.
    if let Some(verdict) = conn.findings.take() {
        return match verdict {
            Verdict::AmbiguousFraming => LocalReply::AmbiguousFraming,
            Verdict::RepeatedContentLength => LocalReply::RepeatedContentLength,
            Verdict::BadChunk => LocalReply::BadRequestBody,
        }
        .into_response();
    }
    if let Some(refused) = headers::framing_problem(request.headers(), request.version()) {
        return refused.into_response();
    }
    let headers = request.headers();
    let head_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
    if head_bytes > conn.max_header_bytes {
        return LocalReply::HeadersTooLarge.into_response();
    }
    // RFC 9112 3.2.2: an absolute-form target's authority overrides Host.
    let absolute = request.uri().authority().cloned();
    let authority = match &absolute {
        Some(a) => a.as_str(),
        None => request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    // No Host that is not a valid authority reaches routing, a hop or a copy.
    let host_value = request.headers().get(HOST).map(HeaderValue::as_bytes);
    if absolute.is_none() && host_value.is_some_and(|h| !headers::valid_authority(h)) {
        return LocalReply::InvalidHost.into_response();
    }
    if absolute.is_some() && !headers::valid_authority(authority.as_bytes()) {
        return LocalReply::InvalidHost.into_response();
    }
    let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let view = RequestView {
        method: request.method().as_str(),
        path: request.uri().path(),
        path_and_query,
        authority,
        headers: request.headers(),
        port: conn.port,
    };
    let unrouted = || {
        conn.shared.listeners[conn.listener]
            .unrouted
            .fetch_add(1, Relaxed)
    };
    if connect && absolute.as_ref().and_then(|a| a.port_u16()).is_none() {
        return LocalReply::BadConnectTarget.into_response();
    }
    let host = headers::host_for_matching(authority);
    let Some(vhost) = published.table.virtual_host(conn.listener, &host) else {
        unrouted();
        if connect {
            return LocalReply::ConnectRefused.into_response();
        }
        return LocalReply::NoVirtualHost.into_response();
    };
    let Some(matched) = vhost.route_for(&view) else {
        unrouted();
        if connect {
            return LocalReply::ConnectRefused.into_response();
        }
        return LocalReply::NoRoute.into_response();
    };
    let route = matched.route;
    if let Some(line) = line.as_deref_mut() {
        line.record.virtual_service = Some(vhost.name.clone());
        line.record.route = Some(route.name.clone());
    }

    // Faults come first, as Envoy's fault filter sits before the router.
    if let Some(fault) = &route.fault {
        if let Some(delay) = fault.delay() {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = fault.abort() {
            return plain_response(status, Bytes::from_static(b"fault filter abort\n"));
        }
    }
    let (picker, destinations) = match &route.action {
        Action::Forward {
            picker,
            destinations,
        } => (picker, destinations),
        Action::Redirect(redirect) => return redirect.response(authority, path_and_query),
        Action::Respond { status, body } => return plain_response(*status, body.clone()),
    };
    let destination = &destinations[picker.pick()];
    if let Some(line) = line.as_deref_mut() {
        line.record.destination = Some(destination.cluster.host.clone());
        line.record.subset = destination.cluster.subset.clone();
    }

    if connect {
        let to = SessionTo {
            route,
            destination,
            started,
        };
        return session::tunneled(request, conn, published, to, line).await;
    }

    let (mut parts, body) = request.into_parts();
    // Read before the hop-by-hop headers go: an upgrade keeps its two.
    let upgrade = upgrade::requested(&parts.headers, parts.version, !body.is_end_stream());
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::keep_chunked(&mut parts.headers, &body);
    headers::append_forwarded(&mut parts.headers, conn.peer.ip());
    if let Some(a) = &absolute {
        if let Ok(value) = HeaderValue::from_str(a.as_str()) {
            parts.headers.insert(HOST, value);
        }
    }
    // Rewrites and header rules come before the copies are made: a mirror
    // receives what the primary receives, Host suffix aside.
    if let Some(rewrite) = &route.rewrite {
        rewrite.apply(&mut parts, matched.uri);
    }
    route.request_headers.apply(&mut parts.headers);
    destination.request_headers.apply(&mut parts.headers);
    if let Some(value) = upgrade {
        upgrade::restore(&mut parts.headers, value);
        let to = SessionTo {
            route,
            destination,
            started,
        };
        return session::upgraded(parts, conn, published, to, line).await;
    }

    let has_body = !body.is_end_stream();
    let mut taps = Vec::new();
    let mut gates = Vec::new();
    // Copies whose answers are compared wait for the primary's capture here.
    let mut compared = Vec::new();
    let mut capture_limit = 0;
    // Bit i: mirror i's copy of this request is compared; a noise copy (a
    // second primary instance) goes only with such a copy, to see the same request.
    let mut compared_mirrors = 0u64;
    for (i, policy) in route.mirrors.iter().enumerate() {
        let noise_for = policy.compare.as_ref().and_then(|c| c.noise_for);
        let admission = match noise_for {
            Some(parent) if compared_mirrors & (1 << parent) == 0 => continue,
            Some(_) => policy.admit_chosen(),
            None => policy.admit(&parts.method),
        };
        if let Some(admission) = admission {
            let (mut copy, tap, gate) =
                policy.copy(admission, &parts, has_body, &conn.shared.mirror_budget);
            gates.extend(gate);
            let spec = policy
                .compare
                .as_ref()
                .filter(|c| c.noise_for.is_some() || c.sampler.sample());
            if let Some(spec) = spec {
                if i < 64 {
                    compared_mirrors |= 1 << i;
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                compared.push(tx);
                capture_limit = capture_limit.max(spec.max_body_bytes);
                copy.compare_with(CompareSlot {
                    primary: rx,
                    max_body_bytes: spec.max_body_bytes,
                    key: spec.key.clone(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .to_owned(),
                    queue: conn.shared.compare_queue.clone(),
                });
            }
            if let Some(line) = line.as_deref_mut() {
                line.record.mirrored = true;
                copy.log_as(line);
            }
            taps.extend(tap);
            tokio::spawn(copy.run(published.upstreams.mirror.clone()));
        }
    }

    let forward = Forward {
        pool: &published.upstreams.primary,
        cluster: &destination.cluster,
        retries: route.retries.as_ref(),
        timeout: route.timeout,
    };
    let mut body = RequestBody::new(body, taps);
    if let Some(line) = &line {
        body = body.counted(line.bytes_in.clone());
    }
    let (body, client_failed) = body.watched();
    let mut result = forward::send(forward, parts, body).await;
    if result.is_err() && client_failed.load(Relaxed) {
        result = Err(LocalReply::BadRequestBody);
    }
    destination.stats.duration.record(started.elapsed());
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(reply) => reply.status().as_u16(),
    };
    for gate in gates {
        gate.open_if(status);
    }
    match result {
        Ok(response) => {
            destination
                .stats
                .responses
                .record(response.status().as_u16());
            let mut response = if compared.is_empty() {
                response.map(ResponseBody::Upstream)
            } else {
                // The upstream's own headers, before the route's response
                // operations: the mirror's answer gets none either.
                let capture = PrimaryCapture::new(
                    capture_limit,
                    &conn.shared.compare_queue.budget,
                    status,
                    response.headers().clone(),
                    started,
                    compared,
                );
                response.map(|b| ResponseBody::Captured(Box::new(CapturedBody::new(b, capture))))
            };
            route.response_headers.apply(response.headers_mut());
            destination.response_headers.apply(response.headers_mut());
            response
        }
        Err(reply) => {
            destination.stats.responses.record(reply.status().as_u16());
            if !compared.is_empty() {
                // The proxy answered for the primary (502, 504...): its status
                // is what the user saw, and what the copy is compared with.
                let budget = &conn.shared.compare_queue.budget;
                PrimaryCapture::new(0, budget, status, http::HeaderMap::new(), started, compared)
                    .finish();
            }
            reply.into_response()
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::Local(http_body_util::Full::new(Bytes::new()))
    }
}
