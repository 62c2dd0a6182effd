//! One request's way through the proxy, in named phases: guard (what may not
//! be forwarded at all, in `guard`), select (virtual host, route, fault, destination), prepare
//! (the head that goes upstream), fan out (the sampled mirror copies), forward
//! (to the primary) and respond (count, capture for comparison, response
//! header rules). No Python, no lock.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::body::Received;

use http::uri::Authority;
use http::{Method, Request, Response, Version};
use http_body::Body;

use crate::body::capture::PrimaryCapture;
use crate::body::replay::{self, ReadAhead};
use crate::body::{
    self, CapturedBody, ClientBody, RequestBody, ResponseBody, TapHandle, WatchedBody,
};
use crate::http::grpc;
use crate::http::headers;
use crate::http::local_reply::{plain_response, LocalReply, ResponseFlag};
use crate::http::matcher::RequestView;
use crate::http::request_head::RequestHead;
use crate::http::upgrade;
use crate::mirror::Gate;
use crate::proxy::activity::Open;
use crate::proxy::answer_fields;
use crate::proxy::fan_out::{fan_out, Compared};
use crate::proxy::fault;
use crate::proxy::forward::{self, Forward, Sending, UpstreamBody, UpstreamHost};
use crate::proxy::guard;
use crate::proxy::prepare::prepare;
use crate::proxy::selected::Selected;
use crate::proxy::session::{self, SessionTo};
use crate::proxy::{Connection, Published};
use crate::route::Action;
use crate::telemetry::access_log::PendingLine;
use crate::telemetry::{flag_index, Observed, Outcome, RequestSeries};

pub async fn handle(
    mut head: RequestHead,
    body: Received,
    conn: Arc<Connection>,
) -> Result<Response<ClientBody>, Infallible> {
    let started = Instant::now();
    // Not idle until its answer's head is handed back.
    let open = Open::start(&conn.activity);
    // Loaded once: this request finishes on this table even if a reload lands meanwhile.
    let published = conn.shared.published.load_full();
    // Every request gets an id, routed or not, so that log lines can name it.
    head.ensure_request_id();
    let grpc = grpc::is_grpc_call(head.fields());
    let http1 = head.version() < Version::HTTP_2;
    let mut observing = Observing::new(started, grpc);
    // Called from here directly: each layer of `async fn` in between would
    // hold the request twice and be copied whole into its caller.
    let connect = head.method() == Method::CONNECT;
    let Some(log) = conn.shared.access_log.clone() else {
        let routing =
            route_and_forward(head, body, connect, &conn, &published, None, &mut observing);
        let response = routing.await;
        open.end(observing.answered);
        let flag = response.extensions().get::<ResponseFlag>().map(|f| f.0);
        let response = for_client(response, connect, grpc, http1);
        let observed = observing.observed(&conn, &response, flag);
        return Ok(response.map(|body| ClientBody::new(body, observed, None)));
    };
    let mut line = PendingLine::start(log, head.parts_mut());
    line.record.client_cert = conn.client().map(|c| c.subject.clone());
    line.record.client = conn.peer.to_string();
    let logged = Some(&mut line);
    let routing = route_and_forward(
        head,
        body,
        connect,
        &conn,
        &published,
        logged,
        &mut observing,
    );
    let response = routing.await;
    open.end(observing.answered);
    let found = response.extensions();
    let flag = found.get::<ResponseFlag>().map(|f| f.0);
    line.record.upstream = found.get::<UpstreamHost>().map(|u| u.0.to_string());
    let response = for_client(response, connect, grpc, http1);
    line.record.grpc_status = grpc::status_in(response.headers());
    line.record.status = response.status().as_u16();
    let observed = observing.observed(&conn, &response, flag);
    Ok(response.map(|body| ClientBody::new(body, observed, Some(line))))
}

