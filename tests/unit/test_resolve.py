"""Model -> Snapshot: indexes, per-million rates, subsets, DNS fallback, default hosts."""

from __future__ import annotations

import json
import re
import textwrap
import typing
from pathlib import Path

import pytest

from pymirror import defaults
from pymirror import snapshot as snap
from pymirror.config import ConfigError, load_config
from pymirror.resolve import build_snapshot, describe, per_million

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "reviews.yaml"

SERVICES = """\
listeners:
  - address: 127.0.0.1:8080
    host: reviews
services:
  reviews:
    endpoints:
      - {address: 127.0.0.1:9081, labels: {version: v1}}
      - {address: 127.0.0.1:9082, labels: {version: v2}}
      - {address: 127.0.0.1:9083, labels: {version: v2, zone: b}}
    subsets: {v1: {version: v1}, v2: {version: v2}, v2b: {version: v2, zone: b}}
"""


NO_OPS: snap.HeaderOps = {"set": [], "add": [], "remove": []}
ISTIO_RETRIES: snap.RetryPolicy = {
    "attempts": 2,
    "per_try_timeout_ms": None,
    "retry_on": [
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
        "503",
    ],
}


def cluster(host: str, subset: str | None, *endpoints: str) -> snap.Cluster:
    """A cluster as resolve writes it with no DestinationRule policy."""
    return {
        "host": host,
        "subset": subset,
        "endpoints": list(endpoints),
        "weights": [],
        "load_balancer": "round_robin",
        "max_requests": None,
    }


def plain_route(name: str, destinations: list[tuple[int, int]], **fields: typing.Any) -> snap.Route:
    """A route as resolve writes it: forwarding, Istio's default retries, nothing else."""
    route: snap.Route = {
        "name": name,
        "matches": [],
        "destinations": [
            {"cluster": c, "weight": w, "request_headers": NO_OPS, "response_headers": NO_OPS}
            for c, w in destinations
        ],
        "redirect": None,
        "direct_response": None,
        "timeout_ms": None,
        "retries": ISTIO_RETRIES,
        "rewrite": None,
        "fault": None,
        "request_headers": NO_OPS,
        "response_headers": NO_OPS,
        "mirrors": [],
    }
    return {**route, **fields}  # type: ignore[typeddict-item]


def build(routes: str, *, services: str = SERVICES, **kwargs: typing.Any) -> snap.Snapshot:
    return build_snapshot(load_config(services + textwrap.dedent(routes)), **kwargs)


def one_route(http: str) -> str:
    """A `reviews` virtual service with one http entry (``http``, indented as its fields)."""
    head = "virtualServices:\n  - name: reviews\n    hosts: [reviews]\n    http:\n      - "
    return head + textwrap.indent(textwrap.dedent(http), " " * 8).lstrip()


def test_seed_snapshot() -> None:
    s = build_snapshot(load_config(SEED))
    assert s["schema"] == snap.SCHEMA == 1
    assert s["listeners"] == [{"address": "127.0.0.1:8080", "default_virtual_host": 0}]
    assert s["clusters"] == [
        cluster("reviews", "v1", "127.0.0.1:9081"),
        cluster("reviews", "v2", "127.0.0.1:9082"),
    ]
    mirror: snap.Mirror = {
        "cluster": 1,
        "per_million": 200_000,
        "max_in_flight": 1024,
        "timeout_ms": 10_000,
        "max_body_bytes": 4 * 1024 * 1024,
        "max_drain_bytes": 256 * 1024,
        "host_suffix": "-shadow",
        "request_headers": NO_OPS,
        "only_idempotent": False,
        "after_primary_success": False,
        "compare": None,
    }
    assert s["virtual_hosts"] == [
        {
            "name": "reviews",
            "domains": ["reviews"],
            "routes": [plain_route("0", [(0, 100)], mirrors=[mirror])],
        }
    ]
    assert s["upstream"] == {
        "connect_timeout_ms": 1000,
        "pool_idle_timeout_ms": 60_000,
        "pool_max_idle_per_endpoint": 1024,
    }
    assert re.fullmatch(r"[0-9a-f]{12}", s["version"])
    assert json.loads(json.dumps(s)) == s


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (0.01, 100),
        (0.0001, 1),
        (0.0007, 7),  # 0.0007 * 10000 is 6.99999... in floating point
        (2.5, 25_000),
        (20, 200_000),
        (33.3333, 333_333),
        (33.33335, 333_333),  # truncated, as Istio does, not rounded
        (99.99999, 999_999),
        (100, 1_000_000),
    ],
)
def test_percentages_become_per_million(percent: float, expected: int) -> None:
    assert per_million(percent) == expected
    routes = one_route(f"""\
        route: [{{destination: {{host: reviews, subset: v1}}}}]
        mirror: {{host: reviews, subset: v2}}
        mirrorPercentage: {{value: {percent}}}
    """)
    (mirror,) = build(routes)["virtual_hosts"][0]["routes"][0]["mirrors"]
    assert mirror["per_million"] == expected


