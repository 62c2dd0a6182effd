"""The core's access log: one JSON line per request and per mirror copy, linked by id."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import seed_config, settle
from support.client import Client
from support.ports import closed_port
from support.process import PymirrorProcess

from pymirror import Proxy, ServerOptions

pytestmark = pytest.mark.e2e


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_match_requests_one_for_one(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    log = tmp_path / "access.log"
    n = 25
    proxy = Proxy(seed_config(v1.address, v2.address), options=ServerOptions(access_log=str(log)))
    with proxy, Client(proxy.addresses[0]) as client:
        for i in range(n):
            agent = {"User-Agent": "pymirror-test"}
            client.request("POST", f"/reviews/{i}?q=1", body=b"x" * i, headers=agent)
        client.request("GET", "/", host="unknown.example")  # routed by the default host
        settle(proxy)
        stats = proxy.stats()
    lines = read_lines(log)  # the engine flushed its log on close
    primary = [line for line in lines if line["hop"] == "primary"]
    mirror = [line for line in lines if line["hop"] == "mirror"]
    assert len(primary) == n + 1 and len(mirror) == n + 1
    assert stats["access_log"]["written"] >= 2 * n and stats["access_log"]["dropped"] == 0
    by_id = {line["request_id"]: line for line in primary}
    for i, line in enumerate(primary[:n]):
        assert (line["method"], line["path"], line["status"]) == ("POST", f"/reviews/{i}?q=1", 200)
        assert (line["virtual_service"], line["route"], line["destination"], line["subset"]) == (
            "reviews",
            "0",
            "reviews",
            "v1",
        )
        assert (line["bytes_in"], line["bytes_out"], line["mirrored"]) == (i, 2, True)
        # Whole microseconds; the client's address; the endpoint that answered.
        assert isinstance(line["duration_us"], int) and line["duration_us"] > 0
        assert line["client"].startswith("127.0.0.1:")
        assert line["upstream"] == v1.address
        assert line["user_agent"] == "pymirror-test" and "response_flags" not in line
    for line in mirror:
        assert line["request_id"] in by_id
        assert (line["subset"], line["status"], line["outcome"]) == ("v2", 200, "answered")
        assert line["authority"].startswith("reviews-shadow") or "shadow" in line["authority"]


def test_failed_copies_are_logged_as_failed(backend, tmp_path: Path) -> None:
    v1 = backend("v1")
    log = tmp_path / "access.log"
    dead = closed_port()
    proxy = Proxy(seed_config(v1.address, dead), options=ServerOptions(access_log=str(log)))
    with proxy, Client(proxy.addresses[0]) as client:
        for i in range(5):
            client.request("GET", f"/{i}")
        stats = settle(proxy)
    mirror = [line for line in read_lines(log) if line["hop"] == "mirror"]
    # Copies dropped during the connect back-off were never sent: no line of their own.
    assert stats["failed"] + stats["dropped"]["ejected"] == 5
    assert [(m["status"], m["outcome"]) for m in mirror] == [(0, "failed")] * stats["failed"]
    # Which endpoint refused, and Envoy's flag for it, as on a primary's line.
    assert {(m["upstream"], m["response_flags"]) for m in mirror} == {(dead, "UF")}


def test_upstream_connections_are_counted_by_role(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    proxy = Proxy(seed_config(v1.address, v2.address), options=ServerOptions(worker_threads=1))
    with proxy, Client(proxy.addresses[0]) as client:
        for i in range(20):
            client.request("GET", f"/{i}")
            # Each copy ends before the next starts: copies that overlap (as they may on a
            # loaded machine) each need a connection of their own.
            settle(proxy)
        connections = {(c["role"], c["endpoint"]): c for c in proxy.stats()["upstream_connections"]}
    primary, mirror = connections[("primary", v1.address)], connections[("mirror", v2.address)]
    # One client connection, one request (and copy) at a time: pooled connections are
    # reused (a second one may open while the first finishes its exchange).
    assert 1 <= primary["opened_total"] <= 2 and primary["open"] == primary["opened_total"]
    assert 1 <= mirror["opened_total"] <= 10 and mirror["open"] >= 1
    assert ("primary", v2.address) not in connections


def test_the_proxys_own_answers_carry_envoys_response_flags(backend, tmp_path: Path) -> None:
    """No upstream connection (UF), no route (NR), an injected abort (FI): the line says
    which, as Envoy's `%RESPONSE_FLAGS%` would; an upstream's own answer has none."""
    v1 = backend("v1")
    log = tmp_path / "access.log"
    text = f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews: {{endpoints: [{{address: "{v1.address}"}}]}}
  dead: {{endpoints: [{{address: "{closed_port()}"}}]}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - match: [{{uri: {{prefix: /dead}}}}]
        route: [{{destination: {{host: dead}}}}]
      - match: [{{uri: {{prefix: /fault}}}}]
        fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
        route: [{{destination: {{host: reviews}}}}]
      - match: [{{uri: {{prefix: /ok}}}}]
        route: [{{destination: {{host: reviews}}}}]
"""
    proxy = Proxy(text, options=ServerOptions(access_log=str(log)))
    with proxy, Client(proxy.addresses[0]) as client:
        paths = ("/dead", "/fault", "/nowhere", "/ok")
        statuses = [client.request("GET", path).status for path in paths]
    assert statuses == [502, 418, 404, 200]
    flags = {line["path"]: line.get("response_flags") for line in read_lines(log)}
    assert flags == {"/dead": "UF", "/fault": "FI", "/nowhere": "NR", "/ok": None}


