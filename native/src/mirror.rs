//! Mirroring: sample, admit within bounds, build the copy, send it, read and
//! drop the answer within the drain limit (or, for a compared copy, keep it
//! within the capture limit and the compare budget and queue it with the
//! primary's), count the outcome. Nothing here ever delays the primary, and
//! what a copy costs does not grow with what the mirror sends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::uri::Authority;
use http::{Method, Request, Version};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::access_log::PendingLine;
use crate::body::{self, MirrorBody, MirrorBudget, TapHandle};
use crate::cluster::{Cluster, Unavailable};
use crate::compare::{
    BodyCapture, Captured, CompareBudget, CompareKey, CompareQueue, CompareSpec, ComparedPair,
    PrimaryReceiver, SkipReason,
};
use crate::header_ops::HeaderOps;
use crate::headers::{self, shadow_host};
use crate::pool::{Pool, PooledResponse, SendError};
use crate::retry::TryOutcome;
use crate::sampling::Sampler;
use crate::snapshot;
use crate::splice;
use crate::stats::TcpMirrorStats;
use crate::stats::{DropReason, FailReason, MirrorStats};
use crate::upstream::origin_uri;

/// One route's mirror: where copies go, what share, and their bounds.
#[derive(Debug)]
pub struct MirrorPolicy {
    pub cluster: Arc<Cluster>,
    pub sampler: Sampler,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    max_body_bytes: u64,
    max_drain_bytes: u64,
    host_suffix: String,
    request_headers: HeaderOps,
    only_idempotent: bool,
    after_primary_success: bool,
    pub stats: Arc<MirrorStats>,
    /// Set when a share of this mirror's answers is compared with the primary's.
    pub compare: Option<CompareSpec>,
    /// What became of this mirror's copies of upgraded sessions.
    pub upgrade_stats: Arc<TcpMirrorStats>,
}

impl MirrorPolicy {
    pub fn new(
        cluster: Arc<Cluster>,
        sampler: Sampler,
        spec: &snapshot::Mirror,
        stats: Arc<MirrorStats>,
        compare: Option<CompareSpec>,
    ) -> Result<Self, String> {
        if spec.max_in_flight == 0 {
            return Err("mirror max_in_flight must be at least 1".into());
        }
        HeaderValue::from_str(&spec.host_suffix).map_err(|_| {
            format!(
                "mirror host suffix {:?} is not valid in a Host",
                spec.host_suffix
            )
        })?;
        Ok(Self {
            cluster,
            sampler,
            in_flight: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            timeout: Duration::from_millis(spec.timeout_ms),
            max_body_bytes: spec.max_body_bytes,
            max_drain_bytes: spec.max_drain_bytes,
            host_suffix: spec.host_suffix.clone(),
            request_headers: HeaderOps::compile(&spec.request_headers)?,
            only_idempotent: spec.only_idempotent,
            after_primary_success: spec.after_primary_success,
            stats,
            compare,
            upgrade_stats: Arc::default(),
        })
    }

    /// Samples this request and, if it is chosen, admits a copy within the
    /// in-flight bound. A copy that cannot be admitted is counted as dropped.
    #[inline]
    pub fn admit(&self, method: &Method) -> Option<Admission> {
        if self.only_idempotent && !method.is_idempotent() {
            return None;
        }
        if !self.sampler.sample() {
            return None;
        }
        self.admit_chosen()
    }

    /// Admits a copy chosen elsewhere (a noise copy follows its mirror's
    /// sampling), within the same bounds.
    pub fn admit_chosen(&self) -> Option<Admission> {
        let endpoint = match self.cluster.pick_for_mirror() {
            Ok(endpoint) => endpoint,
            Err(Unavailable::Ejected) => {
                self.stats.dropped(DropReason::Ejected);
                return None;
            }
            Err(_) => {
                self.stats.dropped(DropReason::NoEndpoint);
                return None;
            }
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.stats.dropped(DropReason::InFlightLimit);
            return None;
        };
        self.stats.in_flight.fetch_add(1, Relaxed);
        Some(Admission {
            permit,
            endpoint: endpoint.id,
            authority: endpoint.authority.clone(),
            index: endpoint.index,
        })
    }

