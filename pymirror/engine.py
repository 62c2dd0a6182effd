"""Typed wrapper over the compiled data plane (`pymirror._native.Engine`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypedDict

from pymirror import _native
from pymirror.snapshot import Snapshot

#: The data plane's version (the package's: they are built together).
VERSION: str = _native.__version__
#: The Snapshot schema the data plane reads.
SNAPSHOT_SCHEMA: int = _native.SNAPSHOT_SCHEMA


class HistogramStats(TypedDict):
    count: int
    sum_seconds: float
    buckets: list[int]  # per bound of `bucket_bounds_seconds`, then +Inf; not cumulative


class OutcomeStats(TypedDict, total=False):
    """One outcome's requests (Istio's request metrics): counted when the answer ends."""

    response_code: str  # the status, 0 when none came (a failed copy), `other` past the table
    grpc_status: str  # only for gRPC calls that had one
    response_flags: str  # Envoy's flag (`-`, `UF`, `UO`, `DC`...)
    protocol: str  # http | grpc
    count: int
    duration_ms: list[int]  # per bound of `request_duration_bounds_ms`, then +Inf
    duration_sum_ms: float
    request_bytes: list[int]  # body bytes, per bound of `request_bytes_bounds`, then +Inf
    request_bytes_sum: int
    response_bytes: list[int]
    response_bytes_sum: int


class DestinationStats(TypedDict):
    virtual_service: str
    route: str
    host: str
    subset: str | None
    responses: dict[str, int]  # status code -> count
    grpc_responses: dict[str, int]  # gRPC answers: grpc-status -> count
    duration: HistogramStats
    requests: list[OutcomeStats]


class CompareStats(TypedDict):
    sampled: int  # copies chosen for comparison
    queued: int  # pairs handed to the control plane
    skipped: dict[str, int]  # queue_full | primary_incomplete | mirror_failed | buffer_budget


class CaptureSide(TypedDict):
    """One answer of a compared pair, as the core kept it."""

    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order; values as Latin-1
    trailers: list[tuple[str, str]]  # the fields that ended the body (gRPC's status), as headers
    body: bytes  # the first `max_body_bytes` of the body
    body_len: int  # the body's length (of what was read, when `cut`)
    body_hash: int  # FNV-1a 64 of the body (of what was read, when `cut`)
    truncated: bool  # body_len > len(body)
    cut: bool  # reading stopped past the capture limit: the rest was never read
    latency: float  # seconds from the request's start to the body's end


class ComparedPair(TypedDict):
    virtual_service: str
    route: str
    mirror: int  # index in the route's `mirrors`
    method: str
    path: str  # path and query as forwarded
    primary: CaptureSide
    mirror_response: CaptureSide


class MirrorStats(TypedDict):
    virtual_service: str
    route: str
    host: str
    subset: str | None
    answered: int  # read to the end within the drain limit
    cut: int  # past the drain (or capture) limit: reading stopped, connection closed
    failed: int
    failures: dict[str, int]  # connect | tls | reset | protocol | framing | body_incomplete
    answer_bytes: int  # body bytes read from the mirror's answers
    timed_out: int
    in_flight: int
    dropped: dict[str, int]  # reason -> count
    responses: dict[str, int]
    grpc_responses: dict[str, int]  # gRPC answers: grpc-status -> count
    duration: HistogramStats
    requests: list[OutcomeStats]  # copies sent, by outcome
    compare: CompareStats


class ListenerStats(TypedDict):
    address: str
    connections_total: int
    connections_active: int
    connections_refused: int  # closed at accept: the listener had `max_connections` open
    unrouted: int
    requests: list[OutcomeStats]  # requests that reached no destination


class UpstreamConnectionStats(TypedDict):
    role: str  # "primary" | "mirror": the two never share a connection
    endpoint: str  # host:port
    open: int  # connections open now (a gauge)
    opened_total: int
    tls_full: int  # TLS handshakes originated in full
    tls_resumed: int  # ... resuming a cached session
    tls_failed: int  # ... that failed (certificate not trusted, not for the name, ...)


class AccessLogStats(TypedDict):
    written: int
    dropped: int  # lines dropped because the writer fell behind (never blocks a request)


class TcpStats(TypedDict):
    virtual_service: str
    route: str  # the tcp entry's index
    host: str
    subset: str | None
    connections_total: int
    connections_active: int
    connect_failed: int  # no upstream connection (refused, timed out, no endpoint, limit)
    bytes_received: int  # client -> upstream
    bytes_sent: int  # upstream -> client
    idle_timeouts: int


class TcpMirrorStats(TypedDict):
    virtual_service: str
    route: str
    host: str
    subset: str | None
    opened: int  # connections sampled for this mirror
    completed: int  # mirror connections that took the whole client stream
    active: int
    bytes_sent: int
    bytes_dropped: int  # client bytes a cut mirror never got
    cut: dict[str, int]  # reason -> count


class OutlierStats(TypedDict):
    host: str
    subset: str | None
    ejected: int  # endpoints out of the pick now
    ejections_total: int  # since the configuration was applied (starts over on reload)


class Stats(TypedDict):
    version: str
    bucket_bounds_seconds: list[float]
    request_duration_bounds_ms: list[float]  # of `OutcomeStats` (Istio's defaults)
    request_bytes_bounds: list[int]
    listeners: list[ListenerStats]
    destinations: list[DestinationStats]
    mirrors: list[MirrorStats]
    upstream_connections: list[UpstreamConnectionStats]
    access_log: AccessLogStats
    mirror_buffer_queued_bytes: int  # against ServerOptions.mirror_buffer_budget
    tcp: list[TcpStats]
    tcp_mirrors: list[TcpMirrorStats]
    # Upgraded (WebSocket) sessions of HTTP routes; only entries that have seen one.
    upgrades: list[TcpStats]
    upgrade_mirrors: list[TcpMirrorStats]
    compare_queue_depth: int  # compared pairs waiting for `drain_compared`
    compare_buffer_held_bytes: int  # against ServerOptions.compare_buffer_budget
    outliers: list[OutlierStats]  # clusters with outlier detection


@dataclass(frozen=True)
class ServerOptions:
    """How the data plane serves connections."""

    worker_threads: int = 0
    """Worker threads, each accepting and serving on its own; 0 means one per CPU core."""
    header_read_timeout: float = 30.0
    """Seconds a client has to finish a request head once it has begun (slowloris guard);
    waiting for a head to begin is bounded by the snapshot's `limits.idle_timeout_ms`."""
    max_header_bytes: int = 64 * 1024
    """Largest request head accepted; larger ones get 431."""
    access_log: str | None = None
    """Write one JSON line per request (and per mirror copy) here: a path, or `-`
    for standard output. None: no access log."""
    access_log_fields: tuple[str, ...] | None = None
    """The fields each access-log line keeps (README's table names them); None: all. An
    unknown name fails the start with the list of known ones."""
    mirror_buffer_budget: int = 256 * 1024 * 1024
    """Bytes of request body queued for all mirror copies together; past it a copy is
    cut and counted as dropped (`buffer_budget`). Bounds memory however many copies are
    slow at once."""
    compare_buffer_budget: int = 64 * 1024 * 1024
    """Bytes that compared answers may hold together (both sides' kept bodies and
    headers), from capture until the comparator takes them; past it a pair is skipped
    and counted (`buffer_budget`). Bounds comparison's memory in bytes, however large the
    answers and however far the comparator falls behind."""
    reuse_port: bool = False
    """Serve an address another process serves too (`SO_REUSEPORT`: the kernel splits new
    connections between the two), for a start-new-then-stop-old upgrade. False: such an
    address is refused with a ListenError, never shared in silence."""


