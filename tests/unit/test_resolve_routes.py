"""Model -> Snapshot for every route feature: matches, header operations, redirects,
direct responses, rewrites, retries, faults, and cluster policies, ports and weights."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from pymirror import snapshot as snap
from pymirror.config import load_config
from pymirror.resolve import build_snapshot

SERVICES = """\
listeners: [{address: 127.0.0.1:8080}]
services:
  reviews:
    endpoints:
      - {address: 127.0.0.1:9081, labels: {version: v1}}
      - {address: 127.0.0.1:9082, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
"""


def route(http: str) -> snap.Route:
    """The snapshot route of a `reviews` virtual service's only http entry."""
    text = (
        SERVICES + "virtualServices:\n  - name: reviews\n    hosts: [reviews]\n    http:\n      - "
    )
    text += textwrap.indent(textwrap.dedent(http), " " * 8).lstrip()
    s = build_snapshot(load_config(text))
    (r,) = s["virtual_hosts"][0]["routes"]
    return r


FORWARD = "route: [{destination: {host: reviews, subset: v1}}]\n"


def test_every_match_condition() -> None:
    r = route(
        """\
        match:
          - uri: {prefix: /API}
            ignoreUriCase: true
            scheme: {exact: http}
            method: {regex: "GET|HEAD"}
            authority: {prefix: reviews}
            headers: {x-debug: {}, end-user: {exact: jason}, uri: {exact: /ignored}}
            withoutHeaders: {x-canary: {regex: "*"}, x-env: {exact: prod}}
            queryParams: {id: {regex: "[0-9]+"}, debug: {}}
            port: 8080
        """
        + FORWARD
    )
    assert r["matches"] == [
        {
            "uri": {"prefix": "/API"},
            "scheme": {"exact": "http"},
            "method": {"regex": "GET|HEAD"},
            "authority": {"prefix": "reviews"},
            # `{}` asks for presence; `uri` as a header key is ignored, as Istio does.
            "headers": [
                {"name": "x-debug", "value": None},
                {"name": "end-user", "value": {"exact": "jason"}},
            ],
            # `regex: "*"` in withoutHeaders is Istio's "present", not a regex.
            "without_headers": [
                {"name": "x-canary", "value": None},
                {"name": "x-env", "value": {"exact": "prod"}},
            ],
            "query_params": [
                {"name": "id", "value": {"regex": "[0-9]+"}},
                {"name": "debug", "value": None},
            ],
            "port": 8080,
            "ignore_uri_case": True,
        }
    ]


def test_mesh_only_conditions_are_left_out() -> None:
    r = route(
        "match: [{sourceLabels: {app: web}, gateways: [gw], sourceNamespace: shop}]\n" + FORWARD
    )
    assert r["matches"][0]["headers"] == [] and r["matches"][0]["uri"] is None


def test_header_operations_per_route_and_per_destination() -> None:
    r = route(
        """\
        route:
          - destination: {host: reviews, subset: v1}
            weight: 90
            headers:
              request: {set: {X-Version: v1}}
              response: {remove: [X-Internal]}
          - destination: {host: reviews, subset: v2}
            weight: 10
        headers:
          request: {set: {x-a: "1"}, add: {X-B: "2"}, remove: [Cookie]}
          response: {add: {x-served-by: pymirror}}
        """
    )
    assert r["request_headers"] == {
        "set": [{"name": "x-a", "value": "1"}],
        "add": [{"name": "x-b", "value": "2"}],
        "remove": ["cookie"],
    }
    assert r["response_headers"] == {
        "set": [],
        "add": [{"name": "x-served-by", "value": "pymirror"}],
        "remove": [],
    }
    first, second = r["destinations"]
    assert (first["weight"], second["weight"]) == (90, 10)
    assert first["request_headers"]["set"] == [{"name": "x-version", "value": "v1"}]
    assert first["response_headers"]["remove"] == ["x-internal"]
    assert second["request_headers"] == {"set": [], "add": [], "remove": []}


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (
            "{uri: /v2, authority: new.example}",
            {"uri": "/v2", "authority": "new.example", "port": None, "scheme": None, "code": 301},
        ),
        (
            "{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT, redirectCode: 308}",
            {"uri": None, "authority": None, "port": 443, "scheme": "https", "code": 308},
        ),
        (
            "{uri: /x, port: 8443}",
            {"uri": "/x", "authority": None, "port": 8443, "scheme": None, "code": 301},
        ),
    ],
)
def test_redirects(redirect: str, expected: dict[str, Any]) -> None:
    r = route(f"redirect: {redirect}\n")
    assert r["redirect"] == expected
    assert (r["destinations"], r["direct_response"], r["retries"]) == ([], None, None)


def test_direct_responses_carry_bytes() -> None:
    r = route('directResponse: {status: 503, body: {string: "été"}}\n')
    assert r["direct_response"] == {"status": 503, "body": list("été".encode())}
    r = route("directResponse: {status: 200, body: {bytes: AAEC/w==}}\n")
    assert r["direct_response"] == {"status": 200, "body": [0, 1, 2, 255]}
    assert route("directResponse: {status: 204}\n")["direct_response"] == {
        "status": 204,
        "body": [],
    }


def test_mirrors_copy_only_what_a_route_forwards() -> None:
    r = route("redirect: {uri: /new}\nmirror: {host: reviews, subset: v2}\n")
    assert r["mirrors"] == []


