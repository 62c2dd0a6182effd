"""Runtime control on the admin endpoint, for operators: change a mirror's percentage
and the log level without a reload, reset the comparison data, trigger a reload.

What may drive it, checked before anything changes (`refusal`):
- POST only: a link, an `<img>` or a prefetch cannot change anything;
- no `Origin` header: browsers send one with every cross-origin POST, so a web page
  that a user with access to the admin port happens to open cannot drive it;
- off loopback, TLS on the admin listener and `Authorization: Bearer TOKEN` with the
  token from `--admin-token-file`: the admin port is on the pod's IP for the probes, and
  anything in the cluster can reach it. On loopback the token is asked for when set.

The handlers are plain functions of the request's body and the proxy: `Admin` serves
them, tests call them.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymirror.compare.store import Store
from pymirror.errors import PymirrorError
from pymirror.proxy import Proxy
from pymirror.runtime import parse_mirror_percentage

__all__ = ["PATHS", "Access", "Answer", "handle", "read_token", "refusal"]

log = logging.getLogger("pymirror.control")

#: The mutating paths, each POST only.
PATHS = (
    "/runtime/mirror_percentage",
    "/runtime/log_level",
    "/runtime/compare/reset",
    "/runtime/reload",
)
#: Largest body a control request may send.
MAX_BODY = 64 * 1024
_LEVELS = ("debug", "info", "warning", "error", "critical")

#: (status, JSON document, extra headers).
Answer = tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]
#: Reloads as SIGHUP does; answers (took effect, what happened).
Reload = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class Access:
    """Who may use runtime control on one admin listener."""

    loopback: bool
    """The admin endpoint is bound to a loopback address."""
    tls: bool
    """The admin listener serves TLS."""
    token: str | None = None
    """The bearer token from `--admin-token-file`."""


def read_token(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace dropped); PymirrorError when it cannot
    be read or is shorter than 16 characters (a guessable token guards nothing)."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise PymirrorError(f"--admin-token-file {path}: {exc.strerror or exc}") from None
    if len(token) < 16:
        raise PymirrorError(f"--admin-token-file {path}: the token must be 16 characters or more")
    return token


def refusal(method: str, headers: Mapping[bytes, bytes], access: Access) -> Answer | None:
    """Why this request may not change anything, or None when it may."""
    if method != "POST":
        return 405, {"error": "runtime control accepts POST only"}, [(b"allow", b"POST")]
    if b"origin" in headers:
        return 403, {"error": "refused: a request with an Origin header (sent by web pages) "
                              "cannot change pymirror"}, []  # fmt: skip
    if not access.loopback:
        if not access.tls:
            return 403, {"error": "runtime control off loopback needs TLS on the admin "
                                  "listener (--admin-tls-cert, --admin-tls-key)"}, []  # fmt: skip
        if access.token is None:
            return 403, {"error": "runtime control off loopback needs a token "
                                  "(--admin-token-file)"}, []  # fmt: skip
    if access.token is not None:
        given = headers.get(b"authorization", b"")
        expected = b"Bearer " + access.token.encode()
        if not hmac.compare_digest(given, expected):
            return (
                401,
                {"error": "a valid `Authorization: Bearer TOKEN` is required"},
                [(b"www-authenticate", b'Bearer realm="pymirror"')],
            )
    return None


async def handle(path: str, body: bytes, proxy: Proxy, reload: Reload | None) -> Answer:
    """Runs one control request that `refusal` let through."""
    try:
        if path == "/runtime/mirror_percentage":
            override = parse_mirror_percentage(body)
            named = proxy.set_mirror_percentage(override)
            log.warning("runtime: mirror percentage %s (%d mirror(s))", override.to_json(), named)
            return 200, {"mirrors": named, "overrides": _overrides(proxy),
                         "version": proxy.version}, []  # fmt: skip
        if path == "/runtime/log_level":
            return _log_level(body)
        if path == "/runtime/compare/reset":
            old = proxy.comparator.store
            proxy.comparator.store = Store(max_endpoints=old.max_endpoints)
            log.warning("runtime: comparison data reset")
            return 200, {"reset": True}, []
        if path == "/runtime/reload":
            if reload is None:
                return 501, {"error": "this admin endpoint has nothing to reload"}, []
            ok, message = await reload()
            return (200 if ok else 409), {"reloaded": ok, "message": message,
                                          "version": proxy.version}, []  # fmt: skip
    except ValueError as exc:
        return 400, {"error": str(exc)}, []
    return 404, {"error": f"not found; try {', '.join(PATHS)}"}, []


def _overrides(proxy: Proxy) -> list[dict[str, Any]]:
    return [o.to_json() for o in proxy.overrides]


def state(proxy: Proxy | None) -> dict[str, Any]:
    """What `GET /runtime` shows: the overrides in force and the log level."""
    return {
        "mirror_percentage": _overrides(proxy) if proxy is not None else [],
        "log_level": logging.getLevelName(logging.getLogger().level).lower(),
        "paths": list(PATHS),
    }


def _log_level(body: bytes) -> Answer:
    try:
        doc = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("level"), str):
        raise ValueError('expected {"level": "debug"} (and optionally "logger": NAME)')
    level = doc["level"].lower()
    if level not in _LEVELS:
        raise ValueError(f"unknown level {doc['level']!r}; the levels are: {', '.join(_LEVELS)}")
    name = doc.get("logger")
    if name is not None and not isinstance(name, str):
        raise ValueError("`logger` must be a logger's name")
    logging.getLogger(name).setLevel(level.upper())
    log.warning("runtime: log level of %s set to %s", name or "everything", level)
    return 200, {"logger": name or "", "level": level}, []
