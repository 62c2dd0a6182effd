"""`--shutdown-delay`'s default: 5 s in a Kubernetes pod, none elsewhere; a value given
wins either way (plain data, no process)."""

from __future__ import annotations

from pymirror.cli import KUBERNETES_SHUTDOWN_DELAY, shutdown_delay


def test_a_pod_gets_the_kubernetes_delay_unless_one_is_given() -> None:
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert shutdown_delay(None, pod) == KUBERNETES_SHUTDOWN_DELAY == 5.0
    assert shutdown_delay(None, {}) == 0.0
    assert shutdown_delay(None, {"KUBERNETES_SERVICE_HOST": ""}) == 0.0
    assert shutdown_delay(0.0, pod) == 0.0
    assert shutdown_delay(2.5, {}) == 2.5
    assert shutdown_delay(-1.0, {}) == 0.0
