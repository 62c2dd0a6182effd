"""TLS origination (issue 17's upstream side) to real nginx `ssl` upstreams, certificates
from a CA made in each test with the openssl CLI. nginx's own log says what each request
arrived with: the SNI, whether the TLS session was resumed, the client certificate, the
connection. So each promise is read from the server's side: primaries name the Host,
copies the mirror destination; the chain and name are verified (a mismatch is refused
and counted); MUTUAL presents the certificate; connections are reused and sessions
resumed; a copy goes over HTTPS while the primary is plain, and the reverse; a tcp route
originates too, and so do CONNECT tunnels and upgrades."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import settle
from prometheus_client.parser import text_string_to_metric_families
from support.client import Client
from support.nginx_tls import NginxTls
from support.pki import Authority
from support.process import PymirrorProcess
from support.upgrade_peer import UpgradeEcho

from pymirror import ConfigError, Proxy
from pymirror.metrics import Scrape, render

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is missing"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is missing"),
]


@pytest.fixture
def pki(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


@pytest.fixture
def nginx() -> Iterator[Callable[..., NginxTls]]:
    started: list[NginxTls] = []

    def start(name: str, cert: Path, key: Path, client_ca: Path | None = None) -> NginxTls:
        server = NginxTls(name, cert, key, client_ca)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def config(v1: str, v2: str, v1_tls: str = "", v2_tls: str = "", v1_more: str = "") -> str:
    """`reviews` v1 and v2 (each with its own `trafficPolicy.tls`, given as a YAML flow
    mapping; `v1_more` adds to v1's policy), all traffic to v1 and copied to v2."""
    policies = {k: v for k, v in (("v1", v1_tls), ("v2", v2_tls)) if v}
    subset_policies = "".join(
        f"\n      {name}: {{tls: {tls}{v1_more if name == 'v1' else ''}}}"
        for name, tls in policies.items()
    )
    return f"""
listeners: [{{address: 127.0.0.1:0, host: reviews}}]
services:
  reviews:
    endpoints:
      - {{address: {v1}, labels: {{version: v1}}}}
      - {{address: {v2}, labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
    {"subsetPolicies:" + subset_policies if policies else ""}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews, subset: v1}}}}]
        mirror: {{host: reviews, subset: v2}}
        mirrorPercentage: {{value: 100.0}}
"""


def one_service(address: str, tls: str, http: str) -> str:
    """`reviews` at ``address`` with ``tls``, served by the ``http`` routes (flow YAML)."""
    return f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews:
    endpoints: [{{address: {address}}}]
    trafficPolicy: {{tls: {tls}}}
virtualServices:
  - {{name: reviews, hosts: [reviews], http: {http}}}
"""


def read_head(conn: socket.socket) -> bytes:
    """Bytes up to the end of a response head (what came with it included)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        assert chunk, f"closed before a whole head: {head!r}"
        head += chunk
    return head


def read_to_close(conn: socket.socket) -> bytes:
    answer = b""
    while chunk := conn.recv(4096):
        answer += chunk
    return answer


def simple(ca: Path, extra: str = "") -> str:
    return f"{{mode: SIMPLE, caCertificates: {ca}{extra}}}"


def handshakes(proxy: Proxy, role: str) -> dict[str, int]:
    """TLS handshakes to `reviews` by result, as `/metrics` shows them."""
    assert proxy.snapshot is not None
    text = render(Scrape(proxy.stats(), proxy.snapshot))
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "pymirror_upstream_tls_handshakes":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["role"] == role:
                    result = s.labels["result"]
                    found[result] = found.get(result, 0) + int(s.value)
    return found


def test_primaries_and_copies_go_over_tls_named_for_host_and_destination(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("reviews", "reviews", "reviews.prod")
    v1, v2 = nginx("v1", cert, key), nginx("v2", cert, key)
    yaml = config(v1.address, v2.address, simple(pki.cert), simple(pki.cert))
    with Proxy(yaml) as proxy, Client(proxy.addresses[0]) as client:

        def batch() -> None:
            for _ in range(20):
                reply = client.request(host="reviews.prod:9080")
                assert (reply.status, reply.body) == (200, b"v1\n")
                # Each copy done before the next starts: a copy that found the last
                # one's connection still reading would rightly open another.
                settle(proxy)

        batch()
        primary, mirror = handshakes(proxy, "primary"), handshakes(proxy, "mirror")
        # Warm: another batch is carried by the pooled connections, no handshake more.
        batch()
        assert handshakes(proxy, "primary") == primary
        assert handshakes(proxy, "mirror") == mirror
    served, copied = v1.wait_for(40), v2.wait_for(40)
    # Auto SNI: the primary's is the request's Host (without the port); a copy's is the
    # mirror destination's host, not the `-shadow` Host it carries.
    assert {r.sni for r in served} == {"reviews.prod"}
    assert {r.host for r in copied} == {"reviews.prod-shadow:9080"}
    assert {r.sni for r in copied} == {"reviews"}
    # Keep-alive over TLS: one connection carried the primaries, one handshake. Copies,
    # each still on its way as the next starts, take a few at first; a handshake per
    # connection, never per request (nginx counts the connections).
    assert len({r.connection for r in served}) == 1
    assert primary == {"full": 1, "resumed": 0, "failed": 0}
    assert mirror["failed"] == 0
    assert mirror["full"] + mirror["resumed"] == len({r.connection for r in copied})


def test_a_certificate_not_for_the_name_is_refused_and_counted(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("ratings", "ratings")
    v1, v2 = nginx("v1", cert, key), nginx("v2", cert, key)
    yaml = config(v1.address, v2.address, simple(pki.cert), simple(pki.cert))
    with Proxy(yaml) as proxy, Client(proxy.addresses[0]) as client:
        for _ in range(3):
            reply = client.request()
            assert reply.status == 502
            assert b"TLS handshake failed" in reply.body
        mirror_stats = settle(proxy)
        # Each request tried three times (Istio's default retry policy: 2 retries on
        # connect-failure, which a failed handshake is), each try refused.
        assert handshakes(proxy, "primary")["failed"] == 3 * 3
        assert handshakes(proxy, "mirror")["failed"] >= 1
    assert mirror_stats["failures"]["tls"] == mirror_stats["failed"] >= 1
    # Nothing was served: no request was sent over an unverified session.
    assert v1.logged() == [] and v2.logged() == []


def test_subject_alt_names_and_sni_replace_the_auto_name(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("backend", "backend.internal")
    v1, v2 = nginx("v1", cert, key), nginx("v2", cert, key)
    sans = simple(pki.cert, ", subjectAltNames: [backend.internal]")
    sni = simple(pki.cert, ", sni: backend.internal")
    with Proxy(config(v1.address, v2.address, sans, sni)) as proxy:
        with Client(proxy.addresses[0]) as client:
            assert client.request().body == b"v1\n"
        settle(proxy)
    # subjectAltNames verifies another name than the SNI sent (the Host, `reviews`);
    # `sni` changes what is sent and verified.
    assert [r.sni for r in v1.wait_for(1)] == ["reviews"]
    assert [r.sni for r in v2.wait_for(1)] == ["backend.internal"]


def test_a_ca_that_did_not_sign_the_server_is_refused(
    pki: Authority, nginx: Callable[..., NginxTls], tmp_path: Path
) -> None:
    cert, key = pki.issue("reviews", "reviews")
    (tmp_path / "other").mkdir()
    other = Authority(tmp_path / "other", "other-ca")
    v1, v2 = nginx("v1", cert, key), nginx("v2", cert, key)
    with Proxy(config(v1.address, v2.address, simple(other.cert))) as proxy:
        with Client(proxy.addresses[0]) as client:
            assert client.request().status == 502
        assert handshakes(proxy, "primary")["failed"] == 3  # the try and two retries
    # insecureSkipVerify takes it (a test setup's escape hatch).
    insecure = "{mode: SIMPLE, insecureSkipVerify: true}"
    with (
        Proxy(config(v1.address, v2.address, insecure)) as proxy,
        Client(proxy.addresses[0]) as client,
    ):
        assert client.request().body == b"v1\n"


def test_mutual_presents_the_client_certificate(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("reviews", "reviews")
    client_cert, client_key = pki.issue("pymirror-client", client=True)
    v1 = nginx("v1", cert, key, client_ca=pki.cert)
    v2 = nginx("v2", cert, key, client_ca=pki.cert)
    mutual = (
        f"{{mode: MUTUAL, caCertificates: {pki.cert}, clientCertificate: {client_cert}, "
        f"privateKey: {client_key}}}"
    )
    # v1 MUTUAL; v2 SIMPLE, so nginx refuses the copy for want of a certificate.
    with Proxy(config(v1.address, v2.address, mutual, simple(pki.cert))) as proxy:
        with Client(proxy.addresses[0]) as client:
            assert client.request().body == b"v1\n"
        settle(proxy)
    [served] = v1.wait_for(1)
    assert (served.client, served.verify) == ("CN=pymirror-client", "SUCCESS")
    [copied] = v2.wait_for(1)
    assert copied.verify == "NONE"  # nginx answered it 400: no certificate was sent


def test_https_mirror_beside_a_plain_primary_and_the_reverse(
    pki: Authority, nginx: Callable[..., NginxTls], backend: Callable
) -> None:
    cert, key = pki.issue("reviews", "reviews")
    secure = nginx("secure", cert, key)
    plain = backend("plain", body=b"plain")
    # The primary plain, the copy over HTTPS (a test environment reached over HTTPS).
    with Proxy(config(plain.address, secure.address, "", simple(pki.cert))) as proxy:
        with Client(proxy.addresses[0]) as client:
            assert client.request().body == b"plain"
        assert settle(proxy)["answered"] == 1
    assert [r.sni for r in secure.wait_for(1)] == ["reviews"]
    # And the reverse: the primary over HTTPS, the copy plain.
    with Proxy(config(secure.address, plain.address, simple(pki.cert), "")) as proxy:
        with Client(proxy.addresses[0]) as client:
            assert client.request().body == b"secure\n"
        assert settle(proxy)["answered"] == 1
    assert len(plain.wait_for(2)) == 2


def test_new_connections_resume_the_tls_session(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("reviews", "reviews")
    v1, v2 = nginx("v1", cert, key), nginx("v2", cert, key)
    one_request = ", connectionPool: {http: {maxRequestsPerConnection: 1}}"
    yaml = config(v1.address, v2.address, simple(pki.cert), v1_more=one_request)
    with Proxy(yaml) as proxy, Client(proxy.addresses[0]) as client:
        for _ in range(10):
            assert client.request().status == 200
        counted = handshakes(proxy, "primary")
    served = v1.wait_for(10)
    # A new connection per request (maxRequestsPerConnection: 1), each resuming the first
    # one's session: one full handshake, the others resumed, as nginx saw them too.
    assert len({r.connection for r in served}) == 10
    assert counted["full"] + counted["resumed"] == 10
    assert counted["resumed"] >= 8
    assert sum(r.reused == "r" for r in served) == counted["resumed"]


def test_http2_upstream_over_tls_is_chosen_by_alpn(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("reviews", "reviews")
    v1, v2 = nginx("v1", cert, key), nginx("v2", cert, key)
    h2 = simple(pki.cert)
    yaml = config(v1.address, v2.address, h2, h2).replace(
        "    subsetPolicies:",
        "    trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}\n"
        "    subsetPolicies:",
    )
    with Proxy(yaml) as proxy, Client(proxy.addresses[0]) as client:
        for _ in range(5):
            assert client.request().body == b"v1\n"
        settle(proxy)
    assert {r.protocol for r in v1.wait_for(5)} == {"HTTP/2.0"}
    assert {r.protocol for r in v2.wait_for(5)} == {"HTTP/2.0"}


def test_a_tcp_route_originates_tls(pki: Authority, nginx: Callable[..., NginxTls]) -> None:
    cert, key = pki.issue("reviews", "reviews")
    v1 = nginx("v1", cert, key)
    yaml = f"""
listeners: [{{address: 127.0.0.1:0, protocol: tcp}}]
services:
  reviews:
    endpoints: [{{address: {v1.address}}}]
    trafficPolicy: {{tls: {simple(pki.cert)}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    tcp: [{{route: [{{destination: {{host: reviews}}}}]}}]
"""
    with Proxy(yaml) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            # Plaintext in; the route's TLS carries it to nginx.
            conn.sendall(b"GET /tcp HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
            answer = read_to_close(conn)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"v1\n")
    [served] = v1.wait_for(1)
    assert (served.sni, served.uri) == ("reviews", "/tcp")


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("{mode: ISTIO_MUTUAL}", "mesh CA"),
        ("{mode: SIMPLE, credentialName: reviews-secret}", "Kubernetes secret"),
        ("{mode: MUTUAL, caCertificates: CA}", "needs `clientCertificate`"),
        ("{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}", "cannot be read"),
    ],
)
def test_tls_settings_that_cannot_be_served_are_errors(
    pki: Authority, tls: str, message: str
) -> None:
    yaml = config("127.0.0.1:1", "127.0.0.1:2", tls.replace("CA", str(pki.cert)))
    with pytest.raises(ConfigError) as raised:
        Proxy(yaml).start()
    assert message in str(raised.value)
    assert "subsetPolicies.v1.tls" in str(raised.value)


def test_a_connect_tunnel_originates_tls_to_its_destination(
    pki: Authority, nginx: Callable[..., NginxTls]
) -> None:
    cert, key = pki.issue("reviews", "reviews")
    v1 = nginx("v1", cert, key)
    connect = "[{match: [{method: {exact: CONNECT}}], route: [{destination: {host: reviews}}]}]"
    with Proxy(one_service(v1.address, simple(pki.cert), connect)) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n")
            assert read_head(conn).startswith(b"HTTP/1.1 200")
            # Plaintext into the tunnel; the destination's TLS carries it to nginx.
            conn.sendall(b"GET /tunnel HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
            answer = read_to_close(conn)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"v1\n")
    [served] = v1.wait_for(1)
    assert (served.sni, served.uri) == ("reviews", "/tunnel")


def test_an_upgrade_originates_tls_named_for_its_host(pki: Authority) -> None:
    cert, key = pki.issue("reviews", "reviews")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    echo = UpgradeEcho(tls=context).start()
    routes = "[{route: [{destination: {host: reviews}}]}]"
    try:
        with Proxy(one_service(echo.address, simple(pki.cert), routes)) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(
                    b"GET /chat HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\n"
                    b"Upgrade: echo/1\r\n\r\n"
                )
                assert read_head(conn).startswith(b"HTTP/1.1 101")
                conn.sendall(b"hello over TLS")
                echoed = b""
                while len(echoed) < len(b"hello over TLS"):
                    echoed += conn.recv(4096)
            assert echoed == b"hello over TLS"
    finally:
        echo.stop()
    # The upgrade's own connection went over TLS, named for the request's Host.
    assert echo.server_names == ["reviews"]
    assert echo.received == [b"hello over TLS"]


def test_the_admin_config_never_shows_a_private_key(pki: Authority, tmp_path: Path) -> None:
    """`/config` shows the running snapshot, which carries the TLS files' text: keys are
    replaced by their size (the manifests put the admin port on the pod's IP)."""
    cert, key = pki.issue("reviews", "reviews")
    client_cert, client_key = pki.issue("me", client=True)
    mutual = (
        f"{{mode: MUTUAL, caCertificates: {pki.cert}, clientCertificate: {client_cert}, "
        f"privateKey: {client_key}}}"
    )
    yaml = config("127.0.0.1:1", "127.0.0.1:2", mutual).replace(
        "listeners: [{address: 127.0.0.1:0, host: reviews}]",
        f"listeners: [{{address: 127.0.0.1:0, host: reviews, "
        f"tls: {{certificate: {cert}, privateKey: {key}}}}}]",
    )
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml)
    proc = PymirrorProcess(routes)
    try:
        body = urllib.request.urlopen(f"http://{proc.admin_address}/config", timeout=10).read()
    finally:
        proc.stop()
    assert b"PRIVATE KEY" not in body and b"BEGIN" not in body
    assert str(client_key).encode() in body and b"(PEM, " in body


class HostileUpstream:
    """A loopback peer that takes each connection and, to the ClientHello, answers
    ``reply`` (exact bytes) then closes, or with ``reply`` None says nothing and holds the
    connection (a handshake that never completes)."""

    def __init__(self, reply: bytes | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.reply = reply
        self.held: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.reply is None:
                self.held.append(conn)
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)  # the ClientHello
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv1",  # plaintext to a ClientHello
        b"\x15\x03\x03\x00\x02\x02\x28",  # a TLS alert: handshake_failure
        b"\x16\x03\x03\xff\xff" + b"\x00" * 64,  # a handshake record that lies about its length
    ],
    ids=["plain-http", "alert", "truncated-record"],
)
def test_an_upstream_that_answers_the_handshake_with_junk_gets_no_request(
    pki: Authority, reply: bytes
) -> None:
    peer = HostileUpstream(reply)
    routes = "[{route: [{destination: {host: reviews}}], retries: {attempts: 0}}]"
    try:
        with Proxy(one_service(peer.address, simple(pki.cert), routes)) as proxy:
            with Client(proxy.addresses[0]) as client:
                answer = client.request()
            failed = handshakes(proxy, "primary")["failed"]
    finally:
        peer.close()
    assert answer.status == 502 and b"TLS handshake failed" in answer.body
    assert (peer.accepted, failed) == (1, 1)


def test_an_upstream_that_never_finishes_the_handshake_costs_the_connect_timeout(
    pki: Authority,
) -> None:
    peer = HostileUpstream(None)
    routes = "[{route: [{destination: {host: reviews}}], retries: {attempts: 0}}]"
    text = (
        one_service(peer.address, simple(pki.cert), routes) + "upstream: {connectTimeout: 0.3s}\n"
    )
    try:
        with Proxy(text) as proxy, Client(proxy.addresses[0]) as client:
            started = time.monotonic()
            answer = client.request()
            waited = time.monotonic() - started
    finally:
        peer.close()
    # The handshake is inside the connect deadline: one deadline, then a 502.
    assert answer.status == 502
    assert 0.3 <= waited < 2.0, waited
