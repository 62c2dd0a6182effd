//! Primary forwarding: pick an endpoint, send within the per-try and route
//! timeouts, retry as the route's policy says, and turn upstream failures into
//! the proxy's own 502 / 503 / 504.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

use http::header::HeaderName;
use http::request::Parts;
use http::{Request, Response};

use crate::body::replay::Whole;
use crate::body::RequestBody;
use crate::http::grpc;
use crate::http::headers::{response_framing, strip_hop_by_hop};
use crate::http::local_reply::LocalReply;
use crate::http::retry::{RetryPolicy, TryOutcome};
use crate::upstream::cluster::Cluster;
use crate::upstream::pool::{Pool, SendError};
use crate::upstream::protocol::{self, Wire};

pub use crate::body::UpstreamBody;

/// Where and how one request is forwarded.
#[derive(Clone, Copy)]
pub struct Forward<'a> {
    pub pool: &'a Pool,
    pub cluster: &'a Cluster,
    pub retries: Option<&'a RetryPolicy>,
    /// Bounds every try together, back-offs included.
    pub timeout: Option<Duration>,
    /// A gRPC client's deadline: each try tells the upstream what is left.
    pub grpc_deadline: Option<Instant>,
    /// A gRPC call: only its answers are looked at for gRPC retry conditions.
    pub grpc: bool,
    /// Mark the answer with the endpoint that gave it (`UpstreamHost`), for the
    /// access log; off, no request pays for it.
    pub note_upstream: bool,
}

/// The tighter of a route's timeout and a deadline, from `started`.
pub fn tighter(
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    started: Instant,
) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(started));
    match (timeout, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

type Tried = Result<Response<UpstreamBody>, LocalReply>;

/// A request body as the tries get it.
pub enum Sending {
    /// Read as it comes: one try only, unless it is empty.
    Streamed(RequestBody),
    /// Read whole ahead (a gRPC call's): each try sends it again.
    Whole(Whole),
}

pub async fn send(f: Forward<'_>, parts: Parts, body: Sending) -> Tried {
    // Boxed: the tries' future is most of a request's future, which is
    // moved (copied whole) at every await on its way in and into its task.
    let exchange = Box::pin(tries(f, parts, body));
    let result = match f.timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| LocalReply::UpstreamTimeout)?,
        None => exchange.await,
    };
    let mut response = result?;
    response_framing(response.headers_mut())?;
    strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

async fn tries(f: Forward<'_>, parts: Parts, body: Sending) -> Tried {
    let per_try = f.retries.and_then(|p| p.per_try_timeout);
    // Only a body that can be sent again allows another try: an empty one,
    // or one read whole ahead.
    let whole = match body {
        Sending::Whole(whole) => whole,
        Sending::Streamed(body) if http_body::Body::is_end_stream(&body) => Whole::default(),
        Sending::Streamed(body) => return try_once(f, Head::Own(parts), body, per_try).await.1,
    };
    let Some(policy) = f.retries.filter(|p| p.attempts > 0) else {
        return try_once(f, Head::Own(parts), whole.replay(), per_try)
            .await
            .1;
    };
    let mut retried = 0;
    loop {
        let (outcome, result) = try_once(
            f,
            Head::Kept(&parts),
            whole.replay(),
            policy.per_try_timeout,
        )
        .await;
        // A gRPC failure arrives as HTTP 200 with its status in the headers
        // (trailers-only), which is where Envoy's gRPC conditions look too.
        let grpc_failed = f.grpc
            && result
                .as_ref()
                .ok()
                .and_then(|r| grpc::status_in(r.headers()))
                .is_some_and(|status| policy.should_retry_grpc(status));
        let retry = grpc_failed || outcome.is_some_and(|o| policy.should_retry(o));
        if !retry || retried >= policy.attempts {
            return result;
        }
        retried += 1;
        tokio::time::sleep(RetryPolicy::backoff(retried)).await;
    }
}

/// A try's request head: the request's own when no other try can follow;
/// kept by the tries (borrowed) when one may. HTTP/1.1 writes either where it
/// lies; HTTP/2 takes the head (a kept one copied).
// Unboxed on purpose: a box would be an allocation per request, to save a
// move of 224 bytes once into the try.
#[allow(clippy::large_enum_variant)]
enum Head<'a> {
    Own(Parts),
    Kept(&'a Parts),
}

