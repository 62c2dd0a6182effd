"""pymirror's image, built by `deploy/container/build.sh` and run with podman.

Podman's defaults need two things some machines lack: crun refuses a host whose cgroups
are mixed v1 and v2 (as these are), and root's default ulimits are raised past what a
process without CAP_SYS_RESOURCE may set. So the tests run podman with a containers.conf
that picks runc, when installed, and ulimits no higher than this process's own. Nothing
in the image depends on it.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "container" / "build.sh"
IMAGE = "pymirror:latest"


def missing() -> str | None:
    """Why this machine cannot build and run the image, or None when it can."""
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc mmdebstrap)"
    return None


def conf(directory: Path) -> dict[str, str]:
    """The environment podman runs with here: a containers.conf written in `directory`."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
    lines = ["[containers]", f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]']
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    path = directory / "containers.conf"
    path.write_text("\n".join(lines) + "\n")
    return {**os.environ, "CONTAINERS_CONF": str(path)}


def build(env: dict[str, str]) -> str:
    """Builds the image (the base is reused while its recipe holds) and returns its id."""
    done = subprocess.run(
        [str(BUILD), IMAGE], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"build.sh failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1].split()[0]


def podman(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Container:
    """One `podman run -d` of the image; `podman rm -f` at `remove()`."""

    def __init__(self, env: dict[str, str], name: str, *args: str) -> None:
        self.env = env
        self.name = name
        podman(env, "rm", "--force", name)
        started = self.podman("run", "--detach", "--name", name, *args, IMAGE)
        assert started.returncode == 0, started.stderr

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return podman(self.env, *args, timeout=timeout)

    def logs(self) -> str:
        done = self.podman("logs", self.name)
        return done.stdout + done.stderr

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first log line matching `pattern` (bounded wait)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.logs()
            if m := regex.search(text):
                return m
            assert time.monotonic() < deadline, f"no log line matching {pattern!r}:\n{text}"
            time.sleep(0.1)

    def inspect(self, template: str) -> str:
        return self.podman("inspect", "--format", template, self.name).stdout.strip()

    def remove(self) -> None:
        self.podman("rm", "-f", "--time", "0", self.name)
