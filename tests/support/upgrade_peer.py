"""A server of a made-up protocol reached through `Upgrade: echo/1`: it answers the
upgrade with 101 and then echoes every byte back until the client's end (its FIN), the
way any non-WebSocket upgrade (`spdy/3.1`, a custom one) leaves HTTP behind."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time

PROTOCOL = b"echo/1"


class UpgradeEcho:
    """`UpgradeEcho().start()`; records each session's request head and the bytes after it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        #: With `tls`, each session is TLS (server side) first; `server_names` the SNIs.
        self._tls = tls
        self.server_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self.heads: list[bytes] = []
        self.received: list[bytes] = []
        self.finished = 0
        #: Sessions that ended in a socket error (the proxy reset them), with the error.
        self.errors: list[OSError] = []
        self._conns: set[socket.socket] = set()
        self._stopped = False

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> UpgradeEcho:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        """Closes the listener and every session still open: none outlives its test."""
        self._listener.close()
        with self._lock:
            self._stopped = True
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def wait_finished(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.finished < n:
            assert time.monotonic() < deadline, f"{self.finished} of {n} sessions ended"
            time.sleep(0.02)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._stopped:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn.settimeout(10)
                conn = self._tls.wrap_socket(conn, server_side=True)
            self._session(conn)
        except OSError as exc:  # e.g. reset by the proxy: tests see it in `finished`
            with self._lock:
                self.errors.append(exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            with self._lock:
                self.heads.append(head)
                index = len(self.received)
                self.received.append(b"")
            if b"upgrade: " + PROTOCOL not in head.lower():
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                return
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: " + PROTOCOL + b"\r\n\r\n"
            )
            data = rest
            while True:
                if data:
                    with self._lock:
                        self.received[index] += data
                    conn.sendall(data)
                data = conn.recv(65536)
                if not data:
                    break
            conn.shutdown(socket.SHUT_WR)
            with self._lock:
                self.finished += 1
