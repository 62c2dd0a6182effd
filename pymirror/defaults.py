"""The core's defaults, declared once for the control plane.

Each is what ``native/src/snapshot/defaults.rs`` gives a Snapshot field left out, and
what the configuration model gives the field that sets it (`pymirror.config`); the
resolver writes them into every Snapshot (`pymirror.resolve`). A unit test compares
them with the Rust source, so the two stay in step.
"""

from __future__ import annotations

# Mirrors (`mirrorDefaults`).
MIRROR_MAX_IN_FLIGHT = 1024
MIRROR_TIMEOUT_MS = 10_000
MIRROR_MAX_BODY_BYTES = 4 * 1024 * 1024
MIRROR_MAX_DRAIN_BYTES = 256 * 1024
MIRROR_HOST_SUFFIX = "-shadow"
COMPARE_MAX_BODY_BYTES = 64 * 1024
#: The most `compare.maxBodyBytes` may say: a compared copy reads no more than this.
COMPARE_MAX_BODY_BYTES_LIMIT = 16 * 1024 * 1024
# Upstream connections (`upstream`).
CONNECT_TIMEOUT_MS = 1_000
POOL_IDLE_TIMEOUT_MS = 60_000
#: A gRPC request body read whole before its first try, so that it can be retried.
RETRY_BUFFER_BYTES = 64 * 1024
#: The most `upstream.retryBufferSize` may be.
RETRY_BUFFER_BYTES_LIMIT = 16 * 1024 * 1024
POOL_MAX_IDLE_PER_ENDPOINT = 1024
# Routes.
REDIRECT_CODE = 301
# Client connections (`limits`).
MAX_REQUEST_HEADERS = 100
IDLE_TIMEOUT_MS = 60_000
MAX_CONNECTIONS = 10_000
# HTTP/2 client connections (`limits.http2`).
HTTP2_MAX_CONCURRENT_STREAMS = 100
HTTP2_INITIAL_STREAM_WINDOW_BYTES = 256 * 1024
HTTP2_INITIAL_CONNECTION_WINDOW_BYTES = 1024 * 1024
HTTP2_MAX_HEADER_LIST_BYTES = 64 * 1024
HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS = 20
HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS = 1024
# HTTP/2 upstream connections: streams at once per connection when the destination's
# `connectionPool.http.maxConcurrentStreams` does not say (the peer's SETTINGS may lower it).
UPSTREAM_MAX_CONCURRENT_STREAMS = 100
# Istio's outlierDetection defaults.
CONSECUTIVE_5XX = 5
OUTLIER_INTERVAL_MS = 10_000
BASE_EJECTION_TIME_MS = 30_000
MAX_EJECTION_PERCENT = 10