/// What routing and forwarding learn that the request's count needs: where it
/// went, and its body's byte counter when it had a body.
struct Observing {
    /// When the request's head was taken: its durations and deadlines start here
    /// (one clock read per request).
    started: Instant,
    /// When the upstream's answer (or the failure) came: read once, for the
    /// destination's duration and the connection's activity.
    answered: Option<Instant>,
    /// A gRPC call (its content type, read once): counted by its status, and
    /// the only kind whose deadline and gRPC retry conditions are looked for.
    grpc: bool,
    series: Option<Arc<RequestSeries>>,
    bytes_in: Option<Arc<AtomicU64>>,
}

impl Observing {
    fn new(started: Instant, grpc: bool) -> Self {
        Self {
            started,
            answered: None,
            grpc,
            series: None,
            bytes_in: None,
        }
    }

    /// Notes that the answer (or the failure) came now.
    fn answered_now(&mut self) -> &Self {
        self.answered = Some(Instant::now());
        self
    }

    /// The request's count, to be made when its answer's body ends. One that
    /// reached no destination counts with its listener's.
    fn observed(
        self,
        conn: &Connection,
        response: &Response<ResponseBody>,
        flag: Option<&'static str>,
    ) -> Observed {
        let grpc = self.grpc;
        let series = self
            .series
            .unwrap_or_else(|| conn.shared.listeners[conn.listener].requests.clone());
        Observed {
            series,
            started: self.started,
            outcome: Outcome {
                status: response.status().as_u16(),
                grpc_status: grpc.then(|| grpc::status_in(response.headers())).flatten(),
                flag: flag_index(flag),
                grpc,
            },
            bytes_in: self.bytes_in,
        }
    }
}

/// The answer as the client takes it: a refused CONNECT closes the
/// connection; a gRPC call's answer is put in its terms.
fn for_client(
    response: Response<ResponseBody>,
    connect: bool,
    grpc: bool,
    http1: bool,
) -> Response<ResponseBody> {
    let response = if connect {
        session::closed_unless_tunneled(response)
    } else {
        response
    };
    if grpc {
        grpc::in_its_terms(response, http1)
    } else {
        response
    }
}

/// `connect`: the request is a CONNECT (decided once, by `handle`).
async fn route_and_forward(
    mut head: RequestHead,
    body: Received,
    connect: bool,
    conn: &Arc<Connection>,
    published: &Published,
    mut line: Option<&mut PendingLine>,
    observing: &mut Observing,
) -> Response<ResponseBody> {
    let started = observing.started;
    let (present, authority) = match guard::guard(&head, conn) {
        Ok(passed) => passed,
        Err(reply) => return reply.into_response(),
    };
    let routing = select(
        &head,
        authority,
        connect,
        conn,
        published,
        line.as_deref_mut(),
    );
    let selected = match routing.await {
        Ok(selected) => selected,
        Err(response) => return response,
    };
    observing.series = Some(selected.destination.stats.requests.clone());
    let to = SessionTo {
        route: selected.route,
        destination: selected.destination,
        started,
    };
    // Sessions are boxed, being rare: an async fn's future is as large as its
    // largest await, and every request's future is copied whole as it moves.
    if connect {
        let request = Request::from_parts(head.into_parts(), body);
        return Box::pin(session::tunneled(request, conn, published, to, line)).await;
    }
    if let Some(value) = prepare(&mut head, &body, present, conn, &selected) {
        let mut parts = head.into_parts();
        upgrade::restore(&mut parts.headers, value);
        return Box::pin(session::upgraded(parts, conn, published, to, line)).await;
    }
    let grpc = observing.grpc;
    let fanned = fan_out(
        selected.route,
        &head,
        &body,
        conn,
        published,
        line.as_deref_mut(),
    );
    let grpc_deadline = grpc_deadline(&mut head, grpc, started);
    let forward = Forward {
        pool: &published.upstreams.primary,
        cluster: &selected.destination.cluster,
        retries: selected.route.retries.as_ref(),
        timeout: forward::tighter(selected.route.timeout, grpc_deadline, started),
        grpc_deadline,
        grpc,
        note_upstream: line.is_some(),
        raw_answer: answer_fields::pass_through(conn, &to, &fanned, grpc, line.is_some()),
        started,
    };
    let (body, client_failed) = upstream_body(body, fanned.taps, line.as_deref(), observing);
    let retry_buffer = published.upstreams.settings.retry_buffer_bytes;
    let body = match forward.retries.filter(|p| p.attempts > 0) {
        Some(_) if retry_buffer > 0 && grpc => match replay::read_ahead(body, retry_buffer).await {
            ReadAhead::Whole(whole) => Sending::Whole(whole),
            ReadAhead::Streamed(body) => Sending::Streamed(body),
            ReadAhead::Broken => return LocalReply::BadRequestBody.into_response(),
        },
        _ => Sending::Streamed(body),
    };
    let result = forward::send(forward, &mut head, body).await;
    let answered = Answered {
        result,
        client_failed: client_failed.as_deref(),
        observing: observing.answered_now(),
    };
    respond(answered, fanned.gates, fanned.compared, &selected, conn)
}

