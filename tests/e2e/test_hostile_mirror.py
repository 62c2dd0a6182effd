"""A hostile mirror costs users nothing: whatever v2 answers (a huge body, an endless one,
endless headers, a body cut short by a reset), each copy reads a bounded amount, the
copy's outcome says what happened, and the proxy is idle again once users stop.

The bound is checked deterministically on the proxy's own count of the bytes it read from
mirrors' answers (`answer_bytes`): a copy stops reading once its body passes the drain
limit, and one read hands over at most the mirror's read buffer (`FRAME`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import seed_config, settle
from support.client import Client
from support.hostile import (
    Connection,
    HostilePeer,
    endless_chunked,
    endless_headers,
    healthy,
    healthy_sized,
    huge_body,
    short_body_reset,
)

from pymirror import Proxy
from pymirror.engine import MirrorStats, ServerOptions

pytestmark = pytest.mark.e2e

N = 20
#: `mirrorDefaults.maxDrainBytes`' default.
DRAIN = 256 * 1024
#: The most one read of a mirror's answer hands over: its read buffer is bounded at 64 KiB,
#: but hyper reads into the buffer's whole spare capacity, which its allocation may double.
FRAME = 128 * 1024


def users(proxy: Proxy, n: int = N) -> list[tuple[int, bytes]]:
    with Client(proxy.addresses[0]) as client:
        return [(r.status, r.body) for r in (client.request("GET", f"/{i}") for i in range(n))]


@dataclass(frozen=True)
class Run:
    replies: list[tuple[int, bytes]]
    mirror: MirrorStats
    connections: list[Connection]
    """The hostile mirror's connections, once each copy's has ended."""


def mirrored_to(peer: HostilePeer, extra: str = "") -> Run:
    """`N` sequential keep-alive GETs through a proxy serving a healthy v1 and mirroring
    every request to `peer`."""
    with (
        healthy(b"v1") as v1,
        peer as v2,
        Proxy(seed_config(v1.address, v2.address) + extra) as proxy,
    ):
        replies = users(proxy)
        mirror = settle(proxy)
        return Run(replies, mirror, v2.wait_ended(N))


def test_an_answer_declaring_more_than_the_drain_limit_is_cut_at_its_head() -> None:
    """`Content-Length: 1073741824`, then 64 KiB writes: the copy is cut as soon as its
    head says the body is past the drain limit; not one body byte is read, and the
    connection is closed (so the mirror's writes stop)."""
    run = mirrored_to(huge_body())
    assert set(run.replies) == {(200, b"v1")}
    assert (run.mirror["cut"], run.mirror["answered"], run.mirror["failed"]) == (N, 0, 0)
    assert run.mirror["responses"] == {"200": N}
    assert run.mirror["answer_bytes"] == 0
    assert len(run.connections) == N
    assert all(c.closed_by_peer for c in run.connections), [c.end for c in run.connections]


def test_an_endless_answer_is_read_to_the_drain_limit_then_cut() -> None:
    run = mirrored_to(endless_chunked())
    assert set(run.replies) == {(200, b"v1")}
    assert (run.mirror["cut"], run.mirror["answered"], run.mirror["failed"]) == (N, 0, 0)
    assert run.mirror["responses"] == {"200": N}
    # Each copy read past the drain limit, then stopped within one read.
    read = run.mirror["answer_bytes"]
    assert N * DRAIN < read <= N * (DRAIN + FRAME), read
    # And closed its connection: none is left for the pool.
    assert len(run.connections) == N
    assert all(c.closed_by_peer for c in run.connections), [c.end for c in run.connections]


def test_a_small_drain_limit_cuts_sooner() -> None:
    run = mirrored_to(endless_chunked(), "mirrorDefaults: {maxDrainBytes: 8KiB}\n")
    assert set(run.replies) == {(200, b"v1")}
    assert run.mirror["cut"] == N
    assert run.mirror["answer_bytes"] <= N * (8 * 1024 + FRAME)


def test_endless_headers_fail_the_copy_at_the_head_limit() -> None:
    """The proxy stops reading an answer head at 64 KiB (as it does a request head): the
    copy fails (`protocol`) and its connection is closed; no body byte is counted."""
    run = mirrored_to(endless_headers())
    assert set(run.replies) == {(200, b"v1")}
    assert (run.mirror["failed"], run.mirror["answered"], run.mirror["cut"]) == (N, 0, 0)
    assert run.mirror["failures"]["protocol"] == N
    assert run.mirror["answer_bytes"] == 0
    assert all(c.closed_by_peer for c in run.connections)


def test_a_body_cut_short_by_a_reset_is_failed_not_answered() -> None:
    """`Content-Length: 100000`, 1,000 bytes, then a reset: the copy is `failed`
    (`body_incomplete`), never `answered`."""
    run = mirrored_to(short_body_reset())
    assert set(run.replies) == {(200, b"v1")}
    assert (run.mirror["failed"], run.mirror["answered"]) == (N, 0)
    assert run.mirror["failures"]["body_incomplete"] == N
    assert run.mirror["answer_bytes"] <= N * 1000


def worker_cpu_seconds() -> float:
    """CPU time of this process' pymirror data-plane threads, the workers, which run the
    copies too (the hostile peers' threads are not counted)."""
    ticks = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            # Thread names are cut at 15 characters.
            if not (task / "comm").read_text().startswith("pymirror-worke"):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("peer", [huge_body, endless_chunked], ids=lambda p: p.__name__)
def test_the_proxy_is_idle_again_within_a_second_of_the_last_user(peer) -> None:
    """Before the drain limit, each copy was read for the mirror timeout (10 s) and the
    workers spent 75-93% of a core after users stopped. Measured over the second that
    starts one second after the last user answer: at most 10% of a core."""
    with (
        healthy(b"v1") as v1,
        peer() as v2,
        Proxy(seed_config(v1.address, v2.address)) as proxy,
    ):
        replies = users(proxy, 50)
        last_answer = time.monotonic()
        time.sleep(max(0.0, last_answer + 1.0 - time.monotonic()))
        before = worker_cpu_seconds()
        time.sleep(1.0)
        spent = worker_cpu_seconds() - before
        mirror = settle(proxy)
    assert set(replies) == {(200, b"v1")}
    assert mirror["cut"] == 50
    assert spent <= 0.1, f"the workers spent {spent:.2f} s of CPU in the second after"


COMPARED = """
      - route:
          - destination: {{host: reviews, subset: v1}}
        mirror:
          host: reviews
          subset: v2
          compare: {{percentage: {{value: 100}}, maxBodyBytes: {limit}}}
"""


def compare_config(v1: str, v2: str, limit: int) -> str:
    return seed_config(v1, v2, mirror=None).split("    http:\n")[0] + (
        "    http:" + COMPARED.format(limit=limit)
    )


def test_a_compared_copy_reads_at_most_its_capture_limit_and_is_marked_truncated() -> None:
    limit = 16 * 1024
    with (
        healthy_sized(100_000, fill=b"x") as v1,
        huge_body() as v2,
        Proxy(compare_config(v1.address, v2.address, limit)) as proxy,
    ):
        replies = users(proxy)
        mirror = settle(proxy)
        compared = proxy.compare_pending()
        [endpoint] = proxy.comparator.store.to_json()
    assert {s for s, _ in replies} == {200}
    assert mirror["cut"] == N
    # The compare limit, not the drain limit, bounds a compared copy.
    assert mirror["answer_bytes"] <= N * (limit + FRAME)
    assert compared == N
    assert endpoint["truncated"] == N
    # Both bodies are x...: their kept prefixes agree, so no body difference is
    # reported; only headers the two peers send differently (length, type) do.
    assert endpoint["results"] == {"header_mismatch": N}, endpoint["results"]
    assert "body" not in {f["field"] for f in endpoint["fields"]}


def test_compared_pairs_stay_within_the_byte_budget() -> None:
    """60 KiB answers on both sides, compared at 100%, with nothing draining the queue: the
    pairs held stop at the budget; the rest are skipped and counted, and the bytes come
    back when the comparator takes the pairs."""
    budget = 1 << 20
    body = 60 * 1024
    options = ServerOptions(compare_buffer_budget=budget)
    with healthy_sized(body) as v1, healthy_sized(body) as v2:
        config = compare_config(v1.address, v2.address, 64 * 1024)
        with Proxy(config, options=options) as proxy, Client(proxy.addresses[0]) as client:
            held = []
            for i in range(40):
                assert client.request("GET", f"/{i}").status == 200
                held.append(proxy.stats()["compare_buffer_held_bytes"])
            mirror = settle(proxy)
            queued = mirror["compare"]["queued"]
            skipped = mirror["compare"]["skipped"]["buffer_budget"]
            held_before = proxy.stats()["compare_buffer_held_bytes"]
            proxy.compare_pending()
            held_after = proxy.stats()["compare_buffer_held_bytes"]
    assert max(held) <= budget, held
    # A pair holds two 60 KiB bodies: about 8 fit in 1 MiB, never all 40.
    assert 4 <= queued <= budget // (2 * body), (queued, skipped)
    assert queued + skipped == 40
    assert held_before >= queued * 2 * body
    assert held_after == 0
