"""Endpoints: method + path template, so that `/items/7` and `/items/8` group together."""

from __future__ import annotations

import re

# A segment that names one thing rather than a kind of thing: a number, a UUID, a long
# hex string (hashes, object ids). Folded so that figures are per endpoint, not per id.
_ID = re.compile(
    r"""
    \d+                                              # 42
  | [0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}  # UUID
  | [0-9a-fA-F]{16,}                                 # sha / mongo-style ids
    """,
    re.VERBOSE,
)


def path_template(path: str) -> str:
    """`/items/7/reviews/3f2a...?x=1` -> `/items/{id}/reviews/{id}` (the query is dropped)."""
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    return "/".join("{id}" if _ID.fullmatch(s) else s for s in path.split("/"))


def endpoint(method: str, path: str) -> str:
    """`GET /items/{id}`: how comparison figures are grouped."""
    return f"{method.upper()} {path_template(path)}"
