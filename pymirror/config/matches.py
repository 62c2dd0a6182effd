"""Istio's building blocks of an HTTP route: destinations, percentages, string and
request matches, header operations (networking.istio.io VirtualService API)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import (
    HeaderName,
    LowerHeaderName,
    Name,
    SubsetName,
    _Model,
    check_regex,
    problem,
)
from .types import DestinationHost

#: Keys of `headers` in a match that Istio ignores: they once named pseudo-headers, which
#: `uri`, `scheme`, `method` and `authority` now match.
IGNORED_HEADER_KEYS = frozenset({"uri", "scheme", "method", "authority"})


class PortSelector(_Model):
    """Istio PortSelector."""

    number: int = Field(ge=1, le=65535)
    """A port of the destination host: with declared `ports` (a ServiceEntry), which of them;
    for a host resolved by DNS, the port connected to (default 80)."""


class Destination(_Model):
    """Istio Destination: a service, optionally narrowed to a subset."""

    host: DestinationHost
    """A declared service (`services`, or a ServiceEntry host), or else a DNS name
    connected to directly."""
    subset: SubsetName | None = None
    """A subset of the service (a DestinationRule subset). Default: all its endpoints."""
    port: PortSelector | None = None
    """The service port. Default: the service's only port (80 for a host resolved by DNS)."""


class Percent(_Model):
    """Istio Percent."""

    value: float = Field(ge=0, le=100, allow_inf_nan=False)
    """A percentage in [0, 100], fractions allowed: 0.01 is one request in 10,000."""


class StringMatch(_Model):
    """Istio StringMatch: one of `exact`, `prefix`, `regex`; `{}` where a presence test is
    meant (headers, query parameters)."""

    exact: str | None = None
    """Matches this exact string."""
    prefix: str | None = None
    """Matches strings starting with this."""
    regex: str | None = None
    """Matches strings that the regular expression (RE2 syntax) matches in full."""

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) > 1:
            both = " and ".join(f"`{k}`" for k in set_)
            raise problem(f"set only one of `exact`, `prefix` or `regex` (got {both})")
        if self.regex is not None and (why := check_regex(self.regex)):
            raise problem(why, "regex")
        return self

    @property
    def kind(self) -> tuple[str, str] | None:
        """``("prefix", "/api")``: which kind of match, and its operand; None for `{}`."""
        for k in ("exact", "prefix", "regex"):
            if (v := getattr(self, k)) is not None:
                return k, v
        return None


class HTTPMatchRequest(_Model):
    """Istio HTTPMatchRequest: every condition set must hold (AND)."""

    name: str | None = None
    """A name for this match, for readers (not used in routing)."""
    uri: StringMatch | None = None
    """Condition on the request path (without the query string). Default: any."""
    scheme: StringMatch | None = None
    """Condition on the scheme the request arrived with (`http`). Default: any."""
    method: StringMatch | None = None
    """Condition on the request method, such as `{exact: GET}`. Default: any."""
    authority: StringMatch | None = None
    """Condition on the Host header, port included. Default: any."""
    headers: dict[LowerHeaderName, StringMatch] = Field(default_factory=dict)
    """Conditions on request headers by lower-case name; `{}` asks for presence. Keys
    `uri`, `scheme`, `method` and `authority` are ignored, as Istio does."""
    without_headers: dict[LowerHeaderName, StringMatch] = Field(default_factory=dict)
    """Headers that must not match (`{}` or `regex: "*"`: must be absent)."""
    query_params: dict[Name, StringMatch] = Field(default_factory=dict)
    """Conditions on query parameters by name; `{}` asks for presence."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The port of the listener the request arrived on. Default: any."""
    ignore_uri_case: bool = False
    """Compare `uri` case-insensitively."""
    source_labels: dict[Name, str] = Field(default_factory=dict)
    """Accepted, not applicable outside a mesh (reported; the condition is ignored)."""
    gateways: list[str] = Field(default_factory=list)
    """Accepted, not applicable outside a mesh (reported; the condition is ignored)."""
    source_namespace: str | None = None
    """Accepted, not applicable outside a mesh (reported; the condition is ignored)."""
    stat_prefix: str | None = None
    """Accepted, not served (reported): pymirror names its metrics by route."""

    @field_validator("without_headers", mode="before")
    @classmethod
    def _star_is_presence(cls, value: Any) -> Any:
        # Istio reads `regex: "*"` in withoutHeaders as "present", not as a regex.
        if isinstance(value, dict):
            return {k: {} if v == {"regex": "*"} else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> HTTPMatchRequest:
        # An empty StringMatch is a presence test; uri, scheme, method and authority are
        # always present, so there `{}` is a mistake.
        for field in ("uri", "scheme", "method", "authority"):
            m = getattr(self, field)
            if m is not None and m.kind is None:
                raise problem("set one of `exact`, `prefix` or `regex`", field)
        return self


class HeaderOperations(_Model):
    """Istio Headers.HeaderOperations: applied in the order remove, set, add."""

    set: dict[HeaderName, str] = Field(default_factory=dict)
    """Headers replaced (or added) with these values."""
    add: dict[HeaderName, str] = Field(default_factory=dict)
    """Headers appended with these values."""
    remove: list[HeaderName] = Field(default_factory=list)
    """Headers removed."""


class Headers(_Model):
    """Istio Headers: operations on the request to the destination and on the response."""

    request: HeaderOperations | None = None
    """Operations on the request forwarded to the destination (and copied to mirrors)."""
    response: HeaderOperations | None = None
    """Operations on the response returned to the client."""

    def authority(self) -> tuple[str, str] | None:
        """``(op, name)`` when the request's Host is set here."""
        ops = self.request
        for op in ("set", "add"):
            for name in getattr(ops, op) if ops else {}:
                if name.lower() == "host":
                    return op, name
        return None
