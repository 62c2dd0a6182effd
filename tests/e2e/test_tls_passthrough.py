"""SNI routing (issue 17): on a passthrough listener (`protocol: tls`, or a Gateway's
PASSTHROUGH server) the ClientHello's server name picks a VirtualService `tls` route, and
the bytes go through unterminated to real nginx `ssl` upstreams. curl verifies nginx's
own certificate end to end, which only a passthrough can show; nginx's log says what SNI
arrived. A mirror on such a route is a config error that says why."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.nginx_tls import NginxTls
from support.pki import Authority

from pymirror import ConfigError, Proxy

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is missing"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is missing"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing"),
]


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[tuple[Authority, NginxTls, NginxTls]]:
    """A CA, and nginx `reviews` and `shop` serving certificates it signed."""
    pki = Authority(tmp_path)
    reviews = NginxTls("reviews", *pki.issue("reviews", "reviews.example.com"))
    shop = NginxTls("shop", *pki.issue("shop", "*.shop.example.com"))
    yield pki, reviews, shop
    reviews.stop()
    shop.stop()


def config(reviews: str, shop: str, route_extra: str = "") -> str:
    return f"""
listeners: [{{address: 127.0.0.1:0, protocol: tls}}]
services:
  reviews: {{endpoints: [{{address: {reviews}}}]}}
  shop: {{endpoints: [{{address: {shop}}}]}}
virtualServices:
  - name: edge
    hosts: [reviews.example.com, "*.shop.example.com"]
    tls:
      - match: [{{sniHosts: [reviews.example.com]}}]
        route: [{{destination: {{host: reviews}}}}]{route_extra}
      - match: [{{sniHosts: ["*.shop.example.com"]}}]
        route: [{{destination: {{host: shop}}}}]
"""


def curl(port: int, name: str, ca: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(ca),
         "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def port_of(proxy: Proxy) -> int:
    return int(proxy.addresses[0].rsplit(":", 1)[1])


def test_the_sni_picks_the_route_and_tls_passes_through_unterminated(
    upstreams: tuple[Authority, NginxTls, NginxTls],
) -> None:
    pki, reviews, shop = upstreams
    with Proxy(config(reviews.address, shop.address)) as proxy:
        port = port_of(proxy)
        # curl verifies each nginx's own certificate: pymirror holds none of them.
        assert curl(port, "reviews.example.com", pki.cert).stdout == "reviews\n"
        assert curl(port, "a.shop.example.com", pki.cert).stdout == "shop\n"
        # A name no route takes: the connection is closed, counted as unrouted.
        refused = curl(port, "other.example.com", pki.cert)
        assert refused.returncode != 0
        [listener] = proxy.stats()["listeners"]
        assert listener["unrouted"] == 1
    assert [r.sni for r in reviews.wait_for(1)] == ["reviews.example.com"]
    assert [r.sni for r in shop.wait_for(1)] == ["a.shop.example.com"]


def test_garbage_and_silent_clients_hold_only_themselves(
    upstreams: tuple[Authority, NginxTls, NginxTls],
) -> None:
    pki, reviews, shop = upstreams
    with Proxy(config(reviews.address, shop.address)) as proxy:
        port = port_of(proxy)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: reviews.example.com\r\n\r\n")
            # Not TLS: closed without an answer, nothing sent upstream.
            assert plain.recv(4096) == b""
        started = time.monotonic()
        assert curl(port, "reviews.example.com", pki.cert).stdout == "reviews\n"
        assert time.monotonic() - started < 1.0
        for s in silent:
            s.close()
        assert proxy.stats()["listeners"][0]["unrouted"] >= 1
    assert len(reviews.logged()) == 1


def test_a_mirror_on_a_tls_route_is_an_error_that_says_why(
    upstreams: tuple[Authority, NginxTls, NginxTls],
) -> None:
    _, reviews, shop = upstreams
    mirrored = "\n        mirror: {host: shop}"
    with pytest.raises(ConfigError) as raised:
        Proxy(config(reviews.address, shop.address, mirrored)).start()
    [problem] = raised.value.problems
    assert problem.path == ("virtualServices", 0, "tls", 0, "mirror")
    assert "could not complete a handshake meant for another server" in problem.message


def test_a_gateway_passthrough_server_serves_its_tls_routes(
    upstreams: tuple[Authority, NginxTls, NginxTls],
) -> None:
    pki, reviews, _ = upstreams
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rh, rp = reviews.address.rsplit(":", 1)
    yaml = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  servers:
    - port: {{number: {port}, name: tls, protocol: TLS}}
      hosts: ["*"]
      tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backends}}
spec:
  hosts: [reviews.internal]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {rh}, ports: {{tls: {rp}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge}}
spec:
  hosts: [reviews.example.com]
  gateways: [edge]
  tls:
    - match: [{{sniHosts: [reviews.example.com]}}]
      route: [{{destination: {{host: reviews.internal, port: {{number: 443}}}}}}]
"""
    with Proxy(yaml, listen=["127.0.0.1:0"]):
        assert curl(port, "reviews.example.com", pki.cert).stdout == "reviews\n"
    assert [r.sni for r in reviews.wait_for(1)] == ["reviews.example.com"]


def test_listener_and_route_settings_that_cannot_work_are_errors(
    upstreams: tuple[Authority, NginxTls, NginxTls], tmp_path: Path
) -> None:
    _, reviews, shop = upstreams
    text = config(reviews.address, shop.address)
    (tmp_path / "other").mkdir()
    cert, key = Authority(tmp_path / "other").issue("other", "other")
    terminating = f"protocol: tls, tls: {{certificate: {cert}, privateKey: {key}}}}}"
    for broken, message in [
        (text.replace("protocol: tls}", terminating), "takes no certificate"),
        (text.replace("[{sniHosts: [reviews.example.com]}]", "[{port: 443}]"), "sniHosts"),
    ]:
        with pytest.raises(ConfigError) as raised:
            Proxy(broken).start()
        assert message in str(raised.value)
