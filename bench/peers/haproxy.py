"""HAProxy (Debian `haproxy`) in `mode tcp`: one frontend, one backend server, `nbthread`
equal to pymirror's worker threads, defaults otherwise: HAProxy copies through its
buffers unless told to splice. The `splice` variant adds `option splice-request` and
`option splice-response` (kernel splicing both ways, its documented bulk-TCP setting).
HAProxy has no TCP mirror; the tcp mirror scenario records why (`NO_TCP_MIRROR`).

And in `mode http` (`start_haproxy_http`, the HTTP scenarios' "haproxy"): a plain reverse
proxy, keep-alive to clients (`option http-keep-alive`) and to v1 (`http-reuse always`,
as nginx's and pymirror's upstream connections are kept alive), the same threads and
timeouts. Its only HTTP mirror is an SPOE agent, a separate program: a mirrored route
raises `NO_HTTP_MIRROR` and the scenarios leave HAProxy out of their mirrored cases."""

from __future__ import annotations

import shutil
from pathlib import Path

from peers.process import Process, free_port, start
from peers.route import WORKERS, Route

NO_TCP_MIRROR = "HAProxy has no TCP mirror (its traffic mirroring is an HTTP-only SPOE agent)"
NO_HTTP_MIRROR = (
    "HAProxy mirrors HTTP only through an SPOE agent (spoa-mirror), a program of its own"
)

_CONF = """
global
    nbthread {workers}
    maxconn 4096
    log stderr format raw local0 err

defaults
    mode tcp{splice}
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bulk
    bind {address}
    default_backend sink

backend sink
    server sink {primary}
"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise RuntimeError("HAProxy is not installed (Debian package haproxy)")
    return found


SPLICE = "\n    option splice-request\n    option splice-response"


def start_haproxy(route: Route, workdir: Path, *, splice: bool = False) -> Process:
    if route.mirror is not None:
        raise ValueError(NO_TCP_MIRROR)
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        _CONF.format(
            workers=WORKERS,
            address=address,
            primary=route.primary,
            splice=SPLICE if splice else "",
        )
    )
    # -db: foreground, no daemon; one process with `nbthread` threads.
    return start([haproxy_binary(), "-db", "-f", str(conf)], address, workdir)


_HTTP_CONF = """
global
    nbthread {workers}
    maxconn 4096
    log stderr format raw local0 err

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s

frontend web
    bind {address}
    default_backend v1

backend v1
    http-reuse always
    server v1 {primary}
"""


def start_haproxy_http(route: Route, workdir: Path, *, workers: int = WORKERS) -> Process:
    """HAProxy `mode http` forwarding every request to `route.primary`; no mirror, no
    TLS (ValueError)."""
    if route.mirror is not None:
        raise ValueError(NO_HTTP_MIRROR)
    if route.tls_in or route.tls_out:
        raise ValueError("the HAProxy HTTP peer is configured for plain HTTP only")
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    conf = workdir / "haproxy.cfg"
    conf.write_text(_HTTP_CONF.format(workers=workers, address=address, primary=route.primary))
    return start([haproxy_binary(), "-db", "-f", str(conf)], address, workdir)
