"""Istio's ServiceEntry spec: hosts, ports and endpoints (with the labels subsets select)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import U32_MAX, Labels, Name, _Model, is_dns_label, problem
from .types import HostPattern, check_hostname, is_ip


class SEPort(_Model):
    """Istio ServicePort of a ServiceEntry."""

    number: int = Field(ge=1, le=65535)
    """The port destinations select (`port: {number: 9080}`)."""
    name: Name
    """Its name (a DNS label), which endpoint `ports` refer to."""
    protocol: str | None = None
    """`HTTP`, `HTTP2`, `GRPC`, `TCP`, ...: `HTTP2`, `GRPC` and `GRPC-WEB` (or, when none
    is written, a name such as `grpc-api`) make requests to this port go upstream over
    HTTP/2; a MirrorProxy listener on this port number that writes no `protocol` is `tcp`
    when it is `TCP`, `MONGO`, `MYSQL` or `REDIS` (any case), as Istio's sidecar takes a
    listener's protocol from the service port."""
    target_port: int | None = Field(default=None, ge=1, le=65535)
    """The port endpoints listen on. Default: `number`."""


class WorkloadEntry(_Model):
    """Istio WorkloadEntry: one endpoint of a ServiceEntry."""

    address: str
    """An IP address (STATIC resolution) or a DNS name (DNS resolution)."""
    ports: dict[Name, int] = Field(default_factory=dict)
    """This endpoint's port for a service port, by the port's name."""
    labels: Labels = Field(default_factory=dict)
    """Labels that DestinationRule subsets select by."""
    weight: int | None = Field(default=None, ge=0, le=U32_MAX)
    """Relative share of the host's requests. Default (and 0): 1."""
    network: str | None = None
    """Accepted, not applicable outside a mesh."""
    locality: str | None = None
    """Accepted, not applicable outside a mesh."""
    service_account: str | None = None
    """Accepted, not applicable outside a mesh."""


class ServiceEntrySpec(_Model):
    """Istio ServiceEntry `spec`."""

    hosts: list[HostPattern] = Field(min_length=1)
    """The hosts declared; destinations name them."""
    addresses: list[str] = Field(default_factory=list)
    """Accepted, not applicable outside a mesh (virtual IPs)."""
    ports: list[SEPort] = Field(default_factory=list)
    """The ports the hosts answer on."""
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    """Accepted as written."""
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    """How endpoints are found: STATIC, the `endpoints` given; DNS (and NONE, which outside
    a mesh has no original destination to keep), the endpoints' names, or else the hosts
    themselves, resolved at connect time."""
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    """The instances, with their labels."""
    workload_selector: dict[str, Any] | None = None
    """Accepted, not served (reported): pymirror reads no Kubernetes workloads."""
    export_to: list[str] = Field(default_factory=list)
    """Namespaces that see these hosts (`.` this one, `*` every one). Default: every one."""
    subject_alt_names: list[str] = Field(default_factory=list)
    """Accepted, not served (pymirror does not originate TLS)."""

    @model_validator(mode="after")
    def _check(self) -> ServiceEntrySpec:
        for i, host in enumerate(self.hosts):
            if host == "*":
                raise problem("`*` is not a valid ServiceEntry host", "hosts", i)
        names: dict[str, int] = {}
        numbers: dict[int, int] = {}
        for i, port in enumerate(self.ports):
            if not is_dns_label(port.name):
                raise problem(f"invalid port name: {port.name!r}", "ports", i, "name")
            if port.name in names:
                raise problem(f"port name `{port.name}` is already defined", "ports", i, "name")
            if port.number in numbers:
                raise problem(f"port {port.number} is already defined", "ports", i, "number")
            names[port.name], numbers[port.number] = i, i
        if self.workload_selector is not None and self.endpoints:
            raise problem("set `workloadSelector` or `endpoints`, not both", "endpoints")
        if self.resolution == "NONE" and self.endpoints:
            raise problem("resolution NONE takes no `endpoints`", "endpoints", at_key=True)
        for i, endpoint in enumerate(self.endpoints):
            if self.resolution == "STATIC" and not is_ip(endpoint.address):
                raise problem(
                    f"with resolution STATIC, an endpoint address is an IP address "
                    f"(got {endpoint.address!r})",
                    "endpoints",
                    i,
                    "address",
                )
            try:
                check_hostname(endpoint.address)
            except ValueError as exc:
                raise problem(str(exc), "endpoints", i, "address") from None
            for name in endpoint.ports:
                if name not in names:
                    raise problem(
                        f"no port of this ServiceEntry is named `{name}`",
                        "endpoints",
                        i,
                        "ports",
                        name,
                        at_key=True,
                    )
        if self.endpoints and not self.ports:
            raise problem("endpoints need the service's `ports`", "ports")
        return self
