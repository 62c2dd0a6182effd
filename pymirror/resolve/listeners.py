"""The listeners a Snapshot gets: the configured ones, or `--listen`'s addresses in
place of those that are no gateway's; a Gateway server's listener keeps its port and
takes the IP they give (unless the server wrote `bind`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config.model import Config, ListenerGateway
from ..config.tls import ListenerTls
from ..config.types import split_host_port


@dataclass(frozen=True)
class ListenerSpec:
    """One listener as the Snapshot will have it, before its virtual hosts are known."""

    address: str
    host: str | None
    protocol: str
    tls: ListenerTls | None
    written: str | None = None
    """The `protocol` written for it (None: taken from its port)."""
    gateway: ListenerGateway | None = None
    https_redirect: bool = False


def listener_specs(config: Config, listen: Sequence[str] | None) -> list[ListenerSpec]:
    """The listeners in order: the mesh's (configured, or `--listen`), then the gateways'."""
    own = [lst for lst in config.listeners if lst.gateway is None]
    if listen:
        first = own[0] if own else None
        host, written = (first.host, first.protocol) if first else (None, None)
        # `--listen` addresses take the first listener's TLS too, as its host. A tcp
        # listener routes no requests, so it has no default host.
        tls = first.tls if first else None
        specs = [
            ListenerSpec(address, host if protocol == "http" else None, protocol, tls, written)
            for address in listen
            if (protocol := config.listener_protocol(address, written))
        ]
    else:
        specs = [
            ListenerSpec(
                lst.address,
                lst.host,
                config.listener_protocol(lst.address, lst.protocol),
                lst.tls,
                lst.protocol,
            )
            for lst in own
        ]
    ip = split_host_port(specs[0].address)[0] if specs else None
    if ip is not None and ":" in ip:
        ip = f"[{ip}]"
    for lst in config.listeners:
        if lst.gateway is None:
            continue
        address = lst.address
        if ip is not None and not lst.gateway.bind:
            address = f"{ip}:{split_host_port(address)[1]}"
        protocol = lst.protocol or "http"
        spec = ListenerSpec(
            address, None, protocol, lst.tls, lst.protocol, lst.gateway, lst.https_redirect
        )
        specs.append(spec)
    return specs
