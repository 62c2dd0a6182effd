"""`pymirror top`'s arithmetic and frame: percentiles from buckets, per-interval windows."""

from __future__ import annotations

import copy
import io

import pytest
from rich.console import Console
from test_metrics import STATS

from pymirror.top import quantile, render

BOUNDS = [0.005, 0.1, 1.0]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [0, 0, 0, 0], None),  # nothing observed
        (0.5, [10, 0, 0, 0], 0.0025),  # halfway into [0, 5ms]
        (0.5, [2, 8, 0, 0], 0.005 + 0.095 * 3 / 8),  # rank 5: third of eight in (5ms, 100ms]
        (0.99, [0, 0, 99, 1], 1.0),  # the top 1% is past the last bound: that bound
        (1.0, [0, 1, 0, 0], 0.1),
    ],
)
def test_quantile_interpolates_within_a_bucket(
    q: float, buckets: list[int], expected: float | None
) -> None:
    result = quantile(q, BOUNDS, buckets)
    assert result == (pytest.approx(expected) if expected is not None else None)


def text_of(frame: object, width: int = 160) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(frame)
    return out.getvalue()


def test_first_frame_shows_totals_since_start() -> None:
    text = text_of(render(STATS, admin="127.0.0.1:9901"))
    assert "since start" in text and "abc123def456" in text
    row = next(r for r in text.splitlines() if "reviews/0" in r and "v1" in r)
    # 10 requests: 9 answered 200, 1 answered 503; no rate without an interval.
    assert row.split()[3:9] == ["10", "-", "90%", "-", "-", "10%"]
    mirror = next(r for r in text.splitlines() if "reviews/0" in r and "v2" in r)
    # 14 copies: 6 answered, 2 cut, 1 failed, 1 timed out, 4 dropped.
    shares = "ok 42.9% cut 14.3% failed 7.14% timeout 7.14% dropped 28.6%"
    assert "14" in mirror.split() and shares in mirror


def test_later_frames_show_the_last_interval() -> None:
    later = copy.deepcopy(STATS)
    row = later["destinations"][0]
    row["responses"]["200"] += 20  # 20 more in 2 s, all fast
    row["duration"]["buckets"][0] += 20
    text = text_of(render(later, STATS, 2.0))
    line = next(r for r in text.splitlines() if "reviews/0" in r and "v1" in r)
    assert line.split()[3:9] == ["30", "10.0", "100%", "-", "-", "-"]
    assert "last 2.0s" in text


def test_a_counter_going_down_is_a_restart_not_a_negative_rate() -> None:
    restarted = copy.deepcopy(STATS)
    restarted["destinations"][0]["responses"] = {"200": 1}
    restarted["destinations"][0]["duration"]["buckets"] = [1, 0, 0, 0]
    text = text_of(render(restarted, STATS, 1.0))
    line = next(r for r in text.splitlines() if "reviews/0" in r and "v1" in r)
    # 1 + the 2 of the second v1 row: the whole of it is the window.
    assert line.split()[3:6] == ["3", "3.0", "100%"]


TCP_ROUTE = {"virtual_service": "cache", "route": "0", "host": "redis", "subset": None}


def spliced_stats(bytes_in: int, bytes_out: int) -> dict:
    stats = copy.deepcopy(STATS)
    stats["tcp"] = [
        {**TCP_ROUTE, "connections_total": 3, "connections_active": 1, "connect_failed": 1,
         "bytes_received": bytes_in, "bytes_sent": bytes_out, "idle_timeouts": 0},
    ]  # fmt: skip
    stats["tcp_mirrors"] = [
        {**TCP_ROUTE, "host": "redis-next", "opened": 2, "completed": 1, "active": 0,
         "bytes_sent": 10, "bytes_dropped": 4096, "cut": {"buffer_full": 1, "timeout": 0}},
    ]  # fmt: skip
    return stats


def test_spliced_streams_get_their_tables_once_there_are_any() -> None:
    assert "spliced" not in text_of(render(STATS))
    first = text_of(render(spliced_stats(1_000, 500)))
    row = next(r for r in first.splitlines() if "cache/0" in r and "redis " in r + " ")
    # connections, active, no rate on the first frame, connect failures.
    assert row.split()[2:8] == ["tcp", "3", "1", "-", "-", "1"]
    mirror = next(r for r in first.splitlines() if "redis-next" in r)
    assert mirror.split()[2:] == ["tcp", "2", "0", "1", "buffer_full", "1", "4096"]
    # 3 MB in and 1 MB out over 2 s.
    later = text_of(render(spliced_stats(3_001_000, 1_000_500), spliced_stats(1_000, 500), 2.0))
    row = next(r for r in later.splitlines() if "cache/0" in r and "redis-next" not in r)
    assert "1.5 MB/s" in row and "500 kB/s" in row
