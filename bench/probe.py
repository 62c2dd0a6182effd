"""Correctness before measurement: one request through a peer must be answered by v1,
and a healthy mirror must receive its copy (counted in v2's access log). Over HTTP/2
(curl, h2c with prior knowledge), both hops must have been HTTP/2. A gRPC call (grpcio)
must get v1's reply with grpc-status OK."""

from __future__ import annotations

import http.client
import subprocess
import time

from peers.backends import SERVED_OVER, Backend
from peers.grpc_backend import unary


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


def check_serves_v1(
    address: str, v2: Backend | None, copied: bool, body: bytes = b"", answer: bytes = b"v1\n"
) -> None:
    """The user gets v1's `answer`; with `copied`, exactly one copy reaches v2 carrying
    the whole body. A copy cut short gets one more try: Envoy now and then resets a
    1 MiB shadow after its head (seen once in several runs), and a peer that does so
    every time still fails."""
    for attempt in (1, 2):
        before = v2.seen() if v2 is not None else 0
        status, got, _ = send(address, body)
        assert (status, got) == (200, answer), (
            f"user got {status} {got[:80]!r} ({len(got):,} bytes), not v1's 200 "
            f"({len(answer):,} bytes)"
        )
        if not (copied and v2 is not None):
            return
        assert wait_copies(v2, before, 1) == 1, "the copy did not reach v2"
        [length] = v2.request_lengths(before)
        if length >= len(body):
            return
        assert attempt == 1, f"the copy carried {length} bytes, the body is {len(body)}"


def send_h2(address: str) -> tuple[int, bytes, dict[str, str]]:
    """One GET over HTTP/2 with prior knowledge (curl): status, body, response headers."""
    run = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--http2-prior-knowledge",
         "-i", "-H", "Host: reviews", f"http://{address}/probe"],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"curl failed: {run.stderr.decode(errors='replace')}"
    head, _, body = run.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status = status_line.split()[:2]
    assert version == "HTTP/2", f"answered over {version}, not HTTP/2"
    fields = (line.partition(":") for line in lines)
    return int(status), body, {name.lower(): value.strip() for name, _, value in fields}


def check_serves_v1_h2(address: str, v2: Backend | None, copied: bool) -> None:
    """Over HTTP/2: the user gets v1's answer, which v1 served over HTTP/2 (its
    SERVED_OVER header); with `copied`, exactly one copy reaches v2, over HTTP/2 too."""
    before = v2.seen() if v2 is not None else 0
    status, answer, headers = send_h2(address)
    assert (status, answer) == (200, b"v1\n"), f"user got {status} {answer[:80]!r}, not v1's 200"
    assert headers.get(SERVED_OVER) == "HTTP/2.0", f"v1 was asked over {headers.get(SERVED_OVER)}"
    if copied and v2 is not None:
        assert wait_copies(v2, before, 1) == 1, "the copy did not reach v2"
        assert v2.protocols(before) == ["HTTP/2.0"], f"the copy came over {v2.protocols(before)}"


def check_serves_v1_grpc(address: str, v2: Backend | None, copied: bool) -> None:
    """One unary gRPC call: the user gets v1's reply with grpc-status OK (HTTP status
    alone says nothing of a gRPC error); with `copied`, exactly one copy reaches v2 (its
    call count). The gRPC backends speak HTTP/2 only, so both hops were HTTP/2."""
    before = v2.seen() if v2 is not None else 0
    status, reply = unary(address)
    assert (status, reply) == ("OK", "v1"), f"user got {status} {reply!r}, not v1's OK"
    if copied and v2 is not None:
        assert wait_copies(v2, before, 1) >= 1, "the copy did not reach v2"
        copies = v2.settled() - before  # a second copy, were there one, gets its time
        assert copies == 1, f"{copies} copies reached v2, not one"
