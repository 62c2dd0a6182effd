"""The comparison report as one HTML page (`pymirror report --format html`, admin
`/report`): per endpoint, field mismatch rates with noise apart, status agreement,
latency percentiles, example diffs, and charts drawn as inline SVG here, in Python.

No script, no stylesheet or font from elsewhere: the page works offline and from a file.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

#: Colours of the two sides and of the results, used in every chart.
PRIMARY, MIRROR = "#3b6ea5", "#e08a1e"
MISMATCH, NOISE = "#c23b22", "#9a9a9a"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;text-align:left}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.noise td{color:#777}code{font-size:.95em}.muted{color:#777}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;
vertical-align:middle}
"""


def _t(value: Any) -> str:
    return escape(str(value), quote=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _mismatches(e: dict[str, Any]) -> tuple[int, int]:
    """(pairs with a regression, pairs with noise only)."""
    res = e["results"]
    bad = sum(v for k, v in res.items() if k.endswith("_mismatch"))
    return bad, res.get("noise_only", 0)


def mismatch_chart(endpoints: list[dict[str, Any]]) -> str:
    """Horizontal bars: the share of each endpoint's compared pairs that mismatched
    (red), and that differed by noise only (grey), on a common 0-100% scale."""
    label_w, bar_w, row_h = 260, 420, 26
    rows = [e for e in endpoints if e["compared"]]
    height = 30 + row_h * len(rows)
    out = [
        f'<svg class="chart mismatch-rate" role="img" width="{label_w + bar_w + 200}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>Mismatch rate per endpoint</title>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + bar_w * tick
        out.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height}" stroke="#ddd"/>')
        out.append(
            f'<text x="{x:.1f}" y="12" font-size="10" text-anchor="middle">{tick:.0%}</text>'
        )
    for i, e in enumerate(rows):
        y = 22 + i * row_h
        bad, noise = _mismatches(e)
        rate, noise_rate = bad / e["compared"], noise / e["compared"]
        name = _t(e["endpoint"])
        out.append(
            f'<g class="bar" data-endpoint="{name}" data-rate="{rate:.4f}" '
            f'data-noise-rate="{noise_rate:.4f}">'
        )
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{name}</text>')
        w1, w2 = bar_w * rate, bar_w * noise_rate
        out.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{w1:.1f}" height="{row_h - 8}" '
            f'fill="{MISMATCH}"><title>{name}: {rate:.1%} mismatched</title></rect>'
        )
        out.append(
            f'<rect x="{label_w + w1:.1f}" y="{y + 3}" width="{w2:.1f}" height="{row_h - 8}" '
            f'fill="{NOISE}"><title>{name}: {noise_rate:.1%} noise only</title></rect>'
        )
        out.append(
            f'<text class="value" x="{label_w + w1 + w2 + 6:.1f}" y="{y + 15}">{rate:.1%}'
            + (f" (+{noise_rate:.1%} noise)" if noise else "")
            + "</text>"
        )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def latency_chart(e: dict[str, Any]) -> str:
    """The two sides' latency distributions side by side: one histogram each, on the
    same log-spaced buckets and the same count scale, with p50 and p99 marked."""
    lat = e["latency"]
    hist = lat.get("histogram") or {}
    edges: list[float] = hist.get("edges") or []
    if not edges:
        return '<p class="muted">no latencies yet</p>'
    panel_w, panel_h, gap, top = 330, 150, 40, 24
    peak = max(max(hist["primary"], default=0), max(hist["mirror"], default=0), 1)
    lo, hi = math.log(edges[0]), math.log(edges[-1])
    span = (hi - lo) or 1.0
    out = [
        f'<svg class="chart latency" role="img" width="{2 * panel_w + gap + 20}" '
        f'height="{panel_h + top + 40}" xmlns="http://www.w3.org/2000/svg" '
        f'data-endpoint="{_t(e["endpoint"])}">',
        f"<title>Latency distribution, primary and mirror: {_t(e['endpoint'])}</title>",
    ]
    for k, (side, colour) in enumerate((("primary", PRIMARY), ("mirror", MIRROR))):
        x0 = 10 + k * (panel_w + gap)
        counts: list[int] = hist[side]
        bw = panel_w / len(counts)
        out.append(f'<g class="side {side}">')
        out.append(
            f'<text x="{x0}" y="14" font-weight="bold" fill="{colour}">'
            f"{side} (v{1 if side == 'primary' else 2})</text>"
        )
        base = top + panel_h
        out.append(f'<line x1="{x0}" y1="{base}" x2="{x0 + panel_w}" y2="{base}" stroke="#888"/>')
        for i, c in enumerate(counts):
            h = panel_h * c / peak
            out.append(
                f'<rect x="{x0 + i * bw:.1f}" y="{base - h:.1f}" width="{bw - 1:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_ms(edges[i])} - '
                f"{_ms(edges[i + 1])}: {c}</title></rect>"
            )
        for q, dash in (("p50", ""), ("p99", ' stroke-dasharray="4 3"')):
            v = lat[side][q]
            if v is None or v <= 0:
                continue
            x = x0 + panel_w * (math.log(v) - lo) / span
            x = min(max(x, x0), x0 + panel_w)
            out.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="#222"{dash}/>'
            )
            # Labels right of the line, or left of it in the panel's right half (unclipped).
            right = x > x0 + panel_w / 2
            out.append(
                f'<text class="value {q}" x="{x - 3 if right else x + 3:.1f}" '
                f'y="{top + (10 if q == "p50" else 22)}" font-size="11" '
                f'text-anchor="{"end" if right else "start"}">{q} {_ms(v)}</text>'
            )
        out.append(
            f'<text x="{x0}" y="{base + 16}" font-size="10">{_ms(edges[0])}</text>'
            f'<text x="{x0 + panel_w}" y="{base + 16}" font-size="10" text-anchor="end">'
            f"{_ms(edges[-1])}</text>"
        )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _fields_table(e: dict[str, Any]) -> str:
    if not e["fields"]:
        return '<p class="muted">no differing field</p>'
    noise_cols = bool(e.get("second_primary"))
    head = "<tr><th>field</th><th>class</th><th>pairs</th><th>v1/v2 rate</th>"
    head += "<th>v1/v1' pairs</th><th>v1/v1' rate</th><th>z</th>" if noise_cols else ""
    rows = [head + "</tr>"]
    for f in e["fields"]:
        cls = f.get("class", "regression")
        cells = (
            f"<td><code>{_t(f['field'])}</code></td><td>{cls}</td>"
            f'<td class="n">{f["count"]}</td><td class="n">{_pct(f["rate"])}</td>'
        )
        if noise_cols:
            cells += (
                f'<td class="n">{f["noise_count"]}</td><td class="n">{_pct(f["noise_rate"])}</td>'
                f'<td class="n">{f["z"]:.1f}</td>'
            )
        rows.append(f'<tr class="{_t(cls)}">{cells}</tr>')
    return f'<table class="fields">{"".join(rows)}</table>'


