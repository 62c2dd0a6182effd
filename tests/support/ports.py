"""Loopback ports that stay reserved for as long as a test needs them.

A port that a test binds, closes and hands on is free for anyone meanwhile: the kernel may
give it to another listener, or use it as the source port of an outgoing connection (the
proxy's own upstream connections among them; a connect to such a port can even connect to
itself). Here a port is held by a bound socket that never listens, which connectors find
refused (ECONNREFUSED) and which no other socket can bind, nor the kernel pick as an
ephemeral port. The sockets are closed by `release()`, which the autouse fixture in
conftest calls after every test.
"""

from __future__ import annotations

import socket
import threading

_lock = threading.Lock()
_held: list[socket.socket] = []


def _hold(sock: socket.socket) -> int:
    try:
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    with _lock:
        _held.append(sock)
    port: int = sock.getsockname()[1]
    return port


def closed_port() -> str:
    """`127.0.0.1:PORT` where connections are refused until the test ends."""
    return f"127.0.0.1:{_hold(socket.socket())}"


def reserved_port() -> int:
    """A port on which nothing listens yet, for a program that binds it itself with
    SO_REUSEADDR (as Go's net.Listen and redis do): until it does, connections are refused
    and no other socket can take the port (which a plain bind could not share)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return _hold(sock)


def release() -> None:
    """Closes every port held so far."""
    with _lock:
        held, _held[:] = list(_held), []
    for sock in held:
        sock.close()
