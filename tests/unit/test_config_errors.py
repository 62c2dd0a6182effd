"""Validation errors name the exact file:line:col, the field, and what is wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pymirror.config import ConfigError, Problem, load_config

# The seed's listener and services; virtual services start at line 10.
SERVICES = """\
listeners:
  - address: 127.0.0.1:8080
services:
  reviews:
    endpoints:
      - {address: 127.0.0.1:9081, labels: {version: v1}}
      - {address: 127.0.0.1:9082, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
virtualServices:
"""
NO_ROUTES = SERVICES + "  []\n"

# One virtual service (lines 10-15); `route(body)` continues its first http entry at line 16,
# whose keys start at column 9.
HEAD = """\
  - name: reviews
    hosts: [reviews]
    http:
      - route:
          - destination: {host: reviews, subset: v1}
        mirror: {host: reviews, subset: v2}
"""
HTTP0 = "virtualServices[0].http[0]"


def route(body: str) -> str:
    return SERVICES + HEAD + textwrap.indent(body, " " * 8)


def problems(text: str) -> list[str]:
    """Every problem reported for ``text``, rendered; fails the test if it loads."""
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [str(p) for p in info.value.problems]


def test_base_route_is_valid() -> None:
    config = load_config(route("mirrorPercentage: {value: 20.0}\n"))
    assert config.virtual_services[0].http[0].mirror_policies[0][1] == 20.0


def test_typo_in_mirror_percentage_is_an_error_at_the_key() -> None:
    assert problems(route("mirrorPercentge: {value: 20.0}\n")) == [
        f"<string>:16:9: {HTTP0}.mirrorPercentge: unknown field `mirrorPercentge`; "
        "did you mean `mirrorPercentage`?"
    ]


def test_unknown_field_without_close_name_lists_the_fields() -> None:
    text = NO_ROUTES.replace("127.0.0.1:8080\n", "127.0.0.1:8080\n    zz: 1\n")
    assert problems(text) == [
        "<string>:3:5: listeners[0].zz: unknown field `zz`; expected one of `address`, `host`, "
        "`protocol`, `tls`, `gateway`, `httpsRedirect`"
    ]


def test_unknown_field_in_a_match_points_at_its_key() -> None:
    text = route("match:\n  - uri: {prefix: /a}\n    ignoreUriCas: true\n")
    assert problems(text) == [
        f"<string>:18:13: {HTTP0}.match[0].ignoreUriCas: unknown field `ignoreUriCas`; did you "
        "mean `ignoreUriCase`?"
    ]


def test_percentage_above_100_points_at_the_value() -> None:
    assert problems(route("mirrorPercentage:\n  value: 150.0\n")) == [
        f"<string>:17:18: {HTTP0}.mirrorPercentage.value: must be <= 100 (got 150.0)"
    ]


def test_file_name_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(route("mirrorPercentage: {value: -1}\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:16:35: {HTTP0}.mirrorPercentage.value: must be >= 0 (got -1)"
    ]
    problem = info.value.problems[0]
    assert (problem.file, problem.line, problem.column) == (str(path), 16, 35)
    assert problem.path == ("virtualServices", 0, "http", 0, "mirrorPercentage", "value")


def test_text_where_a_number_is_expected() -> None:
    assert problems(route('mirrorPercentage: {value: "20"}\n')) == [
        f"<string>:16:35: {HTTP0}.mirrorPercentage.value: expected a number, got text '20'"
    ]


def test_number_where_text_is_expected_suggests_quoting() -> None:
    text = NO_ROUTES.replace("v2: {version: v2}}", "v2: {version: 2}}")
    assert problems(text) == [
        "<string>:8:48: services.reviews.subsets.v2.version: expected text, got the number 2; "
        'quote it: "2"'
    ]


def test_missing_field_points_at_its_parent() -> None:
    text = route("mirrors:\n  - percentage: {value: 5}\n").replace(
        "        mirror: {host: reviews, subset: v2}\n", ""
    )
    assert problems(text) == [
        f"<string>:16:13: {HTTP0}.mirrors[0].destination: missing required field `destination`"
    ]


def test_mirror_and_mirrors_together() -> None:
    text = route("mirrors:\n  - destination: {host: reviews, subset: v2}\n")
    assert problems(text) == [
        f"<string>:16:9: {HTTP0}.mirrors: set `mirror` or `mirrors`, not both"
    ]


def test_percentage_without_mirror() -> None:
    text = route("mirrorPercentage: {value: 5}\n").replace(
        "        mirror: {host: reviews, subset: v2}\n", ""
    )
    assert problems(text) == [
        f"<string>:15:9: {HTTP0}.mirrorPercentage: `mirrorPercentage` without `mirror` has no "
        "effect; use `mirror`"
    ]


def test_both_percentage_fields() -> None:
    assert problems(route("mirrorPercentage: {value: 5}\nmirrorPercent: 5\n")) == [
        f"<string>:17:9: {HTTP0}.mirrorPercent: set `mirrorPercentage` or the deprecated "
        "`mirrorPercent`, not both"
    ]


def test_deprecated_mirror_percent_must_be_whole() -> None:
    assert problems(route("mirrorPercent: 2.5\n")) == [
        f"<string>:16:24: {HTTP0}.mirrorPercent: expected a whole number, got the number 2.5"
    ]


def test_weights_adding_to_zero() -> None:
    text = route("").replace(
        "          - destination: {host: reviews, subset: v1}\n",
        "          - destination: {host: reviews, subset: v1}\n"
        "          - destination: {host: reviews, subset: v2}\n",
    )
    assert problems(text) == [
        f"<string>:14:11: {HTTP0}.route: the destinations' weights add up to 0; give each its "
        "share, such as `weight: 80` and `weight: 20`"
    ]


def test_negative_weight() -> None:
    text = route("").replace("subset: v1}\n", "subset: v1}\n            weight: -5\n")
    assert problems(text) == [f"<string>:15:21: {HTTP0}.route[0].weight: must be >= 0 (got -5)"]


@pytest.mark.parametrize(
    ("match", "column", "field", "message"),
    [
        (
            "{exact: /a, prefix: /b}",
            18,
            "",
            "set only one of `exact`, `prefix` or `regex` (got `exact` and `prefix`)",
        ),
        ("{}", 18, "", "set one of `exact`, `prefix` or `regex`"),
        (
            "{regex: '/a(b'}",
            26,
            ".regex",
            "invalid regular expression: missing ), unterminated subpattern at position 2",
        ),
    ],
)
def test_string_match_kinds(match: str, column: int, field: str, message: str) -> None:
    assert problems(route(f"match:\n  - uri: {match}\n")) == [
        f"<string>:17:{column}: {HTTP0}.match[0].uri{field}: {message}"
    ]


def test_bad_header_name_points_at_the_key() -> None:
    assert problems(route("match:\n  - headers: {'end user': {exact: x}}\n")) == [
        f"<string>:17:23: {HTTP0}.match[0].headers['end user']: not a valid HTTP header "
        "name: 'end user'"
    ]


def test_duration_needs_a_unit() -> None:
    assert problems(route("timeout: 10\n")) == [
        f"<string>:16:18: {HTTP0}.timeout: expected a duration such as `10s`, `0.5s`, `500ms` "
        "or `1m` (got 10; a bare number needs a unit)"
    ]


def test_unknown_subset_points_at_the_subset() -> None:
    text = route("").replace("subset: v1}", "subset: v3}")
    assert problems(text) == [
        f"<string>:14:50: {HTTP0}.route[0].destination.subset: service `reviews` has no "
        "subset `v3` (its subsets: `v1`, `v2`)"
    ]


def test_subset_that_selects_nothing_names_subset_and_service() -> None:
    text = NO_ROUTES.replace("v2: {version: v2}}", "v2: {version: v9}}")
    assert problems(text) == [
        "<string>:8:34: services.reviews.subsets.v2: subset `v2` of service `reviews` selects "
        "no endpoint: none has all the labels {version: v9}"
    ]


def test_subset_of_a_host_resolved_by_dns() -> None:
    text = route("").replace("mirror: {host: reviews, subset: v2}", "mirror: {host: x, subset: a}")
    assert problems(text) == [
        f"<string>:15:35: {HTTP0}.mirror.subset: `x` is not declared under `services`, so it "
        "is resolved by DNS and has no subset `a`"
    ]


def test_port_on_a_declared_service() -> None:
    text = route("").replace("{host: reviews, subset: v2}", "{host: reviews, port: {number: 80}}")
    assert problems(text) == [
        f"<string>:15:33: {HTTP0}.mirror.port: `port` only applies to hosts resolved by DNS; "
        "the endpoints of service `reviews` carry their own ports"
    ]


def test_listener_default_host_that_leads_nowhere() -> None:
    text = route("").replace("127.0.0.1:8080\n", "127.0.0.1:8080\n    host: ratings\n", 1)
    assert problems(text) == [
        "<string>:3:11: listeners[0].host: no virtual service serves host `ratings` and no "
        "service has that name, so requests for it could go nowhere"
    ]


def test_listener_needs_an_ip_address() -> None:
    text = NO_ROUTES.replace("127.0.0.1:8080", "localhost:8080")
    assert problems(text) == [
        "<string>:2:14: listeners[0].address: expected an IP address and port to listen on, "
        "such as `0.0.0.0:8080` or `127.0.0.1:8080` (got 'localhost:8080')"
    ]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:0", "port must be between 1 and 65535 (got '127.0.0.1:0')"),
        ("127.0.0.1:70000", "port must be <= 65535 (got 70000)"),
        ("127.0.0.1", "expected `host:port`, such as `127.0.0.1:8080` (got '127.0.0.1')"),
        ("'::1:80'", "write IPv6 addresses in brackets, as in `[::1]:8080` (got '::1:80')"),
    ],
)
def test_endpoint_addresses(address: str, message: str) -> None:
    text = NO_ROUTES.replace("127.0.0.1:9081", address)
    assert problems(text) == [f"<string>:6:19: services.reviews.endpoints[0].address: {message}"]


def test_duplicate_virtual_service_names_and_hosts() -> None:
    one = (
        "  - name: reviews\n"
        "    hosts: [reviews]\n"
        "    http:\n"
        "      - route:\n"
        "          - destination: {host: reviews}\n"
    )
    assert problems(SERVICES + one + one) == [
        "<string>:15:11: virtualServices[1].name: virtual service `reviews` is already defined "
        "at <string>:10:11",
        "<string>:16:13: virtualServices[1].hosts[0]: host `reviews` is already served by the "
        "virtual service at <string>:11:13",
    ]


def test_duplicate_listener_address() -> None:
    text = NO_ROUTES.replace("services:", "  - address: 127.0.0.1:8080\nservices:")
    assert problems(text) == [
        "<string>:3:14: listeners[1].address: `127.0.0.1:8080` is already used at <string>:2:14"
    ]


def test_every_problem_is_reported_in_file_order() -> None:
    text = route("mirrorPercentge: 1\ntimeout: 1x\n").replace("127.0.0.1:9082", "nope")
    assert [p.split(": ")[0] for p in problems(text)] == [
        "<string>:7:19",
        "<string>:16:9",
        "<string>:17:18",
    ]


def test_problem_rendering() -> None:
    problem = Problem("a.yaml", 3, 7, ("services", "reviews.default", "endpoints", 0), "bad")
    assert str(problem) == "a.yaml:3:7: services['reviews.default'].endpoints[0]: bad"
    assert str(Problem("a.yaml", None, None, (), "no such file")) == "a.yaml: no such file"
    error = ConfigError([problem, Problem("b.yaml", 1, 1, (), "x")])
    assert str(error).splitlines() == [str(problem), "b.yaml:1:1: x"]


def test_wildcard_destination_host() -> None:
    text = route("").replace("{host: reviews, subset: v2}", '{host: "*.example.com"}')
    assert problems(text) == [
        f"<string>:15:24: {HTTP0}.mirror.host: wildcard destination hosts ('*.example.com') "
        "are valid Istio but not supported by pymirror yet"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "listeners: " + "[" * 100_000 + "]" * 100_000,
        "listeners: " + "{a: " * 5_000 + "1" + "}" * 5_000,
        "a:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(100)),
    ],
    ids=["flow-lists", "flow-maps", "block-maps"],
)
def test_nesting_past_the_limit_is_an_error_not_a_crash(text: str) -> None:
    # Composing nodes recurses in C: 100,000 levels would overflow the stack.
    with pytest.raises(ConfigError) as info:
        load_config(text)
    [problem] = info.value.problems
    # Newer libyaml builds refuse deep nesting themselves (PyYAML 6.0.4 wheels say so
    # before our own check sees the event); either way it is a placed config error.
    assert problem.message in (
        "nested deeper than 64 levels",
        "invalid YAML: exceeded maximum nesting depth",
    )
    assert problem.line is not None and problem.column is not None


def test_an_alias_chain_that_expands_exponentially_is_refused_quickly() -> None:
    # "Billion laughs": 9 levels of 10 aliases each would be 10**9 values.
    text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]\n" for n in range(1, 10)
    )
    [problem] = problems(text)
    assert "expands to more than 200,000 values" in problem


def test_aliases_within_the_budget_still_load() -> None:
    text = "x: &pair [1, 2]\ny: [*pair, *pair]\n"
    with pytest.raises(ConfigError) as error:  # not a config, but it parses whole
        load_config(text)
    assert all("expands" not in p.message for p in error.value.problems)


def test_a_forbidden_character_is_placed() -> None:
    assert problems('listeners:\n  - {address: "a\x00b"}\n') == [
        "<string>:2:17: invalid YAML: character U+0000 is not allowed"
    ]


def test_compare_body_bound_has_an_upper_limit() -> None:
    text = SERVICES + HEAD.replace(
        "        mirror: {host: reviews, subset: v2}\n",
        "        mirror: {host: reviews, subset: v2, compare: {maxBodyBytes: 17MiB}}\n",
    )
    [problem] = problems(text)
    assert problem.startswith("<string>:15:69: "), problem
    assert "maxBodyBytes" in problem and "16777216" in problem, problem


def test_mirror_drain_limit_is_read_with_units() -> None:
    config = load_config(route("") + "mirrorDefaults: {maxDrainBytes: 8KiB}\n")
    assert config.mirror_defaults.max_drain_bytes == 8 * 1024
