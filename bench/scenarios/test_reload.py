"""A configuration reload during load, at 100% mirror: pymirror's SIGHUP (files read,
validated, the snapshot swapped atomically) and nginx's (`nginx -s reload`: new workers
start, old ones finish their requests and close their connections). Envoy changes
configuration only through xDS or a hot restart, so it has no row here, and the report
says so. The reload moves the mirror from v2 to v2b, half-way through wrk, and back,
half-way through the open loop: copies reaching the new target prove it took effect.
Figures: errors during each load, and the latency blip as the p99 and maximum of the
requests due in the second after the reload, against the whole run's."""

from __future__ import annotations

from pathlib import Path

import pytest
from load.openloop import open_loop
from load.wrk import wrk
from measure import Benchmark, Record, Scenario, open_figures, wrk_figures
from peers import NO_RELOAD, RELOAD, START
from peers.backends import Backend
from peers.process import peak_rss_bytes
from peers.route import Route
from probe import check_serves_v1

RELOAD_SCENARIO = Scenario(
    "reload",
    "SIGHUP reload during load, 100% mirror",
    "The mirror moves from v2 to v2b by a configuration reload in the middle of each load; "
    "window = the requests due in the second after the reload.",
)


@pytest.mark.parametrize("peer", ("pymirror", "nginx", "envoy"))
def test_reload_under_load(
    backends: dict[str, Backend],
    benchmark: Benchmark,
    record: Record,
    bench_seconds: float,
    tmp_path: Path,
    peer: str,
) -> None:
    if peer in NO_RELOAD:
        record(RELOAD_SCENARIO, peer, {"note": NO_RELOAD[peer]})
        pytest.skip(NO_RELOAD[peer])
    benchmark.group = RELOAD_SCENARIO.key
    v1, v2, v2b = backends["v1"], backends["v2"], backends["v2b"]
    to_v2, to_v2b = Route(v1.address, v2.address), Route(v1.address, v2b.address)
    reload = RELOAD[peer]
    seconds = max(2.0, bench_seconds)  # a reload needs load on both sides of it
    half = round(seconds) / 2

    process = START[peer](to_v2, tmp_path)
    try:
        check_serves_v1(process.address, v2, copied=True)
        before_b = v2b.seen()
        closed = benchmark.pedantic(
            lambda: wrk(process.address, seconds=seconds, midway=lambda: reload(process, to_v2b)),
            rounds=1,
            iterations=1,
        )
        copies_b = v2b.settled() - before_b
        before_a = v2.seen()
        opened = open_loop(
            process.address,
            rate=RELOAD_SCENARIO.rate,
            seconds=seconds,
            connections=RELOAD_SCENARIO.open_connections,
            events=[(half, lambda: reload(process, to_v2))],
        )
        copies_a = v2.settled() - before_a
        rss = peak_rss_bytes(process.pid)
    finally:
        process.stop()

    figures = {
        **wrk_figures(closed),
        **open_figures(opened),
        "window_p99_ms": opened.percentile_ms(99, since=half, until=half + 1),
        "window_max_ms": opened.percentile_ms(100, since=half, until=half + 1),
        "copies_after_first_reload": copies_b,
        "copies_after_second_reload": copies_a,
        "rss_mib": rss / 2**20,
    }
    benchmark.extra_info.update(figures)
    record(RELOAD_SCENARIO, peer, figures)
    # Both reloads took effect: the new mirror target received copies.
    assert copies_b > 0 and copies_a > 0, "a reload did not move the mirror"
    assert closed.non_2xx == 0 and figures["open_errors"] == 0, "users saw error statuses"
