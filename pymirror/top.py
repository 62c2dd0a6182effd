"""`pymirror top`: a live terminal view of a running pymirror, polled from its admin `/stats`.

Per route: request rate, primary status mix and latency; per mirror: copy rate, outcomes
and latency; for spliced streams (tcp routes, upgraded sessions, CONNECT tunnels), once
there are any: connections and bytes per second each way, and their mirrors' cuts.
Rates, mixes and percentiles are over the last refresh period (over the
whole run on the first frame). Percentiles are estimated from the core's histogram
buckets the way Prometheus' `histogram_quantile` does (linear within a bucket).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pymirror.engine import DestinationStats, MirrorStats, Stats, TcpMirrorStats, TcpStats

__all__ = ["Unreachable", "fetch", "quantile", "render", "run_top"]

_OUTCOMES = ("answered", "cut", "failed", "timed_out", "dropped")


class Unreachable(Exception):
    """The admin endpoint did not answer with stats."""


def fetch(admin: str, timeout: float = 2.0) -> Stats:
    """One `/stats` read from the admin endpoint at `host:port`."""
    url = f"http://{admin}/stats"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: Stats = json.load(response)
            return data
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection
        raise Unreachable(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(
            f"cannot reach the admin endpoint at {url} ({reason}); is `pymirror run` "
            f"serving its admin endpoint there? (see --admin)"
        ) from None
    except ValueError as exc:
        raise Unreachable(f"{url} did not answer JSON stats ({exc})") from None


def quantile(q: float, bounds: Sequence[float], buckets: Sequence[int]) -> float | None:
    """The `q`-quantile (0..1) of a histogram of non-cumulative `buckets` (one per bound,
    then +Inf); None when it is empty. Past the last bound the answer is that bound."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(buckets):
        if count > 0 and below + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / count
        below += count
    return bounds[-1]


# === windows: what changed between two reads ===


@dataclass
class _Window:
    """A label set's counts over a window: responses by code, outcomes, histogram."""

    codes: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=list)
    in_flight: int = 0

    @property
    def count(self) -> int:
        return sum(self.outcomes.values()) if self.outcomes else sum(self.codes.values())

    def add(self, row: DestinationStats | MirrorStats, sign: int = 1) -> None:
        """Adds (or, with `sign` -1, takes away) one row of the core's stats."""
        for code, n in row["responses"].items():
            self.codes[code] = self.codes.get(code, 0) + sign * n
        b = row["duration"]["buckets"]
        self.buckets = [x + sign * y for x, y in zip(self.buckets or [0] * len(b), b, strict=True)]
        if "answered" in row:  # a mirror's row
            m = cast(MirrorStats, row)
            finished = {
                "answered": m["answered"],
                "cut": m.get("cut", 0),
                "failed": m["failed"],
                "timed_out": m["timed_out"],
                "dropped": sum(m["dropped"].values()),
            }
            for o, n in finished.items():
                self.outcomes[o] = self.outcomes.get(o, 0) + sign * n
            if sign > 0:
                self.in_flight += m["in_flight"]

    def copy(self) -> _Window:
        return _Window(dict(self.codes), dict(self.outcomes), list(self.buckets), self.in_flight)

    def negative(self) -> bool:
        return any(v < 0 for v in (*self.codes.values(), *self.outcomes.values(), *self.buckets))


_Key = tuple[str, str, str, str]


def _key(row: DestinationStats | MirrorStats | TcpStats | TcpMirrorStats) -> _Key:
    return (row["virtual_service"], row["route"], row["host"], row["subset"] or "")


def _windows(
    current: Sequence[DestinationStats] | Sequence[MirrorStats],
    previous: Sequence[DestinationStats] | Sequence[MirrorStats] | None,
) -> tuple[dict[_Key, _Window], dict[_Key, int]]:
    """Per label set: the counts since `previous` (all of them without it), and totals."""
    totals: dict[_Key, _Window] = {}
    for row in current:
        totals.setdefault(_key(row), _Window()).add(row)
    counts = {k: w.count for k, w in totals.items()}
    if previous is None:
        return totals, counts
    windows = {k: w.copy() for k, w in totals.items()}
    for row in previous:
        if (w := windows.get(_key(row))) is not None:
            w.add(row, -1)
    # A counter that went down means the proxy restarted: its totals are the window.
    return {k: totals[k] if w.negative() else w for k, w in windows.items()}, counts


