//! Mirroring: sample, admit within bounds, build the copy, send it, drain and
//! drop the answer (or, for a compared copy, keep it bounded and queue it with
//! the primary's), count the outcome. Nothing here ever delays the primary.

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
    BodyCapture, CompareKey, CompareQueue, CompareSpec, ComparedPair, PrimaryReceiver, SkipReason,
};
use crate::header_ops::HeaderOps;
use crate::headers::shadow_host;
use crate::pool::{Pool, PooledResponse, SendError};
use crate::retry::TryOutcome;
use crate::sampling::Sampler;
use crate::snapshot;
use crate::splice;
use crate::stats::TcpMirrorStats;
use crate::stats::{DropReason, MirrorStats};
use crate::upstream::origin_uri;

/// One route's mirror: where copies go, what share, and their bounds.
#[derive(Debug)]
pub struct MirrorPolicy {
    pub cluster: Arc<Cluster>,
    pub sampler: Sampler,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    max_body_bytes: u64,
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
        if let Ok(shadow) = HeaderValue::from_str(&shadow_host(host, &self.host_suffix)) {
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
        if let Ok(shadow) = HeaderValue::from_str(&shadow_host(host, &self.host_suffix)) {
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

    /// Sends the copy, drains and drops the answer, and counts the outcome.
    /// The in-flight permit is held until the exchange is over.
    pub async fn run(self, pool: Pool) {
        let Self {
            request,
            endpoint,
            authority,
            index,
            permit,
            timeout,
            stats,
            cluster,
            line,
            gate,
            compare,
            ..
        } = self;
        let target = cluster.endpoint(index);
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
        let limit = compare.as_ref().map(|c| c.max_body_bytes);
        let started = Instant::now();
        let exchange = async {
            let sent = pool.send(endpoint, &authority, request).await;
            // A refused connection backs this endpoint off for the next copies;
            // any connection made ends the back-off.
            match &sent {
                Err(SendError::Connect) => target.health.backoff.connect_failed(),
                _ => target.health.backoff.connected(),
            }
            let (response, loan) = sent.inspect_err(|e| {
                let outcome = match e {
                    SendError::Connect => TryOutcome::ConnectFailure,
                    SendError::Exchange(_) => TryOutcome::Reset,
                };
                cluster.record(target, outcome);
            })?;
            let status = response.status().as_u16();
            cluster.record(target, TryOutcome::Status(status));
            let (parts, body) = response.into_parts();
            let mut body = PooledResponse::new(body, loan);
            let mut bytes = 0u64;
            // Read and drop, unless compared: then kept up to the bound.
            let mut capture = limit.map(BodyCapture::new);
            let mut complete = true;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            bytes += data.len() as u64;
                            if let Some(c) = capture.as_mut() {
                                c.push(data);
                            }
                        }
                    }
                    Err(_) => {
                        complete = false;
                        break;
                    }
                }
            }
            let captured = capture
                .filter(|_| complete)
                .map(|c| c.finish(status, parts.headers, started.elapsed()));
            Ok::<_, crate::pool::SendError>((status, bytes, captured))
        };
        let mut mine = None;
        let (outcome, status, bytes_out) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, bytes, captured))) => {
                mine = captured;
                stats.answered.fetch_add(1, Relaxed);
                stats.responses.record(status);
                stats.duration.record(started.elapsed());
                ("answered", status, bytes)
            }
            Ok(Err(_)) => match tap.and_then(|t| t.cut_reason()) {
                Some(reason) => {
                    stats.dropped(reason);
                    ("dropped", 0, 0)
                }
                None => {
                    stats.failed.fetch_add(1, Relaxed);
                    ("failed", 0, 0)
                }
            },
            Err(_) => {
                cluster.record(target, TryOutcome::Timeout);
                stats.timed_out.fetch_add(1, Relaxed);
                ("timed_out", 0, 0)
            }
        };
        if let Some(slot) = compare {
            // Waiting for the primary's body is bounded by what is left of
            // the copy's deadline; the permit is held meanwhile, as the copy
            // is not over until its pair is handed on.
            let left = timeout.saturating_sub(started.elapsed());
            let primary = tokio::time::timeout(left, slot.primary).await;
            match (mine, primary) {
                (None, _) => stats.compare.skipped(SkipReason::MirrorFailed),
                (Some(_), Err(_) | Ok(Err(_))) => {
                    stats.compare.skipped(SkipReason::PrimaryIncomplete);
                }
                (Some(mirror), Ok(Ok(primary))) => {
                    let pair = ComparedPair {
                        key: slot.key,
                        method,
                        path: slot.path,
                        primary,
                        mirror,
                    };
                    if slot.queue.offer(pair) {
                        stats.compare.queued.fetch_add(1, Relaxed);
                    } else {
                        stats.compare.skipped(SkipReason::QueueFull);
                    }
                }
            }
        }
        if let Some(mut line) = line {
            line.record.status = status;
            line.record.outcome = Some(outcome);
            line.finish(bytes_out);
        }
        stats.in_flight.fetch_sub(1, Relaxed);
        drop(permit);
    }
}
