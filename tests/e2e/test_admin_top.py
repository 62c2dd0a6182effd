"""`pymirror top` against a real admin endpoint: it draws, Ctrl-C ends it with status 0,
and an unreachable endpoint is one clear line and status 1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import seed_config
from support.client import Client
from support.ports import closed_port
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

TOP = [sys.executable, "-m", "pymirror.cli", "top"]


@contextlib.contextmanager
def _ctrl_c_reaches_children() -> Iterator[None]:
    """A suite started in the background by a shell without job control (`... &` in a
    script, nohup) runs with SIGINT ignored; children inherit that, and Python then
    installs no KeyboardInterrupt handler, so Ctrl-C would never reach `top`. Children
    started meanwhile get SIGINT's default, as from a terminal."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_top_draws_and_ctrl_c_exits_cleanly(backend, tmp_path: Path) -> None:
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = PymirrorProcess(routes)
    try:
        with Client(proc.address) as client:
            for i in range(10):
                client.request("GET", f"/{i}")
        v2.wait_for(10)
        # -X faulthandler: should it not end on Ctrl-C, SIGABRT shows where it is.
        with _ctrl_c_reaches_children(), subprocess.Popen(
            [sys.executable, "-X", "faulthandler", *TOP[1:], "--admin", proc.admin_address,
             "--interval", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "160"},
        ) as top:  # fmt: skip
            try:
                # Not a terminal: rich draws the last frame when the view ends.
                out, err = top.communicate(timeout=2.5)
            except subprocess.TimeoutExpired:
                top.send_signal(signal.SIGINT)
                try:
                    out, err = top.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    top.send_signal(signal.SIGABRT)
                    out, err = top.communicate(timeout=10)
                    pytest.fail(f"top did not end on Ctrl-C; where it was:\n{err[-4000:]}")
    finally:
        proc.stop()
    assert top.returncode == 0, err
    assert "Traceback" not in err
    assert "reviews/0" in out and "reviews v1" in out and "reviews v2" in out
    # Idle since: the last interval is empty, the totals are the 10 requests and copies.
    rows = [line.split() for line in out.splitlines() if "reviews/0" in line]
    assert [row[3] for row in rows] == ["10", "10"]


def test_unreachable_admin_is_one_clear_line() -> None:
    address = closed_port()
    run = subprocess.run([*TOP, "--admin", address], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert line.startswith("pymirror top: cannot reach the admin endpoint at ")
    assert address in line and run.stdout == ""