def test_sigusr1_reopens_the_file_after_logrotate_moved_it(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = tmp_path / "routes.yaml"
    config.write_text(seed_config(v1.address, v2.address, mirror=None))
    log, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    proc = PymirrorProcess(config, "--access-log", str(log))
    try:
        with Client(proc.address) as client:
            client.request("GET", "/before")
            wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 1)
            log.rename(rotated)  # logrotate's move; then its postrotate signal
            proc.signal(signal.SIGUSR1)
            proc.wait_for(r"SIGUSR1: access log reopened")
            client.request("GET", "/after")
            wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 1)
    finally:
        proc.stop()
    assert [line["path"] for line in read_lines(rotated)] == ["/before"]
    assert [line["path"] for line in read_lines(log)] == ["/after"]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_gone_before_the_end_of_its_answer_is_flagged_dc(backend, tmp_path: Path) -> None:
    """The client reads the head of a 16 MiB answer and closes: the line says DC
    (downstream connection terminated, as Envoy says) and how much it got."""
    size = 16 << 20
    big = backend("big", body=b"x" * size)
    log = tmp_path / "access.log"
    proxy = Proxy(seed_config(big.address, big.address, mirror=None),
                  options=ServerOptions(access_log=str(log)))  # fmt: skip
    with proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(b"GET /big HTTP/1.1\r\nHost: reviews\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.1 200")
        with Client(proxy.addresses[0]) as client:
            assert client.request("GET", "/whole").status == 200  # read to its end
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 2)
    lines = {line["path"]: line for line in read_lines(log)}
    assert lines["/big"]["response_flags"] == "DC"
    assert lines["/big"]["status"] == 200 and lines["/big"]["bytes_out"] < size
    assert "response_flags" not in lines["/whole"] and lines["/whole"]["bytes_out"] == size


def test_the_field_set_is_chosen_on_the_command_line(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = tmp_path / "routes.yaml"
    config.write_text(seed_config(v1.address, v2.address))
    log = tmp_path / "access.log"
    fields = "hop,request_id,status,upstream"
    proc = PymirrorProcess(config, "--access-log", str(log), "--access-log-fields", fields)
    try:
        with Client(proc.address) as client:
            for i in range(3):
                assert client.request("GET", f"/{i}").status == 200
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 6)
    finally:
        proc.stop()
    lines = read_lines(log)
    assert {tuple(sorted(line)) for line in lines} == {tuple(sorted(fields.split(",")))}
    upstreams = {(line["hop"], line["upstream"]) for line in lines}
    assert upstreams == {("primary", v1.address), ("mirror", v2.address)}
    assert len({line["request_id"] for line in lines}) == 3


def test_an_unknown_field_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(seed_config(closed_port(), closed_port()))
    done = subprocess.run(
        [sys.executable, "-m", "pymirror.cli", "run", str(config), "--admin", "127.0.0.1:0",
         "--access-log", "-", "--access-log-fields", "status,latency"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "unknown access log field `latency`; the fields are: time, hop" in done.stderr
