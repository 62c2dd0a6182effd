"""A hostile v2 at 100% (issue 14): does it cost users anything, and does the proxy go
back to idle once users stop? pymirror (`pymirror run`) in front of a healthy primary,
with every request copied to a v2 that answers each copy with a huge body
(`Content-Length: 1073741824`, then 64 KiB writes), an endless chunked body, or endless
header lines, and to a healthy v2 as the baseline, all in the same run. The peers are the
ones of tests/support/hostile.py, each in a process of its own (bench/peers/hostile.py);
the primary answers a small fixed body.

Per v2: one user sends sequential keep-alive GETs on one connection (10,000, so that p99
is the 100th worst and not a handful of scheduler hiccups; 300 in the smoke run); each
must be a 200 with the primary's body (asserted). Figures: the user's p50/p99/p99.9, the
proxy's CPU while users ran and in the first and second second after they stopped
(user+system time from /proc, as a share of one core), what the v2 peer wrote and on how
many connections the proxy closed it, the copies' outcomes from the proxy's /stats.
Issue 14's target: user p99 within 1.2x + 0.5 ms of the healthy-v2 p99, CPU back to idle
(<= 5% of a core) within a second, i.e. in the half-second before the 1 s mark (the first
half-second is when the copies in flight as users stop finish); reported, not asserted
(noise).

And a compare flood: every request copied, primary and v2 both answering 60 KiB bodies,
8 keep-alive connections back to back for twice PYMIRROR_BENCH_SECONDS, first with compare
off (the baseline) then with every pair compared; every answer must be the primary's body
(asserted). Figures: each run's peak RSS growth over its resident set once warm, and the
compared run's peak over the baseline's (what comparing holds) next to the compare byte
budget (`--compare-buffer-budget`, 64 MiB, passed when the build has the flag)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from load.keepalive import FloodResult, KeepAliveClient, flood
from measure import Benchmark, Figures, Record, Scenario
from peers.hostile import SpawnedPeer, sized_body, spawn
from peers.process import Process, cpu_seconds, free_port, peak_rss_bytes, rss_bytes
from peers.pymirror import start_pymirror
from peers.route import Route

SECONDS = float(os.environ.get("PYMIRROR_BENCH_SECONDS", "5"))
#: CI's smoke run (conftest's FULL_RUN_SECONDS is 3): fewer requests, same checks.
SMOKE = SECONDS < 3.0
USERS = 300 if SMOKE else 10_000
WARMUP = 20
PRIMARY_BODY = b"v1 primary\n"
MIRROR_BODY = b"v2 healthy\n"
#: CPUs the v2 peer is pinned to (e.g. "1" or "8-15"), as if on a host of its own: a
#: hostile v2 writing GB into its sockets otherwise takes the cores the proxy and users
#: share on a small machine. Unset: not pinned. Run pytest itself under `taskset` on the
#: other CPUs so the proxy and the users keep off them.
V2_CPUS = os.environ.get("PYMIRROR_BENCH_V2_CPUS", "")
#: How the v2 peer is scheduled: "idle" (SCHED_IDLE, the default), so that on a machine
#: too small to give v2 cores of its own the CPU it burns writing into its sockets (most
#: of a core for the hostile ones) yields to the proxy, the primary and the users, as it
#: would on a host of its own; a nice value ("19"), whose time slice a waking user may
#: still wait out; or "0", v2 competing as an equal (the figures then include v2's own
#: CPU). What the proxy spends on copies is not discounted: its copies run on its own
#: idle-class threads, as they do in production.
V2_PRIORITY = os.environ.get("PYMIRROR_BENCH_V2_PRIORITY", "idle")

#: The healthy v2 first: the baseline the hostile rows are compared with.
MIRRORS = ("healthy", "huge_body", "endless_chunked", "endless_headers")
#: Issue 14's target for user p99 against the healthy-v2 baseline: factor and slack.
P99_FACTOR, P99_SLACK_MS = 1.2, 0.5
#: "Back to idle": at most this share of one core in the second after users stop.
IDLE_SHARE = 0.05
FLOOD_BODY = 60 * 1024
FLOOD_CONNECTIONS = 8
FLOOD_SECONDS = SECONDS if SMOKE else 2 * SECONDS
FLOOD_WARMUP = 200
#: The compare byte budget passed (and documented as the default): MiB.
COMPARE_BUDGET_MIB = 64

HOSTILE = Scenario(
    "hostile-mirror",
    "100% mirror, v2 hostile",
    f"Every request copied to a v2 that answers a huge body, an endless chunked body or "
    f"endless headers, or a healthy v2 (the baseline); one user, {USERS:,} sequential "
    "keep-alive GETs on one connection.",
    mirror=None,
    rate=0.0,
)
FLOOD = Scenario(
    "compare-flood",
    "Compare flood, 60 KiB answers",
    f"Every request copied and compared; primary and v2 answer {FLOOD_BODY // 1024} KiB; "
    f"{FLOOD_CONNECTIONS} keep-alive connections back to back for {FLOOD_SECONDS:g} s.",
    mirror=None,
    rate=0.0,
    compare=100.0,
)

#: The healthy-v2 p99 of this run, kept for the hostile rows.
_BASELINE: dict[str, float] = {}


@pytest.fixture(scope="module")
def primary() -> Iterator[SpawnedPeer]:
    """The healthy primary (v1), answering PRIMARY_BODY, in a process of its own."""
    with spawn("healthy", body=PRIMARY_BODY) as peer:
        yield peer


@cache
def has_budget_flag() -> bool:
    """Whether this build's `pymirror run` takes `--compare-buffer-budget`."""
    out = subprocess.run(
        [sys.executable, "-m", "pymirror.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "--compare-buffer-budget" in out.stdout


def admin_stats(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """The proxy's /stats document (retried while the admin endpoint starts)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/stats")
            stats: dict[str, Any] = json.loads(conn.getresponse().read())
            return stats
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


def place(pid: int) -> None:
    """Pins and deprioritises every thread of the v2 peer (`V2_CPUS`, `V2_PRIORITY`);
    threads it starts later inherit both from the thread that starts them."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        if V2_CPUS:
            os.sched_setaffinity(tid, cpu_list(V2_CPUS))
        if V2_PRIORITY == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif int(V2_PRIORITY):
            os.setpriority(os.PRIO_PROCESS, tid, int(V2_PRIORITY))


def cpu_list(spec: str) -> set[int]:
    """`"1"`, `"8-15"`, `"0,2-3"` as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def percentile_ms(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (seconds), in ms."""
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1e3


def wait_for(check: Any, timeout: float, what: str) -> None:
    """Waits until `check()` holds; fails with `what` past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def users(client: KeepAliveClient, n: int) -> tuple[list[float], list[str]]:
    """`n` sequential GETs on the client's one connection: each one's seconds, and a
    description of each answer that was not the primary's 200."""
    latencies, wrong = [], []
    for i in range(n):
        started = time.perf_counter()
        status, body = client.get(f"/user/{i}")
        latencies.append(time.perf_counter() - started)
        if (status, body) != (200, PRIMARY_BODY):
            wrong.append(f"#{i}: {status} {body[:60]!r}")
    return latencies, wrong


def cpu_after(pid: int, windows: tuple[float, ...] = (0.5, 0.5, 1.0)) -> list[float]:
    """The process's CPU time in each of the next windows (seconds, back to back), as a
    share of one core: by default 0-0.5 s, 0.5-1 s and 1-2 s after users stopped."""
    shares = []
    for seconds in windows:
        started, cpu = time.monotonic(), cpu_seconds(pid)
        time.sleep(seconds)
        shares.append((cpu_seconds(pid) - cpu) / (time.monotonic() - started))
    return shares


def copies(stats: dict[str, Any]) -> Figures:
    """The copies' outcomes, summed over the mirrors of the proxy's /stats."""
    mirrors = stats.get("mirrors", [])
    dropped: dict[str, int] = {}
    for m in mirrors:
        for reason, count in m.get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + count
    opened = sum(
        c.get("opened_total", 0)
        for c in stats.get("upstream_connections", [])
        if c.get("role") == "mirror"
    )
    figures: Figures = {
        f"copies_{k}": sum(m.get(k, 0) for m in mirrors)
        for k in ("answered", "failed", "timed_out", "in_flight")
    }
    figures["copies_cut"] = sum(m.get("cut", 0) for m in mirrors)  # once the core has it
    figures["copies_dropped"] = dropped
    figures["mirror_connections_opened"] = opened
    return figures


def peer_figures(stats: dict[str, Any]) -> Figures:
    """What the v2 peer saw: connections, bytes written, connections the proxy closed."""
    conns = stats["connections"]
    return {
        "v2_requests": stats["requests"],
        "v2_connections": len(conns),
        "v2_closed_by_proxy": stats["closed_by_peer"],
        "v2_open": sum(1 for c in conns if c["end"] == "open"),
        "v2_written_mib": stats["bytes_written"] / 2**20,
        "v2_max_per_connection_mib": max((c["bytes_written"] for c in conns), default=0) / 2**20,
    }


@pytest.mark.parametrize("mirror", MIRRORS)
def test_hostile_mirror(
    primary: SpawnedPeer, benchmark: Benchmark, record: Record, tmp_path: Path, mirror: str
) -> None:
    """One v2 behind pymirror at 100%: users must all get the primary's 200 (asserted);
    their latency and the proxy's CPU after they stop are measured and reported."""
    benchmark.group = HOSTILE.key
    v2 = spawn("healthy", body=MIRROR_BODY) if mirror == "healthy" else spawn(mirror)
    place(v2.pid)
    admin = f"127.0.0.1:{free_port()}"
    process: Process | None = None
    try:
        route = Route(primary.address, v2.address, 100.0)
        process = start_pymirror(route, tmp_path, "--admin", admin)
        pid = process.pid
        with KeepAliveClient(process.address) as client:
            # Correctness first: users get the primary's answer; copies reach v2.
            for i in range(WARMUP):
                assert client.get(f"/warm/{i}") == (200, PRIMARY_BODY)
            wait_for(lambda: v2.stats()["requests"] >= 1, 5.0, "no copy reached v2")

            cpu, started = cpu_seconds(pid), time.monotonic()
            cpu_v2 = cpu_seconds(v2.pid)
            latencies, wrong = benchmark.pedantic(
                lambda: users(client, USERS), rounds=1, iterations=1
            )
            users_seconds = time.monotonic() - started
            cpu_users = cpu_seconds(pid) - cpu
            cpu_v2 = cpu_seconds(v2.pid) - cpu_v2
        first_half, second_half, after_2s = cpu_after(pid)
        after_1s = (first_half + second_half) / 2
        stats = admin_stats(admin)
        rss = peak_rss_bytes(pid)
        if mirror == "healthy":
            # Every copy of the baseline is accounted for: it reached v2 and was
            # answered, or was dropped at admission (a v2 starved of CPU on a small
            # machine answers late, and copies past maxInFlight are dropped: counted).
            total = WARMUP + USERS

            def settled() -> bool:
                now = copies(admin_stats(admin))
                return now["copies_in_flight"] == 0 and v2.stats()["requests"] >= (
                    total - sum(now["copies_dropped"].values())
                )

            wait_for(settled, 10.0, f"copies missing at v2: {copies(admin_stats(admin))}")
            stats = admin_stats(admin)
            outcome = copies(stats)
            lost = total - outcome["copies_answered"] - sum(outcome["copies_dropped"].values())
            assert lost == 0 and outcome["copies_failed"] == 0, outcome
        seen = v2.stats()
    finally:
        if process is not None:
            process.stop()
        v2.stop()
    assert not wrong, f"{len(wrong)} users did not get the primary's 200: {wrong[:5]}"
    assert len(latencies) == USERS

    p99 = percentile_ms(latencies, 99)
    figures: Figures = {
        "requests": len(latencies),
        "p50_ms": percentile_ms(latencies, 50),
        "p90_ms": percentile_ms(latencies, 90),
        "p99_ms": p99,
        "p999_ms": percentile_ms(latencies, 99.9),
        "max_ms": percentile_ms(latencies, 100),
        "user_errors": len(wrong),
        "cpu_share_users": cpu_users / users_seconds,
        "cpu_us_per_req": cpu_users / USERS * 1e6,
        "cpu_share_after_1s": after_1s,
        "cpu_share_after_2s": after_2s,
        # The v2 peer shares the machine's cores: a peer writing at full speed takes CPU
        # from the proxy and the user too (once the proxy stops reading, it waits).
        "v2_cpu_share_users": cpu_v2 / users_seconds,
        "v2_priority": V2_PRIORITY,
        "v2_cpus": V2_CPUS or "shared",
        "cpu_share_half_to_1s": second_half,
        # Back to idle within a second: idle by the 1 s mark (its last half-second).
        "idle_within_1s": second_half <= IDLE_SHARE,
        "rss_mib": rss / 2**20,
        **copies(stats),
        **peer_figures(seen),
    }
    if mirror == "healthy":
        _BASELINE["p99_ms"] = p99
    elif "p99_ms" in _BASELINE:
        base = _BASELINE["p99_ms"]
        bound = P99_FACTOR * base + P99_SLACK_MS
        figures |= {
            "p99_vs_healthy": p99 / base,
            "p99_bound_ms": bound,
            "p99_within_target": p99 <= bound,
        }
    benchmark.extra_info.update(figures)
    record(HOSTILE, mirror, figures)
    print(
        f"\n{mirror}: p50 {figures['p50_ms']:.2f} ms, p99 {p99:.2f} ms, CPU while users "
        f"{figures['cpu_share_users']:.0%}, after 0-1 s {after_1s:.0%} "
        f"(0.5-1 s {second_half:.0%}), 1-2 s {after_2s:.0%} "
        f"of a core; v2 wrote {figures['v2_written_mib']:,.1f} MiB on "
        f"{figures['v2_connections']} connections"
    )


class _Sampler:
    """Polls the proxy's resident set (/proc), its compare queue depth and the bytes its
    compare budget holds (/stats) while a flood runs; keeps the largest of each."""

    def __init__(self, pid: int, admin: str) -> None:
        self.pid, self.admin = pid, admin
        self.rss_max = 0
        self.queue_max = 0
        self.held_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.rss_max = max(self.rss_max, rss_bytes(self.pid))
            try:
                stats = admin_stats(self.admin, timeout=0)
            except OSError:
                continue
            self.queue_max = max(self.queue_max, stats.get("compare_queue_depth", 0))
            self.held_max = max(self.held_max, stats.get("compare_buffer_held_bytes", 0))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


#: The flood's runs: copies only (compare off, the baseline), then copies compared.
FLOOD_RUNS = ("copies only", "copies compared")
#: The baseline run's peak RSS (bytes), kept for the compared run.
_FLOOD_BASELINE: dict[str, int] = {}


@pytest.mark.parametrize("run", FLOOD_RUNS)
def test_compare_flood(benchmark: Benchmark, record: Record, tmp_path: Path, run: str) -> None:
    """Every request copied, 60 KiB answers on both sides, flooded, once with compare off
    (the baseline: what the proxy holds for the traffic itself) and once with every pair
    compared: users get the primary's body (asserted); each run's RSS growth is measured,
    and the compared run's peak over the baseline's is set against the budget."""
    benchmark.group = FLOOD.key
    compared = run == "copies compared"
    body = sized_body(FLOOD_BODY)
    admin = f"127.0.0.1:{free_port()}"
    flag = has_budget_flag()
    extra = ["--admin", admin]
    if flag:
        extra += ["--compare-buffer-budget", str(COMPARE_BUDGET_MIB)]
    with (
        spawn("healthy_sized", size=FLOOD_BODY) as v1,
        spawn("healthy_sized", size=FLOOD_BODY) as v2,
    ):
        route = Route(v1.address, v2.address, 100.0, compare=100.0 if compared else 0.0)
        process = start_pymirror(route, tmp_path, *extra)
        try:
            pid = process.pid
            # Correctness first, and warm: users get v1's 60 KiB; copies have ended (and,
            # compared, their pairs were compared).
            with KeepAliveClient(process.address) as client:
                for i in range(FLOOD_WARMUP):
                    assert client.get(f"/warm/{i}") == (200, body)

            def settled() -> bool:
                """No copy in flight; compared: a pair was queued and the queue is empty."""
                stats = admin_stats(admin)
                if any(m["in_flight"] for m in stats["mirrors"]):
                    return False
                if not compared:
                    return True
                queued = sum(m["compare"]["queued"] for m in stats["mirrors"])
                return queued >= 1 and stats["compare_queue_depth"] == 0

            wait_for(settled, 10.0, "copies still in flight, or no pair compared")
            warm_rss, warm_peak = rss_bytes(pid), peak_rss_bytes(pid)

            cpu = cpu_seconds(pid)
            with _Sampler(pid, admin) as sampler:
                result: FloodResult = benchmark.pedantic(
                    lambda: flood(process.address, FLOOD_SECONDS, FLOOD_CONNECTIONS, body),
                    rounds=1,
                    iterations=1,
                )
            cpu = cpu_seconds(pid) - cpu
            peak = peak_rss_bytes(pid)
            time.sleep(1.0)
            rss_after = rss_bytes(pid)
            stats = admin_stats(admin)
        finally:
            process.stop()
    assert result.wrong == 0, f"{result.wrong} wrong answers: {result.examples}"
    assert result.requests > 0

    compare: dict[str, Any] = {"sampled": 0, "queued": 0, "skipped": {}}
    for m in stats["mirrors"]:
        compare["sampled"] += m["compare"]["sampled"]
        compare["queued"] += m["compare"]["queued"]
        for reason, count in m["compare"]["skipped"].items():
            compare["skipped"][reason] = compare["skipped"].get(reason, 0) + count
    growth = peak - warm_rss
    if not compared:
        _FLOOD_BASELINE["peak"] = peak
    baseline = _FLOOD_BASELINE.get("peak")
    # What comparing held over the same flood uncompared, warm-up and comparator included:
    # the two runs' peaks apart (None: no baseline this run).
    attributable = peak - baseline if compared and baseline is not None else None
    figures: Figures = {
        "requests": result.requests,
        "rps": result.rps,
        "user_errors": result.wrong,
        "body_kib": FLOOD_BODY / 1024,
        "cpu_us_per_req": cpu / max(1, result.requests) * 1e6,
        "warm_rss_mib": warm_rss / 2**20,
        "warm_peak_rss_mib": warm_peak / 2**20,
        "peak_rss_mib": peak / 2**20,
        "rss_growth_mib": growth / 2**20,
        "sampled_rss_max_mib": sampler.rss_max / 2**20,
        "rss_after_1s_mib": rss_after / 2**20,
        "queue_depth_max": sampler.queue_max,
        "budget_held_max_mib": sampler.held_max / 2**20,
        "pairs_sampled": compare["sampled"],
        "pairs_queued": compare["queued"],
        "pairs_skipped": compare["skipped"],
        "budget_mib": COMPARE_BUDGET_MIB if compared else None,
        "budget_flag": flag,
        "compare_growth_mib": None if attributable is None else attributable / 2**20,
        "within_budget": None
        if attributable is None
        else attributable <= COMPARE_BUDGET_MIB * 2**20,
    }
    if compared and not flag:
        figures["budget_note"] = (
            "this build has no --compare-buffer-budget: run without it; 64 MiB is the "
            "default the fix documents"
        )
    benchmark.extra_info.update(figures)
    record(FLOOD, run, figures)
    over = "" if attributable is None else f", peak {attributable / 2**20:+.1f} over copies only"
    print(
        f"\nflood, {run}: {result.requests:,} requests ({result.rps:,.0f}/s), RSS warm "
        f"{figures['warm_rss_mib']:.1f} MiB, peak {figures['peak_rss_mib']:.1f} MiB "
        f"(+{figures['rss_growth_mib']:.1f}{over}; budget {COMPARE_BUDGET_MIB} MiB"
        f"{'' if flag else ', flag absent'}), queue depth max {sampler.queue_max:,}, "
        f"budget held max {sampler.held_max / 2**20:.1f} MiB"
    )
