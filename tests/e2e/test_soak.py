"""A bounded soak: mixed load through `pymirror run` while the mirror misbehaves in turns.

Several keep-alive clients (threads) send GETs and POSTs with bodies while the mirror,
copied 100%, takes turns at being healthy, stalling without reading, slow, answering 500,
answering garbage and refusing connections: one round of turns at least, more while
`PYMIRROR_SOAK_SECONDS` (default 10) have not passed. Users must see no error at all; the
copies' outcomes the proxy counts must agree with what the mirror itself recorded; and the
proxy must not leak: once the load stops and the mirror's last copies have ended, its open
file descriptors and its RSS (read from /proc of the `pymirror run` child, which is the
proxy alone) come back near the baseline taken after a warm-up.

What is asserted follows from the mechanism, not from how fast this machine is: a copy
starts after its user sent the request (whose send time the request carries, and its copy
with it), and the proxy gives it up `TIMEOUT` after it started. So an answer the mirror
wrote at most `PROMPT` after that send reached the proxy with at least `TIMEOUT - PROMPT`
(0.5 s) to spare, and must be counted under its status; a stalled connection still
holding its request `TIMEOUT + SLACK` after it was accepted was given up by then, and must
be counted as timed out. An answer written later may or may not have been in time, so it
is only bounded from above. Each turn lasts until it has such evidence (bounded by
`TURN_CAP`), so a loaded machine makes the soak longer, not flaky.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import seed_config
from support.client import Client
from support.faulty_mirror import MODES, SENT_HEADER, FaultyMirror
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

SECONDS = float(os.environ.get("PYMIRROR_SOAK_SECONDS", "10"))
CLIENTS = 4
#: The copies' timeout (mirrorDefaults), so stalled and slow copies end soon after their
#: turn; and how soon an answer must be written to be sure it was in time (see above).
TIMEOUT = 1.0
SLACK = 0.5
PROMPT = TIMEOUT - SLACK
#: The most a turn waits, past its share of SECONDS, for its evidence.
TURN_CAP = 20.0
#: Leak margins: descriptors may differ by a few pooled connections; RSS by what the
#: allocator keeps cached after a peak (mimalloc returns freed pages lazily).
FD_MARGIN = 8
RSS_MARGIN = 48 * 1024 * 1024
#: Drops of copies whose body could not be buffered: they end as `dropped`, whatever the
#: mirror does (none are expected with these bodies; counted so the bounds stay exact).
BODY_DROPS = ("body_buffer", "buffer_budget")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def mirror_stats(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=5) as answer:
        [mirror] = json.load(answer)["mirrors"]
        return dict(mirror)


def poll(condition: Callable[[], bool], timeout: float, what: str, *, strict: bool = True) -> None:
    """Waits (bounded) for `condition`; past the deadline, fails when `strict`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            assert not strict, f"timed out waiting for {what}"
            return
        time.sleep(0.05)


@pytest.fixture
def mirror() -> Iterator[FaultyMirror]:
    m = FaultyMirror(stall_hold=TIMEOUT + SLACK)
    try:
        yield m
    finally:
        m.stop()


class Tally:
    """Counts shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def __getitem__(self, key: str) -> int:
        with self.lock:
            return self.counts[key]


def load(address: str, stop: threading.Event, seed: int, errors: list[str], counts: Tally) -> None:
    """One user on one keep-alive connection: GETs and POSTs with bodies until `stop`."""
    rng = random.Random(seed)
    client = Client(address, timeout=10)
    n = 0
    try:
        while not stop.is_set() and n < 1_000_000:
            n += 1
            method = rng.choice(["GET", "GET", "POST", "PUT"])
            body = rng.randbytes(rng.choice([0, 100, 4000, 60_000])) if method != "GET" else None
            # When the user sent it: its copy starts later (see the module's doc).
            sent = {SENT_HEADER: repr(time.monotonic())}
            try:
                reply = client.request(method, f"/soak/{seed}/{n}", body=body, headers=sent)
            except OSError as exc:
                errors.append(f"{method} /soak/{seed}/{n}: {exc!r}")
                client.close()
                client = Client(address, timeout=10)
                continue
            counts.add("requests")
            if (reply.status, reply.body) != (200, b"v1"):
                errors.append(f"{method} /soak/{seed}/{n}: {reply.status} {reply.body[:80]!r}")
    finally:
        client.close()


def users(address: str, errors: list[str], counts: Tally, first_seed: int) -> Callable[[], None]:
    """Starts CLIENTS users; returns what stops and joins them."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(address, stop, first_seed + i, errors, counts))
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()

    def end() -> None:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a client is stuck"

    return end


def evidence(mode: str, mirror: FaultyMirror, admin: str) -> Callable[[], bool]:
    """Whether the turn of `mode`, starting now, has shown its effect on the proxy yet."""
    if mode == "stall":
        held = mirror.stalled_copies
        return lambda: mirror.stalled_copies > held
    if mode == "refuse":
        ejected = mirror_stats(admin)["dropped"]["ejected"]
        return lambda: mirror_stats(admin)["dropped"]["ejected"] > ejected
    if mode == "garbage":
        # Garbage is answered at once, but under load a copy may reach the mirror later
        # than PROMPT after its user's send; the proxy failing one as `protocol` is the
        # effect that counts.
        protocol = mirror_stats(admin)["failures"]["protocol"]
        return lambda: mirror_stats(admin)["failures"]["protocol"] > protocol
    answered = mirror.prompt(mode, within=PROMPT)
    if mode == "slow":
        # Under load a copy may reach the mirror later than PROMPT after its user's
        # send; the proxy timing a copy's answer past most of SLOW_DELAY counts too.
        slow = slow_answers(admin)
        return lambda: mirror.prompt(mode, within=PROMPT) > answered or slow_answers(admin) > slow
    return lambda: mirror.prompt(mode, within=PROMPT) > answered


