"""The admin endpoint of `pymirror run`: metrics that add up, health, readiness during a
drain, the running config, raw stats; and the same endpoint embedded under trio."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from conftest import seed_config
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from support.client import Client
from support.ports import closed_port
from support.process import PymirrorProcess

import pymirror
from pymirror.admin import Admin

pytestmark = pytest.mark.e2e

N = 30


@pytest.fixture
def run_pymirror() -> Iterator[Callable[..., PymirrorProcess]]:
    started: list[PymirrorProcess] = []

    def start(config: Path, *extra: str) -> PymirrorProcess:
        p = PymirrorProcess(config, *extra)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def get(address: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # holds the connection until closed
            return exc.code, exc.read().decode()


def samples(text: str, name: str) -> list[Sample]:
    """Every sample named `name` (as exposed: `pymirror_requests_total`, `..._count`)."""
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_metrics(admin: str, until: Callable[[str], bool], timeout: float = 15.0) -> str:
    """/metrics once `until` holds for it (copies finish after their primaries); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        status, text = get(admin, "/metrics")
        assert status == 200
        if until(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_metrics_add_up_with_a_healthy_mirror(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes)
    admin = proc.admin_address
    with Client(proc.address) as client:
        assert {client.request("GET", f"/r/{i}").status for i in range(N)} == {200}
    text = wait_metrics(
        admin,
        lambda t: total(t, "pymirror_mirror_requests_total", outcome="answered") >= N,
    )

    requests = samples(text, "pymirror_requests_total")
    assert sum(s.value for s in requests) == N
    assert {(s.labels["subset"], s.labels["code"]) for s in requests} == {("v1", "200")}
    assert {s.labels["virtual_service"] for s in requests} == {"reviews"}
    assert total(text, "pymirror_request_duration_seconds_count", subset="v1") == N
    inf = total(text, "pymirror_request_duration_seconds_bucket", subset="v1", le="+Inf")
    assert inf == N

    assert total(text, "pymirror_mirror_requests_total", outcome="answered") == N
    for outcome in ("failed", "timed_out", "dropped"):
        assert total(text, "pymirror_mirror_requests_total", outcome=outcome) == 0
    assert total(text, "pymirror_mirror_responses_total", subset="v2", code="200") == N
    assert total(text, "pymirror_mirror_request_duration_seconds_count", subset="v2") == N

    assert total(text, "pymirror_config_reloads_total") == 0
    [info] = samples(text, "pymirror_config_info")
    assert info.value == 1 and len(info.labels["version"]) == 12 and info.labels["checksum"]
    assert total(text, "process_cpu_seconds_total") > 0


def test_dead_mirror_counts_failed_copies(backend, run_pymirror, tmp_path: Path) -> None:
    v1 = backend("v1")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, closed_port()))
    proc = run_pymirror(routes)
    with Client(proc.address) as client:
        assert {client.request("GET", f"/r/{i}").status for i in range(N)} == {200}

    def tried_and_dropped(t: str) -> float:
        # After a refusal, copies are dropped as `ejected` without a connect attempt.
        return total(t, "pymirror_mirror_requests_total", outcome="failed") + total(
            t, "pymirror_mirror_dropped_total", reason="ejected"
        )

    text = wait_metrics(proc.admin_address, lambda t: tried_and_dropped(t) >= N)
    assert tried_and_dropped(text) == N
    assert total(text, "pymirror_mirror_requests_total", outcome="failed") >= 1
    assert total(text, "pymirror_mirror_requests_total", outcome="answered") == 0
    assert total(text, "pymirror_requests_total", subset="v1", code="200") == N


