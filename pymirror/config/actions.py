"""What answers an Istio HTTP route besides forwarding, and how forwarding behaves:
redirects, direct responses, rewrites, retries, fault injection (Istio's validation)."""

from __future__ import annotations

import base64
import binascii
import builtins
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import _Model, check_regex, problem
from .matches import Percent
from .types import Duration

#: Istio's HTTPRetry.retryOn values (Envoy's retry_on conditions), besides status codes.
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "cancelled",
    "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
    "reset-before-request", "http3-post-connect-failure",
})  # fmt: skip
_DIRECT_BODY_MAX = 100 * 1024  # Istio's limit: "must be less than 100KB"


class HTTPRedirect(_Model):
    """Istio HTTPRedirect: answer with a redirect; unset parts keep the request's."""

    uri: str | None = None
    """Replaces the path (the query is kept)."""
    authority: str | None = None
    """Replaces the host (and port)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Replaces the port."""
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    """`FROM_PROTOCOL_DEFAULT`: the scheme's port; `FROM_REQUEST_PORT`: the request's."""
    scheme: str | None = None
    """Replaces the scheme (`http` or `https`)."""
    redirect_code: int | None = Field(default=None, ge=300, le=399)
    """The 3xx status. Default: 301."""

    @model_validator(mode="after")
    def _check(self) -> HTTPRedirect:
        if not (self.uri or self.authority or self.port or self.derive_port or self.scheme):
            raise problem("a redirect must set `uri`, `authority`, `scheme` or a port")
        if self.port is not None and self.derive_port is not None:
            raise problem("set `port` or `derivePort`, not both", "derivePort", at_key=True)
        return self


class HTTPBody(_Model):
    """Istio HTTPBody: one of `string` and `bytes`."""

    string: str | None = None
    """The body as text (sent UTF-8 encoded)."""
    bytes: str | None = None
    """The body as base64."""

    @model_validator(mode="after")
    def _check(self) -> HTTPBody:
        if (self.string is None) == (self.bytes is None):
            raise problem("set one of `string` or `bytes`")
        if self.bytes is not None:
            try:
                base64.b64decode(self.bytes, validate=True)
            except binascii.Error as exc:
                raise problem(f"not valid base64: {exc}", "bytes") from None
        if len(self.content) > _DIRECT_BODY_MAX:
            raise problem("a direct response body must be less than 100KB (Istio's limit)")
        return self

    @property
    def content(self) -> builtins.bytes:
        if self.string is not None:
            return self.string.encode()
        return base64.b64decode(self.bytes or "")


class HTTPDirectResponse(_Model):
    """Istio HTTPDirectResponse: answer with a fixed status and body."""

    status: int = Field(ge=200, le=599)
    """The status code."""
    body: HTTPBody | None = None
    """The body. Default: none."""


class RegexRewrite(_Model):
    """Istio RegexRewrite."""

    match: str
    """RE2 pattern; every match in the path is replaced."""
    rewrite: str
    """The replacement; `\\1` names a group."""

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        if why := check_regex(value):
            raise ValueError(why)
        return value


class HTTPRewrite(_Model):
    """Istio HTTPRewrite: applied before forwarding (and mirroring)."""

    uri: str | None = None
    """Replaces the matched `uri` prefix (or the whole path for exact and regex matches)."""
    authority: str | None = None
    """Replaces the Host header."""
    uri_regex_rewrite: RegexRewrite | None = None
    """Rewrites the path with a regular expression."""

    @model_validator(mode="after")
    def _check(self) -> HTTPRewrite:
        if self.uri is None and self.authority is None and self.uri_regex_rewrite is None:
            raise problem("set `uri`, `authority` or `uriRegexRewrite`")
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise problem("set `uri` or `uriRegexRewrite`, not both", "uriRegexRewrite")
        return self


