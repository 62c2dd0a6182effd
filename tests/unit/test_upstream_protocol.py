"""A destination's upstream protocol, decided as Istio decides it: `useClientProtocol`,
else the service port's protocol (written, else its name), else `h2UpgradePolicy:
UPGRADE`, else HTTP/1.1; from the connection pool in effect for its subset and port. The
Snapshot carries `protocol`, `max_requests_per_connection` and `max_concurrent_streams`
only where they are not the core's defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pymirror.config import load_config
from pymirror.config.upstreams import named_protocol
from pymirror.resolve import build_snapshot

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "reviews.yaml"


def native(ports: str, policy: str = "", subset_policy: str = "", port: int | None = None) -> str:
    """One service with subsets v1 and v2, routed to v1 and mirrored to v2 (at ``port``)."""
    selector = f", port: {{number: {port}}}" if port else ""
    text = f"""\
listeners: [{{address: 127.0.0.1:8080}}]
services:
  reviews:
    ports: {ports}
    endpoints:
      - {{address: 127.0.0.1, labels: {{version: v1}}}}
      - {{address: 127.0.0.2, labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
"""
    if policy:
        text += f"    trafficPolicy: {policy}\n"
    if subset_policy:
        text += f"    subsetPolicies: {{v2: {subset_policy}}}\n"
    return (
        text
        + f"""\
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews, subset: v1{selector}}}}}]
        mirror: {{host: reviews, subset: v2{selector}}}
"""
    )


def protocols(text: str) -> dict[str, str | None]:
    """Each cluster's `protocol` key (None: absent), by subset."""
    s = build_snapshot(load_config(text))
    return {str(c["subset"]): c.get("protocol") for c in s["clusters"]}


def pool(http: str) -> str:
    return f"{{connectionPool: {{http: {http}}}}}"


HTTP = "[{number: 9080, name: http}]"


# === the default ===


def test_the_seed_keeps_its_clusters_exactly() -> None:
    s = build_snapshot(load_config(SEED))
    assert s["clusters"] == [
        {
            "host": "reviews",
            "subset": "v1",
            "endpoints": ["127.0.0.1:9081"],
            "weights": [],
            "load_balancer": "round_robin",
            "max_requests": None,
        },
        {
            "host": "reviews",
            "subset": "v2",
            "endpoints": ["127.0.0.1:9082"],
            "weights": [],
            "load_balancer": "round_robin",
            "max_requests": None,
        },
    ]


def test_a_host_resolved_by_dns_is_http1() -> None:
    text = """\
listeners: [{address: 127.0.0.1:8080}]
virtualServices:
  - {name: api, hosts: [api], http: [{route: [{destination: {host: api.example}}]}]}
"""
    [cluster] = build_snapshot(load_config(text))["clusters"]
    assert cluster == {
        "host": "api.example",
        "subset": None,
        "endpoints": ["api.example:80"],
        "weights": [],
        "load_balancer": "round_robin",
        "max_requests": None,
    }


# === the service port's protocol ===


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("GRPC", "http2"),
        ("grpc", "http2"),
        ("GRPC-WEB", "http2"),
        ("HTTP2", "http2"),
        ("Http2", "http2"),
        ("HTTP", None),
        ("HTTPS", None),
        ("TCP", None),
        ("TLS", None),
    ],
)
def test_a_written_port_protocol(protocol: str, expected: str | None) -> None:
    text = native(f"[{{number: 9080, name: web, protocol: {protocol}}}]")
    assert protocols(text) == {"v1": expected, "v2": expected}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grpc", "GRPC"),
        ("grpc-api", "GRPC"),
        ("GRPC-api", "GRPC"),
        ("grpc-web", "GRPC-WEB"),
        ("grpc-web-ui", "GRPC-WEB"),
        ("http2", "HTTP2"),
        ("http2-api", "HTTP2"),
        ("http", "HTTP"),
        ("http-grpc", "HTTP"),
        ("grpcx", "GRPCX"),
        ("tcp-grpc", "TCP"),
    ],
)
def test_port_names_are_read_as_istio_reads_them(name: str, expected: str) -> None:
    assert named_protocol(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grpc", "http2"),
        ("grpc-api", "http2"),
        ("grpc-web", "http2"),
        ("grpc-web-ui", "http2"),
        ("http2-api", "http2"),
        ("http", None),
        ("http-grpc", None),
        ("grpcx", None),
        ("web", None),
    ],
)
def test_a_port_without_protocol_is_read_by_its_name(name: str, expected: str | None) -> None:
    assert protocols(native(f"[{{number: 9080, name: {name}}}]")) == {
        "v1": expected,
        "v2": expected,
    }


