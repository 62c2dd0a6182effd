"""A peer as an operating-system process: start, wait until it listens, read its CPU
time and peak memory from /proc (the whole process tree), stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(address: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {address}")


def _stat(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (nginx: master and workers)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            todo += _children(current)
        except OSError:  # exited meanwhile
            continue
        tree.append(current)
    return tree


def cpu_split_seconds(pid: int) -> tuple[float, float]:
    """User and system time of the process tree, all threads, apart. Children that exited
    and were reaped (nginx's old workers after a reload) count through cutime/cstime."""
    user = system = 0
    for member in process_tree(pid):
        try:
            fields = _stat(member)
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
        if member == pid:
            user, system = user + int(fields[13]), system + int(fields[14])
    return user / _TICKS, system / _TICKS


def cpu_seconds(pid: int) -> float:
    """User + system time of the process tree (`cpu_split_seconds`)."""
    return sum(cpu_split_seconds(pid))


def _status_bytes(pid: int, name: str) -> int:
    """A `/proc/PID/status` size field (`VmHWM`, `VmRSS`) summed over the process tree."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(f"{name}:"):
                total += int(line.split()[1]) * 1024
    return total


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) summed over the process tree."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int:
    """VmRSS (resident set now) summed over the process tree."""
    return _status_bytes(pid, "VmRSS")


@dataclass
class Process:
    """A started peer: its process, the address it serves and its work folder."""

    proc: subprocess.Popen[bytes]
    address: str
    workdir: Path
    log: Path | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def stderr_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-2000:]


def start(
    argv: Sequence[str], address: str, workdir: Path, env: dict[str, str] | None = None
) -> Process:
    """Start `argv` with its output in workdir/stderr.log and wait until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "stderr.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    peer = Process(proc, address, workdir, log)
    try:
        wait_listening(address, proc)
    except Exception as exc:
        peer.stop()
        raise RuntimeError(f"{argv[0]} did not start: {exc}\n{peer.stderr_tail()}") from exc
    return peer
