"""Render a benchmark run's JSON (bench/results/latest.json) into bench/RESULTS.md and
bench/results/chart.png. Run by the benchmark session at its end; by hand:
`python bench/report.py [RESULTS.json]`."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PEERS = ("direct", "pymirror", "nginx", "nginx-1m", "envoy", "haproxy", "haproxy-splice")
#: Peers drawn in the chart (the HTTP scenarios).
CHART_PEERS = ("direct", "pymirror", "nginx", "envoy")
CHART = HERE / "results" / "chart.png"
ORDER = (
    "plain", "plain-rounds", "plain-rounds-pinned", "mirror-1", "mirror-10", "mirror-20",
    "mirror-100", "mirror-slow", "mirror-dead", "post-1mib", "conns-1000", "plain-get-64kib",
    "plain-post-1kib",
    "plain-post-64kib", "plain-conns-1000", "reload", "compare-off", "compare-1", "compare-100",
    "h2-plain", "h2-mirror-100", "grpc-plain", "grpc-mirror-100",
    "tls-in-plain", "tls-in-mirror-100", "tls-out-plain", "tls-out-mirror-100", "tls-handshakes",
    "tcp-bulk", "tcp-bulk-mirror", "hostile-mirror", "compare-flood",
)  # fmt: skip
#: Bulk TCP scenarios (bench/scenarios/test_tcp.py): their own table, not in the chart.
BULK = ("tcp-bulk", "tcp-bulk-mirror")
#: HTTP/2 scenarios (bench/scenarios/test_http2.py): their own table (h2load, closed loop
#: only), not in the chart, whose p99 is at a fixed rate.
H2 = ("h2-plain", "h2-mirror-100")
#: Unary gRPC scenarios (bench/scenarios/test_grpc.py): their own table, as the HTTP/2
#: ones (h2load too), not in the chart.
GRPC = ("grpc-plain", "grpc-mirror-100")
#: TLS scenarios (bench/scenarios/test_tls.py): their own table (wrk, closed loop only),
#: not in the chart.
TLS = ("tls-in-plain", "tls-in-mirror-100", "tls-out-plain", "tls-out-mirror-100", "tls-handshakes")
#: pymirror alone against hostile peers (bench/scenarios/test_hostile_mirror.py): their
#: own tables, not in the chart.
HOSTILE = ("hostile-mirror", "compare-flood")
#: Issue 19's CPU targets in alternating rounds (bench/scenarios/test_rounds.py): their
#: own table, not in the chart. Rows: (label, pymirror's row, the peer's row, bound).
ROUNDS = ("plain-rounds", "plain-rounds-pinned")
ROUNDS_TARGETS = (
    ("CPU/request as a plain proxy, vs nginx", "pymirror", "nginx", 1.0),
    ("CPU/request as a plain proxy, vs HAProxy", "pymirror", "haproxy", 1.0),
    ("CPU/request at 1% mirror, vs nginx as a plain proxy", "pymirror-1", "nginx", 1.0),
    ("CPU/request at 10% mirror, vs nginx as a plain proxy", "pymirror-10", "nginx", 1.0),
)
#: The hostile-mirror rows, in order: the healthy v2 (the baseline) first.
HOSTILE_MIRRORS = ("healthy", "huge_body", "endless_chunked", "endless_headers")


def _ordered(scenarios: dict[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(ORDER)}
    return dict(sorted(scenarios.items(), key=lambda item: rank.get(item[0], len(ORDER))))


#: Issue 5's targets: (scenario, figure, the most pymirror/nginx may be, or the least).
TARGETS = (
    ("plain", "cpu_us_per_req", "CPU/request as a plain proxy", "<=", 1.0),
    ("mirror-100", "cpu_us_per_req", "CPU/request at 100% mirror", "<=", 0.6),
    ("mirror-100", "rps", "throughput at 100% mirror", ">=", 1.5),
)
#: Issue 16's, over HTTP/2 on both hops: pymirror/Envoy, in the same run.
H2_TARGETS = (
    ("h2-mirror-100", "cpu_us_per_req", "HTTP/2: CPU/request at 100% mirror", "<=", 0.5),
    ("h2-mirror-100", "rps", "HTTP/2: throughput at 100% mirror", ">=", 2.0),
)
#: The same targets for unary gRPC calls.
GRPC_TARGETS = (
    ("grpc-mirror-100", "cpu_us_per_req", "gRPC: CPU/request at 100% mirror", "<=", 0.5),
    ("grpc-mirror-100", "rps", "gRPC: throughput at 100% mirror", ">=", 2.0),
)


#: Issue 17's: pymirror over nginx, and over Envoy, in the same run.
_CPU = "cpu_us_per_req"
TLS_TARGETS = (
    ("tls-in-mirror-100", _CPU, "TLS in: CPU/request at 100% mirror", "<=", 0.5, "nginx"),
    ("tls-in-mirror-100", _CPU, "TLS in: CPU/request at 100% mirror", "<=", 0.6, "envoy"),
    ("tls-out-mirror-100", _CPU, "TLS out: CPU/request at 100% mirror", "<=", 0.5, "nginx"),
    ("tls-out-mirror-100", _CPU, "TLS out: CPU/request at 100% mirror", "<=", 0.6, "envoy"),
    ("tls-handshakes", "rps", "handshakes per second", ">=", 1.0, "nginx"),
)


#: Issue 19's, the request that is not mirrored (bench/scenarios/test_plain_path.py):
#: (label, pymirror's scenario, the other peer's scenario, the other peer, the most
#: pymirror's CPU/request over the other's may be, informative only).
PLAIN_TARGETS = (
    ("CPU/request as a plain proxy, vs nginx", "plain", "plain", "nginx", 1.0, False),
    ("CPU/request as a plain proxy, vs HAProxy", "plain", "plain", "haproxy", 1.0, False),
    ("CPU/request at 1% mirror, vs nginx as a plain proxy", "mirror-1", "plain", "nginx", 1.0,
     False),
    ("CPU/request at 10% mirror, vs nginx as a plain proxy", "mirror-10", "plain", "nginx",
     1.0, False),
    ("CPU/request at 100% mirror, vs nginx's mirror", "mirror-100", "mirror-100", "nginx", 0.3,
     False),
    ("64 KiB answers (GET), plain: CPU/request vs nginx", "plain-get-64kib",
     "plain-get-64kib", "nginx", 1.0, True),
    ("64 KiB POST bodies, plain: CPU/request vs nginx", "plain-post-64kib",
     "plain-post-64kib", "nginx", 1.0, True),
    ("1 KiB POST bodies, plain: CPU/request vs nginx", "plain-post-1kib", "plain-post-1kib",
     "nginx", 1.0, True),
    ("1,000 connections, plain: CPU/request vs nginx", "plain-conns-1000",
     "plain-conns-1000", "nginx", 1.0, True),
)  # fmt: skip


def _num(value: Any, digits: int = 1, thousands: bool = False) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return ""
    return f"{value:,.0f}" if thousands else f"{value:.{digits}f}"


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def _peers(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = entry["peers"]
    return [(p, found[p]) for p in PEERS if p in found]


def _peer_table(
    entry: dict[str, Any], head: str, cells: Callable[[str, dict[str, Any]], list[str]]
) -> list[str]:
    """A table with one row per peer: the `head` line and its alignment row (numbers to
    the right), then each peer's `cells`, or its note where it was not measured."""
    columns = head.count("|") - 1
    lines = [head, "|---" + "|---:" * (columns - 1) + "|"]
    for peer, f in _peers(entry):
        if "note" in f:
            lines.append(f"| {peer} | {f['note']} |" + " |" * (columns - 2))
        else:
            lines.append("| " + " | ".join(cells(peer, f)) + " |")
    return lines


