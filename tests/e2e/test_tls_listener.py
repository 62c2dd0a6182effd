"""TLS termination on a listener (issue 17's first part), with real clients: curl over
HTTPS picks HTTP/1.1 or HTTP/2 by ALPN, `openssl s_client` offers TLS 1.0 and 1.1 for
real and is refused, a reload with a new certificate is what new handshakes get, and
clients that never finish a handshake hold only themselves. Certificates are made in
each test with the openssl CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

import pytest
from conftest import seed_config, settle
from support.client import Client
from support.process import PymirrorProcess
from support.secret_mount import mount

from pymirror import ConfigError, Proxy, ServerOptions, SnapshotError

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is missing"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing"),
]


def certificate(directory: Path, name: str, cn: str = "reviews") -> tuple[Path, Path]:
    """A self-signed certificate for `reviews` (and 127.0.0.1) and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
         "-addext", "subjectAltName=DNS:reviews,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def tls_config(v1: str, v2: str, cert: Path, key: str | Path, extra: str = "") -> str:
    tls = f"    tls: {{certificate: {cert}, privateKey: {key}{extra}}}\n"
    return seed_config(v1, v2).replace("    host: reviews\n", "    host: reviews\n" + tls, 1)


def curl(port: int, cert: Path, *flags: str) -> tuple[str, str]:
    """GET / over HTTPS as `reviews`: (HTTP version, body)."""
    run = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(cert),
         "--resolve", f"reviews:{port}:127.0.0.1", "-w", "\n%{http_version}", *flags,
         f"https://reviews:{port}/"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    body, _, version = run.stdout.rpartition("\n")
    return version, body


def s_client(port: int, *flags: str) -> str:
    """What `openssl s_client` printed, handshaking with the listener (as `reviews`
    unless `flags` name a server, or none)."""
    sni = [] if {"-servername", "-noservername"} & set(flags) else ["-servername", "reviews"]
    run = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *sni, *flags],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    return run.stdout + run.stderr


def port_of(proxy: Proxy) -> int:
    return int(proxy.addresses[0].rsplit(":", 1)[1])


