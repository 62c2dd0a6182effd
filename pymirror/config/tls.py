"""TLS settings in the configuration: a listener's (termination, Istio's Gateway
`tls`) and a destination's (origination, Istio's DestinationRule `trafficPolicy.tls`,
the native `services.NAME.trafficPolicy.tls` alike). PEM files are checked when the
configuration loads; the core reads their text from the Snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import _Model, problem
from .types import HostPattern

#: Istio's TLS modes pymirror does not serve on a listener, and why.
_UNSERVED_TLS_MODES = {
    "PASSTHROUGH": (
        "does not terminate: write `protocol: tls` on the listener (no `tls`) to pass TLS "
        "through to `tls` routes by SNI"
    ),
    "ISTIO_MUTUAL": (
        "needs Istio's mesh CA, which pymirror has not: write `mode: MUTUAL` with "
        "`caCertificates` (and `certificate`, `privateKey`)"
    ),
    "OPTIONAL_MUTUAL": "is not served yet: write MUTUAL or SIMPLE",
}

#: The TLS 1.2 suites rustls implements: OpenSSL's names (as Istio's `cipherSuites`
#: writes them) and IANA's, each to IANA's (what the core reads).
TLS12_SUITES = {
    **{
        f"ECDHE-{key}-{cipher}": f"TLS_ECDHE_{key}_WITH_{iana}"
        for key in ("ECDSA", "RSA")
        for cipher, iana in (
            ("AES128-GCM-SHA256", "AES_128_GCM_SHA256"),
            ("AES256-GCM-SHA384", "AES_256_GCM_SHA384"),
            ("CHACHA20-POLY1305", "CHACHA20_POLY1305_SHA256"),
        )
    },
}
TLS12_SUITES.update({iana: iana for iana in list(TLS12_SUITES.values())})

#: TLS versions rustls does not implement: refused with a reason, not ignored.
_OLD_TLS = {"TLSV1_0": "TLS 1.0", "TLSV1_1": "TLS 1.1"}


class TlsCertificate(_Model):
    """One certificate of a listener with several, chosen by the client's SNI."""

    certificate: str
    """PEM file: the server certificate, then its intermediates."""
    private_key: str
    """PEM file: the certificate's private key (PKCS#8, PKCS#1 or SEC1)."""
    sni_hosts: list[HostPattern] = Field(default_factory=list)
    """The server names it is chosen for (`api.example.com`, `*.example.com`)."""

    @model_validator(mode="after")
    def _check(self) -> TlsCertificate:
        check_pem(self.certificate, "certificate")
        check_pem(self.private_key, "privateKey")
        return self


