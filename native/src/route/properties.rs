//! Property tests of the route table, the matchers and sampling (issue 6).
//!
//! Every case runs from a fixed seed (proptest's and fastrand's), so a run is
//! reproducible: a failure prints the case, and the same case fails again.
//! Statistical checks use bounds of 5 sigma of the binomial; with fixed seeds
//! they cannot flake, and a correct sampler would fail one with probability
//! below one in a million anyway.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::http::matcher::RequestView;
use crate::http::request_head::Fields;
use crate::route::RouteTable;
use crate::sampling::{Sampler, WeightedPicker, MILLION};
use crate::snapshot::{self, HeaderMatch, RequestMatch, Snapshot, StringMatch, WeightedCluster};
use crate::telemetry::StatsRegistry;
use crate::upstream::pool::EndpointIds;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_6006),
        // The seed reproduces a failure; no regression files in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// |hits - n p| <= 5 sigma (sigma at least 1, so tiny rates get a count of slack).
fn within_binomial(hits: u64, n: u64, p: f64) -> Result<(), TestCaseError> {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
    prop_assert!(
        (hits as f64 - mean).abs() <= 5.0 * sigma,
        "{} hits of {} at p={}: mean {}, sigma {}",
        hits,
        n,
        p,
        mean,
        sigma
    );
    Ok(())
}

// ---------------------------------------------------------------- sampling

fn rate() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(MILLION - 1),
        Just(MILLION),
        0..=MILLION,
        // Above a million is clamped to always.
        MILLION..=u32::MAX,
    ]
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn sampling_converges_to_its_rate(per_million in rate(), seed in any::<u64>()) {
        fastrand::seed(seed);
        let sampler = Sampler::new(per_million);
        let expected = per_million.min(MILLION);
        prop_assert_eq!(sampler.per_million(), expected);
        let n = 20_000u64;
        let hits = (0..n).filter(|_| sampler.sample()).count() as u64;
        match expected {
            0 => prop_assert_eq!(hits, 0),
            MILLION => prop_assert_eq!(hits, n),
            _ => within_binomial(hits, n, f64::from(expected) / f64::from(MILLION))?,
        }
    }

    #[test]
    fn weighted_picks_skip_zero_and_follow_relative_weights(
        weights in prop::collection::vec(
            prop_oneof![3 => Just(0u32), 6 => 1..1_000u32, 1 => Just(u32::MAX)],
            0..8,
        ),
        seed in any::<u64>(),
    ) {
        fastrand::seed(seed);
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let Some(picker) = WeightedPicker::new(weights.iter().copied()) else {
            prop_assert_eq!(total, 0, "a picker exists whenever a weight is above 0");
            return Ok(());
        };
        prop_assert!(total > 0, "no picker may exist when every weight is 0");
        let n = 20_000u64;
        let mut counts = vec![0u64; weights.len()];
        for _ in 0..n {
            let i = picker.pick();
            prop_assert!(i < weights.len(), "index {} of {} weights", i, weights.len());
            prop_assert!(weights[i] > 0, "picked weight-0 entry {} of {:?}", i, weights);
            counts[i] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            within_binomial(counts[i], n, w as f64 / total as f64)?;
        }
    }
}

// ------------------------------------------------- route table and matchers

/// A small vocabulary, so that random routes and random requests meet often.
const PATHS: &[&str] = &["/", "/a", "/a", "/a/b", "/ab", "/B", "/b/12", "/A/x", "/x"];
/// What uri conditions name: paths, and prefixes that reach into the query.
const URIS: &[&str] = &[
    "/", "/a", "/a/b", "/ab", "/B", "/b/12", "/A/x", "/a?q", "/?q=1",
];
const QUERIES: &[&str] = &["", "?q=1", "?q=2&r", "?r=1&q=1", "?q", "?q=1&q=2"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "get", "DELETE"];
const AUTHORITIES: &[&str] = &["reviews", "reviews:8080", "a.example.com", "x:1"];
const HEADER_NAMES: &[&str] = &["end-user", "x-tag"];
/// Header values as bytes: the last is obs-text (not visible ASCII).
const HEADER_VALUES: &[&[u8]] = &[b"jason", b"a", b"b", b"", b"a,b", b"caf\xe9"];
const TEXTS: &[&str] = &[
    "", "/", "/a", "/A", "jason", "a", "a,b", "1", "GET", "reviews",
];
const QUERY_NAMES: &[&str] = &["q", "r", "s"];

