"""One pair's comparison: status, headers, body (exact, or field by field for JSON).

A pair is what the core hands over (`Engine.drain_compared`): two sides, each with
`status`, `headers` (lower-case name, value), `body` (the kept bytes), `body_len`,
`body_hash` (of the body read), `truncated`, `cut` (the body was not read to its end:
the mirror's, past the capture limit) and `latency` (seconds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymirror import snapshot as snap

#: Headers that differ between any two instances and say nothing about behaviour.
DEFAULT_IGNORED_HEADERS = frozenset(
    {
        "date",
        "server",
        "x-request-id",
        "set-cookie",
        "age",
        "expires",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "via",
        "x-envoy-upstream-service-time",
    }
)

#: Never kept in samples, whatever the configuration says.
ALWAYS_REDACTED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)

#: Results, from the most to the least telling; a pair gets the first that applies.
RESULTS = ("status_mismatch", "body_mismatch", "header_mismatch", "match")

REDACTED = "[redacted]"


class _Absent:
    """A field present on one side only."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Difference:
    kind: str
    """`status`, `header` or `body`."""
    field: str
    """What differs, as grouped in reports: `status`, `header:etag`, `body`, or a JSON
    path with list indices folded (`$.items[*].price`)."""
    path: str
    """Where exactly (`$.items[3].price`); equal to `field` outside JSON."""
    primary: Any
    mirror: Any


@dataclass(frozen=True)
class Outcome:
    result: str
    differences: tuple[Difference, ...] = ()
    truncated: bool = False
    """A side was cut at the capture limit: only the kept prefixes were compared."""


def _path_pattern(path: str) -> re.Pattern[str]:
    """`$.items[*].price` as a regex over exact paths; a match also covers the subtree
    below it (`$.meta` ignores `$.meta.ts`). `*` stands for any key or index."""
    out = re.escape(path)
    out = out.replace(re.escape("[*]"), r"\[\d+\]").replace(r"\.\*", r"\.[^.\[]+")
    return re.compile(f"^{out}(?:[.\\[].*)?$")


@dataclass(frozen=True)
class Settings:
    """How one mirror's pairs are compared (from its `compare` in the snapshot)."""

    ignore_headers: frozenset[str] = DEFAULT_IGNORED_HEADERS
    ignore_paths: tuple[str, ...] = ()
    redact_headers: frozenset[str] = ALWAYS_REDACTED_HEADERS
    redact_paths: tuple[str, ...] = ()
    second_primary: bool = False
    """This mirror's compared requests also go to a second primary (noise filtering)."""
    noise_for: int | None = None
    """Set on the second primary's own copies: the mirror (index) they stand beside."""
    _ignore: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _redact: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignore", tuple(map(_path_pattern, self.ignore_paths)))
        object.__setattr__(self, "_redact", tuple(map(_path_pattern, self.redact_paths)))

    @classmethod
    def from_snapshot(cls, spec: snap.Compare | None) -> Settings:
        if spec is None:
            return cls()
        return cls(
            ignore_headers=DEFAULT_IGNORED_HEADERS
            | {h.lower() for h in spec.get("ignore_headers", ())},
            ignore_paths=tuple(spec.get("ignore_paths", ())),
            redact_headers=ALWAYS_REDACTED_HEADERS
            | {h.lower() for h in spec.get("redact_headers", ())},
            redact_paths=tuple(spec.get("redact_paths", ())),
            noise_for=spec.get("noise_for"),
        )

    def ignored(self, path: str) -> bool:
        return any(p.match(path) for p in self._ignore)

    def redacted(self, d: Difference) -> bool:
        if d.kind == "header":
            return d.field.removeprefix("header:") in self.redact_headers
        return any(p.match(d.path) for p in self._redact)