class ListenerTls(_Model):
    """TLS termination on an `http` listener (Istio's Gateway `tls` in SIMPLE mode): one
    certificate (`certificate`, `privateKey`), or several chosen by SNI
    (`certificates`, the first the default). Paths are read as given (relative ones from
    the working directory), at start and at every reload."""

    certificate: str | None = None
    """PEM file: the server certificate, then its intermediates."""
    private_key: str | None = None
    """PEM file: the certificate's private key (PKCS#8, PKCS#1 or SEC1)."""
    certificates: list[TlsCertificate] | None = None
    """Several certificates: the first whose `sniHosts` match the client's SNI, else the
    first. A request whose Host another entry's names match is answered 421."""
    mode: Literal["SIMPLE", "MUTUAL", "PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] = "SIMPLE"
    """`SIMPLE`: server certificate only. `MUTUAL`: clients must present a certificate
    `caCertificates` signed; it goes upstream in `x-forwarded-client-cert`."""
    ca_certificates: str | None = None
    """PEM file: the CAs a MUTUAL listener's clients' certificates must chain to."""
    cipher_suites: list[str] = Field(default_factory=list)
    """TLS 1.2 cipher suites offered, in order, by their OpenSSL or IANA names (empty:
    rustls's own). TLS 1.3's are always offered, as Envoy does."""
    min_protocol_version: Literal["TLS_AUTO", "TLSV1_2", "TLSV1_3", "TLSV1_0", "TLSV1_1"] = (
        "TLS_AUTO"
    )
    """The oldest version accepted: `TLS_AUTO` and `TLSV1_2` mean TLS 1.2; `TLSV1_3`."""

    @model_validator(mode="after")
    def _check(self) -> ListenerTls:
        if (old := _OLD_TLS.get(self.min_protocol_version)) is not None:
            raise problem(
                f"{old} is not served (rustls implements TLS 1.2 and 1.3 only, as current "
                "guidance asks); use TLSV1_2 or TLSV1_3",
                "minProtocolVersion",
            )
        for i, name in enumerate(self.cipher_suites):
            if name not in TLS12_SUITES:
                raise problem(
                    f"cipher suite `{name}` is not one rustls implements for TLS 1.2 (ECDHE "
                    "with AES-GCM or ChaCha20-Poly1305 only: no CBC, no static RSA); write one "
                    f"of {', '.join(sorted(n for n in TLS12_SUITES if '-' in n))}",
                    "cipherSuites",
                    i,
                )
        if (why := _UNSERVED_TLS_MODES.get(self.mode)) is not None:
            raise problem(f"mode {self.mode} {why}", "mode")
        if self.mode == "MUTUAL":
            if self.ca_certificates is None:
                raise problem(
                    "mode MUTUAL needs `caCertificates`: the CAs clients' certificates must "
                    "chain to",
                    "caCertificates",
                    at_key=True,
                )
            check_pem(self.ca_certificates, "caCertificates")
        elif self.ca_certificates is not None:
            raise problem(
                "`caCertificates` is read with mode MUTUAL only; write `mode: MUTUAL` to ask "
                "clients for certificates",
                "caCertificates",
                at_key=True,
            )
        single = self.certificate is not None or self.private_key is not None
        if single and self.certificates is not None:
            raise problem(
                "write `certificate` and `privateKey`, or `certificates`, not both",
                "certificates",
                at_key=True,
            )
        if self.certificates is not None:
            if not self.certificates:
                raise problem("`certificates` needs at least one entry", "certificates")
            for i, entry in enumerate(self.certificates[1:], start=1):
                if not entry.sni_hosts:
                    raise problem(
                        "only the first certificate (the default) may go without `sniHosts`: "
                        "no client could reach this one",
                        "certificates",
                        i,
                    )
            return self
        for field, path in (("certificate", self.certificate), ("privateKey", self.private_key)):
            if path is None:
                raise problem(f"`{field}` is required (or `certificates`)", field, at_key=True)
            check_pem(path, field)
        return self

    def entries(self) -> list[TlsCertificate]:
        """The certificates, the default first. Not validated again: the files were
        checked when the configuration was loaded, and may be changing now (a rotation
        the running proxy is looking for)."""
        if self.certificates is not None:
            return self.certificates
        assert self.certificate is not None and self.private_key is not None
        pair = TlsCertificate.model_construct(
            certificate=self.certificate, private_key=self.private_key, sni_hosts=[]
        )
        return [pair]


def check_pem(path: str, *where: str) -> None:
    """Refuses, at ``where``, a ``path`` that cannot be read or is not PEM."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise problem(f"{path}: cannot be read ({exc.strerror})", *where) from exc
    if "-----BEGIN " not in text:
        raise problem(f"{path}: is not PEM (no -----BEGIN line)", *where)


#: Istio's origination modes pymirror does not serve, and what to write instead.
_UNSERVED_CLIENT_MODES = {
    "ISTIO_MUTUAL": (
        "needs Istio's mesh CA, which pymirror has not: write `mode: MUTUAL` with "
        "`clientCertificate`, `privateKey` and `caCertificates` files"
    ),
}


class ClientTls(_Model):
    """Istio ClientTLSSettings: TLS from pymirror to a destination's endpoints, for
    primaries, copies, tcp routes, upgrades and tunnels alike. Paths are read as given, at
    start and at every reload (and when their content changes)."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    """`DISABLE`: plaintext. `SIMPLE`: TLS, the server's certificate verified. `MUTUAL`:
    and pymirror presents `clientCertificate`."""
    client_certificate: str | None = None
    """PEM file (MUTUAL): the certificate pymirror presents, then its intermediates."""
    private_key: str | None = None
    """PEM file (MUTUAL): its private key."""
    ca_certificates: str | None = None
    """PEM file: the CAs the server's certificate must chain to. Default: the system's
    (`/etc/ssl/certs`, or `SSL_CERT_FILE`)."""
    ca_crl: str | None = None
    """PEM file: certificate revocation lists; a revoked server certificate is refused."""
    credential_name: str | None = None
    """A Kubernetes secret: not read (an error that says what to write)."""
    subject_alt_names: list[str] = Field(default_factory=list)
    """The server's certificate must name one of these; default: the SNI sent."""
    sni: str | None = None
    """The server name sent (and verified). Default, as Istio's auto SNI: the request's
    Host for a primary, the mirror destination's host for a copy, the destination's host
    for tcp routes and tunnels."""
    insecure_skip_verify: bool = False
    """Take any server certificate (a test setup only): no chain or name is checked."""

    @model_validator(mode="after")
    def _check(self) -> ClientTls:
        if (why := _UNSERVED_CLIENT_MODES.get(self.mode)) is not None:
            raise problem(f"mode {self.mode} {why}", "mode")
        if self.credential_name is not None:
            raise problem(
                "`credentialName` names a Kubernetes secret, which pymirror does not read: "
                "mount it and write `clientCertificate`, `privateKey` and `caCertificates` "
                "as files",
                "credentialName",
                at_key=True,
            )
        if self.mode == "DISABLE":
            return self
        mutual = self.mode == "MUTUAL"
        for field, path in (
            ("clientCertificate", self.client_certificate),
            ("privateKey", self.private_key),
        ):
            if mutual and path is None:
                raise problem(f"mode MUTUAL needs `{field}`", field, at_key=True)
            if not mutual and path is not None:
                raise problem(
                    f"`{field}` is presented with mode MUTUAL only; write `mode: MUTUAL`",
                    field,
                    at_key=True,
                )
        for field, path in (
            ("clientCertificate", self.client_certificate),
            ("privateKey", self.private_key),
            ("caCertificates", self.ca_certificates),
            ("caCrl", self.ca_crl),
        ):
            if path is not None:
                check_pem(path, field)
        return self

    @property
    def originates(self) -> bool:
        """Whether connections go over TLS."""
        return self.mode in ("SIMPLE", "MUTUAL")

    def files(self) -> list[str]:
        """The files it reads, in order."""
        paths = (self.client_certificate, self.private_key, self.ca_certificates, self.ca_crl)
        return [p for p in paths if p is not None] if self.originates else []
