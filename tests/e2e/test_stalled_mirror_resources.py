"""A mirror that accepts connections and never reads, under 256 KiB POSTs copied at 100%:
every user gets 200, the proxy's peak memory stays bounded, and its file descriptors come
back to their baseline once the copies' timeout has passed."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backend import Stall
from support.load import Load, fetch, poll
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

REQUESTS = 1500
BODY = b"b" * (256 * 1024)
MIRROR_TIMEOUT = 2.0  # seconds
#: Peak RSS of `pymirror run` (VmHWM). Measured at ~100 MiB (56 MiB idle) on this workload;
#: the bound leaves room for allocators on bigger machines while catching unbounded copy
#: buffering (1,500 bodies are 375 MiB).
RSS_BOUND_MIB = 300
#: Descriptors allowed above the baseline once copies are gone, not counting the idle
#: keep-alive connections to the primary, which its pool keeps for a minute.
FD_MARGIN = 4
#: Those idle connections to the primary: bounded (measured: ~60 for 4 clients).
PRIMARY_POOL_BOUND = 256


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockets_to(pid: int, port: int) -> int:
    """The process's TCP sockets connected to 127.0.0.1:`port` (any state)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes and int(fields[2].split(":")[1], 16) == port:
            count += 1
    return count


@pytest.fixture
def stall() -> Iterator[Stall]:
    """The stalled mirror, stopped (its held connections closed) whatever the test did."""
    s = Stall().start()
    try:
        yield s
    finally:
        s.stop()


def test_stalled_mirror_bounds_memory_and_releases_descriptors(
    backend, stall: Stall, tmp_path: Path
) -> None:
    v1 = backend("v1")
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"""
listeners: [{{address: "127.0.0.1:0", host: reviews}}]
services:
  reviews: {{endpoints: [{{address: {v1.address}}}]}}
  shadow: {{endpoints: [{{address: {stall.address}}}]}}
mirrorDefaults: {{timeout: {MIRROR_TIMEOUT:g}s}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews}}}}]
        mirror: {{host: shadow}}
""")
    proc = PymirrorProcess(routes)
    pid = proc.proc.pid
    load = None
    try:
        admin = proc.admin_address
        baseline = fds(pid)
        rss_before = status_kib(pid, "VmRSS")
        started = time.monotonic()
        load = Load(
            proc.address, total=REQUESTS, seconds=60, connections=4, method="POST", body=BODY
        ).start()
        load.wait_for(REQUESTS, timeout=60)
        load.stop()
        took = time.monotonic() - started
        peak_fds = fds(pid)
        peak_kib = status_kib(pid, "VmHWM")
        v1_port, stall_port = (int(b.address.rsplit(":", 1)[1]) for b in (v1, stall))

        def settled() -> bool:
            # Every copy is abandoned MIRROR_TIMEOUT after it started: its socket closes.
            return (
                sockets_to(pid, stall_port) == 0
                and fds(pid) - sockets_to(pid, v1_port) <= baseline + FD_MARGIN
            )

        poll(settled, MIRROR_TIMEOUT + 10, "descriptors back to the baseline")
        after, pooled = fds(pid), sockets_to(pid, v1_port)
        [mirror] = json.loads(fetch(admin, "/stats")[1])["mirrors"]
        accepted = stall.accepted
    finally:
        if load is not None:
            load.stop()
        proc.signal(signal.SIGTERM)
        code = proc.wait()
        proc.stop()
    print(
        f"\nstalled mirror: {sum(load.results.values())} POSTs of 256 KiB in {took:.1f}s "
        f"{dict(load.results)}; stall accepted {accepted}, copies timed out "
        f"{mirror['timed_out']}, dropped {mirror['dropped']['in_flight_limit']} (in-flight limit); "
        f"RSS before {rss_before / 1024:.0f} MiB, peak (VmHWM) {peak_kib / 1024:.0f} MiB; "
        f"fds baseline {baseline}, at end of load {peak_fds}, after timeout {after} "
        f"(of which {pooled} idle keep-alive connections to the primary)"
    )

    assert load.errors == []
    assert dict(load.results) == {200: REQUESTS}
    assert peak_kib < RSS_BOUND_MIB * 1024
    assert mirror["in_flight"] == 0 and mirror["answered"] == 0
    assert mirror["timed_out"] + sum(mirror["dropped"].values()) == REQUESTS
    assert after - pooled <= baseline + FD_MARGIN
    assert pooled <= PRIMARY_POOL_BOUND
    assert code == 0
