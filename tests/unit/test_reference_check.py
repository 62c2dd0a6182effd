"""The reference check runs once per load: resolution reuses what the load found, and
checks a Config built in code (or loaded leniently, then resolved strictly) itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pymirror.config
from pymirror.check import check
from pymirror.config import ConfigError, load, load_config, references
from pymirror.config.model import Config
from pymirror.resolve import build_snapshot, describe

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "reviews.yaml"

GONE = """\
listeners: [{address: 127.0.0.1:0}]
services:
  reviews:
    endpoints: [{address: 127.0.0.1:9081}]
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - match: [{uri: {prefix: /api}}]
        delegate: {name: gone}
      - route: [{destination: {host: reviews}}]
"""
MESSAGE = "no virtual service `gone` in the files given: this entry serves nothing"


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The strictness of each reference check run."""
    calls: list[bool] = []
    original = references.check_references

    def counting(*args: Any, **kwargs: Any) -> references.References:
        calls.append(kwargs.get("strict", True))
        return original(*args, **kwargs)

    monkeypatch.setattr(references, "check_references", counting)
    monkeypatch.setattr(pymirror.config, "check_references", counting)
    return calls


def test_a_load_and_its_resolutions_check_references_once(runs: list[bool]) -> None:
    config = load_config(SEED)
    build_snapshot(config)
    build_snapshot(config, listen=["127.0.0.1:0"])
    describe(config)
    assert runs == [True]


def test_check_loads_leniently_and_resolves_without_checking_again(runs: list[bool]) -> None:
    report = check([GONE])
    assert runs == [False]
    assert [(p.severity, p.message) for p in report.problems] == [("warning", MESSAGE)]
    assert report.snapshot is not None


def test_resolution_refuses_what_the_load_found() -> None:
    loaded = load(GONE, strict=True)
    assert loaded.config is not None
    assert [(p.line, p.column, p.message) for p in loaded.errors] == [(10, 26, MESSAGE)]
    with pytest.raises(ConfigError) as caught:
        build_snapshot(loaded.config)
    assert caught.value.problems == loaded.errors


def test_a_lenient_load_resolved_strictly_is_checked_strictly(runs: list[bool]) -> None:
    config = load(GONE, strict=False).config
    assert config is not None
    build_snapshot(config, strict=False)
    with pytest.raises(ConfigError, match="serves nothing"):
        build_snapshot(config)
    assert runs == [False, True]


def test_a_config_built_in_code_is_checked_once_at_resolution(runs: list[bool]) -> None:
    config = Config.model_validate(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "virtualServices": [
                {"name": "reviews", "hosts": ["reviews"], "http": [{"delegate": {"name": "gone"}}]}
            ],
        }
    )
    for _ in range(2):
        with pytest.raises(ConfigError) as caught:
            build_snapshot(config)
        assert [p.message for p in caught.value.problems] == [MESSAGE]
    assert runs == [True]


def test_no_listener_is_a_resolution_error_not_a_load_one() -> None:
    text = GONE.replace("listeners: [{address: 127.0.0.1:0}]\n", "").replace(
        "        delegate: {name: gone}\n", "        route: [{destination: {host: reviews}}]\n"
    )
    config = load_config(text)
    with pytest.raises(ConfigError, match="no listener"):
        build_snapshot(config)
    assert build_snapshot(config, listen=["127.0.0.1:0"])["listeners"][0]["address"] == (
        "127.0.0.1:0"
    )
    assert build_snapshot(config, strict=False)["listeners"] == []
