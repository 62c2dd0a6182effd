"""Destinations -> the Snapshot's clusters: endpoint addresses and weights, load balancer,
request limit, outlier detection, TLS and (for http routes) the upstream protocol and its
limits, each distinct cluster numbered once."""

from __future__ import annotations

import json
from pathlib import Path

from .. import defaults
from .. import snapshot as snap
from ..config.model import Config, Destination, Service
from ..config.tls import ClientTls
from ..config.traffic import LoadBalancer, OutlierDetection
from ..config.types import duration_ms
from ..config.upstreams import DNS_PORT, UpstreamChoice, choose_upstream, destination_port

#: Istio's simple load balancers -> the core's `Cluster.load_balancer`. LEAST_CONN is
#: Istio's deprecated name for LEAST_REQUEST; PASSTHROUGH is not served (reported).
SIMPLE_LB = {
    "UNSPECIFIED": None,
    "ROUND_ROBIN": "round_robin",
    "LEAST_REQUEST": "least_request",
    "LEAST_CONN": "least_request",
    "RANDOM": "random",
    "PASSTHROUGH": None,
}


class Clusters:
    """The clusters of one Snapshot, numbered as first named."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clusters: list[snap.Cluster] = []
        self.ids: dict[str, int] = {}
        #: How each cluster's requests go upstream and why, for the clusters http routes
        #: name (None for those only tcp routes name: their bytes are spliced).
        self.upstreams: list[UpstreamChoice | None] = []

    def id(self, dest: Destination, *, http: bool = True) -> int:
        """The index of ``dest``'s cluster, added when it is the first to name it. An
        ``http`` destination's cluster carries its upstream protocol and HTTP limits."""
        service = self.config.services.get(dest.host)
        subset = dest.subset
        weights: list[int] = []
        if service is not None and (service.endpoints or service.ports):
            endpoints, weights = _endpoints(service, dest)
        elif subset is not None:
            # Only `check` gets here: no endpoint carries this subset's labels yet.
            endpoints = []
        else:
            # No declared endpoints: like a ServiceEntry with DNS resolution.
            port = dest.port.number if dest.port is not None else DNS_PORT
            endpoints = [f"{_bracket(dest.host)}:{port}"]
        port_number = destination_port(service, dest)
        policy = service.policy(subset, port_number) if service is not None else None
        cluster: snap.Cluster = {
            "host": dest.host,
            "subset": subset,
            "endpoints": endpoints,
            "weights": weights,
            "load_balancer": (load_balancer(policy.load_balancer) if policy else None)
            or "round_robin",
            "max_requests": policy.max_requests if policy else None,
        }
        if policy and policy.outlier_detection:
            cluster["outlier_detection"] = outlier_detection(policy.outlier_detection)
        if policy and policy.tls and policy.tls.originates:
            cluster["tls"] = upstream_tls(policy.tls)
        choice = choose_upstream(self.config, dest) if http else None
        if choice is not None:
            # Written only when not the core's default, so that a config without them keeps
            # its snapshot (and version), and cores that predate them still read it.
            if choice.protocol != "http1":
                cluster["protocol"] = choice.protocol
            if choice.max_requests_per_connection is not None:
                cluster["max_requests_per_connection"] = choice.max_requests_per_connection
            if choice.max_concurrent_streams is not None:
                cluster["max_concurrent_streams"] = choice.max_concurrent_streams
        key = json.dumps(cluster, sort_keys=True)
        if key not in self.ids:
            self.ids[key] = len(self.clusters)
            self.clusters.append(cluster)
            self.upstreams.append(choice)
        elif choice is not None and self.upstreams[self.ids[key]] is None:
            self.upstreams[self.ids[key]] = choice
        return self.ids[key]


def load_balancer(lb: LoadBalancer | None) -> str | None:
    """The core's load balancer name, None for the default."""
    return SIMPLE_LB[lb.simple] if lb is not None and lb.simple is not None else None


def outlier_detection(od: OutlierDetection) -> snap.OutlierDetection:
    """The core's settings, with Istio's defaults and translation (Istio's
    `applyOutlierDetection`)."""
    deprecated = od.consecutive_errors or 0
    c5xx = od.consecutive_5xx_errors
    if c5xx is None:
        c5xx = 0 if deprecated else defaults.CONSECUTIVE_5XX
    gateway = od.consecutive_gateway_errors
    if gateway is None:
        gateway = deprecated
    return {
        "consecutive_5xx": c5xx,
        "consecutive_gateway_errors": gateway,
        "interval_ms": duration_ms(od.interval)
        if od.interval is not None
        else defaults.OUTLIER_INTERVAL_MS,
        "base_ejection_time_ms": duration_ms(od.base_ejection_time)
        if od.base_ejection_time is not None
        else defaults.BASE_EJECTION_TIME_MS,
        "max_ejection_percent": od.max_ejection_percent or defaults.MAX_EJECTION_PERCENT,
    }


def upstream_tls(tls: ClientTls) -> snap.UpstreamTls:
    """The core's TLS settings, with the PEM files' text (read now: a reload reads them
    again, which is how a certificate is rotated)."""

    def read(path: str) -> str:
        return Path(path).read_text(encoding="ascii", errors="replace")

    out: snap.UpstreamTls = {}
    if tls.client_certificate is not None and tls.private_key is not None:
        out["client_certificate_pem"] = read(tls.client_certificate)
        out["client_certificate_file"] = tls.client_certificate
        out["private_key_pem"] = read(tls.private_key)
        out["private_key_file"] = tls.private_key
    if tls.ca_certificates is not None:
        out["ca_pem"] = read(tls.ca_certificates)
        out["ca_file"] = tls.ca_certificates
    if tls.ca_crl is not None:
        out["crl_pem"] = read(tls.ca_crl)
        out["crl_file"] = tls.ca_crl
    if tls.sni is not None:
        out["sni"] = tls.sni
    if tls.subject_alt_names:
        out["subject_alt_names"] = list(tls.subject_alt_names)
    if tls.insecure_skip_verify:
        out["insecure_skip_verify"] = True
    return out


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _endpoints(service: Service, dest: Destination) -> tuple[list[str], list[int]]:
    """A destination's endpoint authorities and (when not all equal) their weights."""
    subset = dest.subset
    chosen = service.select(subset) if subset is None or subset in service.subsets else []
    if service.ports:
        # The destination's port, or the service's only one (validation ensured one).
        port = service.port(dest.port.number if dest.port else None) or service.ports[0]
        default = port.target_port or port.number
        endpoints = [
            f"{_bracket(e.address)}:{e.ports.get(port.name or '') or default}" for e in chosen
        ]
    else:
        endpoints = [e.address for e in chosen]
    weights = [e.weight or 1 for e in chosen]
    return endpoints, (weights if len(set(weights)) > 1 else [])