def slow_answers(admin: str) -> int:
    """Copies the proxy counted answered after more than 0.25 s (its duration histogram;
    SLOW_DELAY is 0.3 s, other answers come at once)."""
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=5) as answer:
        stats = json.load(answer)
    bounds = stats["bucket_bounds_seconds"]
    [mirror] = stats["mirrors"]
    buckets = mirror["duration"]["buckets"]
    return sum(n for bound, n in zip([*bounds, float("inf")], buckets, strict=True) if bound > 0.25)


@pytest.mark.timeout(SECONDS + len(MODES) * TURN_CAP + 120)
def test_soak_with_a_misbehaving_mirror(backend, mirror: FaultyMirror, tmp_path: Path) -> None:
    v1 = backend("v1")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        seed_config(v1.address, mirror.address) + f"mirrorDefaults: {{timeout: {TIMEOUT:g}s}}\n"
    )
    proc = PymirrorProcess(routes)
    errors: list[str] = []
    counts = Tally()
    try:
        pid, admin = proc.proc.pid, proc.admin_address

        # Warm-up: every client connection, pool and worker has been used once.
        end = users(proc.address, errors, counts, 1000)
        time.sleep(1.0)
        end()
        poll(lambda: mirror_stats(admin)["in_flight"] == 0, 15, "warm-up copies")
        fds_before, rss_before = fd_count(pid), rss(pid)

        end = users(proc.address, errors, counts, 0)
        try:
            started, turn = time.monotonic(), SECONDS / len(MODES)
            peak_fds = fds_before
            # Whole rounds: every fault has as many turns as the others.
            while counts["turn ok"] == 0 or time.monotonic() - started < SECONDS:
                for mode in MODES:
                    shown = evidence(mode, mirror, admin)
                    mirror.set_mode(mode)
                    time.sleep(turn)
                    poll(shown, TURN_CAP, f"the {mode} turn", strict=False)
                    counts.add(f"turn {mode}")
                    counts.add(f"turn {mode} shown" if shown() else f"turn {mode} not shown")
                    peak_fds = max(peak_fds, fd_count(pid))
            took = time.monotonic() - started
        finally:
            end()

        mirror.set_mode("ok")
        poll(lambda: mirror_stats(admin)["in_flight"] == 0, 15, "the last copies to end")
        # Checked below, after the figures are printed.
        poll(lambda: fd_count(pid) <= fds_before + FD_MARGIN, 20, "descriptors", strict=False)
        fds_after, rss_after = fd_count(pid), rss(pid)
        stats = mirror_stats(admin)
        assert proc.proc.poll() is None, "the proxy exited"
    finally:
        proc.stop()

    answered = {m: mirror.answered(m) for m in MODES}
    prompt = {m: mirror.prompt(m, within=PROMPT) for m in MODES}
    print(
        f"\nsoak: {took:.1f} s, {counts['requests']} requests, "
        f"{len(errors)} errors; turns {dict(counts.counts)}; "
        f"fds {fds_before} -> {peak_fds} (most at a turn's end) -> {fds_after}; "
        f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
        f"mirror: connections {dict(mirror.accepted)}, requests {dict(mirror.requests)}, "
        f"answered {answered}, of which within {PROMPT:g} s {prompt}, "
        f"stalled copies {mirror.stalled_copies}; copies {stats}"
    )
    assert not errors, f"{len(errors)} user errors, first: {errors[:5]}"
    assert counts["requests"] > 0
    # Every fault had its turn while users were served, and showed in it.
    assert all(counts[f"turn {m} shown"] == counts[f"turn {m}"] >= 1 for m in MODES), counts.counts

    # Answers: the proxy counts under a status only what the mirror answered with it, and
    # it counts every answer the mirror wrote in time for sure.
    responses = stats["responses"]
    body_drops = sum(stats["dropped"].get(reason, 0) for reason in BODY_DROPS)
    assert set(responses) <= {"200", "500"}, stats
    assert prompt["500"] <= responses.get("500", 0) <= answered["500"], stats
    ok = ("ok", "slow")
    assert sum(prompt[m] for m in ok) <= responses.get("200", 0) <= sum(answered[m] for m in ok)
    # Stalled copies time out; garbage fails (as do refused connections).
    assert stats["timed_out"] + body_drops >= mirror.stalled_copies >= 1, stats
    assert stats["failed"] + body_drops >= prompt["garbage"], stats
    assert stats["failures"]["protocol"] >= 1, stats
    # A refused connection backs the mirror off: the copies meanwhile are dropped at once.
    assert stats["dropped"]["ejected"] >= 1, stats

    assert fds_after <= fds_before + FD_MARGIN
    assert rss_after <= rss_before + RSS_MARGIN