def _endpoint(e: dict[str, Any]) -> str:
    n = e["compared"]
    out = [
        f"<h2>{_t(e['endpoint'])} <span class='muted'>{_t(e['virtual_service'])} / "
        f"route {_t(e['route'])}</span></h2>"
    ]
    results = ", ".join(
        f"{_t(k)} <b>{v}</b> ({v / n:.1%})" for k, v in sorted(e["results"].items()) if n
    )
    out.append(f"<p>compared <b>{n}</b>: {results}</p>")
    if e.get("second_primary"):
        out.append(f"<p>second primary: <b>{e['noise_compared']}</b> pairs v1/v1'</p>")
    agree = e["status_agreement"]
    statuses = "".join(
        f'<tr><td>{s["primary"]}</td><td>{s["mirror"]}</td><td class="n">{s["count"]}</td></tr>'
        for s in e["statuses"]
    )
    out.append(
        f'<p>status agreement <b class="status-agreement">{_pct(agree)}</b></p>'
        f'<table class="statuses"><tr><th>primary</th><th>mirror</th><th>pairs</th></tr>'
        f"{statuses}</table>"
    )
    lat = e["latency"]
    out.append(
        '<table class="latency"><tr><th></th><th>p50</th><th>p99</th><th>mean</th></tr>'
        + "".join(
            f'<tr><td>{side}</td><td class="n">{_ms(lat[side]["p50"])}</td>'
            f'<td class="n">{_ms(lat[side]["p99"])}</td>'
            f'<td class="n">{_ms(lat[side]["mean"])}</td></tr>'
            for side in ("primary", "mirror")
        )
        + "</table>"
    )
    out.append(latency_chart(e))
    out.append("<h3>fields</h3>" + _fields_table(e))
    regressions = {f["field"] for f in e["fields"] if f.get("class", "regression") == "regression"}
    samples = [s for s in e["samples"] if s["field"] in regressions][:10]
    if samples:
        out.append(
            '<h3>example diffs</h3><table class="samples"><tr><th>request</th><th>where</th>'
            "<th>primary</th><th>mirror</th></tr>"
            + "".join(
                f"<tr><td><code>{_t(s['request'])}</code></td><td><code>{_t(s['path'])}</code>"
                f"</td><td><code>{_t(_value(s['primary']))}</code></td>"
                f"<td><code>{_t(_value(s['mirror']))}</code></td></tr>"
                for s in samples
            )
            + "</table>"
        )
    return f'<section class="endpoint">{"".join(out)}</section>'


def render_html(doc: dict[str, Any]) -> str:
    """The whole page for a `/compare` document."""
    endpoints = doc.get("endpoints", [])
    body = ["<h1>pymirror: mirror vs primary</h1>"]
    if not endpoints:
        body.append("<p>no compared requests yet</p>")
    else:
        body.append(
            '<p class="legend">mismatch rate per endpoint:'
            f'<span style="background:{MISMATCH}"></span>mismatch'
            f'<span style="background:{NOISE}"></span>noise only'
            f'<span style="background:{PRIMARY}"></span>primary'
            f'<span style="background:{MIRROR}"></span>mirror</p>'
        )
        body.append(mismatch_chart(endpoints))
    body += [_endpoint(e) for e in endpoints]
    skipped = [s for s in doc.get("sampling", []) if any(s["skipped"].values())]
    if skipped:
        body.append("<h2>not compared</h2><ul>")
        for s in skipped:
            what = ", ".join(f"{k} {v}" for k, v in sorted(s["skipped"].items()) if v)
            body.append(
                f"<li>{_t(s['virtual_service'])} / route {_t(s['route'])} -> "
                f"{_t(s['mirror'])}: {_t(what)} of {s['sampled']} sampled</li>"
            )
        body.append("</ul>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>pymirror compare report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
