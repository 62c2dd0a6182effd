"""The image from deploy/container, built and run with podman as a user would run it:
its own entrypoint and command, the config mounted read-only at /etc/pymirror, a
read-only root filesystem, host networking to reach backends on this machine. Traffic
goes through it to real backends and its copies to a real mirror; `podman stop` sends
the image's stop signal while requests are in flight, and they all complete.

Skipped only where podman or mmdebstrap is missing, and then it says so."""

from __future__ import annotations

import http.client
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from support import container
from support.backend import Backend

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        container.missing() is not None,
        reason=f"cannot build or run containers here: {container.missing()}",
    ),
]

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = container.conf(tmp_path_factory.mktemp("podman"))
    container.build(env)
    yield env


@pytest.fixture
def run_image(
    podman_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[str], container.Container]]:
    started: list[container.Container] = []

    def run(routes: str) -> container.Container:
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "routes.yaml").write_text(routes)
        etc.chmod(0o755)
        (etc / "routes.yaml").chmod(0o644)
        c = container.Container(
            podman_env, f"pymirror-test-{len(started)}-{tmp_path.name[-12:]}",
            "--network=host", "--read-only", "--volume", f"{etc}:/etc/pymirror:ro",
        )  # fmt: skip
        started.append(c)
        return c

    yield run
    for c in started:
        c.remove()


def routes(primary: Backend, mirror: Backend) -> str:
    return f"""
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
services:
  app: {{endpoints: [{{address: {primary.address}}}]}}
  app-v2: {{endpoints: [{{address: {mirror.address}}}]}}
virtualServices:
  - name: app
    hosts: ["*"]
    http:
      - route: [{{destination: {{host: app}}}}]
        mirror: {{host: app-v2}}
        mirrorPercentage: {{value: 100}}
"""


def get(address: str, path: str = "/") -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def listening(c: container.Container) -> tuple[str, str]:
    """The proxy's and the admin endpoint's addresses, from the container's log."""
    proxy = c.wait_for(r"(?<!admin )listening on (\S+)").group(1)
    admin = c.wait_for(r"admin listening on (\S+)").group(1)
    return proxy, admin


def test_the_image_is_what_the_manifests_run(podman_env: dict[str, str]) -> None:
    def image(template: str) -> str:
        done = container.podman(
            podman_env, "image", "inspect", "--format", template, container.IMAGE
        )
        return done.stdout.strip()

    # Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
    uid = image("{{.Config.User}}").split(":")[0]
    assert uid.isdigit() and uid != "0", uid
    assert image("{{json .Config.Entrypoint}}") == '["pymirror"]'
    assert image("{{json .Config.Cmd}}") == '["run","/etc/pymirror"]'
    assert image("{{.Config.StopSignal}}") in ("SIGTERM", "15")
    for manifest in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if not doc or doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            [c] = [c for c in pod["containers"] if c["name"] == "pymirror"]
            assert c["image"] == container.IMAGE, manifest.name
            assert c["command"] == ["pymirror"], manifest.name
            assert c["args"][:2] == ["run", "/etc/pymirror"], manifest.name
            # The container's securityContext over the pod's, as the kubelet reads them.
            security = {**pod.get("securityContext", {}), **c["securityContext"]}
            assert security["readOnlyRootFilesystem"] is True, manifest.name
            assert security["runAsNonRoot"] is True, manifest.name
            assert str(security.get("runAsUser", uid)) == uid, manifest.name


def test_it_serves_and_mirrors_as_non_root_on_a_read_only_root(
    run_image: Callable[[str], container.Container], backend: Callable[..., Backend]
) -> None:
    primary, mirror = backend("v1"), backend("v2")
    c = run_image(routes(primary, mirror))
    proxy, admin = listening(c)
    assert get(admin, "/readyz")[0] == 200

    answers = [get(proxy, f"/item/{i}") for i in range(40)]
    assert answers == [(200, b"v1")] * 40
    copies = mirror.wait_for(40)
    assert sorted(s.path for s in copies) == sorted(f"/item/{i}" for i in range(40))
    # The Host was an IP address, which takes no suffix: the mirror's name carries it.
    assert {s.headers["host"] for s in copies} == {f"app-v2-shadow:{proxy.rsplit(':', 1)[1]}"}

    # The process is pymirror itself (no shell in between), and not root.
    pid = c.inspect("{{.State.Pid}}")
    status = Path(f"/proc/{pid}/status").read_text()
    [uid] = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    assert set(uid) == {"10001"}, status
    assert "pymirror" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def test_podman_stop_drains_the_requests_in_flight(
    run_image: Callable[[str], container.Container], backend: Callable[..., Backend]
) -> None:
    primary, mirror = backend("v1", delay=1.0), backend("v2")
    c = run_image(routes(primary, mirror))
    proxy, _ = listening(c)

    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        answer = get(proxy, f"/slow/{i}")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    assert primary.wait_for_arrivals(5) >= 5
    # `podman stop` sends the image's STOPSIGNAL and waits; 137 would mean it had to kill.
    stopped = c.podman("stop", "--time", "30", c.name)
    for t in threads:
        t.join(timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert answers == [(200, b"v1")] * 5
    assert c.inspect("{{.State.ExitCode}}") == "0"
    log = c.logs()
    assert f"{signal.SIGTERM.name}: draining" in log
    assert "stopped: every in-flight request completed" in log
