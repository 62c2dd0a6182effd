"""The hostile HTTP/1.1 peers of tests/support/hostile.py (one source for tests and
bench), each run in a process of its own (`spawn`): a peer writing at full speed then
never shares a GIL with the bench's client, and its CPU time is its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tests" / "support" / "hostile.py"
_spec = importlib.util.spec_from_file_location("pymirror_bench_hostile", _PATH)
assert _spec is not None and _spec.loader is not None
hostile = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hostile  # dataclasses look their module up by name
_spec.loader.exec_module(hostile)

SpawnedPeer = hostile.SpawnedPeer
spawn = hostile.spawn
sized_body = hostile.sized_body