def _load_cells(f: dict[str, Any]) -> list[str]:
    """req/s, CPU us/req, p50, p99 and p99.9 ms: the first columns of every HTTP table."""
    return [
        _num(f.get("rps"), thousands=True),
        _num(f.get("cpu_us_per_req")),
        _num(f.get("p50_ms"), 2),
        _num(f.get("p99_ms"), 2),
        _num(f.get("p999_ms"), 2),
    ]


def _table(key: str, entry: dict[str, Any], plain: dict[str, Any]) -> list[str]:
    def cells(peer: str, f: dict[str, Any]) -> list[str]:
        base = plain.get(peer, {}).get("p99_ms")
        share, share_wrk = f.get("copy_share"), f.get("copy_share_wrk")
        copies = f"{share:.0%} / {share_wrk:.0%}" if share is not None else ""
        return [
            peer,
            *_load_cells(f),
            _ratio(f.get("p99_ms"), base) if key != "plain" and base else "",
            _num(f.get("lag_p99_ms"), 2),
            _num(f.get("rss_mib")),
            f"{f.get('wrk_errors', 0) + f.get('open_errors', 0):,}",
            f"{f.get('unfinished', 0):,}",
            copies,
        ]

    head = (
        "| peer | req/s | CPU us/req | p50 ms | p99 ms | p99.9 ms | p99 vs 0% | send lag p99 ms "
        "| peak RSS MiB | user errors | unanswered | copies at v2 (fixed rate / wrk) |"
    )
    return _peer_table(entry, head, cells)


