"""Noise filtering: the rule (`pymirror.compare.noise`) and the comparator with a second
primary, over plain data (no sockets, no core)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_compare_diff import pair, side

from pymirror.compare.comparator import Comparator
from pymirror.compare.noise import MIN_PAIRS, NOISE, REGRESSION, SIGMA, classify, z_score
from pymirror.compare.report import document, render_text


def test_the_rule() -> None:
    # Never seen between the two primaries: a regression, however rare.
    assert classify(1, 1000, 0, 1000) == REGRESSION
    assert classify(1, 1, 0, 0) == REGRESSION
    # Differs on every answer of both: noise, however many pairs.
    assert classify(10_000, 10_000, 10_000, 10_000) == NOISE
    # Seen in noise, clearly more often against v2: a regression, given enough pairs.
    assert classify(40, 100, 2, 100) == REGRESSION
    assert z_score(40, 100, 2, 100) >= SIGMA
    assert classify(8, 10, 1, 10) == NOISE  # too few pairs to tell
    assert MIN_PAIRS > 10
    # Somewhat more often, not significantly: noise.
    assert classify(12, 100, 8, 100) == NOISE
    assert z_score(12, 100, 8, 100) < SIGMA


def snapshot() -> dict[str, Any]:
    compare = {"per_million": 1_000_000}
    return {
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


def answer(version: str, n: int, path: str, rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"id": n, "ts": rng.random(), "star": "black"}
    if version == "v2" and path.startswith("/items"):
        body["star"] = "red"  # the real change, on /items only
    return side(body)


@pytest.mark.parametrize("noise_first", [True, False])
def test_a_timestamp_differing_everywhere_is_noise_and_a_real_change_is_not(
    noise_first: bool,
) -> None:
    rng = random.Random(3)
    comparator = Comparator()
    n = 200
    for i in range(n):
        for path in (f"/items/{i}", f"/users/{i}"):
            v1, v1b, v2 = (answer(v, i, path, rng) for v in ("v1", "v1b", "v2"))
            mirror = pair(v1, v2, path)
            noise = {**pair(v1, v1b, path), "mirror": 1}
            # Whichever the core queued first, in one batch or in two.
            if noise_first:
                comparator.feed([noise], snapshot())  # type: ignore[arg-type]
                comparator.feed([mirror], snapshot())  # type: ignore[arg-type]
            else:
                comparator.feed([mirror, noise], snapshot())  # type: ignore[arg-type]
    doc = document(comparator.store)
    by = {e["endpoint"]: e for e in doc["endpoints"]}
    items, users = by["GET /items/{id}"], by["GET /users/{id}"]
    for e in (items, users):
        assert e["second_primary"] and e["noise_compared"] == n and e["compared"] == n
        ts = next(f for f in e["fields"] if f["field"] == "$.ts")
        assert ts["class"] == "noise", ts
        assert ts["count"] == n and ts["noise_count"] == n
    star = next(f for f in items["fields"] if f["field"] == "$.star")
    assert star == {
        "field": "$.star",
        "count": n,
        "rate": 1.0,
        "class": "regression",
        "noise_count": 0,
        "noise_rate": 0.0,
        "z": star["z"],
    }
    # Results: /items mismatches on the star; /users only ever differs by noise.
    assert items["results"] == {"body_mismatch": n}
    assert users["results"] == {"noise_only": n}
    assert not any(f["class"] == "regression" for f in users["fields"])
    text = render_text(doc)
    assert "noise" in text and "$.star" in text


def test_without_a_second_primary_every_difference_is_a_regression() -> None:
    rng = random.Random(1)
    comparator = Comparator()
    snap = snapshot()
    snap["virtual_hosts"][0]["routes"][0]["mirrors"].pop()
    for i in range(30):
        p = f"/users/{i}"
        comparator.feed([pair(answer("v1", i, p, rng), answer("v2", i, p, rng), p)], snap)  # type: ignore[arg-type]
    [e] = document(comparator.store)["endpoints"]
    assert e["results"] == {"body_mismatch": 30}
    assert not e["second_primary"] and "noise_compared" not in e
    assert [f["class"] for f in e["fields"]] == ["regression"]
