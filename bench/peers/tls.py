"""The bench's TLS files: a CA made with the openssl CLI, and one ECDSA P-256 server
certificate it signs for every name the peers send or check (`reviews`, the Host; `v1`
and `v2`, pymirror's destination hosts, the names its copies carry; 127.0.0.1). Every
peer serves and verifies the same pair, so their handshakes cost the same."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "7",
             "-subj", "/CN=bench-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    ext.write_text(
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:reviews,DNS:v1,DNS:v2,IP:127.0.0.1\n"
    )
    _openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=reviews")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "7", "-extfile", str(ext))  # fmt: skip
    return TlsFiles(ca, cert, key)
