"""The typed, frozen configuration model.

`virtualServices` follows Istio's VirtualService API (networking.istio.io), field for
field, for the fields pymirror serves; Istio fields it does not serve yet are listed in
each model's ``unsupported`` and rejected with a clear message, never ignored. Field
names are Istio's camelCase; the snake_case spelling is accepted too, as protobuf JSON
does. Everything outside `virtualServices` is pymirror's own native format.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .. import snapshot as defaults
from .types import (
    Authority,
    BindAuthority,
    ByteSize,
    DestinationHost,
    Duration,
    HostName,
    HostPattern,
    ListenAddress,
)

_U32_MAX = 2**32 - 1
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 header field name


def problem(message: str, *where: str | int, at_key: bool = False) -> PydanticCustomError:
    """An error from a model check, placed at ``where`` below the model (at its key if asked)."""
    return PydanticCustomError(
        "pymirror", "{message}", {"message": message, "where": where, "at_key": at_key}
    )


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"not a valid HTTP header name: {value!r}")
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _host_suffix(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]*", value):
        raise ValueError(f"may hold only letters, digits, `-` and `.` (got {value!r})")
    return value


Name = Annotated[str, AfterValidator(_name)]
HostSuffix = Annotated[str, AfterValidator(_host_suffix)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
Labels = dict[Name, str]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        # YAML already typed each value; `"20"` for a number is a mistake, not a number.
        strict=True,
        use_attribute_docstrings=True,
    )
    #: Istio fields of this object that pymirror does not serve yet (rejected by name).
    unsupported: ClassVar[frozenset[str]] = frozenset()


# === virtual services (Istio) ===


class PortSelector(_Model):
    """Istio PortSelector."""

    number: int = Field(ge=1, le=65535)
    """Port of the destination host. For a host resolved by DNS, the port connected to
    (default 80); a declared service's endpoints carry their own ports."""


class Destination(_Model):
    """Istio Destination: a service, optionally narrowed to a subset."""

    host: DestinationHost
    """A service declared under `services`, or else a DNS name connected to directly."""
    subset: Name | None = None
    """A subset of the service (a name under its `subsets`). Default: all its endpoints."""
    port: PortSelector | None = None
    """Port for a host resolved by DNS (default 80)."""


class Percent(_Model):
    """Istio Percent."""

    value: float = Field(ge=0, le=100, allow_inf_nan=False)
    """A percentage in [0, 100], fractions allowed: 0.01 copies one request in 10,000."""