def test_https_serves_http1_and_http2_by_alpn_and_says_https_upstream(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2", body=b"v2")
    cert, key = certificate(tmp_path, "server")
    with Proxy(tls_config(v1.address, v2.address, cert, key)) as proxy:
        assert curl(port_of(proxy), cert, "--http1.1") == ("1.1", "v1")
        assert curl(port_of(proxy), cert, "--http2") == ("2", "v1")
        settle(proxy)
    # What reached v1 and its copy at v2 says the client used HTTPS.
    assert [s.headers["x-forwarded-proto"] for s in v1.seen] == ["https", "https"]
    assert [s.headers["x-forwarded-proto"] for s in v2.seen] == ["https", "https"]


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(backend: Callable, tmp_path: Path, version: str) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    with Proxy(tls_config(v1.address, v2.address, cert, key)) as proxy:
        # Offered for real: Debian's OpenSSL offers them only at security level 0.
        said = s_client(port_of(proxy), version, "-cipher", "DEFAULT@SECLEVEL=0")
        assert "alert protocol version" in said or "handshake failure" in said, said
        assert "Cipher is (NONE)" in said or "no peer certificate" in said, said
        # TLS 1.2 and 1.3 are served.
        for ok in ("-tls1_2", "-tls1_3"):
            said = s_client(port_of(proxy), ok)
            assert "BEGIN CERTIFICATE" in said or "Server certificate" in said, said
        assert curl(port_of(proxy), cert) == ("2", "v1")


def test_min_protocol_version_1_3_refuses_1_2(backend: Callable, tmp_path: Path) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    config = tls_config(v1.address, v2.address, cert, key, ", minProtocolVersion: TLSV1_3")
    with Proxy(config) as proxy:
        assert "Server certificate" in s_client(port_of(proxy), "-tls1_3")
        said = s_client(port_of(proxy), "-tls1_2")
        assert "Server certificate" not in said, said


def test_a_reload_rotates_the_certificate_for_new_handshakes(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    old_cert, old_key = certificate(tmp_path, "old", cn="reviews-old")
    new_cert, new_key = certificate(tmp_path, "new", cn="reviews-new")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    config = tls_config(v1.address, v2.address, cert, key)
    with Proxy(config) as proxy:
        port = port_of(proxy)
        assert "CN = reviews-old" in s_client(port)
        # A connection opened before the rotation keeps its session.
        with socket.create_connection(("127.0.0.1", port)) as held:
            shutil.copy(new_cert, cert)
            shutil.copy(new_key, key)
            proxy.reload(config)  # the same file names: their content is read again
            assert "CN = reviews-new" in s_client(port)
            assert curl(port, new_cert) == ("2", "v1")
            held.settimeout(0.2)
            with pytest.raises(TimeoutError):
                held.recv(1)  # still open, waiting for its ClientHello


def test_a_broken_pair_on_reload_keeps_the_running_certificate(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    _, other_key = certificate(tmp_path, "other")
    with Proxy(tls_config(v1.address, v2.address, cert, key)) as proxy:
        with pytest.raises(SnapshotError) as refused:
            proxy.reload(tls_config(v1.address, v2.address, cert, other_key))
        assert str(cert) in str(refused.value) and str(other_key) in str(refused.value)
        assert curl(port_of(proxy), cert) == ("2", "v1")


def test_config_errors_name_the_field_and_the_file(backend: Callable, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    missing = tmp_path / "absent.key"
    with pytest.raises(ConfigError) as absent:
        Proxy(tls_config(v1.address, v2.address, cert, missing))
    assert f"{missing}: cannot be read" in str(absent.value)
    assert "privateKey" in str(absent.value)
    with pytest.raises(ConfigError) as old:
        Proxy(tls_config(v1.address, v2.address, cert, key, ", minProtocolVersion: TLSV1_1"))
    assert "TLS 1.1 is not served" in str(old.value)
    # file:line:col of the field: the listener's `tls` line is line 5 of the text.
    assert ":5:" in str(old.value), str(old.value)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError) as garbled:
        Proxy(tls_config(v1.address, v2.address, not_pem, key))
    assert "is not PEM" in str(garbled.value)


def test_garbage_and_stalled_handshakes_hold_only_themselves(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    with Proxy(tls_config(v1.address, v2.address, cert, key)) as proxy:
        port = port_of(proxy)
        # Not a ClientHello: the connection is closed, nothing is answered in HTTP.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as junk:
            junk.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            assert b"HTTP/1.1" not in junk.recv(4096)
        # A truncated ClientHello (a record header promising more), then silence.
        truncated = socket.create_connection(("127.0.0.1", port), timeout=10)
        truncated.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        # 300 clients that connect and never say anything.
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        try:
            started = time.monotonic()
            assert curl(port, cert) == ("2", "v1")
            # Handshakes are not done on the accept loop: none of the 301 holds it.
            assert time.monotonic() - started < 1.0
        finally:
            for s in [truncated, *stalled]:
                s.close()


def test_plain_http_on_a_tls_listener_is_not_served_in_clear(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    # Refused in TLS's terms (an alert record, or a close), never an HTTP answer.
    with (
        Proxy(tls_config(v1.address, v2.address, cert, key)) as proxy,
        Client(proxy.addresses[0]) as client,
        pytest.raises((OSError, HTTPException)),
    ):
        client.request("GET", "/")
    assert v1.seen == []


def sni_config(v1: str, v2: str, default: tuple[Path, Path], api: tuple[Path, Path]) -> str:
    """`reviews` on the default certificate, `api.example.com` on its own, by SNI."""
    tls = (
        f"    tls:\n      certificates:\n"
        f"        - {{certificate: {default[0]}, privateKey: {default[1]}}}\n"
        f"        - {{certificate: {api[0]}, privateKey: {api[1]}, sniHosts: [api.example.com]}}\n"
    )
    config = seed_config(v1, v2).replace("    host: reviews\n", "    host: reviews\n" + tls, 1)
    return config.replace("hosts: [reviews]", "hosts: [reviews, api.example.com]", 1)


def api_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "api.crt", directory / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=api.example.com", "-addext", "subjectAltName=DNS:api.example.com"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_sni_chooses_the_certificate_and_another_entrys_host_is_misdirected(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    default = certificate(tmp_path, "default", cn="reviews")
    api = api_certificate(tmp_path)
    with Proxy(sni_config(v1.address, v2.address, default, api)) as proxy:
        port = port_of(proxy)
        assert "CN = api.example.com" in s_client(port, "-servername", "api.example.com")
        assert "CN = reviews" in s_client(port, "-servername", "reviews")
        assert "CN = reviews" in s_client(port, "-noservername")  # no SNI: the default
        # Each host on a connection made for it is served.
        assert curl(port, default[0]) == ("2", "v1")

        def ask(server_name: str, cert: Path, host: str, *flags: str) -> str:
            run = subprocess.run(
                ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(cert),
                 "--resolve", f"{server_name}:{port}:127.0.0.1", "-H", f"Host: {host}",
                 "-o", "/dev/null", "-w", "%{http_code}", *flags,
                 f"https://{server_name}:{port}/"],
                capture_output=True, text=True, timeout=20, check=False,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            return run.stdout

        assert ask("api.example.com", api[0], "api.example.com") == "200"
        # A connection made for api.example.com asking for reviews, whose certificate is
        # another: 421 (RFC 9110 15.5.20), over HTTP/1.1 and HTTP/2, and never forwarded.
        seen = len(v1.seen)
        for flags in (("--http1.1",), ("--http2",)):
            assert ask("api.example.com", api[0], "reviews", *flags) == "421"
            assert ask("reviews", default[0], "api.example.com:443", *flags) == "421"
        assert len(v1.seen) == seen


def test_only_the_first_certificate_may_go_without_sni_hosts(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1"), backend("v2")
    default = certificate(tmp_path, "default")
    config = sni_config(v1.address, v2.address, default, default).replace(
        ", sniHosts: [api.example.com]", ""
    )
    with pytest.raises(ConfigError) as refused:
        Proxy(config)
    assert "no client could reach this one" in str(refused.value)
    assert "certificates[1]" in str(refused.value)


def test_a_swapped_secret_mount_is_picked_up_without_a_signal(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    secret = tmp_path / "secret"
    secret.mkdir()
    mount(secret, "1", certificate(tmp_path, "old", cn="reviews-old"))
    config = tmp_path / "routes.yaml"
    config.write_text(tls_config(v1.address, v2.address, secret / "tls.crt", secret / "tls.key"))
    proxy = PymirrorProcess(config, "--tls-poll-interval", "0.2")
    try:
        port = int(proxy.address.rsplit(":", 1)[1])
        assert "CN = reviews-old" in s_client(port)

        def served_cn(expected: str) -> bool:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if f"CN = {expected}" in s_client(port):
                    return True
                time.sleep(0.1)
            return False

        mount(secret, "2", certificate(tmp_path, "new", cn="reviews-new"))
        assert served_cn("reviews-new")
        proxy.wait_for(r"TLS files changed .*: reloading")
        # A broken pair (the key of another certificate) is refused, reported with the
        # files, and the running certificate stays.
        _, stray_key = certificate(tmp_path, "stray")
        mount(secret, "3", (certificate(tmp_path, "third", cn="reviews-third")[0], stray_key))
        proxy.wait_for(r"reload refused")
        assert "CN = reviews-new" in s_client(port)
        assert any("tls.key" in line for line in proxy.lines[-20:]), proxy.lines[-20:]
    finally:
        proxy.stop()


def authority(directory: Path) -> tuple[Path, Path]:
    """A CA that signs client certificates."""
    cert, key = directory / "ca.crt", directory / "ca.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=test-ca",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def client_certificate(directory: Path, ca: tuple[Path, Path], name: str) -> tuple[Path, Path]:
    """A client certificate `ca` signed, with a SPIFFE URI and a DNS name."""
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/{name},DNS:{name}.shop\n"
        "extendedKeyUsage=clientAuth\n"
    )
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(extensions)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def der_sha256(cert: Path) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    return hashlib.sha256(der).hexdigest()


def get(port: int, cert: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(cert),
         "--resolve", f"reviews:{port}:127.0.0.1", *flags, f"https://reviews:{port}/"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def test_mutual_asks_for_a_client_certificate_and_forwards_who_it_is(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    server = certificate(tmp_path, "server")
    ca = authority(tmp_path)
    client = client_certificate(tmp_path, ca, "client")
    other_ca_dir = tmp_path / "other"
    other_ca_dir.mkdir()
    stranger = client_certificate(other_ca_dir, authority(other_ca_dir), "stranger")
    log = tmp_path / "access.log"
    config = tls_config(v1.address, v2.address, *server, f", mode: MUTUAL, caCertificates: {ca[0]}")
    with Proxy(config, options=ServerOptions(access_log=str(log))) as proxy:
        port = port_of(proxy)
        # With a certificate the CA signed: served, and a forged header is replaced.
        forged = ("-H", 'x-forwarded-client-cert: Hash=forged;Subject="CN=admin"')
        ok = get(port, server[0], "--cert", str(client[0]), "--key", str(client[1]), *forged)
        assert (ok.returncode, ok.stdout) == (0, "v1"), ok.stderr
        # Without one, or with one another CA signed: the handshake fails, nothing is sent.
        assert get(port, server[0]).returncode != 0
        refused = get(port, server[0], "--cert", str(stranger[0]), "--key", str(stranger[1]))
        assert refused.returncode != 0
        settle(proxy)
    [seen] = v1.seen
    assert seen.headers["x-forwarded-client-cert"] == (
        f'Hash={der_sha256(client[0])};Subject="CN=client";'
        "URI=spiffe://cluster.local/ns/shop/sa/client;DNS=client.shop"
    )
    # The copy carries the same identity.
    [copy] = v2.seen
    assert copy.headers["x-forwarded-client-cert"] == seen.headers["x-forwarded-client-cert"]
    primary = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r.get("client_cert") for r in primary if r["hop"] == "primary"] == ["CN=client"]


def test_a_client_sent_forwarded_client_cert_is_removed_on_simple_tls(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    with Proxy(tls_config(v1.address, v2.address, cert, key)) as proxy:
        sent = get(port_of(proxy), cert, "-H", "x-forwarded-client-cert: Hash=forged")
        assert sent.returncode == 0, sent.stderr
        settle(proxy)
    assert "x-forwarded-client-cert" not in v1.seen[0].headers
    assert "x-forwarded-client-cert" not in v2.seen[0].headers


def test_istio_modes_not_served_are_errors_that_say_what_to_write(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")
    with pytest.raises(ConfigError) as istio:
        Proxy(tls_config(v1.address, v2.address, cert, key, ", mode: ISTIO_MUTUAL"))
    assert "write `mode: MUTUAL` with `caCertificates`" in str(istio.value)
    with pytest.raises(ConfigError) as no_ca:
        Proxy(tls_config(v1.address, v2.address, cert, key, ", mode: MUTUAL"))
    assert "needs `caCertificates`" in str(no_ca.value)


def test_cipher_suites_restrict_tls_1_2_and_unknown_ones_are_errors(
    backend: Callable, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    cert, key = certificate(tmp_path, "server")  # an ECDSA (P-256) certificate
    only = ", cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]"
    with Proxy(tls_config(v1.address, v2.address, cert, key, only)) as proxy:
        port = port_of(proxy)
        chosen = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")
        assert "Cipher is ECDHE-ECDSA-AES256-GCM-SHA384" in chosen, chosen
        refused = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert "Cipher is (NONE)" in refused or "handshake failure" in refused, refused
        # TLS 1.3's suites stay offered.
        assert "TLSv1.3" in s_client(port, "-tls1_3")
    with pytest.raises(ConfigError) as cbc:
        Proxy(tls_config(v1.address, v2.address, cert, key, ", cipherSuites: [AES128-SHA]"))
    assert "`AES128-SHA` is not one rustls implements" in str(cbc.value)
    assert "cipherSuites[0]" in str(cbc.value)
