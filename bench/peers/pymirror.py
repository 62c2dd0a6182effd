"""`pymirror run` as its own process (so /proc shows its CPU time and memory); reload
is SIGHUP after the configuration file is rewritten. With `http2`, v1 and v2 declare a
service port with `protocol: HTTP2` (`protocol: GRPC` with `grpc` too, as Istio users
declare gRPC services; pymirror treats both alike), so requests and copies go to them
over HTTP/2 (the listener serves HTTP/1.1 and h2c alike whatever the upstreams speak)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

from peers.process import Process, free_port, start
from peers.route import WORKERS, Route
from peers.tls import TlsFiles

_CONFIG = """\
listeners:
  - {{address: "{listen}", host: reviews{listener_tls}}}
services:
  v1: {primary}
  v2: {mirror}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: v1}}}}]
{mirror_lines}"""


#: A service on an HTTP/2 port: with `ports`, an endpoint is a bare host and its port
#: comes by the port's name (the service port's own number matters to no one here).
_HTTP2_SERVICE = (
    "{{ports: [{{number: 80, name: {name}, protocol: {protocol}}}], "
    'endpoints: [{{address: "{host}", ports: {{{name}: {port}}}}}]}}'
)


def _service(address: str, http2: bool, grpc: bool, tls: TlsFiles | None = None) -> str:
    # TLS: SIMPLE, verified against the CA; the names sent are the Host (`reviews`) for
    # primaries and the destination host (`v2`) for copies, both on the certificate.
    policy = f", trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {tls.ca}}}}}" if tls else ""
    if not http2:
        return f'{{endpoints: [{{address: "{address}"}}]{policy}}}'
    host, port = address.rsplit(":", 1)
    name, protocol = ("grpc-echo", "GRPC") if grpc else ("http2-web", "HTTP2")
    service = _HTTP2_SERVICE.format(name=name, protocol=protocol, host=host, port=port)
    return service[:-1] + policy + "}"


def config(route: Route, listen: str, *, http2: bool = False, grpc: bool = False) -> str:
    mirror_lines = ""
    if route.mirror is not None:
        mirror_lines = (
            f"        mirror: {{host: v2}}\n        mirrorPercentage: {{value: {route.percent}}}\n"
        )
        if route.compare:
            mirror_lines = mirror_lines.replace(
                "{host: v2}", f"{{host: v2, compare: {{percentage: {{value: {route.compare}}}}}}}"
            )
    tls_in = route.tls_in
    return _CONFIG.format(
        listen=listen,
        listener_tls=f", tls: {{certificate: {tls_in.cert}, privateKey: {tls_in.key}}}"
        if tls_in
        else "",
        primary=_service(route.primary, http2, grpc, route.tls_out),
        mirror=_service(route.mirror or route.primary, http2, grpc, route.tls_out),
        mirror_lines=mirror_lines,
    )


def _run(
    render: Callable[[str], str], workdir: Path, *extra: str, workers: int = WORKERS
) -> Process:
    """`pymirror run` on the configuration `render(listen_address)` writes, with `extra`
    flags."""
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    path = workdir / "routes.yaml"
    path.write_text(render(address))
    argv = [
        sys.executable, "-m", "pymirror.cli", "--log-level", "warning",
        "run", str(path), "--workers", str(workers), "--admin", "127.0.0.1:0",
        "--drain-timeout", "2", *extra,
    ]  # fmt: skip
    return start(argv, address, workdir)


def start_pymirror(
    route: Route,
    workdir: Path,
    *extra: str,
    http2: bool = False,
    grpc: bool = False,
    workers: int = WORKERS,
) -> Process:
    """`pymirror run` serving `route`, with `extra` command-line flags; `http2`: to
    HTTP/2 upstreams, on ports declared GRPC with `grpc`."""
    return _run(
        lambda listen: config(route, listen, http2=http2, grpc=grpc),
        workdir,
        *extra,
        workers=workers,
    )


def reload_pymirror(peer: Process, route: Route) -> None:
    (peer.workdir / "routes.yaml").write_text(config(route, peer.address))
    peer.signal(signal.SIGHUP)


#: The tcp mirror's buffer in the bench (`mirrorDefaults.maxBodyBytes`, default 4 MiB).
#: A client sending at GB/s on a loopback shared by client, proxy and two sinks outruns
#: the mirror's copy by far more than 4 MiB, and pymirror then cuts the mirror connection
#: (by design: the mirror never slows the client). The bench wants every byte at the
#: mirror sink, so it lets each connection's copy queue up to 256 MiB, and the engine-wide
#: mirror budget (`--mirror-buffer-budget`, default 256 MiB for all of them together) hold
#: that for each of the scenario's 4 connections.
TCP_MIRROR_BUFFER = "256MiB"
TCP_MIRROR_BUDGET_MIB = 4 * 256

_TCP_CONFIG = """\
{defaults}listeners:
  - {{address: "{listen}", protocol: tcp}}
services:
  sink: {{endpoints: [{{address: "{primary}"}}]}}
  shadow: {{endpoints: [{{address: "{mirror}"}}]}}
virtualServices:
  - name: bulk
    hosts: [bulk]
    tcp:
      - route: [{{destination: {{host: sink}}}}]
{mirror_lines}"""


def tcp_config(route: Route, listen: str) -> str:
    mirror_lines = ""
    if route.mirror is not None:
        mirror_lines = (
            f"        mirror: {{host: shadow}}\n"
            f"        mirrorPercentage: {{value: {route.percent}}}\n"
        )
    defaults = ""
    if route.mirror is not None:
        defaults = f"mirrorDefaults: {{maxBodyBytes: {TCP_MIRROR_BUFFER}}}\n"
    return _TCP_CONFIG.format(
        defaults=defaults,
        listen=listen,
        primary=route.primary,
        mirror=route.mirror or route.primary,
        mirror_lines=mirror_lines,
    )


def start_pymirror_tcp(route: Route, workdir: Path) -> Process:
    """pymirror with one `protocol: tcp` listener and a tcp route (mirrored if asked)."""
    extra = () if route.mirror is None else ("--mirror-buffer-budget", str(TCP_MIRROR_BUDGET_MIB))
    return _run(lambda listen: tcp_config(route, listen), workdir, *extra)
