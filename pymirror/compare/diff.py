"""One pair's comparison: status, headers, trailers, body (exact, field by field for
JSON, message by message for gRPC).

A pair is what the core hands over (`Engine.drain_compared`): two sides, each with
`status`, `headers` and `trailers` (lower-case name, value), `body` (the kept bytes),
`body_len`, `body_hash` (of the body read), `truncated`, `cut` (the body was not read to
its end: the mirror's, past the capture limit) and `latency` (seconds).

A gRPC answer is HTTP 200 whatever the call's outcome: its status is `grpc-status` (and
`grpc-message`), in the trailers or, for a trailers-only answer, in the headers; both
forms are read alike. A different `grpc-status` is a status mismatch; the body is
compared as its length-prefixed messages, by their bytes (no transcoding).
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
        if d.kind == "header":  # `header:NAME` or `trailer:NAME`
            return d.field.partition(":")[2] in self.redact_headers
        return any(p.match(d.path) for p in self._redact)


#: gRPC's outcome fields, compared wherever each side carries them.
GRPC_STATUS_FIELDS = ("grpc-status", "grpc-message")


def is_grpc(side: Mapping[str, Any]) -> bool:
    """A gRPC answer (`application/grpc`, `application/grpc+proto`, ...; not grpc-web,
    whose trailers travel inside the body)."""
    ctype = next((v for n, v in side["headers"] if n == "content-type"), "").lower()
    return ctype == "application/grpc" or ctype.startswith(
        ("application/grpc+", "application/grpc;")
    )


def grpc_outcome(side: Mapping[str, Any]) -> dict[str, str]:
    """`grpc-status` and `grpc-message` of a gRPC answer: from its trailers, or from its
    headers when it had none (a trailers-only answer)."""
    for fields in (side.get("trailers") or [], side["headers"]):
        found = {n: v for n, v in fields if n in GRPC_STATUS_FIELDS}
        if "grpc-status" in found:
            return found
    return {}


def status_label(side: Mapping[str, Any]) -> int | str:
    """The status as reports show it: the HTTP status, and for gRPC its grpc-status too."""
    if is_grpc(side):
        return f"{side['status']} grpc-status {grpc_outcome(side).get('grpc-status', '?')}"
    return int(side["status"])


def compare(pair: Mapping[str, Any], settings: Settings | None = None) -> Outcome:
    """Compares the primary's and the mirror's answers of one pair."""
    s = settings or Settings()
    primary, mirror = pair["primary"], pair["mirror_response"]
    diffs: list[Difference] = []
    if primary["status"] != mirror["status"]:
        diffs.append(Difference("status", "status", "status", primary["status"], mirror["status"]))
    grpc = is_grpc(primary) or is_grpc(mirror)
    if grpc:
        diffs += _grpc_outcome(primary, mirror)
        body_diffs, structural = _grpc_body(primary, mirror, s)
    else:
        body_diffs, structural = _body(primary, mirror, s)
    ignore = s.ignore_headers | ({"content-length"} if structural else set())
    # gRPC's outcome fields were compared above, wherever each side carried them.
    fields_ignored = ignore | set(GRPC_STATUS_FIELDS) if grpc else ignore
    (ph, pt), (mh, mt) = _sections(primary), _sections(mirror)
    diffs += _headers(ph, mh, fields_ignored)
    diffs += _headers(pt, mt, fields_ignored, "trailer")
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
    section: str = "header",
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
            yield Difference("header", f"{section}:{name}", f"{section}:{name}", a, b)


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


def _sections(side: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Header and trailer fields. A trailers-only gRPC answer carries its trailers in its
    header section (all but `content-type`): read as trailers, it compares equal to the
    same outcome sent the usual way."""
    headers, trailers = list(side["headers"]), list(side.get("trailers") or [])
    if trailers or not is_grpc(side) or all(n != "grpc-status" for n, _ in headers):
        return headers, trailers
    kept = [(n, v) for n, v in headers if n == "content-type"]
    return kept, [(n, v) for n, v in headers if n != "content-type"]


def _grpc_outcome(primary: Mapping[str, Any], mirror: Mapping[str, Any]) -> Iterator[Difference]:
    """A different grpc-status is a status mismatch; a different grpc-message beside the
    same status, a field mismatch."""
    a, b = grpc_outcome(primary), grpc_outcome(mirror)
    for name, kind in zip(GRPC_STATUS_FIELDS, ("status", "header"), strict=True):
        x, y = a.get(name, ABSENT), b.get(name, ABSENT)
        if x != y:
            yield Difference(kind, name, name, x, y)


def grpc_messages(body: bytes) -> list[bytes] | None:
    """A gRPC body's messages (each a 1-byte compressed flag, a 4-byte big-endian length,
    then the message), or None where the bytes are not whole messages."""
    out: list[bytes] = []
    at = 0
    while at < len(body):
        if len(body) - at < 5:
            return None
        size = int.from_bytes(body[at + 1 : at + 5], "big")
        end = at + 5 + size
        if end > len(body):
            return None
        out.append(body[at:end])
        at = end
    return out


def _grpc_body(
    primary: Mapping[str, Any], mirror: Mapping[str, Any], s: Settings
) -> tuple[list[Difference], bool]:
    """Message by message when both bodies are whole (kept in full and well framed);
    otherwise as any body."""
    whole = not any(side.get("cut") or side["truncated"] for side in (primary, mirror))
    a = grpc_messages(primary["body"]) if whole else None
    b = grpc_messages(mirror["body"]) if whole else None
    if a is None or b is None:
        return _body(primary, mirror, s)
    out = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else ABSENT
        y = b[i] if i < len(b) else ABSENT
        if x != y:
            out.append(Difference("body", "message[*]", f"message[{i}]", _hex(x), _hex(y)))
    return out, False


def _hex(message: Any, limit: int = 64) -> Any:
    """A message as reports show it: its length and first bytes in hex (protobuf is
    binary), flag and length prefix left out."""
    if message is ABSENT:
        return ABSENT
    payload = message[5:]
    shown = payload[:limit].hex(" ")
    return f"{len(payload)} bytes: {shown}" + (" ..." if len(payload) > limit else "")


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
