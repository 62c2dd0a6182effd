"""Cores of its own for the proxy under test (the HTTP/2 and gRPC scenarios), on request.

By default the load generator, the backends and the proxy share every core, as in the
other scenarios. Throughput then measures them as much as the proxy: with h2load and two
backends spending about 20-26 us of CPU per request on a 2-core machine, no proxy,
however cheap, could show more than (its peer's CPU + theirs) / theirs against another.
With `PYMIRROR_BENCH_PIN=1` the proxy runs on the upper half of the cores, one worker per
core, and h2load and the backends on the lower half; every peer alike. On two cores that
half is one core for h2load and both backends, which can then be the limit instead:
useful on a larger machine, or read with that in mind.

The rounds of issue 19's CPU targets (scenarios/test_rounds.py) run once shared and once
split this way whatever the variable says (`halves`): the split takes away two of the
scheduler's parts in a figure (a worker preempted by the load it wakes on its own core,
and nginx's workers racing for connections), not the machine's own drift."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from peers.route import WORKERS


def split() -> tuple[set[int], set[int]] | None:
    """(the proxy's cores, the load's and backends' cores), or None: shared."""
    if os.environ.get("PYMIRROR_BENCH_PIN", "0") != "1":
        return None
    return halves()


def halves() -> tuple[set[int], set[int]] | None:
    """The upper half of this process' cores for the proxy, the lower half for the load
    and backends; None with fewer than two cores."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    half = len(cores) // 2
    return set(cores[half:]), set(cores[:half])


def proxy_workers() -> int:
    """Worker threads (or processes) per proxy: one per core it runs on."""
    cores = split()
    return len(cores[0]) if cores else WORKERS


def pin(pid: int, cpus: set[int] | None) -> None:
    """Every thread of `pid` and of its descendants on `cpus` (no-op for None). Threads
    started later inherit their creator's cores."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)
        children = (task / "children").read_text().split()
        for child in children:
            pin(int(child), cpus)


@contextmanager
def pinned(pids: Iterable[int], cpus: set[int]) -> Iterator[None]:
    """`pids` (and their threads and children) on `cpus` for the block, then back on every
    core this process may use: for peers that outlive the block (the session's backends)."""
    pids = list(pids)
    for pid in pids:
        pin(pid, cpus)
    try:
        yield
    finally:
        for pid in pids:
            pin(pid, os.sched_getaffinity(0))


def describe() -> str:
    """The split, as the report states it."""
    cores = split()
    if cores is None:
        return "the proxy, h2load and the backends share all cores"
    proxy, rest = cores
    return (
        f"the proxy on core(s) {_list(proxy)} with {len(proxy)} worker(s), h2load and "
        f"the backends on core(s) {_list(rest)}"
    )


def _list(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus)))
