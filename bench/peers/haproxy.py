"""HAProxy (Debian `haproxy`) in `mode tcp`: one frontend, one backend server, `nbthread`
equal to pymirror's worker threads, defaults otherwise: HAProxy copies through its
buffers unless told to splice. The `splice` variant adds `option splice-request` and
`option splice-response` (kernel splicing both ways, its documented bulk-TCP setting).
HAProxy has no TCP mirror; the tcp mirror scenario records why (`NO_TCP_MIRROR`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from peers.process import Process, free_port, start
from peers.route import WORKERS, Route

NO_TCP_MIRROR = "HAProxy has no TCP mirror (its traffic mirroring is an HTTP-only SPOE agent)"

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