def _dump(snapshot: Snapshot) -> str:
    return json.dumps(snapshot, separators=(",", ":"))


def regex_problem(pattern: str) -> str | None:
    """Why the data plane's regex engine refuses ``pattern`` (None: it compiles)."""
    return _native.regex_problem(pattern)


def validate(snapshot: Snapshot) -> None:
    """Checks a snapshot exactly as the data plane would; raises SnapshotError."""
    _native.validate(_dump(snapshot))


class Engine:
    """A running data plane. Its threads serve until `shutdown`; no Python runs per request."""

    def __init__(self, snapshot: Snapshot, options: ServerOptions | None = None) -> None:
        opts = options or ServerOptions()
        self._native = _native.Engine(
            _dump(snapshot),
            worker_threads=opts.worker_threads,
            header_read_timeout=opts.header_read_timeout,
            max_header_bytes=opts.max_header_bytes,
            access_log=opts.access_log,
            access_log_fields=(
                list(opts.access_log_fields) if opts.access_log_fields is not None else None
            ),
            mirror_buffer_budget=opts.mirror_buffer_budget,
            compare_buffer_budget=opts.compare_buffer_budget,
            reuse_port=opts.reuse_port,
        )

    @property
    def addresses(self) -> list[str]:
        """Bound `ip:port` of each listener, in configuration order."""
        return self._native.addresses

    @property
    def running(self) -> bool:
        return self._native.running

    def reload(self, snapshot: Snapshot) -> None:
        """Swaps in a new snapshot atomically; raises and changes nothing if it is refused."""
        self._native.reload(_dump(snapshot))

    def stats(self) -> Stats:
        """One bulk read of every counter in the core."""
        data: Any = json.loads(self._native.stats_json())
        return data  # type: ignore[no-any-return]

    def drain_compared(self, max_pairs: int = 1024) -> list[ComparedPair]:
        """Takes up to `max_pairs` compared pairs off the core's bounded queue, oldest
        first, without waiting (see `pymirror.compare`)."""
        pairs: Any = self._native.drain_compared(max_pairs)
        return pairs  # type: ignore[no-any-return]

    def shutdown(self, drain: float = 5.0) -> bool:
        """Stops accepting and drains for up to `drain` seconds. Blocks.

        Returns True when every in-flight request finished in time.
        """
        return self._native.shutdown(max(0.0, drain))

    def cut_drain(self) -> None:
        """Ends the drain in progress (a `shutdown` blocked in another thread), or the next
        one, at once: open connections are closed instead of waited for."""
        self._native.cut_drain()

    def reopen_access_log(self) -> None:
        """Has the access log reopen its file at its path (after logrotate moved it)."""
        self._native.reopen_access_log()
