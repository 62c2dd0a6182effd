"""The demo's users: a few keep-alive connections sending a bounded number of requests."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections import Counter


class Traffic:
    """Sends `requests` GETs over `concurrency` connections, recording what users got."""

    def __init__(self, address: str, *, requests: int, concurrency: int) -> None:
        self._host, port = address.rsplit(":", 1)
        self._port = int(port)
        self._total = requests
        self._concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self._next = 0
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.colors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.stop = threading.Event()

    def start(self) -> None:
        workers = [
            threading.Thread(target=self._worker, daemon=True) for _ in range(self._concurrency)
        ]
        for w in workers:
            w.start()
        threading.Thread(target=self._join, args=(workers,), daemon=True).start()

    def _join(self, workers: list[threading.Thread]) -> None:
        for w in workers:
            w.join()
        self.done.set()

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self._total or self.stop.is_set():
                return None
            self._next += 1
            return self._next

    def _worker(self) -> None:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=10)
        try:
            while (n := self._take()) is not None:
                started = time.perf_counter()
                conn.request("GET", f"/reviews/{n}", headers={"Host": "reviews"})
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                try:
                    review = json.loads(body)
                except ValueError:
                    review = {}
                with self._lock:
                    self.sent += 1
                    self.statuses[response.status] += 1
                    self.versions[str(review.get("version", "?"))] += 1
                    self.colors[str(review.get("rating", {}).get("color", "?"))] += 1
                    self.latencies.append(elapsed)
        finally:
            conn.close()

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 of what users waited, in milliseconds."""
        if len(self.latencies) < 2:
            return (0.0, 0.0)
        cuts = statistics.quantiles(self.latencies, n=100)
        return cuts[49] * 1e3, cuts[98] * 1e3
