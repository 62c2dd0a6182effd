"""One peer in one scenario: start it, check it serves v1 (and copies to v2), then
measure latency at a fixed rate (open loop), throughput (wrk), its CPU time per request
and peak memory, count the copies that reached v2, and stop it whatever happens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from load.h2load import H2loadResult
from load.openloop import OpenLoopResult, open_loop, request_bytes
from load.wrk import WrkResult, post_script, wrk
from peers import START
from peers.backends import Backend
from peers.process import Process, cpu_seconds, peak_rss_bytes
from peers.route import Route
from probe import check_serves_v1

Figures = dict[str, Any]
#: Measure one peer in one scenario (the `run_case` fixture).
RunCase = Callable[["Scenario", str], Figures]
#: Keep one peer's figures in one scenario for the report (the `record` fixture).
Record = Callable[["Scenario", str, Figures], None]


class Benchmark(Protocol):
    """The part of pytest-benchmark's fixture used here."""

    group: str | None
    extra_info: dict[str, Any]

    def pedantic(self, target: Any, *, rounds: int, iterations: int) -> Any: ...


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    what: str
    """What it measures, one sentence for RESULTS.md."""
    mirror: str | None = "v2"
    """The v2 backend copies go to (`v2`, `v2-slow`, `v2-dead`), or None: no mirror."""
    percent: float = 100.0
    rate: float = 1000.0
    """Open-loop requests per second: under every peer's closed-loop throughput."""
    connections: int = 32
    """wrk's connections (closed loop)."""
    open_connections: int = 64
    body: int = 0
    """POST body bytes; 0 sends GETs."""
    compare: float = 0.0
    """Percentage of copies whose answer is compared with the primary's (pymirror's
    extension); 0: comparison off."""
    primary: str = "v1"
    """The backend users are answered by: `v1` (3 bytes) or `v1-64kib` (64 KiB)."""

    def route(self, backends: dict[str, Backend]) -> Route:
        mirror = backends[self.mirror].address if self.mirror else None
        return Route(backends[self.primary].address, mirror, self.percent, self.compare)


def open_figures(result: OpenLoopResult) -> Figures:
    return {
        "rate": result.rate,
        "p50_ms": result.percentile_ms(50),
        "p99_ms": result.percentile_ms(99),
        "p999_ms": result.percentile_ms(99.9),
        "max_ms": result.percentile_ms(100),
        "open_requests": len(result.samples),
        "open_errors": result.errors,
        "unfinished": result.unfinished,
        "retries": result.retries,
        "lag_p99_ms": result.lag_ms(99),
    }


def wrk_figures(result: WrkResult) -> Figures:
    return {
        "rps": result.rps,
        "wrk_requests": result.requests,
        "wrk_errors": result.errors,
        "wrk_p50_ms": result.p50_ms,
        "wrk_p99_ms": result.p99_ms,
    }


def h2load_figures(
    result: H2loadResult,
    *,
    connections: int,
    streams: int,
    cpu: float | None,
    rss: int,
    copies: int | None,
) -> Figures:
    """h2load's figures, with the proxy's CPU seconds and peak RSS (None: direct) and the
    copies that reached v2 (None: no mirror)."""
    figures: Figures = {
        "rps": result.rps,
        "requests": result.requests,
        "user_errors": result.errors,
        "p50_ms": result.percentile_ms(50),
        "p99_ms": result.percentile_ms(99),
        "p999_ms": result.percentile_ms(99.9),
        "connections": connections,
        "streams": streams,
    }
    return with_proxy_figures(figures, requests=result.requests, cpu=cpu, rss=rss, copies=copies)


def with_proxy_figures(
    figures: Figures, *, requests: int, cpu: float | None, rss: int, copies: int | None
) -> Figures:
    """`figures` with the proxy's CPU per request and peak RSS (`cpu` None: direct) and
    the copies that reached v2 as a share of the requests answered (None: no mirror)."""
    if cpu is not None:
        figures["cpu_us_per_req"] = cpu / max(1, requests) * 1e6
        figures["rss_mib"] = rss / 2**20
    if copies is not None:
        # Requests in flight when the load stops were copied but are not in its count, so
        # the share reads a little high.
        figures["copies"] = copies
        figures["copy_share"] = copies / max(1, requests)
    return figures


def _cpu(process: Process | None) -> float:
    return cpu_seconds(process.pid) if process else 0.0


def _seen(v2: Backend | None) -> int:
    return v2.seen() if v2 else 0


def _settled(v2: Backend | None) -> int:
    return v2.settled() if v2 else 0


def measure(
    peer: str,
    scenario: Scenario,
    backends: dict[str, Backend],
    workdir: Path,
    seconds: float,
    benchmark: Benchmark,
) -> Figures:
    v2 = backends[scenario.mirror] if scenario.mirror and peer != "direct" else None
    body = b"x" * scenario.body
    primary = backends[scenario.primary]
    process = START[peer](scenario.route(backends), workdir) if peer != "direct" else None
    address = process.address if process else primary.address
    script = post_script(workdir, scenario.body) if scenario.body else None
    payload = request_bytes("POST", body) if body else request_bytes()
    try:
        healthy = scenario.mirror == "v2" and scenario.percent == 100
        copied = healthy and v2 is not None
        check_serves_v1(address, v2, copied=copied, body=body, answer=primary.answer)

        # The open loop first, on the fresh peer: nothing left over from wrk's flood.
        before, cpu = _seen(v2), _cpu(process)
        opened = open_loop(
            address,
            rate=scenario.rate,
            seconds=2 * seconds,  # twice wrk's: tail percentiles need the samples
            connections=scenario.open_connections,
            payload=payload,
        )
        cpu_open = _cpu(process) - cpu
        copies_open = _settled(v2) - before

        before, cpu = _seen(v2), _cpu(process)
        closed: WrkResult = benchmark.pedantic(
            lambda: wrk(address, seconds=seconds, connections=scenario.connections, script=script),
            rounds=1,
            iterations=1,
        )
        cpu_closed = _cpu(process) - cpu
        copies_closed = _settled(v2) - before
        rss = peak_rss_bytes(process.pid) if process else 0
    finally:
        if process:
            process.stop()
    figures = {**wrk_figures(closed), **open_figures(opened)}
    if process:
        figures["cpu_us_per_req"] = cpu_closed / max(1, closed.requests) * 1e6
        figures["cpu_us_per_req_at_rate"] = cpu_open / max(1, len(opened.samples)) * 1e6
        figures["rss_mib"] = rss / 2**20
    if v2 is not None and v2.process is not None:
        # Exact at the fixed rate: every request sent is accounted for. Under wrk, requests
        # still in flight when it stops were copied but are not in its count (up to one
        # per connection), so that share reads a little high.
        answered = sum(1 for s in opened.samples if s.status == 200)
        figures["copies"] = copies_open + copies_closed
        figures["copy_share"] = copies_open / max(1, answered)
        figures["copy_share_wrk"] = copies_closed / max(1, closed.requests)
    return figures
