"""Real peers for the benchmarks: nginx backends and `pymirror run` as a process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

NGINX_BACKEND = """
{load_module}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {access_log};
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 0;
    server {{
        listen {address} backlog=4096;
        location / {{ {location} }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(address: str, timeout: float = 10.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {address}")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    address: str
    workdir: Path | None = None

    def requests_seen(self) -> int:
        """Lines in an nginx backend's access log (started with `log=True`)."""
        assert self.workdir is not None
        log = self.workdir / "access.log"
        return len(log.read_bytes().splitlines()) if log.exists() else 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def nginx_backend(
    workdir: Path, *, status: int = 200, body: str = "v1", delay: float = 0.0, log: bool = False
) -> Process:
    """nginx answering every request with a fixed body: never the bottleneck.
    With `delay`, it answers after that many seconds (echo module, no CPU held);
    with `log`, it writes an access log whose lines count what reached it."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    conf = workdir / "nginx.conf"
    # echo_sleep holds the request on a timer, not on a CPU.
    location = f'echo_sleep {delay}; echo "{body}";' if delay else f'return {status} "{body}\\n";'
    conf.write_text(
        NGINX_BACKEND.format(
            dir=workdir,
            address=address,
            location=location,
            load_module=f"load_module {ECHO_MODULE};" if delay else "",
            access_log=f"{workdir}/access.log" if log else "off",
        )
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(address)
    return Process(proc, address, workdir)


def pymirror_run(config: Path, *, workers: int = 0) -> Process:
    """`pymirror run` as its own process, so its CPU time can be read from /proc."""
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pymirror.cli",
            "--log-level",
            "warning",
            "run",
            str(config),
            "--listen",
            address,
            "--workers",
            str(workers),
            "--drain-timeout",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_listening(address)
    return Process(proc, address)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
