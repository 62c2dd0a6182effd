//! The compiled route table: a Snapshot turned into what the hot path reads.
//!
//! Built once per snapshot, immutable afterwards, and published whole through
//! an `ArcSwap`; a request loads it once and keeps it for its lifetime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use crate::matcher::{RequestMatcher, RequestView};
use crate::mirror::MirrorPolicy;
use crate::sampling::{Sampler, WeightedPicker, MILLION};
use crate::snapshot::{self, Snapshot};
use crate::stats::{DestinationStats, StatsKey, StatsRegistry};

/// A destination host (and subset) with its endpoints, picked round robin.
#[derive(Debug)]
pub struct Cluster {
    pub host: String,
    pub subset: Option<String>,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
}

impl Cluster {
    #[inline]
    pub fn next_endpoint(&self) -> Option<&Authority> {
        match self.endpoints.len() {
            0 => None,
            1 => self.endpoints.first(),
            n => Some(&self.endpoints[self.next.fetch_add(1, Relaxed) % n]),
        }
    }
}

/// A primary destination of one route, with the counters it answers into.
#[derive(Debug)]
pub struct Destination {
    pub cluster: Arc<Cluster>,
    pub stats: Arc<DestinationStats>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    matchers: Vec<RequestMatcher>,
    picker: WeightedPicker,
    pub destinations: Vec<Destination>,
    pub timeout: Option<Duration>,
    pub mirrors: Vec<MirrorPolicy>,
}

impl Route {
    fn is_match(&self, req: &RequestView<'_>) -> bool {
        self.matchers.is_empty() || self.matchers.iter().any(|m| m.is_match(req))
    }

    #[inline]
    pub fn pick_destination(&self) -> &Destination {
        &self.destinations[self.picker.pick()]
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
}

impl VirtualHost {
    pub fn route_for(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.is_match(req))
    }
}

/// Host name -> virtual host, in Envoy's order: exact, then the longest
/// `*.suffix`, then `*`.
#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<String, usize>,
    /// `(".example.com", vhost)`, longest suffix first.
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl HostIndex {
    fn insert(&mut self, pattern: &str, vhost: usize) -> Result<(), String> {
        let pattern = pattern.to_ascii_lowercase();
        let taken = if pattern == "*" {
            self.any.replace(vhost).is_some()
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                return Err(format!("bad host pattern {pattern:?}"));
            }
            let taken = self.suffixes.iter().any(|(s, _)| s == suffix);
            self.suffixes.push((suffix.to_owned(), vhost));
            taken
        } else if pattern.is_empty() || pattern.contains('*') {
            return Err(format!("bad host pattern {pattern:?}"));
        } else {
            self.exact.insert(pattern.clone(), vhost).is_some()
        };
        if taken {
            return Err(format!("host {pattern:?} is served by two virtual hosts"));
        }
        self.suffixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(())
    }

    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(&v) = self.exact.get(host) {
            return Some(v);
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|&(_, v)| v)
            .or(self.any)
    }
}

#[derive(Debug)]
pub struct RouteTable {
    pub version: String,
    hosts: HostIndex,
    virtual_hosts: Vec<VirtualHost>,
    listener_defaults: Vec<Option<usize>>,
}

impl RouteTable {
    /// The virtual host for a request arriving on `listener` with this host name
    /// (lower case, no port); the listener's default when none matches.
    pub fn virtual_host(&self, listener: usize, host: &str) -> Option<&VirtualHost> {
        self.hosts
            .lookup(host)
            .or_else(|| self.listener_defaults.get(listener).copied().flatten())
            .map(|i| &self.virtual_hosts[i])
    }

