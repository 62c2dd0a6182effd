"""The TLS files a configuration reads and their fingerprint (plain files, no sockets)."""

from __future__ import annotations

from pathlib import Path

from pymirror.config import load_config
from pymirror.tls_files import fingerprint, tls_files

PEM = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"


def config(tmp_path: Path, tls: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"""
listeners:
  - address: 127.0.0.1:0
    tls: {tls}
  - address: 127.0.0.1:0
services:
  reviews: {{endpoints: [{{address: "127.0.0.1:9"}}]}}
virtualServices:
  - {{name: reviews, hosts: [reviews], http: [{{route: [{{destination: {{host: reviews}}}}]}}]}}
"""
    )
    return path


def test_every_certificate_and_key_once_in_order(tmp_path: Path) -> None:
    for name in ("a.crt", "a.key", "b.crt"):
        (tmp_path / name).write_text(PEM)
    a, k, b = (str(tmp_path / n) for n in ("a.crt", "a.key", "b.crt"))
    tls = (
        f"{{certificates: [{{certificate: {a}, privateKey: {k}}}, "
        f"{{certificate: {b}, privateKey: {k}, sniHosts: [b.example.com]}}]}}"
    )
    assert tls_files(load_config(config(tmp_path, tls))) == [a, k, b]


def test_the_fingerprint_follows_content_not_names(tmp_path: Path) -> None:
    path = tmp_path / "tls.crt"
    path.write_text(PEM)
    first = fingerprint([str(path)])
    assert fingerprint([str(path)]) == first
    path.write_text(PEM + PEM)
    changed = fingerprint([str(path)])
    assert changed != first
    # Through a symlink, as a Kubernetes secret mount: the target's content counts.
    link = tmp_path / "link.crt"
    link.symlink_to(path)
    other = tmp_path / "other.crt"
    other.write_text(PEM)
    before = fingerprint([str(link)])
    link.unlink()
    link.symlink_to(other)
    assert fingerprint([str(link)]) != before
    # A file gone is a change too, and is not an error.
    other.unlink()
    assert fingerprint([str(link)]) not in {before, changed}


def test_files_gone_after_loading_are_still_listed_not_checked_again(tmp_path: Path) -> None:
    # Mid-rotation a file may be missing: the running proxy's watcher must keep looking.
    for name in ("a.crt", "a.key"):
        (tmp_path / name).write_text(PEM)
    a, k = str(tmp_path / "a.crt"), str(tmp_path / "a.key")
    loaded = load_config(config(tmp_path, f"{{certificate: {a}, privateKey: {k}}}"))
    (tmp_path / "a.crt").unlink()
    assert tls_files(loaded) == [a, k]


def test_origination_takes_its_layer_and_its_files_are_watched(tmp_path: Path) -> None:
    """A port's `tls` replaces the service's (Istio's rule); DISABLE is plaintext; the
    files every layer names are polled, once each."""
    from pymirror.resolve import build_snapshot

    for name in ("ca.crt", "port-ca.crt", "me.crt", "me.key"):
        (tmp_path / name).write_text(PEM)
    ca, port_ca, me, key = (
        str(tmp_path / n) for n in ("ca.crt", "port-ca.crt", "me.crt", "me.key")
    )
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews:
    ports: [{{number: 9080, name: http}}, {{number: 9443, name: https}}]
    endpoints: [{{address: 127.0.0.1, labels: {{version: v1}}}}]
    subsets: {{v1: {{version: v1}}, plain: {{version: v1}}}}
    trafficPolicy:
      tls: {{mode: SIMPLE, caCertificates: {ca}, sni: reviews.internal}}
      portLevelSettings:
        - port: {{number: 9443}}
          tls: {{mode: MUTUAL, caCertificates: {port_ca},
                 clientCertificate: {me}, privateKey: {key}}}
    subsetPolicies:
      plain: {{tls: {{mode: DISABLE}}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - match: [{{port: 1}}]
        route: [{{destination: {{host: reviews, subset: v1, port: {{number: 9443}}}}}}]
      - match: [{{port: 2}}]
        route: [{{destination: {{host: reviews, subset: plain, port: {{number: 9080}}}}}}]
      - route: [{{destination: {{host: reviews, subset: v1, port: {{number: 9080}}}}}}]
"""
    )
    config = load_config(path)
    clusters = build_snapshot(config)["clusters"]
    by_port = {(c["subset"], c["endpoints"][0]): c.get("tls") for c in clusters}
    service = by_port[("v1", "127.0.0.1:9080")]
    assert service is not None and service["ca_file"] == ca and service["sni"] == "reviews.internal"
    port = by_port[("v1", "127.0.0.1:9443")]
    # The port's entry replaces the service's `tls` whole: its CA, its certificate, no sni.
    assert port is not None and port["ca_file"] == port_ca and "sni" not in port
    assert port["client_certificate_file"] == me and port["private_key_pem"] == PEM
    assert by_port[("plain", "127.0.0.1:9080")] is None
    assert tls_files(config) == [ca, me, key, port_ca]