class HTTPRetry(_Model):
    """Istio HTTPRetry."""

    attempts: int = Field(ge=0)
    """Retries after the first try; 0 disables retries."""
    per_try_timeout: Duration | None = None
    """Deadline of each try. Default: the route's timeout."""
    retry_on: str | None = None
    """Comma-separated conditions (`5xx`, `connect-failure`, `503`, ...). Default: Istio's
    `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with
    retriable status 503."""
    retry_remote_localities: bool | None = None
    """Accepted, not served (reported)."""
    backoff: Duration | None = None
    """Accepted, not served (reported): the core backs off 25ms, doubling, to 250ms."""

    @model_validator(mode="after")
    def _check(self) -> HTTPRetry:
        for condition in self.conditions:
            if condition not in RETRY_ON and not (condition.isdigit() and len(condition) == 3):
                raise problem(f"`{condition}` is not a retryOn condition", "retryOn")
        if self.attempts == 0 and (self.per_try_timeout or self.retry_on):
            raise problem(
                "retries are disabled by `attempts: 0`; remove `perTryTimeout` and `retryOn`"
            )
        return self

    @property
    def conditions(self) -> list[str]:
        return [c.strip() for c in (self.retry_on or "").split(",") if c.strip()]


class FaultDelay(_Model):
    """Istio HTTPFaultInjection.Delay."""

    fixed_delay: Duration | None = None
    """How long the request waits before it is forwarded."""
    exponential_delay: Duration | None = None
    """Not supported by Istio either: rejected."""
    percentage: Percent | None = None
    """Share of requests delayed. Default: 100%."""
    percent: int | None = Field(default=None, ge=0, le=100)
    """Deprecated Istio field: `percentage` as a whole number."""

    @model_validator(mode="after")
    def _check(self) -> FaultDelay:
        if self.exponential_delay is not None:
            raise problem(
                "`exponentialDelay` is not supported (by Istio either)", "exponentialDelay"
            )
        if self.fixed_delay is None:
            raise problem("missing required field `fixedDelay`", "fixedDelay")
        return self


class FaultAbort(_Model):
    """Istio HTTPFaultInjection.Abort."""

    http_status: int | None = Field(default=None, ge=200, le=599)
    """The status answered instead of forwarding."""
    grpc_status: str | None = None
    """A gRPC status name (`UNAVAILABLE`, as Istio writes it, all caps): the request is
    answered as a gRPC call that failed so (HTTP 200, `grpc-status`)."""
    http2_error: str | None = None
    """Not served (an HTTP/2 stream reset): rejected."""
    percentage: Percent | None = None
    """Share of requests aborted. Default: 100%."""

    @model_validator(mode="after")
    def _check(self) -> FaultAbort:
        if self.http2_error is not None:
            raise problem(
                "`http2Error` aborts are not supported by pymirror yet; use `httpStatus` or "
                "`grpcStatus`",
                "http2Error",
            )
        if self.grpc_status is not None:
            if self.http_status is not None:
                raise problem("give `httpStatus` or `grpcStatus`, not both", "grpcStatus")
            if self.grpc_status not in GRPC_STATUS_CODES:
                known = ", ".join(GRPC_STATUS_CODES)
                raise problem(
                    f"unknown gRPC status {self.grpc_status!r} (one of {known})", "grpcStatus"
                )
        elif self.http_status is None:
            raise problem("missing required field `httpStatus` (or `grpcStatus`)", "httpStatus")
        return self

    @property
    def grpc_code(self) -> int | None:
        """`grpc_status` as its number."""
        return None if self.grpc_status is None else GRPC_STATUS_CODES[self.grpc_status]


#: gRPC's status codes by the names Istio's `grpcStatus` takes (grpc/doc/statuscodes.md).
_GRPC_STATUS_NAMES = """OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND
ALREADY_EXISTS PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE
UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"""
GRPC_STATUS_CODES: dict[str, int] = {n: i for i, n in enumerate(_GRPC_STATUS_NAMES.split())}


class HTTPFaultInjection(_Model):
    """Istio HTTPFaultInjection: delay and/or abort a share of requests."""

    delay: FaultDelay | None = None
    """Delay before forwarding."""
    abort: FaultAbort | None = None
    """Answer with an error status instead of forwarding."""

    @model_validator(mode="after")
    def _check(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise problem("a fault needs `delay`, `abort` or both")
        return self
