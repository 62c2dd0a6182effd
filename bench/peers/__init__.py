"""The peers under test, each started from the same `Route`: pymirror, nginx, Envoy and
HAProxy (`mode http`, plain routes only: it has no mirror of its own) (and "direct": no
proxy, the client talks to v1); the nginx backends they forward to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from peers.envoy import NO_RELOAD as ENVOY_NO_RELOAD
from peers.envoy import start_envoy
from peers.haproxy import start_haproxy_http
from peers.nginx import reload_nginx, start_nginx
from peers.process import Process
from peers.pymirror import reload_pymirror, start_pymirror
from peers.route import Route


class Start(Protocol):
    """Starts a peer serving `route` from `workdir`, with `workers` threads or processes
    (each peer's default: one per core)."""

    def __call__(self, route: Route, workdir: Path, *, workers: int = ...) -> Process: ...


START: dict[str, Start] = {
    "pymirror": start_pymirror,
    "nginx": start_nginx,
    "envoy": start_envoy,
    "haproxy": start_haproxy_http,
}
RELOAD: dict[str, Callable[[Process, Route], None]] = {
    "pymirror": reload_pymirror,
    "nginx": reload_nginx,
}
#: Why a peer has no reload to measure.
NO_RELOAD: dict[str, str] = {"envoy": ENVOY_NO_RELOAD}
