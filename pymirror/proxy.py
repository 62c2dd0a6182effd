"""The proxy embedded in a Python process: `Proxy`, a synchronous context manager.

The data plane runs on its own native threads; nothing here runs per request.
"""

from __future__ import annotations

import logging
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
from pymirror.runtime import MirrorPercentage, apply, matching
from pymirror.snapshot import Snapshot

#: What a `Proxy` accepts as configuration: a loaded `Config`, a path, or YAML text.
ConfigSource = Config | str | os.PathLike[str]

log = logging.getLogger("pymirror.proxy")


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
        # As resolved from the configuration, before the runtime overrides.
        self._resolved: Snapshot | None = None
        self._overrides: list[MirrorPercentage] = []
        self.comparator = Comparator()
        """Compared answers so far (see `compare_pending` and `pymirror.compare`)."""

    # === lifecycle ===

    def start(self) -> Self:
        """Binds every listener and starts serving. Raises ListenError, SnapshotError."""
        if self._engine is not None:
            raise EngineError("the proxy is already started")
        _check_regexes(self._config)
        resolved = build_snapshot(self._config, listen=self._listen)
        snapshot = apply(resolved, self._overrides)
        self._engine = Engine(snapshot, self._options)
        self._resolved, self._snapshot = resolved, snapshot
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
        resolved = build_snapshot(new, listen=self._listen)
        # Overrides hold across reloads for as long as the mirrors they name exist.
        kept = [o for o in self._overrides if next(matching(resolved, o), None) is not None]
        for gone in (o for o in self._overrides if o not in kept):
            log.warning("runtime override %s dropped: it names no mirror now", gone.to_json())
        snapshot = apply(resolved, kept)
        self._running.reload(snapshot)
        self._config, self._resolved, self._snapshot = new, resolved, snapshot
        self._overrides = kept

    # === runtime overrides ===

    @property
    def overrides(self) -> list[MirrorPercentage]:
        """The runtime overrides in force, oldest first."""
        return list(self._overrides)

    def set_mirror_percentage(self, override: MirrorPercentage) -> int:
        """Copies `override.percentage` of requests to the mirrors it names from now on,
        in place of the configured share (None: the configured share again), without
        reading the configuration again. Returns how many mirrors it names; ValueError
        when it names none."""
        engine, resolved = self._running, self._resolved
        assert resolved is not None
        named = sum(1 for _ in matching(resolved, override))
        if named == 0:
            raise ValueError(f"no mirror matches {override.to_json()}")
        overrides = [o for o in self._overrides if o.key != override.key]
        if override.percentage is not None:
            overrides.append(override)
        snapshot = apply(resolved, overrides)
        engine.reload(snapshot)
        self._snapshot, self._overrides = snapshot, overrides
        return named


def _check_regexes(config: Config) -> None:
    """Every regex judged by the data plane's own engine before the snapshot is: a refusal
    is a ConfigError at its file, line and column, not the core's bare `bad regex`."""
    if issues := refused(config, regex_problem):
        raise ConfigError(locate(config, issues))
