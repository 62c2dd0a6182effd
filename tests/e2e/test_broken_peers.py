"""Peers that break the exchange itself: a reset after the request arrived, or bytes that
are not HTTP. As a primary they get the user a 502 with its cause (and a retry where the
route asks for one); as a mirror they are counted and never reach users."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from conftest import seed_config, settle
from support.client import Client

from pymirror import Proxy

pytestmark = pytest.mark.e2e

N = 30


class BrokenPeer:
    """Reads each request head, then resets the connection (`reset`) or answers bytes
    that are not an HTTP response and closes (`garbage`). Counts the heads it read."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.heads = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            buffer = b""
            try:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
            except OSError:
                return
            with self._lock:
                self.heads += 1
            if self.mode == "reset":
                # Linger 0: close sends RST, not FIN.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


@pytest.fixture
def broken():
    peers: list[BrokenPeer] = []

    def make(mode: str) -> BrokenPeer:
        peers.append(BrokenPeer(mode))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("reset", b"upstream reset the connection before answering\n"),
        ("garbage", b"upstream answered with something that is not HTTP\n"),
    ],
)
def test_a_broken_primary_is_a_502_naming_the_cause(
    backend, broken, mode: str, cause: bytes
) -> None:
    v1, v2 = broken(mode), backend("v2")
    config = seed_config(v1.address, v2.address, route_extra="\n        retries: {attempts: 0}")
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        replies = [client.request("GET", f"/{i}") for i in range(3)]
        [dest] = proxy.stats()["destinations"]
    assert [r.status for r in replies] == [502, 502, 502]
    assert {r.body for r in replies} == {cause}
    assert dest["responses"] == {"502": 3}
    assert v1.heads == 3  # one try each: retries are off on this route


def test_a_reset_primary_is_retried_when_the_route_says_so(backend, broken) -> None:
    v1, v2 = broken("reset"), backend("v2")
    config = seed_config(
        v1.address, v2.address, route_extra="\n        retries: {attempts: 2, retryOn: reset}"
    )
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        reply = client.request("GET", "/")
    assert reply.status == 502
    assert v1.heads == 3  # the try and two retries


@pytest.mark.parametrize("mode", ["reset", "garbage"])
def test_a_broken_mirror_is_counted_and_invisible(backend, broken, mode: str) -> None:
    v1, v2 = backend("v1"), broken(mode)
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        replies = [client.request("GET", f"/{i}") for i in range(N)]
        mirror = settle(proxy)
    assert {(r.status, r.body) for r in replies} == {(200, b"v1")}
    assert len(v1.seen) == N
    assert mirror["answered"] == 0
    assert mirror["failed"] == N == v2.heads