def compare(pair: Mapping[str, Any], settings: Settings | None = None) -> Outcome:
    """Compares the primary's and the mirror's answers of one pair."""
    s = settings or Settings()
    primary, mirror = pair["primary"], pair["mirror_response"]
    diffs: list[Difference] = []
    if primary["status"] != mirror["status"]:
        diffs.append(Difference("status", "status", "status", primary["status"], mirror["status"]))
    body_diffs, structural = _body(primary, mirror, s)
    ignore = s.ignore_headers | ({"content-length"} if structural else set())
    diffs += _headers(primary["headers"], mirror["headers"], ignore)
    diffs += body_diffs
    cut = bool(primary.get("cut") or mirror.get("cut"))
    return Outcome(result_of(diffs), tuple(diffs), truncated=cut)


def result_of(diffs: Iterable[Difference]) -> str:
    """The first of `RESULTS` that applies to these differences."""
    kinds = {d.kind for d in diffs}
    for result, kind in zip(RESULTS, ("status", "body", "header"), strict=False):
        if kind in kinds:
            return result
    return "match"


def _headers(
    primary: Iterable[tuple[str, str]],
    mirror: Iterable[tuple[str, str]],
    ignore: frozenset[str] | set[str],
) -> Iterator[Difference]:
    def fields(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, list[str]] = {}
        for name, value in pairs:
            out.setdefault(name.lower(), []).append(value)
        return {k: ", ".join(v) for k, v in out.items()}

    p, m = fields(primary), fields(mirror)
    for name in sorted((p.keys() | m.keys()) - ignore):
        a, b = p.get(name, ABSENT), m.get(name, ABSENT)
        if a != b:
            yield Difference("header", f"header:{name}", f"header:{name}", a, b)


def _json(side: Mapping[str, Any]) -> Any:
    body: bytes = side["body"]
    ctype = next((v for n, v in side["headers"] if n.lower() == "content-type"), "")
    if "json" not in ctype.lower() and body[:1] not in (b"{", b"["):
        return ABSENT
    try:
        return json.loads(body)
    except ValueError:
        return ABSENT


def _body(
    primary: Mapping[str, Any], mirror: Mapping[str, Any], s: Settings
) -> tuple[list[Difference], bool]:
    """The body's differences, and whether the bodies were compared as JSON."""
    if primary.get("cut") or mirror.get("cut"):
        # A side read only up to the capture limit: its length and hash cover only what
        # was read, so the kept prefixes are all that can be compared.
        a, b = primary["body"], mirror["body"]
        n = min(len(a), len(b))
        if a[:n] == b[:n]:
            return [], False
        return [Difference("body", "body", "body", _text(a[:n]), _text(b[:n]))], False
    if primary["truncated"] or mirror["truncated"]:
        # Past the capture bound only the whole body's length and hash are known.
        a = (primary["body_len"], primary["body_hash"])
        b = (mirror["body_len"], mirror["body_hash"])
        if a == b:
            return [], False
        pa = f"{a[0]} bytes, fnv1a {a[1]:016x}"
        mb = f"{b[0]} bytes, fnv1a {b[1]:016x}"
        return [Difference("body", "body", "body", pa, mb)], False
    a, b = _json(primary), _json(mirror)
    if a is not ABSENT and b is not ABSENT:
        out: list[Difference] = []
        _walk(a, b, "$", "$", s, out)
        return out, True
    if primary["body"] == mirror["body"]:
        return [], False
    return [
        Difference("body", "body", "body", _text(primary["body"]), _text(mirror["body"]))
    ], False


def _text(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text + ("..." if len(body) > limit else "")


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _same(a: Any, b: Any) -> bool:
    # JSON's true is not 1, though Python's True == 1.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _walk(a: Any, b: Any, path: str, folded: str, s: Settings, out: list[Difference]) -> None:
    if s.ignored(path):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            _walk(a.get(k, ABSENT), b.get(k, ABSENT), _key(path, k), _key(folded, k), s, out)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else ABSENT
            y = b[i] if i < len(b) else ABSENT
            _walk(x, y, f"{path}[{i}]", f"{folded}[*]", s, out)
    elif not _same(a, b):
        out.append(Difference("body", folded, path, a, b))