@pytest.mark.parametrize("percent", ["0", "0.00005"])
def test_a_rate_of_zero_is_no_mirror_at_all(percent: str) -> None:
    # Istio: an explicit 0 means no mirror policy; below one in a million truncates to 0.
    routes = one_route(f"""\
        route: [{{destination: {{host: reviews, subset: v1}}}}]
        mirror: {{host: reviews, subset: v2}}
        mirrorPercentage: {{value: {percent}}}
    """)
    assert build(routes)["virtual_hosts"][0]["routes"][0]["mirrors"] == []


def test_mirror_without_percentage_copies_everything_and_deprecated_percent_is_read() -> None:
    base = "route: [{destination: {host: reviews, subset: v1}}]\nmirror: {host: reviews}\n"
    route = build(one_route(base))["virtual_hosts"][0]["routes"][0]
    assert [m["per_million"] for m in route["mirrors"]] == [1_000_000]
    route = build(one_route(base + "mirrorPercent: 7\n"))["virtual_hosts"][0]["routes"][0]
    assert [m["per_million"] for m in route["mirrors"]] == [70_000]


def test_several_mirrors_each_with_its_own_rate() -> None:
    s = build(
        one_route("""\
        route: [{destination: {host: reviews, subset: v1}}]
        mirrors:
          - destination: {host: reviews, subset: v2}
            percentage: {value: 2.5}
          - destination: {host: shadow.internal, port: {number: 8080}}
    """)
    )
    mirrors = s["virtual_hosts"][0]["routes"][0]["mirrors"]
    assert [(s["clusters"][m["cluster"]], m["per_million"]) for m in mirrors] == [
        (cluster("reviews", "v2", "127.0.0.1:9082", "127.0.0.1:9083"), 25_000),
        (cluster("shadow.internal", None, "shadow.internal:8080"), 1_000_000),
    ]


def test_weights_and_cluster_deduplication() -> None:
    s = build("""\
        virtualServices:
          - name: reviews
            hosts: [reviews]
            http:
              - name: split
                route:
                  - {destination: {host: reviews, subset: v1}, weight: 80}
                  - {destination: {host: reviews, subset: v2}, weight: 20}
                mirror: {host: reviews, subset: v2b}
              - route:
                  - destination: {host: reviews, subset: v1}
                  - destination: {host: reviews}
                    weight: 1
    """)
    assert [(c["subset"], c["endpoints"]) for c in s["clusters"]] == [
        ("v1", ["127.0.0.1:9081"]),
        ("v2", ["127.0.0.1:9082", "127.0.0.1:9083"]),
        ("v2b", ["127.0.0.1:9083"]),
        (None, ["127.0.0.1:9081", "127.0.0.1:9082", "127.0.0.1:9083"]),
    ]
    split, second = s["virtual_hosts"][0]["routes"]
    assert split["name"] == "split" and second["name"] == "1"
    weights = [(d["cluster"], d["weight"]) for d in split["destinations"]]
    assert weights == [(0, 80), (1, 20)]
    assert split["mirrors"][0]["cluster"] == 2
    assert [(d["cluster"], d["weight"]) for d in second["destinations"]] == [(0, 0), (3, 1)]


