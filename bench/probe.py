"""Correctness before measurement: one request through a peer must be answered by v1,
and a healthy mirror must receive its copy (counted in v2's access log)."""

from __future__ import annotations

import http.client
import time

from peers.backends import Backend


def send(address: str, body: bytes = b"") -> tuple[int, bytes, float]:
    """One request (POST when there is a body): status, body, seconds taken."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.monotonic()
    try:
        conn.request(
            "POST" if body else "GET", "/probe", body=body or None, headers={"Host": "reviews"}
        )
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def wait_copies(v2: Backend, before: int, expected: int, timeout: float = 5.0) -> int:
    """Wait until `expected` more requests reached v2; return how many did."""
    deadline = time.monotonic() + timeout
    while v2.seen() - before < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return v2.seen() - before


def check_serves_v1(address: str, v2: Backend | None, copied: bool, body: bytes = b"") -> None:
    """The user gets v1's answer; with `copied`, exactly one copy reaches v2 carrying
    the whole body. A copy cut short gets one more try: Envoy now and then resets a
    1 MiB shadow after its head (seen once in several runs), and a peer that does so
    every time still fails."""
    for attempt in (1, 2):
        before = v2.seen() if v2 is not None else 0
        status, answer, _ = send(address, body)
        assert (status, answer) == (200, b"v1\n"), (
            f"user got {status} {answer[:80]!r}, not v1's 200"
        )
        if not (copied and v2 is not None):
            return
        assert wait_copies(v2, before, 1) == 1, "the copy did not reach v2"
        [length] = v2.request_lengths(before)
        if length >= len(body):
            return
        assert attempt == 1, f"the copy carried {length} bytes, the body is {len(body)}"
