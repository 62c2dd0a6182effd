"""Closed-loop load from wrk (Debian): as many requests as the peer answers over a fixed
number of keep-alive connections, for throughput. Its latency figures wait on the
previous response (coordinated omission), so latency comes from `openloop` instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}

_POST_SCRIPT = """\
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise RuntimeError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]] * 1e3


def parse(out: str) -> WrkResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    # Anchored: the "Latency" line's "+/- Stdev" column also ends in "%".
    p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.MULTILINE)
    if p50 is None or p99 is None:
        raise RuntimeError(f"no latency distribution in wrk output:\n{out}")
    return WrkResult(
        requests=int(total[1]),
        seconds=float(total[2]) * _UNITS[total[3]],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        p50_ms=_duration_ms(p50[1]),
        p99_ms=_duration_ms(p99[1]),
    )


def post_script(workdir: Path, size: int) -> Path:
    """A wrk Lua script that sends `size`-byte POST bodies."""
    path = workdir / f"post-{size}.lua"
    path.write_text(_POST_SCRIPT.format(size=size))
    return path


def wrk(
    address: str,
    *,
    seconds: float,
    connections: int = 32,
    script: Path | None = None,
    midway: Callable[[], None] | None = None,
    https: bool = False,
    close: bool = False,
    cpus: set[int] | None = None,
) -> WrkResult:
    """wrk, 1 thread, for `seconds` (whole seconds, at least 1); `midway` is called
    half-way through (the reload scenario's SIGHUP). `https`: over TLS (wrk's OpenSSL,
    which verifies nothing and sends no SNI to an address); `close`: `Connection: close`,
    a new connection (and handshake) per request; `cpus`: wrk runs on those cores only."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    duration = max(1, round(seconds))
    argv = [binary, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    argv += ["-H", "Host: reviews"]
    if close:
        argv += ["-H", "Connection: close"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(f"{'https' if https else 'http'}://{address}/")
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    try:
        if midway is not None:
            time.sleep(duration / 2)
            midway()
        out, err = proc.communicate(timeout=duration + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}\n{err}")
    return parse(out)
