"""Load from wrk (Debian), parsed into figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise RuntimeError(f"not a wrk duration: {text!r}")
    value, unit = match.groups()
    return float(value) * _UNITS[unit] * 1e3


def wrk(
    url: str, *, seconds: float, connections: int = 32, threads: int = 1, host: str = "reviews"
) -> LoadResult:
    """Closed-loop load for `seconds`; wrk stops by itself."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    out = subprocess.run(
        [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-H",
            f"Host: {host}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
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
    return LoadResult(
        requests=int(total[1]),
        seconds=float(total[2]) * _UNITS[total[3]],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        p50_ms=_duration_ms(p50[1]),
        p99_ms=_duration_ms(p99[1]),
    )