/// A gRPC call's deadline: it bounds the call as the route's timeout does;
/// the tighter one wins, and the upstream is told what is left of it.
fn grpc_deadline(head: &mut RequestHead, grpc: bool, started: Instant) -> Option<Instant> {
    let timeout = grpc.then(|| grpc::timeout(&head.parts_mut().headers));
    timeout.flatten().map(|t| started + t)
}

/// The client's body as it goes upstream: teed to the copies' taps,
/// counted for the access log (when it has one), and watched for a failure
/// of the client's own (the flag; none for a body that has ended).
fn upstream_body(
    body: Received,
    taps: Vec<TapHandle>,
    line: Option<&PendingLine>,
    observing: &mut Observing,
) -> (RequestBody, Option<Arc<AtomicBool>>) {
    let has_body = !body.is_end_stream();
    let mut body = RequestBody::new(body, taps);
    if has_body {
        let counter = line.map_or_else(Arc::default, |l| l.bytes_in.clone());
        observing.bytes_in = Some(counter.clone());
        body = body.counted(counter);
    }
    body.watched()
}

// === select ===

/// Picks the virtual host, the route and a destination; answers what the
/// route answers itself (fault abort, redirect, direct response) or what
/// matched nothing.
/// `authority`: the one the request names, as `guard` found it.
async fn select<'p>(
    head: &RequestHead,
    authority: &str,
    connect: bool,
    conn: &Connection,
    published: &'p Published,
    mut line: Option<&mut PendingLine>,
) -> Result<Selected<'p>, Response<ResponseBody>> {
    let absolute = head.uri().authority().cloned();
    if connect && absolute.as_ref().and_then(Authority::port_u16).is_none() {
        return Err(LocalReply::BadConnectTarget.into_response());
    }
    let path_and_query = head.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let view = RequestView {
        method: head.method().as_str(),
        path: head.uri().path(),
        path_and_query,
        authority,
        fields: head.fields(),
        port: conn.port,
    };
    let unrouted = |reply: LocalReply| {
        conn.shared.listeners[conn.listener]
            .unrouted
            .fetch_add(1, Relaxed);
        let reply = if connect {
            LocalReply::ConnectRefused
        } else {
            reply
        };
        reply.into_response()
    };
    let host = headers::host_for_matching(authority);
    let Some(vhost) = published.table.virtual_host(conn.listener, &host) else {
        return Err(unrouted(LocalReply::NoVirtualHost));
    };
    let Some(matched) = vhost.route_for(&view) else {
        return Err(unrouted(LocalReply::NoRoute));
    };
    let route = matched.route;
    if let Some(line) = line.as_deref_mut() {
        line.record.virtual_service = Some(vhost.name.clone());
        line.record.route = Some(route.name.clone());
    }
    // Faults come first, as Envoy's fault filter sits before the router.
    if let Some(aborted) = fault::apply(route).await {
        return Err(aborted);
    }
    let destination = match &route.action {
        Action::Forward {
            picker,
            destinations,
        } => &destinations[picker.pick()],
        Action::Redirect(redirect) => return Err(redirect.response(authority, path_and_query)),
        Action::Respond { status, body } => return Err(plain_response(*status, body.clone())),
    };
    if let Some(line) = line {
        line.record.destination = Some(destination.cluster.host.clone());
        line.record.subset = destination.cluster.subset.clone();
    }
    Ok(Selected {
        route,
        destination,
        uri: matched.uri,
        absolute,
    })
}

