"""Benchmark fixtures and the report: figures collected per scenario, then written
to bench/results/latest.json and rendered to bench/RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from peers import Process, nginx_backend

HERE = Path(__file__).parent
#: Seconds of load per scenario; CI's smoke run sets 1.
SECONDS = float(os.environ.get("PYMIRROR_BENCH_SECONDS", "5"))
FIGURES: dict[str, dict[str, float | int | str]] = {}


@pytest.fixture(scope="session")
def bench_seconds() -> float:
    return SECONDS


@pytest.fixture(scope="session")
def figures() -> dict[str, dict[str, float | int | str]]:
    return FIGURES


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Process]]:
    """v1, and v2 in each flavour the scenarios need, all nginx."""
    root = tmp_path_factory.mktemp("nginx")
    peers = {
        "v1": nginx_backend(root / "v1", body="v1"),
        "v2": nginx_backend(root / "v2", body="v2", log=True),
        "v2-500": nginx_backend(root / "v2-500", status=500, body="broken", log=True),
        "v2-slow": nginx_backend(root / "v2-slow", body="slow", delay=0.2, log=True),
    }
    yield peers
    for p in peers.values():
        p.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not FIGURES:
        return
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "seconds_per_scenario": SECONDS,
    }
    (out / "latest.json").write_text(json.dumps({"meta": meta, "scenarios": FIGURES}, indent=2))
    if SECONDS >= 3:  # smoke runs are too short to report
        (HERE / "RESULTS.md").write_text(render(meta, FIGURES))


def render(meta: dict[str, object], figures: dict[str, dict[str, float | int | str]]) -> str:
    base = figures.get("pymirror, no mirror", {})
    lines = [
        "# Benchmark results",
        "",
        f"Measured {meta['when']} on {meta['machine']}, {meta['seconds_per_scenario']:g} s of "
        "wrk load per scenario (1 thread, 32 keep-alive connections), all scenarios in one run. "
        "Backends are nginx returning a fixed body. Regenerate with the command in README.md.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | p99 vs no mirror | CPU us/req (proxy) | "
        "user errors | copies at v2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in figures.items():
        ratio = (
            f"{float(f['p99_ms']) / float(base['p99_ms']):.2f}x"
            if base and name.startswith("pymirror")
            else ""
        )
        cpu = f"{float(f['cpu_us_per_request']):.1f}" if "cpu_us_per_request" in f else ""
        cells = [
            name,
            f"{float(f['rps']):,.0f}",
            f"{float(f['p50_ms']):.2f}",
            f"{float(f['p99_ms']):.2f}",
            ratio,
            cpu,
            str(f["user_errors"]),
            str(f.get("copies_at_v2", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU is user+system time of the proxy process (all threads) from /proc, "
        "divided by the requests wrk completed.",
        "",
    ]
    return "\n".join(lines)
