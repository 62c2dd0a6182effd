"""The proxy embedded in a Python process: `Proxy`, a synchronous context manager.

The data plane runs on its own native threads; nothing here runs per request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from pymirror.compare.comparator import Comparator
from pymirror.config import Config, ConfigError, load_config
from pymirror.config.regexes import refused
from pymirror.config.validate import locate
from pymirror.engine import Engine, ServerOptions, Stats, regex_problem
from pymirror.errors import EngineError
from pymirror.resolve import build_snapshot
from pymirror.snapshot import Snapshot

#: What a `Proxy` accepts as configuration: a loaded `Config`, a path, or YAML text.
ConfigSource = Config | str | os.PathLike[str]


def as_config(source: ConfigSource) -> Config:
    return source if isinstance(source, Config) else load_config(source)


class Proxy:
    """pymirror serving a configuration.

    >>> with Proxy("config/reviews.yaml", listen=["127.0.0.1:0"]) as proxy:  # doctest: +SKIP
    ...     print(proxy.url, proxy.stats()["mirrors"])
    """

    def __init__(
        self,
        config: ConfigSource,
        *,
        listen: Sequence[str] | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        self._config = as_config(config)
        self._listen = list(listen) if listen else None
        self._options = options
        self._engine: Engine | None = None
        self._snapshot: Snapshot | None = None
        self.comparator = Comparator()
        """Compared answers so far (see `compare_pending` and `pymirror.compare`)."""

    # === lifecycle ===

    def start(self) -> Self:
        """Binds every listener and starts serving. Raises ListenError, SnapshotError."""
        if self._engine is not None:
            raise EngineError("the proxy is already started")
        _check_regexes(self._config)
        snapshot = build_snapshot(self._config, listen=self._listen)
        self._engine = Engine(snapshot, self._options)
        self._snapshot = snapshot
        return self

    def close(self, drain: float = 5.0) -> bool:
        """Stops accepting, lets in-flight requests finish for up to `drain` seconds.

        Returns True when all of them finished in time. Closing twice is harmless.
        """
        if self._engine is None:
            return True
        return self._engine.shutdown(drain)

    def cut_drain(self) -> None:
        """Ends a `close` that is draining (in another thread) at once, closing the
        connections still open; a later `close` then drains no more. Harmless when the
        proxy is not running."""
        if self._engine is not None:
            self._engine.cut_drain()

    def reopen_access_log(self) -> None:
        """Reopens the access log file at its path (logrotate moved it away); lines
        queued before go to the old file. Harmless without an access log."""
        if self._engine is not None:
            self._engine.reopen_access_log()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # === while running ===

    @property
    def running(self) -> bool:
        """Started and not yet closed."""
        return self._engine is not None and self._engine.running

    @property
    def _running(self) -> Engine:
        if self._engine is None or not self._engine.running:
            raise EngineError("the proxy is not running")
        return self._engine

    @property
    def addresses(self) -> list[str]:
        """Each listener's bound `ip:port`, in configuration order."""
        return self._running.addresses

    @property
    def url(self) -> str:
        """`http://ip:port` of the first listener."""
        return f"http://{self.addresses[0]}"

    @property
    def config(self) -> Config:
        """The configuration being served."""
        return self._config

    @property
    def version(self) -> str:
        """The running snapshot's version (a checksum of the resolved configuration)."""
        return self._snapshot["version"] if self._snapshot is not None else ""

    @property
    def snapshot(self) -> Snapshot | None:
        """The resolved snapshot the core runs (None before `start`)."""
        return self._snapshot

    @property
    def listen(self) -> list[str] | None:
        """The `listen` addresses that replace the configuration's listeners, if given."""
        return list(self._listen) if self._listen is not None else None

    def stats(self) -> Stats:
        """Every counter of the data plane, read in one call."""
        return self._running.stats()

    def compare_pending(self, max_pairs: int = 1024) -> int:
        """Drains up to `max_pairs` compared pairs from the core and compares them into
        `comparator.store`; returns how many. `pymirror run` and `pymirror.serve` call
        it every 20 ms (`pymirror.lifecycle.compare_forever`); a `Proxy` used on its own
        compares only when its owner calls this."""
        if self._engine is None:
            return 0
        return self.comparator.feed(self._engine.drain_compared(max_pairs), self._snapshot)

    def reload(self, config: ConfigSource) -> None:
        """Validates `config` and swaps it in atomically; in-flight requests finish on the
        old one. On any error (ConfigError, SnapshotError, ReloadError) the running
        configuration stays and the error is raised."""
        new = as_config(config)
        _check_regexes(new)
        snapshot = build_snapshot(new, listen=self._listen)
        self._running.reload(snapshot)
        self._config, self._snapshot = new, snapshot


def _check_regexes(config: Config) -> None:
    """Every regex judged by the data plane's own engine before the snapshot is: a refusal
    is a ConfigError at its file, line and column, not the core's bare `bad regex`."""
    if issues := refused(config, regex_problem):
        raise ConfigError(locate(config, issues))
