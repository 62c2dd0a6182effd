"""Istio's Gateway resource (issue 17): each server is a listener on the IP that
`--listen` (or the configured listeners) give, a VirtualService naming the gateway is
served there and only there, HTTPS servers terminate TLS (SIMPLE, MUTUAL; several on one
port chosen by SNI), `httpsRedirect` answers 301. Real curl, certificates from a CA made
with the openssl CLI, real backends behind."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import settle
from support.client import Client
from support.pki import Authority

from pymirror import ConfigError, Proxy
from pymirror.check import check

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is missing"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing"),
]

CONFORMANCE = (Path(__file__).resolve().parents[2] / "../shared/conformance/istio").resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def services(v1: str, v2: str) -> str:
    """`reviews` v1 and v2 (ServiceEntry and DestinationRule), and `ratings` (v2's
    backend too): what the virtual services route to."""
    (h1, p1), (h2, p2) = (a.rsplit(":", 1) for a in (v1, v2))
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
    - {{address: {h1}, ports: {{http: {p1}}}, labels: {{version: v1}}}}
    - {{address: {h2}, ports: {{http: {p2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


def gateway(servers: str, name: str = "reviews-gateway") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}"""


def virtual_service(
    name: str, hosts: str, subset: str, gateways: str = "", mirror: bool = False
) -> str:
    extra = f"\n  gateways: {gateways}" if gateways else ""
    copy = (
        "\n      mirror: {host: reviews, subset: v2}\n      mirrorPercentage: {value: 100}"
        if mirror
        else ""
    )
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: {hosts}{extra}
  http:
    - route: [{{destination: {{host: reviews, subset: {subset}}}}}]{copy}