    /// Compiles and checks a snapshot. Counter sets come from `registry`, so a
    /// reload keeps counting into the series of the same labels.
    pub fn compile(snap: &Snapshot, registry: &mut StatsRegistry) -> Result<Self, String> {
        if snap.schema != snapshot::SCHEMA {
            return Err(format!(
                "snapshot schema {} is not the {} this core understands",
                snap.schema,
                snapshot::SCHEMA
            ));
        }
        let clusters = snap
            .clusters
            .iter()
            .map(compile_cluster)
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = |i: u32| -> Result<Arc<Cluster>, String> {
            clusters
                .get(i as usize)
                .cloned()
                .ok_or_else(|| format!("cluster index {i} out of range"))
        };

        let mut hosts = HostIndex::default();
        let mut virtual_hosts = Vec::with_capacity(snap.virtual_hosts.len());
        for (vi, vh) in snap.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                hosts.insert(domain, vi)?;
            }
            let mut routes = Vec::with_capacity(vh.routes.len());
            for r in &vh.routes {
                let at = |e: String| format!("virtual host {:?}, route {:?}: {e}", vh.name, r.name);
                let matchers = r
                    .matches
                    .iter()
                    .map(RequestMatcher::compile)
                    .collect::<Result<_, _>>()
                    .map_err(at)?;
                let picker = WeightedPicker::new(r.destinations.iter().map(|d| d.weight))
                    .ok_or_else(|| at("no destination with a weight above 0".into()))?;
                let destinations = r
                    .destinations
                    .iter()
                    .map(|d| {
                        let cluster = cluster(d.cluster)?;
                        let stats = registry.destination(key(&vh.name, &r.name, &cluster));
                        Ok(Destination { cluster, stats })
                    })
                    .collect::<Result<_, String>>()
                    .map_err(at)?;
                let mirrors = r
                    .mirrors
                    .iter()
                    .map(|m| {
                        if m.per_million > MILLION {
                            return Err(format!(
                                "mirror rate {} is above {MILLION}",
                                m.per_million
                            ));
                        }
                        let cluster = cluster(m.cluster)?;
                        let stats = registry.mirror(key(&vh.name, &r.name, &cluster));
                        MirrorPolicy::new(cluster, Sampler::new(m.per_million), m, stats)
                    })
                    .collect::<Result<_, String>>()
                    .map_err(at)?;
                routes.push(Route {
                    name: r.name.clone(),
                    matchers,
                    picker,
                    destinations,
                    timeout: r.timeout_ms.map(Duration::from_millis),
                    mirrors,
                });
            }
            virtual_hosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
            });
        }
        let listener_defaults = snap
            .listeners
            .iter()
            .map(|l| match l.default_virtual_host {
                Some(i) if (i as usize) < virtual_hosts.len() => Ok(Some(i as usize)),
                Some(i) => Err(format!(
                    "listener {}: virtual host {i} out of range",
                    l.address
                )),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            version: snap.version.clone(),
            hosts,
            virtual_hosts,
            listener_defaults,
        })
    }
}

