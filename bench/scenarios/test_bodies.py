"""1 MiB POST bodies at 100%: the body is streamed to v1 and teed to v2 (nginx reads it
whole first, into a temporary file past its 16 KiB buffer; Envoy buffers it for the
shadow). The copy must carry the whole body (v2's $request_length)."""

from __future__ import annotations

import pytest
from measure import RunCase, Scenario

BODIES = Scenario(
    "post-1mib",
    "1 MiB POST bodies, 100% mirror",
    "Every request carries a 1 MiB body, copied whole to v2.",
    body=1 << 20,
    rate=100.0,
    open_connections=16,
)
PEERS = ("direct", "pymirror", "nginx", "envoy")


@pytest.mark.parametrize("peer", PEERS)
def test_large_bodies(run_case: RunCase, peer: str) -> None:
    figures = run_case(BODIES, peer)
    assert figures["wrk_errors"] == 0 and figures["open_errors"] == 0, "users saw errors"
    if "copy_share" in figures:
        assert figures["copy_share"] > 0.95, "copies of large bodies went missing"
