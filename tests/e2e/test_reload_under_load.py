"""SIGHUP reloads of `pymirror run` while keep-alive clients keep sending: no request
fails, a broken config is refused (and counted) while the last good one keeps serving,
and copies follow the mirror to where the new config sends them."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from support.load import Load, metric, poll
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

TOTAL = 3000  # requests, at most
SECONDS = 10.0  # of load, at most


def config(v1: str, v2: str, v2b: str, mirror: str, percentage: str = "100") -> str:
    return f"""
listeners: [{{address: "127.0.0.1:0", host: reviews}}]
services:
  reviews:
    endpoints:
      - {{address: {v1}, labels: {{version: v1}}}}
      - {{address: {v2}, labels: {{version: v2}}}}
      - {{address: {v2b}, labels: {{version: v2b}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}, v2b: {{version: v2b}}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews, subset: v1}}}}]
        mirror: {{host: reviews, subset: {mirror}}}
        mirrorPercentage: {{value: {percentage}}}
"""


def test_reloads_under_load_lose_no_request(backend, tmp_path: Path) -> None:
    v1, v2, v2b = backend("v1"), backend("v2"), backend("v2b")
    routes = tmp_path / "routes.yaml"

    def write(mirror: str, percentage: str = "100") -> None:
        routes.write_text(config(v1.address, v2.address, v2b.address, mirror, percentage))

    write("v2")
    proc = PymirrorProcess(routes)
    load = None
    try:
        admin = proc.admin_address

        def reload(count: str, expected: float) -> None:
            proc.signal(signal.SIGHUP)
            poll(
                lambda: metric(admin, "pymirror_config_reloads_total", result=count) >= expected,
                10,
                f"reload {count} #{expected:g}",
            )

        load = Load(proc.address, total=TOTAL, seconds=SECONDS, connections=4).start()
        # Reloads at request-count milestones, so each one lands in the middle of the load.
        plan = [("v2b", 200), ("v2", 450), ("v2b", 700)]
        for good, (mirror, at) in enumerate(plan, start=1):
            assert load.wait_for(at) >= at, f"load ended early: {load.results}"
            write(mirror)
            reload("success", good)
        # The last good config mirrors to v2b: copies arrive there from now on.
        since = len(v2b.seen)
        poll(lambda: len(v2b.seen) >= since + 50, 10, "copies at v2b after the reload")

        assert load.wait_for(900) >= 900, f"load ended early: {load.results}"
        write("v2", percentage="1000")  # broken: a percentage past 100
        reload("failure", 1)
        proc.wait_for(r"reload refused, still serving version")
        proc.wait_for(r"routes\.yaml:\d+:\d+: .*mirrorPercentage\.value")
        # Still the last good config: copies go on reaching v2b, none reaches v2.
        at_v2 = len(v2.seen)
        since = len(v2b.seen)
        poll(lambda: len(v2b.seen) >= since + 50, 10, "copies at v2b after the refused reload")
        assert load.running, "the load ended before the refused reload was checked"
        load.wait_for(TOTAL)
        load.stop()
        assert len(v2.seen) == at_v2
        assert metric(admin, "pymirror_config_reloads_total", result="success") == len(plan)
        assert metric(admin, "pymirror_config_reloads_total", result="failure") == 1
    finally:
        if load is not None:
            load.stop()
        proc.signal(signal.SIGTERM)
        code = proc.wait()
        proc.stop()
    done = sum(load.results.values())
    print(f"reload under load: {done} requests, {dict(load.results)}")
    assert load.errors == []
    assert set(load.results) == {200}
    assert done >= 1500
    assert code == 0
