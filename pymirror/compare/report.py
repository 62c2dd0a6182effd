"""The comparison report: the admin endpoint's `/compare` JSON, and its text rendering
(`pymirror report`)."""

from __future__ import annotations

import json
from typing import Any

from pymirror.compare.store import Store

#: Version of the `/compare` document; bump on incompatible changes.
FORMAT = 1


def document(store: Store, stats: Any | None = None) -> dict[str, Any]:
    """What `/compare` serves: per endpoint figures, and from the core's counters what
    was sampled but never compared (queue full, primary unfinished, copy failed)."""
    skipped = []
    for m in (stats or {}).get("mirrors", []):
        c = m.get("compare") or {}
        if c.get("sampled"):
            skipped.append(
                {
                    "virtual_service": m["virtual_service"],
                    "route": m["route"],
                    "mirror": m["host"] + (f"/{m['subset']}" if m.get("subset") else ""),
                    "sampled": c["sampled"],
                    "queued": c["queued"],
                    "skipped": c["skipped"],
                }
            )
    return {
        "format": FORMAT,
        "endpoints": store.to_json(),
        "sampling": skipped,
        "queue_depth": (stats or {}).get("compare_queue_depth", 0),
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


#: Characters of a value shown on one line of the text report (samples keep it whole).
VALUE_WIDTH = 60


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    # One line each: control characters escaped, long values cut.
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


def _noise(f: dict[str, Any]) -> str:
    if "noise_count" not in f:
        return ""
    return f"   v1/v1' {f['noise_count']:>6}  {f['noise_rate']:.1%}"


def render_text(doc: dict[str, Any]) -> str:
    """A plain-text report, one block per endpoint."""
    lines: list[str] = []
    endpoints = doc.get("endpoints", [])
    if not endpoints:
        lines.append("no compared requests yet")
    for e in endpoints:
        n = e["compared"]
        res = e["results"]
        lines.append(f"{e['endpoint']}  ({e['virtual_service']} / route {e['route']})")
        summary = ", ".join(f"{k} {v} ({v / n:.1%})" for k, v in sorted(res.items()))
        lines.append(f"  compared {n}: {summary}")
        if e.get("truncated"):
            lines.append(
                f"  truncated {e['truncated']}: the mirror's answer went past the capture "
                "limit; only the kept prefixes were compared"
            )
        if e["status_agreement"] is not None:
            lines.append(f"  status agreement {e['status_agreement']:.1%}")
        for s in e["statuses"]:
            if s["primary"] != s["mirror"]:
                lines.append(f"    {s['primary']} -> {s['mirror']}: {s['count']}")
        lat = e["latency"]
        lines.append(
            "  latency  primary p50 {} p99 {}   mirror p50 {} p99 {}".format(
                _ms(lat["primary"]["p50"]),
                _ms(lat["primary"]["p99"]),
                _ms(lat["mirror"]["p50"]),
                _ms(lat["mirror"]["p99"]),
            )
        )
        regressions = [f for f in e["fields"] if f.get("class", "regression") == "regression"]
        noise = [f for f in e["fields"] if f.get("class") == "noise"]
        if e.get("second_primary"):
            lines.append(f"  second primary: {e['noise_compared']} pairs v1/v1'")
        if regressions:
            lines.append("  differing fields:")
            for f in regressions:
                lines.append(f"    {f['field']:<32} {f['count']:>6}  {f['rate']:>6.1%}" + _noise(f))
        # Examples sit under the regressions they illustrate, before the noise.
        # Two per field, in the fields' order, so the commonest difference shows first.
        examples = [
            s
            for f in regressions
            for s in [s for s in e["samples"] if s["field"] == f["field"]][:2]
        ][:10]
        if examples:
            lines.append("  examples:")
        for s in examples:
            lines.append(
                f"    {s['request']}  {s['path']}: {_value(s['primary'])} -> {_value(s['mirror'])}"
            )
        if noise:
            lines.append("  noise (differs between the two primaries too; not a regression):")
            for f in noise:
                lines.append(f"    {f['field']:<32} {f['count']:>6}  {f['rate']:>6.1%}" + _noise(f))
        lines.append("")
    for s in doc.get("sampling", []):
        skipped = {k: v for k, v in s["skipped"].items() if v}
        if skipped:
            what = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
            lines.append(
                f"not compared ({s['virtual_service']} / route {s['route']} -> {s['mirror']}): "
                f"{what} of {s['sampled']} sampled"
            )
    return "\n".join(lines).rstrip() + "\n"