"""


def curl(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", *flags, url],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def test_a_bound_virtual_service_is_served_on_its_gateway_only(backend: Callable) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2", body=b"v2")
    port = free_port()
    servers = f"""    - port: {{number: {port}, name: http, protocol: HTTP}}
      hosts: ["*"]"""
    yaml = "\n---\n".join([
        services(v1.address, v2.address),
        gateway(servers),
        # The same host twice: at the gateway (v1, copied to v2), and in the mesh (v2).
        virtual_service("edge", "[reviews]", "v1", "[reviews-gateway]", mirror=True),
        virtual_service("inside", "[reviews]", "v2"),
    ])  # fmt: skip
    with Proxy(yaml, listen=["127.0.0.1:0"]) as proxy:
        mesh, edge = proxy.addresses
        # The gateway's listener keeps its port and takes --listen's IP.
        assert edge == f"127.0.0.1:{port}"
        with Client(edge) as client:
            assert client.request().body == b"v1"
            # Only what is bound to the gateway is served there.
            assert client.request(host="ratings").status == 404
        with Client(mesh) as client:
            assert client.request().body == b"v2"
        assert settle(proxy)["answered"] == 1
    # The mesh's request and the gateway's copy reached v2; nothing else.
    assert len(v1.seen) == 1 and len(v2.seen) == 2


def test_https_servers_terminate_and_http_redirects_to_them(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2", body=b"v2")
    pki = Authority(tmp_path)
    reviews = pki.issue("reviews", "reviews.example.com")
    ratings = pki.issue("ratings", "ratings.example.com")
    http_port, https_port = free_port(), free_port()
    servers = f"""    - port: {{number: {http_port}, name: http, protocol: HTTP}}
      hosts: ["*"]
      tls: {{httpsRedirect: true}}
    - port: {{number: {https_port}, name: https-reviews, protocol: HTTPS}}
      hosts: [reviews.example.com]
      tls: {{mode: SIMPLE, serverCertificate: {reviews[0]}, privateKey: {reviews[1]}}}
    - port: {{number: {https_port}, name: https-ratings, protocol: HTTPS}}
      hosts: ["*"]
      tls: {{mode: SIMPLE, serverCertificate: {ratings[0]}, privateKey: {ratings[1]}}}"""
    yaml = "\n---\n".join([
        services(v1.address, v2.address),
        gateway(servers),
        virtual_service("edge", "[reviews.example.com]", "v1", "[reviews-gateway]", mirror=True),
    ])  # fmt: skip
    with Proxy(yaml, listen=["127.0.0.1:0"]) as proxy:
        redirected = curl(
            f"http://127.0.0.1:{http_port}/path?q=1",
            "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
            "-H", "Host: reviews.example.com",
        )  # fmt: skip
        assert redirected.stdout == f"301 https://reviews.example.com:{https_port}/path?q=1"
        resolve = f"reviews.example.com:{https_port}:127.0.0.1"
        url = f"https://reviews.example.com:{https_port}/"
        served = curl(
            url, "--cacert", str(pki.cert), "--resolve", resolve, "-w", " %{http_version}"
        )
        assert served.returncode == 0, served.stderr
        assert served.stdout == "v1 2"  # HTTP/2 by ALPN, as on any TLS listener
        # Two servers on one port: the SNI chooses the certificate. The catch-all
        # server's certificate names only ratings.example.com.
        shown = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{https_port}",
             "-servername", "other.example.com"],
            input="", capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert "CN = ratings" in shown.stdout and "CN = reviews" not in shown.stdout
        assert settle(proxy)["answered"] == 1
    assert [s.headers["x-forwarded-proto"] for s in v1.seen] == ["https"]


def test_a_mutual_server_asks_for_a_client_certificate(backend: Callable, tmp_path: Path) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2", body=b"v2")
    pki = Authority(tmp_path)
    cert, key = pki.issue("reviews", "reviews")
    client_cert, client_key = pki.issue("user", client=True)
    port = free_port()
    servers = f"""    - port: {{number: {port}, name: https, protocol: HTTPS}}
      hosts: [reviews]
      tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key},
             caCertificates: {pki.cert}}}"""
    yaml = "\n---\n".join([
        services(v1.address, v2.address),
        gateway(servers),
        virtual_service("edge", "[reviews]", "v1", "[reviews-gateway]"),
    ])  # fmt: skip
    with Proxy(yaml, listen=["127.0.0.1:0"]):
        url = f"https://reviews:{port}/"
        base = ["--cacert", str(pki.cert), "--resolve", f"reviews:{port}:127.0.0.1"]
        assert curl(url, *base).returncode != 0  # no certificate: the handshake fails
        served = curl(url, *base, "--cert", str(client_cert), "--key", str(client_key))
        assert (served.returncode, served.stdout) == (0, "v1")
    assert 'Subject="CN=user"' in v1.seen[0].headers["x-forwarded-client-cert"]


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("{mode: SIMPLE, credentialName: reviews-cert}", "mount it and write `serverCertificate`"),
        ("{mode: SIMPLE, serverCertificate: CERT}", "needs `privateKey`"),
        ("{mode: PASSTHROUGH, serverCertificate: CERT, privateKey: KEY}", "takes no certificate"),
        (
            "{mode: SIMPLE, serverCertificate: CERT, privateKey: KEY, minProtocolVersion: TLSV1_1}",
            "TLS 1.1",
        ),
    ],
)
def test_server_tls_that_cannot_be_served_is_an_error_at_its_place(
    tmp_path: Path, tls: str, message: str
) -> None:
    cert, key = Authority(tmp_path).issue("reviews", "reviews")
    servers = f"""    - port: {{number: 8443, name: https, protocol: HTTPS}}
      hosts: [reviews]
      tls: {tls.replace("CERT", str(cert)).replace("KEY", str(key))}"""
    with pytest.raises(ConfigError) as raised:
        Proxy(
            gateway(servers)
            + "\n---\n"
            + virtual_service("edge", "[reviews]", "v1", "[reviews-gateway]")
        ).start()
    [problem] = [p for p in raised.value.problems if message in p.message]
    assert problem.line == 10 and problem.path[:4] == ("spec", "servers", 0, "tls")


@pytest.mark.skipif(not CONFORMANCE.is_dir(), reason="Istio's samples are not beside the repo")
def test_bookinfo_gateway_makes_a_listener_serving_bookinfo() -> None:
    report = check([CONFORMANCE / "bookinfo-gateway.yaml"])
    assert report.errors == [] and report.snapshot is not None
    [listener] = report.snapshot["listeners"]
    assert listener["address"] == "0.0.0.0:8080"
    [bound] = listener["virtual_hosts"]
    assert report.snapshot["virtual_hosts"][bound]["name"] == "bookinfo"