def test_rewrites() -> None:
    r = route(FORWARD + "rewrite: {uri: /v2/, authority: reviews.internal}\n")
    assert r["rewrite"] == {"uri": "/v2/", "authority": "reviews.internal", "uri_regex": None}
    r = route(FORWARD + "rewrite: {uriRegexRewrite: {match: '^/a/(.*)$', rewrite: '/b/\\1'}}\n")
    assert r["rewrite"] == {
        "uri": None,
        "authority": None,
        "uri_regex": {"pattern": "^/a/(.*)$", "substitution": "/b/\\1"},
    }


ISTIO_DEFAULT_ON = [
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
    "503",
]


@pytest.mark.parametrize(
    ("retries", "expected"),
    [
        # No `retries`: Istio's default policy.
        ("", {"attempts": 2, "per_try_timeout_ms": None, "retry_on": ISTIO_DEFAULT_ON}),
        ("retries: {attempts: 0}\n", None),
        (
            "retries: {attempts: 3, perTryTimeout: 250ms}\n",
            {"attempts": 3, "per_try_timeout_ms": 250, "retry_on": ISTIO_DEFAULT_ON},
        ),
        (
            "retries: {attempts: 1, retryOn: '5xx, 409,retriable-headers'}\n",
            # Conditions the core does not act on are left out (and reported).
            {"attempts": 1, "per_try_timeout_ms": None, "retry_on": ["5xx", "409"]},
        ),
    ],
)
def test_retries(retries: str, expected: snap.RetryPolicy | None) -> None:
    assert route(FORWARD + retries)["retries"] == expected


def test_timeouts() -> None:
    assert route(FORWARD + "timeout: 1.5s\n")["timeout_ms"] == 1500
    assert route(FORWARD)["timeout_ms"] is None


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            "{delay: {fixedDelay: 7s, percentage: {value: 12.5}}}",
            {"delay": {"fixed_delay_ms": 7000, "per_million": 125_000}, "abort": None},
        ),
        (
            # No percentage: every request, as in Istio.
            "{abort: {httpStatus: 555}}",
            {"delay": None, "abort": {"status": 555, "per_million": 1_000_000}},
        ),
        (
            "{delay: {fixedDelay: 100ms, percent: 3}, abort: {httpStatus: 503, percentage: "
            "{value: 0.0007}}}",
            {
                "delay": {"fixed_delay_ms": 100, "per_million": 30_000},
                "abort": {"status": 503, "per_million": 7},
            },
        ),
    ],
)
def test_faults(fault: str, expected: snap.Fault) -> None:
    assert route(FORWARD + f"fault: {fault}\n")["fault"] == expected


def test_cluster_policies_ports_and_weights() -> None:
    text = """\
listeners: [{address: 127.0.0.1:8080}]
services:
  reviews:
    ports: [{number: 9080, name: http}, {number: 9443, name: admin, targetPort: 7443}]
    endpoints:
      - {address: 10.0.0.1, labels: {version: v1}, weight: 4}
      - {address: 10.0.0.2, labels: {version: v1}, ports: {http: 8080}}
      - {address: "::1", labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    trafficPolicy:
      loadBalancer: {simple: LEAST_CONN}
      connectionPool: {tcp: {maxConnections: 100}, http: {http2MaxRequests: 40}}
    subsetPolicies:
      v2: {loadBalancer: {simple: RANDOM}, connectionPool: {tcp: {maxConnections: 5}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route:
          - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 1}
          - {destination: {host: reviews, subset: v2, port: {number: 9443}}, weight: 1}
"""
    s = build_snapshot(load_config(text))
    assert s["clusters"] == [
        {
            "host": "reviews",
            "subset": "v1",
            # An endpoint's own port for the service port first, else the port itself.
            "endpoints": ["10.0.0.1:9080", "10.0.0.2:8080"],
            "weights": [4, 1],
            "load_balancer": "least_request",  # LEAST_CONN is Istio's old name for it
            "max_requests": 40,  # the tighter of maxConnections and http2MaxRequests
        },
        {
            "host": "reviews",
            "subset": "v2",
            "endpoints": ["[::1]:7443"],  # the port's targetPort
            "weights": [],
            "load_balancer": "random",
            "max_requests": 5,
        },
    ]


def test_a_rich_snapshot_is_accepted_by_the_core() -> None:
    native = pytest.importorskip("pymirror._native")
    text = SERVICES + textwrap.dedent("""\
        virtualServices:
          - name: reviews
            namespace: shop
            hosts: [reviews]
            http:
              - match: [{uri: {prefix: /old}, headers: {x-debug: {}}, port: 8080}]
                redirect: {uri: /new, redirectCode: 302}
              - match: [{uri: {exact: /health}}]
                directResponse: {status: 200, body: {string: ok}}
              - route:
                  - destination: {host: reviews, subset: v1}
                    headers: {request: {set: {x-v: "1"}}}
                rewrite: {uriRegexRewrite: {match: "^/api/(.*)", rewrite: "/\\\\1"}}
                retries: {attempts: 3, retryOn: "5xx,503"}
                fault: {delay: {fixedDelay: 1ms, percentage: {value: 0.5}}}
                timeout: 2s
                mirrors:
                  - destination: {host: reviews, subset: v2}
                    percentage: {value: 2.5}
        """)
    s = build_snapshot(load_config(text))
    assert s["virtual_hosts"][0]["domains"] == [
        "reviews",
        "reviews.shop",
        "reviews.shop.svc",
        "reviews.shop.svc.cluster.local",
    ]
    native.validate(json.dumps(s))