/// Regexes the matcher compiles (RE2 syntax), each with an independent predicate of
/// what it matches as a whole (the table anchors regexes), exact for ASCII text.
type Predicate = fn(&str) -> bool;
const REGEXES: &[(&str, Predicate)] = &[
    ("/a.*", |s| s.starts_with("/a")),
    ("/[ab]+", |s| {
        s.len() > 1 && s.starts_with('/') && s[1..].bytes().all(|b| b == b'a' || b == b'b')
    }),
    (".*[0-9]", |s| {
        s.bytes().last().is_some_and(|b| b.is_ascii_digit())
    }),
    ("[^/]*", |s| !s.contains('/')),
    ("jason|a", |s| s == "jason" || s == "a"),
];

/// Host patterns; `Reviews` and `reviews` are one pattern (hosts are case-blind).
const PATTERNS: &[&str] = &[
    "reviews",
    "Reviews",
    "a.example.com",
    "example.com",
    "*.example.com",
    "*.a.example.com",
    "*.com",
    "*",
];
const HOSTS: &[&str] = &[
    "reviews",
    "a.example.com",
    "b.a.example.com",
    "example.com",
    "x.api.example.com",
    "com",
    ".com",
    "other",
];

#[derive(Debug, Clone)]
enum Text {
    Exact(String),
    Prefix(String),
    Regex(usize),
}

impl Text {
    fn spec(&self) -> StringMatch {
        match self {
            Self::Exact(s) => StringMatch::Exact(s.clone()),
            Self::Prefix(s) => StringMatch::Prefix(s.clone()),
            Self::Regex(i) => StringMatch::Regex(REGEXES[*i].0.to_owned()),
        }
    }

    /// The reference: plain string comparisons, case folded on request.
    fn holds(&self, value: &str, fold: bool) -> bool {
        let f = |s: &str| if fold { s.to_lowercase() } else { s.to_owned() };
        match self {
            Self::Exact(s) => f(value) == f(s),
            Self::Prefix(s) => f(value).starts_with(&f(s)),
            // The predicates are exact for ASCII text as written; `(?i)` matches
            // what its lower-cased form matches.
            Self::Regex(i) => (REGEXES[*i].1)(&f(value)),
        }
    }
}

fn text(values: &'static [&'static str]) -> impl Strategy<Value = Text> {
    prop_oneof![
        prop::sample::select(values).prop_map(|s| Text::Exact(s.to_owned())),
        prop::sample::select(values).prop_map(|s| Text::Prefix(s.to_owned())),
        (0..REGEXES.len()).prop_map(Text::Regex),
    ]
}

