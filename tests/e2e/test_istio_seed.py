"""The seed's Istio example, as Istio's own resources, runs unchanged: a VirtualService
mirroring 20% of `reviews` v1 to v2 (deprecated `mirrorPercent`), a DestinationRule with
the v1/v2 subsets, a ServiceEntry whose labelled endpoints are real loopback backends."""

from __future__ import annotations

import math

import pytest
from conftest import settle
from support.client import Client

from pymirror import Proxy

pytestmark = pytest.mark.e2e


def istio_seed(v1: str, v2: str) -> str:
    (v1_ip, v1_port), (v2_ip, v2_port) = v1.rsplit(":", 1), v2.rsplit(":", 1)
    return f"""\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {{name: reviews-proxy}}
spec:
  listeners: [{{address: "127.0.0.1:0", host: reviews}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
    mirror:
      host: reviews
      subset: v2
    mirrorPercent: 20
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: {v1_ip}
    ports: {{http: {v1_port}}}
    labels: {{version: v1}}
  - address: {v2_ip}
    ports: {{http: {v2_port}}}
    labels: {{version: v2}}
"""


def test_the_istio_seed_mirrors_20_percent(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    n, p = 4000, 0.2
    with Proxy(istio_seed(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        # Requests for the Kubernetes name of `reviews` reach the same virtual service.
        assert client.request("GET", "/", host="reviews.default.svc.cluster.local").status == 200
        assert all(client.request("GET", f"/{i}").status == 200 for i in range(n - 1))
        mirror = settle(proxy)
        copies = len(v2.seen)
    assert len(v1.seen) == n
    assert copies == mirror["answered"]
    assert all(r.headers["host"] == "reviews-shadow" for r in v2.seen if r.path != "/")
    mean, sigma = n * p, math.sqrt(n * p * (1 - p))
    assert abs(copies - mean) <= 4 * sigma, f"{copies} of {n}: mean {mean} +- 4 x {sigma:.1f}"
