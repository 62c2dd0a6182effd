"""A test PKI made with the openssl CLI: a CA, server certificates it signs (with the
names given as DNS SANs, and 127.0.0.1), and client certificates."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


class Authority:
    """A CA in ``directory``; `issue` signs a leaf for it."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.directory = directory
        self.cert, self.key = directory / f"{name}.crt", directory / f"{name}.key"
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip

    def issue(self, name: str, *dns: str, client: bool = False) -> tuple[Path, Path]:
        """A certificate for ``dns`` names (server) or for CN ``name`` (client), and its
        key, signed by this CA."""
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        csr, ext = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        sans = ",".join([*(f"DNS:{d}" for d in dns), "IP:127.0.0.1"])
        ext.write_text(f"extendedKeyUsage={usage}\nsubjectAltName={sans}\n")
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")  # fmt: skip
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
        return cert, key
