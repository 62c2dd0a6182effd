"""TCP routes in both config forms: what reaches the Snapshot, and what is refused where."""

from __future__ import annotations

import pytest

from pymirror.config import ConfigError, load, load_config
from pymirror.resolve import build_snapshot, describe

NATIVE = """\
listeners:
  - {address: 127.0.0.1:8080}
  - {address: 127.0.0.1:6379, protocol: tcp}
services:
  redis:
    endpoints:
      - {address: 127.0.0.1:7001, labels: {role: a}}
      - {address: 127.0.0.1:7002, labels: {role: b}}
    subsets: {a: {role: a}, b: {role: b}}
  redis-shadow: {endpoints: [{address: 127.0.0.1:7003}]}
virtualServices:
  - name: redis
    hosts: [redis]
    tcp:
      - match: [{port: 6379, destinationSubnets: [127.0.0.0/8]}]
        route:
          - {destination: {host: redis, subset: a}, weight: 90}
          - {destination: {host: redis, subset: b}, weight: 10}
        mirror: {host: redis-shadow}
        mirrorPercentage: {value: 12.5}
      - route: [{destination: {host: redis, subset: b}}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [str(p) for p in info.value.problems]


def test_native_tcp_routes_reach_the_snapshot() -> None:
    s = build_snapshot(load_config(NATIVE))
    assert s["listeners"][0] == {"address": "127.0.0.1:8080", "default_virtual_host": None}
    assert s["listeners"][1]["protocol"] == "tcp"
    clusters = [(c["host"], c["subset"], c["endpoints"]) for c in s["clusters"]]
    first, second = s["tcp_routes"]
    assert (first["virtual_service"], first["name"]) == ("redis", "0")
    assert first["matches"] == [{"port": 6379, "destination_subnets": ["127.0.0.0/8"]}]
    assert [(clusters[d["cluster"]], d["weight"]) for d in first["destinations"]] == [
        (("redis", "a", ["127.0.0.1:7001"]), 90),
        (("redis", "b", ["127.0.0.1:7002"]), 10),
    ]
    [mirror] = first["mirrors"]
    assert clusters[mirror["cluster"]] == ("redis-shadow", None, ["127.0.0.1:7003"])
    assert mirror["per_million"] == 125_000
    assert mirror["buffer_bytes"] == 4 * 1024 * 1024
    assert (second["matches"], second["mirrors"]) == ([], [])
    # The core accepts it as it is.
    from pymirror.engine import validate

    validate(s)


def test_describe_names_tcp_listeners_and_routes() -> None:
    lines = describe(load_config(NATIVE))
    assert "listener 127.0.0.1:6379 (tcp)" in lines
    assert (
        "redis/tcp/0: tcp port 6379 to 127.0.0.0/8 -> redis a (127.0.0.1:7001) 90%, "
        "redis b (127.0.0.1:7002) 10%; mirror 12.5% -> redis-shadow (127.0.0.1:7003)"
    ) in lines
    assert "redis/tcp/1: tcp * -> redis b (127.0.0.1:7002)" in lines


def test_an_http_only_config_keeps_its_snapshot_shape() -> None:
    text = NATIVE.replace("  - {address: 127.0.0.1:6379, protocol: tcp}\n", "")
    s = build_snapshot(load_config(text))
    assert all("protocol" not in listener for listener in s["listeners"])
    # The tcp routes are resolved still (a tcp listener may come with --listen), and
    # reported as taking no connection.
    warnings = [str(w) for w in load_config(text).warnings]
    assert any("no listener has it" in w for w in warnings), warnings


def test_istio_resources_serve_tcp_routes_on_a_mirror_proxy_tcp_listener() -> None:
    text = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy, namespace: default}
spec:
  listeners: [{address: 127.0.0.1:3306, protocol: tcp}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysql.internal]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp: 13306}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysql.internal]
  tcp:
  - match: [{port: 3306}]
    route: [{destination: {host: mysql.internal, port: {number: 3306}}}]
    mirror: {host: mysql.internal, port: {number: 3306}}
    mirrorPercentage: {value: 1}
"""
    s = build_snapshot(load_config(text))
    [route] = s["tcp_routes"]
    [dest] = route["destinations"]
    assert s["clusters"][dest["cluster"]]["endpoints"] == ["127.0.0.1:13306"]
    # pymirror's tcp mirror is accepted on the resource too (Istio has no tcp mirror).
    assert [m["per_million"] for m in route["mirrors"]] == [10_000]
    assert not [p for p in load(text).problems if p.code == "not-served"]


def test_a_tcp_destination_error_stops_a_run_once_tcp_is_served() -> None:
    text = NATIVE.replace("subset: b}}]", "subset: nope}}]")
    assert problems(text) == [
        "<string>:21:53: virtualServices[0].tcp[1].route[0].destination.subset: service "
        "`redis` has no subset `nope` (its subsets: `a`, `b`)"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "protocol: tcp}",
            "protocol: udp}",
            "<string>:3:41: listeners[1].protocol: Input should be 'http', 'tcp' or 'tls'",
        ),
        (
            "destinationSubnets: [127.0.0.0/8]",
            "destinationSubnets: [127.0.0.0/40]",
            "<string>:15:51: virtualServices[0].tcp[0].match[0].destinationSubnets[0]: expected "
            "an IP address or CIDR, such as `10.0.0.0/8` or `::1` (got '127.0.0.0/40')",
        ),
        (
            "protocol: tcp}",
            "protocol: tcp, host: redis}",
            "<string>:3:46: listeners[1].host: a `protocol: tcp` listener has no requests to "
            "route by host; remove `host`",
        ),
        (
            "        mirror: {host: redis-shadow}\n",
            "",
            "<string>:19:9: virtualServices[0].tcp[0].mirrorPercentage: `mirrorPercentage` "
            "without `mirror` has no effect",
        ),
    ],
)
def test_tcp_config_errors_name_the_place(old: str, new: str, expected: str) -> None:
    assert problems(NATIVE.replace(old, new)) == [expected]