// === respond ===

/// The fields of an answer the proxy gave itself, as the rules see them: made
/// once, not per request.
static NO_FIELDS: std::sync::LazyLock<http::HeaderMap> =
    std::sync::LazyLock::new(http::HeaderMap::new);

/// What forwarding to the primary gave.
struct Answered<'a> {
    result: Result<Response<UpstreamBody>, LocalReply>,
    /// Set when the client's own body broke off (then it is the client's fault).
    client_failed: Option<&'a AtomicBool>,
    /// When the request began, and whether it is a gRPC call (only those
    /// are counted by gRPC status).
    observing: &'a Observing,
}

/// Counts the primary's answer, opens or closes the held copies' gates, hands
/// the compared copies the primary's capture, and applies the response rules.
fn respond(
    answered: Answered<'_>,
    gates: Vec<Gate>,
    compared: Compared,
    selected: &Selected<'_>,
    conn: &Connection,
) -> Response<ResponseBody> {
    let Answered {
        mut result,
        client_failed,
        observing,
    } = answered;
    let (started, grpc) = (observing.started, observing.grpc);
    if result.is_err() && client_failed.is_some_and(|f| f.load(Relaxed)) {
        result = Err(LocalReply::BadRequestBody);
    }
    let destination = selected.destination;
    let answered_at = observing.answered.unwrap_or_else(Instant::now);
    destination
        .stats
        .duration
        .record(answered_at.duration_since(started));
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(reply) => reply.status().as_u16(),
    };
    destination.stats.responses.record(status);
    let answer_headers = result.as_ref().map_or(&*NO_FIELDS, |r| r.headers());
    let on_end = body::both(
        Gate::open_on(gates, status, answer_headers),
        grpc.then(|| body::grpc_counted(answer_headers, &destination.stats))
            .flatten(),
    );
    let budget = &conn.shared.compare_queue.budget;
    let response = match result {
        Ok(response) if compared.waiting.is_empty() => response.map(ResponseBody::Upstream),
        Ok(response) => {
            // The upstream's own headers, before the route's response
            // operations: the mirror's answer gets none either.
            let headers = response.headers().clone();
            let capture = PrimaryCapture::new(
                compared.limit,
                budget,
                status,
                headers,
                started,
                compared.waiting,
            );
            response.map(|b| ResponseBody::Captured(Box::new(CapturedBody::new(b, capture))))
        }
        Err(reply) => {
            if !compared.waiting.is_empty() {
                // The proxy answered for the primary (502, 504...): its status
                // is what the user saw, and what the copy is compared with.
                let headers = http::HeaderMap::new();
                PrimaryCapture::new(0, budget, status, headers, started, compared.waiting).finish();
            }
            return reply.into_response();
        }
    };
    let mut response = match on_end {
        Some(on_end) => {
            response.map(|b| ResponseBody::Watched(Box::new(WatchedBody::new(b, on_end))))
        }
        None => response,
    };
    selected
        .route
        .response_headers
        .apply(response.headers_mut());
    destination.response_headers.apply(response.headers_mut());
    response
}
