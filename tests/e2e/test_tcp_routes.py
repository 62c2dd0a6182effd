"""TCP routes with real peers: Redis behind a mirrored tcp route, and a bulk transfer."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import most_connect_attempts
from prometheus_client.parser import text_string_to_metric_families
from support.ports import closed_port, reserved_port

from pymirror import Proxy
from pymirror.metrics import Scrape, render

pytestmark = pytest.mark.e2e

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


class Redis:
    """A real redis-server on loopback, without persistence."""

    def __init__(self) -> None:
        assert REDIS is not None
        self.port = reserved_port()
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.process = subprocess.Popen(
            [REDIS, *args, "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with Resp(f"127.0.0.1:{self.port}") as r:
                    if r.call("PING") == "PONG":
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, key: str) -> object:
        with Resp(self.address) as r:
            return r.call("GET", key)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait()


class Resp:
    """A raw RESP2 client over one socket: what a Redis client library does, visibly."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, *args: str | bytes) -> None:
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        out = [b"*%d\r\n" % len(parts)]
        out += [b"$%d\r\n%s\r\n" % (len(p), p) for p in parts]
        self.sock.sendall(b"".join(out))

    def read(self) -> object:
        line = self.file.readline()
        if not line:
            raise ConnectionError("closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise AssertionError(f"not RESP: {line!r}")

    def call(self, *args: str | bytes) -> object:
        self.send(*args)
        return self.read()


@pytest.fixture
def redis_pair() -> Iterator[tuple[Redis, Redis]]:
    primary, mirror = Redis(), Redis()
    try:
        yield primary, mirror
    finally:
        primary.stop()
        mirror.stop()


def tcp_config(primary: str, mirror: str | None, *, extra: str = "") -> str:
    mirror_lines = "\n        mirror: {host: shadow}\n        mirrorPercentage: {value: 100}"
    return f"""
listeners:
  - {{address: 127.0.0.1:0, protocol: tcp}}
services:
  cache: {{endpoints: [{{address: {primary}}}]}}
  shadow: {{endpoints: [{{address: {mirror or closed_port()}}}]}}
{extra}
virtualServices:
  - name: cache
    hosts: [cache]
    tcp:
      - route:
          - destination: {{host: cache}}{mirror_lines if mirror else ""}
"""


def mirror_stats(proxy: Proxy, timeout: float = 10.0) -> dict:
    """The only tcp mirror's stats once no mirror connection is open."""
    deadline = time.monotonic() + timeout
    while True:
        [m] = proxy.stats()["tcp_mirrors"]
        if m["active"] == 0 or time.monotonic() > deadline:
            return dict(m)
        time.sleep(0.02)


@needs_redis
def test_every_write_reaches_both_and_reads_come_from_the_primary(redis_pair) -> None:
    primary, mirror = redis_pair
    with Proxy(tcp_config(primary.address, mirror.address)) as proxy:
        address = proxy.addresses[0]
        with Resp(address) as client:
            for i in range(200):
                assert client.call("SET", f"k{i}", f"v{i}") == "OK"
            assert client.call("INCRBY", "counter", "5") == 5
        # A real client too: redis-cli over the proxy.
        host, port = address.rsplit(":", 1)
        cli = subprocess.run(
            ["redis-cli", "-h", host, "-p", port, "SET", "from-cli", "yes"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert cli.stdout.strip() == "OK"
        stats = mirror_stats(proxy)
        # Reads are answered by the primary alone: make the two differ, then read.
        with Resp(mirror.address) as direct:
            direct.call("SET", "k7", "mirror-only")
        with Resp(address) as client:
            assert client.call("GET", "k7") == b"v7"
        deadline = time.monotonic() + 5
        while (route := proxy.stats()["tcp"][0])["connections_active"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    for i in range(200):
        assert primary.get(f"k{i}") == mirror.get(f"k{i}") or i == 7
    assert primary.get("counter") == mirror.get("counter") == b"5"
    assert primary.get("from-cli") == mirror.get("from-cli") == b"yes"
    assert stats["opened"] == stats["completed"] == 2
    assert stats["bytes_dropped"] == 0
    assert route["connections_total"] == 3


@needs_redis
def test_a_killed_mirror_changes_nothing_for_the_client(redis_pair) -> None:
    primary, mirror = redis_pair
    with Proxy(tcp_config(primary.address, mirror.address)) as proxy:
        with Resp(proxy.addresses[0]) as client:
            assert client.call("SET", "before", "1") == "OK"
            mirror.process.kill()
            mirror.process.wait()
            for i in range(100):
                assert client.call("SET", f"after{i}", "x" * 1000) == "OK"
            assert client.call("GET", "before") == b"1"
        # A new connection while the mirror is gone: refused there, served here.
        with Resp(proxy.addresses[0]) as client:
            assert client.call("SET", "later", "2") == "OK"
        stats = mirror_stats(proxy)
    assert primary.get("after99") == b"x" * 1000
    assert stats["cut"]["failed"] == 1
    assert stats["cut"]["connect_failed"] == 1


@needs_redis
def test_a_dead_mirror_is_backed_off_not_dialled_per_connection(redis_pair) -> None:
    primary, _ = redis_pair
    n = 30
    with Proxy(tcp_config(primary.address, closed_port())) as proxy:
        started = time.monotonic()
        for i in range(n):
            with Resp(proxy.addresses[0]) as client:
                assert client.call("SET", f"dead{i}", "x") == "OK"
        elapsed = time.monotonic() - started
        stats = mirror_stats(proxy)
    assert primary.get(f"dead{n - 1}") == b"x"
    cut = stats["cut"]
    assert stats["opened"] == cut["connect_failed"] + cut["no_endpoint"] == n, stats
    assert 1 <= cut["connect_failed"] <= most_connect_attempts(elapsed), (stats, elapsed)


@needs_redis
def test_a_stalled_mirror_is_cut_and_the_client_never_waits(redis_pair) -> None:
    """SIGSTOP: the mirror's kernel still accepts, nobody reads. Its socket buffers and then
    the bounded queue (64 KiB here) fill; the mirror connection is cut, the client goes on."""
    primary, mirror = redis_pair
    extra = "mirrorDefaults: {maxBodyBytes: 64KiB}"
    with Proxy(tcp_config(primary.address, mirror.address, extra=extra)) as proxy:
        os.kill(mirror.process.pid, signal.SIGSTOP)
        try:
            value = os.urandom(1 << 20)
            slowest = 0.0
            with Resp(proxy.addresses[0]) as client:
                for i in range(48):
                    started = time.monotonic()
                    assert client.call("SET", f"big{i}", value) == "OK"
                    slowest = max(slowest, time.monotonic() - started)
                assert client.call("GET", "big47") == value
            [m] = proxy.stats()["tcp_mirrors"]
        finally:
            os.kill(mirror.process.pid, signal.SIGCONT)
    assert m["cut"]["buffer_full"] == 1, m
    assert m["bytes_dropped"] > 0
    assert slowest < 2.0, slowest
    assert primary.get("big0") == value


class HashSink:
    """A TCP peer that hashes everything it receives and, after the client's FIN, answers
    with the SHA-256 hex digest and the byte count."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return  # closed before any connection came
        with conn:
            digest, total = hashlib.sha256(), 0
            buf = bytearray(1 << 20)
            while n := conn.recv_into(buf):
                digest.update(memoryview(buf)[:n])
                total += n
            conn.sendall(f"{digest.hexdigest()} {total}".encode())

    def close(self) -> None:
        self.sock.close()


def test_bulk_transfer_arrives_byte_identical_with_half_close() -> None:
    sink = HashSink()
    size = 256 * 1024 * 1024
    block = os.urandom(1 << 20)
    try:
        with Proxy(tcp_config(sink.address, None)) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            expected = hashlib.sha256()
            with socket.create_connection((host, int(port)), timeout=30) as s:
                started = time.monotonic()
                for i in range(size // len(block)):
                    # Every block differs: a reordered or repeated chunk changes the digest.
                    chunk = i.to_bytes(8, "big") + block[8:]
                    expected.update(chunk)
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)
                answer = b""
                while data := s.recv(4096):
                    answer += data
                elapsed = time.monotonic() - started
            [route] = proxy.stats()["tcp"]
    finally:
        sink.close()
    assert answer.decode() == f"{expected.hexdigest()} {size}"
    assert route["bytes_received"] == size
    rate = size / elapsed / 1e9
    print(f"\n256 MiB through a tcp route: {rate:.2f} GB/s (client and sink in Python)")


def test_tcp_metrics_are_exported() -> None:
    sink = HashSink()
    try:
        with Proxy(tcp_config(sink.address, closed_port())) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"hello")
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
            mirror_stats(proxy)
            text = render(Scrape(proxy.stats(), proxy.snapshot))
    finally:
        sink.close()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, host: str, **extra: str) -> float:
        labels = {"virtual_service": "cache", "route": "0", "host": host, "subset": "", **extra}
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("pymirror_tcp_connections_total", "cache") == 1
    assert value("pymirror_tcp_bytes_total", "cache", direction="to_upstream") == 5
    assert value("pymirror_tcp_mirror_cut_total", "shadow", reason="connect_failed") == 1
    assert value("pymirror_tcp_mirror_bytes_total", "shadow", result="dropped") == 5


def test_unrouted_connections_are_closed_and_counted() -> None:
    config = """
listeners: [{address: 127.0.0.1:0, protocol: tcp}]
services: {cache: {endpoints: [{address: 127.0.0.1:9}]}}
virtualServices:
  - name: cache
    hosts: [cache]
    tcp:
      - match: [{port: 1}]
        route: [{destination: {host: cache}}]
"""
    with Proxy(config) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            assert s.recv(10) == b""
        deadline = time.monotonic() + 5
        while proxy.stats()["listeners"][0]["unrouted"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_shutdown_waits_for_spliced_connections_up_to_the_drain_deadline() -> None:
    """A spliced connection has no request boundary: shutdown lets it run until the drain
    deadline, then cuts it, and says it did not drain."""
    sink = HashSink()
    try:
        proxy = Proxy(tcp_config(sink.address, None)).start()
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"still open")
            deadline = time.monotonic() + 5
            while proxy.stats()["tcp"][0]["bytes_received"] < 10:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            started = time.monotonic()
            assert proxy.close(drain=0.3) is False
            assert 0.3 <= time.monotonic() - started < 5
            # Cut: the client sees the connection end.
            s.settimeout(5)
            assert s.recv(10) == b""
    finally:
        sink.close()


class Echo:
    """A TCP peer answering every read with its name and the bytes read, on any number of
    connections."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(self.name + b":" + data)

    def close(self) -> None:
        self.sock.close()


def ask(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    return s.recv(65536)


def test_a_reload_routes_new_connections_and_keeps_open_ones() -> None:
    a, b = Echo(b"a"), Echo(b"b")
    try:
        with Proxy(tcp_config(a.address, None)) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as old:
                assert ask(old, b"1") == b"a:1"
                proxy.reload(tcp_config(b.address, None))
                with socket.create_connection((host, int(port)), timeout=5) as new:
                    assert ask(new, b"2") == b"b:2"
                # The open connection stays on the destination it was given.
                assert ask(old, b"3") == b"a:3"
    finally:
        a.close()
        b.close()


def test_max_connections_applies_to_tcp_listeners() -> None:
    a = Echo(b"a")
    try:
        config = tcp_config(a.address, None, extra="limits: {maxConnections: 1}")
        with Proxy(config) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as first:
                assert ask(first, b"1") == b"a:1"
                # Closed unread at accept: an EOF, or a reset if the close raced a send.
                with (
                    socket.create_connection((host, int(port)), timeout=5) as second,
                    contextlib.suppress(ConnectionResetError),
                ):
                    assert second.recv(10) == b""
                assert ask(first, b"2") == b"a:2"
                assert proxy.stats()["listeners"][0]["connections_refused"] == 1
    finally:
        a.close()


def test_an_idle_tcp_connection_is_closed_and_counted() -> None:
    a = Echo(b"a")
    try:
        with Proxy(tcp_config(a.address, None, extra="limits: {idleTimeout: 200ms}")) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                assert ask(s, b"1") == b"a:1"
                started = time.monotonic()
                assert s.recv(10) == b""
                assert time.monotonic() - started >= 0.15
            deadline = time.monotonic() + 5
            while proxy.stats()["tcp"][0]["idle_timeouts"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        a.close()


def test_an_upstream_that_never_answers_the_connect_is_given_up_after_the_timeout() -> None:
    """A listener whose accept queue is full drops further SYNs: a connect to it hangs, as
    to a host that blackholes them. `upstream.connectTimeout` (2 s here, the default is 1 s)
    ends the wait; the client's connection is closed and the failure counted."""
    blackhole = socket.create_server(("127.0.0.1", 0), backlog=0)
    host, port = blackhole.getsockname()[:2]
    filler = socket.create_connection((host, port), timeout=5)  # takes the one queue place
    try:
        config = tcp_config(f"{host}:{port}", None, extra="upstream: {connectTimeout: 2s}")
        with Proxy(config) as proxy:
            proxy_host, proxy_port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((proxy_host, int(proxy_port)), timeout=10) as s:
                started = time.monotonic()
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(10) == b""
                waited = time.monotonic() - started
            assert 1.9 <= waited < 10, waited
            [route] = proxy.stats()["tcp"]
            assert (route["connect_failed"], route["connections_active"]) == (1, 0)
    finally:
        filler.close()
        blackhole.close()


@needs_redis
def test_a_service_entry_tcp_port_makes_the_listener_tcp() -> None:
    """Istio's form: the MirrorProxy listener writes no `protocol`; the ServiceEntry port
    with its number says TCP. The rule needs the real port, so pick it first."""
    redis = Redis()
    port = reserved_port()
    config = f"""\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {{name: proxy, namespace: default}}
spec:
  listeners: [{{address: 127.0.0.1:{port}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cache, namespace: default}}
spec:
  hosts: [cache.internal]
  ports: [{{number: {port}, name: tcp-redis, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-redis: {redis.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cache, namespace: default}}
spec:
  hosts: [cache.internal]
  tcp:
  - route: [{{destination: {{host: cache.internal}}}}]
"""
    try:
        with Proxy(config) as proxy:
            snapshot = proxy.snapshot
            assert snapshot is not None and snapshot["listeners"][0].get("protocol") == "tcp"
            with Resp(f"127.0.0.1:{port}") as client:
                assert client.call("SET", "via", "service-entry") == "OK"
                assert client.call("GET", "via") == b"service-entry"
            [route] = proxy.stats()["tcp"]
        # Spliced to the real Redis, which holds the value.
        assert redis.get("via") == b"service-entry"
    finally:
        redis.stop()
    assert route["connections_total"] == 1


@needs_redis
def test_a_mirror_proxy_tcp_mirror_copies_writes_to_the_mirror_redis(redis_pair) -> None:
    """Istio's form with the VirtualService as Istio accepts it (its TCPRoute has no
    mirror): the MirrorProxy's `tcpMirrors` gives the route its mirror."""
    primary, mirror = redis_pair
    config = f"""\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {{name: proxy, namespace: default}}
spec:
  listeners: [{{address: 127.0.0.1:0, protocol: tcp}}]
  tcpMirrors:
  - virtualService: cache
    mirror: {{host: cache-next}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cache, namespace: default}}
spec:
  hosts: [cache]
  ports: [{{number: 6379, name: tcp-redis, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-redis: {primary.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cache-next, namespace: default}}
spec:
  hosts: [cache-next]
  ports: [{{number: 6379, name: tcp-redis, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-redis: {mirror.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cache, namespace: default}}
spec:
  hosts: [cache]
  tcp:
  - route: [{{destination: {{host: cache}}}}]
"""
    with Proxy(config) as proxy:
        with Resp(proxy.addresses[0]) as client:
            assert client.call("SET", "via", "tcp-mirrors") == "OK"
        stats = mirror_stats(proxy)
    assert primary.get("via") == mirror.get("via") == b"tcp-mirrors"
    assert stats["opened"] == stats["completed"] == 1