def _ratios(entry: dict[str, Any]) -> list[str]:
    peers = entry["peers"]
    ours = peers.get("pymirror", {})
    out = []
    for other in ("nginx", "envoy", "haproxy"):
        theirs = peers.get(other, {})

        def ratio(figure: str, theirs: dict[str, Any] = theirs) -> str:
            return _ratio(ours.get(figure), theirs.get(figure))

        if "rps" in ours and "rps" in theirs:
            line = (
                f"pymirror/{other}: CPU per request {ratio('cpu_us_per_req')}, throughput "
                f"{ratio('rps')}, p99 {ratio('p99_ms')}"
            )
            if "cpu_us_per_req_at_rate" in ours:  # the HTTP/2 scenarios have no fixed rate
                line += f", CPU per request at the fixed rate {ratio('cpu_us_per_req_at_rate')}"
            out.append(line + ".")
    return [" ".join(out)] if out else []


def _reload_table(entry: dict[str, Any]) -> list[str]:
    def cells(peer: str, f: dict[str, Any]) -> list[str]:
        return [
            peer,
            _num(f["rps"], thousands=True),
            f"{f['wrk_errors']:,}",
            _num(f["p50_ms"], 2),
            _num(f["p99_ms"], 2),
            _num(f["p999_ms"], 2),
            _num(f["window_p99_ms"], 2),
            _num(f["window_max_ms"], 2),
            f"{f['retries']:,}",
            f"{f['open_errors'] + f['unfinished']:,}",
        ]

    head = (
        "| peer | req/s (wrk, reload midway) | socket errors + non-2xx | p50 ms | p99 ms "
        "| p99.9 ms | window p99 ms | window max ms | retried | user errors |"
    )
    return _peer_table(entry, head, cells)


