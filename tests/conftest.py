"""Shared fixtures: the built core (checked once per run), real backends, proxies."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import ports
from support.backend import Backend, Behaviour

from pymirror import Proxy
from pymirror.engine import MirrorStats

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def native_core() -> None:
    """The extension is built once, by `pip install -e .`, never inside tests."""
    try:
        import pymirror._native  # noqa: F401
    except ImportError as exc:  # pragma: no cover - environment problem
        pytest.exit(f"pymirror's core is not built ({exc}); run: pip install -e '.[test]'", 2)


def pytest_report_header() -> str | None:
    """Says so when the in-tree core is older than its sources: the run tests stale code."""
    built = next(ROOT.glob("pymirror/_native*.so"), None)
    if built is None:
        return None
    sources = [*ROOT.glob("native/src/**/*.rs"), ROOT / "native/Cargo.toml"]
    stale = [p.name for p in sources if p.stat().st_mtime > built.stat().st_mtime]
    return (
        f"WARNING: pymirror's core is older than {stale}; rebuild: pip install -e ."
        if stale
        else None
    )


@pytest.fixture(autouse=True)
def _held_ports() -> Iterator[None]:
    """Ports a test reserved (`support.ports`) are given back once it has ended."""
    yield
    ports.release()


@pytest.fixture
def backend() -> Iterator[Callable[..., Backend]]:
    """`backend("v1", status=500, delay=1.0)` starts a real HTTP server on loopback."""
    started: list[Backend] = []

    def start(name: str, *, status: int = 200, delay: float = 0.0, body: bytes = b"") -> Backend:
        b = Backend(name, Behaviour(status=status, delay=delay, body=body)).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def subsets_config(v1: str, v2: str, http: str, hosts: str = "[reviews]") -> str:
    """A `reviews` service with subsets v1 and v2 at real backends, and one virtual
    service whose `http:` list is given as YAML (indented by 6)."""
    return f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews:
    endpoints:
      - {{address: {v1}, labels: {{version: v1}}}}
      - {{address: {v2}, labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
virtualServices:
  - name: reviews
    hosts: {hosts}
    http:
{http}"""


def settle(proxy: Proxy, timeout: float = 15.0) -> MirrorStats:
    """The only mirror's stats once no copy is in flight (bounded: copies time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [mirror] = proxy.stats()["mirrors"]
        if mirror["in_flight"] == 0:
            return mirror
        time.sleep(0.02)
    raise AssertionError("mirror copies still in flight")


def most_connect_attempts(elapsed: float) -> int:
    """Connect attempts a refusing mirror endpoint can see in `elapsed` seconds: the first,
    then one probe each time the back-off (250 ms, doubling; `native/src/upstream/outlier.rs`) runs
    out, plus two copies that may already be on their way when the first refusal lands."""
    return 1 + int(math.log2(elapsed / 0.25 + 1)) + 2


def seed_config(
    v1: str,
    v2: str,
    *,
    mirror: str | None = "mirrorPercentage: {value: 100.0}",
    listen: str = "127.0.0.1:0",
    route_extra: str = "",
) -> str:
    """The seed example (DESIGN.md's native routes.yaml) pointed at real backends."""
    mirror_lines = (
        f"""
        mirror: {{host: reviews, subset: v2}}
        {mirror}"""
        if mirror is not None
        else ""
    )
    return f"""
listeners:
  - address: {listen}
    host: reviews
services:
  reviews:
    endpoints:
      - {{address: {v1}, labels: {{version: v1}}}}
      - {{address: {v2}, labels: {{version: v2}}}}
    subsets:
      v1: {{version: v1}}
      v2: {{version: v2}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route:
          - destination: {{host: reviews, subset: v1}}{mirror_lines}{route_extra}
"""
