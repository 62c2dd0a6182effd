"""What `pymirror check` and the startup log say about protocols: an `http` listener serves
HTTP/1.1 and HTTP/2 on one port; each upstream its protocol and why, with where that was
written. And what is reported about the settings that decide it: their errors at
file:line:col, the warning where one has no effect."""

from __future__ import annotations

import pytest
from test_upstream_protocol import DR, PROXY, SE, vs

from pymirror.check import as_json, as_text, check
from pymirror.config import ConfigError, load, load_config
from pymirror.resolve import describe

NATIVE = """\
listeners:
  - {address: 127.0.0.1:8080, host: reviews}
  - {address: 127.0.0.1:6379, protocol: tcp}
services:
  reviews:
    ports: [{number: 9090, name: grpc-web}]
    endpoints: [{address: 127.0.0.1, labels: {v: a}}, {address: 127.0.0.2, labels: {v: b}}]
    subsets: {a: {v: a}, b: {v: b}}
    subsetPolicies:
      b: {connectionPool: {http: {useClientProtocol: true}}}
  ratings:
    endpoints: [{address: 127.0.0.1:9000}]
    trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}
  details:
    ports: [{number: 9443, protocol: GRPC}]
    endpoints: [{address: 127.0.0.3}]
  plain:
    endpoints: [{address: 127.0.0.1:9001}]
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - match: [{uri: {prefix: /r}}]
        route: [{destination: {host: ratings}}]
        mirror: {host: details}
      - match: [{uri: {prefix: /p}}]
        route: [{destination: {host: plain}}]
      - route: [{destination: {host: reviews, subset: a}}]
        mirror: {host: reviews, subset: b}
    tcp:
      - route: [{destination: {host: plain}}]
"""


def test_describe_says_what_each_listener_and_upstream_speaks() -> None:
    assert describe(load_config(NATIVE)) == [
        "listener 127.0.0.1:8080 (default host reviews)",
        "  serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)",
        "listener 127.0.0.1:6379 (tcp)",
        "upstream ratings (127.0.0.1:9000): http2 (service `ratings` h2UpgradePolicy UPGRADE "
        "at <string>:13:62)",
        "upstream details (127.0.0.3:9443): http2 (port 9443 (GRPC) of service `details` at "
        "<string>:15:38)",
        "upstream plain (127.0.0.1:9001): http1 (default)",
        "upstream reviews a (127.0.0.1:9090): http2 (port grpc-web 9090 of service `reviews` "
        "at <string>:6:34)",
        "upstream reviews b (127.0.0.2:9090): client protocol (service `reviews` "
        "useClientProtocol at <string>:10:54)",
        "reviews/0: /r* -> ratings (127.0.0.1:9000); mirror 100% -> details (127.0.0.3:9443)",
        "reviews/1: /p* -> plain (127.0.0.1:9001)",
        "reviews/2: * -> reviews a (127.0.0.1:9090); mirror 100% -> reviews b (127.0.0.2:9090)",
        "reviews/tcp/0: tcp * -> plain (127.0.0.1:9001)",
    ]


def test_listen_addresses_say_what_they_serve_too() -> None:
    lines = describe(load_config(NATIVE), listen=["127.0.0.1:0"])
    assert lines[:2] == [
        "listener 127.0.0.1:0 (default host reviews)",
        "  serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)",
    ]


def resources(port: int) -> str:
    return "---\n".join([PROXY, SE, DR, vs(port)])


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (
            9080,
            [
                "upstream reviews v1 (127.0.0.1:9080): http2 (DestinationRule default/reviews "
                "h2UpgradePolicy UPGRADE at <string>:27:46)",
                "upstream reviews v2 (127.0.0.2:9080): http2 (DestinationRule default/reviews "
                "h2UpgradePolicy UPGRADE at <string>:27:46)",
            ],
        ),
        (
            9090,
            [
                "upstream reviews v1 (127.0.0.1:9090): http2 (port grpc-web-ui 9090 of "
                "ServiceEntry default/reviews at <string>:14:26)",
                "upstream reviews v2 (127.0.0.2:9090): http2 (port grpc-web-ui 9090 of "
                "ServiceEntry default/reviews at <string>:14:26)",
            ],
        ),
        (
            9443,
            [
                "upstream reviews v1 (127.0.0.1:9443): http2 (port api 9443 (GRPC) of "
                "ServiceEntry default/reviews at <string>:15:41)",
                "upstream reviews v2 (127.0.0.2:9443): client protocol (DestinationRule "
                "default/reviews useClientProtocol at <string>:35:52)",
            ],
        ),
    ],
)
def test_check_names_the_resource_and_place_that_decided(port: int, expected: list[str]) -> None:
    lines = as_text(check([resources(port)]))
    assert lines[:2] == [
        "listener 127.0.0.1:8080",
        "  serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)",
    ]
    assert [line for line in lines if line.startswith("upstream ")] == expected


def test_check_json_has_the_listener_protocols_and_the_upstreams() -> None:
    report = as_json(check([NATIVE]))
    assert [(x["address"], x["protocol"]) for x in report["listeners"]] == [
        ("127.0.0.1:8080", "http"),
        ("127.0.0.1:6379", "tcp"),
    ]
    assert report["upstreams"][-1] == {
        "host": "reviews",
        "subset": "b",
        "endpoints": ["127.0.0.2:9090"],
        "protocol": "client",
        "why": "service `reviews` useClientProtocol at <string>:10:54",
    }
    assert [(u["host"], u["protocol"]) for u in report["upstreams"]] == [
        ("ratings", "http2"),
        ("details", "http2"),
        ("plain", "http1"),
        ("reviews", "http2"),
        ("reviews", "client"),
    ]


