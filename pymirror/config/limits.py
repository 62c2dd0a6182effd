"""pymirror extension `limits`: bounds on client connections, HTTP/2 ones included. The
defaults are the core's (`pymirror.defaults`); the bounds keep each value one the core's
HTTP/2 library takes (windows and stream counts are 31-bit, RFC 9113 6.5.2 and 6.9.1)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from .. import defaults
from .base import I32_MAX, U32_MAX, _Model
from .types import ByteSize, Duration

#: The smallest window RFC 9113 allows a peer to start with (its initial window size).
MIN_WINDOW_BYTES = 65_535
MIN_HEADER_LIST_BYTES = 1 << 10
MAX_HEADER_LIST_BYTES = 16 << 20
#: A reset budget past this no longer bounds a flood.
MAX_RESET_STREAMS = 100_000


class Http2Limits(_Model):
    """pymirror extension: bounds on each HTTP/2 client connection (`limits.http2`)."""

    max_concurrent_streams: int = Field(
        default=defaults.HTTP2_MAX_CONCURRENT_STREAMS, ge=1, le=I32_MAX
    )
    """Streams a client may have open at once on one connection
    (SETTINGS_MAX_CONCURRENT_STREAMS); past it a new stream is refused. Default: 100."""
    initial_stream_window_size: ByteSize = Field(
        default=defaults.HTTP2_INITIAL_STREAM_WINDOW_BYTES, ge=MIN_WINDOW_BYTES, le=I32_MAX
    )
    """Bytes a client may send on one stream before the proxy has read them (a number or
    `256KiB`). Default: 256 KiB."""
    initial_connection_window_size: ByteSize = Field(
        default=defaults.HTTP2_INITIAL_CONNECTION_WINDOW_BYTES, ge=MIN_WINDOW_BYTES, le=I32_MAX
    )
    """Bytes a client may send on one connection, all its streams together, before the
    proxy has read them: what one connection may have buffered. Default: 1 MiB."""
    max_header_list_size: ByteSize = Field(
        default=defaults.HTTP2_MAX_HEADER_LIST_BYTES,
        ge=MIN_HEADER_LIST_BYTES,
        le=MAX_HEADER_LIST_BYTES,
    )
    """A request's header list, decoded (SETTINGS_MAX_HEADER_LIST_SIZE); past it the
    request is refused. Default: 64 KiB."""
    max_pending_accept_reset_streams: int = Field(
        default=defaults.HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS, ge=1, le=MAX_RESET_STREAMS
    )
    """Streams a client may open and reset before the proxy accepted them (rapid reset,
    CVE-2023-44487); past it the connection gets GOAWAY. Default: 20."""
    max_local_error_reset_streams: int = Field(
        default=defaults.HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS, ge=1, le=MAX_RESET_STREAMS
    )
    """Streams the proxy may reset for a client's protocol errors on one connection
    (MadeYouReset, CVE-2025-8671); past it the connection gets GOAWAY. Default: 1024."""


class Limits(_Model):
    """pymirror extension: bounds on client connections, on every listener. A reload
    applies them to connections accepted after it."""

    max_request_headers: int = Field(default=defaults.MAX_REQUEST_HEADERS, ge=1, le=U32_MAX)
    """Header fields accepted in one request head; past it the client gets 431.
    Default: 100."""
    idle_timeout: Duration = timedelta(milliseconds=defaults.IDLE_TIMEOUT_MS)
    """A keep-alive connection waiting for its next request is closed after this long
    (the request head must also be complete by then). `0s`: never. Default: 60s."""
    max_connections: int = Field(default=defaults.MAX_CONNECTIONS, ge=0, le=U32_MAX)
    """Client connections open at once per listener; past it a new connection is closed
    as soon as it is accepted (`pymirror_listener_connections_refused_total`). 0:
    unbounded. Default: 10000."""
    http2: Http2Limits | None = None
    """Bounds on each HTTP/2 client connection. Default: `Http2Limits`' defaults."""