def test_readyz_turns_503_while_draining(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1", delay=2.0), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes)
    admin = proc.admin_address
    assert get(admin, "/readyz") == (200, "ready\n")
    assert get(admin, "/healthz") == (200, "ok\n")

    statuses: list[int] = []

    def slow_request() -> None:
        with Client(proc.address, timeout=15) as client:
            statuses.append(client.request("GET", "/slow").status)

    caller = threading.Thread(target=slow_request)
    caller.start()
    assert v1.wait_for_arrivals(1) == 1  # held in flight by v1 for 2 s
    proc.signal(signal.SIGTERM)
    proc.wait_for(r"draining")
    assert get(admin, "/readyz") == (503, "draining\n")
    assert get(admin, "/healthz") == (200, "ok\n")  # alive, just not ready
    caller.join(timeout=15)
    assert statuses == [200]
    assert proc.wait() == 0


def test_config_and_stats(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes)
    admin = proc.admin_address
    version = proc.wait_for(r"config version (\w+)").group(1)
    with Client(proc.address) as client:
        client.request("GET", "/one")

    status, body = get(admin, "/config")
    assert status == 200
    config = json.loads(body)
    assert (config["version"], config["sources"]) == (version, [str(routes)])
    assert config["listeners"] == [proc.address]
    assert any("mirror 100% -> reviews v2" in line for line in config["routes"])
    assert config["snapshot"]["virtual_hosts"][0]["name"] == "reviews"

    status, body = get(admin, "/stats")
    stats = json.loads(body)
    assert status == 200 and stats["version"] == version
    assert stats["destinations"][0]["responses"] == {"200": 1}

    assert get(admin, "/nope")[0] == 404
    request = urllib.request.Request(f"http://{admin}/metrics", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    refused.value.close()
    assert refused.value.code == 405


def test_reloads_are_counted_and_the_version_follows(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    started = time.time()
    proc = run_pymirror(routes)
    admin = proc.admin_address
    first = get(admin, "/metrics")[1]
    before = samples(first, "pymirror_config_info")[0].labels
    [build] = samples(first, "pymirror_build_info")
    assert build.value == 1 and build.labels["version"] == pymirror.__version__
    # The start counts as a load that took.
    assert total(first, "pymirror_config_last_reload_successful") == 1
    loaded_at = total(first, "pymirror_config_last_reload_success_timestamp_seconds")
    assert started - 1 <= loaded_at <= time.time()

    time.sleep(1.1)  # the timestamp has whole seconds
    routes.write_text(seed_config(v1.address, v2.address, mirror="mirrorPercentage: {value: 5}"))
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reloaded: now serving")
    reloaded_at = total(
        get(admin, "/metrics")[1], "pymirror_config_last_reload_success_timestamp_seconds"
    )
    assert reloaded_at > loaded_at
    routes.write_text("listeners: [")
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"reload refused")

    text = get(admin, "/metrics")[1]
    assert total(text, "pymirror_config_reloads_total", result="success") == 1
    assert total(text, "pymirror_config_reloads_total", result="failure") == 1
    after = samples(text, "pymirror_config_info")[0].labels
    assert after["version"] != before["version"] and after["checksum"] != before["checksum"]
    # Refused: an older configuration serves, which the alert on this gauge catches.
    assert total(text, "pymirror_config_last_reload_successful") == 0
    assert total(text, "pymirror_config_last_reload_success_timestamp_seconds") == reloaded_at


def test_connections_and_access_log_lines(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    log = tmp_path / "access.log"
    proc = run_pymirror(routes, "--access-log", str(log))
    with Client(proc.address) as client:
        for i in range(5):
            client.request("GET", f"/{i}")
    text = wait_metrics(
        proc.admin_address,
        lambda t: total(t, "pymirror_access_log_lines_total", result="written") >= 10,
    )
    # One primary line and one mirror line per request.
    assert total(text, "pymirror_access_log_lines_total", result="written") == 10
    assert total(text, "pymirror_access_log_lines_total", result="dropped") == 0
    # One client connection, one request at a time: pooled connections are reused (a
    # request may start before the previous one's connection is back in the pool).
    assert 1 <= total(text, "pymirror_upstream_connections", subset="v1", role="primary") <= 2
    assert 1 <= total(text, "pymirror_upstream_connections", subset="v2", role="mirror") <= 5
    # v2's endpoint is only a mirror here: nothing is counted for it as a primary.
    assert samples(text, "pymirror_upstream_connections_opened_total") == [
        s for s in samples(text, "pymirror_upstream_connections_opened_total")
        if (s.labels["subset"], s.labels["role"]) in {("v1", "primary"), ("v2", "mirror")}
    ]  # fmt: skip


def test_admin_address_in_use_is_a_clear_error(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "run", str(routes), "--admin",
             f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert run.returncode == 1
    assert f"admin endpoint: cannot listen on 127.0.0.1:{port}" in run.stderr


def test_non_loopback_admin_address_is_warned_about(backend, run_pymirror, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = run_pymirror(routes, "--admin", "0.0.0.0:0")
    proc.wait_for(r"WARNING .*admin endpoint on 0\.0\.0\.0:\d+ is reachable from other hosts")
    port = proc.admin_address.rsplit(":", 1)[1]
    assert get(f"127.0.0.1:{port}", "/healthz") == (200, "ok\n")


def test_embedded_admin_under_trio(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")

    async def main() -> None:
        config = seed_config(v1.address, v2.address)
        with trio.fail_after(20):
            await embedded(config)

    async def embedded(config: str) -> None:
        async with pymirror.serve(config) as proxy, trio.open_nursery() as nursery:
            admin = Admin(proxy)
            address = await nursery.start(admin.serve, "127.0.0.1:0")
            status, _ = await trio.to_thread.run_sync(get, address, "/readyz")
            assert status == 200
            admin.draining = True
            status, _ = await trio.to_thread.run_sync(get, address, "/readyz")
            assert status == 503
            text = (await trio.to_thread.run_sync(get, address, "/metrics"))[1]
            assert total(text, "pymirror_requests_total") == 0
            assert samples(text, "pymirror_config_info")[0].labels["version"] == proxy.version
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_mirror_buffer_budget_flag_bounds_what_copies_may_hold(
    backend, run_pymirror, tmp_path: Path
) -> None:
    """With `afterPrimarySuccess` a copy's whole body waits queued until the primary has
    answered: 3 MiB fits the copy's own 4 MiB bound and the 256 MiB default budget, but
    not `--mirror-buffer-budget 1`, where the copy is dropped as `buffer_budget`."""
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        seed_config(v1.address, v2.address) + "mirrorDefaults: {afterPrimarySuccess: true}\n"
    )
    body = b"z" * (3 << 20)
    for flags, copied in (((), 1), (("--mirror-buffer-budget", "1"), 0)):
        proc = run_pymirror(routes, *flags)
        with Client(proc.address) as client:
            assert client.request("POST", "/big", body=body).status == 200
        deadline = time.monotonic() + 10
        while True:
            [mirror] = json.loads(get(proc.admin_address, "/stats")[1])["mirrors"]
            if mirror["in_flight"] == 0:
                break
            assert time.monotonic() < deadline, mirror
            time.sleep(0.02)
        assert (mirror["answered"], mirror["dropped"]["buffer_budget"]) == (copied, 1 - copied)
        proc.stop()
    assert [s.body == body for s in v1.seen] == [True, True]
    assert [s.body == body for s in v2.seen] == [True]
