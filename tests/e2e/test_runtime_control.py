"""Runtime control on the admin endpoint of a running `pymirror run`: a mirror's share
changed without a reload (the copies follow, within binomial bounds), the log level, a
reload, the comparison data reset; and who may do it: POST only, never a request with an
`Origin` header, and off loopback only over TLS with the token."""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import seed_config
from support.backend import Backend
from support.client import Client
from support.pki import Authority
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token-for-tests-0123456789"


def call(
    admin: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    host, port = admin.rsplit(":", 1)
    conn = (
        http.client.HTTPSConnection(host, int(port), timeout=10, context=tls)
        if tls is not None
        else http.client.HTTPConnection(host, int(port), timeout=10)
    )
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        text = response.read()
        return (
            response.status,
            json.loads(text or b"{}"),
            {k.lower(): v for k, v in response.getheaders()},
        )
    finally:
        conn.close()


def copies_of(mirror: Backend, sent: int, client: Client, path: str) -> int:
    """Sends `sent` requests and returns how many copies reached `mirror` (bounded wait:
    a copy may land just after its primary's answer)."""
    before = len(mirror.seen)
    for i in range(sent):
        assert client.request("GET", f"{path}/{i}").status == 200
    time.sleep(0.3)
    return len(mirror.seen) - before


def within_binomial(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    # 5 standard deviations: a false failure once in about 1.7 million runs.
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture
def running(backend, tmp_path: Path):
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = PymirrorProcess(routes)
    try:
        yield proc, v2, routes
    finally:
        proc.stop()


def test_a_mirrors_percentage_changes_at_once_and_holds_across_a_reload(running) -> None:
    proc, v2, _ = running
    admin = proc.admin_address
    n, share = 1000, 0.2
    with Client(proc.address) as client:
        assert copies_of(v2, 50, client, "/before") == 50  # configured: 100%
        override = {"virtual_service": "reviews", "mirror": "reviews/v2", "percentage": 20}
        status, doc, _ = call(admin, "POST", "/runtime/mirror_percentage", override)
        assert (status, doc["mirrors"]) == (200, 1), doc
        copied = copies_of(v2, n, client, "/during")
        assert within_binomial(copied, n, share), f"{copied} copies of {n} at {share:.0%}"
        assert call(admin, "GET", "/runtime")[1]["mirror_percentage"] == [
            {"virtual_service": "reviews", "route": None, "mirror": "reviews/v2",
             "percentage": 20}
        ]  # fmt: skip
        # A reload reads the files again; the override still names a mirror, so it holds.
        status, doc, _ = call(admin, "POST", "/runtime/reload")
        assert (status, doc["reloaded"]) == (200, True), doc
        copied = copies_of(v2, n, client, "/reloaded")
        assert within_binomial(copied, n, share), f"{copied} copies of {n} after reload"
        # null: the configured 100% again.
        back = {**override, "percentage": None}
        assert call(admin, "POST", "/runtime/mirror_percentage", back)[0] == 200
        assert copies_of(v2, 50, client, "/after") == 50
    assert call(admin, "GET", "/runtime")[1]["mirror_percentage"] == []


def test_bad_overrides_are_refused_saying_why(running) -> None:
    proc, _, _ = running
    admin = proc.admin_address
    cases = [
        ({"virtual_service": "nope", "percentage": 5}, "no mirror matches"),
        ({"virtual_service": "reviews", "percentage": 101}, "from 0 to 100"),
        ({"virtual_service": "reviews", "percentage": "5"}, "must be a number"),
        ({"virtual_service": "reviews"}, "`percentage` is required"),
        ({"virtual_service": "reviews", "percentage": 5, "weight": 1}, "unknown field(s) weight"),
    ]
    for body, message in cases:
        status, doc, _ = call(admin, "POST", "/runtime/mirror_percentage", body)
        assert status == 400 and message in doc["error"], (body, doc)
    assert call(admin, "GET", "/runtime")[1]["mirror_percentage"] == []


def test_log_level_changes_and_reload_reports_a_refusal(running) -> None:
    proc, _, routes = running
    admin = proc.admin_address
    status, doc, _ = call(admin, "POST", "/runtime/log_level", {"level": "debug"})
    assert (status, doc["level"]) == (200, "debug")
    assert call(admin, "GET", "/runtime")[1]["log_level"] == "debug"
    status, doc, _ = call(admin, "POST", "/runtime/log_level", {"level": "loud"})
    assert status == 400 and "debug, info, warning, error, critical" in doc["error"]
    routes.write_text("virtualServices: [{name: broken")
    status, doc, _ = call(admin, "POST", "/runtime/reload")
    assert (status, doc["reloaded"]) == (409, False)
    assert "reload refused, still serving version" in doc["message"]
    with Client(proc.address) as client:
        assert client.request("GET", "/still").status == 200


def test_comparison_data_is_reset(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  shop:
    endpoints:
      - {{address: "{v1.address}", labels: {{version: v1}}}}
      - {{address: "{v2.address}", labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
virtualServices:
  - name: shop
    hosts: ["*"]
    http:
      - name: api
        route: [{{destination: {{host: shop, subset: v1}}}}]
        mirror: {{host: shop, subset: v2, compare: {{percentage: {{value: 100}}}}}}
""")
    proc = PymirrorProcess(routes)
    try:
        admin = proc.admin_address
        with Client(proc.address) as client:
            for i in range(5):
                client.request("GET", f"/{i}", host="shop")

        def compared() -> int:
            doc = call(admin, "GET", "/compare")[1]
            return sum(sum(e["results"].values()) for e in doc["endpoints"])

        deadline = time.monotonic() + 10
        while compared() < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert compared() == 5
        assert call(admin, "POST", "/runtime/compare/reset")[0] == 200
        assert compared() == 0
    finally:
        proc.stop()


def test_only_post_and_never_from_a_web_page(running) -> None:
    proc, v2, _ = running
    admin = proc.admin_address
    body = {"virtual_service": "reviews", "percentage": 0}
    status, doc, headers = call(admin, "GET", "/runtime/mirror_percentage")
    assert (status, headers.get("allow")) == (405, "POST")
    status, doc, _ = call(
        admin, "POST", "/runtime/mirror_percentage", body,
        headers={"Origin": "https://intranet.example", "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 403 and "Origin" in doc["error"]
    # Nothing changed: every request is still copied.
    with Client(proc.address) as client:
        assert copies_of(v2, 20, client, "/x") == 20


def test_off_loopback_it_takes_tls_and_the_token(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    authority = Authority(tmp_path)
    cert, key = authority.issue("admin", "localhost")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    body = {"virtual_service": "reviews", "percentage": 0}

    plain = PymirrorProcess(routes, "--admin", "0.0.0.0:0", "--admin-token-file", str(token_file))
    try:
        port = plain.admin_address.rsplit(":", 1)[1]
        status, doc, _ = call(f"127.0.0.1:{port}", "POST", "/runtime/mirror_percentage", body,
                              headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert status == 403 and "needs TLS" in doc["error"]
    finally:
        plain.stop()

    served = PymirrorProcess(
        routes, "--admin", "0.0.0.0:0", "--admin-token-file", str(token_file),
        "--admin-tls-cert", str(cert), "--admin-tls-key", str(key),
    )  # fmt: skip
    try:
        admin = f"127.0.0.1:{served.admin_address.rsplit(':', 1)[1]}"
        tls = ssl.create_default_context(cafile=str(authority.cert))
        for given in (None, "Bearer wrong-token-wrong-token", f"Basic {TOKEN}"):
            headers = {"Authorization": given} if given else {}
            status, doc, response = call(admin, "POST", "/runtime/mirror_percentage", body,
                                         headers=headers, tls=tls)  # fmt: skip
            assert (status, response.get("www-authenticate")) == (401, 'Bearer realm="pymirror"')
        status, doc, _ = call(admin, "POST", "/runtime/mirror_percentage", body,
                              headers={"Authorization": f"Bearer {TOKEN}"}, tls=tls)  # fmt: skip
        assert (status, doc["mirrors"]) == (200, 1), doc
        with Client(served.address) as client:
            assert copies_of(v2, 30, client, "/off") == 0
        # Reads stay open to the probes and the scraper, over TLS too.
        assert call(admin, "GET", "/runtime", tls=tls)[0] == 200
    finally:
        served.stop()


def test_a_short_token_file_is_refused_at_start(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config("127.0.0.1:1", "127.0.0.1:2"))
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    done = subprocess.run(
        [sys.executable, "-m", "pymirror.cli", "run", str(routes), "--admin", "127.0.0.1:0",
         "--admin-token-file", str(token_file)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "the token must be 16 characters or more" in done.stderr


def test_a_body_over_the_bound_is_refused_unread(running) -> None:
    """A control request is read up to 64 KiB, no further: a 1 MiB body (exact bytes on
    a raw socket, which never sends the rest) gets 413 and changes nothing."""
    proc, v2, _ = running
    host, port = proc.admin_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /runtime/mirror_percentage HTTP/1.1\r\nHost: admin\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
            + b"{"
            + b" " * (65 * 1024)
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    with Client(proc.address) as client:
        assert copies_of(v2, 10, client, "/unchanged") == 10
