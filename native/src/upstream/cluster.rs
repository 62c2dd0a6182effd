//! Clusters: a destination's endpoints, how one is picked (round robin,
//! least request, random; weighted), the cluster's request limit, and which
//! endpoints passive health has taken out of the pick.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http::uri::Authority;
use rustls::pki_types::ServerName;

use crate::http::local_reply::LocalReply;
use crate::http::retry::TryOutcome;
use crate::sampling::WeightedPicker;
use crate::snapshot::{self, LoadBalancer, UpstreamProtocol};
use crate::tls::{Alpn, Originator};
use crate::upstream::dial::Originate;
use crate::upstream::multiplex::Sharing;
use crate::upstream::outlier::{Health, Outliers};
use crate::upstream::pool::{EndpointIds, Target};
use crate::upstream::protocol::Wire;

/// The destination's TLS, and the name it goes by when no request names one.
fn originator(
    c: &snapshot::Cluster,
) -> Result<(Option<Originator>, Option<ServerName<'static>>), String> {
    let Some(settings) = &c.tls else {
        return Ok((None, None));
    };
    let originator =
        Originator::new(settings).map_err(|e| format!("cluster {:?}: tls: {e}", c.host))?;
    let name = originator.name(&c.host).ok_or_else(|| {
        format!(
            "cluster {:?}: tls: the host is not a name a certificate can carry; set `sni`",
            c.host
        )
    })?;
    Ok((Some(originator), Some(name)))
}

/// SHA-256 of a destination's TLS settings (PEM content included), hex.
fn fingerprint(settings: &snapshot::UpstreamTls) -> String {
    use std::fmt::Write as _;
    let text = serde_json::to_string(settings).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Longest smooth round-robin schedule precomputed; past it weights are honoured
/// by weighted random picks instead.
const MAX_SCHEDULE: u64 = 10_000;

#[derive(Debug)]
pub struct Endpoint {
    /// Stable across reloads; indexes the connection pools.
    pub id: u32,
    pub authority: Authority,
    /// Requests in flight to this endpoint (for least-request picks).
    active: AtomicU32,
    /// Its place in the cluster.
    pub index: usize,
    /// 0: never picked.
    weight: u32,
    pub health: Health,
}

#[derive(Debug)]
enum Picker {
    /// Indexes in smooth weighted round-robin order, walked by a shared counter.
    RoundRobin {
        schedule: Vec<u32>,
        next: AtomicUsize,
    },
    Random(WeightedPicker),
    /// Power of two choices: the less loaded of two random endpoints.
    LeastRequest,
}

/// Why no endpoint could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    NoEndpoint,
    /// Every endpoint is ejected (outlier detection) or backing off (mirrors).
    Ejected,
    Overflow,
}

#[derive(Debug)]
pub struct Cluster {
    pub host: String,
    pub subset: Option<String>,
    endpoints: Vec<Endpoint>,
    picker: Picker,
    max_requests: Option<u32>,
    in_flight: AtomicU32,
    outliers: Option<Outliers>,
    /// How requests go to the endpoints, and the HTTP/2 connections' bounds.
    pub protocol: UpstreamProtocol,
    pub max_requests_per_connection: Option<u64>,
    pub max_concurrent_streams: u32,
    /// TLS to the endpoints (DestinationRule `tls`); `None`: plaintext.
    pub tls: Option<Originator>,
    /// The name TLS sends and verifies when no request names one (copies,
    /// spliced connections): `sni`, else the destination host. Set (checked
    /// when compiled) whenever `tls` is.
    own_name: Option<ServerName<'static>>,
}

/// A TLS destination's name for a connection could not be made (a Host
/// that is no DNS name or address): the request fails as a handshake would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoTlsName;