# === rendering ===


def _ms(seconds: float | None, bounds: Sequence[float]) -> str:
    if seconds is None:
        return "-"
    if seconds >= bounds[-1]:
        return f">{bounds[-1]:g}s"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    return f"{seconds * 1000:.3g}ms" if seconds < 1 else f"{seconds:.3g}s"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.3g}%" if whole > 0 and part > 0 else "-"


def _outcomes(outcomes: dict[str, int], total: int) -> str:
    """`ok 98% failed 2%`: the outcomes that happened, as shares of the copies."""
    words = {
        "answered": "ok",
        "cut": "cut",
        "failed": "failed",
        "timed_out": "timeout",
        "dropped": "dropped",
    }
    shown = [f"{words[o]} {_share(outcomes.get(o, 0), total)}" for o in _OUTCOMES]
    return " ".join(t for t, o in zip(shown, _OUTCOMES, strict=True) if outcomes.get(o)) or "-"


def _rate(n: int, elapsed: float | None) -> str:
    return f"{n / elapsed:.1f}" if elapsed else "-"


def _classes(codes: dict[str, int]) -> list[int]:
    out = [0, 0, 0, 0]
    for code, n in codes.items():
        c = int(code) // 100 if code.isdigit() else 5
        out[min(max(c, 2), 5) - 2] += n  # 1xx counts with 2xx; anything odd with 5xx
    return out


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, name in enumerate(columns):
        # Names on the left; numbers on the right, never wrapped or cut.
        table.add_column(
            name, justify="left" if i < 2 else "right", no_wrap=i >= 2 and name != "outcomes"
        )
    return table


def render(
    current: Stats,
    previous: Stats | None = None,
    elapsed: float | None = None,
    *,
    admin: str = "",
    error: str | None = None,
) -> RenderableType:
    """One frame: a header, the primaries' table and the mirrors' table."""
    bounds = current["bucket_bounds_seconds"]
    span = f"last {elapsed:.1f}s" if elapsed else "since start"
    header = Text.assemble(
        ("pymirror top", "bold"),
        f"  {admin}  config {current['version']}  ({span})",
    )
    parts: list[RenderableType] = [header]
    if error:
        parts.append(Text(f"stale: {error}", style="bold red"))

    primary = _table("primary", "route", "destination", "total", "req/s", "2xx", "3xx", "4xx",
                     "5xx", "p50", "p99")  # fmt: skip
    prev_rows = previous["destinations"] if previous else None
    windows, totals = _windows(current["destinations"], prev_rows)
    for (vs, route, host, subset), w in sorted(windows.items()):
        n = w.count
        primary.add_row(
            f"{vs}/{route}",
            f"{host} {subset}".strip(),
            str(totals[(vs, route, host, subset)]),
            _rate(n, elapsed),
            *(_share(c, n) for c in _classes(w.codes)),
            _ms(quantile(0.5, bounds, w.buckets), bounds),
            _ms(quantile(0.99, bounds, w.buckets), bounds),
        )
    parts.append(primary)

    mirrors = _table("mirrors", "route", "mirror", "copies", "copies/s", "outcomes",
                     "in flight", "5xx", "p50", "p99")  # fmt: skip
    prev_mirrors = previous["mirrors"] if previous else None
    windows, totals = _windows(current["mirrors"], prev_mirrors)
    for (vs, route, host, subset), w in sorted(windows.items()):
        n = w.count
        mirrors.add_row(
            f"{vs}/{route}",
            f"{host} {subset}".strip(),
            str(totals[(vs, route, host, subset)]),
            _rate(n, elapsed),
            _outcomes(w.outcomes, n),
            str(w.in_flight),
            _share(_classes(w.codes)[3], w.outcomes.get("answered", 0)),
            _ms(quantile(0.5, bounds, w.buckets), bounds),
            _ms(quantile(0.99, bounds, w.buckets), bounds),
        )
    parts.append(mirrors)
    parts += _spliced(current, previous, elapsed)
    return Group(*parts)


