"""Unary gRPC on both hops (issue 16's bench, its gRPC part): h2load sends unary
`/bench.Echo/Unary` calls over h2c (a POST of one length-prefixed message,
`content-type: application/grpc`, `te: trailers`), CONNECTIONS connections with up to
STREAMS concurrent streams each, for PYMIRROR_BENCH_SECONDS. The backends are tonic
servers (bench/grpc_backend, one thread each, as the nginx backends' one worker)
answering their name and counting their calls. Peers: direct (h2load at v1), pymirror
(v1's and v2's service port `protocol: GRPC`) and Envoy (`codec_type: AUTO`, clusters
with explicit HTTP/2), each with no mirror and copying every call to v2. As in
test_http2.py, nginx is left out (its proxy speaks HTTP/2 upstream only through
`grpc_pass`, and it has no mirror for that).

Correctness first: one call through the peer (grpcio) must get v1's reply with
grpc-status OK; at 100% exactly one copy must reach v2 (v2's call count). h2load reads
only HTTP statuses and a gRPC error is an HTTP 200 (its grpc-status is in the trailers),
so v1's call count stands in for the statuses: after a BURST of calls multiplexed as under
load, all answered 2xx, v1 must have served exactly BURST, none answered by the proxy
itself; at 100% all copied. In the timed run v1 must have served at least every call
h2load counted. Figures as test_http2.py's: req/s (h2load), the proxy's CPU per call
(user+system of all its threads, from /proc), p50/p99/p99.9 from h2load's per-request
log (closed loop: latency at saturation), peak RSS, copies at v2 as a share of the calls
answered (a figure, not a check: under a flood a proxy may drop copies past its in-flight
bound, by design). Issue 16's targets, at 100%: CPU per call at most 0.5x Envoy's,
throughput at least 2x (bench/report.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from load.h2load import h2load
from measure import Benchmark, Record, Scenario, h2load_figures
from peers import cpus
from peers.backends import Backend
from peers.envoy import envoy_missing, start_envoy
from peers.grpc_backend import UNARY, grpc_backend, grpc_backend_missing, request_frame
from peers.process import Process, cpu_seconds, peak_rss_bytes
from peers.pymirror import start_pymirror
from peers.route import Route
from probe import check_serves_v1_grpc

CONNECTIONS = 4
#: Concurrent streams per connection: under pymirror's default stream limit (100; tonic's
#: server sets none), so no call waits for a stream.
STREAMS = 32
#: Calls of the check before measuring: every one answered by v1, and copied at 100%.
BURST = 500
#: What h2load sends besides `:authority`, making its POST a gRPC call.
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")

_WHAT = (
    f"h2load, {CONNECTIONS} connections with up to {STREAMS} concurrent streams each, unary "
    "gRPC calls over h2c to tonic backends; the proxies speak HTTP/2 on both hops"
)
PLAIN = Scenario(
    "grpc-plain",
    "gRPC, 0% mirror (plain reverse proxy)",
    f"{_WHAT}. Each proxy with no mirror configured; direct is h2load calling v1.",
    mirror=None,
    rate=0.0,
    connections=CONNECTIONS,
)
MIRRORED = Scenario(
    "grpc-mirror-100",
    "gRPC, 100% mirror",
    f"{_WHAT}. Every call copied to v2, over HTTP/2 too.",
    rate=0.0,
    connections=CONNECTIONS,
)

START: dict[str, Callable[[Route, Path], Process]] = {
    "pymirror": partial(start_pymirror, http2=True, grpc=True, workers=cpus.proxy_workers()),
    "envoy": partial(start_envoy, http2=True, workers=cpus.proxy_workers()),
}
CASES = [(PLAIN, "direct")] + [(s, p) for s in (PLAIN, MIRRORED) for p in START]


@pytest.fixture(scope="module")
def grpc_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    """v1 and v2, tonic servers counting their calls (built on first use); skipped,
    saying why, where a tool is missing."""
    if shutil.which("h2load") is None:
        pytest.skip("h2load is not installed (Debian package nghttp2-client)")
    missing = grpc_backend_missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("grpc-backends")
    started: dict[str, Backend] = {}
    try:
        started["v1"] = grpc_backend("v1", root / "v1")
        started["v2"] = grpc_backend("v2", root / "v2")
        split = cpus.split()
        for backend in started.values():
            assert backend.process is not None
            cpus.pin(backend.process.pid, split[1] if split else None)
        yield started
    finally:
        for backend in started.values():
            backend.stop()


@pytest.mark.parametrize(("scenario", "peer"), CASES, ids=[f"{s.key}-{p}" for s, p in CASES])
def test_grpc(
    grpc_backends: dict[str, Backend],
    bench_seconds: float,
    benchmark: Benchmark,
    record: Record,
    tmp_path: Path,
    scenario: Scenario,
    peer: str,
) -> None:
    if peer == "envoy" and (missing := envoy_missing()):
        record(scenario, peer, {"note": missing})
        pytest.skip(missing)
    benchmark.group = scenario.key
    v1 = grpc_backends["v1"]
    v2 = grpc_backends["v2"] if scenario.mirror else None
    body = tmp_path / "unary.bin"
    body.write_bytes(request_frame("ping"))
    split = cpus.split()
    calls = partial(
        h2load,
        connections=CONNECTIONS,
        streams=STREAMS,
        workdir=tmp_path,
        path=UNARY,
        headers=GRPC_HEADERS,
        data=body,
        cpus=split[1] if split else None,
    )
    process = START[peer](scenario.route(grpc_backends), tmp_path) if peer != "direct" else None
    if process:
        cpus.pin(process.pid, split[0] if split else None)
    address = process.address if process else v1.address
    try:
        check_serves_v1_grpc(address, v2, copied=v2 is not None)
        # The burst, for every peer alike (it also warms them up): all answered by v1,
        # and with a mirror all copied.
        served, before = v1.seen(), v2.seen() if v2 else 0
        burst = calls(address, requests=BURST)
        assert burst.requests == BURST, f"{burst.requests} of {BURST} answered 2xx"
        served = v1.seen() - served
        assert served == BURST, f"v1 served {served} of {BURST} calls answered 2xx"
        if v2 is not None:
            copied = v2.settled() - before
            assert copied == BURST, f"{copied} of {BURST} copies reached v2"
        served, before = v1.seen(), v2.seen() if v2 else 0
        cpu = cpu_seconds(process.pid) if process else 0.0
        result = benchmark.pedantic(
            lambda: calls(address, seconds=bench_seconds), rounds=1, iterations=1
        )
        cpu = (cpu_seconds(process.pid) if process else 0.0) - cpu
        served = v1.seen() - served
        copies = v2.settled() - before if v2 else 0
        rss = peak_rss_bytes(process.pid) if process else 0
    finally:
        if process:
            process.stop()
    figures = h2load_figures(
        result,
        connections=CONNECTIONS,
        streams=STREAMS,
        cpu=cpu if process else None,
        rss=rss,
        copies=copies if v2 is not None else None,
    )
    figures["cores"] = cpus.describe()
    benchmark.extra_info.update(figures)
    record(scenario, peer, figures)
    assert result.requests > 0 and result.errors == 0, f"users saw {result.errors:,} errors"
    # A call the proxy answered itself (a gRPC error, HTTP 200) never reached v1.
    assert served >= result.requests, f"v1 served {served:,} of {result.requests:,} calls"
