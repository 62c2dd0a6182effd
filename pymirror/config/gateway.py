"""Istio's Gateway: each server is a listener of pymirror's (its port, on the address the
configured listeners or `--listen` give), HTTP or HTTPS (SIMPLE, MUTUAL), plain HTTP
that redirects to HTTPS (`httpsRedirect`), or TLS passed through by SNI (PASSTHROUGH,
for `tls` routes). A VirtualService that names a gateway in
`gateways` is served on that gateway's listeners only; see `pymirror.config.binding`.

Servers on one port share a listener: their certificates become its `certificates`,
each chosen by the SNI its server's `hosts` name (as Istio merges them into one filter
chain per host)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .base import _Model, problem
from .tls import ListenerTls, check_pem

#: Server protocols served as HTTP listeners (HTTP/1.1 and HTTP/2, gRPC inside).
HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB")
#: ... and as tcp listeners (bytes spliced by `tcp` routes).
TCP_PROTOCOLS = ("TCP", "MONGO", "MYSQL", "REDIS")


class GatewayPort(_Model):
    """Istio's Port of a Gateway server."""

    number: int = Field(ge=1, le=65535)
    """The port listened on."""
    name: str | None = None
    """A label only."""
    protocol: str = "HTTP"
    """HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB (served as HTTP), TCP, MONGO, MYSQL, REDIS
    (served as tcp), TLS (passed through by SNI, with `tls.mode: PASSTHROUGH`)."""
    target_port: int | None = Field(default=None, ge=1, le=65535)
    """Accepted; pymirror listens on `number`."""

    @model_validator(mode="after")
    def _check(self) -> GatewayPort:
        protocol = self.protocol.upper()
        if protocol not in ("HTTPS", "TLS", *HTTP_PROTOCOLS, *TCP_PROTOCOLS):
            raise problem(f"protocol `{self.protocol}` is not one a gateway serves", "protocol")
        return self


class ServerTls(_Model):
    """Istio's ServerTLSSettings, as pymirror serves them."""

    https_redirect: bool = False
    """On an HTTP server: every request is answered 301 to its `https://` URL."""
    mode: Literal[
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ] = "PASSTHROUGH"
    """SIMPLE or MUTUAL (terminated), or PASSTHROUGH (Istio's default: routed by SNI)."""
    server_certificate: str | None = None
    """PEM file: the server certificate, then its intermediates."""
    private_key: str | None = None
    """PEM file: its private key."""
    ca_certificates: str | None = None
    """PEM file (MUTUAL): the CAs clients' certificates must chain to."""
    credential_name: str | None = None
    """A Kubernetes secret: not read (an error that says what to write)."""
    min_protocol_version: str = "TLS_AUTO"
    """As a listener's `minProtocolVersion`."""
    max_protocol_version: str | None = None
    """Accepted: rustls serves TLS 1.3 at most."""
    cipher_suites: list[str] = Field(default_factory=list)
    """As a listener's `cipherSuites`."""
    subject_alt_names: list[str] = Field(default_factory=list)
    """Not served (a MUTUAL client's SAN filter): an error, not a silent accept-all."""

    @model_validator(mode="after")
    def _check(self) -> ServerTls:
        if self.credential_name is not None:
            raise problem(
                "`credentialName` names a Kubernetes secret, which pymirror does not read: "
                "mount it and write `serverCertificate` and `privateKey` (and "
                "`caCertificates` for MUTUAL) as files",
                "credentialName",
                at_key=True,
            )
        if self.subject_alt_names:
            raise problem(
                "`subjectAltNames` (which client certificates to accept) is not served: "
                "leave it out and sign only the clients to accept with `caCertificates`",
                "subjectAltNames",
                at_key=True,
            )
        return self

    def listener_tls(self) -> dict[str, Any]:
        """The listener `tls` this server's settings make (routes-format data)."""
        return {
            "certificate": self.server_certificate,
            "privateKey": self.private_key,
            "mode": self.mode,
            **({"caCertificates": self.ca_certificates} if self.ca_certificates else {}),
            **({"cipherSuites": self.cipher_suites} if self.cipher_suites else {}),
            "minProtocolVersion": self.min_protocol_version,
        }


