"""`tcpMirrors`: tcp mirrors declared in a MirrorProxy (or the native format), apart from
the virtual service, served as if the tcp route wrote them, and refused where they name
nothing or a route already has a mirror."""

from __future__ import annotations

import pytest

from pymirror.config import load, load_config
from pymirror.resolve import build_snapshot
from pymirror.snapshot import Snapshot

PROXY = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy, namespace: default}
spec:
  listeners: [{address: 127.0.0.1:6379, protocol: tcp}]
  tcpMirrors:
    - virtualService: redis
      mirror: {host: redis-next, subset: v2}
      mirrorPercentage: {value: 25}
"""
SERVICES = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: redis, namespace: default}
spec:
  hosts: [redis]
  ports: [{number: 6379, name: tcp-redis, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 7001}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: redis-next, namespace: default}
spec:
  hosts: [redis-next]
  ports: [{number: 6379, name: tcp-redis, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 7002}, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: redis-next, namespace: default}
spec:
  host: redis-next
  subsets: [{name: v2, labels: {version: v2}}]
"""
# Istio's TCPRoute, as Istio accepts it: no mirror of its own.
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redis, namespace: default}
spec:
  hosts: [redis]
  tcp:
  - match: [{port: 6379}]
    route: [{destination: {host: redis}}]
  - route: [{destination: {host: redis}}]
"""
NO_TCP = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: redis}}]}]
"""


def istio(proxy: str = PROXY, vs: str = VS) -> str:
    return "---\n".join([proxy, SERVICES, vs, NO_TCP])


def mirrors(s: Snapshot) -> list[list[tuple[str, str | None, list[str], int]]]:
    """Each tcp route's mirrors: (host, subset, endpoints, per million)."""
    clusters = s["clusters"]
    return [
        [
            (
                clusters[m["cluster"]]["host"],
                clusters[m["cluster"]]["subset"],
                clusters[m["cluster"]]["endpoints"],
                m["per_million"],
            )
            for m in route["mirrors"]
        ]
        for route in s.get("tcp_routes", [])
    ]


def errors(text: str) -> list[str]:
    return [str(p) for p in load(text).errors]


# The entry narrowed to the second tcp route.
ROUTE_1 = "    - virtualService: redis\n      route: 1\n"
NEXT = ("redis-next", "v2", ["127.0.0.1:7002"], 250_000)


def test_a_mirror_proxy_mirrors_every_tcp_route_of_the_virtual_service() -> None:
    assert mirrors(build_snapshot(load_config(istio()))) == [[NEXT], [NEXT]]


def test_route_selects_one_tcp_route() -> None:
    proxy = PROXY.replace("    - virtualService: redis\n", ROUTE_1)
    assert mirrors(build_snapshot(load_config(istio(proxy)))) == [[], [NEXT]]


def test_percentage_defaults_to_every_connection() -> None:
    proxy = PROXY.replace("      mirrorPercentage: {value: 25}\n", "")
    assert mirrors(build_snapshot(load_config(istio(proxy))))[0] == [(*NEXT[:3], 1_000_000)]


def test_the_same_mirror_written_on_the_route_gives_the_same_snapshot() -> None:
    proxy = PROXY.split("  tcpMirrors:\n")[0]
    vs = VS.replace(
        "    route: [{destination: {host: redis}}]\n",
        "    route: [{destination: {host: redis}}]\n"
        "    mirror: {host: redis-next, subset: v2}\n"
        "    mirrorPercentage: {value: 25}\n",
    )
    written = build_snapshot(load_config(istio(proxy, vs)))
    route0 = PROXY.replace("virtualService: redis\n", "virtualService: redis\n      route: 0\n")
    declared = build_snapshot(load_config(istio(route0)))
    assert written == declared


SECOND = "      mirrorPercentage: {value: 25}\n    - virtualService: default/redis\n"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "virtualService: redis",
            "virtualService: cache",
            "<string>:7:23: spec.tcpMirrors[0].virtualService: no virtual service "
            "`default/cache` in the files given (known: `default/redis`, `default/web`)",
        ),
        (
            "virtualService: redis",
            "virtualService: web",
            "<string>:7:23: spec.tcpMirrors[0].virtualService: virtual service `default/web` "
            "has no tcp routes to mirror",
        ),
        (
            "route: 1",
            "route: 2",
            "<string>:8:14: spec.tcpMirrors[0].route: virtual service `default/redis` has no "
            "tcp route 2 (its tcp routes: 0 to 1)",
        ),
        (
            "subset: v2",
            "subset: v9",
            "<string>:9:42: spec.tcpMirrors[0].mirror.subset: DestinationRule "
            "default/redis-next (host `redis-next`) has no subset `v9` (its subsets: `v2`)",
        ),
        (
            "      mirrorPercentage: {value: 25}\n",
            SECOND + "      mirror: {host: redis}\n",
            "<string>:11:7: spec.tcpMirrors[1]: tcp route 1 of `default/redis` already has a "
            "mirror, from the `tcpMirrors` entry at <string>:7:23: declare it in one place",
        ),
    ],
)
def test_tcp_mirror_errors_name_the_place(old: str, new: str, expected: str) -> None:
    proxy = PROXY.replace("    - virtualService: redis\n", ROUTE_1).replace(old, new)
    assert errors(istio(proxy)) == [expected]


def test_an_unknown_mirror_host_is_reported_as_for_a_tcp_route() -> None:
    proxy = PROXY.replace("{host: redis-next, subset: v2}", "{host: nowhere}")
    found = [str(p) for p in load(istio(proxy)).problems if p.code == "unknown-host"]
    assert found == [
        "<string>:8:22: warning: spec.tcpMirrors[0].mirror.host: host `nowhere` is declared by no "
        "ServiceEntry or Service visible from namespace `default`; pymirror resolves it by DNS "
        "(nowhere:80)"
    ]


def test_a_route_with_its_own_mirror_gets_no_second_one() -> None:
    vs = VS.replace(
        "    route: [{destination: {host: redis}}]\n",
        "    route: [{destination: {host: redis}}]\n    mirror: {host: redis}\n",
    )
    assert errors(istio(vs=vs)) == [
        "<string>:7:7: spec.tcpMirrors[0]: tcp route 0 of `default/redis` already has a "
        "mirror, from its own `mirror` at <string>:44:13: declare it in one place"
    ]


NATIVE = """\
listeners: [{address: 127.0.0.1:6379, protocol: tcp}]
services:
  redis: {endpoints: [{address: 127.0.0.1:7001}]}
  redis-next: {endpoints: [{address: 127.0.0.1:7002}]}
virtualServices:
  - name: redis
    hosts: [redis]
    tcp:
      - route: [{destination: {host: redis}}]
tcpMirrors:
  - virtualService: redis
    mirror: {host: redis-next}
    mirrorPercentage: {value: 0.5}
"""


def test_the_native_format_takes_tcp_mirrors_too() -> None:
    s = build_snapshot(load_config(NATIVE))
    assert mirrors(s) == [[("redis-next", None, ["127.0.0.1:7002"], 5_000)]]
    bad = NATIVE.replace("{host: redis-next}", "{host: redis-next, subset: v2}")
    assert errors(bad) == [
        "<string>:12:40: tcpMirrors[0].mirror.subset: service `redis-next` has no subset `v2` "
        "(its subsets: none)"
    ]
