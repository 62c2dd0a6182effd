"""How a destination's requests go upstream: the service port it reaches, and the protocol,
decided as Istio decides a cluster's, in this order:

1. DestinationRule `connectionPool.http.useClientProtocol: true`: the client's own
   (HTTP/2 for an HTTP/2 request, else HTTP/1.1);
2. the service port's protocol `HTTP2`, `GRPC` or `GRPC-WEB`: HTTP/2. Its `protocol`, or
   when none is written its name, as Istio reads port names (`grpc-web...`, else the part
   before the first `-`, or the whole name: `grpc-api`, `http2`);
3. `connectionPool.http.h2UpgradePolicy: UPGRADE`: HTTP/2;
4. else HTTP/1.1.

The connection pool is the one in effect for the destination's subset and port
(`policy_layers`). Each choice says why, with where that was written, for `check` and the
startup log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import Path
from .model import Config, Destination, Service
from .policy_layers import Layered
from .traffic import HTTPSettings
from .validate import position

UpstreamProtocol = Literal["http1", "http2", "client"]

#: Istio protocols that go upstream as HTTP/2 (Istio's `IsHTTP2`).
HTTP2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})
#: The port a destination host resolved by DNS is connected to without `port`.
DNS_PORT = 80


@dataclass(frozen=True)
class UpstreamChoice:
    """A destination's upstream protocol, why, and its connection pool's HTTP limits."""

    protocol: UpstreamProtocol
    why: str
    """`default`, or what decided it and where: `port grpc-web 9090 of ServiceEntry
    default/reviews at se.yaml:9:13`."""
    max_requests_per_connection: int | None = None
    max_concurrent_streams: int | None = None

    def __str__(self) -> str:
        label = "client protocol" if self.protocol == "client" else self.protocol
        return f"{label} ({self.why})"


def destination_port(service: Service | None, dest: Destination) -> int | None:
    """The service port ``dest`` reaches: its `port.number`, else the service's only port,
    else for a host resolved by DNS 80; None when endpoints carry their own ports."""
    if dest.port is not None:
        return dest.port.number
    if service is not None and service.ports:
        only = service.port(None)
        return only.number if only is not None else None
    if service is not None and service.endpoints:
        return None
    return DNS_PORT


def named_protocol(name: str) -> str:
    """The protocol a port name declares, as Istio reads it: `GRPC-WEB` for names starting
    `grpc-web`, else the part before the first `-` (or the whole name), upper case."""
    lower = name.lower()
    return "GRPC-WEB" if lower.startswith("grpc-web") else lower.split("-", 1)[0].upper()


def choose_upstream(config: Config, dest: Destination) -> UpstreamChoice:
    """How requests to ``dest`` go upstream (see the module's docstring for the order)."""
    service = config.services.get(dest.host)
    port = destination_port(service, dest)
    layered = service.layered_policy(dest.subset, port) if service is not None else Layered()
    pool = layered.policy.connection_pool if layered.policy is not None else None
    http = pool.http if pool is not None else None
    protocol, why = _decide(config, dest.host, service, port, http, layered.sources)
    return UpstreamChoice(
        protocol,
        why,
        # 0 is Istio's "unset": the core's defaults (unbounded, 100 streams).
        max_requests_per_connection=(http.max_requests_per_connection or None) if http else None,
        max_concurrent_streams=(http.max_concurrent_streams or None) if http else None,
    )


def _decide(
    config: Config,
    host: str,
    service: Service | None,
    port: int | None,
    http: HTTPSettings | None,
    sources: dict[str, Path],
) -> tuple[UpstreamProtocol, str]:
    """The protocol, and why: ``http`` is the connection pool's settings in effect, and
    ``sources`` where the policy's parts were written (`Layered.sources`)."""
    if service is None:
        return "http1", "default"
    here: Path = ("services", host, *sources.get("connection_pool", ()))
    rule = service._rule_source or f"service `{host}`"
    if http is not None and http.use_client_protocol:
        at = position(config, (*here, "connectionPool", "http", "useClientProtocol"))
        return "client", f"{rule} useClientProtocol at {at}"
    index = next((i for i, p in enumerate(service.ports) if p.number == port), None)
    if index is not None and (why := _http2_port(config, host, service, index)):
        return "http2", why
    if http is not None and http.h2_upgrade_policy == "UPGRADE":
        at = position(config, (*here, "connectionPool", "http", "h2UpgradePolicy"))
        return "http2", f"{rule} h2UpgradePolicy UPGRADE at {at}"
    return "http1", "default"


def _http2_port(config: Config, host: str, service: Service, index: int) -> str | None:
    """Why port ``index`` of ``service`` makes its destinations HTTP/2 (its protocol, else
    its name), or None."""
    port = service.ports[index]
    owner = service._source or f"service `{host}`"
    name = f"{port.name} {port.number}" if port.name else str(port.number)
    if port.protocol is not None:
        if port.protocol.upper() not in HTTP2_PROTOCOLS:
            return None
        at = position(config, ("services", host, "ports", index, "protocol"))
        return f"port {name} ({port.protocol}) of {owner} at {at}"
    if port.name is None or named_protocol(port.name) not in HTTP2_PROTOCOLS:
        return None
    at = position(config, ("services", host, "ports", index, "name"))
    return f"port {name} of {owner} at {at}"
