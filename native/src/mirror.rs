//! Mirroring: sample, admit within bounds, build the copy, send it, drain and
//! drop the answer, count the outcome. Nothing here ever delays the primary.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Version};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{self, MirrorBody, TapHandle};
use crate::cluster::Cluster;
use crate::headers::shadow_host;
use crate::sampling::Sampler;
use crate::snapshot;
use crate::stats::{DropReason, MirrorStats};
use crate::upstream::{upstream_uri, MirrorClient};

/// One route's mirror: where copies go, what share, and their bounds.
#[derive(Debug)]
pub struct MirrorPolicy {
    pub cluster: Arc<Cluster>,
    pub sampler: Sampler,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    max_body_bytes: u64,
    host_suffix: String,
    pub stats: Arc<MirrorStats>,
}

impl MirrorPolicy {
    pub fn new(
        cluster: Arc<Cluster>,
        sampler: Sampler,
        spec: &snapshot::Mirror,
        stats: Arc<MirrorStats>,
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
            stats,
        })
    }

    /// Samples this request and, if it is chosen, admits a copy within the
    /// in-flight bound. A copy that cannot be admitted is counted as dropped.
    #[inline]
    pub fn admit(&self) -> Option<Admission> {
        if !self.sampler.sample() {
            return None;
        }
        let Some(endpoint) = self.cluster.pick() else {
            self.stats.dropped(DropReason::NoEndpoint);
            return None;
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.stats.dropped(DropReason::InFlightLimit);
            return None;
        };
        self.stats.in_flight.fetch_add(1, Relaxed);
        Some(Admission {
            permit,
            endpoint: endpoint.authority.clone(),
        })
    }

    /// Builds the copy of a request: same method, path, query, headers (already
    /// cleaned and carrying the request id) and body; Host with the suffix.
    /// Returns the tap to attach to the client's body when there is one.
    pub fn copy(
        &self,
        admission: Admission,
        parts: &Parts,
        has_body: bool,
    ) -> (MirrorCopy, Option<TapHandle>) {
        // HTTP/1.0 clients may send no Host: the destination's name stands in.
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&self.cluster.host);
        let (tap, body) = if has_body {
            let (tap, body) = body::tap(self.max_body_bytes);
            (Some(tap), body)
        } else {
            (None, MirrorBody::empty())
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = upstream_uri(&admission.endpoint, parts.uri.path_and_query());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = parts.headers.clone();
        if let Ok(shadow) = HeaderValue::from_str(&shadow_host(host, &self.host_suffix)) {
            request.headers_mut().insert(HOST, shadow);
        }
        let copy = MirrorCopy {
            request,
            permit: admission.permit,
            timeout: self.timeout,
            stats: self.stats.clone(),
        };
        (copy, tap)
    }
}

/// A sampled request that fits within the mirror's bounds.
#[derive(Debug)]
pub struct Admission {
    permit: OwnedSemaphorePermit,
    endpoint: Authority,
}

/// A copy ready to go; `run` it on its own task.
#[derive(Debug)]
pub struct MirrorCopy {
    request: Request<MirrorBody>,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
    stats: Arc<MirrorStats>,
}

impl MirrorCopy {
    /// Sends the copy, drains and drops the answer, and counts the outcome.
    /// The in-flight permit is held until the exchange is over.
    pub async fn run(self, client: MirrorClient) {
        let Self {
            request,
            permit,
            timeout,
            stats,
        } = self;
        let tap = request.body().state();
        let started = Instant::now();
        let exchange = async {
            let response = client.request(request).await?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            // Read and drop: the mirror's answer is never kept.
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(status)) => {
                stats.answered.fetch_add(1, Relaxed);
                stats.responses.record(status);
                stats.duration.record(started.elapsed());
            }
            Ok(Err(_)) => match tap.and_then(|t| t.cut_reason()) {
                Some(reason) => stats.dropped(reason),
                None => {
                    stats.failed.fetch_add(1, Relaxed);
                }
            },
            Err(_) => {
                stats.timed_out.fetch_add(1, Relaxed);
            }
        }
        stats.in_flight.fetch_sub(1, Relaxed);
        drop(permit);
    }
}
