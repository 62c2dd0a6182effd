//! A route's mirror policy: sampling, admission within its bounds (endpoint,
//! in-flight copies), and building each copy: same method, path, query,
//! headers and body, Host with the shadow suffix. Upgrades and tunnels get a
//! feed of the client's bytes instead.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::{Method, Request};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::body::{self, MirrorBody, MirrorBudget, TapHandle};
use crate::http::grpc;
use crate::http::header_ops::HeaderOps;
use crate::http::headers::{self, shadow_host};
use crate::http::request_head::{Fields, RequestHead};
use crate::mirror::compare::CompareSpec;
use crate::mirror::copy::{CopyHead, Gate, InFlight, MirrorCopy};
use crate::sampling::Sampler;
use crate::snapshot;
use crate::splice::feed::{start_feed, Context, Feed, FeedSpec};
use crate::telemetry::gauge::{Field, Held};
use crate::telemetry::TcpMirrorStats;
use crate::telemetry::{DropReason, MirrorStats};
use crate::upstream::cluster::{Cluster, Unavailable};
use crate::upstream::protocol::{self, Wire};

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
    /// gRPC methods copied despite `only_idempotent`.
    grpc_methods: Vec<String>,
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
            grpc_methods: spec.grpc_methods.clone(),
            after_primary_success: spec.after_primary_success,
            stats,
            compare,
            upgrade_stats: Arc::default(),
        })
    }

    /// Samples this request and, if it is chosen, admits a copy within the
    /// in-flight bound. A copy that cannot be admitted is counted as dropped.
    #[inline]
    /// `fields`: the head's, as it goes to the primary.
    pub fn admit(&self, method: &Method, path: &str, fields: Fields<'_>) -> Option<Admission> {
        if self.only_idempotent && !method.is_idempotent() && !self.safe_grpc(fields, path) {
            return None;
        }
        if !self.sampler.sample() {
            return None;
        }
        self.admit_chosen()
    }

    /// A gRPC call to a method listed as safe to copy.
    fn safe_grpc(&self, fields: Fields<'_>, path: &str) -> bool {
        !self.grpc_methods.is_empty()
            && grpc::is_grpc_call(fields)
            && grpc::method_listed(path, &self.grpc_methods)
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
        Some(Admission {
            permit,
            in_flight: Held::new(Field(self.stats.clone(), |s: &MirrorStats| &s.in_flight)),
            index: endpoint.index,
        })
    }

    /// Samples an upgrade request (as `admit` does) and, if it is chosen,
    /// opens a feed that sends the mirror the same upgrade request, Host with
    /// the suffix, then the client's bytes once the mirror answers 101. Its
    /// queue holds at most the mirror's `max_body_bytes`.
    pub fn upgrade_feed(&self, parts: &Parts, cx: &Context<'_>) -> Option<Feed> {
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
        // The string's own buffer becomes the value's: no copy.
        let shadow = Bytes::from(shadow_host(host, &self.host_suffix, &self.cluster.host));
        if let Ok(shadow) = HeaderValue::from_maybe_shared(shadow) {
            request.headers_mut().insert(HOST, shadow);
        }
        self.request_headers.apply(request.headers_mut());
        let head = crate::http::upgrade::head_bytes(&request.into_parts().0);
        let spec = FeedSpec {
            cluster: &self.cluster,
            buffer_bytes: usize::try_from(self.max_body_bytes.max(1)).unwrap_or(usize::MAX),
            timeout: self.timeout,
            stats: &self.upgrade_stats,
            handshake: Some(head),
        };
        start_feed(spec, cx)
    }

    /// A sampled feed for a CONNECT tunnel: the client's bytes go to a raw
    /// connection to one mirror endpoint, as on a tcp route (the mirror is the
    /// destination, not a proxy: it gets no CONNECT of its own).
    pub fn tunnel_feed(&self, cx: &Context<'_>) -> Option<Feed> {
        // What a tunnel carries is unknown: a guard against copying writes holds.
        if self.only_idempotent || !self.sampler.sample() {
            return None;
        }
        let spec = FeedSpec {
            cluster: &self.cluster,
            buffer_bytes: usize::try_from(self.max_body_bytes.max(1)).unwrap_or(usize::MAX),
            timeout: self.timeout,
            stats: &self.upgrade_stats,
            handshake: None,
        };
        start_feed(spec, cx)
    }

    /// Builds the copy of a request: same method, path, query, headers (already
    /// cleaned and carrying the request id) and body; Host with the suffix.
    /// Returns the tap to attach to the client's body when there is one.
    pub fn copy(
        &self,
        admission: Admission,
        primary: &RequestHead,
        has_body: bool,
        budget: &Arc<MirrorBudget>,
    ) -> (MirrorCopy, Option<TapHandle>, Option<Gate>) {
        let (tap, body) = if has_body {
            let (tap, body) = body::tap(self.max_body_bytes, budget);
            (Some(tap), body)
        } else {
            (None, MirrorBody::empty())
        };
        let wire = Wire::choose(self.cluster.protocol, primary.version());
        let head = self.copy_head(primary, wire);
        let (gate, opener) = if self.after_primary_success {
            let (tx, rx) = oneshot::channel();
            (Some(rx), Some(Gate(tx)))
        } else {
            (None, None)
        };
        let copy = MirrorCopy {
            head,
            body,
            wire,
            index: admission.index,
            permit: admission.permit,
            in_flight: admission.in_flight,
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

    /// The copy's head: the primary's, its Host with the suffix and the
    /// copy's own header rules applied. A head kept as it came, going over
    /// HTTP/1.1 with no rule of the copy's to apply, stays so: its fields are
    /// the primary's bytes, written with the shadow Host in place.
    fn copy_head(&self, primary: &RequestHead, wire: Wire) -> CopyHead {
        // HTTP/1.0 clients may send no Host: the destination's name stands in.
        let host = primary.fields().get(&HOST).and_then(headers::visible_text);
        let host = host.unwrap_or(&self.cluster.host);
        // The string's own buffer becomes the value's: no copy.
        let shadow = Bytes::from(shadow_host(host, &self.host_suffix, &self.cluster.host));
        let shadow = HeaderValue::from_maybe_shared(shadow).ok();
        let as_kept = wire == Wire::Http1 && self.request_headers.is_empty();
        let kept = as_kept.then(|| protocol::kept_for_upstream(primary));
        match (kept.flatten(), shadow) {
            (Some(head), Some(host)) => CopyHead::Kept { head, host },
            (_, shadow) => {
                let mut parts = primary.to_parts();
                protocol::for_upstream(&mut parts);
                if let Some(shadow) = shadow {
                    parts.headers.insert(HOST, shadow);
                }
                self.request_headers.apply(&mut parts.headers);
                CopyHead::Map(parts)
            }
        }
    }
}

/// A sampled request that fits within the mirror's bounds.
#[derive(Debug)]
pub struct Admission {
    pub(super) permit: OwnedSemaphorePermit,
    /// This copy's place in the mirror's in-flight gauge, until it is over.
    pub(super) in_flight: InFlight,
    /// The endpoint's place in the cluster (for its passive-health state).
    pub(super) index: usize,
}
