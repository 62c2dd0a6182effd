//! Tcp routes, compiled: a connection accepted on a tcp listener is matched
//! once (listener port, destination subnets) and sent to one weighted
//! destination; sampled mirrors get its bytes. Tls routes (passthrough) are
//! the same, matched by the ClientHello's SNI too, and never mirrored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::sampling::{Sampler, WeightedPicker};
use crate::snapshot;
use crate::telemetry::{StatsKey, StatsRegistry, TcpMirrorStats, TcpStats};
use crate::upstream::cluster::Cluster;

// === compiled routes ===

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1/128`, or a bare address (a host route).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net, ip, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(i)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), self.prefix),
            _ => return false,
        };
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(bits))
        };
        net & mask == ip & mask
    }
}

#[derive(Debug)]
struct TcpMatcher {
    port: Option<u16>,
    subnets: Vec<Cidr>,
    /// Lower case; `*.suffix` for one or more labels, `*` for any name.
    sni: Vec<String>,
}

impl TcpMatcher {
    fn is_match(&self, local: SocketAddr, sni: Option<&str>) -> bool {
        self.port.is_none_or(|p| p == local.port())
            && (self.subnets.is_empty() || self.subnets.iter().any(|c| c.contains(local.ip())))
            && (self.sni.is_empty() || sni.is_some_and(|name| self.sni_matches(name)))
    }

    fn sni_matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.sni
            .iter()
            .any(|pattern| match pattern.strip_prefix('*') {
                Some("") => true,
                Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
                None => *pattern == name,
            })
    }
}

#[derive(Debug)]
pub struct TcpDestination {
    pub cluster: Arc<Cluster>,
    pub stats: Arc<TcpStats>,
}

#[derive(Debug)]
pub struct TcpMirror {
    pub cluster: Arc<Cluster>,
    pub sampler: Sampler,
    pub buffer_bytes: usize,
    pub timeout: Duration,
    pub stats: Arc<TcpMirrorStats>,
}

#[derive(Debug)]
pub struct TcpRoute {
    matchers: Vec<TcpMatcher>,
    picker: WeightedPicker,
    pub destinations: Vec<TcpDestination>,
    pub mirrors: Vec<TcpMirror>,
}

impl TcpRoute {
    /// The destination of one connection, by weight.
    pub fn pick(&self) -> &TcpDestination {
        &self.destinations[self.picker.pick()]
    }
}

/// Every tcp route of a snapshot, in order.
#[derive(Debug, Default)]
pub struct TcpRoutes {
    pub(crate) routes: Vec<TcpRoute>,
}

impl TcpRoutes {
    pub fn compile(
        routes: &[snapshot::TcpRoute],
        cluster: &dyn Fn(u32) -> Result<Arc<Cluster>, String>,
        registry: &mut StatsRegistry,
    ) -> Result<Self, String> {
        let routes = routes
            .iter()
            .map(|r| {
                compile_route(r, cluster, registry).map_err(|e| {
                    format!(
                        "virtual service {:?}, tcp route {:?}: {e}",
                        r.virtual_service, r.name
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    /// The first route whose match holds for a connection to `local` (whose
    /// ClientHello named `sni`, on a passthrough listener).
    pub fn route_for(&self, local: SocketAddr, sni: Option<&str>) -> Option<&TcpRoute> {
        self.routes
            .iter()
            .find(|r| r.matchers.is_empty() || r.matchers.iter().any(|m| m.is_match(local, sni)))
    }
}

fn compile_route(
    r: &snapshot::TcpRoute,
    cluster: &dyn Fn(u32) -> Result<Arc<Cluster>, String>,
    registry: &mut StatsRegistry,
) -> Result<TcpRoute, String> {
    let key = |c: &Cluster| StatsKey {
        virtual_service: r.virtual_service.clone(),
        route: r.name.clone(),
        host: c.host.clone(),
        subset: c.subset.clone(),
    };
    let matchers = r
        .matches
        .iter()
        .map(|m| {
            Ok(TcpMatcher {
                port: m.port,
                subnets: m
                    .destination_subnets
                    .iter()
                    .map(|s| Cidr::parse(s))
                    .collect::<Result<_, String>>()?,
                sni: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            })
        })
        .collect::<Result<_, String>>()?;
    let picker = WeightedPicker::new(r.destinations.iter().map(|d| d.weight))
        .ok_or("no destination with a weight above 0")?;
    let destinations = r
        .destinations
        .iter()
        .map(|d| {
            let cluster = cluster(d.cluster)?;
            Ok(TcpDestination {
                stats: registry.tcp(key(&cluster)),
                cluster,
            })
        })
        .collect::<Result<_, String>>()?;
    let mirrors = r
        .mirrors
        .iter()
        .map(|m| {
            let cluster = cluster(m.cluster)?;
            if m.buffer_bytes == 0 {
                return Err("a mirror's buffer_bytes must be at least 1".to_owned());
            }
            Ok(TcpMirror {
                stats: registry.tcp_mirror(key(&cluster)),
                cluster,
                sampler: Sampler::new(m.per_million),
                buffer_bytes: usize::try_from(m.buffer_bytes).unwrap_or(usize::MAX),
                timeout: Duration::from_millis(m.timeout_ms),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(TcpRoute {
        matchers,
        picker,
        destinations,
        mirrors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_by_prefix() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
    }

    #[test]
    fn routes_match_on_port_and_subnet() {
        let m = TcpMatcher {
            port: Some(6379),
            subnets: vec![Cidr::parse("127.0.0.0/8").unwrap()],
            sni: vec![],
        };
        assert!(m.is_match("127.0.0.1:6379".parse().unwrap(), None));
        assert!(!m.is_match("127.0.0.1:6380".parse().unwrap(), None));
        assert!(!m.is_match("10.0.0.1:6379".parse().unwrap(), None));
    }

    #[test]
    fn passthrough_routes_match_the_sni_exactly_or_by_wildcard() {
        let m = TcpMatcher {
            port: None,
            subnets: vec![],
            sni: vec!["api.example.com".into(), "*.shop.example.com".into()],
        };
        let local = "127.0.0.1:443".parse().unwrap();
        assert!(m.is_match(local, Some("API.example.com")));
        assert!(m.is_match(local, Some("a.b.shop.example.com")));
        assert!(!m.is_match(local, Some("shop.example.com")));
        assert!(!m.is_match(local, Some("example.com")));
        // A route that names servers takes no client that names none.
        assert!(!m.is_match(local, None));
        let any = TcpMatcher {
            sni: vec!["*".into()],
            ..m
        };
        assert!(any.is_match(local, Some("anything")) && !any.is_match(local, None));
    }
}