# === what is reported ===


def warnings(text: str) -> list[str]:
    return [str(p) for p in load(text).problems if p.severity == "warning"]


def test_the_settings_that_decide_are_served_and_the_others_still_reported() -> None:
    text = NATIVE.replace(
        "{h2UpgradePolicy: UPGRADE}",
        "{h2UpgradePolicy: UPGRADE, maxRequestsPerConnection: 5, maxConcurrentStreams: 9, "
        "useClientProtocol: false, http2MaxRequests: 3, http1MaxPendingRequests: 1}",
    )
    assert warnings(text) == [
        "<string>:13:172: warning: services.ratings.trafficPolicy.connectionPool.http."
        "http1MaxPendingRequests: `http1MaxPendingRequests` is accepted but not served yet"
    ]


def test_use_client_protocol_makes_an_upgrade_policy_beside_it_moot() -> None:
    text = NATIVE.replace(
        "{useClientProtocol: true}", "{useClientProtocol: true, h2UpgradePolicy: UPGRADE}"
    )
    assert warnings(text) == [
        "<string>:10:60: warning: services.reviews.subsetPolicies.b.connectionPool.http."
        "h2UpgradePolicy: `h2UpgradePolicy` has no effect beside `useClientProtocol: true`: "
        "each request goes upstream in the client's own protocol (as in Istio)"
    ]


def test_port_level_settings_report_what_they_do_not_serve() -> None:
    dr = DR.replace(
        "        connectionPool: {http: {useClientProtocol: true, maxConcurrentStreams: 10}}\n",
        "        connectionPool: {http: {useClientProtocol: true, idleTimeout: 5s}}\n"
        "        tls: {mode: SIMPLE}\n",
    )
    assert warnings("---\n".join([PROXY, SE, dr, vs(9443)])) == [
        "<string>:35:58: warning: spec.subsets[1].trafficPolicy.portLevelSettings[0]."
        "connectionPool.http.idleTimeout: `idleTimeout` is accepted but not served yet",
    ]


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "h2UpgradePolicy: UPGRADE",
            "h2UpgradePolicy: ALWAYS",
            "<string>:13:62: services.ratings.trafficPolicy.connectionPool.http."
            "h2UpgradePolicy: Input should be 'DEFAULT', 'DO_NOT_UPGRADE' or 'UPGRADE'",
        ),
        (
            "useClientProtocol: true",
            "useClientProtocol: yes please",
            "<string>:10:54: services.reviews.subsetPolicies.b.connectionPool.http."
            "useClientProtocol: expected `true` or `false`, got text 'yes please'",
        ),
        (
            "h2UpgradePolicy: UPGRADE",
            "maxConcurrentStreams: -1",
            "<string>:13:67: services.ratings.trafficPolicy.connectionPool.http."
            "maxConcurrentStreams: must be >= 0 (got -1)",
        ),
        (
            "h2UpgradePolicy: UPGRADE",
            "maxRequestsPerConnection: 2147483648",
            "<string>:13:71: services.ratings.trafficPolicy.connectionPool.http."
            "maxRequestsPerConnection: must be <= 2147483647 (got 2147483648)",
        ),
        (
            "{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}",
            "{portLevelSettings: [{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}]}",
            "<string>:13:41: services.ratings.trafficPolicy.portLevelSettings[0].port: missing "
            "required field `port`",
        ),
        (
            "{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}",
            "{portLevelSettings: [{port: {number: 9000}}]}",
            "<string>:13:41: services.ratings.trafficPolicy.portLevelSettings[0]: a port's "
            "traffic policy needs `loadBalancer`, `connectionPool`, `outlierDetection` or `tls`",
        ),
        (
            "ports: [{number: 9443, protocol: GRPC}]",
            "ports: [{number: 9443, protocol: GRPC}, {number: 9443, name: http}]",
            "<string>:15:54: services.details.ports[1].number: port 9443 is already defined",
        ),
    ],
)
def test_errors_name_file_line_column(old: str, new: str, expected: str) -> None:
    assert old in NATIVE
    assert errors(NATIVE.replace(old, new)) == [expected]


def test_resources_are_reported_at_their_own_paths() -> None:
    moot = DR.replace(
        "{useClientProtocol: true, maxConcurrentStreams: 10}",
        "{useClientProtocol: true, h2UpgradePolicy: DO_NOT_UPGRADE}",
    )
    assert warnings("---\n".join([PROXY, SE, moot, vs(9443)])) == [
        "<string>:35:58: warning: spec.subsets[1].trafficPolicy.portLevelSettings[0]."
        "connectionPool.http.h2UpgradePolicy: `h2UpgradePolicy` has no effect beside "
        "`useClientProtocol: true`: each request goes upstream in the client's own protocol "
        "(as in Istio)"
    ]
    wrong = DR.replace("h2UpgradePolicy: UPGRADE", "h2UpgradePolicy: upgrade")
    # The broken rule is left out, so the subsets it defines are missing too.
    assert errors("---\n".join([PROXY, SE, wrong, vs(9443)]))[0] == (
        "<string>:27:46: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: Input should "
        "be 'DEFAULT', 'DO_NOT_UPGRADE' or 'UPGRADE'"
    )