    /// Samples an upgrade request (as `admit` does) and, if it is chosen,
    /// opens a feed that sends the mirror the same upgrade request, Host with
    /// the suffix, then the client's bytes once the mirror answers 101. Its
    /// queue holds at most the mirror's `max_body_bytes`.
    pub fn upgrade_feed(&self, parts: &Parts, cx: &splice::Context<'_>) -> Option<splice::Feed> {
        if self.only_idempotent && !parts.method.is_idempotent() {
            return None;
        }
        if !self.sampler.sample() {
            return None;
        }
        let mut request = Request::new(());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.headers_mut() = parts.headers.clone();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&self.cluster.host);
        if let Ok(shadow) =
            HeaderValue::from_str(&shadow_host(host, &self.host_suffix, &self.cluster.host))
        {
            request.headers_mut().insert(HOST, shadow);
        }
        self.request_headers.apply(request.headers_mut());
        let head = crate::upgrade::head_bytes(&request.into_parts().0);
        let spec = splice::FeedSpec {
            cluster: &self.cluster,
            buffer_bytes: usize::try_from(self.max_body_bytes.max(1)).unwrap_or(usize::MAX),
            timeout: self.timeout,
            stats: &self.upgrade_stats,
            handshake: Some(head),
        };
        splice::start_feed(spec, cx)
    }

    /// A sampled feed for a CONNECT tunnel: the client's bytes go to a raw
    /// connection to one mirror endpoint, as on a tcp route (the mirror is the
    /// destination, not a proxy: it gets no CONNECT of its own).
    pub fn tunnel_feed(&self, cx: &splice::Context<'_>) -> Option<splice::Feed> {
        // What a tunnel carries is unknown: a guard against copying writes holds.
        if self.only_idempotent || !self.sampler.sample() {
            return None;
        }
        let spec = splice::FeedSpec {
            cluster: &self.cluster,
            buffer_bytes: usize::try_from(self.max_body_bytes.max(1)).unwrap_or(usize::MAX),
            timeout: self.timeout,
            stats: &self.upgrade_stats,
            handshake: None,
        };
        splice::start_feed(spec, cx)
    }

    /// Builds the copy of a request: same method, path, query, headers (already
    /// cleaned and carrying the request id) and body; Host with the suffix.
    /// Returns the tap to attach to the client's body when there is one.
    pub fn copy(
        &self,
        admission: Admission,
        parts: &Parts,
        has_body: bool,
        budget: &Arc<MirrorBudget>,
    ) -> (MirrorCopy, Option<TapHandle>, Option<Gate>) {
        // HTTP/1.0 clients may send no Host: the destination's name stands in.
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&self.cluster.host);
        let (tap, body) = if has_body {
            let (tap, body) = body::tap(self.max_body_bytes, budget);
            (Some(tap), body)
        } else {
            (None, MirrorBody::empty())
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = origin_uri(parts.uri.path_and_query());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = parts.headers.clone();
        if let Ok(shadow) =
            HeaderValue::from_str(&shadow_host(host, &self.host_suffix, &self.cluster.host))
        {
            request.headers_mut().insert(HOST, shadow);
        }
        self.request_headers.apply(request.headers_mut());
        let (gate, opener) = if self.after_primary_success {
            let (tx, rx) = oneshot::channel();
            (Some(rx), Some(Gate(tx)))
        } else {
            (None, None)
        };
        let copy = MirrorCopy {
            request,
            endpoint: admission.endpoint,
            authority: admission.authority,
            index: admission.index,
            permit: admission.permit,
            timeout: self.timeout,
            max_drain_bytes: self.max_drain_bytes,
            stats: self.stats.clone(),
            cluster: self.cluster.clone(),
            line: None,
            gate,
            compare: None,
        };
        (copy, tap, opener)
    }
}

/// A sampled request that fits within the mirror's bounds.
#[derive(Debug)]
pub struct Admission {
    permit: OwnedSemaphorePermit,
    endpoint: u32,
    authority: Authority,
    /// The endpoint's place in the cluster (for its passive-health state).
    index: usize,
}

/// A copy ready to go; `run` it on its own task.
#[derive(Debug)]
pub struct MirrorCopy {
    request: Request<MirrorBody>,
    endpoint: u32,
    authority: Authority,
    index: usize,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
    /// Body bytes of the answer read and dropped; past it the copy is cut.
    max_drain_bytes: u64,
    stats: Arc<MirrorStats>,
    cluster: Arc<Cluster>,
    line: Option<PendingLine>,
    /// With `after_primary_success`: opens once the primary's status is known.
    gate: Option<oneshot::Receiver<bool>>,
    /// Set when this copy's answer is compared with the primary's.
    compare: Option<CompareSlot>,
}

