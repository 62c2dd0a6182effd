"""One HTTP route's parts as the Snapshot says them: matches, header operations,
redirects, direct responses, rewrites, retries and faults (Istio's translation to Envoy).
"""

from __future__ import annotations

from .. import defaults
from .. import snapshot as snap
from ..config.actions import (
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
)
from ..config.findings import RETRY_NOT_SERVED
from ..config.matches import IGNORED_HEADER_KEYS, Headers, HTTPMatchRequest, StringMatch
from ..config.types import duration_ms

#: Istio's retry policy for a route that sets none, or sets no `retryOn`
#: (`retry.DefaultPolicy`): its `retriable-status-codes` is 503, which the core takes as a
#: bare status code beside the condition.
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_ON = [
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
    "503",
]


def per_million(percent: float) -> int:
    """A percentage as a share out of 1,000,000, truncated as Istio does (20 -> 200000,
    0.01 -> 100, 0.00005 -> 0). Rounded to 6 places first, so float error in the product
    (0.0007 * 10000 = 6.9999...) does not lose a step."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percentage out of [0, 100]: {percent}")
    return int(round(percent * 10_000, 6))


def string_match(m: StringMatch | None) -> snap.StringMatch | None:
    """None for no condition, and for `{}` (a presence test)."""
    kind = m.kind if m is not None else None
    if kind is None:
        return None
    if kind[0] == "exact":
        return {"exact": kind[1]}
    if kind[0] == "prefix":
        return {"prefix": kind[1]}
    return {"regex": kind[1]}


def request_match(m: HTTPMatchRequest) -> snap.RequestMatch:
    # `sourceLabels`, `gateways` and `sourceNamespace` have no meaning outside a mesh:
    # the conditions are left out (and reported by `pymirror check`).
    return {
        "uri": string_match(m.uri),
        "scheme": string_match(m.scheme),
        "method": string_match(m.method),
        "authority": string_match(m.authority),
        "headers": [
            {"name": name, "value": string_match(value)}
            for name, value in m.headers.items()
            if name not in IGNORED_HEADER_KEYS
        ],
        "without_headers": [
            {"name": name, "value": string_match(value)}
            for name, value in m.without_headers.items()
        ],
        "query_params": [
            {"name": name, "value": string_match(value)} for name, value in m.query_params.items()
        ],
        "port": m.port,
        "ignore_uri_case": m.ignore_uri_case,
    }


def header_ops(headers: Headers | None, which: str) -> snap.HeaderOps:
    """The `request` or `response` operations, names lower-cased as the core wants them."""
    ops = getattr(headers, which) if headers is not None else None
    if ops is None:
        return {"set": [], "add": [], "remove": []}
    return {
        "set": [{"name": k.lower(), "value": v} for k, v in ops.set.items()],
        "add": [{"name": k.lower(), "value": v} for k, v in ops.add.items()],
        "remove": [k.lower() for k in ops.remove],
    }


def redirect(r: HTTPRedirect | None) -> snap.Redirect | None:
    if r is None:
        return None
    port = r.port
    if port is None and r.derive_port == "FROM_PROTOCOL_DEFAULT":
        port = 443 if (r.scheme or "").lower() == "https" else 80
    return {
        "uri": r.uri,
        "authority": r.authority,
        "port": port,
        "scheme": r.scheme,
        "code": r.redirect_code or defaults.REDIRECT_CODE,
    }


def direct_response(d: HTTPDirectResponse | None) -> snap.DirectResponse | None:
    if d is None:
        return None
    return {"status": d.status, "body": list(d.body.content) if d.body else []}


def rewrite(r: HTTPRewrite | None) -> snap.Rewrite | None:
    if r is None:
        return None
    regex = r.uri_regex_rewrite
    return {
        "uri": r.uri,
        "authority": r.authority,
        "uri_regex": {"pattern": regex.match, "substitution": regex.rewrite} if regex else None,
    }


def retries(r: HTTPRetry | None) -> snap.RetryPolicy | None:
    """Istio's default when unset; `attempts: 0` turns retries off."""
    if r is None:
        return {
            "attempts": DEFAULT_RETRY_ATTEMPTS,
            "per_try_timeout_ms": None,
            "retry_on": list(DEFAULT_RETRY_ON),
        }
    if r.attempts == 0:
        return None
    conditions = [c for c in r.conditions if c not in RETRY_NOT_SERVED]
    return {
        "attempts": r.attempts,
        "per_try_timeout_ms": duration_ms(r.per_try_timeout) if r.per_try_timeout else None,
        "retry_on": conditions if r.retry_on is not None else list(DEFAULT_RETRY_ON),
    }


def fault(f: HTTPFaultInjection | None) -> snap.Fault | None:
    """No percentage means every request, as in Istio."""
    if f is None:
        return None
    result: snap.Fault = {"delay": None, "abort": None}
    if (d := f.delay) is not None and d.fixed_delay is not None:
        share = d.percentage.value if d.percentage else d.percent if d.percent is not None else 100
        result["delay"] = {
            "fixed_delay_ms": duration_ms(d.fixed_delay),
            "per_million": per_million(share),
        }
    if (a := f.abort) is not None and (a.http_status is not None or a.grpc_code is not None):
        share = a.percentage.value if a.percentage else 100
        abort: snap.FaultAbort = {"status": a.http_status or 200, "per_million": per_million(share)}
        if a.grpc_code is not None:
            abort["grpc_status"] = a.grpc_code
        result["abort"] = abort
    return result
