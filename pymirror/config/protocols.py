"""Which protocol a listener serves when it does not say: as Istio's sidecar takes a
listener's protocol from the service port, a port that the services declare `TCP`,
`MONGO`, `MYSQL` or `REDIS` (opaque TCP to pymirror) is served as `tcp`; otherwise `http`.

`Config.listener_protocol` applies this to the model; `tcp_listener_in` applies it to
routes-format mappings before the model exists (to decide whether `tcp` routes are served).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from .types import split_host_port

Family = Literal["http", "tcp"]

#: Istio protocols that a sidecar proxies as opaque TCP (pymirror splices them).
TCP_FAMILY = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})
#: Istio protocols that a sidecar proxies as HTTP. Others (`TLS`, `UDP`, none) count for
#: neither: they decide no listener's protocol.
HTTP_FAMILY = frozenset({"HTTP", "HTTP2", "HTTPS", "GRPC", "GRPC-WEB"})


def family(protocol: object) -> Family | None:
    """`tcp` or `http` for a service port's `protocol` (any case), else None."""
    if not isinstance(protocol, str):
        return None
    name = protocol.upper()
    return "tcp" if name in TCP_FAMILY else "http" if name in HTTP_FAMILY else None


def decide(families: Iterable[Family]) -> Family:
    """The protocol a port serves given its declarations' families: `tcp` only when every
    one is (a disagreement is reported by validation and serves as `http`)."""
    found = set(families)
    return "tcp" if found == {"tcp"} else "http"


def listen_port(address: str) -> int:
    """The port of a listen address, 0 when it picks one (or is not `host:port`)."""
    try:
        return split_host_port(address)[1]
    except ValueError:
        return 0


def tcp_listener_in(documents: Iterable[Any]) -> bool:
    """Whether a listener of these routes-format mappings serves tcp: written
    `protocol: tcp`, or none written and its port declared TCP-family by their `services`."""
    families: dict[int, list[Family]] = {}
    listeners: list[dict[str, Any]] = []
    for data in documents:
        if not isinstance(data, dict):
            continue
        services = data.get("services")
        for service in services.values() if isinstance(services, dict) else ():
            ports = service.get("ports") if isinstance(service, dict) else None
            for port in ports if isinstance(ports, list) else ():
                if not isinstance(port, dict) or not isinstance(port.get("number"), int):
                    continue
                if found := family(port.get("protocol")):
                    families.setdefault(port["number"], []).append(found)
        written = data.get("listeners")
        listeners += (
            [x for x in written if isinstance(x, dict)] if isinstance(written, list) else []
        )
    for listener in listeners:
        protocol = listener.get("protocol")
        if protocol is None:
            address = listener.get("address")
            port = listen_port(address) if isinstance(address, str) else 0
            protocol = decide(families.get(port, ())) if port else "http"
        if protocol == "tcp":
            return True
    return False
