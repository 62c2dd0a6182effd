"""Comparison off, on for 1% of the copies (the intended use: a sample is enough to see a
difference), and on for every copy, with every request mirrored. Users' latency and
throughput should not move beyond noise; the difference in the proxy's CPU per request,
divided by the share compared, is the cost of one compared request (capture in the core,
queue, drain and diff in Python off the request path).

The control plane diffs at most 1,000 pairs a second (`--compare-max-rate`), so under
wrk's flood with every copy compared most pairs are skipped at the core's full queue
(counted); the 100% case shows what capturing every answer costs the data plane."""

from __future__ import annotations

import pytest
from measure import RunCase, Scenario

OFF = Scenario("compare-off", "100% mirror, compare off", "Every request copied to v2.")
ONE = Scenario(
    "compare-1",
    "100% mirror, compare on (1%)",
    "Every request copied to v2; 1% of the copies' answers compared with the primary's.",
    compare=1.0,
)
ALL = Scenario(
    "compare-100",
    "100% mirror, compare on (100%)",
    "Every request copied to v2 and every answer captured for comparison (past the "
    "comparator's rate the pairs are skipped at the core's queue, counted).",
    compare=100.0,
)

#: Kept between the cases of one run, to report the differences.
_CPU: dict[str, float] = {}


@pytest.mark.parametrize("scenario", [OFF, ONE, ALL], ids=lambda s: s.key)
def test_compare(run_case: RunCase, scenario: Scenario) -> None:
    figures = run_case(scenario, "pymirror")
    assert figures["wrk_errors"] == 0 and figures["open_errors"] == 0, "users saw errors"
    assert figures["unfinished"] == 0, "requests left unanswered at a rate below the knee"
    assert abs(figures["copy_share"] - 1.0) < 0.05, figures["copy_share"]
    _CPU[scenario.key] = figures["cpu_us_per_req"]
    if "compare-off" in _CPU and scenario.compare:
        extra = _CPU[scenario.key] - _CPU["compare-off"]
        print(f"\n{scenario.key}: CPU per request {extra:+.1f} us against compare off")