def test_hosts_without_endpoints_resolve_by_dns() -> None:
    services = SERVICES + "  empty: {}\n"
    s = build(
        one_route("""\
        route:
          - {destination: {host: httpbin.org}, weight: 1}
          - {destination: {host: httpbin.org, port: {number: 8080}}, weight: 1}
          - {destination: {host: empty}, weight: 1}
          - {destination: {host: "::1"}, weight: 1}
    """),
        services=services,
    )
    assert [(c["host"], c["subset"], c["endpoints"]) for c in s["clusters"]] == [
        ("httpbin.org", None, ["httpbin.org:80"]),
        ("httpbin.org", None, ["httpbin.org:8080"]),
        ("empty", None, ["empty:80"]),
        ("::1", None, ["[::1]:80"]),
    ]


def test_matches_timeouts_and_mirror_limits() -> None:
    s = build(
        one_route("""\
        match:
          - uri: {prefix: /api}
            method: {exact: POST}
            headers: {end-user: {regex: "j.*"}}
          - uri: {exact: /health}
        route: [{destination: {host: reviews, subset: v1}}]
        timeout: 1.5s
        mirror: {host: reviews, subset: v2}
    """)
        + "mirrorDefaults: {maxInFlight: 8, timeout: 250ms, maxBodyBytes: 64KiB, "
        "hostSuffix: -canary}\nupstream: {connectTimeout: 2s}\n"
    )
    route = s["virtual_hosts"][0]["routes"][0]
    nothing: snap.RequestMatch = {
        "uri": None,
        "scheme": None,
        "method": None,
        "authority": None,
        "headers": [],
        "without_headers": [],
        "query_params": [],
        "port": None,
        "ignore_uri_case": False,
    }
    assert route["matches"] == [
        {
            **nothing,
            "uri": {"prefix": "/api"},
            "method": {"exact": "POST"},
            "headers": [{"name": "end-user", "value": {"regex": "j.*"}}],
        },
        {**nothing, "uri": {"exact": "/health"}},
    ]
    assert route["timeout_ms"] == 1500
    (mirror,) = route["mirrors"]
    assert (
        mirror["max_in_flight"],
        mirror["timeout_ms"],
        mirror["max_body_bytes"],
        mirror["host_suffix"],
    ) == (8, 250, 64 * 1024, "-canary")
    assert s["upstream"]["connect_timeout_ms"] == 2000


VS = """\
virtualServices:
  - name: exact
    hosts: [reviews.example.com]
    http: [{route: [{destination: {host: reviews, subset: v1}}]}]
  - name: wild
    hosts: ["*.example.com"]
    http: [{route: [{destination: {host: reviews, subset: v2}}]}]
  - name: all
    hosts: ["*"]
    http: [{route: [{destination: {host: reviews}}]}]
"""


@pytest.mark.parametrize(
    ("host", "index"),
    [("reviews.example.com", 0), ("REVIEWS.example.com", 0), ("api.example.com", 1), ("other", 2)],
)
def test_listener_default_host_picks_the_most_specific_virtual_host(host: str, index: int) -> None:
    services = SERVICES.replace("host: reviews", f"host: {host}")
    assert build(VS, services=services)["listeners"][0]["default_virtual_host"] == index


def test_default_host_naming_a_service_gets_an_implicit_virtual_host() -> None:
    s = build("virtualServices: []\n")
    assert s["listeners"] == [{"address": "127.0.0.1:8080", "default_virtual_host": 0}]
    assert s["virtual_hosts"] == [
        {"name": "reviews", "domains": ["reviews"], "routes": [plain_route("0", [(0, 100)])]}
    ]
    assert s["clusters"][0]["endpoints"] == ["127.0.0.1:9081", "127.0.0.1:9082", "127.0.0.1:9083"]


def test_listener_without_host_has_no_default() -> None:
    s = build("virtualServices: []\n", services=SERVICES.replace("    host: reviews\n", ""))
    assert s["listeners"] == [{"address": "127.0.0.1:8080", "default_virtual_host": None}]
    assert s["virtual_hosts"] == []


