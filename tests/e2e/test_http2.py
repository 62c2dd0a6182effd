"""HTTP/2 on the listener, with real clients (curl, h2load) and with exact frames: h2c with
prior knowledge and HTTP/1.1 on the same port, routed and mirrored alike; HTTP/1.1
backends reached with Host from `:authority`; rapid-reset and CONTINUATION floods end the
flooding connection and nobody else's."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import seed_config
from support.client import Client
from support.h2_frames import (
    CANCEL,
    CONTINUATION,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    Frame,
    frame,
    frames_in,
)

from pymirror import Proxy

pytestmark = pytest.mark.e2e


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name (RFC 7541 6.2.2); short
    strings only, no Huffman coding."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def get_block(path: bytes = b"/", authority: bytes = b"reviews") -> bytes:
    return (
        literal(b":method", b"GET")
        + literal(b":scheme", b"http")
        + literal(b":authority", authority)
        + literal(b":path", path)
    )


def read_frames(sock: socket.socket, until: int, limit: float = 10.0) -> list[Frame]:
    """Frames the peer sends until one of type `until` arrives or it closes."""
    sock.settimeout(limit)
    frames = []
    for f in frames_in(sock):
        frames.append(f)
        if f.kind == until:
            break
    return frames


def test_h2c_and_http1_on_one_port_both_mirrored(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        url = f"http://{proxy.addresses[0]}/reviews/7?lang=en"
        h2 = curl("--http2-prior-knowledge", "-i", "-H", "Host: reviews", url)
        with Client(proxy.addresses[0]) as client:
            h1 = client.request("GET", "/reviews/8")
        copies = v2.wait_for(2)
    assert h2.returncode == 0, h2.stderr
    assert h2.stdout.startswith("HTTP/2 200"), h2.stdout[:200]
    assert h2.stdout.endswith("v1")
    assert (h1.status, h1.body) == (200, b"v1")
    by_path = {c.path: c for c in copies}
    # The HTTP/1.1 backends got Host from :authority, the copy its shadow.
    primary = next(s for s in v1.seen if s.path == "/reviews/7")
    assert primary.headers["host"] == "reviews" and primary.query == "lang=en"
    assert by_path["/reviews/7"].headers["host"] == "reviews-shadow"
    assert by_path["/reviews/7"].headers["x-request-id"] == primary.headers["x-request-id"]


def test_h2c_request_body_reaches_both(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    body = bytes(range(256)) * 1024  # 256 KiB: the stream window's size, several frames
    (tmp_path / "body").write_bytes(body)
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        url = f"http://{proxy.addresses[0]}/upload"
        sent = curl(
            "--http2-prior-knowledge", "-H", "Host: reviews",
            "--data-binary", f"@{tmp_path / 'body'}", url,
        )  # fmt: skip
        [copy] = v2.wait_for(1)
    assert sent.returncode == 0 and sent.stdout == "v1", sent.stderr
    assert copy.body == body
    assert v1.seen[0].body == body


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_many_streams_per_connection_all_succeed(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        run = subprocess.run(
            ["h2load", "-n", "400", "-c", "2", "-m", "20", "-H", "Host: reviews",
             f"http://{proxy.addresses[0]}/load"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        v2.wait_for(400, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "400 succeeded, 0 failed, 0 errored" in run.stdout, run.stdout
    assert "status codes: 400 2xx" in run.stdout, run.stdout
    assert sum(1 for s in v1.seen if s.path == "/load") == 400


def test_rapid_reset_flood_ends_that_connection_only(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    attempts = 5000
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as sock:
            flood = [PREFACE, frame(SETTINGS, 0, 0)]
            for i in range(attempts):
                stream = 2 * i + 1
                flood.append(frame(HEADERS, END_HEADERS | END_STREAM, stream, get_block(b"/flood")))
                flood.append(frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL)))
            # Closed on us mid-flood: what we want.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"".join(flood))
            frames = read_frames(sock, until=GOAWAY)
        # Everyone else is served.
        with Client(proxy.addresses[0]) as client:
            assert client.request("GET", "/after").status == 200
        h2 = curl(
            "--http2-prior-knowledge", "-H", "Host: reviews", f"http://{proxy.addresses[0]}/h2"
        )
        assert h2.stdout == "v1", h2.stderr
    assert any(f.kind == GOAWAY for f in frames), [f.kind for f in frames][:20]
    flooded = sum(1 for s in v1.seen if s.path == "/flood")
    assert flooded < attempts // 10, f"{flooded} of {attempts} reset streams were forwarded"


def test_continuation_flood_ends_that_connection_only(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        sent = 0
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
            sock.sendall(frame(HEADERS, END_STREAM, 1, get_block(b"/continued")))
            junk = b"".join(literal(b"x-junk", b"j" * 100) for _ in range(150))  # ~16 KiB
            try:
                # Up to 64 MiB of CONTINUATION without END_HEADERS: the proxy must stop it.
                while sent < 64 * 2**20:
                    sock.sendall(frame(CONTINUATION, 0, 1, junk))
                    sent += len(junk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        with Client(proxy.addresses[0]) as client:
            assert client.request("GET", "/after").status == 200
    assert sent < 64 * 2**20, "the proxy read 64 MiB of one header block"
    assert not any(s.path == "/continued" for s in v1.seen)


def test_an_idle_http2_connection_gets_goaway_after_the_idle_timeout(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address) + "\nlimits: {idleTimeout: 1s}\n"
    with Proxy(config) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with (
            socket.create_connection((host, int(port))) as busy,
            socket.create_connection((host, int(port))) as quiet,
        ):
            for sock in (busy, quiet):
                sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
                sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1, get_block(b"/one")))
            started = time.monotonic()
            # `busy` sends a request every 0.4 s for 2 s: never idle for 1 s.
            for i in range(5):
                time.sleep(0.4)
                stream = 3 + 2 * i
                busy.sendall(frame(HEADERS, END_HEADERS | END_STREAM, stream, get_block(b"/busy")))
            quiet_frames = read_frames(quiet, until=GOAWAY, limit=5)
            goaway_after = time.monotonic() - started
            busy.settimeout(0.3)
            busy_frames = []
            with contextlib.suppress(TimeoutError):
                busy_frames = list(frames_in(busy))
    assert any(f.kind == GOAWAY for f in quiet_frames)
    assert 0.9 < goaway_after < 3.0, goaway_after
    assert not any(f.kind == GOAWAY for f in busy_frames)
    assert sum(1 for s in v1.seen if s.path == "/busy") == 5
