"""`pymirror run` as a real child process, with its log read as it goes."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class PymirrorProcess:
    """Starts `python -m pymirror.cli run CONFIG --listen 127.0.0.1:0` and finds its port.

    The admin endpoint gets a free port too (unless `extra` names one), so tests never
    contend for the default 127.0.0.1:9901; `admin_address` finds it in the log.
    """

    def __init__(
        self, config: Path | str, *extra: str, listen: str = "127.0.0.1:0", stdin: str = ""
    ) -> None:
        """`config` `-` reads the configuration from `stdin`."""
        admin = () if "--admin" in extra else ("--admin", "127.0.0.1:0")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pymirror.cli",
                "run",
                str(config),
                "--listen",
                listen,
                "--drain-timeout",
                "10",
                *admin,
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        try:
            match = self.wait_for(r"(?<!admin )listening on (\S+)")
        except BaseException:
            self.stop()  # not left running (nor its pipe open) for a later test to trip on
            raise
        self.address = match.group(1)

    @property
    def admin_address(self) -> str:
        """`ip:port` of the admin endpoint, from its log line (bounded wait)."""
        return self.wait_for(r"admin listening on (\S+)").group(1)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first log line (old or new) matching `pattern`; bounded wait."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            for line in self.lines[index:]:
                if m := regex.search(line):
                    return m
            index = len(self.lines)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines))
            try:
                self.lines.append(self._queue.get(timeout=min(remaining, 0.1)))
            except queue.Empty:
                if self.proc.poll() is not None and self._queue.empty():
                    raise AssertionError(
                        f"pymirror exited {self.proc.returncode} before {pattern!r}:\n"
                        + "\n".join(self.lines)
                    ) from None

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._pump_thread.join(timeout=5)  # EOF once the process is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()
