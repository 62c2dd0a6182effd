"""Model -> Snapshot: every name resolved to an index, every subset to endpoint addresses.

The result is the plain, JSON-serialisable data that the native core compiles once
(see `pymirror.snapshot` and ``native/src/snapshot/``). One job per module: `build` (the
whole Snapshot), `routes` (http and tcp routes, mirrors), `route_parts` (one route's
matches, header operations, redirects, retries...), `delegates` (Istio's delegation),
`clusters` (destinations -> clusters) and `describe` (the text `pymirror check` prints).
"""

from __future__ import annotations

from .build import Resolved, build_snapshot, resolve, snapshot_version
from .describe import (
    cluster_label,
    describe,
    describe_route,
    describe_tcp_route,
    listener_serves,
    mirror_guards_text,
    tcp_note,
    upstream_lines,
)
from .listeners import ListenerSpec, listener_specs
from .route_parts import per_million

__all__ = [
    "ListenerSpec",
    "Resolved",
    "build_snapshot",
    "cluster_label",
    "describe",
    "describe_route",
    "describe_tcp_route",
    "listener_serves",
    "listener_specs",
    "mirror_guards_text",
    "per_million",
    "resolve",
    "snapshot_version",
    "tcp_note",
    "upstream_lines",
]
