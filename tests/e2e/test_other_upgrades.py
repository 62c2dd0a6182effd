"""Upgrades other than WebSocket are spliced once the upstream answers 101 (mirrors
included); `h2c` is not, and is served as plain HTTP/1.1."""

from __future__ import annotations

import socket

import pytest
from conftest import seed_config
from support.client import Client
from support.upgrade_peer import UpgradeEcho

from pymirror import Proxy

pytestmark = pytest.mark.e2e


def upgrade(address: str, protocol: str) -> tuple[socket.socket, bytes]:
    """Opens a connection to the proxy, asks for `protocol`; returns it and the answer head."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(
            f"GET /stream?id=4 HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\n"
            f"Upgrade: {protocol}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: nothing of the session is read as head
            assert chunk, head
            head += chunk
    except BaseException:
        sock.close()
        raise
    return sock, head


def test_a_custom_upgrade_is_spliced_both_ways_and_mirrored() -> None:
    v1, v2 = UpgradeEcho().start(), UpgradeEcho().start()
    try:
        with Proxy(seed_config(v1.address, v2.address)) as proxy:
            sock, head = upgrade(proxy.addresses[0], "echo/1")
            with sock:
                assert head.startswith(b"HTTP/1.1 101 "), head
                assert b"upgrade: echo/1" in head.lower()
                sent = b""
                for i in range(50):
                    chunk = bytes([i]) * (i * 997 % 20_000 + 1)
                    sock.sendall(chunk)
                    sent += chunk
                    got = b""
                    while len(got) < len(chunk):
                        got += sock.recv(65536)
                    assert got == chunk
                # Half-close crosses: the server sees our end, ends its side, we see EOF.
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(1) == b""
            v1.wait_finished(1)
            v2.wait_finished(1)
            assert v1.received == [sent]
            assert v2.received == [sent], "the mirror got every client byte, in order"
            assert b"host: reviews-shadow" in v2.heads[0].lower()
            assert v2.heads[0].startswith(b"GET /stream?id=4 HTTP/1.1")
            [session] = proxy.stats()["upgrades"]
            assert session["bytes_received"] == len(sent)
    finally:
        v1.stop()
        v2.stop()


def test_h2c_is_served_as_http_11_without_its_upgrade_headers(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address, mirror=None)) as proxy:
        with Client(proxy.addresses[0]) as client:
            reply = client.request(
                "GET",
                "/",
                headers={
                    "Connection": "Upgrade, HTTP2-Settings",
                    "Upgrade": "h2c",
                    "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA",
                },
            )
        assert (reply.status, reply.body) == (200, b"v1")
        [seen] = v1.seen
        assert {"upgrade", "http2-settings"}.isdisjoint(seen.headers)
        assert proxy.stats()["upgrades"] == []