impl Head<'_> {
    fn parts(&self) -> &Parts {
        match self {
            Self::Own(parts) => parts,
            Self::Kept(parts) => parts,
        }
    }
}

/// One try. The outcome is `None` when nothing was sent (no endpoint, or the
/// cluster's limit is reached): retrying would only add load.
async fn try_once(
    f: Forward<'_>,
    head: Head<'_>,
    body: RequestBody,
    per_try: Option<Duration>,
) -> (Option<TryOutcome>, Tried) {
    let lease = match f.cluster.acquire() {
        Ok(lease) => lease,
        Err(why) => return (None, Err(why.into())),
    };
    let wire = Wire::choose(f.cluster.protocol, head.parts().version);
    // The upstream is told what is left of a gRPC client's deadline.
    let grpc_timeout = f
        .grpc_deadline
        .and_then(|d| grpc::timeout_value(d.saturating_duration_since(Instant::now())))
        .map(|value| (HeaderName::from_static(grpc::GRPC_TIMEOUT), value));
    let endpoint = lease.endpoint();
    // Auto SNI: the Host going upstream names the server.
    let host = || head.parts().headers.get(http::header::HOST)?.to_str().ok();
    let Ok(name) = f.cluster.tls_name(host) else {
        f.cluster.record(endpoint, TryOutcome::ConnectFailure);
        return (
            Some(TryOutcome::ConnectFailure),
            Err(LocalReply::UpstreamTls),
        );
    };
    let target = f.cluster.target(endpoint, wire, name.as_ref());
    // No async block around the send: a layer of its own would hold the head,
    // body and target again, and be copied whole into this future.
    let result = if wire == Wire::Http1 {
        // Written from the head where it lies, owned or kept.
        let send = pin!(f
            .pool
            .send_borrowed(target, head.parts(), grpc_timeout, body));
        within(per_try, send).await
    } else {
        let parts = match head {
            Head::Own(parts) => parts,
            Head::Kept(parts) => protocol::copy_head(parts),
        };
        let parts = protocol::try_head(parts, grpc_timeout);
        // Boxed: HTTP/2's send is the larger future, which every HTTP/1.1
        // request's future would otherwise be as large as (and moved whole).
        let mut send = Box::pin(f.pool.send(target, Request::from_parts(parts, body)));
        within(per_try, send.as_mut()).await
    };
    let Some(result) = result else {
        f.cluster.record(endpoint, TryOutcome::Timeout);
        return (Some(TryOutcome::Timeout), Err(LocalReply::UpstreamTimeout));
    };
    let (outcome, result) = match result {
        Ok(mut response) => {
            if f.note_upstream {
                let host = UpstreamHost(endpoint.authority.clone());
                response.extensions_mut().insert(host);
            }
            (TryOutcome::Status(response.status().as_u16()), Ok(response))
        }
        Err(SendError::Connect) => (TryOutcome::ConnectFailure, Err(LocalReply::UpstreamConnect)),
        // Envoy's rule too: a failed handshake is a failed connection.
        Err(SendError::Tls) => (TryOutcome::ConnectFailure, Err(LocalReply::UpstreamTls)),
        // Retry policy treats both alike (Envoy's `reset`); the user is told which.
        Err(SendError::Protocol) => (TryOutcome::Reset, Err(LocalReply::UpstreamProtocol)),
        Err(SendError::Reset) => (TryOutcome::Reset, Err(LocalReply::UpstreamReset)),
    };
    // Passive health sees every try, retried or not.
    f.cluster.record(endpoint, outcome);
    drop(lease);
    (Some(outcome), result)
}

/// `send`, within `limit` when there is one (`None`: it ran out first). Lent,
/// not owned: the send's future stays where its caller pinned it.
async fn within<F: Future>(limit: Option<Duration>, send: Pin<&mut F>) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, send).await.ok(),
        None => Some(send.await),
    }
}

/// The endpoint that answered, carried on its response to the access log.
#[derive(Debug, Clone)]
pub struct UpstreamHost(pub http::uri::Authority);