def test_listen_replaces_addresses_and_keeps_the_default_host() -> None:
    s = build_snapshot(load_config(SEED), listen=["127.0.0.1:0", "[::1]:0"])
    assert s["listeners"] == [
        {"address": "127.0.0.1:0", "default_virtual_host": 0},
        {"address": "[::1]:0", "default_virtual_host": 0},
    ]


def test_bad_listen_address() -> None:
    with pytest.raises(ConfigError) as info:
        build_snapshot(load_config(SEED), listen=["localhost:80"])
    assert str(info.value) == (
        "--listen: expected an IP address and port to listen on, such as `0.0.0.0:8080` or "
        "`127.0.0.1:8080` (got 'localhost:80')"
    )


def test_no_listener_at_all_is_an_error_at_build_time(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "# routes only: listeners come from --listen\n"
        + SERVICES.split("services:")[1].join(["services:", ""])
        + "virtualServices: []\n"
    )
    config = load_config(path)
    assert config.listeners == []
    s = build_snapshot(config, listen=["127.0.0.1:0"])
    assert s["listeners"] == [{"address": "127.0.0.1:0", "default_virtual_host": None}]
    assert describe(config, listen=["127.0.0.1:0"])[0] == "listener 127.0.0.1:0"
    with pytest.raises(ConfigError) as info:
        build_snapshot(config)
    assert str(info.value) == (
        f"{path}:2:1: listeners: no listener: add `listeners: [{{address: 0.0.0.0:8080}}]` or "
        "pass `--listen`"
    )


def test_version_follows_content_only() -> None:
    text = SEED.read_text()
    a = build_snapshot(load_config(SEED))["version"]
    assert build_snapshot(load_config(text))["version"] == a
    assert build_snapshot(load_config(text.replace("# The seed", "# Not the seed")))["version"] == a
    changed = build_snapshot(load_config(text.replace("value: 20.0", "value: 2.5")))["version"]
    assert changed != a


def test_describe_the_seed() -> None:
    assert describe(load_config(SEED)) == [
        "listener 127.0.0.1:8080 (default host reviews)",
        "  serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)",
        "admin 127.0.0.1:9901",
        "upstream reviews v1 (127.0.0.1:9081): http1 (default)",
        "upstream reviews v2 (127.0.0.1:9082): http1 (default)",
        "reviews/0: * -> reviews v1 (127.0.0.1:9081); mirror 20% -> reviews v2 (127.0.0.1:9082)",
    ]


def test_describe_matches_weights_and_timeouts() -> None:
    lines = describe(
        load_config(
            SERVICES
            + textwrap.dedent(
                one_route("""\
        name: api
        match:
          - {method: {exact: GET}, uri: {prefix: /api/}, headers: {end-user: {exact: jason}}}
          - uri: {regex: "/v[0-9]+"}
        route:
          - {destination: {host: reviews, subset: v1}, weight: 3}
          - {destination: {host: reviews, subset: v2}, weight: 1}
        timeout: 2s
        mirror: {host: reviews, subset: v2b}
        mirrorPercentage: {value: 0.01}
    """)
            )
        )
    )
    assert lines[-1] == (
        "reviews/api: GET /api/* end-user=jason or uri~/v[0-9]+ -> "
        "reviews v1 (127.0.0.1:9081) 75%, reviews v2 (127.0.0.1:9082, 127.0.0.1:9083) 25%; "
        "timeout 2s; mirror 0.01% -> reviews v2b (127.0.0.1:9083)"
    )


# === the contract with native/src/snapshot/ (the types, and `defaults.rs`) ===

RUST = "\n".join(p.read_text() for p in sorted((ROOT / "native" / "src" / "snapshot").glob("*.rs")))


def _rust_structs() -> dict[str, set[str]]:
    structs = {}
    for name, body in re.findall(r"pub struct (\w+) \{(.*?)\n\}", RUST, re.S):
        structs[name] = set(re.findall(r"^\s*pub (\w+):", body, re.M))
    return structs


