"""deploy/kubernetes: each manifest's pymirror container is run here as the kubelet would
run it: its command and args, its ConfigMap's files where the volume mounts them, and
the ports its probes, Service and scrape annotations name. The test fails when a manifest
disagrees with the program: a probe path or port it does not serve, a container port it
does not listen on, a grace period shorter than its shutdown delay and drain."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymirror.config import load_config

pytestmark = pytest.mark.e2e

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
#: Seconds the kubelet's SIGKILL must leave on top of the shutdown delay and the drain.
MARGIN = 5


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pymirror_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment's pod template and its pymirror container."""
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    [container] = [c for c in template["spec"]["containers"] if c["name"] == "pymirror"]
    return template, container


def flag(args: list[str], name: str) -> float:
    return float(args[args.index(name) + 1])


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def mounted(docs: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any],
            root: Path) -> dict[str, Path]:  # fmt: skip
    """The container's ConfigMap volumes written under ``root``, by mount path."""
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    out: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        config_map = maps[volumes[mount["name"]]["configMap"]["name"]]
        directory = root / mount["name"]
        directory.mkdir()
        for name, text in config_map["data"].items():
            (directory / name).write_text(text)
        out[mount["mountPath"]] = directory
    return out


@pytest.mark.parametrize("manifest", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_manifest_runs_as_written(manifest: Path, tmp_path: Path) -> None:
    docs = documents(manifest)
    template, container = pymirror_container(docs)
    pod = template["spec"]
    args = container["args"]
    mounts = mounted(docs, pod, container, tmp_path)
    argv = [str(mounts.get(a, a)) for a in args]
    config = load_config(*(mounts[a] for a in args if a in mounts))
    assert config.admin is not None
    admin_port = int(config.admin.address.rsplit(":", 1)[1])
    listen_ports = {int(lst.address.rsplit(":", 1)[1]) for lst in config.listeners}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # What the manifest says of the program, checked against the program's config.
    delay, drain = flag(args, "--shutdown-delay"), flag(args, "--drain-timeout")
    assert pod["terminationGracePeriodSeconds"] >= delay + drain + MARGIN
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
        assert ports[container[probe]["httpGet"]["port"]] == admin_port
    assert set(ports.values()) <= listen_ports | {admin_port}
    annotations = template["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == admin_port
        assert annotations["prometheus.io/path"] == "/metrics"
    for service in (d for d in docs if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports

    # And the program, run with exactly that command line.
    assert container["command"] == ["pymirror"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymirror.cli", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if get(admin_port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert get(admin_port, "/healthz")[0] == 200
        assert "pymirror_build_info" in get(admin_port, "/metrics")[1]
        # Termination as the kubelet does it: /readyz turns 503 at once, then the
        # process exits 0 well within the grace period.
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert get(admin_port, "/readyz")[0] == 503
        assert proc.wait(timeout=pod["terminationGracePeriodSeconds"]) == 0
        assert time.monotonic() - stopped >= delay
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