fn compile_cluster(c: &snapshot::Cluster) -> Result<Arc<Cluster>, String> {
    let endpoints = c
        .endpoints
        .iter()
        .map(|e| match e.parse::<Authority>() {
            Ok(a) if a.port_u16().is_some() && a.as_str().find('@').is_none() => Ok(a),
            _ => Err(format!(
                "cluster {:?}: endpoint {e:?} is not host:port",
                c.host
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(Cluster {
        host: c.host.clone(),
        subset: c.subset.clone(),
        endpoints,
        next: AtomicUsize::new(0),
    }))
}

fn key(virtual_service: &str, route: &str, cluster: &Cluster) -> StatsKey {
    StatsKey {
        virtual_service: virtual_service.to_owned(),
        route: route.to_owned(),
        host: cluster.host.clone(),
        subset: cluster.subset.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn seed(extra_vhosts: &str) -> Snapshot {
        Snapshot::from_json(&format!(
            r#"{{
          "schema": 1, "version": "t",
          "listeners": [{{"address": "127.0.0.1:0", "default_virtual_host": 0}}],
          "clusters": [
            {{"host": "reviews", "subset": "v1", "endpoints": ["127.0.0.1:9081", "127.0.0.1:9091"]}},
            {{"host": "reviews", "subset": "v2", "endpoints": ["127.0.0.1:9082"]}},
            {{"host": "ratings", "endpoints": []}}
          ],
          "virtual_hosts": [
            {{"name": "reviews", "domains": ["reviews"], "routes": [
              {{"name": "jason", "matches": [{{"headers": [{{"name": "end-user", "value": {{"exact": "jason"}}}}]}}],
                "destinations": [{{"cluster": 1, "weight": 100}}]}},
              {{"name": "default", "destinations": [{{"cluster": 0, "weight": 100}}],
                "mirrors": [{{"cluster": 1, "per_million": 200000}}]}}
            ]}}
            {extra_vhosts}
          ]
        }}"#
        ))
        .unwrap()
    }

    fn view(headers: &HeaderMap) -> RequestView<'_> {
        RequestView {
            method: "GET",
            path: "/",
            path_and_query: "/",
            headers,
        }
    }

    #[test]
    fn hosts_exact_then_longest_suffix_then_any() {
        let snap = seed(
            r#",{"name": "wild", "domains": ["*.example.com"], "routes": []},
               {"name": "deep", "domains": ["*.api.example.com"], "routes": []},
               {"name": "any", "domains": ["*"], "routes": []}"#,
        );
        let t = RouteTable::compile(&snap, &mut StatsRegistry::default()).unwrap();
        let name = |h: &str| t.virtual_host(0, h).unwrap().name.as_str();
        assert_eq!(name("reviews"), "reviews");
        assert_eq!(name("a.example.com"), "wild");
        assert_eq!(name("x.api.example.com"), "deep");
        assert_eq!(name("example.com"), "any");
        assert_eq!(name("other"), "any");
    }

    #[test]
    fn unknown_host_goes_to_the_listener_default_or_nowhere() {
        let mut snap = seed("");
        let t = RouteTable::compile(&snap, &mut StatsRegistry::default()).unwrap();
        assert_eq!(t.virtual_host(0, "nope").unwrap().name, "reviews");
        snap.listeners[0].default_virtual_host = None;
        let t = RouteTable::compile(&snap, &mut StatsRegistry::default()).unwrap();
        assert!(t.virtual_host(0, "nope").is_none());
    }

    #[test]
    fn first_matching_route_wins() {
        let t = RouteTable::compile(&seed(""), &mut StatsRegistry::default()).unwrap();
        let vh = t.virtual_host(0, "reviews").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(vh.route_for(&view(&h)).unwrap().name, "default");
        h.insert("end-user", "jason".parse().unwrap());
        assert_eq!(vh.route_for(&view(&h)).unwrap().name, "jason");
    }

    #[test]
    fn endpoints_round_robin_and_empty_cluster_has_none() {
        let snap = seed("");
        let clusters: Vec<_> = snap
            .clusters
            .iter()
            .map(|c| compile_cluster(c).unwrap())
            .collect();
        let picks: Vec<_> = (0..4)
            .map(|_| clusters[0].next_endpoint().unwrap().to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "127.0.0.1:9081",
                "127.0.0.1:9091",
                "127.0.0.1:9081",
                "127.0.0.1:9091"
            ]
        );
        assert!(clusters[2].next_endpoint().is_none());
    }

    #[test]
    fn invalid_snapshots_are_refused_with_a_reason() {
        type Mutation = dyn Fn(&mut Snapshot);
        let cases: [(&Mutation, &str); 6] = [
            (&|s| s.schema = 9, "schema"),
            (
                &|s| s.clusters[0].endpoints[0] = "no-port".into(),
                "not host:port",
            ),
            (
                &|s| s.virtual_hosts[0].routes[1].destinations[0].cluster = 7,
                "out of range",
            ),
            (
                &|s| s.virtual_hosts[0].routes[1].destinations[0].weight = 0,
                "weight",
            ),
            (
                &|s| s.virtual_hosts[0].domains.push("REVIEWS".into()),
                "two virtual hosts",
            ),
            (
                &|s| s.virtual_hosts[0].routes[1].mirrors[0].per_million = 1_000_001,
                "above",
            ),
        ];
        for (mutate, expected) in cases {
            let mut snap = seed("");
            mutate(&mut snap);
            let err = RouteTable::compile(&snap, &mut StatsRegistry::default()).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn unknown_snapshot_fields_are_refused() {
        let err = Snapshot::from_json(r#"{"schema":1,"version":"","listeners":[],"virtual_hosts":[],"clusters":[],"extra":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"));
    }
}
