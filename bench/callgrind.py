"""User-space instructions per proxied request, counted by callgrind: repeatable for the
same build and inputs whatever else the machine does, where wall-clock CPU is not (the
gate for changes that must not cost the hot path anything).

`pymirror run` (one worker) runs under `valgrind --tool=callgrind` in front of nginx
backends, twice: once for `--base` sequential keep-alive GETs on one connection, once for
`--base` + `--requests`. The difference of the two totals, divided by `--requests`, is
what a request costs: start-up, the Python control plane's start and the drain cancel.
Only the worker thread's instructions are counted (`--separate-threads`): the data plane,
scheduler and I/O driver included, the Python threads and the access-log writer not.

    python3 bench/callgrind.py [--mirror PERCENT | --without-mirror] [--requests 2000] [--base 100]
                               [--keep DIR]

prints one JSON line: the mirror percentage, both totals and instructions per request.
`--keep DIR` leaves the worker thread's callgrind files there (`callgrind_annotate
--inclusive=yes` on the larger run's less the smaller's is where a request's work goes).
Needs valgrind and nginx (Debian's valgrind, nginx-light).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from peers.backends import nginx_backend
from peers.process import free_port, wait_listening

_CONFIG = """\
listeners:
  - {{address: "{listen}", host: reviews}}
services:
  v1: {{endpoints: [{{address: "{v1}"}}]}}
  v2: {{endpoints: [{{address: "{v2}"}}]}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: v1}}}}]
{mirror}"""
_MIRROR = """\
        mirror: {{host: v2}}
        mirrorPercentage: {{value: {percent}}}
"""


def requests(address: str, n: int) -> None:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        for i in range(n):
            conn.request("GET", f"/items/{i}", headers={"Host": "reviews"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or body != b"v1\n":
                raise RuntimeError(f"request {i}: {response.status} {body[:80]!r}")
    finally:
        conn.close()


def total_instructions(workdir: Path, config: Path, n: int, keep: Path | None) -> int:
    """Runs pymirror under callgrind for `n` requests; the process' total Ir."""
    listen = config.read_text().split('address: "', 1)[1].split('"', 1)[0]
    out = workdir / f"callgrind.{n}.out"
    argv = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        # One file per thread, so that only the data plane's worker threads are summed:
        # the Python control plane's timed loops (the compare drain every 20 ms) would add
        # instructions in proportion to wall time, which valgrind stretches unevenly (a
        # 5% spread between runs of the same build).
        "--separate-threads=yes",
        sys.executable, "-m", "pymirror.cli", "--log-level", "warning",
        "run", str(config), "--workers", "1", "--admin", "127.0.0.1:0",
        "--drain-timeout", "5",
    ]  # fmt: skip
    with (workdir / f"stderr.{n}.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(listen, proc, timeout=300)
        requests(listen, n)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    total, workers = 0, 0
    for part in workdir.glob(f"{out.name}-*"):
        data = part.read_bytes()
        # A worker thread admits the connections (and runs every request's task). Not
        # "listen::serve": the thread that drops the serve task at shutdown names it too.
        if b"pymirror_native::listen::accept::admit" not in data:
            continue
        totals = re.search(rb"^(?:summary|totals): (\d+)", data, re.M)
        if totals is None:
            raise RuntimeError(f"no totals in {part}")
        total, workers = total + int(totals[1]), workers + 1
        if keep is not None:
            shutil.copy(part, keep / part.name)
    if workers == 0:
        raise RuntimeError(f"no worker thread's file in {workdir}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=float, default=0.0, help="mirrorPercentage (0-100)")
    parser.add_argument(
        "--without-mirror",
        action="store_true",
        help="a route with no mirror at all (what --mirror 0 must cost no more than)",
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--base", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="a folder to leave the worker's files in")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package valgrind)")
    with tempfile.TemporaryDirectory(prefix="pymirror-callgrind-") as tmp:
        workdir = Path(tmp)
        v1 = nginx_backend("v1", workdir / "v1", body="v1")
        v2 = nginx_backend("v2", workdir / "v2", body="v2")
        try:
            config = workdir / "routes.yaml"
            config.write_text(
                _CONFIG.format(
                    listen=f"127.0.0.1:{free_port()}",
                    v1=v1.address,
                    v2=v2.address,
                    mirror="" if args.without_mirror else _MIRROR.format(percent=args.mirror),
                )
            )
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
            small = total_instructions(workdir, config, args.base, args.keep)
            large = total_instructions(workdir, config, args.base + args.requests, args.keep)
        finally:
            v1.stop()
            v2.stop()
    per_request = (large - small) / args.requests
    print(
        json.dumps(
            {
                "mirror_percent": None if args.without_mirror else args.mirror,
                "requests": args.requests,
                "total_small": small,
                "total_large": large,
                "instructions_per_request": round(per_request),
            }
        )
    )


if __name__ == "__main__":
    main()