/// What a compared copy needs: its bound, the primary's answer to come, and
/// where the pair goes.
#[derive(Debug)]
pub struct CompareSlot {
    pub primary: PrimaryReceiver,
    pub max_body_bytes: u64,
    pub key: Arc<CompareKey>,
    pub path: String,
    pub queue: Arc<CompareQueue>,
}

/// Lets a held copy go (or not) once the primary has answered. Dropped
/// unopened (the primary never answered), the copy is dropped.
#[derive(Debug)]
pub struct Gate(oneshot::Sender<bool>);

impl Gate {
    pub fn open_if(self, primary_status: u16) {
        let _ = self.0.send((200..400).contains(&primary_status));
    }
}

impl MirrorCopy {
    /// Keeps this copy's answer for comparison with the primary's.
    pub fn compare_with(&mut self, slot: CompareSlot) {
        self.stats.compare.sampled.fetch_add(1, Relaxed);
        self.compare = Some(slot);
    }

    /// Writes an access-log line for this copy, linked to the primary's by request id.
    pub fn log_as(&mut self, primary: &PendingLine) {
        let authority = self
            .request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.line = Some(primary.for_mirror(
            &self.cluster.host,
            self.cluster.subset.as_deref(),
            authority,
        ));
    }

    /// Sends the copy, reads its answer within the drain limit (or keeps it
    /// for comparison), and counts the outcome. The in-flight permit is held
    /// until the exchange is over.
    pub async fn run(self, pool: Pool) {
        let Self {
            request,
            endpoint,
            authority,
            index,
            permit,
            timeout,
            max_drain_bytes,
            stats,
            cluster,
            mut line,
            gate,
            compare,
        } = self;
        if let Some(gate) = gate {
            if !gate.await.unwrap_or(false) {
                stats.dropped(DropReason::PrimaryFailed);
                if compare.is_some() {
                    stats.compare.skipped(SkipReason::MirrorFailed);
                }
                stats.in_flight.fetch_sub(1, Relaxed);
                if let Some(mut line) = line {
                    line.record.outcome = Some("dropped");
                    line.finish(0);
                }
                return;
            }
        }
        let tap = request.body().state();
        let method = request.method().clone();
        let started = Instant::now();
        let reading = Reading {
            limit: compare
                .as_ref()
                .map_or(max_drain_bytes, |c| c.max_body_bytes),
            budget: compare.as_ref().map(|c| c.queue.budget.clone()),
            stats: &stats,
            started,
        };
        let target = cluster.endpoint(index);
        let exchange = exchange(
            &pool, &cluster, target, endpoint, &authority, request, reading,
        );
        let ended = match tokio::time::timeout(timeout, exchange).await {
            Ok(ended) => ended,
            Err(_) => {
                cluster.record(target, TryOutcome::Timeout);
                Ended::TimedOut
            }
        };
        // A copy whose request body was cut is dropped for that reason, whatever came back.
        let mut ended = match (ended, tap.and_then(|t| t.cut_reason())) {
            (Ended::Failed(_), Some(reason)) => Ended::Dropped(reason),
            (ended, _) => ended,
        };
        let (status, bytes, mine) = ended.count(&stats, started);
        if let Some(slot) = compare {
            slot.hand_over(
                mine,
                method,
                &stats,
                timeout.saturating_sub(started.elapsed()),
            )
            .await;
        }
        if let Some(line) = line.as_mut() {
            line.record.status = status;
            line.record.outcome = Some(ended.label());
            if let Ended::Failed(reason) = ended {
                line.record.reason = Some(reason.label());
            }
        }
        if let Some(line) = line {
            line.finish(bytes);
        }
        stats.in_flight.fetch_sub(1, Relaxed);
        drop(permit);
    }
}

/// How a copy's answer is read: up to `limit` body bytes, kept within the
/// compare budget when the copy is compared.
struct Reading<'a> {
    limit: u64,
    budget: Option<Arc<CompareBudget>>,
    stats: &'a MirrorStats,
    /// When the copy started: a capture's latency runs from here.
    started: Instant,
}

/// How one copy ended, as counted.
#[derive(Debug)]
enum Ended {
    /// Read to its end within the limit.
    Answered(Answer),
    /// Past the limit: reading stopped and the connection was closed.
    Cut(Answer),
    Failed(FailReason),
    TimedOut,
    Dropped(DropReason),
}

#[derive(Debug)]
struct Answer {
    status: u16,
    bytes: u64,
    captured: Option<Captured>,
}

