"""SIGTERM while requests are in flight: they complete, `/readyz` answers 503 meanwhile,
new connections are refused, and the process exits 0 within the drain deadline; a request
that outlives the deadline is cut and the exit is still clean."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import seed_config
from support.backend import Backend, Behaviour
from support.client import Client
from support.load import fetch, poll
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e


def _held(address: str, count: int, path: str = "/slow") -> tuple[list[threading.Thread], dict]:
    """`count` requests on their own connections, each outcome (status or exception name)
    recorded with when it came."""
    outcomes: dict[int, tuple[int | str, float]] = {}

    def call(i: int) -> None:
        try:
            with Client(address, timeout=15) as client:
                outcome: int | str = client.request("GET", f"{path}/{i}").status
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
        outcomes[i] = (outcome, time.monotonic())

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads, outcomes


def _refused(address: str) -> bool:
    """Whether a new connection to `address` is refused (or reset: it reached the backlog
    of a listening socket just as that closed)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            pass
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def test_sigterm_drains_in_flight_requests(backend, tmp_path: Path) -> None:
    # v1 holds every request until the test has seen the drain (a slow backend without a
    # race against the clock), then answers.
    gate = threading.Event()
    v1, v2 = Backend("v1", Behaviour(gate=gate)).start(), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = PymirrorProcess(routes)  # drain deadline: 10 s
    try:
        admin = proc.admin_address
        assert fetch(admin, "/readyz")[0] == 200
        threads, outcomes = _held(proc.address, 6)
        assert v1.wait_for_arrivals(6) == 6  # all six held at v1
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        seen: list[object] = []

        def draining() -> bool:
            try:
                seen.append(fetch(admin, "/readyz"))
            except OSError as exc:  # the admin endpoint is gone: the process exited
                seen.append(exc)
            return seen[-1] == (503, "draining\n")

        poll(draining, 5, lambda: f"/readyz 503; saw {seen[-3:]}; log {proc.lines[-5:]}")
        poll(lambda: _refused(proc.address), 5, "new connections refused")
        # All of that while the six are still in flight, held at v1; now v1 answers.
        assert outcomes == {} and proc.proc.poll() is None
        gate.set()
        for t in threads:
            t.join(timeout=15)
        code = proc.wait(timeout=15)
        exited = time.monotonic()
        proc.wait_for(r"stopped: every in-flight request completed")
    finally:
        gate.set()
        proc.stop()
        v1.stop()
    assert [outcomes[i][0] for i in range(6)] == [200] * 6
    assert code == 0
    assert exited - sent < 10
    print(f"drain: 6 in-flight requests answered 200, exit 0 after {exited - sent:.2f}s")


def test_a_request_longer_than_the_drain_deadline_is_cut_and_exit_is_clean(
    backend, tmp_path: Path
) -> None:
    v1, v2 = backend("v1", delay=6.0), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = PymirrorProcess(routes, "--drain-timeout", "1")
    try:
        threads, outcomes = _held(proc.address, 1)
        assert v1.wait_for_arrivals(1) == 1
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        exited = time.monotonic()
        threads[0].join(timeout=10)
        proc.wait_for(r"drain deadline of 1\.0s passed with requests in flight")
    finally:
        proc.stop()
    assert code == 0
    # Cut at the deadline (1 s, and the core's 0.25 s to stop), not after v1's 6 s.
    assert 1.0 <= exited - sent < 4.0
    outcome, at = outcomes[0]
    assert outcome != 200 and isinstance(outcome, str)
    assert at - sent < 5.0
    print(f"cut: {outcome} after {at - sent:.2f}s, exit 0 after {exited - sent:.2f}s")


def test_a_shutdown_delay_keeps_serving_while_readyz_turns_503(backend, tmp_path: Path) -> None:
    """Kubernetes keeps sending traffic to a terminating pod for a few seconds: with
    `--shutdown-delay`, `/readyz` is 503 at once on SIGTERM while every request arriving
    during the delay, on new connections, is still served; then the drain runs."""
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    config = tmp_path / "routes.yaml"
    config.write_text(seed_config(v1.address, v2.address, mirror=None))
    delay = 1.5
    proc = PymirrorProcess(config, "--shutdown-delay", str(delay))
    admin = proc.admin_address
    outcomes: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def arrive() -> None:
        # A new connection per request, as traffic from another pod through kube-proxy.
        while not stop.is_set():
            try:
                with Client(proc.address, timeout=5) as client:
                    outcome: int | str = client.request().status
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            outcomes.append((time.monotonic(), outcome))
            time.sleep(0.01)

    try:
        load = threading.Thread(target=arrive, daemon=True)
        load.start()
        time.sleep(0.3)
        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        poll(lambda: fetch(admin, "/readyz")[0] == 503, 1, lambda: "readyz still 200")
        deregistered = time.monotonic() - signalled
        time.sleep(delay - deregistered - 0.2)
        stop.set()
        load.join(timeout=10)
        assert proc.wait() == 0
    finally:
        stop.set()
        proc.stop()
    assert deregistered < 0.5, deregistered
    during = [o for t, o in outcomes if t > signalled]
    assert len(during) > 20 and set(during) == {200}, during[-5:]
    assert all(o == 200 for _, o in outcomes)
    proc.wait_for(r"serving 1\.5s more with /readyz at 503 before draining")
