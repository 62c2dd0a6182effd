"""The model's types and Istio semantics, independent of files and positions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from pymirror.config import ConfigError, load_config, model
from pymirror.config.model import (
    Config,
    HTTPRoute,
    MirrorDefaults,
    StringMatch,
    VirtualService,
    host_matches,
)
from pymirror.config.types import format_duration

V1 = {"destination": {"host": "reviews", "subset": "v1"}}
V2 = {"destination": {"host": "reviews", "subset": "v2"}}


def http(**fields: Any) -> HTTPRoute:
    return HTTPRoute.model_validate({"route": [V1], **fields})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", timedelta(seconds=10)),
        ("0.5s", timedelta(milliseconds=500)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m", timedelta(minutes=1)),
        ("1m30s", timedelta(seconds=90)),
        ("1h", timedelta(hours=1)),
        ("1ms", timedelta(milliseconds=1)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert http(timeout=text).timeout == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "must be at least 1ms (got 0ms)"),
        ("1.5ms", "must be a whole number of milliseconds (got '1.5ms')"),
        ("10", "a bare number needs a unit"),
        ("10 s", "expected a duration"),
        ("s", "expected a duration"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        http(timeout=text)


def test_duration_format() -> None:
    assert format_duration(timedelta(seconds=90)) == "90s"
    assert format_duration(timedelta(milliseconds=1500)) == "1500ms"
    assert MirrorDefaults().model_dump(mode="json")["timeout"] == "10s"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4MiB", 4 << 20), ("512KiB", 512 << 10), ("1MB", 1_000_000), ("100", 100), (0, 0), (7, 7)],
)
def test_byte_sizes(value: object, expected: int) -> None:
    assert MirrorDefaults.model_validate({"maxBodyBytes": value}).max_body_bytes == expected


@pytest.mark.parametrize("value", ["4 megs", "-1", -1, 1.5])
def test_bad_byte_sizes(value: object) -> None:
    with pytest.raises(ValidationError):
        MirrorDefaults.model_validate({"maxBodyBytes": value})


def test_host_suffix_must_be_valid_in_a_host_name() -> None:
    assert MirrorDefaults.model_validate({"hostSuffix": "-canary"}).host_suffix == "-canary"
    with pytest.raises(ConfigError) as info:
        load_config('mirrorDefaults: {hostSuffix: "/x"}\n')
    assert str(info.value) == (
        "<string>:1:30: mirrorDefaults.hostSuffix: may hold only letters, digits, `-` and `.` "
        "(got '/x')"
    )


def test_a_lone_destination_gets_every_request_whatever_its_weight() -> None:
    assert http().weights == [100]
    assert HTTPRoute.model_validate({"route": [{**V1, "weight": 0}]}).weights == [100]


def test_several_destinations_have_relative_weights_unset_as_zero() -> None:
    route = HTTPRoute.model_validate({"route": [{**V1, "weight": 3}, V2]})
    assert route.weights == [3, 0]
    route = HTTPRoute.model_validate({"route": [{**V1, "weight": 80}, {**V2, "weight": 20}]})
    assert route.weights == [80, 20]


def test_mirror_percentages_as_istio_reads_them() -> None:
    mirror = {"host": "reviews", "subset": "v2"}
    assert [p for _, p in http(mirror=mirror).mirror_policies] == [100.0]
    assert [p for _, p in http(mirror=mirror, mirrorPercent=5).mirror_policies] == [5.0]
    zero = http(mirror=mirror, mirrorPercentage={"value": 0})
    assert [p for _, p in zero.mirror_policies] == [0.0]
    several = http(mirrors=[{"destination": mirror, "percentage": {"value": 2.5}}, V2])
    assert [(d.subset, p) for d, p in several.mirror_policies] == [("v2", 2.5), ("v2", 100.0)]
    assert http().mirror_policies == []


def test_snake_case_names_are_accepted_as_protobuf_json_does() -> None:
    route = http(mirror={"host": "x"}, mirror_percentage={"value": 1.5})
    assert route.mirror_percentage is not None and route.mirror_percentage.value == 1.5


def test_models_are_frozen() -> None:
    route = http()
    with pytest.raises(ValidationError, match="frozen"):
        route.timeout = timedelta(seconds=1)


def test_string_match_kind() -> None:
    assert StringMatch(prefix="/api").kind == ("prefix", "/api")
    assert StringMatch(regex="/v[0-9]+").kind == ("regex", "/v[0-9]+")


@pytest.mark.parametrize(
    ("host", "ok"),
    [("reviews", True), ("*.example.com", True), ("*", True), ("api.*", False), ("a b", False)],
)
def test_virtual_service_host_patterns(host: str, ok: bool) -> None:
    data = {"name": "x", "hosts": [host], "http": [{"route": [V1]}]}
    if ok:
        assert VirtualService.model_validate(data).hosts == [host]
    else:
        with pytest.raises(ValidationError):
            VirtualService.model_validate(data)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("reviews", "reviews", True),
        ("reviews", "REVIEWS", True),
        ("reviews", "ratings", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*", "anything", True),
    ],
)
def test_host_matches(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


def _models() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(model).values()
        if isinstance(obj, type) and issubclass(obj, model._Model) and obj is not model._Model
    ]


@pytest.mark.parametrize("cls", _models(), ids=lambda c: c.__name__)
def test_every_field_is_documented(cls: type[BaseModel]) -> None:
    undocumented = [name for name, f in cls.model_fields.items() if not f.description]
    assert undocumented == []


def test_unsupported_lists_name_real_fields_of_no_model() -> None:
    # A field both served and listed as unsupported would be rejected by mistake.
    for cls in _models():
        aliases = {f.alias for f in cls.model_fields.values()}
        assert not aliases & getattr(cls, "unsupported", frozenset()), cls.__name__


def test_config_defaults() -> None:
    config = Config()
    assert config.listeners == [] and config.virtual_services == [] and config.admin is None
