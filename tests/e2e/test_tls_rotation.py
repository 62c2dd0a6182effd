"""Certificate rotation under load (issue 17): `pymirror run` serving HTTPS while clients
keep asking, over one kept-alive connection and over a new connection per request (a
real OpenSSL client, Python's ssl), and the secret mount is swapped the way Kubernetes
swaps it (a `..data` symlink). No request fails; new handshakes show the new certificate
within the poll interval; the kept-alive connection goes on with the one it had."""

from __future__ import annotations

import http.client
import shutil
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import seed_config
from support.pki import Authority
from support.process import PymirrorProcess
from support.secret_mount import mount

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is missing"),
]

#: How long the load runs: long enough for several polls (0.2 s) after the swap.
LOAD_SECONDS = 4.0


class Load:
    """Requests in a loop until stopped: over one kept-alive connection (`kept`) and over
    a new connection each (`fresh`), counting failures and the certificates seen."""

    def __init__(self, port: int, ca: Path) -> None:
        self.context = ssl.create_default_context(cafile=str(ca))
        self.port = port
        self.failures: list[str] = []
        self.served = 0
        self.subjects: list[str] = []
        self.stop = threading.Event()

    def connect(self) -> http.client.HTTPSConnection:
        # The certificates name 127.0.0.1 too: verified against the address.
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        conn.connect()
        return conn

    def ask(self, conn: http.client.HTTPSConnection) -> None:
        conn.request("GET", "/", headers={"Host": "reviews"})
        response = conn.getresponse()
        body = response.read()
        if (response.status, body) != (200, b"v1"):
            self.failures.append(f"{response.status} {body[:40]!r}")
        self.served += 1

    def kept(self) -> None:
        conn = self.connect()
        while not self.stop.is_set():
            try:
                self.ask(conn)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"kept: {exc!r}")
                return
        conn.close()

    def fresh(self) -> None:
        while not self.stop.is_set():
            try:
                conn = self.connect()
                assert conn.sock is not None
                cert = conn.sock.getpeercert()
                subject = dict(x[0] for x in cert["subject"]) if cert else {}
                self.subjects.append(str(subject.get("commonName")))
                self.ask(conn)
                conn.close()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"fresh: {exc!r}")


def test_a_rotation_under_load_fails_no_request(backend: Callable, tmp_path: Path) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    pki = Authority(tmp_path)
    secret = tmp_path / "secret"
    secret.mkdir()
    mount(secret, "1", pki.issue("reviews-old", "reviews"))
    config = tmp_path / "routes.yaml"
    tls = f"    tls: {{certificate: {secret / 'tls.crt'}, privateKey: {secret / 'tls.key'}}}\n"
    text = seed_config(v1.address, v2.address).replace(
        "    host: reviews\n", "    host: reviews\n" + tls, 1
    )
    config.write_text(text)
    proxy = PymirrorProcess(config, "--tls-poll-interval", "0.2")
    try:
        load = Load(int(proxy.address.rsplit(":", 1)[1]), pki.cert)
        threads = [threading.Thread(target=f) for f in (load.kept, load.fresh)]
        for t in threads:
            t.start()
        time.sleep(LOAD_SECONDS / 4)
        swapped_at = len(load.subjects)
        mount(secret, "2", pki.issue("reviews-new", "reviews"))
        time.sleep(LOAD_SECONDS * 3 / 4)
        load.stop.set()
        for t in threads:
            t.join(timeout=20)
        proxy.wait_for(r"TLS files changed .*: reloading")
    finally:
        proxy.stop()
    assert load.failures == []
    assert load.served > 100
    # Before the swap the old certificate; within the polls after it, the new one, and
    # from then on only the new one.
    seen = load.subjects
    assert set(seen[:swapped_at]) == {"reviews-old"}
    first_new = seen.index("reviews-new")
    assert set(seen[first_new:]) == {"reviews-new"}
    assert first_new > swapped_at - 1
