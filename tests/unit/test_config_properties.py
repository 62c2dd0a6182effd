"""Property tests of the config loader: any YAML text loads to a valid model or raises
`ConfigError` naming the place, never another exception, never a hang.

Inputs are valid native `routes.yaml` and Istio resource streams, then mutated: values
of the wrong type, unknown keys, out-of-range numbers, odd strings, deep nesting, edits
to the text itself; and raw text. The `ci` profile (the default) is derandomized, so a
run is reproducible; `PYMIRROR_HYPOTHESIS_PROFILE=dev` explores with random seeds and
more examples.

Generated nesting stays within 150 levels and aliases to a handful of copies, where the
text generator itself is quick; the hostile extremes (100,000 levels of nesting, alias
chains that expand exponentially) have their own tests in test_config_errors.py.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pymirror.config import Config, ConfigError, load_config

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    # No `explain` phase: it is slow, and its report trips `filterwarnings = error`.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
settings.register_profile(
    "dev",
    max_examples=1000,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
# Hypothesis' failure report reads attributes of every loaded module, mypy_extensions'
# deprecated TypedDict among them: without this, a failure shows as INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)
PROFILE = settings.get_profile(os.environ.get("PYMIRROR_HYPOTHESIS_PROFILE", "ci"))

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# ------------------------------------------------------------------------- scalars

names = st.from_regex(r"[a-z](?:[a-z0-9-]{0,7}[a-z0-9])?", fullmatch=True)  # DNS labels
ODD = [
    "",
    " ",
    "*",
    "*.",
    "*.example.com",
    "..",
    "a" * 300,
    "é",
    "\u202e",
    "0x10",
    "1e9",
    "null",
    "~",
    "yes",
    "NaN",
    "127.0.0.1:99999",
    "127.0.0.1:-1",
    "[::1]:80",
    "reviews:8080-shadow",
    "$(rm -rf /)",
    "%00",
    "\t",
    "a\nb",
    "(",
    "(?=x)",
    "1.5h",
    "-1s",
    "0s",
    "10",
    "END-USER",
]
odd_strings = st.one_of(st.sampled_from(ODD), st.text(max_size=12))
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 100, 101, 100.0001, -0.0001, 2**32, 2**64, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_strings)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(odd_strings, inner, max_size=3)
    ),
    max_leaves=8,
)

# ----------------------------------------------------------------- valid shapes


def _address(port: int) -> str:
    return f"127.0.0.1:{port}"


@st.composite
def string_match(draw: st.DrawFn) -> dict[str, str]:
    kind = draw(st.sampled_from(["exact", "prefix", "regex"]))
    value = draw(st.sampled_from(["/", "/api", "/reviews/[0-9]+", "jason", ".*"]))
    return {kind: value}


@st.composite
def http_route(draw: st.DrawFn, services: dict[str, list[str]]) -> dict[str, Any]:
    service = draw(st.sampled_from(sorted(services)))
    subsets = services[service]
    route: dict[str, Any] = {}
    if draw(st.booleans()):
        route["name"] = draw(names)
    if draw(st.booleans()):
        match: dict[str, Any] = {"uri": draw(string_match())}
        if draw(st.booleans()):
            match["headers"] = {"end-user": draw(string_match())}
        if draw(st.booleans()):
            match["method"] = {"exact": draw(st.sampled_from(["GET", "POST"]))}
        route["match"] = [match]
    destinations = []
    for _ in range(draw(st.integers(1, 3))):
        dest: dict[str, Any] = {"destination": {"host": service}}
        if subsets and draw(st.booleans()):
            dest["destination"]["subset"] = draw(st.sampled_from(subsets))
        destinations.append(dest)
    if len(destinations) > 1:
        weights = draw(st.lists(st.integers(0, 100), min_size=len(destinations)))
        weights[0] = weights[0] or 1  # Istio: weights that add up to 0 are an error
        for dest, weight in zip(destinations, weights, strict=False):
            dest["weight"] = weight
    route["route"] = destinations
    if draw(st.booleans()):
        mirror: dict[str, Any] = {"host": service}
        if subsets:
            mirror["subset"] = draw(st.sampled_from(subsets))
        route["mirror"] = mirror
        if draw(st.booleans()):
            route["mirrorPercentage"] = {"value": draw(st.floats(0, 100))}
    if draw(st.booleans()):
        route["timeout"] = draw(st.sampled_from(["1s", "250ms", "0.5s", "1m"]))
    if draw(st.booleans()):
        route["retries"] = {"attempts": draw(st.integers(1, 5)), "perTryTimeout": "1s"}
    return route


@st.composite
def services(draw: st.DrawFn) -> dict[str, list[str]]:
    """Service name -> its subset names."""
    found = draw(
        st.dictionaries(names, st.lists(names, max_size=3, unique=True), min_size=1, max_size=3)
    )
    return {name: subsets for name, subsets in found.items()}


@st.composite
def native_config(draw: st.DrawFn) -> list[Any]:
    catalog = draw(services())
    ports = st.integers(1024, 65535)
    service_section = {}
    for name, subsets in catalog.items():
        endpoints = [
            {"address": _address(draw(ports)), "labels": {"version": subset}}
            for subset in subsets or ["v1"]
        ]
        service_section[name] = {
            "endpoints": endpoints,
            "subsets": {subset: {"version": subset} for subset in subsets},
        }
    config: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:0", "host": draw(st.sampled_from(sorted(catalog)))}],
        "services": service_section,
        "virtualServices": [
            {
                "name": name,
                "hosts": [name],
                "http": draw(st.lists(http_route(catalog), min_size=1, max_size=3)),
            }
            for name in catalog
        ],
    }
    if draw(st.booleans()):
        config["mirrorDefaults"] = {
            "maxInFlight": draw(st.integers(1, 2048)),
            "timeout": draw(st.sampled_from(["1s", "200ms"])),
            "maxBodyBytes": draw(st.sampled_from([1024, "4MiB"])),
        }
    if draw(st.booleans()):
        config["admin"] = {"address": "127.0.0.1:0"}
    return [config]


@st.composite
def istio_resources(draw: st.DrawFn) -> list[Any]:
    catalog = draw(services())
    api = st.sampled_from(
        ["networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1"]
    )
    docs: list[Any] = [
        {
            "apiVersion": "pymirror.dev/v1alpha1",
            "kind": "MirrorProxy",
            "metadata": {"name": "proxy"},
            "spec": {"listeners": [{"address": "127.0.0.1:0"}]},
        }
    ]
    for name, subsets in catalog.items():
        docs.append(
            {
                "apiVersion": draw(api),
                "kind": "ServiceEntry",
                "metadata": {"name": name},
                "spec": {
                    "hosts": [name],
                    "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                    "resolution": "STATIC",
                    "endpoints": [
                        {
                            "address": "127.0.0.1",
                            "ports": {"http": draw(st.integers(1024, 65535))},
                            "labels": {"version": subset},
                        }
                        for subset in subsets or ["v1"]
                    ],
                },
            }
        )
        if subsets:
            docs.append(
                {
                    "apiVersion": draw(api),
                    "kind": "DestinationRule",
                    "metadata": {"name": name},
                    "spec": {
                        "host": name,
                        "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
                    },
                }
            )
        docs.append(
            {
                "apiVersion": draw(api),
                "kind": "VirtualService",
                "metadata": {"name": name},
                "spec": {
                    "hosts": [name],
                    "http": draw(st.lists(http_route(catalog), min_size=1, max_size=3)),
                },
            }
        )
    return draw(st.permutations(docs))


# -------------------------------------------------------------------- mutations


def _paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*here, i))
    return found


def _nest(value: Any, depth: int, in_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if in_list else {"x": value}
    return value


@st.composite
def mutated(draw: st.DrawFn, documents: list[Any]) -> list[Any]:
    """Applies a few structural mutations at random places of the documents."""
    docs: Any = documents
    for _ in range(draw(st.integers(0, 4))):
        places = _paths(docs)[1:]
        if not places:
            break
        path = draw(st.sampled_from(places))
        *parent_path, last = path
        parent = docs
        for part in parent_path:
            parent = parent[part]
        kind = draw(
            st.sampled_from(["replace", "delete", "unknown-key", "nest", "typo", "duplicate"])
        )
        if kind == "replace":
            parent[last] = draw(anything)
        elif kind == "delete":
            del parent[last]
        elif kind == "unknown-key" and isinstance(parent[last], dict):
            parent[last][draw(st.one_of(odd_strings, st.sampled_from(["mirrorPercentge"])))] = draw(
                scalars
            )
        elif kind == "nest":
            # Kept shallow for the generator's speed (module docstring).
            parent[last] = _nest(parent[last], draw(st.integers(1, 150)), draw(st.booleans()))
        elif kind == "typo" and isinstance(parent, dict) and isinstance(last, str) and last:
            i = draw(st.integers(0, len(last) - 1))
            parent[last[:i] + last[i + 1 :] or "_"] = parent.pop(last)
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(parent[last])
    return list(docs) if isinstance(docs, list) else [docs]


def dump(documents: list[Any], flow: bool | None, unicode: bool) -> str:
    return str(
        yaml.dump_all(
            documents,
            Dumper=_Dumper,
            default_flow_style=flow,
            allow_unicode=unicode,
            sort_keys=False,
            width=10_000,
        )
    )


YAML_BITS = [":", "- ", "[", "]", "{", "}", "&a ", "*a", "<<: ", "!!str ", "!!binary ", "|", ">"]
YAML_BITS += ["'", '"', "#", "\n", "  ", "\t", "---\n", "...\n", "%YAML 1.1\n", "? ", "\\", "\x00"]


@st.composite
def text_edits(draw: st.DrawFn, text: str) -> str:
    """A few edits of the text itself: insertions, deletions, truncation, re-indenting."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "truncate", "indent", "swap-lines"]))
        if kind == "insert":
            bit = draw(st.one_of(st.sampled_from(YAML_BITS), st.text(max_size=4)))
            text = text[:at] + bit + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif kind == "truncate":
            text = text[:at]
        elif kind == "indent":
            lines = text.split("\n")
            i = draw(st.integers(0, max(len(lines) - 1, 0)))
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
            text = "\n".join(lines)
        else:
            lines = text.split("\n")
            if len(lines) > 1:
                i = draw(st.integers(0, len(lines) - 2))
                lines[i], lines[i + 1] = lines[i + 1], lines[i]
            text = "\n".join(lines)
    return text


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    documents = draw(st.one_of(native_config(), istio_resources()))
    documents = draw(mutated(documents))
    text = dump(documents, draw(st.sampled_from([None, True, False])), draw(st.booleans()))
    return draw(text_edits(text))


