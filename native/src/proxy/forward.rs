//! Primary forwarding: pick an endpoint, send within the per-try and route
//! timeouts, retry as the route's policy says, and turn upstream failures into
//! the proxy's own 502 / 503 / 504.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use rustls_pki_types::ServerName;

use crate::body::replay::Whole;
use crate::body::RequestBody;
use crate::http::grpc;
use crate::http::headers::{response_framing, strip_hop_by_hop, visible_text};
use crate::http::local_reply::LocalReply;
use crate::http::request_head::RequestHead;
use crate::http::retry::{RetryPolicy, TryOutcome};
use crate::upstream::cluster::{Cluster, Lease};
use crate::upstream::pool::{Pool, SendError, Target};
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
    /// An HTTP/1.1 answer's plain fields may be kept as they came
    /// (`upstream::pool::Target::raw_answer`).
    pub raw_answer: bool,
    /// When the request's head was taken: its first try's moment for the
    /// pool's idle timeouts.
    pub started: Instant,
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

pub async fn send(f: Forward<'_>, head: &mut RequestHead, body: Sending) -> Tried {
    // Pinned here, not boxed: a box was an allocation and a copy of the
    // tries' 2 KiB per request (530 instructions, callgrind). The request's
    // future is pinned where it is made (the session's, HTTP/2's box), so
    // its size is not copied at each await any more.
    // The head is lent, here and to the tries: each `async fn` that owned
    // it held it twice (as argument and as local) and copied it in.
    let exchange = pin!(tries(&f, head, body));
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

/// Every try of one request, as the route's retry policy allows. One
/// `async fn` with each try's steps in its loop: a try of its own was a
/// future of 2.3 KiB holding the head, body and forward twice (as arguments
/// and as locals), copied into this one at each try.
async fn tries(f: &Forward<'_>, head: &mut RequestHead, body: Sending) -> Tried {
    // Only a body that can be sent again allows another try: an empty one,
    // or one read whole ahead.
    let (mut streamed, whole) = match body {
        Sending::Whole(whole) => (None, whole),
        Sending::Streamed(body) if http_body::Body::is_end_stream(&body) => {
            (None, Whole::default())
        }
        Sending::Streamed(body) => (Some(body), Whole::default()),
    };
    let policy = f.retries.filter(|p| p.attempts > 0 && streamed.is_none());
    let per_try = f.retries.and_then(|p| p.per_try_timeout);
    let mut retried = 0;
    loop {
        let last = policy.is_none_or(|p| retried >= p.attempts);
        let body = streamed.take().unwrap_or_else(|| whole.replay());
        // The scrutinee is gone before the send is awaited (a `match` around
        // the send kept its 320 bytes in this future).
        let (outcome, result) = 'try_: {
            let mut begun = match Begun::try_begin(f, head) {
                Ok(begun) => begun,
                Err((outcome, reply)) => break 'try_ (outcome, Err(reply)),
            };
            let target = Target {
                raw_answer: f.raw_answer,
                wanted_at: (retried == 0).then_some(f.started),
                ..f.cluster
                    .target(begun.lease.endpoint(), begun.wire, begun.name.as_ref())
            };
            // No async block around the send: a layer of its own would hold the
            // head, body and target again, and be copied whole into this future.
            let result = if begun.wire == Wire::Http1 {
                // Written from the head where it lies.
                let replace = begun.grpc_timeout.take();
                let send = pin!(f.pool.send_borrowed(target, head, replace, body));
                within(per_try, send).await
            } else {
                // The last try gives its head away; one that another may follow
                // sends a copy.
                let head = if last {
                    let empty = RequestHead::new(Request::new(()).into_parts().0);
                    std::mem::replace(head, empty).into_parts()
                } else {
                    head.to_parts()
                };
                let head = protocol::try_head(head, begun.grpc_timeout.take());
                // Boxed: HTTP/2's send is the larger future, which every HTTP/1.1
                // request's future would otherwise be as large as.
                let mut send = Box::pin(f.pool.send(target, Request::from_parts(head, body)));
                within(per_try, send.as_mut()).await
            };
            begun.end(f, result)
        };
        let Some(policy) = policy.filter(|_| !last) else {
            return result;
        };
        // A gRPC failure arrives as HTTP 200 with its status in the headers
        // (trailers-only), which is where Envoy's gRPC conditions look too.
        let grpc_failed = f.grpc
            && result
                .as_ref()
                .ok()
                .and_then(|r| grpc::status_in(r.headers()))
                .is_some_and(|status| policy.should_retry_grpc(status));
        let retry = grpc_failed || outcome.is_some_and(|o| policy.should_retry(o));
        if !retry {
            return result;
        }
        retried += 1;
        tokio::time::sleep(RetryPolicy::backoff(retried)).await;
    }
}

/// A try that has its endpoint (and holds the cluster's count for it until
/// it ends), the wire it goes on and its name for TLS.
struct Begun<'a> {
    lease: Lease<'a>,
    wire: Wire,
    name: Option<ServerName<'static>>,
    grpc_timeout: Option<(HeaderName, HeaderValue)>,
}

/// A try that has ended: its outcome for the retry policy, and its answer.
type Ended = (Option<TryOutcome>, Tried);

impl<'a> Begun<'a> {
    /// The outcome is `None` when nothing was sent (no endpoint, or the
    /// cluster's limit is reached): retrying would only add load.
    fn try_begin(
        f: &Forward<'a>,
        head: &RequestHead,
    ) -> Result<Self, (Option<TryOutcome>, LocalReply)> {
        let lease = f.cluster.acquire().map_err(|why| (None, why.into()))?;
        let endpoint = lease.endpoint();
        let wire = Wire::choose(f.cluster.protocol, head.version());
        // The upstream is told what is left of a gRPC client's deadline.
        let grpc_timeout = f
            .grpc_deadline
            .and_then(|d| grpc::timeout_value(d.saturating_duration_since(Instant::now())))
            .map(|value| (HeaderName::from_static(grpc::GRPC_TIMEOUT), value));
        // Auto SNI: the Host going upstream names the server.
        let host = || visible_text(head.fields().get(&http::header::HOST)?);
        let Ok(name) = f.cluster.tls_name(host) else {
            f.cluster.record(endpoint, TryOutcome::ConnectFailure);
            return Err((Some(TryOutcome::ConnectFailure), LocalReply::UpstreamTls));
        };
        Ok(Self {
            lease,
            wire,
            name,
            grpc_timeout,
        })
    }

    /// The try's outcome for the retry policy and outlier detection, and
    /// its answer (the endpoint noted on it when the access log asks).
    fn end(
        self,
        f: &Forward<'_>,
        result: Option<Result<Response<UpstreamBody>, SendError>>,
    ) -> Ended {
        let endpoint = self.lease.endpoint();
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
            Err(SendError::Connect) => {
                (TryOutcome::ConnectFailure, Err(LocalReply::UpstreamConnect))
            }
            // Envoy's rule too: a failed handshake is a failed connection.
            Err(SendError::Tls) => (TryOutcome::ConnectFailure, Err(LocalReply::UpstreamTls)),
            // Retry policy treats both alike (Envoy's `reset`); the user is told which.
            Err(SendError::Protocol) => (TryOutcome::Reset, Err(LocalReply::UpstreamProtocol)),
            Err(SendError::Reset) => (TryOutcome::Reset, Err(LocalReply::UpstreamReset)),
        };
        // Passive health sees every try, retried or not.
        f.cluster.record(endpoint, outcome);
        drop(self.lease);
        (Some(outcome), result)
    }
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
