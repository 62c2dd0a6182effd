"""Closed-loop HTTP/2 load from h2load (Debian nghttp2-client): h2c with prior knowledge,
several connections with many concurrent streams each, GETs (or POSTs of a file: a gRPC
call's body) for a fixed time, for throughput. Latency percentiles come from its
per-request log (`--log-file`: start, status, microseconds to the end of the response);
h2load itself prints only min, max, mean and deviation. Like wrk's, these latencies wait
on the previous responses (coordinated omission): they are latencies at saturation, not
at a fixed rate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class H2loadResult:
    requests: int
    """Requests answered with a 2xx."""
    seconds: float
    rps: float
    """h2load's own: its successes over its exact duration (it prints `seconds` rounded)."""
    errors: int
    """Requests done otherwise: another status, or a failed stream (status -1)."""
    durations_us: list[int]
    """Every logged request's time to the end of its response, sorted."""

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile, as the open loop's (failed streams included)."""
        values = self.durations_us
        if not values:
            return float("nan")
        rank = min(len(values) - 1, max(0, int(q / 100 * len(values) + 0.5) - 1))
        return values[rank] / 1e3


def parse(out: str, log: str) -> H2loadResult:
    finished = re.search(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s,", out, re.MULTILINE)
    if finished is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    # Counted from the log, one line per request done: the summary's status codes also
    # count heads of streams still open when the time is up, so 2xx can exceed "done".
    # Columns past the third may be added (h2load's --help says so).
    rows = [line.split("\t") for line in log.splitlines() if line]
    ok = sum(1 for row in rows if 200 <= int(row[1]) < 300)
    return H2loadResult(
        requests=ok,
        seconds=float(finished[1]) * _UNITS[finished[2]],
        rps=float(finished[3]),
        errors=len(rows) - ok,
        durations_us=sorted(int(row[2]) for row in rows),
    )


def h2load(
    address: str,
    *,
    connections: int,
    streams: int,
    workdir: Path,
    seconds: float = 0.0,
    requests: int = 0,
    path: str = "/",
    headers: Sequence[str] = (),
    data: Path | None = None,
    cpus: set[int] | None = None,
) -> H2loadResult:
    """h2load, 1 thread (as wrk), `connections` connections with up to `streams`
    concurrent streams each, GETs of `path` with `:authority` reviews and `headers`
    (`name: value`) besides, for `seconds`, or `requests` in all when given. With
    `data`, POSTs of that file's bytes instead (a gRPC call: its length-prefixed message,
    with `content-type: application/grpc` and `te: trailers`). h2load reads only the
    HTTP status: a gRPC error is a 200 too, its grpc-status being in the trailers."""
    binary = shutil.which("h2load")
    if binary is None:
        raise RuntimeError("h2load is not installed (Debian package nghttp2-client)")
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to it
    amount = f"-n{requests}" if requests else f"-D{seconds:g}"
    argv = [
        binary, "-t1", f"-c{connections}", f"-m{streams}", amount,
        f"--log-file={log}", "-H", ":authority: reviews",
    ]  # fmt: skip
    # `:authority`, not `Host`: h2load sends a Host given with -H as a header beside the
    # URL's :authority, and nginx answers a request with two hosts 400.
    for header in headers:
        argv += ["-H", header]
    if data is not None:  # h2load then sends POST, with content-length
        argv.append(f"--data={data}")
    argv.append(f"http://{address}{path}")
    try:
        run = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            # On `cpus` when given (bench/peers/cpus.py: the proxy has cores of its own).
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"h2load did not finish:\n{exc.stdout!r}") from exc
    if run.returncode != 0:
        raise RuntimeError(f"h2load failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    return parse(run.stdout, log.read_text())
