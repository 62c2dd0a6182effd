"""A hostile HTTP/2 mirror written with exact frames: `reset` answers every stream with
RST_STREAM (INTERNAL_ERROR) as soon as its HEADERS arrive; `stall` accepts connections
and never reads a byte, so HTTP/2 and TCP flow control stop whatever is sent to it."""

from __future__ import annotations

import socket
import struct
import threading

from support.h2_frames import (
    ACK,
    HEADERS,
    INTERNAL_ERROR,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    frame,
    frames_in,
)


class HostileH2Mirror:
    """Listens on a free loopback port until `stop()`; counts streams it reset."""

    def __init__(self, mode: str) -> None:
        assert mode in ("reset", "stall")
        self.mode = mode
        self.resets = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(conn)
                self.connections += 1
            if self.mode == "reset":
                threading.Thread(target=self._reset_all, args=(conn,), daemon=True).start()

    def _reset_all(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            conn.sendall(frame(SETTINGS, 0, 0))
            while len(buffer) < len(PREFACE):
                buffer += conn.recv(65536)
            for f in frames_in(conn, buffer[len(PREFACE) :]):
                if f.kind == SETTINGS and not f.flags & ACK:
                    conn.sendall(frame(SETTINGS, ACK, 0))
                elif f.kind == HEADERS:
                    error = struct.pack(">I", INTERNAL_ERROR)
                    conn.sendall(frame(RST_STREAM, 0, f.stream, error))
                    with self._lock:
                        self.resets += 1
        except OSError:
            return
