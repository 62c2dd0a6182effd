"""Every route feature of the data plane, driven through real sockets with
hand-built Snapshots (the config layer's translation is tested separately)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.client import Client
from support.ports import closed_port

from pymirror.engine import Engine

pytestmark = pytest.mark.e2e


def snapshot(routes: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> Any:
    return {
        "schema": 1,
        "version": "test",
        "listeners": [{"address": "127.0.0.1:0", "default_virtual_host": 0}],
        "virtual_hosts": [{"name": "reviews", "domains": ["reviews"], "routes": routes}],
        "clusters": clusters,
    }


def cluster(*endpoints: str, **extra: Any) -> dict[str, Any]:
    return {"host": "reviews", "subset": None, "endpoints": list(endpoints), **extra}


def route(name: str = "r", **fields: Any) -> dict[str, Any]:
    fields.setdefault("destinations", [{"cluster": 0, "weight": 1}])
    return {"name": name, **fields}


@pytest.fixture
def engine():
    started: list[Engine] = []

    def start(routes: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> Client:
        e = Engine(snapshot(routes, clusters))
        started.append(e)
        client = Client(e.addresses[0])
        client.engine = e  # type: ignore[attr-defined]
        return client

    yield start
    for e in started:
        e.shutdown(1.0)


def test_prefix_rewrite_and_authority_reach_primary_and_mirror(backend, engine) -> None:
    v1, v2 = backend("v1"), backend("v2")
    r = route(
        matches=[{"uri": {"prefix": "/api/"}}],
        rewrite={"uri": "/v2/", "authority": "reviews.internal:9080"},
        mirrors=[{"cluster": 1, "per_million": 1_000_000}],
    )
    with engine([r], [cluster(v1.address), cluster(v2.address)]) as client:
        assert client.request("GET", "/api/items?x=1").status == 200
    [copy] = v2.wait_for(1)
    [primary] = v1.seen
    assert (primary.path, primary.query, primary.headers["host"]) == (
        "/v2/items",
        "x=1",
        "reviews.internal:9080",
    )
    assert (copy.path, copy.headers["host"]) == ("/v2/items", "reviews.internal-shadow:9080")


def test_regex_rewrite(backend, engine) -> None:
    v1 = backend("v1")
    r = route(
        rewrite={
            "uri_regex": {"pattern": "^/service/([^/]+)(/.*)$", "substitution": "\\2/instance/\\1"}
        }
    )
    with engine([r], [cluster(v1.address)]) as client:
        client.request("GET", "/service/foo/v1/api")
    assert v1.seen[0].path == "/v1/api/instance/foo"


def test_header_operations_on_request_and_response(backend, engine) -> None:
    v1 = backend("v1")
    ops = {
        "set": [{"name": "x-set", "value": "route"}],
        "add": [{"name": "x-add", "value": "r"}],
        "remove": ["x-remove"],
    }
    r = route(
        request_headers=ops,
        response_headers={
            "set": [{"name": "x-served-by", "value": "pymirror"}],
            "remove": ["x-backend"],
        },
        destinations=[
            {
                "cluster": 0,
                "weight": 1,
                "request_headers": {"set": [{"name": "x-dest", "value": "v1"}]},
                "response_headers": {"add": [{"name": "x-dest", "value": "v1"}]},
            }
        ],
    )
    with engine([r], [cluster(v1.address)]) as client:
        reply = client.request(
            "GET", "/", headers={"x-set": "client", "x-remove": "1", "x-add": "c"}
        )
    seen = v1.seen[0].headers
    assert (seen["x-set"], seen["x-add"], seen["x-dest"]) == ("route", "c, r", "v1")
    assert "x-remove" not in seen
    assert reply.headers["x-served-by"] == "pymirror"
    assert reply.headers["x-dest"] == "v1"
    assert "x-backend" not in reply.headers


def test_redirect_and_direct_response_never_reach_a_backend(backend, engine) -> None:
    v1 = backend("v1")
    routes = [
        route(
            "old",
            matches=[{"uri": {"exact": "/v1/getProductRatings"}}],
            destinations=[],
            redirect={"uri": "/v1/bookRatings", "authority": "ratings:9080", "code": 308},
        ),
        route(
            "teapot",
            matches=[{"uri": {"prefix": "/tea"}}],
            destinations=[],
            direct_response={"status": 418, "body": list(b"short and stout")},
        ),
    ]
    with engine(routes, [cluster(v1.address)]) as client:
        moved = client.request("GET", "/v1/getProductRatings?x=1")
        tea = client.request("GET", "/teapot")
    assert (moved.status, moved.headers["location"]) == (
        308,
        "http://ratings:9080/v1/bookRatings?x=1",
    )
    assert (tea.status, tea.body) == (418, b"short and stout")
    assert v1.seen == []


def test_fault_abort_and_delay(backend, engine) -> None:
    v1 = backend("v1")
    routes = [
        route(
            "abort",
            matches=[{"uri": {"prefix": "/abort"}}],
            fault={"abort": {"status": 503, "per_million": 1_000_000}},
        ),
        route("delay", fault={"delay": {"fixed_delay_ms": 300, "per_million": 1_000_000}}),
    ]
    with engine(routes, [cluster(v1.address)]) as client:
        aborted = client.request("GET", "/abort")
        started = time.monotonic()
        delayed = client.request("GET", "/slow")
        waited = time.monotonic() - started
    assert (aborted.status, aborted.body) == (503, b"fault filter abort\n")
    assert delayed.status == 200
    assert waited >= 0.3  # a lower bound only: the delay is a sleep of at least that
    assert [s.path for s in v1.seen] == ["/slow"]


def test_retries_skip_a_dead_endpoint(backend, engine) -> None:
    v1 = backend("v1")
    dead = closed_port()
    retries = {"attempts": 2, "retry_on": ["connect-failure"]}
    with engine([route(retries=retries)], [cluster(dead, v1.address)]) as client:
        statuses = [client.request("GET", f"/{i}").status for i in range(20)]
    assert statuses == [200] * 20
    with engine([route()], [cluster(dead, v1.address)]) as client:
        statuses = [client.request("GET", f"/{i}").status for i in range(20)]
    assert statuses.count(502) == 10  # round robin: every other request meets the dead one


def test_retry_on_5xx_tries_attempts_plus_one(backend, engine) -> None:
    broken = backend("broken", status=503)
    retries = {"attempts": 2, "retry_on": ["5xx"]}
    with engine([route(retries=retries)], [cluster(broken.address)]) as client:
        reply = client.request("GET", "/")
    assert reply.status == 503
    assert len(broken.wait_for(3)) == 3


def test_per_try_timeout_then_route_answer_504(backend, engine) -> None:
    slow = backend("slow", delay=1.0)
    retries = {"attempts": 1, "per_try_timeout_ms": 100, "retry_on": ["5xx"]}
    with engine([route(retries=retries)], [cluster(slow.address)]) as client:
        reply = client.request("GET", "/")
    assert reply.status == 504
    assert slow.wait_for_arrivals(2) == 2


def test_a_request_with_a_body_is_not_replayed(backend, engine) -> None:
    broken = backend("broken", status=503)
    retries = {"attempts": 2, "retry_on": ["5xx"]}
    with engine([route(retries=retries)], [cluster(broken.address)]) as client:
        assert client.request("POST", "/", body=b"once").status == 503
        time.sleep(0.2)
    assert len(broken.seen) == 1


def test_cluster_request_limit_overflows_with_503(backend, engine) -> None:
    slow = backend("slow", delay=1.0)
    with engine([route()], [cluster(slow.address, max_requests=1)]) as first:
        holder = threading.Thread(target=lambda: first.request("GET", "/held"))
        holder.start()
        assert slow.wait_for_arrivals(1) == 1
        with Client(first.address) as second:  # the same proxy, a second connection
            reply = second.request("GET", "/overflow")
        holder.join(timeout=5)
    assert (reply.status, b"overflow" in reply.body) == (503, True)


def test_match_conditions(backend, engine) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = [
        route(
            "special",
            destinations=[{"cluster": 1, "weight": 1}],
            matches=[
                {
                    "uri": {"prefix": "/API"},
                    "ignore_uri_case": True,
                    "authority": {"regex": "reviews(:[0-9]+)?"},
                    "query_params": [{"name": "debug", "value": None}],
                    "without_headers": [{"name": "x-canary", "value": {"exact": "no"}}],
                    "scheme": {"exact": "http"},
                }
            ],
        ),
        route("default"),
    ]
    with engine(routes, [cluster(v1.address), cluster(v2.address)]) as client:
        hit = client.request("GET", "/api/x?debug")
        no_query = client.request("GET", "/api/x")
        excluded = client.request("GET", "/api/x?debug", headers={"x-canary": "no"})
    assert hit.headers["x-backend"] == "v2"
    assert no_query.headers["x-backend"] == "v1"
    assert excluded.headers["x-backend"] == "v1"


def copies_done(client: Client, timeout: float = 10.0) -> None:
    """Until no mirror copy is in flight: every copy that will ever arrive has."""
    engine: Engine = client.engine  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while any(m["in_flight"] for m in engine.stats()["mirrors"]):
        assert time.monotonic() < deadline, "copies still in flight"
        time.sleep(0.01)


def mirror(**fields: Any) -> dict[str, Any]:
    return {"cluster": 1, "per_million": 1_000_000, **fields}


def test_mirror_only_header_operations_leave_the_primary_alone(backend, engine) -> None:
    v1, v2 = backend("v1"), backend("v2")
    ops = {"remove": ["authorization", "cookie"], "set": [{"name": "x-shadow", "value": "1"}]}
    r = route(mirrors=[mirror(request_headers=ops)])
    with engine([r], [cluster(v1.address), cluster(v2.address)]) as client:
        client.request("GET", "/", headers={"Authorization": "Bearer secret", "Cookie": "s=1"})
    [copy] = v2.wait_for(1)
    [primary] = v1.seen
    assert (
        primary.headers["authorization"] == "Bearer secret" and primary.headers["cookie"] == "s=1"
    )
    assert "authorization" not in copy.headers and "cookie" not in copy.headers
    assert copy.headers["x-shadow"] == "1" and "x-shadow" not in primary.headers


def test_only_idempotent_methods_are_copied(backend, engine) -> None:
    v1, v2 = backend("v1"), backend("v2")
    r = route(mirrors=[mirror(only_idempotent=True)])
    with engine([r], [cluster(v1.address), cluster(v2.address)]) as client:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            client.request(method, f"/{method}", body=b"" if method == "GET" else b"x")
        copies_done(client)
    assert sorted(s.method for s in v2.seen) == ["DELETE", "GET", "PUT"]


def test_copy_after_primary_success_waits_for_a_good_status(backend, engine) -> None:
    ok, broken, v2 = backend("v1"), backend("v1", status=500), backend("v2")
    routes = [
        route(
            "broken",
            matches=[{"uri": {"prefix": "/broken"}}],
            destinations=[{"cluster": 2, "weight": 1}],
            mirrors=[mirror(after_primary_success=True)],
        ),
        route("ok", mirrors=[mirror(after_primary_success=True)]),
    ]
    clusters = [cluster(ok.address), cluster(v2.address), cluster(broken.address)]
    with engine(routes, clusters) as client:
        assert client.request("POST", "/fine", body=b"payload").status == 200
        assert client.request("POST", "/broken", body=b"payload").status == 500
        copies_done(client)
        [held] = [m for m in client.engine.stats()["mirrors"] if m["route"] == "broken"]  # type: ignore[attr-defined]
    assert [(c.path, c.body) for c in v2.seen] == [("/fine", b"payload")]
    assert held["dropped"]["primary_failed"] == 1