impl Cluster {
    pub fn compile(c: &snapshot::Cluster, ids: &EndpointIds) -> Result<Self, String> {
        let weights: Vec<u32> = if c.weights.is_empty() {
            vec![1; c.endpoints.len()]
        } else if c.weights.len() == c.endpoints.len() {
            c.weights.clone()
        } else {
            return Err(format!(
                "cluster {:?}: {} weights for {} endpoints",
                c.host,
                c.weights.len(),
                c.endpoints.len()
            ));
        };
        let (tls, own_name) = originator(c)?;
        // TLS connections are pooled apart from plaintext ones to the same
        // address, and apart per TLS settings (a rotated client certificate
        // opens new connections).
        let pool_key = |a: &Authority| match &c.tls {
            None => a.as_str().to_owned(),
            Some(settings) => format!("{a} tls {}", fingerprint(settings)),
        };
        let endpoints: Vec<Endpoint> = c
            .endpoints
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(index, (e, &weight))| match e.parse::<Authority>() {
                Ok(a) if a.port_u16().is_some() && !a.as_str().contains('@') => Ok(Endpoint {
                    id: ids.id(&pool_key(&a)),
                    authority: a,
                    active: AtomicU32::new(0),
                    index,
                    weight,
                    health: Health::default(),
                }),
                _ => Err(format!(
                    "cluster {:?}: endpoint {e:?} is not host:port",
                    c.host
                )),
            })
            .collect::<Result<_, _>>()?;
        let outliers = c
            .outlier_detection
            .as_ref()
            .map(|spec| Outliers::new(spec, endpoints.len()))
            .transpose()
            .map_err(|e| format!("cluster {:?}: {e}", c.host))?;
        if !endpoints.is_empty() && weights.iter().all(|&w| w == 0) {
            return Err(format!("cluster {:?}: every endpoint weight is 0", c.host));
        }
        let picker = match c.load_balancer {
            LoadBalancer::LeastRequest => Picker::LeastRequest,
            LoadBalancer::Random => random(&weights),
            LoadBalancer::RoundRobin => match smooth_schedule(&weights) {
                Some(schedule) => Picker::RoundRobin {
                    schedule,
                    next: AtomicUsize::new(0),
                },
                None => random(&weights),
            },
        };
        Ok(Self {
            host: c.host.clone(),
            subset: c.subset.clone(),
            endpoints,
            picker,
            max_requests: c.max_requests,
            in_flight: AtomicU32::new(0),
            outliers,
            protocol: c.protocol,
            max_requests_per_connection: c.max_requests_per_connection,
            max_concurrent_streams: c
                .max_concurrent_streams
                .unwrap_or_else(snapshot::defaults::upstream_max_concurrent_streams)
                .max(1),
            own_name,
            tls,
        })
    }

    /// The name a TLS connection for a request sends as SNI and verifies:
    /// `sni` when configured, else `host` (the request's Host: Istio's auto
    /// SNI). `Ok(None)`: the destination is plaintext.
    pub fn tls_name<'s>(
        &self,
        host: impl FnOnce() -> Option<&'s str>,
    ) -> Result<Option<ServerName<'static>>, NoTlsName> {
        let Some(originator) = &self.tls else {
            return Ok(None);
        };
        match host() {
            Some(host) => originator.name(host).map(Some).ok_or(NoTlsName),
            None => Ok(self.own_name.clone()),
        }
    }

    /// The TLS a spliced connection (tcp route, tunnel, tcp mirror) to this
    /// destination originates: no ALPN, named by `sni` or the destination host.
    pub fn spliced_tls(&self) -> Option<Originate<'_>> {
        let originator = self.tls.as_ref()?;
        Some(Originate {
            originator,
            name: self.own_name.clone()?,
            alpn: Alpn::None,
        })
    }

    /// An endpoint for a mirror copy (copies are bounded by their own limit):
    /// none that is ejected, nor one that refused the last copy's connection.
    #[inline]
    pub fn pick_for_mirror(&self) -> Result<&Endpoint, Unavailable> {
        self.pick_where(|e| !self.is_ejected(e) && e.health.backoff.admits())
    }

    /// Where a request to `endpoint` goes, in `wire`, with this cluster's
    /// bounds on sharing a connection, over TLS as `name` (from `tls_name`;
    /// `None`: the destination's own name).
    pub fn target<'e>(
        &'e self,
        endpoint: &'e Endpoint,
        wire: Wire,
        name: Option<&'e ServerName<'static>>,
    ) -> Target<'e> {
        Target {
            endpoint: endpoint.id,
            authority: &endpoint.authority,
            wire,
            tls: self.tls.as_ref().zip(name.or(self.own_name.as_ref())),
            sharing: Sharing {
                max_streams: self.max_concurrent_streams,
                max_requests: self.max_requests_per_connection,
            },
            raw_answer: false,
            wanted_at: None,
        }
    }

    /// The endpoint at `index` (its `index` field).
    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    /// Counts an answer (or a failure) of `endpoint` for outlier detection.
    #[inline]
    pub fn record(&self, endpoint: &Endpoint, outcome: TryOutcome) {
        if let Some(outliers) = &self.outliers {
            outliers.record(&endpoint.health, outcome);
        }
    }

    /// Its outlier detection state; `None` without outlier detection.
    pub fn outlier_report(&self) -> Option<crate::telemetry::OutlierReport> {
        self.outliers.as_ref()?;
        let (ejected, ejections_total) = self.ejections();
        Some(crate::telemetry::OutlierReport {
            host: self.host.clone(),
            subset: self.subset.clone(),
            ejected,
            ejections_total,
        })
    }

    /// Endpoints ejected by outlier detection now, and ejections so far.
    pub fn ejections(&self) -> (u32, u64) {
        self.outliers.as_ref().map_or((0, 0), |o| {
            (o.ejected_now(), o.ejections_total.load(Relaxed))
        })
    }

    #[inline]
    fn is_ejected(&self, endpoint: &Endpoint) -> bool {
        self.outliers
            .as_ref()
            .is_some_and(|o| o.is_ejected(&endpoint.health))
    }

    /// The balancer's pick if `usable`, else the next usable endpoint after it
    /// (in cluster order, zero weights skipped). Healthy clusters never scan.
    #[inline]
    fn pick_where(&self, usable: impl Fn(&Endpoint) -> bool) -> Result<&Endpoint, Unavailable> {
        let first = self.pick_index().ok_or(Unavailable::NoEndpoint)?;
        let n = self.endpoints.len();
        (0..n)
            .map(|k| &self.endpoints[(first + k) % n])
            .find(|e| e.weight > 0 && usable(e))
            .ok_or(Unavailable::Ejected)
    }

    #[inline]
    fn pick_index(&self) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let index = match &self.picker {
            Picker::RoundRobin { schedule, next } => {
                schedule[next.fetch_add(1, Relaxed) % schedule.len()] as usize
            }
            Picker::Random(weights) => weights.pick(),
            Picker::LeastRequest => {
                let n = self.endpoints.len();
                let (a, b) = (fastrand::usize(0..n), fastrand::usize(0..n));
                let load = |i: usize| self.endpoints[i].active.load(Relaxed);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        Some(index)
    }

    /// An endpoint for a primary request, counted in flight until the lease drops.
    pub fn acquire(&self) -> Result<Lease<'_>, Unavailable> {
        if let Some(max) = self.max_requests {
            if self.in_flight.fetch_add(1, Relaxed) >= max {
                self.in_flight.fetch_sub(1, Relaxed);
                return Err(Unavailable::Overflow);
            }
        } else {
            self.in_flight.fetch_add(1, Relaxed);
        }
        let endpoint = match self.pick_where(|e| !self.is_ejected(e)) {
            Ok(endpoint) => endpoint,
            Err(why) => {
                self.in_flight.fetch_sub(1, Relaxed);
                return Err(why);
            }
        };
        endpoint.active.fetch_add(1, Relaxed);
        Ok(Lease {
            cluster: self,
            endpoint,
        })
    }
}