@pytest.mark.parametrize("name", sorted(_rust_structs()))
def test_typed_dicts_mirror_the_rust_structs(name: str) -> None:
    typed = getattr(snap, name)
    assert set(typing.get_type_hints(typed)) == _rust_structs()[name]


def test_string_match_variants_and_defaults_mirror_the_rust_ones() -> None:
    variants = re.search(r"pub enum StringMatch \{(.*?)\}", RUST, re.S)
    assert variants is not None
    assert {v.lower() for v in re.findall(r"(\w+)\(String\)", variants[1])} == set(
        typing.get_type_hints(snap.StringMatch)
    )
    assert int(re.search(r"pub const SCHEMA: u32 = (\d+);", RUST)[1]) == snap.SCHEMA  # type: ignore[index]
    rust = dict(re.findall(r"pub fn (\w+)\(\) -> \w+ \{\s*(.*?)\s*\}", RUST, re.S))
    assert rust == {
        "mirror_max_in_flight": str(defaults.MIRROR_MAX_IN_FLIGHT),
        "mirror_timeout_ms": "10_000",
        "mirror_max_body_bytes": "4 * 1024 * 1024",
        "mirror_max_drain_bytes": "256 * 1024",
        "mirror_host_suffix": f'"{defaults.MIRROR_HOST_SUFFIX}".to_owned()',
        "connect_timeout_ms": "1_000",
        "pool_idle_timeout_ms": "60_000",
        "pool_max_idle_per_endpoint": str(defaults.POOL_MAX_IDLE_PER_ENDPOINT),
        "redirect_code": str(defaults.REDIRECT_CODE),
        "max_request_headers": str(defaults.MAX_REQUEST_HEADERS),
        "idle_timeout_ms": "60_000",
        "max_connections": "10_000",
        "consecutive_5xx": str(defaults.CONSECUTIVE_5XX),
        "outlier_interval_ms": "10_000",
        "base_ejection_time_ms": "30_000",
        "max_ejection_percent": str(defaults.MAX_EJECTION_PERCENT),
        "compare_max_body_bytes": "64 * 1024",
        "http2_max_concurrent_streams": str(defaults.HTTP2_MAX_CONCURRENT_STREAMS),
        "http2_initial_stream_window_bytes": "256 * 1024",
        "http2_initial_connection_window_bytes": "1024 * 1024",
        "http2_max_header_list_bytes": "64 * 1024",
        "http2_max_pending_accept_reset_streams": str(
            defaults.HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS
        ),
        "http2_max_local_error_reset_streams": str(defaults.HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS),
        "upstream_max_concurrent_streams": str(defaults.UPSTREAM_MAX_CONCURRENT_STREAMS),
        "retry_buffer_bytes": "64 * 1024",
    }
    assert defaults.RETRY_BUFFER_BYTES == 64 * 1024
    assert defaults.HTTP2_INITIAL_STREAM_WINDOW_BYTES == 256 * 1024
    assert defaults.HTTP2_INITIAL_CONNECTION_WINDOW_BYTES == 1024 * 1024
    assert defaults.HTTP2_MAX_HEADER_LIST_BYTES == 64 * 1024
    assert defaults.COMPARE_MAX_BODY_BYTES == 64 * 1024
    assert (defaults.IDLE_TIMEOUT_MS, defaults.MAX_CONNECTIONS) == (60_000, 10_000)
    assert (defaults.OUTLIER_INTERVAL_MS, defaults.BASE_EJECTION_TIME_MS) == (10_000, 30_000)
    assert (defaults.MIRROR_TIMEOUT_MS, defaults.MIRROR_MAX_BODY_BYTES) == (10_000, 4 * 1024 * 1024)
    assert (defaults.CONNECT_TIMEOUT_MS, defaults.POOL_IDLE_TIMEOUT_MS) == (1_000, 60_000)


def test_the_native_core_accepts_the_snapshots() -> None:
    native = pytest.importorskip("pymirror._native")
    for config in (load_config(SEED), load_config(SERVICES + VS)):
        native.validate(json.dumps(build_snapshot(config)))
