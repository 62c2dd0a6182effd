"""Comparison on and off, every request mirrored and (on) every copy's answer compared
with the primary's: users' latency and throughput should not move beyond noise, and
the difference in the proxy's CPU per request is the cost of one compared request
(capture in the core, queue, drain and diff in Python off the request path).

Under wrk's flood the control plane cannot diff every pair: the bounded queue fills and
the rest are skipped (counted), so the figure there is per request, a lower bound per
compared pair; at the open loop's fixed rate every pair is compared. A first 2 s smoke
run (16 cores) read 27.9k rps off vs 18.4k on under wrk (the diffing competes with the
data plane for CPU), p50/p99 at 1,000 rps 0.31/1.77 ms off vs 0.21/1.88 ms on."""

from __future__ import annotations

import pytest
from measure import RunCase, Scenario

OFF = Scenario("compare-off", "100% mirror, compare off", "Every request copied to v2.")
ON = Scenario(
    "compare-on",
    "100% mirror, compare on (100%)",
    "Every request copied to v2 and both answers compared; CPU/request minus compare-off's "
    "is the CPU of one compared request.",
    compare=True,
)

#: Kept between the two cases of one run, to report the difference.
_CPU: dict[str, float] = {}


@pytest.mark.parametrize("scenario", [OFF, ON], ids=["compare-off", "compare-on"])
def test_compare(run_case: RunCase, scenario: Scenario) -> None:
    figures = run_case(scenario, "pymirror")
    assert figures["wrk_errors"] == 0 and figures["open_errors"] == 0, "users saw errors"
    assert figures["unfinished"] == 0, "requests left unanswered at a rate below the knee"
    assert abs(figures["copy_share"] - 1.0) < 0.05, figures["copy_share"]
    _CPU[scenario.key] = figures["cpu_us_per_req"]
    if len(_CPU) == 2:
        extra = _CPU["compare-on"] - _CPU["compare-off"]
        print(f"\nCPU per compared request: {extra:.1f} us (on - off, whole process)")
