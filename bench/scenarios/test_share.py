"""Mirroring 0%, 20% and 100% of requests to a healthy v2: what a copy costs, and
whether the cost grows linearly with the share. 0% is each proxy without any mirror
configured (nginx, Envoy and HAProxy as plain reverse proxies; HAProxy has no mirror, so
it runs at 0% only). 1% and 10% are in test_plain_path.py."""

from __future__ import annotations

import pytest
from measure import RunCase, Scenario

PLAIN = Scenario(
    "plain",
    "0% mirror (plain reverse proxy)",
    "Each proxy with no mirror configured; direct is the client talking to v1 itself.",
    mirror=None,
)
SHARE_20 = Scenario(
    "mirror-20", "20% mirror", "A sampled fifth of requests copied to v2.", percent=20
)
SHARE_100 = Scenario("mirror-100", "100% mirror", "Every request copied to a healthy v2.")

CASES = [(PLAIN, "direct"), (PLAIN, "haproxy")] + [
    (scenario, peer)
    for scenario in (PLAIN, SHARE_20, SHARE_100)
    for peer in ("pymirror", "nginx", "envoy")
]


@pytest.mark.parametrize(("scenario", "peer"), CASES, ids=[f"{s.key}-{p}" for s, p in CASES])
def test_share(run_case: RunCase, scenario: Scenario, peer: str) -> None:
    figures = run_case(scenario, peer)
    assert figures["wrk_errors"] == 0 and figures["open_errors"] == 0, "users saw errors"
    assert figures["unfinished"] == 0, "requests left unanswered at a rate below the knee"
    if "copy_share" in figures:  # every copy asked for reached v2, within sampling noise
        assert abs(figures["copy_share"] - scenario.percent / 100) < 0.05, figures["copy_share"]
