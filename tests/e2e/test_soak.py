"""A bounded soak: mixed load through `pymirror run` while the mirror misbehaves in turns.

Several keep-alive clients (threads) send GETs and POSTs with bodies for
`PYMIRROR_SOAK_SECONDS` (default 10) while the mirror, copied 100%, takes turns at being
healthy, slow, answering 500, refusing connections, stalling without reading, and
answering garbage. Users must see no error at all, and the proxy must not leak: once the
load stops and the mirror's last copies have ended, its open file descriptors and its RSS
(read from /proc of the `pymirror run` child, which is the proxy alone) come back near
the baseline taken after a warm-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import seed_config
from support.client import Client
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

SECONDS = float(os.environ.get("PYMIRROR_SOAK_SECONDS", "10"))
CLIENTS = 4
#: The turns, in order. A refused connection makes the core back off from the mirror for
#: a while (its copies are dropped as `ejected`), so refusal comes last in a round.
MODES = ("ok", "stall", "slow", "500", "garbage", "refuse")
#: Leak margins: descriptors may differ by a few pooled connections; RSS by what the
#: allocator keeps cached after a peak (mimalloc returns freed pages lazily).
FD_MARGIN = 8
RSS_MARGIN = 48 * 1024 * 1024
#: The mirror closes a keep-alive connection idle this long (seconds).
IDLE_TIMEOUT = 2.0


class FaultyMirror:
    """A mirror on one fixed loopback port whose behaviour changes on command.

    ok/slow/500 answer HTTP/1.1 (keep-alive, closed after `IDLE_TIMEOUT` idle), slow
    after 300 ms; refuse closes the
    listener (connections are refused) and reopens it on the same port afterwards; stall
    accepts and never reads; garbage reads the head and answers random bytes. Every change
    closes the connections of the previous mode.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.port = 0
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.requests: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.closed = threading.Event()
        self._listen()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.1", self.port))
        s.listen(1024)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                mode = self.mode
                self.conns.add(conn)
                self.accepted[mode] += 1
            threading.Thread(target=self._serve, args=(conn, mode), daemon=True).start()

    def set_mode(self, mode: str) -> None:
        with self.lock:
            old, self.mode = self.mode, mode
            conns, self.conns = self.conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if mode == "refuse" and self.listener is not None:
            self.listener.close()
            self.listener = None
        elif old == "refuse" and self.listener is None:
            self._listen()

    def stop(self) -> None:
        self.closed.set()
        self.set_mode("refuse")

    def _serve(self, conn: socket.socket, mode: str) -> None:
        buffer = b""
        try:
            # As real servers do, an idle keep-alive connection is closed after a while,
            # so the proxy's pool of idle mirror connections drains once load stops.
            conn.settimeout(IDLE_TIMEOUT)  # in the try: a mode change may have closed it
            while not self.closed.is_set():
                if mode == "stall":
                    self.closed.wait(30)  # never reads; closed by the next mode change
                    return
                head, buffer = _read_head(conn, buffer)
                if head is None:
                    return
                if mode == "garbage":
                    conn.sendall(random.Random(len(head)).randbytes(64) + b"\r\n\r\n")
                    return
                buffer = _read_body(conn, head, buffer)
                with self.lock:
                    self.requests[mode] += 1
                if mode == "slow":
                    time.sleep(0.3)
                status = b"500 Internal Server Error" if mode == "500" else b"200 OK"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nv2")
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.conns.discard(conn)
            conn.close()