#[derive(Debug, Clone)]
struct Cond {
    uri: Option<Text>,
    ignore_uri_case: bool,
    scheme: Option<Text>,
    method: Option<Text>,
    authority: Option<Text>,
    headers: Vec<(&'static str, Option<Text>)>,
    without_headers: Vec<(&'static str, Option<Text>)>,
    query: Vec<(&'static str, Option<Text>)>,
    port: Option<u16>,
}

fn named(names: &'static [&'static str]) -> impl Strategy<Value = (&'static str, Option<Text>)> {
    (prop::sample::select(names), prop::option::of(text(TEXTS)))
}

/// Mostly none, else one or two.
fn sparse<S: Strategy>(item: S) -> impl Strategy<Value = Vec<S::Value>> {
    prop::option::weighted(0.35, prop::collection::vec(item, 1..=2))
        .prop_map(Option::unwrap_or_default)
}

fn cond() -> impl Strategy<Value = Cond> {
    (
        // Each condition is written now and then, so that routes often hold.
        prop::option::weighted(0.6, text(URIS)),
        any::<bool>(),
        prop::option::weighted(0.1, text(&["http", "https"])),
        prop::option::weighted(0.2, text(METHODS)),
        prop::option::weighted(0.15, text(AUTHORITIES)),
        sparse(named(HEADER_NAMES)),
        sparse(named(HEADER_NAMES)),
        sparse(named(QUERY_NAMES)),
        prop::option::weighted(0.15, prop::sample::select(&[80u16, 8080][..])),
    )
        .prop_map(
            |(uri, ignore_uri_case, scheme, method, authority, headers, without, query, port)| {
                Cond {
                    uri,
                    ignore_uri_case,
                    scheme,
                    method,
                    authority,
                    headers,
                    without_headers: without,
                    query,
                    port,
                }
            },
        )
}

impl Cond {
    fn spec(&self) -> RequestMatch {
        let named = |list: &[(&str, Option<Text>)]| {
            list.iter()
                .map(|(name, t)| HeaderMatch {
                    name: (*name).to_owned(),
                    value: t.as_ref().map(Text::spec),
                })
                .collect()
        };
        RequestMatch {
            uri: self.uri.as_ref().map(Text::spec),
            scheme: self.scheme.as_ref().map(Text::spec),
            method: self.method.as_ref().map(Text::spec),
            authority: self.authority.as_ref().map(Text::spec),
            headers: named(&self.headers),
            without_headers: named(&self.without_headers),
            query_params: named(&self.query),
            port: self.port,
            ignore_uri_case: self.ignore_uri_case,
        }
    }

    /// The reference evaluation: every condition written out plainly.
    fn holds(&self, req: &Req) -> bool {
        let path_and_query = format!("{}{}", req.path, req.query);
        if let Some(uri) = &self.uri {
            let subject = match uri {
                Text::Prefix(_) => path_and_query.as_str(),
                _ => req.path,
            };
            if !uri.holds(subject, self.ignore_uri_case) {
                return false;
            }
        }
        let opt = |t: &Option<Text>, v: &str| t.as_ref().is_none_or(|t| t.holds(v, false));
        if !opt(&self.scheme, "http")
            || !opt(&self.method, req.method)
            || !opt(&self.authority, req.authority)
            || self.port.is_some_and(|p| p != req.port)
        {
            return false;
        }
        let header = |name: &str, t: &Option<Text>| -> bool {
            let values: Vec<&[u8]> = req
                .headers
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect();
            if values.is_empty() {
                return false;
            }
            let Some(t) = t else { return true };
            let visible = |v: &[u8]| v.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
            if !visible(values[0]) {
                return false;
            }
            // Several values are joined with ","; an obs-text one after the first
            // contributes nothing.
            let joined = values
                .iter()
                .map(|v| {
                    if visible(v) {
                        String::from_utf8(v.to_vec()).unwrap()
                    } else {
                        String::new()
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            t.holds(&joined, false)
        };
        let query = req.query.strip_prefix('?').unwrap_or("");
        let param = |name: &str| -> Option<&str> {
            query.split('&').find_map(|pair| {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                (n == name).then_some(v)
            })
        };
        self.headers.iter().all(|(n, t)| header(n, t))
            && !self.without_headers.iter().any(|(n, t)| header(n, t))
            && self.query.iter().all(|(n, t)| {
                param(n).is_some_and(|v| t.as_ref().is_none_or(|t| t.holds(v, false)))
            })
    }
}

#[derive(Debug, Clone)]
struct Req {
    host: String,
    listener: usize,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    authority: &'static str,
    headers: Vec<(&'static str, &'static [u8])>,
    port: u16,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop_oneof![
            4 => prop::sample::select(HOSTS).prop_map(str::to_owned),
            // Odd hosts: never panic, fall through to `*` or the listener default.
            1 => any::<String>().prop_map(|s| s.to_lowercase()),
        ],
        0usize..3,
        prop::sample::select(METHODS),
        prop::sample::select(PATHS),
        prop::sample::select(QUERIES),
        prop::sample::select(AUTHORITIES),
        prop::collection::vec(
            (
                prop::sample::select(HEADER_NAMES),
                prop::sample::select(HEADER_VALUES),
            ),
            0..5,
        ),
        prop::sample::select(&[80u16, 8080][..]),
    )
        .prop_map(
            |(host, listener, method, path, query, authority, headers, port)| Req {
                host,
                listener,
                method,
                path,
                query,
                authority,
                headers,
                port,
            },
        )
}

/// A virtual host: its domain patterns and its routes (each a list of conditions, OR).
type VHost = (Vec<&'static str>, Vec<Vec<Cond>>);

fn vhosts() -> impl Strategy<Value = Vec<VHost>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::sample::select(PATTERNS), 0..3),
            prop::collection::vec(prop::collection::vec(cond(), 0..3), 0..5),
        ),
        1..4,
    )
}

fn build(vhosts: &[VHost], default: Option<u32>) -> Snapshot {
    Snapshot {
        schema: snapshot::SCHEMA,
        version: "prop".into(),
        listeners: vec![snapshot::Listener {
            address: "127.0.0.1:0".into(),
            default_virtual_host: default,
            protocol: Default::default(),
            tls: None,
            virtual_hosts: None,
        }],
        clusters: vec![snapshot::Cluster {
            host: "reviews".into(),
            subset: None,
            endpoints: vec!["127.0.0.1:9".into()],
            weights: vec![],
            load_balancer: Default::default(),
            max_requests: None,
            outlier_detection: None,
            protocol: Default::default(),
            max_requests_per_connection: None,
            max_concurrent_streams: None,
            tls: None,
        }],
        upstream: Default::default(),
        limits: Default::default(),
        tcp_routes: vec![],
        tls_routes: vec![],
        virtual_hosts: vhosts
            .iter()
            .enumerate()
            .map(|(vi, (domains, routes))| snapshot::VirtualHost {
                name: format!("vh{vi}"),
                domains: domains.iter().map(|d| (*d).to_owned()).collect(),
                routes: routes
                    .iter()
                    .enumerate()
                    .map(|(ri, conds)| snapshot::Route {
                        name: format!("vh{vi}/r{ri}"),
                        matches: conds.iter().map(Cond::spec).collect(),
                        destinations: vec![WeightedCluster {
                            cluster: 0,
                            weight: 1,
                            request_headers: Default::default(),
                            response_headers: Default::default(),
                        }],
                        redirect: None,
                        direct_response: None,
                        timeout_ms: None,
                        retries: None,
                        rewrite: None,
                        fault: None,
                        request_headers: Default::default(),
                        response_headers: Default::default(),
                        mirrors: vec![],
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The reference host lookup: `None` when two virtual hosts claim one pattern
/// (compile must refuse), else the virtual host index per request host.
fn reference_hosts(vhosts: &[VHost]) -> Option<HashMap<String, usize>> {
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (vi, (domains, _)) in vhosts.iter().enumerate() {
        for d in domains {
            if owner.insert(d.to_lowercase(), vi).is_some() {
                return None;
            }
        }
    }
    Some(owner)
}

fn reference_vhost(
    owner: &HashMap<String, usize>,
    host: &str,
    listener: usize,
    default: Option<u32>,
) -> Option<usize> {
    // The snapshot has one listener: another index is served nothing.
    if listener != 0 {
        return None;
    }
    // Patterns are keys too: a request host spelt `*.example.com` is no exact name.
    if let Some(&v) = owner.get(host).filter(|_| !host.starts_with('*')) {
        return Some(v);
    }
    let best_suffix = owner
        .iter()
        .filter_map(|(k, &v)| {
            let suffix = k.strip_prefix('*')?;
            (!suffix.is_empty() && host.len() > suffix.len() && host.ends_with(suffix))
                .then_some((suffix.len(), v))
        })
        .max_by_key(|&(len, _)| len)
        .map(|(_, v)| v);
    best_suffix
        .or_else(|| owner.get("*").copied())
        .or_else(|| default.map(|d| d as usize))
}

fn header_map(req: &Req) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &req.headers {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    map
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn lookup_agrees_with_a_naive_reference(
        vhosts in vhosts(),
        default in prop::option::weighted(0.9, 0u32..3),
        requests in prop::collection::vec(request(), 1..32),
    ) {
        let default = default.filter(|&d| (d as usize) < vhosts.len());
        let snap = build(&vhosts, default);
        let compiled =
            RouteTable::compile(&snap, &mut StatsRegistry::default(), &EndpointIds::default());
        let Some(owner) = reference_hosts(&vhosts) else {
            let err = compiled.expect_err("two virtual hosts share a pattern");
            prop_assert!(err.contains("two virtual hosts"), "{}", err);
            return Ok(());
        };
        let table = compiled.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
        for req in &requests {
            let headers = header_map(req);
            let path_and_query = format!("{}{}", req.path, req.query);
            let view = RequestView {
                method: req.method,
                path: req.path,
                path_and_query: &path_and_query,
                authority: req.authority,
                fields: Fields::Map(&headers),
                port: req.port,
            };
            let got = table.virtual_host(req.listener, &req.host);
            let want = reference_vhost(&owner, &req.host, req.listener, default);
            prop_assert_eq!(
                got.map(|v| v.name.clone()),
                want.map(|v| format!("vh{v}")),
                "virtual host for {:?}",
                req
            );
            let (Some(vh), Some(vi)) = (got, want) else { continue };
            let route = vh.route_for(&view).map(|m| m.route.name.clone());
            let expected = vhosts[vi]
                .1
                .iter()
                .position(|conds| conds.is_empty() || conds.iter().any(|c| c.holds(req)))
                .map(|ri| format!("vh{vi}/r{ri}"));
            prop_assert_eq!(route, expected, "route for {:?}", req);
        }
    }

    #[test]
    fn lookup_never_panics_on_any_host(host in any::<String>(), listener in any::<usize>()) {
        let vhosts: Vec<VHost> = vec![
            (vec!["reviews", "*.example.com"], vec![vec![]]),
            (vec!["*.a.example.com"], vec![vec![]]),
        ];
        let table = RouteTable::compile(
            &build(&vhosts, Some(0)),
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .unwrap();
        let lower = host.to_lowercase();
        for h in [host.as_str(), lower.as_str()] {
            let found = table.virtual_host(listener, h).map(|v| v.name.as_str());
            if listener != 0 && !h.ends_with(".example.com") && h != "reviews" {
                prop_assert_eq!(found, None);
            }
        }
    }
}