impl Cluster {
    /// `acquire` for a spliced session (WebSocket, CONNECT): the hold outlives
    /// the request that took it, so the limit and least-request picks count
    /// the session for its whole life, as a tcp-route connection counts.
    pub fn acquire_held(self: &Arc<Self>) -> Result<HeldLease, Unavailable> {
        let lease = self.acquire()?;
        let endpoint = lease.endpoint.index;
        // Its counts pass to the held lease, which gives them back on drop.
        std::mem::forget(lease);
        Ok(HeldLease {
            cluster: self.clone(),
            endpoint,
        })
    }
}

fn random(weights: &[u32]) -> Picker {
    // An empty cluster never picks; any picker will do.
    Picker::Random(
        WeightedPicker::new(weights.iter().copied())
            .unwrap_or_else(|| WeightedPicker::new([1]).expect("one positive weight")),
    )
}

/// nginx's smooth weighted round robin, unrolled once at compile time: each
/// endpoint appears weight/gcd times, spread out rather than in runs.
fn smooth_schedule(weights: &[u32]) -> Option<Vec<u32>> {
    let gcd = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let reduced: Vec<i64> = weights.iter().map(|&w| i64::from(w / gcd)).collect();
    let total: i64 = reduced.iter().sum();
    if total as u64 > MAX_SCHEDULE {
        return None;
    }
    let mut current = vec![0i64; reduced.len()];
    let schedule = (0..total)
        .map(|_| {
            current.iter_mut().zip(&reduced).for_each(|(c, w)| *c += w);
            let best = (0..current.len()).max_by_key(|&i| (current[i], -(i as i64)))?;
            current[best] -= total;
            Some(best as u32)
        })
        .collect::<Option<Vec<_>>>()?;
    (!schedule.is_empty()).then_some(schedule)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A primary request's hold on an endpoint and on its cluster's request limit.
#[derive(Debug)]
pub struct Lease<'a> {
    cluster: &'a Cluster,
    endpoint: &'a Endpoint,
}

