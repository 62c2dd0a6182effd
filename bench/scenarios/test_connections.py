"""1,000 keep-alive client connections at 100% mirror: wrk keeps all of them busy for
throughput; the open loop spreads its fixed rate over 1,000 open connections, so most
sit idle between requests as a real user population's do."""

from __future__ import annotations

import pytest
from measure import RunCase, Scenario

MANY = Scenario(
    "conns-1000",
    "1,000 keep-alive connections, 100% mirror",
    "wrk and the open loop each hold 1,000 client connections open.",
    connections=1000,
    open_connections=1000,
)
PEERS = ("direct", "pymirror", "nginx", "envoy")


@pytest.mark.parametrize("peer", PEERS)
def test_many_connections(run_case: RunCase, peer: str) -> None:
    figures = run_case(MANY, peer)
    assert figures["wrk_errors"] == 0 and figures["open_errors"] == 0, "users saw errors"
