"""Bounded load through a proxy: a few client threads, each on its own keep-alive
connection, until a request count, a deadline or a stop request, whichever comes first.
And a reader of the admin endpoint's Prometheus text."""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from support.client import Client


@dataclass
class Load:
    """`Load(address, total=3000, seconds=10).start()`; `wait_for(n)` blocks (bounded) until
    `n` requests were answered; `stop()` ends it and joins the threads."""

    address: str
    total: int
    seconds: float
    connections: int = 4
    method: str = "GET"
    body: bytes | None = None
    #: Answers by status; a request that raised counts under its exception's name.
    results: Counter[int | str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _issued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        deadline = time.monotonic() + self.seconds
        for i in range(self.connections):
            t = threading.Thread(target=self._run, args=(i, deadline), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _claim(self) -> int | None:
        with self._lock:
            if self._issued >= self.total:
                return None
            self._issued += 1
            return self._issued

    def _run(self, worker: int, deadline: float) -> None:
        client = Client(self.address)
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n = self._claim()
                if n is None:
                    return
                try:
                    reply = client.request(self.method, f"/load/{worker}/{n}", body=self.body)
                    outcome: int | str = reply.status
                except (OSError, http.client.HTTPException) as exc:
                    outcome = type(exc).__name__
                    with self._lock:
                        self.errors.append(f"request {n}: {exc!r}")
                    client.close()
                    client = Client(self.address)
                with self._lock:
                    self.results[outcome] += 1
        finally:
            client.close()

    @property
    def done(self) -> int:
        with self._lock:
            return sum(self.results.values())

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def wait_for(self, count: int, timeout: float = 15.0) -> int:
        """Until `count` requests were answered or the load ended; bounded."""
        deadline = time.monotonic() + timeout
        while (done := self.done) < count and self.running and time.monotonic() < deadline:
            time.sleep(0.005)
        return done

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout)


def fetch(address: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def metric(admin: str, name: str, **labels: str) -> float:
    """One sample of the admin endpoint's `/metrics` (0 when absent)."""
    _, text = fetch(admin, "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.M)
    for m in pattern.finditer(text):
        if (m.group(1) or "") == want:
            return float(m.group(2))
    return 0.0


def poll(
    check: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.02,
) -> None:
    """Until `check()` holds; fails with `what` (or what it returns) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {said}")
        time.sleep(interval)