def test_a_written_protocol_wins_over_the_name() -> None:
    assert protocols(native("[{number: 9080, name: grpc-api, protocol: HTTP}]")) == {
        "v1": None,
        "v2": None,
    }


def test_the_destination_port_picks_which_port_decides() -> None:
    ports = "[{number: 9080, name: http}, {number: 9090, name: grpc}]"
    assert protocols(native(ports, port=9090)) == {"v1": "http2", "v2": "http2"}
    assert protocols(native(ports, port=9080)) == {"v1": None, "v2": None}


# === the order: useClientProtocol, the port, h2UpgradePolicy ===


def test_use_client_protocol_comes_first() -> None:
    grpc = "[{number: 9080, name: api, protocol: GRPC}]"
    both = pool("{useClientProtocol: true, h2UpgradePolicy: UPGRADE}")
    assert protocols(native(grpc, both)) == {"v1": "client", "v2": "client"}
    off = pool("{useClientProtocol: false}")
    assert protocols(native(grpc, off)) == {"v1": "http2", "v2": "http2"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("UPGRADE", "http2"),
        ("DO_NOT_UPGRADE", None),
        ("DEFAULT", None),
    ],
)
def test_h2_upgrade_policy(policy: str, expected: str | None) -> None:
    text = native(HTTP, pool(f"{{h2UpgradePolicy: {policy}}}"))
    assert protocols(text) == {"v1": expected, "v2": expected}


def test_do_not_upgrade_does_not_undo_an_http2_port() -> None:
    text = native("[{number: 9080, name: grpc}]", pool("{h2UpgradePolicy: DO_NOT_UPGRADE}"))
    assert protocols(text) == {"v1": "http2", "v2": "http2"}


# === which policy is in effect: subset, port-level settings ===


def test_a_subset_connection_pool_replaces_the_services_whole() -> None:
    text = native(
        HTTP,
        pool("{useClientProtocol: true}"),
        pool("{h2UpgradePolicy: UPGRADE}"),
    )
    assert protocols(text) == {"v1": "client", "v2": "http2"}
    # A subset policy without a connectionPool keeps the service's.
    text = native(HTTP, pool("{useClientProtocol: true}"), "{loadBalancer: {simple: RANDOM}}")
    assert protocols(text) == {"v1": "client", "v2": "client"}
    # One that has a connection pool without these fields turns them off.
    text = native(HTTP, pool("{useClientProtocol: true}"), pool("{maxConcurrentStreams: 5}"))
    assert protocols(text) == {"v1": "client", "v2": None}


def test_port_level_settings_apply_to_their_port_only() -> None:
    ports = "[{number: 9080, name: http}, {number: 9090, name: other}]"
    policy = (
        "{connectionPool: {http: {useClientProtocol: true}}, portLevelSettings: "
        "[{port: {number: 9090}, connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}]}"
    )
    assert protocols(native(ports, policy, port=9090)) == {"v1": "http2", "v2": "http2"}
    assert protocols(native(ports, policy, port=9080)) == {"v1": "client", "v2": "client"}


def test_a_port_entry_replaces_the_four_parts_whole() -> None:
    policy = (
        "{loadBalancer: {simple: RANDOM}, connectionPool: {http: {h2UpgradePolicy: UPGRADE}}, "
        "portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]}"
    )
    s = build_snapshot(load_config(native(HTTP, policy)))
    # The entry's loadBalancer applies, and its missing connectionPool is the default's.
    assert [(c["load_balancer"], c.get("protocol")) for c in s["clusters"]] == [
        ("least_request", None),
        ("least_request", None),
    ]


def test_the_first_entry_for_a_port_applies() -> None:
    policy = (
        "{portLevelSettings: [{port: {number: 9080}, connectionPool: {http: "
        "{useClientProtocol: true}}}, {port: {number: 9080}, connectionPool: {http: "
        "{h2UpgradePolicy: UPGRADE}}}]}"
    )
    assert protocols(native(HTTP, policy)) == {"v1": "client", "v2": "client"}


def test_the_subset_overrides_the_services_port_entry_and_its_own_entry_both() -> None:
    ports = "[{number: 9080, name: http}]"
    top = (
        "{portLevelSettings: [{port: {number: 9080}, connectionPool: {http: "
        "{useClientProtocol: true}}}]}"
    )
    subset = pool("{h2UpgradePolicy: UPGRADE}")
    assert protocols(native(ports, top, subset)) == {"v1": "client", "v2": "http2"}
    subset = (
        "{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}, portLevelSettings: "
        "[{port: {number: 9080}, connectionPool: {http: {useClientProtocol: true}}}]}"
    )
    assert protocols(native(ports, "", subset)) == {"v1": None, "v2": "client"}


