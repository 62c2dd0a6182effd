"""`pymirror run` as its own process (so /proc shows its CPU time and memory); reload
is SIGHUP after the configuration file is rewritten."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from peers.process import Process, free_port, start
from peers.route import WORKERS, Route

_CONFIG = """\
listeners:
  - {{address: "{listen}", host: reviews}}
services:
  v1: {{endpoints: [{{address: "{primary}"}}]}}
  v2: {{endpoints: [{{address: "{mirror}"}}]}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: v1}}}}]
{mirror_lines}"""


def config(route: Route, listen: str) -> str:
    mirror_lines = ""
    if route.mirror is not None:
        mirror_lines = (
            f"        mirror: {{host: v2}}\n        mirrorPercentage: {{value: {route.percent}}}\n"
        )
        if route.compare:
            mirror_lines = mirror_lines.replace(
                "{host: v2}", f"{{host: v2, compare: {{percentage: {{value: {route.compare}}}}}}}"
            )
    return _CONFIG.format(
        listen=listen,
        primary=route.primary,
        mirror=route.mirror or route.primary,
        mirror_lines=mirror_lines,
    )


def start_pymirror(route: Route, workdir: Path) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    path = workdir / "routes.yaml"
    path.write_text(config(route, address))
    argv = [
        sys.executable, "-m", "pymirror.cli", "--log-level", "warning",
        "run", str(path), "--workers", str(WORKERS), "--admin", "127.0.0.1:0",
        "--drain-timeout", "2",
    ]  # fmt: skip
    return start(argv, address, workdir)


def reload_pymirror(peer: Process, route: Route) -> None:
    (peer.workdir / "routes.yaml").write_text(config(route, peer.address))
    peer.signal(signal.SIGHUP)