impl<'a> Lease<'a> {
    /// The endpoint, for as long as the cluster (not only the lease) lives.
    pub fn endpoint(&self) -> &'a Endpoint {
        self.endpoint
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Relaxed);
        self.cluster.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A `Lease` that owns its cluster: held by a session's task.
#[derive(Debug)]
pub struct HeldLease {
    cluster: Arc<Cluster>,
    endpoint: usize,
}

impl HeldLease {
    pub fn endpoint(&self) -> &Endpoint {
        &self.cluster.endpoints[self.endpoint]
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.endpoint().active.fetch_sub(1, Relaxed);
        self.cluster.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What the client is told when no endpoint of the destination can take it.
impl From<Unavailable> for LocalReply {
    fn from(why: Unavailable) -> Self {
        match why {
            Unavailable::NoEndpoint | Unavailable::Ejected => Self::NoEndpoint,
            Unavailable::Overflow => Self::Overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(endpoints: &[&str], weights: &[u32], lb: LoadBalancer, max: Option<u32>) -> Cluster {
        Cluster::compile(
            &snapshot::Cluster {
                host: "reviews".into(),
                subset: None,
                endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
                weights: weights.to_vec(),
                load_balancer: lb,
                max_requests: max,
                outlier_detection: None,
                protocol: Default::default(),
                max_requests_per_connection: None,
                max_concurrent_streams: None,
                tls: None,
            },
            &EndpointIds::default(),
        )
        .unwrap()
    }

    fn picks(c: &Cluster, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| c.pick_for_mirror().unwrap().authority.to_string())
            .collect()
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let c = cluster(&["a:1", "b:1"], &[], LoadBalancer::RoundRobin, None);
        assert_eq!(picks(&c, 4), ["a:1", "b:1", "a:1", "b:1"]);
        let c = cluster(
            &["a:1", "b:1", "c:1"],
            &[50, 25, 25],
            LoadBalancer::RoundRobin,
            None,
        );
        assert_eq!(picks(&c, 4), ["a:1", "b:1", "c:1", "a:1"]);
    }

    #[test]
    fn zero_weight_endpoints_are_never_picked() {
        let c = cluster(&["a:1", "b:1"], &[0, 3], LoadBalancer::RoundRobin, None);
        assert!(picks(&c, 10).iter().all(|p| p == "b:1"));
        let c = cluster(&["a:1", "b:1"], &[0, 3], LoadBalancer::Random, None);
        assert!(picks(&c, 100).iter().all(|p| p == "b:1"));
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = cluster(&["a:1", "b:1"], &[], LoadBalancer::LeastRequest, None);
        let busy = c.acquire().unwrap();
        let busy_name = busy.endpoint().authority.to_string();
        // With one of two endpoints busy, power-of-two-choices picks the idle
        // one unless both choices land on the busy one (p = 1/4 per pick).
        let idle = picks(&c, 400).iter().filter(|p| **p != busy_name).count();
        assert!(idle >= 250, "idle endpoint picked {idle} of 400 times");
    }

    #[test]
    fn max_requests_overflows_and_leases_give_back() {
        let c = cluster(&["a:1"], &[], LoadBalancer::RoundRobin, Some(2));
        let first = c.acquire().unwrap();
        let _second = c.acquire().unwrap();
        assert_eq!(c.acquire().unwrap_err(), Unavailable::Overflow);
        drop(first);
        assert!(c.acquire().is_ok());
        let empty = cluster(&[], &[], LoadBalancer::RoundRobin, None);
        assert_eq!(empty.acquire().unwrap_err(), Unavailable::NoEndpoint);
        assert_eq!(empty.in_flight.load(Relaxed), 0);
    }

    #[test]
    fn a_held_lease_counts_until_its_session_ends() {
        let c = Arc::new(cluster(&["a:1"], &[], LoadBalancer::RoundRobin, Some(2)));
        let held = c.acquire_held().unwrap();
        let other = c.acquire().unwrap();
        assert_eq!(c.acquire_held().unwrap_err(), Unavailable::Overflow);
        assert_eq!(held.endpoint().active.load(Relaxed), 2);
        drop(other);
        assert_eq!(c.acquire().map(|_| ()), Ok(()), "one slot given back");
        drop(held);
        assert_eq!(c.in_flight.load(Relaxed), 0);
        assert_eq!(c.endpoint(0).active.load(Relaxed), 0);
    }

    fn with_outliers(endpoints: &[&str], max_percent: u32) -> Cluster {
        Cluster::compile(
            &snapshot::Cluster {
                host: "reviews".into(),
                subset: None,
                endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
                weights: vec![],
                load_balancer: LoadBalancer::RoundRobin,
                max_requests: None,
                outlier_detection: Some(snapshot::OutlierDetection {
                    consecutive_5xx: 2,
                    consecutive_gateway_errors: 0,
                    interval_ms: 10_000,
                    base_ejection_time_ms: 30_000,
                    max_ejection_percent: max_percent,
                }),
                protocol: Default::default(),
                max_requests_per_connection: None,
                max_concurrent_streams: None,
                tls: None,
            },
            &EndpointIds::default(),
        )
        .unwrap()
    }

    #[test]
    fn ejected_endpoints_are_skipped_by_the_balancer() {
        let c = with_outliers(&["a:1", "b:1", "c:1"], 50);
        let a = &c.endpoints[0];
        c.record(a, TryOutcome::Status(500));
        c.record(a, TryOutcome::Status(503));
        assert_eq!(c.ejections(), (1, 1));
        let picked: Vec<String> = (0..6)
            .map(|_| c.acquire().unwrap().endpoint().authority.to_string())
            .collect();
        assert!(!picked.contains(&"a:1".to_string()), "{picked:?}");
        // 50% of three: a second ejection would be 66%, so b stays in.
        let b = &c.endpoints[1];
        c.record(b, TryOutcome::ConnectFailure);
        c.record(b, TryOutcome::ConnectFailure);
        assert_eq!(c.ejections(), (1, 1));
        assert!(picks(&c, 6).contains(&"b:1".to_string()));
    }

    #[test]
    fn a_fully_ejected_cluster_has_no_endpoint_to_give() {
        let c = with_outliers(&["a:1"], 100);
        c.record(&c.endpoints[0], TryOutcome::Status(500));
        c.record(&c.endpoints[0], TryOutcome::Status(500));
        assert_eq!(c.acquire().unwrap_err(), Unavailable::Ejected);
        assert_eq!(c.in_flight.load(Relaxed), 0);
    }

    #[test]
    fn mirror_picks_skip_endpoints_that_refuse_connections() {
        let c = cluster(&["a:1", "b:1"], &[], LoadBalancer::RoundRobin, None);
        c.endpoints[0].health.backoff.connect_failed();
        assert!(picks(&c, 4).iter().all(|p| p == "b:1"));
        c.endpoints[1].health.backoff.connect_failed();
        assert_eq!(c.pick_for_mirror().unwrap_err(), Unavailable::Ejected);
        // Without outlier detection, answers never take an endpoint out.
        for _ in 0..100 {
            c.record(&c.endpoints[0], TryOutcome::Status(500));
        }
        assert_eq!(c.ejections(), (0, 0));
    }

    #[test]
    fn bad_clusters_are_refused() {
        let bad = |endpoints: Vec<String>, weights: Vec<u32>| {
            Cluster::compile(
                &snapshot::Cluster {
                    host: "x".into(),
                    subset: None,
                    endpoints,
                    weights,
                    load_balancer: LoadBalancer::RoundRobin,
                    max_requests: None,
                    outlier_detection: None,
                    protocol: Default::default(),
                    max_requests_per_connection: None,
                    max_concurrent_streams: None,
                    tls: None,
                },
                &EndpointIds::default(),
            )
            .unwrap_err()
        };
        assert!(bad(vec!["no-port".into()], vec![]).contains("not host:port"));
        assert!(bad(vec!["a:1".into()], vec![1, 2]).contains("2 weights for 1"));
        assert!(bad(vec!["a:1".into()], vec![0]).contains("weight is 0"));
    }
}
