"""Istio's delegation: a root entry's matches narrow its delegate's routes' matches.

As Istio's `mergeHTTPMatchRequest`: a delegate condition must lie within the root's
(a uri prefix under the root's prefix, the same method, ...), else that combination is
dropped; conditions set on one side only are kept; header-like conditions are united.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config.model import HTTPMatchRequest, StringMatch


def merge_matches(
    root: Sequence[HTTPMatchRequest], delegate: Sequence[HTTPMatchRequest]
) -> list[HTTPMatchRequest] | None:
    """The matches of a delegate route served under a root entry; None when every
    combination conflicts (the route can never be reached through this root)."""
    if not root:
        return list(delegate)
    if not delegate:
        return list(root)
    merged = [m for r in root for d in delegate if (m := _merge(r, d)) is not None]
    return merged or None


def _within(root: StringMatch, inner: StringMatch) -> bool:
    """Whether every value ``inner`` matches is one ``root`` matches (as Istio judges it)."""
    outer_kind, inner_kind = root.kind, inner.kind
    if outer_kind is None or inner_kind is None:
        return outer_kind is None
    if outer_kind[0] == "prefix" and inner_kind[0] in ("prefix", "exact"):
        return inner_kind[1].startswith(outer_kind[1])
    return outer_kind == inner_kind


def _merge(root: HTTPMatchRequest, inner: HTTPMatchRequest) -> HTTPMatchRequest | None:
    update: dict[str, object] = {}
    for field in ("uri", "scheme", "method", "authority"):
        outer, own = getattr(root, field), getattr(inner, field)
        if outer is not None and own is not None and not _within(outer, own):
            return None
        update[field] = own if own is not None else outer
    if root.port is not None and inner.port is not None and root.port != inner.port:
        return None
    update["port"] = inner.port or root.port
    for field in ("headers", "without_headers", "query_params"):
        outer, own = getattr(root, field), getattr(inner, field)
        if any(name in own and own[name] != value for name, value in outer.items()):
            return None
        update[field] = {**outer, **own}
    update["ignore_uri_case"] = root.ignore_uri_case or inner.ignore_uri_case
    return inner.model_copy(update=update)