def _read_head(conn: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _read_body(conn: socket.socket, head: bytes, buffer: bytes) -> bytes:
    """Reads (and drops) the body; returns what follows it."""
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            while b"\r\n" not in buffer:
                buffer += _recv(conn)
            line, _, buffer = buffer.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(buffer) < size + 2:
                buffer += _recv(conn)
            buffer = buffer[size + 2 :]
            if size == 0:
                return buffer
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(buffer) < length:
        buffer += _recv(conn)
    return buffer[length:]


def _recv(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ValueError("closed mid-request")
    return chunk


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def mirror_stats(admin: str) -> dict[str, object]:
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
    m = FaultyMirror()
    yield m
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


def load(address: str, until: float, seed: int, errors: list[str], counts: Tally) -> None:
    """One user on one keep-alive connection: GETs and POSTs with bodies until `until`."""
    rng = random.Random(seed)
    client = Client(address, timeout=10)
    n = 0
    try:
        while time.monotonic() < until and n < 1_000_000:
            n += 1
            method = rng.choice(["GET", "GET", "POST", "PUT"])
            body = rng.randbytes(rng.choice([0, 100, 4000, 60_000])) if method != "GET" else None
            try:
                reply = client.request(method, f"/soak/{seed}/{n}", body=body)
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


@pytest.mark.timeout(SECONDS + 120)
def test_soak_with_a_misbehaving_mirror(backend, mirror: FaultyMirror, tmp_path: Path) -> None:
    v1 = backend("v1")
    routes = tmp_path / "routes.yaml"
    # Copies give up after 1 s, so stalled and slow ones end soon after their turn.
    routes.write_text(seed_config(v1.address, mirror.address) + "mirrorDefaults: {timeout: 1s}\n")
    proc = PymirrorProcess(routes)
    try:
        pid, admin = proc.proc.pid, proc.admin_address
        errors: list[str] = []
        counts = Tally()

        # Warm-up: every client connection, pool and worker has been used once.
        load_for(proc.address, 1.0, errors, counts)
        poll(lambda: mirror_stats(admin)["in_flight"] == 0, 15, "warm-up copies")
        fds_before, rss_before = fd_count(pid), rss(pid)

        until = time.monotonic() + SECONDS
        turn = SECONDS / len(MODES)
        threads = [
            threading.Thread(target=load, args=(proc.address, until, seed, errors, counts))
            for seed in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        peak_fds = fds_before
        for i, mode in enumerate(MODES * 1000):
            if time.monotonic() >= until:
                break
            mirror.set_mode(mode)
            time.sleep(max(0.0, min(turn, until - time.monotonic())))  # paces the turns only
            counts.add(f"turn {mode}")
            peak_fds = max(peak_fds, fd_count(pid))
            assert i < len(MODES) * 1000
        for t in threads:
            t.join(timeout=SECONDS + 30)
            assert not t.is_alive(), "a client is stuck"

        mirror.set_mode("ok")
        poll(lambda: mirror_stats(admin)["in_flight"] == 0, 15, "the last copies to end")
        # Checked below, after the figures are printed.
        poll(lambda: fd_count(pid) <= fds_before + FD_MARGIN, 20, "descriptors", strict=False)
        fds_after, rss_after = fd_count(pid), rss(pid)
        stats = mirror_stats(admin)
        assert proc.proc.poll() is None, "the proxy exited"
    finally:
        proc.stop()

    print(
        f"\nsoak: {SECONDS:.0f} s, {counts['requests']} requests, {len(errors)} errors; "
        f"fds {fds_before} -> {peak_fds} (most at a turn's end) -> {fds_after}; "
        f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
        f"mirror requests {dict(mirror.requests)}, connections {dict(mirror.accepted)}; "
        f"copies {stats}"
    )
    assert not errors, f"{len(errors)} user errors, first: {errors[:5]}"
    assert counts["requests"] > 0
    # Every fault had its turn while users were served (each at least once).
    assert all(counts[f"turn {mode}"] >= 1 for mode in MODES), counts.counts
    # ... and each reached the proxy: copies answered 200 and 500, stalled ones timed
    # out, garbage and refusals failed.
    assert all(mirror.accepted[mode] >= 1 for mode in MODES if mode != "refuse"), mirror.accepted
    responses = stats["responses"]
    assert isinstance(responses, dict) and responses.get("200") and responses.get("500"), stats
    assert stats["timed_out"] and stats["failed"], stats
    assert fds_after <= fds_before + FD_MARGIN
    assert rss_after <= rss_before + RSS_MARGIN


def load_for(address: str, seconds: float, errors: list[str], counts: Tally) -> None:
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=load, args=(address, until, 1000 + i, errors, counts))
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
