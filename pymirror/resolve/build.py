"""Model -> Snapshot: the whole Snapshot, its listeners, settings and version (and, for
`check` and the startup log, each cluster's upstream choice).

Routes and clusters are built by `routes` and `clusters`; this module puts them together
and refuses a model that does not resolve.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from .. import snapshot as snap
from ..config.binding import MESH, gateway_names, groups
from ..config.errors import ConfigError, Problem
from ..config.hosts import domains, host_matches
from ..config.listeners import protocol_conflict
from ..config.model import Config, Http2Limits, HTTPRoute, ListenerGateway, VirtualService
from ..config.references import references_of
from ..config.tls import TLS12_SUITES, ListenerTls
from ..config.types import check_listen_address, duration_ms, split_host_port
from ..config.upstreams import UpstreamChoice
from ..config.validate import Issue, locate
from .clusters import Clusters
from .listeners import ListenerSpec, listener_specs
from .routes import Routes


@dataclass(frozen=True)
class Resolved:
    """A Snapshot, and what `pymirror check` and the startup log say beside it."""

    snapshot: snap.Snapshot
    upstreams: list[UpstreamChoice | None]
    """How each cluster's requests go upstream and why, by cluster index (None for a
    cluster only tcp routes use)."""


def snapshot_version(snapshot: snap.Snapshot) -> str:
    """What labels what the core runs: equal snapshots get equal versions."""
    canonical = json.dumps({**snapshot, "version": None}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def build_snapshot(
    config: Config, *, listen: Sequence[str] | None = None, strict: bool = True
) -> snap.Snapshot:
    """Resolve ``config`` into a Snapshot for the core (see `resolve`)."""
    return resolve(config, listen=listen, strict=strict).snapshot


def resolve(
    config: Config, *, listen: Sequence[str] | None = None, strict: bool = True
) -> Resolved:
    """Resolve ``config`` into a Snapshot for the core, with each cluster's upstream choice.

    ``listen`` (``--listen``) replaces the configured listeners' addresses; they keep the
    default host of the first configured listener, and its `protocol` when it writes one
    (else each address takes its own port's, see `Config.listener_protocol`). Raises
    `ConfigError` when the config does not resolve (for instance: no listener at all).
    ``strict=False`` (what `pymirror check` shows) needs no listener and resolves what may
    still be missing (a subset whose endpoints are in a file not given) to empty endpoint
    lists.
    """
    problems = [
        Problem("--listen", None, None, (), str(exc))
        for address in listen or ()
        for exc in _address_error(address)
    ]
    # A `--listen` address takes its protocol from its own port unless the first
    # configured listener writes one: service ports that disagree there need it written.
    written = config.listeners[0].protocol if listen and config.listeners else None
    problems += [
        Problem("--listen", None, None, (), f"{address}: {conflict}")
        for address in listen or ()
        if written is None and not _address_error(address)
        if (conflict := protocol_conflict(config, split_host_port(address)[1]))
    ]
    # The reference check its load ran (run here only for a Config built in code).
    problems += references_of(config, strict=strict).errors
    if strict and not listen and not config.listeners:
        problems += locate(config, [_NO_LISTENER])
    if problems:
        raise ConfigError(problems)
    resolver = _Resolver(config)
    return Resolved(resolver.snapshot(listen), resolver.clusters.upstreams)


_NO_LISTENER = Issue(
    ("listeners",),
    "no listener: add `listeners: [{address: 0.0.0.0:8080}]` or pass `--listen`",
    True,
)


def _address_error(address: str) -> list[ValueError]:
    try:
        check_listen_address(address)
    except ValueError as exc:
        return [exc]
    return []


def virtual_host_domains(vs: VirtualService) -> list[str]:
    """The request hosts a virtual service answers: its hosts, and for short names in a
    namespace, the names Kubernetes' DNS gives them there."""
    found: list[str] = []
    for host in vs.hosts:
        found += [d for d in domains(host, vs.namespace) if d not in found]
    return found


class _Resolver:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.clusters = Clusters(config)
        self.routes = Routes(config, self.clusters)
        self.virtual_hosts: list[snap.VirtualHost] = []
        self.served = [vs for vs in config.virtual_services if vs.serves_http]

    def snapshot(self, listen: Sequence[str] | None) -> snap.Snapshot:
        config = self.config
        self.virtual_hosts = [
            {"name": vs.name, "domains": virtual_host_domains(vs), "routes": self.routes.http(vs)}
            for vs in self.served
        ]
        # `protocol`, `tls` and `virtual_hosts` are written only when used, so that an
        # HTTP-only config keeps the snapshot (and version) it had before they existed.
        defined = gateway_names(config)
        listeners: list[snap.Listener] = []
        for spec in listener_specs(config, listen):
            listener: snap.Listener = {
                "address": spec.address,
                "default_virtual_host": self.default_host(spec.host),
            }
            if spec.protocol != "http":
                listener["protocol"] = spec.protocol
            if spec.tls is not None:
                listener["tls"] = listener_tls(spec.tls)
            if defined:
                self.bind(listener, spec, defined)
            listeners.append(listener)
        upstream: snap.UpstreamSettings = {
            "connect_timeout_ms": duration_ms(config.upstream.connect_timeout),
            "pool_idle_timeout_ms": duration_ms(config.upstream.pool_idle_timeout),
            "pool_max_idle_per_endpoint": defaults.POOL_MAX_IDLE_PER_ENDPOINT,
        }
        if config.upstream.retry_buffer_size != defaults.RETRY_BUFFER_BYTES:
            upstream["retry_buffer_bytes"] = config.upstream.retry_buffer_size
        limits: snap.Limits = {
            "max_request_headers": config.limits.max_request_headers,
            "idle_timeout_ms": duration_ms(config.limits.idle_timeout),
            "max_connections": config.limits.max_connections,
        }
        # Written only when configured, so that other configs keep their snapshot.
        if (http2 := config.limits.http2) is not None:
            limits["http2"] = http2_limits(http2)
        result: snap.Snapshot = {
            "schema": snap.SCHEMA,
            "version": "",
            "listeners": listeners,
            "virtual_hosts": self.virtual_hosts,
            "clusters": self.clusters.clusters,
            "upstream": upstream,
            "limits": limits,
        }
        if tcp_routes := self.routes.tcp():
            result["tcp_routes"] = tcp_routes
        if tls_routes := self.routes.tls():
            result["tls_routes"] = tls_routes
        result["version"] = snapshot_version(result)
        return result

    def bind(self, listener: snap.Listener, spec: ListenerSpec, defined: frozenset[str]) -> None:
        """The virtual hosts ``listener`` serves: its group's (the mesh's, or its
        gateway's), with its default; or, redirecting to HTTPS, one that redirects all."""
        if spec.https_redirect:
            assert spec.gateway is not None
            index = len(self.virtual_hosts)
            self.virtual_hosts.append(https_redirect(spec.gateway))
            listener["default_virtual_host"] = index
            listener["virtual_hosts"] = [index]
            return
        group = MESH if spec.gateway is None else spec.gateway.name
        chosen = [i for i, vs in enumerate(self.served) if group in groups(vs, defined)]
        default = listener.get("default_virtual_host")
        if default is not None and default not in chosen:
            chosen.append(default)
        listener["virtual_hosts"] = chosen

    def default_host(self, host: str | None) -> int | None:
        """The virtual host serving ``host``: exact domain first, then the longest wildcard;
        else an implicit one for the service of that name (validation ensured one exists)."""
        if host is None:
            return None
        best: tuple[int, int] | None = None  # (specificity, index)
        for i, vh in enumerate(self.virtual_hosts):
            for domain in vh["domains"]:
                if host_matches(domain, host):
                    rank = 1 << 16 if "*" not in domain else len(domain)
                    if best is None or rank > best[0]:
                        best = (rank, i)
        if best is not None:
            return best[1]
        implicit = len(self.served)
        for i, vh in enumerate(self.virtual_hosts[implicit:]):
            if vh["domains"] == [host]:
                return implicit + i
        route = HTTPRoute.model_validate({"route": [{"destination": {"host": host}}]})
        self.virtual_hosts.append(
            {"name": host, "domains": [host], "routes": [self.routes.route("0", route, [])]}
        )
        return len(self.virtual_hosts) - 1


def https_redirect(gateway: ListenerGateway) -> snap.VirtualHost:
    """A virtual host that answers every request 301 with its `https://` URL, on the
    gateway's HTTPS port."""
    redirect: snap.Redirect = {"scheme": "https", "port": gateway.redirect_port or 443, "code": 301}
    return {
        "name": f"{gateway.name} https redirect",
        "domains": ["*"],
        "routes": [{"name": "https-redirect", "redirect": redirect}],
    }


def http2_limits(limits: Http2Limits) -> snap.Http2Limits:
    """`limits.http2` as the core reads it."""
    return {
        "max_concurrent_streams": limits.max_concurrent_streams,
        "initial_stream_window_bytes": limits.initial_stream_window_size,
        "initial_connection_window_bytes": limits.initial_connection_window_size,
        "max_header_list_bytes": limits.max_header_list_size,
        "max_pending_accept_reset_streams": limits.max_pending_accept_reset_streams,
        "max_local_error_reset_streams": limits.max_local_error_reset_streams,
    }


def listener_tls(tls: ListenerTls) -> snap.ListenerTls:
    """The PEM files' text for the core (read now: a reload reads them again, which is
    how a certificate is rotated)."""

    def read(path: str) -> str:
        return Path(path).read_text(encoding="ascii", errors="replace")

    out: snap.ListenerTls = {
        "certificates": [
            {
                "certificate_pem": read(c.certificate),
                "private_key_pem": read(c.private_key),
                "certificate_file": c.certificate,
                "private_key_file": c.private_key,
                "sni_hosts": [h.lower() for h in c.sni_hosts],
            }
            for c in tls.entries()
        ],
        "min_protocol_version": "1.3" if tls.min_protocol_version == "TLSV1_3" else "1.2",
    }
    if tls.cipher_suites:
        out["cipher_suites"] = [TLS12_SUITES[name] for name in tls.cipher_suites]
    if tls.mode == "MUTUAL" and tls.ca_certificates is not None:
        out["client_ca_pem"] = read(tls.ca_certificates)
        out["client_ca_file"] = tls.ca_certificates
    return out
