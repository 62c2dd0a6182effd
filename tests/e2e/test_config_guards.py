"""Mirror guards and copy-only header operations set in YAML reach the core: credentials
are stripped from the copy and kept on the primary; a POST is not copied."""

from __future__ import annotations

import pytest
from conftest import seed_config, settle
from support.client import Client

from pymirror import Proxy

pytestmark = pytest.mark.e2e

GUARDED = """
        mirror:
          host: reviews
          subset: v2
          onlyIdempotent: true
          headers:
            request:
              remove: [authorization, cookie]
              set: {x-shadow: "1"}"""

CREDENTIALS = {"Authorization": "Bearer secret", "Cookie": "session=1"}


def _exchange(proxy: Proxy) -> None:
    with Client(proxy.addresses[0]) as client:
        got = client.request("GET", "/read", headers=CREDENTIALS)
        posted = client.request("POST", "/write", headers=CREDENTIALS, body=b"order")
    assert (got.status, posted.status) == (200, 200)


def _check(v1, v2, mirror) -> None:  # type: ignore[no-untyped-def]
    primaries = {s.path: s for s in v1.seen}
    assert set(primaries) == {"/read", "/write"}
    for primary in primaries.values():
        assert primary.headers["authorization"] == "Bearer secret"
        assert primary.headers["cookie"] == "session=1"
        assert "x-shadow" not in primary.headers
    [copy] = v2.seen
    assert (copy.method, copy.path) == ("GET", "/read")
    assert "authorization" not in copy.headers and "cookie" not in copy.headers
    assert copy.headers["x-shadow"] == "1"
    assert copy.headers["x-request-id"] == primaries["/read"].headers["x-request-id"]
    assert mirror["answered"] == 1


def test_native_guards_strip_credentials_and_skip_post(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None, route_extra=GUARDED)
    with Proxy(config) as proxy:
        _exchange(proxy)
        mirror = settle(proxy)
    _check(v1, v2, mirror)


def test_mirror_proxy_policies_strip_credentials_and_skip_post(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    (h1, p1), (h2, p2) = (b.address.rsplit(":", 1) for b in (v1, v2))
    config = f"""
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {{name: proxy}}
spec:
  listeners: [{{address: "127.0.0.1:0", host: reviews}}]
  mirrorPolicies:
    - virtualService: reviews
      onlyIdempotent: true
      headers: {{request: {{remove: [authorization, cookie], set: {{x-shadow: "1"}}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  ports: [{{number: 9080, name: http}}]
  resolution: STATIC
  endpoints:
    - {{address: {h1}, ports: {{http: {p1}}}, labels: {{version: v1}}}}
    - {{address: {h2}, ports: {{http: {p2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
    - route: [{{destination: {{host: reviews, subset: v1}}}}]
      mirror: {{host: reviews, subset: v2}}
"""
    with Proxy(config) as proxy:
        _exchange(proxy)
        mirror = settle(proxy)
    _check(v1, v2, mirror)
