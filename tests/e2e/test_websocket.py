"""WebSocket upgrades spliced through the proxy, with real `websockets` peers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
from conftest import seed_config
from support.ports import closed_port
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from pymirror import Proxy
from pymirror.engine import Stats

pytestmark = pytest.mark.e2e


@contextmanager
def ws_server(handler: Callable[[ServerConnection], None]) -> Iterator[str]:
    """A WebSocket server on a port of its own; yields its address."""
    server = serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.socket.getsockname()[:2]
        yield f"{host}:{port}"
    finally:
        server.shutdown()
        thread.join(5)


def echo(conn: ServerConnection) -> None:
    for message in conn:
        conn.send(message)


class Recorder:
    """A mirror that keeps every message it gets and answers each (unread)."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.paths: list[str] = []
        self.hosts: list[str | None] = []

    def __call__(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        self.paths.append(conn.request.path)
        self.hosts.append(conn.request.headers.get("Host"))
        for message in conn:
            self.messages.append(message)
            # Once the client's close has arrived, sending fails; the messages
            # queued before it are still to be read.
            with suppress(ConnectionClosed):
                conn.send(b"mirror says " + (message if isinstance(message, bytes) else b"text"))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[str | bytes]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)


def client(proxy_address: str, path: str = "/chat") -> ClientConnection:
    host, port = proxy_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    # The URI names the virtual host; the socket goes to the proxy.
    return connect(f"ws://reviews{path}", sock=sock, open_timeout=10, close_timeout=5)


def messages(n: int) -> list[str | bytes]:
    """Text and binary frames, small and large, in a known order."""
    out: list[str | bytes] = []
    for i in range(n):
        if i % 3 == 0:
            out.append(f"text message {i}")
        elif i % 3 == 1:
            out.append(bytes([i % 256]) * (i * 37 % 5000 + 1))
        else:
            out.append(bytes(range(256)) * 300)  # 75 KiB: several reads
    return out


def test_messages_cross_in_order_both_ways() -> None:
    with (
        ws_server(echo) as v1,
        ws_server(echo) as v2,
        Proxy(seed_config(v1, v2, mirror=None)) as proxy,
        client(proxy.addresses[0]) as ws,
    ):
        sent = messages(60)
        for message in sent:
            ws.send(message)
        assert [ws.recv(timeout=10) for _ in sent] == sent
        # Interleaved as well: one at a time.
        for message in messages(10):
            ws.send(message)
            assert ws.recv(timeout=10) == message
        # The session still counts as the listener's open connection.
        assert proxy.stats()["listeners"][0]["connections_active"] == 1
        ws.close()
        deadline = time.monotonic() + 10
        while proxy.stats()["listeners"][0]["connections_active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.stats()["listeners"][0]["connections_active"] == 0
        [session] = proxy.stats()["upgrades"]
        # Wire bytes: permessage-deflate (negotiated by these peers) shrinks them.
        assert session["bytes_received"] > 0 and session["bytes_sent"] > 0


def test_a_refused_upgrade_is_an_ordinary_response(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address, mirror=None)) as proxy:
        with pytest.raises(Exception) as refused:
            client(proxy.addresses[0])
        assert "200" in str(refused.value)
        [seen] = v1.seen
        assert seen.path == "/chat"
        assert seen.headers["upgrade"] == "websocket"


def test_the_mirror_sees_the_client_frames_in_order() -> None:
    recorder = Recorder()
    with (
        ws_server(echo) as v1,
        ws_server(recorder) as v2,
        Proxy(seed_config(v1, v2)) as proxy,
    ):
        sent = messages(45)
        with client(proxy.addresses[0], "/chat?room=7") as ws:
            for message in sent:
                ws.send(message)
            assert [ws.recv(timeout=10) for _ in sent] == sent
        assert recorder.wait_for(len(sent)) == sent
        stats = _settled(proxy)
        [session] = stats["upgrades"]
        assert (session["connections_total"], session["connections_active"]) == (1, 0)
        [mirror] = stats["upgrade_mirrors"]
        assert (mirror["opened"], mirror["completed"]) == (1, 1), mirror
        assert mirror["bytes_sent"] == session["bytes_received"] > 0
    assert recorder.paths == ["/chat?room=7"]
    assert recorder.hosts == ["reviews-shadow"]


def _settled(proxy: Proxy) -> Stats:
    """Stats once every session and mirror feed has ended."""
    deadline = time.monotonic() + 10
    while True:
        stats = proxy.stats()
        busy = sum(s["connections_active"] for s in stats["upgrades"]) + sum(
            m["active"] for m in stats["upgrade_mirrors"]
        )
        if busy == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


@pytest.mark.parametrize("mirror_kind", ["refused", "not websocket", "silent"])
def test_a_dead_mirror_changes_nothing(backend, mirror_kind: str) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (in the backlog), never answers
    try:
        with ws_server(echo) as v1:
            if mirror_kind == "refused":
                v2 = closed_port()
            elif mirror_kind == "not websocket":
                v2 = backend("v2").address
            else:
                v2 = "{}:{}".format(*silent.getsockname())
            with Proxy(seed_config(v1, v2)) as proxy:
                with client(proxy.addresses[0]) as ws:
                    sent = messages(30)
                    started = time.monotonic()
                    for message in sent:
                        ws.send(message)
                    assert [ws.recv(timeout=10) for _ in sent] == sent
                    assert time.monotonic() - started < 5
                if mirror_kind != "silent":
                    [mirror] = _settled(proxy)["upgrade_mirrors"]
                    reason = "connect_failed" if mirror_kind == "refused" else "not_upgraded"
                    assert mirror["cut"][reason] == 1, mirror
    finally:
        silent.close()


def test_shutdown_waits_for_an_open_session_up_to_the_drain_deadline() -> None:
    with ws_server(echo) as v1, ws_server(echo) as v2:
        proxy = Proxy(seed_config(v1, v2, mirror=None)).start()
        with client(proxy.addresses[0]) as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            started = time.monotonic()
            assert proxy.close(drain=0.3) is False
            assert 0.3 <= time.monotonic() - started < 5
            # Cut: the client sees its connection end.
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)


def test_an_open_session_holds_its_place_in_the_destinations_connection_limit() -> None:
    """`connectionPool.tcp.maxConnections: 1`: while one session is open a second upgrade
    overflows (503) instead of opening a second upstream connection; once it closes, the
    place is free again."""
    with ws_server(echo) as v1:
        config = f"""
listeners: [{{address: 127.0.0.1:0, host: reviews}}]
services:
  reviews:
    endpoints: [{{address: {v1}}}]
    trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 1}}}}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews}}}}]
"""
        with Proxy(config) as proxy:
            with client(proxy.addresses[0]) as first:
                first.send("one")
                assert first.recv(timeout=10) == "one"
                with pytest.raises(Exception) as refused:
                    client(proxy.addresses[0])
                assert "503" in str(refused.value)
            deadline = time.monotonic() + 10
            while _settled(proxy)["upgrades"][0]["connections_active"]:
                assert time.monotonic() < deadline
            with client(proxy.addresses[0]) as again:
                again.send("two")
                assert again.recv(timeout=10) == "two"
