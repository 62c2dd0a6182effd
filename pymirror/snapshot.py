"""The Snapshot: the plain data the control plane hands to the native core.

These types mirror ``native/src/snapshot.rs`` field for field (serde's snake_case names);
the core rejects unknown fields, so the two must change together. ``NotRequired`` marks
fields the core defaults when absent; `pymirror.resolve` always writes them.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

#: The schema version the core understands (`snapshot::SCHEMA`). Bump both on any
#: incompatible change.
SCHEMA = 1

# The core's defaults (`snapshot::defaults`); keep the two in step.
MIRROR_MAX_IN_FLIGHT = 1024
MIRROR_TIMEOUT_MS = 10_000
MIRROR_MAX_BODY_BYTES = 4 * 1024 * 1024
MIRROR_HOST_SUFFIX = "-shadow"
CONNECT_TIMEOUT_MS = 1_000
POOL_IDLE_TIMEOUT_MS = 60_000
POOL_MAX_IDLE_PER_ENDPOINT = 1024

#: Share of requests sampled is expressed out of this (Envoy's FractionalPercent MILLION).
PER_MILLION = 1_000_000


class StringMatch(TypedDict, total=False):
    """Exactly one key: ``{"exact": ...}``, ``{"prefix": ...}`` or ``{"regex": ...}``
    (RE2 syntax, full match)."""

    exact: str
    prefix: str
    regex: str


class HeaderMatch(TypedDict):
    name: str
    """Lower-case."""
    value: StringMatch


class RequestMatch(TypedDict):
    uri: NotRequired[StringMatch | None]
    method: NotRequired[StringMatch | None]
    headers: NotRequired[list[HeaderMatch]]


class WeightedCluster(TypedDict):
    cluster: int
    """Index into `Snapshot.clusters`."""
    weight: int


class Mirror(TypedDict):
    cluster: int
    """Index into `Snapshot.clusters`."""
    per_million: int
    """Share of requests copied, out of 1,000,000."""
    max_in_flight: NotRequired[int]
    timeout_ms: NotRequired[int]
    max_body_bytes: NotRequired[int]
    host_suffix: NotRequired[str]


class Route(TypedDict):
    name: str
    matches: NotRequired[list[RequestMatch]]
    """OR across entries, AND within one; empty matches every request."""
    destinations: list[WeightedCluster]
    timeout_ms: NotRequired[int | None]
    mirrors: NotRequired[list[Mirror]]


class VirtualHost(TypedDict):
    name: str
    domains: list[str]
    """`reviews`, `*.example.com` or `*`."""
    routes: list[Route]


class Listener(TypedDict):
    address: str
    """`ip:port`; port 0 picks a free port."""
    default_virtual_host: NotRequired[int | None]
    """Index into `Snapshot.virtual_hosts` for requests whose Host matches none."""


class Cluster(TypedDict):
    host: str
    subset: NotRequired[str | None]
    endpoints: list[str]
    """`host:port` authorities; names are resolved by DNS at connect time."""


class UpstreamSettings(TypedDict):
    connect_timeout_ms: NotRequired[int]
    pool_idle_timeout_ms: NotRequired[int]
    pool_max_idle_per_endpoint: NotRequired[int]


class Snapshot(TypedDict):
    schema: int
    version: str
    listeners: list[Listener]
    virtual_hosts: list[VirtualHost]
    clusters: list[Cluster]
    upstream: NotRequired[UpstreamSettings]