# === spliced streams: tcp routes, upgraded sessions, CONNECT tunnels ===


@dataclass
class _Streams:
    """A label set's spliced-stream counters, summed (the core may list one twice)."""

    connections: int = 0
    active: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, row: TcpStats) -> None:
        self.connections += row["connections_total"]
        self.active += row["connections_active"]
        self.failed += row["connect_failed"]
        self.bytes_in += row["bytes_received"]
        self.bytes_out += row["bytes_sent"]


def _streams(rows: Sequence[TcpStats]) -> dict[_Key, _Streams]:
    out: dict[_Key, _Streams] = {}
    for row in rows:
        out.setdefault(_key(row), _Streams()).add(row)
    return out


def _bytes_rate(now: int, before: int | None, elapsed: float | None) -> str:
    if not elapsed or before is None:
        return "-"
    n = now - before if now >= before else now  # went down: a restart, all of it is new
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n / elapsed >= size:
            return f"{n / elapsed / size:.3g} {unit}/s"
    return f"{n / elapsed:.3g} B/s"


def _spliced(current: Stats, previous: Stats | None, elapsed: float | None) -> list[Table]:
    """Tables for spliced streams and their mirrors, once there is any."""
    streams = _table("spliced: tcp routes, upgrades, tunnels", "route", "destination", "kind",
                     "connections", "active", "in/s", "out/s", "connect failed")  # fmt: skip
    mirrors = _table("spliced mirrors", "route", "mirror", "kind", "opened", "active",
                     "completed", "cut", "bytes dropped")  # fmt: skip
    kinds = (
        ("tcp", current.get("tcp", []), previous.get("tcp", []) if previous else None,
         current.get("tcp_mirrors", [])),
        ("upgrade", current.get("upgrades", []), previous.get("upgrades", []) if previous else None,
         current.get("upgrade_mirrors", [])),
    )  # fmt: skip
    for kind, rows, previous_rows, mirror_rows in kinds:
        before = _streams(previous_rows) if previous_rows is not None else {}
        for key, n in sorted(_streams(rows).items()):
            # New since the last frame: all of its bytes are in the window.
            b = before.get(key, _Streams()) if previous_rows is not None else None
            vs, route, host, subset = key
            streams.add_row(
                f"{vs}/{route}", f"{host} {subset}".strip(), kind, str(n.connections),
                str(n.active), _bytes_rate(n.bytes_in, b.bytes_in if b else None, elapsed),
                _bytes_rate(n.bytes_out, b.bytes_out if b else None, elapsed), str(n.failed),
            )  # fmt: skip
        for m in sorted(mirror_rows, key=_key):
            cut = " ".join(f"{reason} {n}" for reason, n in sorted(m["cut"].items()) if n)
            vs, route, host, subset = _key(m)
            mirrors.add_row(
                f"{vs}/{route}", f"{host} {subset}".strip(), kind, str(m["opened"]),
                str(m["active"]), str(m["completed"]), cut or "-", str(m["bytes_dropped"]),
            )  # fmt: skip
    return [t for t in (streams, mirrors) if t.row_count]


def run_top(admin: str, *, interval: float = 1.0, console: Console | None = None) -> int:
    """Polls `admin` every `interval` seconds and redraws until Ctrl-C. Exit status 1
    with a one-line error when the endpoint does not answer the first read."""
    interval = max(0.1, interval)
    try:
        current = fetch(admin)
    except Unreachable as exc:
        print(f"pymirror top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    read_at = time.monotonic()
    previous: Stats | None = None
    elapsed: float | None = None
    error: str | None = None
    frame = render(current, admin=admin)
    try:
        with Live(frame, console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    new = fetch(admin)
                except Unreachable as exc:
                    # Keep the last frame, marked stale; the proxy may be restarting.
                    error = str(exc)
                else:
                    now = time.monotonic()
                    previous, current, elapsed, error = current, new, now - read_at, None
                    read_at = now
                live.update(render(current, previous, elapsed, admin=admin, error=error))
                live.refresh()
    except KeyboardInterrupt:
        pass  # leaving the `with` has restored the terminal
    return 0
