"""`pymirror demo`: the seed example on built-in backends, with real traffic.

Starts reviews v1, v2 and a second v1 on loopback, runs the real proxy on
`demo.yaml` (also at config/demo.yaml), sends traffic with a progress bar, prints
what users got next to what v2 received, and ends with the comparison report of
v2's answers against v1's (`pymirror report`), the second v1 telling noise apart.
"""

from __future__ import annotations

import time
from collections import Counter
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from pymirror.compare.report import document, render_text
from pymirror.config import load_config
from pymirror.demo.backends import V1, V2, ReviewsServer
from pymirror.demo.traffic import Traffic
from pymirror.engine import MirrorStats
from pymirror.errors import ListenError
from pymirror.proxy import Proxy

CONFIG = Path(str(resources.files("pymirror.demo") / "demo.yaml"))


def _endpoint(config_address: str) -> tuple[str, int]:
    host, port = config_address.rsplit(":", 1)
    return host, int(port)


def run_demo(*, requests: int = 1500, concurrency: int = 8) -> int:
    console = Console()
    config = load_config(CONFIG)
    endpoints = config.services["reviews"].endpoints
    try:
        v1 = ReviewsServer(_endpoint(endpoints[0].address), V1).start()
        v2 = ReviewsServer(_endpoint(endpoints[1].address), V2).start()
        v1b = ReviewsServer(_endpoint(endpoints[2].address), V1).start()
    except OSError as exc:
        raise ListenError(f"demo backends cannot bind 127.0.0.1:18081-18083: {exc}") from exc
    try:
        with Proxy(config) as proxy:
            console.print(
                f"[bold]pymirror demo[/]: users -> {proxy.url} -> reviews v1 "
                f"(:{endpoints[0].address.rsplit(':', 1)[1]}); 100% mirrored to reviews v2 "
                f"(:{endpoints[1].address.rsplit(':', 1)[1]}), its answers compared with v1's"
            )
            traffic = Traffic(proxy.addresses[0], requests=requests, concurrency=concurrency)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("sending requests", total=requests)
                traffic.start()
                while not traffic.done.wait(0.1):
                    # As `pymirror run` does: compare in batches, off the request path.
                    proxy.compare_pending()
                    bar.update(task, completed=traffic.sent)
                bar.update(task, completed=traffic.sent)
            mirror = _settled(proxy)
            _report(console, traffic, v1, v2, mirror)
            _compare_report(console, proxy)
    except KeyboardInterrupt:
        console.print("interrupted: proxy drained, backends stopped")
        return 130
    finally:
        v1.stop()
        v2.stop()
        v1b.stop()
    return 0


def _settled(proxy: Proxy, timeout: float = 15.0) -> MirrorStats:
    """v2's mirror figures once every copy (v2's and the second v1's) is over."""
    deadline = time.monotonic() + timeout
    while True:
        mirrors = proxy.stats()["mirrors"]
        if all(m["in_flight"] == 0 for m in mirrors) or time.monotonic() > deadline:
            return next(m for m in mirrors if m["subset"] == "v2")
        time.sleep(0.05)


def _compare_report(console: Console, proxy: Proxy) -> None:
    """The comparison report, as `pymirror report` prints it for a running proxy."""
    while proxy.compare_pending():
        pass
    doc = document(proxy.comparator.store, proxy.stats())
    console.rule("how v2 compares with v1 (pymirror report)")
    console.print(render_text(doc), markup=False, highlight=False, soft_wrap=True, end="")


def _counts(counter: Counter[int] | Counter[str]) -> str:
    return ", ".join(f"{n}x {key}" for key, n in sorted(counter.items()))


def _report(
    console: Console, traffic: Traffic, v1: ReviewsServer, v2: ReviewsServer, mirror: MirrorStats
) -> None:
    table = Table(title="side by side", show_lines=True)
    table.add_column("")
    table.add_column("users (served by v1)")
    table.add_column("v2 (mirror copies)")
    table.add_row("requests", str(traffic.sent), f"{sum(v2.tally.statuses.values())} received")
    table.add_row("statuses", _counts(traffic.statuses), _counts(v2.tally.statuses))
    table.add_row(
        "answered by", _counts(traffic.versions), "dropped by pymirror, never seen by users"
    )
    table.add_row(
        "star colour",
        _counts(traffic.colors),
        f"red (v2's change) in its {v2.tally.statuses[200]} answers",
    )
    p50, p99 = traffic.percentiles()
    d = mirror["duration"]
    mean = d["sum_seconds"] / d["count"] * 1e3 if d["count"] else 0.0
    table.add_row(
        "latency",
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (at the client)",
        f"mean {mean:.1f} ms (measured by pymirror)",
    )
    table.add_row("Host header", ", ".join(v1.tally.hosts), ", ".join(v2.tally.hosts))
    shared = len(v1.tally.request_ids & v2.tally.request_ids)
    table.add_row(
        "x-request-id", f"{len(v1.tally.request_ids)} distinct", f"{shared} identical to v1's"
    )
    table.add_row(
        "pymirror counted",
        "",
        f"answered {mirror['answered']}, failed {mirror['failed']}, "
        f"timed out {mirror['timed_out']}, dropped {sum(mirror['dropped'].values())}",
    )
    console.print(table)


__all__ = ["CONFIG", "run_demo"]
