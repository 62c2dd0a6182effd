"""TCP routes: bulk throughput through a spliced connection (issue 8's bench). A client
process sends N bytes over a few parallel connections; a sink process counts what
arrives. Peers: direct (client -> sink), pymirror's tcp route (plain, and mirroring
every connection to a second sink), nginx `stream` and HAProxy `mode tcp`, each with as
many worker threads or processes as pymirror. Figures: GB/s (bytes over the time until
the sink closed the last connection), the proxy's CPU seconds per GB (user+system of
all its threads and processes, from /proc), peak RSS. Correctness first: the sink (and
the mirror sink) must count every byte sent."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from load.bulk import BulkResult, Sink, send
from measure import Benchmark, Record, Scenario
from peers.haproxy import NO_TCP_MIRROR as HAPROXY_NO_MIRROR
from peers.haproxy import start_haproxy
from peers.nginx import NO_TCP_MIRROR as NGINX_NO_MIRROR
from peers.nginx import start_nginx_stream
from peers.process import Process, cpu_seconds, peak_rss_bytes
from peers.pymirror import start_pymirror_tcp
from peers.route import Route

#: Bytes per measurement: 1 GiB in a full run, 64 MiB in CI's smoke run (conftest's
#: PYMIRROR_BENCH_SECONDS below FULL_RUN_SECONDS, 3).
_SMOKE = float(os.environ.get("PYMIRROR_BENCH_SECONDS", "5")) < 3.0
SIZE = (64 << 20) if _SMOKE else (1 << 30)
CONNECTIONS = 4
#: Transfers measured per peer (the median by time is reported; CPU is over all of them).
ROUNDS = 1 if _SMOKE else 3
#: A first, small transfer on the fresh peer: it checks the path and warms it up.
WARMUP = 16 << 20
#: Bounds on every transfer: the client's timeout, and how long the sinks are waited for.
SEND_TIMEOUT = 120.0
SINK_TIMEOUT = 30.0

START: dict[str, Callable[[Route, Path], Process]] = {
    "pymirror": start_pymirror_tcp,
    "nginx": start_nginx_stream,
    "nginx-1m": partial(start_nginx_stream, tuned=True),
    "haproxy": start_haproxy,
    "haproxy-splice": partial(start_haproxy, splice=True),
}
NO_MIRROR = {"nginx": NGINX_NO_MIRROR, "haproxy": HAPROXY_NO_MIRROR}
PEERS = ("direct", *START)


@dataclass(frozen=True)
class Bulk:
    scenario: Scenario
    mirror: bool


_WHAT = (
    f"{SIZE >> 20:,} MiB over {CONNECTIONS} parallel connections from a client process to a "
    f"counting sink process, {ROUNDS} time(s) per peer (the median transfer reported)"
)
PLAIN = Bulk(
    Scenario(
        "tcp-bulk",
        "TCP bulk transfer (tcp route, no mirror)",
        f"{_WHAT}; each proxy forwards to the sink, direct is the client talking to it.",
        mirror=None,
        rate=0.0,
    ),
    mirror=False,
)
MIRRORED = Bulk(
    Scenario(
        "tcp-bulk-mirror",
        "TCP bulk transfer, 100% of connections mirrored",
        f"{_WHAT}; pymirror copies every byte the client sends to a second sink, which must "
        "count them all too.",
        rate=0.0,
    ),
    mirror=True,
)
CASES = [(PLAIN, p) for p in PEERS] + [(MIRRORED, p) for p in ("pymirror", "nginx", "haproxy")]


@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[Sink, Sink]]:
    primary = Sink()
    try:
        mirror = Sink()
    except Exception:
        primary.stop()
        raise
    try:
        yield primary, mirror
    finally:
        primary.stop()
        mirror.stop()


def _transfer(
    address: str, size: int, sink: Sink, mirror: Sink | None
) -> tuple[BulkResult, int, int]:
    result = send(address, size, CONNECTIONS, SEND_TIMEOUT)
    at_sink = sink.received(size, SINK_TIMEOUT)
    at_mirror = mirror.received(size, SINK_TIMEOUT) if mirror else 0
    return result, at_sink, at_mirror


@pytest.mark.parametrize(("case", "peer"), CASES, ids=[f"{c.scenario.key}-{p}" for c, p in CASES])
def test_tcp_bulk(
    sinks: tuple[Sink, Sink],
    benchmark: Benchmark,
    record: Record,
    tmp_path: Path,
    case: Bulk,
    peer: str,
) -> None:
    scenario = case.scenario
    if case.mirror and peer in NO_MIRROR:
        record(scenario, peer, {"note": NO_MIRROR[peer]})
        pytest.skip(NO_MIRROR[peer])
    benchmark.group = scenario.key
    sink, mirror_sink = sinks
    mirror = mirror_sink if case.mirror else None
    route = Route(sink.address, mirror.address if mirror else None)
    process = START[peer](route, tmp_path) if peer != "direct" else None
    address = process.address if process else sink.address
    try:
        sink.drain()  # the start-up probe's connection (0 bytes)
        mirror_sink.drain()
        _, warm, warm_mirror = _transfer(address, WARMUP, sink, mirror)
        assert warm == WARMUP, f"warm-up: {warm:,} of {WARMUP:,} bytes reached the sink"
        assert not mirror or warm_mirror == WARMUP, f"warm-up: {warm_mirror:,} at the mirror"

        cpu = cpu_seconds(process.pid) if process else 0.0
        measured: list[tuple[BulkResult, int, int]] = []
        benchmark.pedantic(
            lambda: measured.append(_transfer(address, SIZE, sink, mirror)),
            rounds=ROUNDS,
            iterations=1,
        )
        cpu = (cpu_seconds(process.pid) if process else 0.0) - cpu
        rss = peak_rss_bytes(process.pid) if process else 0
    finally:
        if process:
            process.stop()
    # The median transfer by time is reported; every one must have arrived whole.
    result, at_sink, at_mirror = sorted(measured, key=lambda m: m[0].seconds)[len(measured) // 2]
    figures: dict[str, Any] = {
        "rounds": len(measured),
        "gb_per_s_each": [m[0].gb_per_s for m in measured],
        "bytes": result.bytes,
        "seconds": result.seconds,
        "gb_per_s": result.gb_per_s,
        "sink_bytes": at_sink,
        "connections": CONNECTIONS,
    }
    if process:
        figures["cpu_s_per_gb"] = cpu / (sum(m[0].bytes for m in measured) / 1e9)
        figures["rss_mib"] = rss / 2**20
    if mirror:
        figures["mirror_bytes"] = at_mirror
        figures["mirror_bytes_each"] = [m[2] for m in measured]
    benchmark.extra_info.update(figures)
    record(scenario, peer, figures)
    for sent, at_sink, at_mirror in measured:
        assert sent.bytes == SIZE, f"the client sent {sent.bytes:,} of {SIZE:,} bytes"
        assert at_sink == SIZE, f"{at_sink:,} of {SIZE:,} bytes reached the sink"
        if mirror:
            assert at_mirror == SIZE, f"{at_mirror:,} of {SIZE:,} bytes reached the mirror sink"