def _check_as_listener(tls: ServerTls) -> None:
    """The listener's own checks (mode, caCertificates, versions, suites), placed at the
    server's `tls`."""
    if tls.mode == "AUTO_PASSTHROUGH":
        raise problem("mode AUTO_PASSTHROUGH is not served: write SIMPLE or MUTUAL", "tls", "mode")
    try:
        ListenerTls.model_validate(tls.listener_tls())
    except ValidationError as exc:
        error = exc.errors()[0]
        context = error.get("ctx") or {}
        where = tuple(context.get("where", ())) or tuple(str(p) for p in error["loc"])
        raise problem(str(context.get("message", error["msg"])), "tls", *where) from None


class Server(_Model):
    """Istio's Server of a Gateway."""

    port: GatewayPort
    """Where it listens, and in which protocol."""
    hosts: list[str] = Field(min_length=1)
    """The hosts it serves (`namespace/host` or `host`, `*` for any); on HTTPS with
    several servers on one port, the SNI names that choose its certificate."""
    tls: ServerTls | None = None
    """Termination (HTTPS), or `httpsRedirect` (HTTP)."""
    name: str | None = None
    """A label only."""
    bind: str | None = None
    """The IP to listen on, instead of the configured listeners'."""
    default_endpoint: str | None = None
    """Accepted, not served (a sidecar's)."""

    @model_validator(mode="after")
    def _check(self) -> Server:
        protocol = self.port.protocol.upper()
        tls = self.tls
        if protocol in ("HTTPS", "TLS") and tls is not None and tls.mode == "PASSTHROUGH":
            if tls.server_certificate or tls.private_key or tls.ca_certificates:
                raise problem("mode PASSTHROUGH does not terminate: it takes no certificate", "tls")
        elif protocol == "TLS":
            raise problem(
                "protocol TLS is served with `tls.mode: PASSTHROUGH` (routed by SNI, for "
                "`tls` routes); to terminate, write `protocol: HTTPS`",
                "tls" if tls is not None else "port",
                *(("mode",) if tls is not None else ("protocol",)),
            )
        elif protocol == "HTTPS":
            if tls is None:
                raise problem("an HTTPS server needs `tls`", "tls", at_key=True)
            if tls.https_redirect:
                raise problem(
                    "`httpsRedirect` belongs on the HTTP server that sends clients here",
                    "tls",
                    "httpsRedirect",
                )
            for field, path in (
                ("serverCertificate", tls.server_certificate),
                ("privateKey", tls.private_key),
            ):
                if path is None:
                    raise problem(f"an HTTPS server needs `{field}`", "tls", field, at_key=True)
                check_pem(path, "tls", field)
            _check_as_listener(tls)
        elif tls is not None and (set(tls.model_fields_set) - {"https_redirect"}):
            raise problem(
                f"a {protocol} server serves no TLS: only `httpsRedirect` applies (or make it "
                "`protocol: HTTPS`)",
                "tls",
                at_key=True,
            )
        if tls is not None and tls.https_redirect and protocol not in HTTP_PROTOCOLS:
            raise problem("`httpsRedirect` needs an HTTP server", "tls", "httpsRedirect")
        return self

    @property
    def passthrough(self) -> bool:
        """Whether it passes TLS through, by SNI (an HTTP server's `tls` only redirects)."""
        protocol = self.port.protocol.upper()
        tls = self.tls
        return protocol in ("HTTPS", "TLS") and tls is not None and tls.mode == "PASSTHROUGH"

    @property
    def sni_hosts(self) -> list[str]:
        """Its hosts without their namespace, as SNI patterns (`*` matches any)."""
        return [h.rpartition("/")[2] for h in self.hosts]