raw_texts = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from([*YAML_BITS, "listeners", "services", "http", "reviews", "a", "0"]),
        max_size=40,
    ).map("".join),
)

# ------------------------------------------------------------------- the promise


def check_promise(text: str) -> Config | ConfigError:
    """Loads `text` and checks the promise; returns what came out."""
    try:
        config = load_config(text)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError lists at least one problem"
        for problem in exc.problems:
            assert problem.file == "<string>", problem
            assert problem.message, problem
            assert (problem.line is None) == (problem.column is None), problem
            if problem.line is not None:
                assert problem.line >= 1 and problem.column is not None and problem.column >= 1
                assert problem.line <= text.count("\n") + 2, (problem, text)
        if _has_position(text):
            placed = [p for p in exc.problems if p.line is not None]
            assert placed, f"no problem names a line although the input has one: {exc}"
        return exc
    assert isinstance(config, Config)
    return config


def _has_position(text: str) -> bool:
    """Whether the input has a place an error can point at: it parses as YAML and holds
    at least one document that is not null (an unparsable text's error carries the parser's
    mark, checked above when present; PyYAML's reader errors carry none)."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError):
        return False
    return any(node is not None and node.tag != _NULL for node in nodes)


_NULL = "tag:yaml.org,2002:null"


@pytest.mark.timeout(60)
@settings(PROFILE)
@given(yaml_texts())
def test_generated_configs_load_or_fail_with_a_place(text: str) -> None:
    check_promise(text)


@pytest.mark.timeout(60)
@settings(PROFILE)
@given(raw_texts)
def test_raw_text_loads_or_fails_with_a_place(text: str) -> None:
    check_promise(text)


@pytest.mark.timeout(60)
@settings(PROFILE)
@given(st.one_of(native_config(), istio_resources()), st.sampled_from([None, True, False]))
def test_valid_shapes_load(documents: list[Any], flow: bool | None) -> None:
    """The unmutated generators are valid configurations (or the mutations test little)."""
    outcome = check_promise(dump(documents, flow, unicode=True))
    assert isinstance(outcome, Config), str(outcome)
