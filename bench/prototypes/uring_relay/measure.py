"""The system side of a request on epoll and on io_uring, side by side (issue 19).

Builds nothing: run `cargo build --release` here first. Starts an nginx backend
(one worker, a 3-byte answer, as bench/ uses), then the relay in each mode in
turn, and for each: wrk 1 thread x 32 keep-alive connections for 5 s, the
relay's user and system CPU per request from /proc, and, in a separate
2-second run under `strace -c`, the system calls per request (strace slows the
relay; the counts, not that run's speed, are what it is for). Rounds alternate
the modes so that drift on a shared machine falls on both.

    python3 bench/prototypes/uring_relay/measure.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELAY = HERE / "target" / "release" / "uring-relay"
BACKEND = 18181
TICK = os.sysconf("SC_CLK_TCK")
#: The relay's builds: tokio on epoll, tokio-uring, and the raw ring (src/ring.rs).
MODES = ("epoll", "uring", "ring")

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def wrk(port: int, seconds: int) -> int:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    match = re.search(r"(\d+) requests in", out)
    assert match, out
    return int(match.group(1))


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], check=False)
        if done.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def syscalls_per_request(pid: int, port: int, workdir: Path) -> dict[str, float]:
    out = workdir / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(pid)])
    time.sleep(0.5)
    requests = wrk(port, 2)
    tracer.terminate()
    tracer.wait(timeout=30)
    calls: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(parts) >= 5 and parts[0][0].isdigit() and not line.startswith("100.00"):
            calls[parts[-1]] = int(parts[3]) / requests
    return calls


def measure(mode: str, port: int, workdir: Path) -> dict[str, object]:
    relay = subprocess.Popen([str(RELAY), mode, f"127.0.0.1:{port}", f"127.0.0.1:{BACKEND}"])
    try:
        wait_port(port)
        wrk(port, 1)  # warm: connections open, buffers grown
        user0, sys0 = cpu_seconds(relay.pid)
        requests = wrk(port, 5)
        user1, sys1 = cpu_seconds(relay.pid)
        calls = syscalls_per_request(relay.pid, port, workdir)
        return {
            "mode": mode,
            "req_per_s": requests / 5,
            "user_us": (user1 - user0) / requests * 1e6,
            "sys_us": (sys1 - sys0) / requests * 1e6,
            "syscalls": {k: round(v, 3) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
        }
    finally:
        relay.kill()
        relay.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    assert RELAY.exists(), "run `cargo build --release` in bench/prototypes/uring_relay first"
    for tool in ("nginx", "wrk", "strace"):
        assert shutil.which(tool), f"{tool} is needed"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, port=BACKEND))
        backend = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir)])
        try:
            wait_port(BACKEND)
            results = []
            for round_ in range(args.rounds):
                for i, mode in enumerate(MODES):
                    result = measure(mode, 18200 + 10 * round_ + i, workdir)
                    print(json.dumps(result), flush=True)
                    results.append(result)
        finally:
            # TERM, not KILL: nginx's master then stops its worker too.
            backend.terminate()
            backend.wait(timeout=30)
    for mode in MODES:
        rows = [r for r in results if r["mode"] == mode]
        keys = ("req_per_s", "user_us", "sys_us")
        mean = {k: sum(float(str(r[k])) for r in rows) / len(rows) for k in keys}
        print(
            f"{mode}: {mean['req_per_s']:.0f} req/s, user {mean['user_us']:.2f} us/req, "
            f"system {mean['sys_us']:.2f} us/req"
        )


if __name__ == "__main__":
    main()