def _bulk_table(entry: dict[str, Any], plain: dict[str, Any]) -> list[str]:
    """GB/s, CPU s/GB, RSS and bytes counted per peer; pymirror against each other peer
    (direct: the limit; nginx `stream`; HAProxy `mode tcp`); `plain` is the unmirrored
    scenario's peers."""
    lines = [
        "| peer | GB/s | CPU s/GB | peak RSS MiB | GB/s vs direct | pymirror GB/s vs this "
        "| pymirror CPU/GB vs this | bytes at sink / sent | bytes at mirror sink |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = entry["peers"].get("pymirror", {})
    direct = plain.get("direct", {}).get("gb_per_s")
    for peer, f in _peers(entry):
        if "note" in f:
            lines.append(f"| {peer} | {f['note']} |" + " |" * 7)
            continue
        mine = peer == "pymirror"
        mirror = f.get("mirror_bytes")
        cells = [
            peer,
            _num(f.get("gb_per_s"), 2),
            _num(f.get("cpu_s_per_gb"), 2),
            _num(f.get("rss_mib")),
            _ratio(f.get("gb_per_s"), direct) if peer != "direct" else "",
            "" if mine else _ratio(ours.get("gb_per_s"), f.get("gb_per_s")),
            ""
            if mine or peer == "direct"
            else _ratio(ours.get("cpu_s_per_gb"), f.get("cpu_s_per_gb")),
            f"{f.get('sink_bytes', 0):,} / {f.get('bytes', 0):,}",
            f"{mirror:,}" if isinstance(mirror, int) else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    unmirrored = plain.get("pymirror", {})
    if ours is not unmirrored and "gb_per_s" in ours and "gb_per_s" in unmirrored:
        lines += [
            "",
            f"pymirror mirrored / not mirrored: GB/s "
            f"{_ratio(ours['gb_per_s'], unmirrored['gb_per_s'])}, CPU per GB "
            f"{_ratio(ours.get('cpu_s_per_gb'), unmirrored.get('cpu_s_per_gb'))}.",
        ]
    return lines


def _h2_table(entry: dict[str, Any]) -> list[str]:
    """h2load's figures per peer: throughput, the proxy's CPU and memory, latency at
    saturation, errors, the copies v2 logged as a share of the requests answered."""

    def cells(peer: str, f: dict[str, Any]) -> list[str]:
        return [
            peer,
            *_load_cells(f),
            _num(f.get("rss_mib")),
            f"{f.get('user_errors', 0):,}",
            _share(f.get("copy_share")),
        ]

    head = (
        "| peer | req/s | CPU us/req | p50 ms | p99 ms | p99.9 ms | peak RSS MiB "
        "| user errors | copies at v2 |"
    )
    return _peer_table(entry, head, cells)


def _share(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else ""


def _yes(value: Any) -> str:
    return "" if value is None else ("yes" if value else "no")


def _hostile_table(entry: dict[str, Any]) -> list[str]:
    """One row per v2 (healthy first): the user's latency against the healthy row and
    issue 14's target, the proxy's CPU while users ran and after, what v2 wrote, how the
    copies ended."""
    lines = [
        "| v2 | p50 ms | p99 ms | p99.9 ms | p99 vs healthy | p99 target ms | met "
        "| CPU while users | CPU 0-1 s after | CPU 0.5-1 s after | CPU 1-2 s after "
        "| idle in 1 s | peak RSS MiB "
        "| v2 wrote MiB | v2 connections (closed by proxy) "
        "| copies answered / failed / timed out / cut / in flight | user errors |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    found = entry["peers"]
    for name in [*HOSTILE_MIRRORS, *(n for n in found if n not in HOSTILE_MIRRORS)]:
        f = found.get(name)
        if f is None:
            continue
        outcomes = " / ".join(
            f"{f.get(f'copies_{k}', 0):,}"
            for k in ("answered", "failed", "timed_out", "cut", "in_flight")
        )
        cells = [
            name,
            _num(f.get("p50_ms"), 2),
            _num(f.get("p99_ms"), 2),
            _num(f.get("p999_ms"), 2),
            f"{f['p99_vs_healthy']:.1f}x" if "p99_vs_healthy" in f else "",
            _num(f.get("p99_bound_ms"), 2),
            _yes(f.get("p99_within_target")),
            _share(f.get("cpu_share_users")),
            _share(f.get("cpu_share_after_1s")),
            _share(f.get("cpu_share_half_to_1s")),
            _share(f.get("cpu_share_after_2s")),
            _yes(f.get("idle_within_1s")),
            _num(f.get("rss_mib")),
            f"{f['v2_written_mib']:,.2f}" if "v2_written_mib" in f else "",
            f"{f.get('v2_connections', 0):,} ({f.get('v2_closed_by_proxy', 0):,})",
            outcomes,
            f"{f.get('user_errors', 0):,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _flood_table(entry: dict[str, Any]) -> list[str]:
    """The compare flood, copies only (the baseline) and copies compared: requests, the
    proxy's peak RSS growth over its warm resident set, what comparing added over the
    baseline next to the compare byte budget, the queue, the pairs."""
    lines = [
        "| run | requests | req/s | warm RSS MiB | peak RSS MiB | growth MiB "
        "| compare's share MiB | budget MiB | within | queue depth max | pairs queued "
        "| pairs skipped | user errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    notes = []
    for run, f in entry["peers"].items():
        skipped = f.get("pairs_skipped") or {}
        budget = f.get("budget_mib")
        cells = [
            run,
            f"{f.get('requests', 0):,}",
            _num(f.get("rps"), thousands=True),
            _num(f.get("warm_rss_mib")),
            _num(f.get("peak_rss_mib")),
            _num(f.get("rss_growth_mib")),
            _num(f.get("compare_growth_mib")),
            "" if budget is None else f"{budget}" + ("" if f.get("budget_flag") else " (not set)"),
            _yes(f.get("within_budget")),
            f"{f.get('queue_depth_max', 0):,}",
            f"{f.get('pairs_queued', 0):,}",
            ", ".join(f"{k} {v:,}" for k, v in skipped.items() if v) or "0",
            f"{f.get('user_errors', 0):,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if f.get("budget_note"):
            notes.append(f["budget_note"])
    return lines + (["", *notes] if notes else [])


def _target_rows(
    scenarios: dict[str, Any], targets: tuple[tuple[str, str, str, str, float], ...], other: str
) -> list[str]:
    """One row per target whose figures the run has: pymirror's figure over `other`'s."""
    lines = []
    for key, figure, label, op, bound in targets:
        peers = scenarios.get(key, {}).get("peers", {})
        ours, theirs = peers.get("pymirror", {}).get(figure), peers.get(other, {}).get(figure)
        if ours is None or not theirs:
            continue
        ratio = ours / theirs
        met = ratio <= bound if op == "<=" else ratio >= bound
        lines.append(f"| {label} | {ratio:.2f}x | {op} {bound}x | {'yes' if met else 'no'} |")
    return lines


def _envoy_targets(
    scenarios: dict[str, Any], targets: tuple[tuple[str, str, str, str, float], ...], what: str
) -> list[str]:
    """Issue 16's `targets` (pymirror/Envoy, one scenario's) and the share of `what`
    each peer copied to v2 there."""
    rows = _target_rows(scenarios, targets, "envoy")
    if not rows:
        return []
    lines = ["| target (issue 16) | pymirror/Envoy | wanted | met |", "|---|---:|---:|---|", *rows]
    # The ratios hold for what each peer copied: a peer that dropped copies under the
    # flood did less work per request, so the shares stand next to them.
    peers = scenarios[targets[0][0]]["peers"]
    shares = [
        f"{peer} {_share(peers[peer]['copy_share'])}"
        for peer in ("pymirror", "envoy")
        if "copy_share" in peers.get(peer, {})
    ]
    return [*lines, "", f"{what} that reached v2 under h2load at 100%: {', '.join(shares)}."]


def _tls_targets(scenarios: dict[str, Any]) -> list[str]:
    """Issue 17's targets: pymirror's figure over nginx's or Envoy's, in one run."""
    rows = []
    for key, figure, label, op, bound, other in TLS_TARGETS:
        rows += [
            row.replace(f"| {label} |", f"| {label}, vs {other} |", 1)
            for row in _target_rows(scenarios, ((key, figure, label, op, bound),), other)
        ]
    if not rows:
        return []
    return ["| target (issue 17) | pymirror/peer | wanted | met |", "|---|---:|---:|---|", *rows]


def _plain_targets(scenarios: dict[str, Any]) -> list[str]:
    """Issue 19's targets: pymirror's CPU per request over nginx's or HAProxy's, in one
    run, against the same scenario or the other's plain proxy; a figure the run lacks
    reads n/a. Nothing when the run has none of them."""

    def cpu(key: str, peer: str) -> Any:
        return scenarios.get(key, {}).get("peers", {}).get(peer, {}).get(_CPU)

    rows, found = [], False
    for label, ours_key, theirs_key, other, bound, informative in PLAIN_TARGETS:
        ours, theirs = cpu(ours_key, "pymirror"), cpu(theirs_key, other)
        ratio = _ratio(ours, theirs)
        if ratio == "n/a":
            met = "n/a"
        else:
            found = True
            met = "yes" if ours / theirs <= bound else "no"
        label += " (informative)" if informative else ""
        rows.append(f"| {label} | {ratio} | <= {bound}x | {met} |")
    if not found:
        return []
    return [
        "| target (issue 19) | pymirror/peer | wanted | met |",
        "|---|---:|---:|---|",
        *rows,
        "",
        "HAProxy runs as a plain proxy only (`mode http`; its HTTP mirror is an SPOE agent, "
        "a program of its own), so no mirrored row compares with it.",
    ]


def _rounds_targets(scenarios: dict[str, Any], key: str) -> list[str]:
    """Issue 19's CPU targets from the medians of the rounds `key`; nothing when the run
    has none."""
    peers = scenarios.get(key, {}).get("peers", {})
    where = "cores of their own" if key.endswith("pinned") else "shared cores"
    rows = []
    for label, ours, theirs, bound in ROUNDS_TARGETS:
        a, b = peers.get(ours, {}).get(_CPU), peers.get(theirs, {}).get(_CPU)
        ratio = _ratio(a, b)
        met = "n/a" if ratio == "n/a" else ("yes" if a / b <= bound else "no")
        rows.append(f"| {label} | {ratio} | <= {bound}x | {met} |")
    if not peers:
        return []
    return [
        f"| target (issue 19), medians of alternating rounds, {where} | pymirror/peer "
        "| wanted | met |",
        "|---|---:|---:|---|",
        *rows,
    ]


def _rounds_table(entry: dict[str, Any]) -> list[str]:
    lines = [
        "| row | CPU us/req | user | system | each round | req/s |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for row, f in entry.get("peers", {}).items():
        rounds = ", ".join(f"{c:.2f}" for c in f.get("cpu_rounds", []))
        lines.append(
            f"| {row} | {_num(f.get(_CPU), 2)} | {_num(f.get('cpu_user_us_per_req'), 2)} "
            f"| {_num(f.get('cpu_system_us_per_req'), 2)} | {rounds} "
            f"| {_num(f.get('rps'), 0, thousands=True)} |"
        )
    return lines


def _targets(scenarios: dict[str, Any]) -> list[str]:
    lines = ["| target (issue 5) | pymirror/nginx | wanted | met |", "|---|---:|---:|---|"]
    lines += _target_rows(scenarios, TARGETS, "nginx")
    plain = scenarios.get("plain", {}).get("peers", {}).get("pymirror", {}).get("p99_ms")
    for key in ("mirror-slow", "mirror-dead"):
        p99 = scenarios.get(key, {}).get("peers", {}).get("pymirror", {}).get("p99_ms")
        if p99 is not None and plain:
            met = "yes" if p99 <= plain * 1.05 else "no"
            lines.append(
                f"| user p99, {key}, vs pymirror at 0% | {p99 / plain:.2f}x (of 0%) "
                f"| <= 1.05x | {met} |"
            )
    cpu = [
        scenarios.get(k, {}).get("peers", {}).get("pymirror", {}).get("cpu_us_per_req")
        for k in ("plain", "mirror-20", "mirror-100")
    ]
    if all(isinstance(c, int | float) for c in cpu):
        c0, c20, c100 = (float(c) for c in cpu if c is not None)
        line = c0 + 0.2 * (c100 - c0)
        met = "yes" if abs(c20 - line) <= 0.1 * line else "no"
        lines.append(
            f"| CPU/request linear in the share: at 20%, measured vs the 0%-100% line "
            f"| {c20:.1f} vs {line:.1f} us | within 10% | {met} |"
        )
    return lines


def render(data: dict[str, Any], chart: str | None) -> str:
    meta, scenarios = data["meta"], _ordered(data["scenarios"])
    plain = scenarios.get("plain", {}).get("peers", {})
    lines = [
        "# Benchmark results",
        "",
        f"One run, {meta['when']}, on {meta['machine']}: pymirror, nginx {meta['nginx']} and "
        f"Envoy {meta['envoy']} side by side, and HAProxy {meta.get('haproxy', '?')} where "
        f"nothing is mirrored ({meta['workers']} worker threads or processes each), with "
        "direct (client -> v1) as the limit. Backends: nginx, one worker, fixed body (3 "
        "bytes; 64 KiB in the 64 KiB answer scenario). Per peer and scenario "
        f"{meta['seconds']:g} s of wrk and {2 * meta['seconds']:g} s "
        "of open-loop load. Regenerate with the command in "
        "README.md (Benchmarks); re-render with `python bench/report.py`.",
        "",
        "How to read: **req/s** is closed-loop throughput (wrk, 1 thread, 32 keep-alive "
        "connections unless the scenario says otherwise); **CPU us/req** is the proxy's "
        "user+system time (all threads and worker processes, from /proc) over those requests "
        "(at saturation; the ratio lines also give it at the fixed rate, where wake-ups "
        "weigh more); "
        "**p50/p99/p99.9** are latencies at the scenario's fixed rate from the open-loop "
        "generator, measured from each request's intended send time (no coordinated "
        "omission); **p99 vs 0%** compares with the same peer as a plain proxy; **peak RSS** "
        "is VmHWM summed over the proxy's processes; **send lag** is how late the generator "
        "sent (already inside the latencies): the machine's timer and scheduling jitter, or "
        "a wait for a free connection when the peer stalls; **unanswered** counts requests still "
        "waiting when the open loop ended (the peer fell behind the fixed rate); **copies at "
        "v2** are lines in v2's access log as a share of the requests users got: exact at the "
        "fixed rate, a little high under wrk (requests in flight when wrk stops were copied "
        "but are not in its count), low where a peer dropped copies to protect itself.",
        "",
    ]
    jitter = meta.get("timer_jitter_ms")
    if jitter:
        lines += [
            f"Noise: on this machine (a virtual machine) a thread sleeping 1 ms at a time, "
            f"idle, woke up to {jitter['p99']:.2f} ms late at p99 and {jitter['p99.9']:.2f} ms "
            "at p99.9 at the end of the run; under load, with the generator, the peers and "
            "the backends sharing the cores, the direct rows show the floor. p99 differences "
            "of a millisecond or two are within noise; p50, throughput and CPU per request "
            "are the steadier figures.",
            "",
        ]
    if chart:
        lines += [f"![throughput, CPU per request, p99 and memory per peer]({chart})", ""]
    lines += ["## Against the targets", "", *_targets(scenarios), ""]
    for envoy_targets in (
        _envoy_targets(scenarios, H2_TARGETS, "Copies"),
        _envoy_targets(scenarios, GRPC_TARGETS, "gRPC copies"),
        _tls_targets(scenarios),
        _plain_targets(scenarios),
        *(_rounds_targets(scenarios, key) for key in ROUNDS),
    ):
        if envoy_targets:
            lines += [*envoy_targets, ""]
    # Hand-written, dated analysis of the targets not met (measured apart from the run).
    analysis = HERE / "analysis.md"
    if analysis.exists():
        lines += [analysis.read_text().strip(), ""]
    for key, entry in scenarios.items():
        lines += [f"## {entry['title']}", "", entry["what"]]
        if key in BULK:
            plain_bulk = scenarios.get("tcp-bulk", {}).get("peers", {})
            lines += [
                "",
                "nginx is its `stream` module (`proxy_pass`; nginx-1m: `proxy_buffer_size 1m` "
                f"for the 16k default), HAProxy {meta.get('haproxy', '?')} runs `mode tcp` "
                "(haproxy-splice: `option splice-request` and `splice-response`), defaults "
                "otherwise; "
                "**GB/s** is the bytes sent over the time until the sink closed the last "
                "connection; **CPU s/GB** is the proxy's user+system time (all threads and "
                "processes, from /proc) per 10^9 bytes; sinks and client are Python "
                "processes of their own (`bench/load/bulk.py`), so direct is their limit.",
                "",
                *_bulk_table(entry, plain_bulk),
                "",
            ]
            continue
        if key == "hostile-mirror":
            lines += [
                "",
                "pymirror only (the peers' mirrors read a copy's answer as they do; this is "
                "issue 14's question). The v2 peers are tests/support/hostile.py in processes "
                "of their own; the primary is the healthy one. **p99 target** is 1.2x the "
                "healthy row's p99 + 0.5 ms; **CPU** is the proxy's user+system time (all "
                "threads, from /proc) as a share of one core, while the user ran and in the "
                "first and second second after it stopped (idle: <= 5%); **v2 wrote** is what "
                "the v2 peer's kernel accepted (at most its buffers more than the proxy read).",
                "",
                *_hostile_table(entry),
                "",
            ]
            continue
        if key == "compare-flood":
            lines += [
                "",
                "**growth** is the proxy's peak resident set (VmHWM) over its resident set "
                "once warm (after 200 compared requests, the queue drained), next to the "
                "compare byte budget (`--compare-buffer-budget`).",
                "",
                *_flood_table(entry),
                "",
            ]
            continue
        if key in ROUNDS:
            lines += [
                "",
                "**CPU us/req** is each row's median over the rounds (user and system "
                "apart, each its own median); **each round** lists every round's figure "
                "in the order run.",
                "",
                *_rounds_table(entry),
                "",
            ]
            continue
        if key == "reload":
            lines += [f"Fixed rate {entry['rate']:g} req/s.", "", *_reload_table(entry), ""]
            continue
        if key in TLS:
            lines += [
                "",
                f"wrk {meta.get('wrk', '?')} (OpenSSL), 1 thread, 32 connections, for "
                f"{meta['seconds']:g} s; **p50/p99** are wrk's (closed loop: latency at "
                "saturation). Every peer serves and checks one ECDSA P-256 certificate "
                "(bench/peers/tls.py) with its default TLS 1.3 suites; upstream, nginx "
                "reuses sessions (`proxy_ssl_session_reuse`) and keeps connections alive, "
                "as pymirror and Envoy do. **copies at v2**: v2's access log lines as a "
                "share of the requests answered.",
                "",
                *_h2_table(entry),
                "",
                *_ratios(entry),
                "",
            ]
            continue
        if key in H2 or key in GRPC:
            if key in GRPC:
                counted = "the calls v2 counted as a share of the calls answered"
                port = (
                    "`protocol: GRPC`. Backends: tonic servers (bench/grpc_backend), one "
                    "thread each, answering their name; h2load reads HTTP statuses only (a "
                    "gRPC error is a 200), so v1's call count vouches that every call "
                    "counted was served by v1."
                )
            else:
                counted = "v2's access log lines as a share of the requests answered"
                port = "`protocol: HTTP2`."
            lines += [
                "",
                f"h2load {meta.get('h2load', '?')}, 1 thread, for {meta['seconds']:g} s; no "
                "fixed-rate run (h2load has none), so **p50/p99/p99.9** are from its "
                "per-request log under the same closed loop: latency at saturation, "
                f"coordinated omission included. **copies at v2**: {counted}, a little high "
                "(streams in flight when h2load stops were copied but are not counted), low "
                "where a peer dropped copies. Envoy: `codec_type: AUTO` and clusters with "
                f"explicit HTTP/2; pymirror: the backends' service port {port}{_cores(entry)}",
                "",
                *_h2_table(entry),
                "",
                *_ratios(entry),
                "",
            ]
            continue
        lines += [f"Fixed rate {entry['rate']:g} req/s.", "", *_table(key, entry, plain), ""]
        lines += [*_ratios(entry), ""]
    return "\n".join(lines)


def _cores(entry: dict[str, Any]) -> str:
    """Where the peers ran (bench/peers/cpus.py), as the run recorded it."""
    said = {f["cores"] for f in entry.get("peers", {}).values() if "cores" in f}
    return f" Cores: {', '.join(sorted(said))}." if said else ""


def draw_chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = {
        k: e
        for k, e in _ordered(data["scenarios"]).items()
        if k not in ("reload", *ROUNDS, *BULK, *HOSTILE, *H2, *GRPC)
    }
    panels = (
        ("rps", "throughput, req/s (wrk; log)"),
        ("cpu_us_per_req", "proxy CPU per request, us (log)"),
        ("p99_ms", "p99 at fixed rate, ms (log)"),
        ("rss_mib", "peak RSS, MiB"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    width = 0.2
    for ax, (figure, title) in zip(axes.flat, panels, strict=True):
        for i, peer in enumerate(CHART_PEERS):
            xs, ys = [], []
            for x, entry in enumerate(scenarios.values()):
                value = entry["peers"].get(peer, {}).get(figure)
                if isinstance(value, int | float) and not math.isnan(value):
                    xs.append(x + (i - 1.5) * width)
                    ys.append(value)
            ax.bar(xs, ys, width, label=peer)
        ax.set_title(title)
        ax.set_xticks(range(len(scenarios)), list(scenarios), rotation=20, fontsize=8)
        if figure != "rss_mib":
            ax.set_yscale("log")
    axes.flat[0].legend()
    fig.suptitle(f"pymirror vs nginx vs Envoy, {data['meta']['when']}, {data['meta']['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(json_path: Path) -> None:
    data = json.loads(json_path.read_text())
    CHART.parent.mkdir(exist_ok=True)
    draw_chart(data, CHART)
    chart = CHART.relative_to(HERE).as_posix()
    (HERE / "RESULTS.md").write_text(render(data, chart))


if __name__ == "__main__":
    write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "latest.json")
