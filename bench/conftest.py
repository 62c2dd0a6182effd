"""Benchmark fixtures: the nginx backends (for the whole session), one peer measured in
one scenario, and the figures of the run, saved as JSON at the end and rendered to
bench/RESULTS.md and the chart by bench/report.py (full runs only)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from load.openloop import timer_jitter_ms  # noqa: E402
from measure import Figures, Record, RunCase, Scenario, measure  # noqa: E402
from peers.backends import Backend, dead_backend, nginx_backend  # noqa: E402
from peers.route import WORKERS  # noqa: E402
from report import write_report  # noqa: E402

#: Seconds of load per measurement (wrk, then the open loop); CI's smoke run sets 1.
SECONDS = float(os.environ.get("PYMIRROR_BENCH_SECONDS", "5"))
#: Below this a run only proves that every scenario and peer works: not reported.
FULL_RUN_SECONDS = 3.0
RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="session")
def bench_seconds() -> float:
    return SECONDS


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    """v1 and every v2 flavour, nginx, one worker each; v2 and v2b log what reaches them.
    v1-64kib answers 64 KiB (`Scenario.primary`)."""
    root = tmp_path_factory.mktemp("backends")
    started: dict[str, Backend] = {}
    try:
        started["v1"] = nginx_backend("v1", root / "v1", body="v1")
        started["v1-64kib"] = nginx_backend("v1-64kib", root / "v1-64kib", body="v1", size=64 << 10)
        started["v2"] = nginx_backend("v2", root / "v2", body="v2", log=True)
        started["v2b"] = nginx_backend("v2b", root / "v2b", body="v2b", log=True)
        started["v2-slow"] = nginx_backend(
            "v2-slow", root / "v2-slow", body="slow", delay=0.2, log=True
        )
        started["v2-dead"] = dead_backend()
        yield started
    finally:
        for backend in started.values():
            backend.stop()


@pytest.fixture(scope="session")
def record() -> Record:
    def add(scenario: Scenario, peer: str, figures: Figures) -> None:
        entry = RESULTS.setdefault(
            scenario.key,
            {"title": scenario.title, "what": scenario.what, "rate": scenario.rate, "peers": {}},
        )
        entry["peers"][peer] = figures

    return add


@pytest.fixture
def run_case(
    backends: dict[str, Backend],
    benchmark: Any,
    record: Record,
    tmp_path: Path,
) -> RunCase:
    """Measure one peer in one scenario; its figures go to extra_info and the report."""

    def run(scenario: Scenario, peer: str) -> Figures:
        benchmark.group = scenario.key
        figures = measure(peer, scenario, backends, tmp_path, SECONDS, benchmark)
        benchmark.extra_info.update(figures)
        record(scenario, peer, figures)
        return figures

    return run


def _meta() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (out.stdout + out.stderr).strip().splitlines()[0] if out.stdout + out.stderr else "?"

    from peers.envoy import envoy_binary

    try:  # "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
        found = re.search(r"version: \S+?/(\d+\.\d+\.\d+)/", version([envoy_binary(), "--version"]))
        envoy = found[1] if found else "?"
    except RuntimeError:
        envoy = "?"
    jitter = timer_jitter_ms()
    return {
        "timer_jitter_ms": {"p99": jitter[0], "p99.9": jitter[1]},
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "seconds": SECONDS,
        "workers": WORKERS,
        "nginx": version(["nginx", "-v"]).split("/")[-1],
        "envoy": envoy,
        "wrk": version(["wrk", "-v"]).split(" [")[0],
        "h2load": version(["h2load", "--version"]).split("/")[-1],  # "h2load nghttp2/1.52.0"
        # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
        "haproxy": (version(["haproxy", "-v"]).split() + ["?"] * 3)[2],
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS:
        return
    data = {"meta": _meta(), "scenarios": RESULTS}
    if SECONDS >= FULL_RUN_SECONDS:
        out = HERE / "results" / "latest.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        write_report(out)
    else:  # a smoke run: keep the figures for a look, away from the committed ones
        out = Path(tempfile.gettempdir()) / "pymirror-bench-smoke.json"
        out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nbenchmark figures: {out}")
