"""Runtime overrides on a snapshot, and who may set them: plain functions, no sockets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pymirror.control import Access, refusal
from pymirror.runtime import MirrorPercentage, apply, parse_mirror_percentage

SNAPSHOT: Any = {
    "schema": 1,
    "version": "v0",
    "virtual_hosts": [
        {
            "name": "reviews",
            "routes": [
                {"name": "0", "mirrors": [{"cluster": 1, "per_million": 1_000_000},
                                          {"cluster": 2, "per_million": 500_000}]},
                {"name": "api", "mirrors": [{"cluster": 1, "per_million": 1_000_000}]},
            ],
        },
        {"name": "ratings", "routes": [{"name": "0", "mirrors": [{"cluster": 1,
                                                                   "per_million": 10}]}]},
    ],
    "clusters": [
        {"host": "reviews", "subset": "v1", "endpoints": []},
        {"host": "reviews", "subset": "v2", "endpoints": []},
        {"host": "canary", "endpoints": []},
    ],
}  # fmt: skip


def shares(snapshot: Any) -> list[list[int]]:
    return [[m["per_million"] for r in vh["routes"] for m in r["mirrors"]]
            for vh in snapshot["virtual_hosts"]]  # fmt: skip


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # Every mirror of the virtual service; another service keeps its share.
        (MirrorPercentage("reviews", None, None, 1.5), [[15_000] * 3, [10]]),
        # One route's.
        (MirrorPercentage("reviews", "api", None, 0), [[1_000_000, 500_000, 0], [10]]),
        # One destination, by host/subset or by host alone.
        (MirrorPercentage("reviews", None, "reviews/v2", 7), [[70_000, 500_000, 70_000], [10]]),
        (MirrorPercentage("reviews", "0", "canary", 100), [[1_000_000, 1_000_000, 1_000_000],
                                                           [10]]),
    ],
)  # fmt: skip
def test_an_override_sets_the_share_of_the_mirrors_it_names(
    override: MirrorPercentage, expected: list[list[int]]
) -> None:
    before = copy.deepcopy(SNAPSHOT)
    out = apply(SNAPSHOT, [override])
    assert shares(out) == expected
    assert before == SNAPSHOT, "the snapshot given is not changed"
    assert out["version"] != SNAPSHOT["version"], "the version names what runs"


def test_later_overrides_win_and_none_is_a_removal() -> None:
    first = MirrorPercentage("reviews", None, None, 50)
    second = MirrorPercentage("reviews", "api", None, 1)
    assert shares(apply(SNAPSHOT, [first, second])) == [[500_000, 500_000, 10_000], [10]]
    assert shares(apply(SNAPSHOT, [MirrorPercentage("reviews", None, None, None)])) == [
        [1_000_000, 500_000, 1_000_000], [10]]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"percentage": 1}', "`virtual_service` (a name) is required"),
        (b'{"virtual_service": "r", "percentage": true}', "must be a number"),
        (b'{"virtual_service": "r", "percentage": -1}', "from 0 to 100"),
        (b'{"virtual_service": "r", "percentage": 1e400}', "from 0 to 100"),
        (b'{"virtual_service": "r", "route": 3, "percentage": 1}', "`route` must be a string"),
    ],
)
def test_a_bad_body_says_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_mirror_percentage(body)


def test_who_may_change_anything() -> None:
    loopback, remote = Access(True, False), Access(False, True, "t" * 20)
    bearer = {b"authorization": b"Bearer " + b"t" * 20}
    assert refusal("POST", {}, loopback) is None
    assert refusal("GET", {}, loopback)[0] == 405  # type: ignore[index]
    assert refusal("POST", {b"origin": b"null"}, loopback)[0] == 403  # type: ignore[index]
    assert refusal("POST", bearer, Access(False, False, "t" * 20))[0] == 403  # type: ignore[index]
    assert refusal("POST", bearer, Access(False, True, None))[0] == 403  # type: ignore[index]
    assert refusal("POST", {}, remote)[0] == 401  # type: ignore[index]
    assert refusal("POST", bearer, remote) is None
    # A token set on loopback is asked for there too.
    assert refusal("POST", {}, Access(True, False, "t" * 20))[0] == 401  # type: ignore[index]
