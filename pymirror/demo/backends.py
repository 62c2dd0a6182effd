"""The demo's `reviews` service: v1 as it runs today, v2 subtly different
(a changed field, extra latency, an occasional 500)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Flavour:
    version: str
    star_color: str
    extra_latency: float
    error_rate: float


V1 = Flavour("v1", star_color="black", extra_latency=0.0, error_rate=0.0)
V2 = Flavour("v2", star_color="red", extra_latency=0.012, error_rate=0.03)


@dataclass
class Tally:
    """What one backend received and answered."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)
    request_ids: set[str] = field(default_factory=set)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: ReviewsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        flavour = self.server.flavour
        if flavour.extra_latency:
            time.sleep(flavour.extra_latency)
        failing = random.random() < flavour.error_rate
        status = 500 if failing else 200
        review = {
            "id": self.path.rsplit("/", 1)[-1],
            "reviewer": "Reviewer1",
            "text": "An extremely entertaining play by Shakespeare.",
            "rating": {"stars": 5, "color": flavour.star_color},
            "version": flavour.version,
            # Differs between any two instances, v1 and v1 alike: noise for the comparison.
            "served_at": time.time(),
        }
        payload = b"internal error\n" if failing else json.dumps(review).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if failing else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        tally = self.server.tally
        with tally.lock:
            tally.statuses[status] += 1
            tally.hosts[self.headers.get("Host", "")] += 1
            tally.request_ids.add(self.headers.get("X-Request-Id", ""))


class ReviewsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], flavour: Flavour) -> None:
        super().__init__(address, _Handler)
        self.flavour = flavour
        self.tally = Tally()

    def start(self) -> ReviewsServer:
        threading.Thread(
            target=self.serve_forever, name=f"reviews-{self.flavour.version}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
