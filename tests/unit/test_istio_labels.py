"""Istio's labels as pymirror derives them: service name and namespace from the host,
the source workload from the pod's environment."""

from __future__ import annotations

import pytest

from pymirror.istio_metrics import UNKNOWN, Source, _service


@pytest.mark.parametrize(
    ("host", "name", "namespace"),
    [
        ("reviews", "reviews", UNKNOWN),
        ("reviews.shop", "reviews", "shop"),
        ("reviews.shop.svc", "reviews", "shop"),
        ("reviews.shop.svc.cluster.local", "reviews", "shop"),
        # Not a Kubernetes service name: its second label is no namespace.
        ("api.example.com", "api", UNKNOWN),
        ("10.0.0.7", "10.0.0.7", UNKNOWN),
        ("[::1]", "[::1]", UNKNOWN),
    ],
)
def test_service_name_and_namespace_come_from_kubernetes_names_only(
    host: str, name: str, namespace: str
) -> None:
    assert _service(host) == (name, namespace)


def test_the_source_is_read_from_istios_pod_variables() -> None:
    env = {"ISTIO_META_WORKLOAD_NAME": "frontend", "POD_NAMESPACE": "shop"}
    assert Source.from_environment(env) == Source("frontend", "shop")
    assert Source.from_environment({}) == Source(UNKNOWN, UNKNOWN)
    assert Source.from_environment({"POD_NAMESPACE": ""}).namespace == UNKNOWN