impl Ended {
    fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "answered",
            Self::Cut(_) => "cut",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timed_out",
            Self::Dropped(_) => "dropped",
        }
    }

    /// Counts the outcome; returns the status, the body bytes read and the capture.
    fn count(&mut self, stats: &MirrorStats, started: Instant) -> (u16, u64, Option<Captured>) {
        let counter = match self {
            Self::Answered(_) => &stats.answered,
            _ => &stats.cut,
        };
        match self {
            Self::Answered(answer) | Self::Cut(answer) => {
                counter.fetch_add(1, Relaxed);
                stats.responses.record(answer.status);
                stats.duration.record(started.elapsed());
                (answer.status, answer.bytes, answer.captured.take())
            }
            Self::Failed(reason) => {
                stats.failed(*reason);
                (0, 0, None)
            }
            Self::TimedOut => {
                stats.timed_out.fetch_add(1, Relaxed);
                (0, 0, None)
            }
            Self::Dropped(reason) => {
                stats.dropped(*reason);
                (0, 0, None)
            }
        }
    }
}

/// Sends the copy and reads its answer as `reading` says. Every byte read is
/// counted; a body past the limit is left unread and its connection closed
/// (dropping it unfinished keeps it out of the pool), so the worker's time on
/// a copy does not grow with what the mirror sends.
async fn exchange(
    pool: &Pool,
    cluster: &Cluster,
    target: &crate::cluster::Endpoint,
    endpoint: u32,
    authority: &Authority,
    request: Request<MirrorBody>,
    reading: Reading<'_>,
) -> Ended {
    let sent = pool.send(endpoint, authority, request).await;
    // A refused connection backs this endpoint off for the next copies; any
    // connection made ends the back-off.
    match &sent {
        Err(SendError::Connect) => target.health.backoff.connect_failed(),
        _ => target.health.backoff.connected(),
    }
    let (mut response, loan) = match sent {
        Ok(sent) => sent,
        Err(SendError::Connect) => {
            cluster.record(target, TryOutcome::ConnectFailure);
            return Ended::Failed(FailReason::Connect);
        }
        Err(SendError::Exchange(e)) => {
            cluster.record(target, TryOutcome::Reset);
            let reason = if e.is_parse() || e.is_parse_too_large() {
                FailReason::Protocol
            } else {
                FailReason::Reset
            };
            return Ended::Failed(reason);
        }
    };
    let status = response.status().as_u16();
    cluster.record(target, TryOutcome::Status(status));
    if headers::response_framing(response.headers_mut()).is_err() {
        return Ended::Failed(FailReason::Framing);
    }
    let started = reading.started;
    let (parts, body) = response.into_parts();
    let mut body = PooledResponse::new(body, loan);
    let mut capture = reading
        .budget
        .as_ref()
        .map(|budget| BodyCapture::new(reading.limit, budget));
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Ended::Failed(FailReason::BodyIncomplete);
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        bytes += data.len() as u64;
        reading
            .stats
            .answer_bytes
            .fetch_add(data.len() as u64, Relaxed);
        if let Some(c) = capture.as_mut() {
            c.push(data);
        }
        if bytes > reading.limit {
            drop(body);
            let captured =
                capture.map(|c| c.finish(status, parts.headers, started.elapsed(), true));
            return Ended::Cut(Answer {
                status,
                bytes,
                captured,
            });
        }
    }
    let captured = capture.map(|c| c.finish(status, parts.headers, started.elapsed(), false));
    Ended::Answered(Answer {
        status,
        bytes,
        captured,
    })
}

impl CompareSlot {
    /// Pairs the copy's capture with the primary's and queues the pair. Waiting
    /// for the primary's body is bounded by what is left of the copy's
    /// deadline; the permit is held meanwhile, as the copy is not over until
    /// its pair is handed on.
    async fn hand_over(
        self,
        mine: Option<Captured>,
        method: Method,
        stats: &MirrorStats,
        left: Duration,
    ) {
        let Some(mirror) = mine else {
            stats.compare.skipped(SkipReason::MirrorFailed);
            return;
        };
        let Ok(Ok(primary)) = tokio::time::timeout(left, self.primary).await else {
            stats.compare.skipped(SkipReason::PrimaryIncomplete);
            return;
        };
        if mirror.over_budget || primary.over_budget {
            stats.compare.skipped(SkipReason::BufferBudget);
            return;
        }
        let pair = ComparedPair {
            key: self.key,
            method,
            path: self.path,
            primary,
            mirror,
        };
        if self.queue.offer(pair) {
            stats.compare.queued.fetch_add(1, Relaxed);
        } else {
            stats.compare.skipped(SkipReason::QueueFull);
        }
    }
}
