"""Loading sources: files, folders, YAML text; YAML errors and merging, with positions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pymirror.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "reviews.yaml"

SERVICES = """\
services:
  reviews:
    endpoints:
      - {address: 127.0.0.1:9081, labels: {version: v1}}
      - {address: 127.0.0.1:9082, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
"""
LISTENERS = "listeners:\n  - address: 127.0.0.1:8080\n    host: reviews\n"
ROUTES = """\
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route:
          - destination: {host: reviews, subset: v1}
        mirror: {host: reviews, subset: v2}
        mirrorPercentage: {value: 20.0}
"""


def problems(*sources: str | Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(*sources)
    return [str(p) for p in info.value.problems]


def test_the_seed_example_loads() -> None:
    config = load_config(SEED)
    assert [(lst.address, lst.host) for lst in config.listeners] == [("127.0.0.1:8080", "reviews")]
    assert config.admin is not None and config.admin.address == "127.0.0.1:9901"
    reviews = config.services["reviews"]
    assert [e.address for e in reviews.select("v1")] == ["127.0.0.1:9081"]
    assert [e.address for e in reviews.select("v2")] == ["127.0.0.1:9082"]
    (vs,) = config.virtual_services
    assert (vs.name, vs.hosts) == ("reviews", ["reviews"])
    (route,) = vs.http
    assert route.route[0].destination.subset == "v1"
    assert [(d.host, d.subset, p) for d, p in route.mirror_policies] == [("reviews", "v2", 20.0)]
    # pymirror extensions take their documented defaults.
    assert config.mirror_defaults.max_in_flight == 1024
    assert config.mirror_defaults.timeout == timedelta(seconds=10)
    assert config.mirror_defaults.max_body_bytes == 4 * 1024 * 1024
    assert config.mirror_defaults.host_suffix == "-shadow"
    assert config.upstream.connect_timeout == timedelta(seconds=1)


def test_path_str_path_and_text_give_the_same_config() -> None:
    assert load_config(SEED) == load_config(str(SEED))
    assert load_config(SEED.read_text()).model_dump() == load_config(SEED).model_dump()


def test_folder_loads_its_yaml_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b-routes.yml").write_text(ROUTES)
    (tmp_path / "a-services.yaml").write_text(LISTENERS + SERVICES)
    (tmp_path / "c-more.yaml").write_text(
        ROUTES.replace("name: reviews", "name: other").replace("[reviews]", "[other]")
    )
    (tmp_path / "notes.txt").write_text("not: [yaml")
    (tmp_path / ".#swap.yaml").write_text("not: [yaml")
    config = load_config(tmp_path)
    assert [vs.name for vs in config.virtual_services] == ["reviews", "other"]
    assert list(config.services) == ["reviews"]


def test_errors_in_merged_files_name_their_own_file_and_index(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(LISTENERS + SERVICES + ROUTES)
    second = ROUTES.replace("name: reviews", "name: other").replace("[reviews]", "[other]")
    (tmp_path / "b.yaml").write_text(second.replace("value: 20.0", "value: 200"))
    assert problems(tmp_path) == [
        f"{tmp_path / 'b.yaml'}:8:35: virtualServices[0].http[0].mirrorPercentage.value: "
        "must be <= 100 (got 200)"
    ]


def test_a_service_or_setting_is_declared_once_across_files(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("admin: {address: 127.0.0.1:9901}\n" + SERVICES)
    b.write_text(SERVICES + "admin: {address: 127.0.0.1:9902}\n")
    assert problems(a, b) == [
        f"{b}:2:3: services.reviews: `reviews` is already declared at {a}:3:3",
        f"{b}:7:1: admin: `admin` is already set at {a}:1:1; set it in one file only",
    ]


def test_empty_files_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# nothing here\n---\n")
    message = "file is empty; expected a mapping with `listeners`, `services` and `virtualServices`"
    assert problems(tmp_path) == [
        f"{tmp_path / 'comments.yaml'}: {message}",
        f"{tmp_path / 'empty.yaml'}: {message}",
    ]


def test_missing_paths(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file or folder"]
    assert problems("routes.yaml") == ["routes.yaml: no such file or folder"]
    assert problems(tmp_path) == [f"{tmp_path}: folder holds no *.yaml or *.yml file"]


def test_duplicate_keys_are_an_error_at_the_second() -> None:
    text = "listeners: []\nadmin: {address: 127.0.0.1:9901}\nservices: {}\nlisteners: []\n"
    assert problems(text) == [
        "<string>:4:1: listeners: duplicate key `listeners` (first at line 1, column 1)"
    ]
    nested = SERVICES.replace("    subsets:", "    endpoints: []\n    subsets:")
    assert problems(nested) == [
        "<string>:6:5: services.reviews.endpoints: duplicate key `endpoints` (first at line 3, "
        "column 5)"
    ]


def test_yaml_syntax_error_has_its_position() -> None:
    (problem,) = problems("listeners:\n  - address: [127.0.0.1:8080\n")
    # The wording is libyaml's (or PyYAML's without it); the place is ours.
    assert problem.startswith("<string>:3:1: invalid YAML: ")
    assert "expected ',' or ']'" in problem


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == [
        "<string>:1:1: expected a mapping with `listeners`, `services` and `virtualServices` "
        "at the top of the file, got a list"
    ]


def test_a_native_file_holds_one_document() -> None:
    assert problems(SERVICES + "---\n" + LISTENERS) == [
        "<string>:8:1: a native config file holds one mapping; in a multi-document stream "
        "every document is a resource with `apiVersion` and `kind`"
    ]


def test_anchors_and_merge_keys() -> None:
    text = SERVICES.replace(
        "      - {address: 127.0.0.1:9082, labels: {version: v2}}\n",
        "      - &ep {address: 127.0.0.1:9082, labels: {version: v2}}\n"
        "      - {<<: *ep, address: 127.0.0.1:9083}\n",
    )
    config = load_config(text)
    assert [e.address for e in config.services["reviews"].select("v2")] == [
        "127.0.0.1:9082",
        "127.0.0.1:9083",
    ]


def test_keys_are_names_as_written() -> None:
    # YAML 1.1 would read `on` as true and `200` as a number; as keys they are names.
    text = SERVICES.replace("labels: {version: v1}", "labels: {version: v1, on: 'yes', 200: x}")
    labels = load_config(text).services["reviews"].endpoints[0].labels
    assert labels == {"version": "v1", "on": "yes", "200": "x"}


def test_unknown_yaml_tags_are_an_error() -> None:
    assert problems("listeners: !include other.yaml\n") == [
        "<string>:1:12: listeners: cannot read this value: could not determine a constructor "
        "for the tag '!include'"
    ]


def test_config_without_listener_loads_for_listen_flags() -> None:
    config = load_config(SERVICES + ROUTES)
    assert config.listeners == []
