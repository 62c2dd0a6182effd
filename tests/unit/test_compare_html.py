"""The HTML comparison report, rendered from known figures and loaded in headless
Chromium (Debian's `chromium`; CI installs it): the charts must be SVG elements the
browser lays out, and the numbers must be the injected ones."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_compare_diff import pair, side

from pymirror.compare.comparator import Comparator
from pymirror.compare.html import render_html
from pymirror.compare.report import document

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

N = 100
CHANGED = 10  # /items answers whose star v2 paints red: 10.0%
P_MS, M_MS = 10, 40  # every primary answer takes 10 ms, every mirror one 40 ms


def figures() -> dict[str, Any]:
    rng = random.Random(5)
    compare = {"per_million": 1_000_000}
    snap: Any = {
        "virtual_hosts": [
            {
                "name": "shop",
                "routes": [
                    {
                        "name": "0",
                        "mirrors": [
                            {"cluster": 1, "per_million": 1_000_000, "compare": compare},
                            {
                                "cluster": 2,
                                "per_million": 1_000_000,
                                "compare": {**compare, "noise_for": 0},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    comparator = Comparator()
    for i in range(N):
        for kind in ("items", "users"):
            path = f"/{kind}/{i}"

            def body(star: str = "black", i: int = i) -> dict[str, Any]:
                return {"id": i, "ts": rng.random(), "star": star}

            red = kind == "items" and i < CHANGED
            v1 = side(body(), latency=P_MS / 1000)
            v1b = side(body(), latency=P_MS / 1000)
            v2 = side(body("red" if red else "black"), latency=M_MS / 1000)
            status = 503 if kind == "users" and i % 4 == 0 else 200
            v2["status"] = status
            comparator.feed([{**pair(v1, v1b, path), "mirror": 1}, pair(v1, v2, path)], snap)
    return document(comparator.store)


def test_the_page_has_the_figures_without_a_browser() -> None:
    page = render_html(figures())
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert page.count('<svg class="chart latency"') == 2
    assert 'data-endpoint="GET /items/{id}" data-rate="0.1000"' in page


class _Dom(HTMLParser):
    """What the test needs of the DOM Chromium dumped: SVG charts and text."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict[str, str | None]] = []
        self.bars: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append(a)
        if tag == "g" and a.get("class") == "bar":
            self.bars.append(a)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs Debian's)")
def test_the_report_in_headless_chromium(tmp_path: Path) -> None:
    page = render_html(figures())
    # The report has no script; this test adds one, to have the browser write what it
    # laid out (each chart's rendered size) into the DOM it dumps.
    probe = """<script>
      for (const svg of document.querySelectorAll("svg.chart")) {
        const box = svg.getBoundingClientRect();
        svg.setAttribute("data-laid-out", `${Math.round(box.width)}x${Math.round(box.height)}`);
        svg.setAttribute("data-shapes", svg.querySelectorAll("rect").length);
      }
    </script>"""
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    parsed = _Dom()
    parsed.feed(dom)
    charts = [s for s in parsed.svgs if "chart" in (s.get("class") or "")]
    kinds = sorted(s["class"] or "" for s in charts)
    assert kinds == ["chart latency", "chart latency", "chart mismatch-rate"], kinds
    for s in charts:
        w, h = map(int, (s["data-laid-out"] or "0x0").split("x"))
        assert w > 300 and h > 50, s  # laid out, not collapsed
        assert int(s["data-shapes"] or 0) >= 4, s
    # The injected figures: /items 10% mismatched (the star), /users 25% (the 503s).
    rates = {b["data-endpoint"]: float(b["data-rate"] or -1) for b in parsed.bars}
    assert rates == {"GET /items/{id}": 0.10, "GET /users/{id}": 0.25}
    text = " ".join(parsed.text)
    assert "10.0%" in text and "25.0%" in text
    assert f"p50 {P_MS:.1f} ms" in text and f"p50 {M_MS:.1f} ms" in text
    assert re.search(r"status agreement\s+75\.0%", text), text
    assert "$.star" in text and "$.ts" in text
    # /users' only body difference is noise, shown apart from the regressions.
    assert re.search(r"\$\.ts\s+noise", text)