class GatewaySpec(_Model):
    """Istio's Gateway spec."""

    servers: list[Server] = Field(min_length=1)
    """Each a listener (servers on one port share one)."""
    selector: dict[str, str] = Field(default_factory=dict)
    """The gateway pods it configures: pymirror is the gateway, so it is not read."""

    @model_validator(mode="after")
    def _check(self) -> GatewaySpec:
        first: dict[tuple[str | None, int], Server] = {}
        for i, server in enumerate(self.servers):
            other = first.setdefault((server.bind, server.port.number), server)
            if other is not server and (why := _cannot_share(other, server)):
                raise problem(why, "servers", i, "port", "number")
        return self


def _cannot_share(first: Server, later: Server) -> str | None:
    """Why ``later`` cannot share ``first``'s listener (same address), if it cannot."""
    port = later.port.number
    if first.passthrough and later.passthrough:
        return None  # one passthrough listener: the tls routes choose by SNI
    https = first.port.protocol.upper() == later.port.protocol.upper() == "HTTPS"
    if not https or first.passthrough or later.passthrough:
        return (
            f"port {port} is already another server's: only HTTPS servers (or PASSTHROUGH "
            "ones, together) share a port"
        )
    assert first.tls is not None and later.tls is not None
    mine, theirs = later.tls.listener_tls(), first.tls.listener_tls()
    for key in ("certificate", "privateKey"):
        del mine[key], theirs[key]
    if mine != theirs:
        return (
            f"HTTPS servers on port {port} share one listener (the certificate chosen by "
            "SNI): write the same mode, caCertificates, versions and cipher suites"
        )
    return None


def gateway_listeners(name: str, spec: GatewaySpec) -> list[tuple[list[int], dict[str, Any]]]:
    """The routes-format listeners of gateway ``name`` (`namespace/name`), each with the
    indexes of the servers it serves (servers on one address share one)."""
    https_ports = [s.port.number for s in spec.servers if s.port.protocol.upper() == "HTTPS"]
    grouped: dict[tuple[str | None, int], list[int]] = {}
    for i, server in enumerate(spec.servers):
        grouped.setdefault((server.bind, server.port.number), []).append(i)
    out = []
    for (bind, port), indexes in grouped.items():
        servers = [spec.servers[i] for i in indexes]
        first = servers[0]
        protocol = first.port.protocol.upper()
        kind = "tls" if first.passthrough else "tcp" if protocol in TCP_PROTOCOLS else "http"
        listener: dict[str, Any] = {
            "address": f"{bind or '0.0.0.0'}:{port}",
            "protocol": kind,
            "gateway": {"name": name, "bind": bind is not None},
        }
        if first.tls is not None and first.tls.https_redirect:
            listener["httpsRedirect"] = True
            listener["gateway"]["redirectPort"] = https_ports[0] if https_ports else 443
        if protocol == "HTTPS" and kind == "http":
            listener["tls"] = _shared_tls(servers)
        out.append((indexes, listener))
    return out


def _shared_tls(servers: list[Server]) -> dict[str, Any]:
    """The listener TLS of HTTPS servers on one port: one certificate, or each server's
    chosen by the SNI its hosts name (a server for `*` the default)."""
    tls = [s.tls for s in servers if s.tls is not None]
    first = tls[0].listener_tls()
    if len(servers) == 1:
        return first
    entries = sorted(
        (
            {
                "certificate": t.server_certificate,
                "privateKey": t.private_key,
                "sniHosts": [h for h in s.sni_hosts if h != "*"],
            }
            for s, t in zip(servers, tls, strict=True)
        ),
        key=lambda e: bool(e["sniHosts"]),  # the catch-all first: the default
    )
    shared = {k: v for k, v in first.items() if k not in ("certificate", "privateKey")}
    return {**shared, "certificates": entries}
