"""Checks on listeners across objects: addresses used once, a default host that is
served, and a protocol that the service ports with the listener's port number agree on.

Part of the reference check (`pymirror.config.references`); `port_origin` and
`protocol_conflict` also explain a listener's protocol to `pymirror check` and `--listen`.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import Path
from .hosts import domains, host_matches
from .model import Config, Listener
from .types import split_host_port
from .validate import Issue, position


def listener_issues(config: Config) -> Iterator[Issue]:
    """Each listener's address is bound once (with the admin's), its `host` is served, and
    its protocol, when taken from the service ports, is one they agree on."""
    bound: dict[str, Path] = {}
    if config.admin is not None and split_host_port(config.admin.address)[1] != 0:
        bound[config.admin.address] = ("admin", "address")
    for i, listener in enumerate(config.listeners):
        here: Path = ("listeners", i)
        if split_host_port(listener.address)[1] != 0:
            if listener.address in bound:
                yield Issue(
                    (*here, "address"),
                    f"`{listener.address}` is already used at "
                    f"{position(config, bound[listener.address])}",
                )
            bound.setdefault(listener.address, (*here, "address"))
        if listener.protocol is None:
            yield from _listener_protocol(config, here, listener)
        host = listener.host
        if host is None or host in config.services:
            continue
        if not any(
            host_matches(d, host)
            for vs in config.virtual_services
            for p in vs.hosts
            for d in domains(p, vs.namespace)
        ):
            yield Issue(
                (*here, "host"),
                f"no virtual service serves host `{host}` and no "
                "service has that name, so requests for it could go nowhere",
            )


def _listener_protocol(config: Config, here: Path, listener: Listener) -> Iterator[Issue]:
    """A listener that takes its protocol from the service ports: they agree, and a
    `tcp` one has no `host`."""
    port = split_host_port(listener.address)[1]
    if conflict := protocol_conflict(config, port):
        yield Issue((*here, "address"), conflict, code="protocol-conflict")
    elif listener.host is not None and config.listener_protocol(listener.address) == "tcp":
        yield Issue(
            (*here, "host"),
            f"this listener is tcp ({port_origin(config, port)}), with no requests "
            "to route by host: remove `host`, or write `protocol: http`",
            True,
        )


def _declaration(config: Config, name: str, index: int) -> str:
    """`ServiceEntry default/redis port `tcp-redis` (TCP) at file:line:col`."""
    service = config.services[name]
    port = service.ports[index]
    where = position(config, ("services", name, "ports", index, "protocol"))
    label = f" `{port.name}`" if port.name else ""
    return f"{service._source or f'service `{name}`'} port{label} ({port.protocol}) at {where}"


def port_origin(config: Config, port: int) -> str:
    """Why a listener on ``port`` that writes no `protocol` is tcp: the first declaration."""
    name, index, _ = config.port_protocols(port)[0]
    return f"port {port} is declared by {_declaration(config, name, index)}"


def protocol_conflict(config: Config, port: int) -> str | None:
    """Why a listener on ``port`` needs its `protocol` written: service ports with that
    number declare a TCP-family and an HTTP-family protocol. None when they agree."""
    found = config.port_protocols(port) if port else []
    tcp = next(((n, i) for n, i, f in found if f == "tcp"), None)
    http = next(((n, i) for n, i, f in found if f == "http"), None)
    if tcp is None or http is None:
        return None
    return (
        f"port {port} is declared by {_declaration(config, *tcp)} and by "
        f"{_declaration(config, *http)}: write this listener's `protocol` (`tcp` or `http`)"
    )