# === the connection pool's HTTP limits ===


def limits(text: str) -> list[dict[str, Any]]:
    keys = ("max_requests_per_connection", "max_concurrent_streams")
    s = build_snapshot(load_config(text))
    return [{k: v for k, v in c.items() if k in keys} for c in s["clusters"]]


def test_connection_limits_are_written_only_when_set() -> None:
    assert limits(native(HTTP)) == [{}, {}]
    zero = pool("{maxRequestsPerConnection: 0, maxConcurrentStreams: 0}")
    assert limits(native(HTTP, zero)) == [{}, {}]
    set_ = pool("{maxRequestsPerConnection: 1, maxConcurrentStreams: 250}")
    assert limits(native(HTTP, set_, pool("{maxConcurrentStreams: 8}"))) == [
        {"max_requests_per_connection": 1, "max_concurrent_streams": 250},
        {"max_concurrent_streams": 8},
    ]


# === tcp routes ===


def test_tcp_routes_carry_no_http_settings() -> None:
    text = """\
listeners: [{address: 127.0.0.1:8080}, {address: 127.0.0.1:6379, protocol: tcp}]
services:
  cache:
    endpoints: [{address: 127.0.0.1:7000}]
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxRequestsPerConnection: 3}}
virtualServices:
  - name: cache
    hosts: [cache]
    http: [{route: [{destination: {host: cache}}]}]
    tcp: [{route: [{destination: {host: cache}}]}]
"""
    s = build_snapshot(load_config(text))
    http = s["virtual_hosts"][0]["routes"][0]["destinations"][0]["cluster"]
    tcp = s["tcp_routes"][0]["destinations"][0]["cluster"]
    assert (http, tcp) == (0, 1)
    assert (s["clusters"][0]["protocol"], s["clusters"][0]["max_requests_per_connection"]) == (
        "http2",
        3,
    )
    assert "protocol" not in s["clusters"][1]
    assert "max_requests_per_connection" not in s["clusters"][1]


# === Istio resources ===

PROXY = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy}
spec:
  listeners: [{address: 127.0.0.1:8080}]
"""
SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports:
  - {number: 9080, name: http}
  - {number: 9090, name: grpc-web-ui}
  - {number: 9443, name: api, protocol: GRPC}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}}
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxRequestsPerConnection: 100}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9443}
        connectionPool: {http: {useClientProtocol: true, maxConcurrentStreams: 10}}
"""


def vs(port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews, subset: v1, port: {{number: {port}}}}}}}]
    mirror: {{host: reviews, subset: v2, port: {{number: {port}}}}}
"""


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        # The DestinationRule upgrades a port that does not say HTTP/2.
        (9080, [("http2", 100, None), ("http2", 100, None)]),
        # The port's name says GRPC-WEB.
        (9090, [("http2", 100, None), ("http2", 100, None)]),
        # The port's protocol says GRPC; v2's port entry replaces its connection pool.
        (9443, [("http2", 100, None), ("client", None, 10)]),
    ],
)
def test_resources_decide_as_istio(port: int, expected: list[tuple[Any, ...]]) -> None:
    s = build_snapshot(load_config("---\n".join([PROXY, SE, DR, vs(port)])))
    assert [
        (c.get("protocol"), c.get("max_requests_per_connection"), c.get("max_concurrent_streams"))
        for c in s["clusters"]
    ] == expected


def test_a_rule_without_a_service_entry_applies_to_the_host_resolved_by_dns() -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.example
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
"""
    route = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http: [{route: [{destination: {host: api.example}}]}]
"""
    [cluster] = build_snapshot(load_config("---\n".join([PROXY, dr, route])))["clusters"]
    assert (cluster["endpoints"], cluster.get("protocol")) == (["api.example:80"], "http2")


def test_the_core_accepts_the_new_keys() -> None:
    native_core = pytest.importorskip("pymirror._native")
    built = next(ROOT.glob("pymirror/_native*.so"), None)
    sources = [*ROOT.glob("native/src/snapshot/*.rs")]
    if built is None or any(p.stat().st_mtime > built.stat().st_mtime for p in sources):
        pytest.skip("the built core predates native/src/snapshot: rebuild with pip install -e .")
    for port in (9080, 9443):
        proxy = PROXY + "  limits: {http2: {maxConcurrentStreams: 10}}\n"
        text = "---\n".join([proxy, SE, DR, vs(port)])
        native_core.validate(json.dumps(build_snapshot(load_config(text))))
