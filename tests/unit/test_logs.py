"""`--log-format json`: one JSON object per line, newlines kept inside the message."""

from __future__ import annotations

import json
import logging

import pytest

from pymirror.logs import configure


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure("info", "json")
    try:
        logging.getLogger("pymirror").error("reload refused:\n%s", "routes.yaml:3:5: bad")
        logging.getLogger("pymirror.admin").debug("not shown at info")
    finally:
        root.handlers[:], root.level = saved
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and entry["logger"] == "pymirror"
    assert entry["message"] == "reload refused:\nroutes.yaml:3:5: bad"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
