//! The compiled route table: a Snapshot turned into what the hot path reads.
//!
//! Built once per snapshot, immutable afterwards, and published whole through
//! an `ArcSwap`; a request loads it once and keeps it for its lifetime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::http::fault::Fault;
use crate::http::header_ops::HeaderOps;
use crate::http::matcher::{RequestMatcher, RequestView, StringMatcher};
use crate::http::retry::RetryPolicy;
use crate::http::rewrite::{Redirect, Rewrite};
use crate::mirror::compare::{CompareKey, CompareSpec, MAX_NOISE_PARENT};
use crate::mirror::MirrorPolicy;
use crate::route::tcp::TcpRoutes;
use crate::sampling::{Sampler, WeightedPicker, MILLION};
use crate::snapshot::{self, Snapshot};
use crate::telemetry::{DestinationStats, StatsKey, StatsRegistry};
use crate::upstream::cluster::Cluster;
use crate::upstream::pool::EndpointIds;

/// A primary destination of one route, with the counters it answers into.
#[derive(Debug)]
pub struct Destination {
    pub cluster: Arc<Cluster>,
    pub stats: Arc<DestinationStats>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Upgraded sessions (WebSocket and other upgrades, CONNECT tunnels)
    /// spliced to this destination.
    pub upgrades: Arc<crate::telemetry::TcpStats>,
}

/// What a route does with a request it matched.
#[derive(Debug)]
pub enum Action {
    Forward {
        picker: WeightedPicker,
        destinations: Vec<Destination>,
    },
    Redirect(Redirect),
    Respond {
        status: StatusCode,
        body: Bytes,
    },
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    matchers: Vec<RequestMatcher>,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub retries: Option<RetryPolicy>,
    pub rewrite: Option<Rewrite>,
    pub fault: Option<Fault>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub mirrors: Vec<MirrorPolicy>,
}

/// A route that holds for a request, and the uri condition that made it hold
/// (rewrites replace what that condition matched).
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub route: &'a Route,
    pub uri: Option<&'a StringMatcher>,
}

