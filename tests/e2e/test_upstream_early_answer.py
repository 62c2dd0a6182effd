"""An upstream that answers before it has read the request's body, as nginx's `return`
does: the answer reaches the user at once, and the rest of the body is still sent, to
the primary and to the mirror alike (a copy carries the whole body, whatever its mirror
does with it). The upstream here is exact bytes on a raw socket: it reads the head,
writes `200 ok` and only then reads the body, counting it."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
from conftest import seed_config

from pymirror import Proxy

pytestmark = pytest.mark.e2e

BODY = b"b" * (1 << 20)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class EarlyAnswerer:
    """Answers each request as soon as its head is read, then reads its body to the
    length the head declared and records how many body bytes arrived."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        host, port = self.listener.getsockname()[:2]
        self.address = f"{host}:{port}"
        self.received: list[int] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        with sock:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                sock.sendall(ANSWER)
                got = len(body)
                while got < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
            except OSError:
                got = -1
            with self.lock:
                self.received.append(got)

    def wait(self, n: int, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.listener.close()


def test_the_rest_of_a_body_reaches_an_upstream_that_answered_early() -> None:
    v1, v2 = EarlyAnswerer(), EarlyAnswerer()
    try:
        with Proxy(seed_config(v1.address, v2.address)) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("POST", "/upload", body=BODY, headers={"Host": "reviews"})
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"ok")
            finally:
                conn.close()
            # The whole body, on both hops: none of it dropped with the early answer.
            assert v1.wait(1) == [len(BODY)]
            assert v2.wait(1) == [len(BODY)]
    finally:
        v1.close()
        v2.close()
