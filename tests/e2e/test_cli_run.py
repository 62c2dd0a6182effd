"""`pymirror run`: the seed end to end, SIGHUP reload, SIGTERM drain, `pymirror check`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import seed_config
from support.client import Client
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def run_pymirror():
    started: list[PymirrorProcess] = []

    def start(config: Path) -> PymirrorProcess:
        p = PymirrorProcess(config)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_seed_serves_v1_and_mirrors_to_v2(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes)
    proc.wait_for(r"mirror 100% -> reviews v2")
    n = 50
    with Client(proc.address) as client:
        replies = [
            client.request("POST", f"/reviews/{i}?page=1", body=f"body-{i}".encode())
            for i in range(n)
        ]
    copies = v2.wait_for(n)
    assert {(r.status, r.body) for r in replies} == {(200, b"v1")}
    by_id = {c.headers["x-request-id"]: c for c in copies}
    assert len(by_id) == n
    for primary in v1.seen:
        copy = by_id[primary.headers["x-request-id"]]
        assert (copy.method, copy.path, copy.query, copy.body) == (
            primary.method,
            primary.path,
            primary.query,
            primary.body,
        )
        assert copy.headers["host"] == "reviews-shadow"
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_sighup_reload_changes_percentage_and_refuses_broken_config(
    backend, run_pymirror, tmp_path: Path
) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes)
    with Client(proc.address) as client:
        client.request("GET", "/before")
        v2.wait_for(1)

        routes.write_text(
            seed_config(v1.address, v2.address, mirror="mirrorPercentage: {value: 0}")
        )
        proc.signal(signal.SIGHUP)
        proc.wait_for(r"reloaded: now serving config version")
        for i in range(50):
            assert client.request("GET", f"/after/{i}").status == 200

        routes.write_text(
            seed_config(v1.address, v2.address, mirror="mirrorPercentage: {value: 1000}")
        )
        proc.signal(signal.SIGHUP)
        refused = proc.wait_for(r"reload refused")
        error = proc.wait_for(r"routes\.yaml:\d+:\d+: .*mirrorPercentage")
        assert client.request("GET", "/still-serving").status == 200
    assert refused and error
    assert [s.path for s in v2.seen] == ["/before"]
    assert proc.proc.poll() is None
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0


def test_sigterm_lets_in_flight_requests_complete(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1", delay=1.0), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes)
    results: list[int] = []

    def call(i: int) -> None:
        with Client(proc.address) as client:
            results.append(client.request("GET", f"/slow/{i}").status)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    # All 8 are in flight: v1 holds each for 1 s before answering.
    assert v1.wait_for_arrivals(8) == 8
    proc.signal(signal.SIGTERM)
    proc.wait_for(r"draining")
    for t in threads:
        t.join(timeout=15)
    assert proc.wait() == 0
    assert results == [200] * 8
    proc.wait_for(r"every in-flight request completed")


def test_a_second_sigterm_cuts_the_drain(backend, run_pymirror, tmp_path: Path) -> None:
    """v1 holds its answer for 8 s and the drain would wait 10 s for it; a second SIGTERM
    ends the drain at once: pymirror exits before v1 has answered, and the in-flight
    request is cut, not answered."""
    v1, v2 = backend("v1", delay=8.0), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address, mirror=None))
    proc = run_pymirror(routes)
    results: list[object] = []

    def call() -> None:
        try:
            with Client(proc.address) as client:
                results.append(client.request("GET", "/slow").status)
        except OSError as exc:
            results.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert v1.wait_for_arrivals(1) == 1
    proc.signal(signal.SIGTERM)
    proc.wait_for(r"draining")
    proc.signal(signal.SIGTERM)
    proc.wait_for(r"SIGTERM again: cutting the drain")
    assert proc.wait() == 0
    proc.wait_for(r"drain cut short")
    caller.join(timeout=15)
    # Without the cut, the drain waits for v1's answer and the client gets 200.
    assert len(results) == 1 and not isinstance(results[0], int), results


def test_check_prints_the_plan_and_exit_1_on_errors(backend, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config("127.0.0.1:9081", "127.0.0.1:9082"))
    ok = subprocess.run(
        [sys.executable, "-m", "pymirror.cli", "check", str(routes)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert "reviews v2" in ok.stdout and "100%" in ok.stdout

    routes.write_text(routes.read_text().replace("mirrorPercentage", "mirrorPercentge"))
    bad = subprocess.run(
        [sys.executable, "-m", "pymirror.cli", "check", str(routes)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1
    assert f"{routes}:" in bad.stderr
    assert "mirrorPercentge" in bad.stderr and "mirrorPercentage" in bad.stderr


def test_a_second_instance_on_a_served_address_is_refused_unless_asked(
    backend, tmp_path: Path
) -> None:
    """Listeners use SO_REUSEPORT (one socket per worker), which would let a second
    `pymirror run` on the same address start and split the traffic in silence."""
    v1, v2 = backend("v1", body=b"v1"), backend("v2")
    config = tmp_path / "routes.yaml"
    config.write_text(seed_config(v1.address, v2.address, mirror=None))
    first = PymirrorProcess(config)
    second: PymirrorProcess | None = None
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "run", str(config), "--listen",
             first.address, "--admin", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode == 1
        said = refused.stdout + refused.stderr
        assert first.address in said and "already served by another process" in said, said
        assert "--reuse-port" in said
        # On purpose (start the new one, then stop the old): both serve the address.
        second = PymirrorProcess(config, "--reuse-port", listen=first.address)
        assert second.address == first.address
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
        with Client(second.address) as client:
            assert client.request().body == b"v1"
    finally:
        first.stop()
        if second is not None:
            second.stop()


KUBECTL_LIST = """\
apiVersion: v1
items:
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {{name: reviews, namespace: default, resourceVersion: "1"}}
  spec:
    hosts: [reviews]
    http: [{{route: [{{destination: {{host: reviews}}}}]}}]
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {{name: reviews, namespace: default}}
  spec:
    hosts: [reviews]
    ports: [{{number: 80, name: http, protocol: HTTP}}]
    resolution: STATIC
    endpoints: [{{address: "{host}", ports: {{http: {port}}}}}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {{name: unrelated}}
  data: {{key: value}}
kind: List
metadata: {{resourceVersion: ""}}
"""


def test_kubectl_list_output_on_stdin_is_checked_and_served(backend) -> None:
    """`kubectl get vs,se,cm -o yaml | pymirror check -` and `... | pymirror run -`."""
    v1 = backend("v1", body=b"v1")
    host, port = v1.address.rsplit(":", 1)
    text = KUBECTL_LIST.format(host=host, port=port)
    checked = subprocess.run(
        [sys.executable, "-m", "pymirror.cli", "check", "-"],
        input=text, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "VirtualService default/reviews (<stdin>:" in checked.stdout
    # The ConfigMap is skipped with one warning, at its place in the list.
    assert "<stdin>:18:9: warning: items[2].kind: `ConfigMap` skipped" in checked.stdout
    proc = PymirrorProcess("-", stdin=text)
    try:
        with Client(proc.address) as client:
            assert client.request().body == b"v1"
        # Standard input cannot be read again: SIGHUP says so and keeps serving.
        proc.signal(signal.SIGHUP)
        proc.wait_for(r"came from standard input, which cannot be read again")
        proc.wait_for(r"reloaded: now serving config version")
        with Client(proc.address) as client:
            assert client.request().body == b"v1"
    finally:
        proc.stop()


def test_check_strict_fails_on_a_mirror_host_typo(backend, tmp_path: Path) -> None:
    """A mirror host typo (`reviewz`, no services entry, no DNS name) passes `check` with
    a warning, and fails it with `--strict`, as a CI gate wants."""
    v1, v2 = backend("v1"), backend("v2")
    config = tmp_path / "routes.yaml"
    config.write_text(
        seed_config(v1.address, v2.address).replace(
            "mirror: {host: reviews, subset: v2}", "mirror: {host: reviewz}"
        )
    )

    def check(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "check", str(config), *flags],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    lenient, strict = check(), check("--strict")
    assert lenient.returncode == 0
    assert "warning: virtualServices[0].http[0].mirror.host: host `reviewz` has no" in (
        lenient.stdout
    )
    assert strict.returncode == 1
    assert "warnings fail the check (--strict)" in strict.stderr