class StringMatch(_Model):
    """Istio StringMatch: exactly one of `exact`, `prefix`, `regex`."""

    exact: str | None = None
    """Matches this exact string."""
    prefix: str | None = None
    """Matches strings starting with this."""
    regex: str | None = None
    """Matches strings that the regular expression (RE2 syntax) matches in full."""

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) != 1:
            if not set_:
                raise problem(
                    "set one of `exact`, `prefix` or `regex` (an empty match, which Istio "
                    "reads as a presence test, is not supported by pymirror yet)"
                )
            both = " and ".join(f"`{k}`" for k in set_)
            raise problem(f"set only one of `exact`, `prefix` or `regex` (got {both})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise problem(f"invalid regular expression: {exc}", "regex") from None
        return self

    @property
    def kind(self) -> tuple[str, str]:
        """``("prefix", "/api")``: which kind of match, and its operand."""
        for k in ("exact", "prefix", "regex"):
            if (v := getattr(self, k)) is not None:
                return k, v
        raise AssertionError("validated StringMatch has no kind")


class HTTPMatchRequest(_Model):
    """Istio HTTPMatchRequest: every condition set must hold (AND)."""

    unsupported = frozenset({
        "scheme", "authority", "port", "sourceLabels", "gateways", "queryParams",
        "ignoreUriCase", "withoutHeaders", "sourceNamespace", "statPrefix",
    })  # fmt: skip

    name: str | None = None
    """A name for this match, for readers (not used in routing)."""
    uri: StringMatch | None = None
    """Condition on the request path (without the query string). Default: any."""
    method: StringMatch | None = None
    """Condition on the request method, such as `{exact: GET}`. Default: any."""
    headers: dict[HeaderName, StringMatch] = Field(default_factory=dict)
    """Conditions on request headers by name (case-insensitive). Default: none."""


class HTTPRouteDestination(_Model):
    """Istio HTTPRouteDestination: a primary destination and its share of requests."""

    unsupported = frozenset({"headers"})

    destination: Destination
    """Where matching requests are forwarded."""
    weight: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """Relative share of requests among the route's destinations. A lone destination gets
    all requests; with several, an unset weight counts as 0."""


class HTTPMirrorPolicy(_Model):
    """Istio HTTPMirrorPolicy: one entry of `mirrors`."""

    destination: Destination
    """Where copies go; their responses are dropped."""
    percentage: Percent | None = None
    """Share of requests copied. Default: 100%."""


class HTTPRoute(_Model):
    """Istio HTTPRoute: conditions, primary destinations and mirrors."""

    unsupported = frozenset({
        "redirect", "directResponse", "delegate", "rewrite", "retries", "fault",
        "corsPolicy", "headers",
    })  # fmt: skip

    name: str | None = None
    """The route's name (a metrics label). Default: its index in `http`."""
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    """Conditions, any of which selects this route (OR). Default: every request."""
    route: list[HTTPRouteDestination] = Field(min_length=1)
    """Primary destinations; the request goes to one of them, by weight."""
    timeout: Duration | None = None
    """Deadline for the primary's response headers (`10s`, `500ms`). Default: none."""
    mirror: Destination | None = None
    """Where copies of the requests go; responses are dropped."""
    mirror_percentage: Percent | None = None
    """Share of requests copied to `mirror`. Default: 100%; 0 sends none."""
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    """Deprecated Istio field: `mirrorPercentage` as a whole number."""
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    """Several mirrors, each sampling requests on its own. Not with `mirror`."""

    @model_validator(mode="after")
    def _check(self) -> HTTPRoute:
        if self.mirror is not None and self.mirrors:
            raise problem("set `mirror` or `mirrors`, not both", "mirrors", at_key=True)
        if self.mirror_percentage is not None and self.mirror_percent is not None:
            raise problem(
                "set `mirrorPercentage` or the deprecated `mirrorPercent`, not both",
                "mirrorPercent",
                at_key=True,
            )
        if self.mirror is None:
            for field in ("mirror_percentage", "mirror_percent"):
                if getattr(self, field) is not None:
                    alias = to_camel(field)
                    hint = "each `mirrors` entry's `percentage`" if self.mirrors else "`mirror`"
                    raise problem(
                        f"`{alias}` without `mirror` has no effect; use {hint}", alias, at_key=True
                    )
        if len(self.route) > 1 and sum(self.weights) == 0:
            raise problem(
                "the destinations' weights add up to 0; give each its share, "
                "such as `weight: 80` and `weight: 20`",
                "route",
            )
        if sum(self.weights) > _U32_MAX:
            raise problem(f"the weights add up to more than {_U32_MAX}", "route")
        return self

    @property
    def weights(self) -> list[int]:
        """The primary destinations' weights, as Istio reads them."""
        if len(self.route) == 1:
            return [100]
        return [d.weight or 0 for d in self.route]

    @property
    def mirror_policies(self) -> list[tuple[Destination, float]]:
        """Every mirror with the percentage of requests it gets, whichever way written."""
        if self.mirror is not None:
            if self.mirror_percentage is not None:
                return [(self.mirror, self.mirror_percentage.value)]
            if self.mirror_percent is not None:
                return [(self.mirror, float(self.mirror_percent))]
            return [(self.mirror, 100.0)]
        return [
            (m.destination, m.percentage.value if m.percentage else 100.0) for m in self.mirrors
        ]


class VirtualService(_Model):
    """Istio VirtualService, with its `metadata.name` written as `name`."""

    unsupported = frozenset({"gateways", "tls", "tcp", "exportTo"})

    name: Name
    """Unique name (a metrics label)."""
    hosts: list[HostPattern] = Field(min_length=1)
    """Request hosts served (`reviews`, `*.example.com`, `*`), matched against the
    request's Host without port, case-insensitively."""
    http: list[HTTPRoute] = Field(min_length=1)
    """Routes, tried in order; the first whose match holds serves the request."""


# === pymirror's native format ===


class Endpoint(_Model):
    """One instance of a service."""

    address: Authority
    """`host:port` to connect to; a host name is resolved by DNS at connect time."""
    labels: Labels = Field(default_factory=dict)
    """Labels that subsets select by, such as `{version: v1}`."""


class Service(_Model):
    """A service's endpoints and subsets (Istio's ServiceEntry + DestinationRule)."""

    endpoints: list[Endpoint] = Field(default_factory=list)
    """The service's instances. Empty: the service name is resolved by DNS."""
    subsets: dict[Name, Labels] = Field(default_factory=dict)
    """Named subsets: each selects the endpoints whose labels include all of its labels."""

    def select(self, subset: str | None) -> list[Endpoint]:
        """The endpoints of a subset (all of them for ``None``)."""
        if subset is None:
            return list(self.endpoints)
        labels = self.subsets[subset].items()
        return [e for e in self.endpoints if labels <= e.labels.items()]


class Listener(_Model):
    """An address to accept HTTP/1.1 connections on."""

    address: ListenAddress
    """`ip:port` to listen on; port 0 picks a free port."""
    host: HostName | None = None
    """The host that a request whose Host matches no virtual service is routed as.
    Default: such requests get 404."""


class Admin(_Model):
    """The admin endpoint (metrics, health, config)."""

    address: BindAuthority
    """`host:port` to serve it on; port 0 picks a free port."""


class Upstream(_Model):
    """pymirror extension: settings for connections to destinations."""

    connect_timeout: Duration = timedelta(milliseconds=defaults.CONNECT_TIMEOUT_MS)
    """Deadline for opening a connection to an endpoint. Default: 1s."""


class MirrorDefaults(_Model):
    """pymirror extension: the bounds that keep every mirror from hurting the primary."""

    max_in_flight: int = Field(default=defaults.MIRROR_MAX_IN_FLIGHT, ge=1, le=_U32_MAX)
    """Copies in flight at once per mirror; past it a copy is dropped. Default: 1024."""
    timeout: Duration = timedelta(milliseconds=defaults.MIRROR_TIMEOUT_MS)
    """Deadline for a copy's whole exchange; past it the copy is abandoned. Default: 10s."""
    max_body_bytes: ByteSize = Field(default=defaults.MIRROR_MAX_BODY_BYTES, ge=0)
    """Request body bytes a copy may hold queued while the mirror reads slower than the
    primary (a number or `4MiB`, `512KiB`); past it the copy is cut and counted as
    dropped (`body_buffer`), never sent short. Default: 4 MiB."""
    host_suffix: HostSuffix = defaults.MIRROR_HOST_SUFFIX
    """Appended to the copy's Host name, before any port. Default: `-shadow`."""


class Config(_Model):
    """A whole pymirror configuration."""

    listeners: list[Listener] = Field(default_factory=list)
    """Where the proxy accepts connections. At least one (here or from `--listen`)."""
    admin: Admin | None = None
    """The admin endpoint. Default: none."""
    services: dict[HostName, Service] = Field(default_factory=dict)
    """Services by host name. A destination host not declared here is resolved by DNS."""
    virtual_services: list[VirtualService] = Field(default_factory=list)
    """Istio VirtualServices: which requests go where, and what is mirrored."""
    upstream: Upstream = Field(default_factory=Upstream)
    """pymirror extension: upstream connection settings."""
    mirror_defaults: MirrorDefaults = Field(default_factory=MirrorDefaults)
    """pymirror extension: bounds applied to every mirror."""

    # Where each value was written (a `pymirror.config.merge.Origin`), for error messages.
    _origin: Any = PrivateAttr(default=None)


def host_matches(pattern: str, host: str) -> bool:
    """Whether a virtual service host pattern (`reviews`, `*.example.com`, `*`) covers ``host``."""
    pattern, host = pattern.lower(), host.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern.rstrip(".") == host
