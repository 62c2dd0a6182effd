"""`limits.http2`: the bounds on each HTTP/2 client connection, in both config forms. The
Snapshot carries them only when the block is written, every field then, defaults filled
in; out-of-range values are errors at their file:line:col."""

from __future__ import annotations

import pytest

from pymirror import defaults
from pymirror.config import ConfigError, load_config
from pymirror.resolve import build_snapshot

ROUTES = """\
listeners: [{address: 127.0.0.1:8080}]
services:
  reviews: {endpoints: [{address: 127.0.0.1:9081}]}
virtualServices:
  - {name: reviews, hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
"""
PROXY = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy}
spec:
  listeners: [{address: 127.0.0.1:8080}]
"""
DEFAULTS = {
    "max_concurrent_streams": 100,
    "initial_stream_window_bytes": 256 * 1024,
    "initial_connection_window_bytes": 1024 * 1024,
    "max_header_list_bytes": 64 * 1024,
    "max_pending_accept_reset_streams": 20,
    "max_local_error_reset_streams": 1024,
}


def native(http2: str) -> str:
    return ROUTES + f"limits:\n  http2: {http2}\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [str(p) for p in info.value.problems]


def test_the_defaults_are_the_cores() -> None:
    assert {
        "max_concurrent_streams": defaults.HTTP2_MAX_CONCURRENT_STREAMS,
        "initial_stream_window_bytes": defaults.HTTP2_INITIAL_STREAM_WINDOW_BYTES,
        "initial_connection_window_bytes": defaults.HTTP2_INITIAL_CONNECTION_WINDOW_BYTES,
        "max_header_list_bytes": defaults.HTTP2_MAX_HEADER_LIST_BYTES,
        "max_pending_accept_reset_streams": defaults.HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS,
        "max_local_error_reset_streams": defaults.HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS,
    } == DEFAULTS


def test_without_the_block_the_snapshot_has_no_http2_limits() -> None:
    s = build_snapshot(load_config(ROUTES + "limits: {maxConnections: 5}\n"))
    assert s["limits"] == {
        "max_request_headers": 100,
        "idle_timeout_ms": 60_000,
        "max_connections": 5,
    }


def test_an_empty_block_writes_every_default() -> None:
    assert build_snapshot(load_config(native("{}")))["limits"]["http2"] == DEFAULTS


def test_each_field_reaches_the_snapshot_sizes_with_units() -> None:
    text = native(
        "{maxConcurrentStreams: 250, initialStreamWindowSize: 1MiB, "
        "initialConnectionWindowSize: 8388608, maxHeaderListSize: 16KiB, "
        "maxPendingAcceptResetStreams: 50, maxLocalErrorResetStreams: 10}"
    )
    assert build_snapshot(load_config(text))["limits"]["http2"] == {
        "max_concurrent_streams": 250,
        "initial_stream_window_bytes": 1 << 20,
        "initial_connection_window_bytes": 8 << 20,
        "max_header_list_bytes": 16 << 10,
        "max_pending_accept_reset_streams": 50,
        "max_local_error_reset_streams": 10,
    }


def test_a_mirror_proxy_carries_them_too() -> None:
    proxy = PROXY + "  limits: {http2: {maxConcurrentStreams: 7, maxHeaderListSize: 2KiB}}\n"
    s = build_snapshot(load_config(proxy))
    assert s["limits"]["http2"] == {
        **DEFAULTS,
        "max_concurrent_streams": 7,
        "max_header_list_bytes": 2048,
    }


def test_writing_the_block_changes_the_version_and_leaving_it_out_does_not() -> None:
    plain = build_snapshot(load_config(ROUTES))
    assert build_snapshot(load_config(ROUTES + "limits: {}\n"))["version"] == plain["version"]
    assert build_snapshot(load_config(native("{}")))["version"] != plain["version"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            "maxConcurrentStreams: 0",
            "7:33: limits.http2.maxConcurrentStreams: must be >= 1 (got 0)",
        ),
        (
            "maxConcurrentStreams: 2147483648",
            "7:33: limits.http2.maxConcurrentStreams: must be <= 2147483647 (got 2147483648)",
        ),
        (
            "initialStreamWindowSize: 65534",
            "7:36: limits.http2.initialStreamWindowSize: must be >= 65535 (got 65534)",
        ),
        (
            "initialStreamWindowSize: 2GiB",
            "7:36: limits.http2.initialStreamWindowSize: must be <= 2147483647 (got 2147483648)",
        ),
        (
            "initialConnectionWindowSize: 1KiB",
            "7:40: limits.http2.initialConnectionWindowSize: must be >= 65535 (got 1024)",
        ),
        (
            "maxHeaderListSize: 1023",
            "7:30: limits.http2.maxHeaderListSize: must be >= 1024 (got 1023)",
        ),
        (
            "maxHeaderListSize: 17MiB",
            "7:30: limits.http2.maxHeaderListSize: must be <= 16777216 (got 17825792)",
        ),
        (
            "maxPendingAcceptResetStreams: 0",
            "7:41: limits.http2.maxPendingAcceptResetStreams: must be >= 1 (got 0)",
        ),
        (
            "maxLocalErrorResetStreams: 100001",
            "7:38: limits.http2.maxLocalErrorResetStreams: must be <= 100000 (got 100001)",
        ),
        (
            "initialStreamWindowSize: 1 parsec",
            "7:36: limits.http2.initialStreamWindowSize: expected a number of bytes or a size "
            "such as `4MiB` or `512KiB` (got '1 parsec')",
        ),
        (
            "maxConcurentStreams: 5",
            "7:11: limits.http2.maxConcurentStreams: unknown field `maxConcurentStreams`; did "
            "you mean `maxConcurrentStreams`?",
        ),
    ],
)
def test_out_of_range_values_are_errors_at_their_place(field: str, expected: str) -> None:
    assert errors(native("{" + field + "}")) == [f"<string>:{expected}"]


def test_the_bounds_themselves_are_accepted() -> None:
    low = native(
        "{maxConcurrentStreams: 1, initialStreamWindowSize: 65535, "
        "initialConnectionWindowSize: 65535, maxHeaderListSize: 1KiB, "
        "maxPendingAcceptResetStreams: 1, maxLocalErrorResetStreams: 1}"
    )
    high = native(
        "{maxConcurrentStreams: 2147483647, initialStreamWindowSize: 2147483647, "
        "initialConnectionWindowSize: 2147483647, maxHeaderListSize: 16MiB, "
        "maxPendingAcceptResetStreams: 100000, maxLocalErrorResetStreams: 100000}"
    )
    assert list(build_snapshot(load_config(low))["limits"]["http2"].values()) == [
        1,
        65535,
        65535,
        1024,
        1,
        1,
    ]
    assert list(build_snapshot(load_config(high))["limits"]["http2"].values()) == [
        2**31 - 1,
        2**31 - 1,
        2**31 - 1,
        16 << 20,
        100_000,
        100_000,
    ]


def test_a_mirror_proxy_error_names_the_resource_path() -> None:
    proxy = PROXY + "  limits: {http2: {initialConnectionWindowSize: 100}}\n"
    assert errors(proxy) == [
        "<string>:6:49: spec.limits.http2.initialConnectionWindowSize: must be >= 65535 (got 100)"
    ]