impl Route {
    fn matched(&self, req: &RequestView<'_>) -> Option<Matched<'_>> {
        if self.matchers.is_empty() {
            // A route without conditions takes every request but a CONNECT.
            if req.method == crate::http::matcher::CONNECT {
                return None;
            }
            return Some(Matched {
                route: self,
                uri: None,
            });
        }
        self.matchers
            .iter()
            .find(|m| m.is_match(req))
            .map(|m| Matched {
                route: self,
                uri: m.uri(),
            })
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
}

impl VirtualHost {
    pub fn route_for(&self, req: &RequestView<'_>) -> Option<Matched<'_>> {
        self.routes.iter().find_map(|r| r.matched(req))
    }
}

/// Up to this many exact host names are compared one by one.
const FEW_NAMES: usize = 8;

/// Host name -> virtual host, in Envoy's order: exact, then the longest
/// `*.suffix`, then `*`.
#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<String, usize>,
    /// `exact` again, looked through while it is no longer than `FEW_NAMES`.
    few: Vec<(String, usize)>,
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
            self.few.push((pattern.clone(), vhost));
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
        // A few names are compared, not hashed: SipHash of the name cost
        // 110 instructions per request (callgrind).
        let exact = if self.exact.len() <= FEW_NAMES {
            self.few
                .iter()
                .find(|(name, _)| name == host)
                .map(|&(_, v)| v)
        } else {
            self.exact.get(host).copied()
        };
        if exact.is_some() {
            return exact;
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
    /// Each listener's host index: its own virtual hosts, or (shared) all.
    hosts: Vec<Arc<HostIndex>>,
    virtual_hosts: Vec<VirtualHost>,
    listener_defaults: Vec<Option<usize>>,
    /// Routes for connections on `tcp` listeners.
    pub tcp: TcpRoutes,
    /// Routes for connections on `tls` (passthrough) listeners, by SNI.
    pub tls: TcpRoutes,
    /// Every cluster, in snapshot order: their outlier state is reported.
    pub clusters: Vec<Arc<Cluster>>,
}

impl RouteTable {
    /// The virtual host for a request arriving on `listener` with this host name
    /// (lower case, no port); the listener's default when none matches.
    pub fn virtual_host(&self, listener: usize, host: &str) -> Option<&VirtualHost> {
        self.hosts
            .get(listener)
            .and_then(|hosts| hosts.lookup(host))
            .or_else(|| self.listener_defaults.get(listener).copied().flatten())
            .map(|i| &self.virtual_hosts[i])
    }

    /// Compiles and checks a snapshot. Counter sets come from `registry`, so a
    /// reload keeps counting into the series of the same labels.
    pub fn compile(
        snap: &Snapshot,
        registry: &mut StatsRegistry,
        ids: &EndpointIds,
    ) -> Result<Self, String> {
        if snap.schema != snapshot::SCHEMA {
            return Err(format!(
                "snapshot schema {} is not the {} this core understands",
                snap.schema,
                snapshot::SCHEMA
            ));
        }
        if snap.limits.max_request_headers == 0 {
            return Err("limits.max_request_headers must be at least 1".into());
        }
        let clusters = snap
            .clusters
            .iter()
            .map(|c| Cluster::compile(c, ids).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = |i: u32| -> Result<Arc<Cluster>, String> {
            clusters
                .get(i as usize)
                .cloned()
                .ok_or_else(|| format!("cluster index {i} out of range"))
        };

        let mut virtual_hosts = Vec::with_capacity(snap.virtual_hosts.len());
        for vh in &snap.virtual_hosts {
            let routes = vh
                .routes
                .iter()
                .map(|r| {
                    compile_route(r, &vh.name, &cluster, registry)
                        .map_err(|e| format!("virtual host {:?}, route {:?}: {e}", vh.name, r.name))
                })
                .collect::<Result<_, _>>()?;
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
        let hosts = listener_hosts(snap)?;
        let tcp = TcpRoutes::compile(&snap.tcp_routes, &cluster, registry)?;
        if snap.tls_routes.iter().any(|r| !r.mirrors.is_empty()) {
            return Err("a tls (passthrough) route cannot be mirrored".into());
        }
        let tls = TcpRoutes::compile(&snap.tls_routes, &cluster, registry)?;
        Ok(Self {
            clusters,
            version: snap.version.clone(),
            hosts,
            virtual_hosts,
            listener_defaults,
            tcp,
            tls,
        })
    }
}

/// Each listener's host index: the virtual hosts it lists, or all of them
/// (one index shared by every listener that lists none).
fn listener_hosts(snap: &Snapshot) -> Result<Vec<Arc<HostIndex>>, String> {
    let index = |chosen: &mut dyn Iterator<Item = usize>| -> Result<HostIndex, String> {
        let mut hosts = HostIndex::default();
        for vi in chosen {
            let vh = snap
                .virtual_hosts
                .get(vi)
                .ok_or_else(|| format!("virtual host {vi} out of range"))?;
            for domain in &vh.domains {
                hosts.insert(domain, vi)?;
            }
        }
        Ok(hosts)
    };
    // Built (and so checked) unless every listener lists its own.
    let needed =
        snap.listeners.is_empty() || snap.listeners.iter().any(|l| l.virtual_hosts.is_none());
    let shared = if needed {
        Some(Arc::new(index(&mut (0..snap.virtual_hosts.len()))?))
    } else {
        None
    };
    snap.listeners
        .iter()
        .map(|l| match (&l.virtual_hosts, &shared) {
            (Some(chosen), _) => index(&mut chosen.iter().map(|&i| i as usize))
                .map(Arc::new)
                .map_err(|e| format!("listener {}: {e}", l.address)),
            (None, Some(all)) => Ok(all.clone()),
            (None, None) => Err(format!("listener {}: no virtual hosts", l.address)),
        })
        .collect()
}

/// Where a route's compilation draws clusters and counter sets from.
struct Compiling<'a> {
    vhost: &'a str,
    cluster: &'a dyn Fn(u32) -> Result<Arc<Cluster>, String>,
    registry: &'a mut StatsRegistry,
}

fn compile_route(
    r: &snapshot::Route,
    vhost: &str,
    cluster: &dyn Fn(u32) -> Result<Arc<Cluster>, String>,
    registry: &mut StatsRegistry,
) -> Result<Route, String> {
    let mut cx = Compiling {
        vhost,
        cluster,
        registry,
    };
    let matchers = r
        .matches
        .iter()
        .map(RequestMatcher::compile)
        .collect::<Result<_, _>>()?;
    let action = compile_action(r, &mut cx)?;
    let mirrors = r
        .mirrors
        .iter()
        .enumerate()
        .map(|(index, m)| compile_mirror(r, index, m, &mut cx))
        .collect::<Result<_, String>>()?;
    Ok(Route {
        name: r.name.clone(),
        matchers,
        action,
        timeout: r.timeout_ms.map(Duration::from_millis),
        retries: r.retries.as_ref().map(RetryPolicy::compile).transpose()?,
        rewrite: r.rewrite.as_ref().map(Rewrite::compile).transpose()?,
        fault: r.fault.as_ref().map(Fault::compile).transpose()?,
        request_headers: HeaderOps::compile(&r.request_headers)?,
        response_headers: HeaderOps::compile(&r.response_headers)?,
        mirrors,
    })
}

/// What the route does: forward (weighted destinations), redirect, or answer.
fn compile_action(r: &snapshot::Route, cx: &mut Compiling<'_>) -> Result<Action, String> {
    match (&r.redirect, &r.direct_response, r.destinations.is_empty()) {
        (None, None, false) => {
            let picker = WeightedPicker::new(r.destinations.iter().map(|d| d.weight))
                .ok_or("no destination with a weight above 0")?;
            let destinations = r
                .destinations
                .iter()
                .map(|d| {
                    let cluster = (cx.cluster)(d.cluster)?;
                    Ok(Destination {
                        stats: cx.registry.destination(key(cx.vhost, &r.name, &cluster)),
                        upgrades: cx.registry.upgrade(key(cx.vhost, &r.name, &cluster)),
                        cluster,
                        request_headers: HeaderOps::compile(&d.request_headers)?,
                        response_headers: HeaderOps::compile(&d.response_headers)?,
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(Action::Forward {
                picker,
                destinations,
            })
        }
        (Some(redirect), None, true) => Ok(Action::Redirect(Redirect::compile(redirect)?)),
        (None, Some(direct), true) => Ok(Action::Respond {
            status: StatusCode::from_u16(direct.status).map_err(|_| {
                format!(
                    "direct response status {} is not an HTTP status",
                    direct.status
                )
            })?,
            body: Bytes::from(direct.body.clone()),
        }),
        _ => Err("a route needs exactly one of destinations, redirect, direct_response".into()),
    }
}

/// One of the route's mirrors, with its comparison settings.
fn compile_mirror(
    r: &snapshot::Route,
    index: usize,
    m: &snapshot::Mirror,
    cx: &mut Compiling<'_>,
) -> Result<MirrorPolicy, String> {
    if m.per_million > MILLION {
        return Err(format!("mirror rate {} is above {MILLION}", m.per_million));
    }
    let compare = match &m.compare {
        Some(c) if c.per_million > MILLION => {
            return Err(format!("compare rate {} is above {MILLION}", c.per_million))
        }
        Some(c)
            if c.noise_for
                .is_some_and(|parent| !noise_parent_ok(r, parent, index)) =>
        {
            return Err(format!(
                "mirror {index}'s compare.noise_for {:?} must name an earlier mirror \
                 (index at most {MAX_NOISE_PARENT}) that is compared and is no noise copy",
                c.noise_for
            ))
        }
        Some(c) => Some(CompareSpec::new(
            c,
            CompareKey {
                virtual_service: cx.vhost.to_owned(),
                route: r.name.clone(),
                mirror: u32::try_from(index).unwrap_or(u32::MAX),
            },
        )),
        None => None,
    };
    let cluster = (cx.cluster)(m.cluster)?;
    let stats = cx.registry.mirror(key(cx.vhost, &r.name, &cluster));
    let upgrade_stats = cx.registry.upgrade_mirror(key(cx.vhost, &r.name, &cluster));
    let mut policy = MirrorPolicy::new(cluster, Sampler::new(m.per_million), m, stats, compare)?;
    policy.upgrade_stats = upgrade_stats;
    Ok(policy)
}

/// A noise copy follows a mirror decided before it in the same request, which
/// is compared and is not itself a noise copy.
fn noise_parent_ok(r: &snapshot::Route, parent: u32, index: usize) -> bool {
    parent <= MAX_NOISE_PARENT
        && (parent as usize) < index
        && r.mirrors[parent as usize]
            .compare
            .as_ref()
            .is_some_and(|c| c.noise_for.is_none())
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
            authority: "reviews",
            fields: crate::http::request_head::Fields::Map(headers),
            port: 80,
        }
    }

    #[test]
    fn hosts_exact_then_longest_suffix_then_any() {
        let snap = seed(
            r#",{"name": "wild", "domains": ["*.example.com"], "routes": []},
               {"name": "deep", "domains": ["*.api.example.com"], "routes": []},
               {"name": "any", "domains": ["*"], "routes": []}"#,
        );
        let t = RouteTable::compile(
            &snap,
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .unwrap();
        let name = |h: &str| t.virtual_host(0, h).unwrap().name.as_str();
        assert_eq!(name("reviews"), "reviews");
        assert_eq!(name("a.example.com"), "wild");
        assert_eq!(name("x.api.example.com"), "deep");
        assert_eq!(name("example.com"), "any");
        assert_eq!(name("other"), "any");
    }

    #[test]
    fn exact_names_are_found_compared_or_hashed_alike() {
        for count in [1, FEW_NAMES, FEW_NAMES + 1, 3 * FEW_NAMES] {
            let mut index = HostIndex::default();
            for i in 0..count {
                index.insert(&format!("Host-{i}"), i).unwrap();
            }
            index.insert("*", usize::MAX).unwrap();
            for i in 0..count {
                assert_eq!(index.lookup(&format!("host-{i}")), Some(i), "{count} names");
            }
            assert_eq!(index.lookup("host-x"), Some(usize::MAX), "{count} names");
            assert!(index.insert("host-0", 7).is_err());
        }
    }

    #[test]
    fn a_listener_that_lists_its_virtual_hosts_serves_only_those() {
        // Two virtual services for one host, each bound to its own listener (an
        // Istio Gateway's, and the mesh's): no conflict, each its own.
        let mut snap = seed(r#",{"name": "gateway", "domains": ["reviews"], "routes": []}"#);
        let mut gateway = snap.listeners[0].clone();
        gateway.default_virtual_host = None;
        gateway.virtual_hosts = Some(vec![1]);
        snap.listeners[0].virtual_hosts = Some(vec![0]);
        snap.listeners.push(gateway);
        let compile = |snap: &Snapshot| {
            RouteTable::compile(snap, &mut StatsRegistry::default(), &EndpointIds::default())
        };
        let t = compile(&snap).unwrap();
        assert_eq!(t.virtual_host(0, "reviews").unwrap().name, "reviews");
        assert_eq!(t.virtual_host(1, "reviews").unwrap().name, "gateway");
        assert!(t.virtual_host(1, "other").is_none());
        // A listener that lists none serves all: the same host twice is refused.
        snap.listeners[1].virtual_hosts = None;
        assert!(compile(&snap).unwrap_err().contains("two virtual hosts"));
        snap.listeners[1].virtual_hosts = Some(vec![7]);
        assert!(compile(&snap).unwrap_err().contains("out of range"));
    }

    #[test]
    fn unknown_host_goes_to_the_listener_default_or_nowhere() {
        let mut snap = seed("");
        let t = RouteTable::compile(
            &snap,
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .unwrap();
        assert_eq!(t.virtual_host(0, "nope").unwrap().name, "reviews");
        snap.listeners[0].default_virtual_host = None;
        let t = RouteTable::compile(
            &snap,
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .unwrap();
        assert!(t.virtual_host(0, "nope").is_none());
    }

    #[test]
    fn first_matching_route_wins() {
        let t = RouteTable::compile(
            &seed(""),
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .unwrap();
        let vh = t.virtual_host(0, "reviews").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(vh.route_for(&view(&h)).unwrap().route.name, "default");
        h.insert("end-user", "jason".parse().unwrap());
        assert_eq!(vh.route_for(&view(&h)).unwrap().route.name, "jason");
    }

    #[test]
    fn a_route_without_conditions_takes_no_connect() {
        let t = RouteTable::compile(
            &seed(""),
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .unwrap();
        let vh = t.virtual_host(0, "reviews").unwrap();
        let h = HeaderMap::new();
        let connect = RequestView {
            method: "CONNECT",
            ..view(&h)
        };
        assert!(vh.route_for(&connect).is_none());
    }

    #[test]
    fn invalid_snapshots_are_refused_with_a_reason() {
        type Mutation = dyn Fn(&mut Snapshot);
        let cases: [(&Mutation, &str); 8] = [
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
            (
                &|s| s.virtual_hosts[0].routes[1].destinations.clear(),
                "exactly one of",
            ),
            (
                &|s| {
                    s.virtual_hosts[0].routes[1].direct_response = Some(snapshot::DirectResponse {
                        status: 200,
                        body: vec![],
                    })
                },
                "exactly one of",
            ),
        ];
        for (mutate, expected) in cases {
            let mut snap = seed("");
            mutate(&mut snap);
            let err = RouteTable::compile(
                &snap,
                &mut StatsRegistry::default(),
                &EndpointIds::default(),
            )
            .unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn a_noise_copy_must_follow_an_earlier_compared_mirror() {
        let compare = |noise_for| snapshot::Compare {
            per_million: MILLION,
            max_body_bytes: 0,
            ignore_headers: vec![],
            ignore_paths: vec![],
            redact_headers: vec![],
            redact_paths: vec![],
            noise_for,
        };
        let compile = |mirrors: &[(Option<snapshot::Compare>,)]| {
            let mut snap = seed("");
            let template = snap.virtual_hosts[0].routes[1].mirrors[0].clone();
            snap.virtual_hosts[0].routes[1].mirrors = mirrors
                .iter()
                .map(|(c,)| snapshot::Mirror {
                    compare: c.clone(),
                    ..template.clone()
                })
                .collect();
            RouteTable::compile(
                &snap,
                &mut StatsRegistry::default(),
                &EndpointIds::default(),
            )
            .map(|_| ())
        };
        assert!(compile(&[(Some(compare(None)),), (Some(compare(Some(0))),)]).is_ok());
        for bad in [
            // Its mirror is not compared.
            vec![(None,), (Some(compare(Some(0))),)],
            // Not an earlier mirror.
            vec![(Some(compare(Some(1))),), (Some(compare(None)),)],
            vec![(Some(compare(Some(0))),)],
            // A noise copy of a noise copy.
            vec![
                (Some(compare(None)),),
                (Some(compare(Some(0))),),
                (Some(compare(Some(1))),),
            ],
        ] {
            let err = compile(&bad).unwrap_err();
            assert!(err.contains("noise_for"), "{err}");
        }
    }

    #[test]
    fn unknown_snapshot_fields_are_refused() {
        let err = Snapshot::from_json(r#"{"schema":1,"version":"","listeners":[],"virtual_hosts":[],"clusters":[],"extra":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"));
    }
}
