"""Feeds drained pairs through `diff` into a `Store`, with each mirror's settings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pymirror.compare.diff import Settings, compare
from pymirror.compare.store import Store
from pymirror.compare.template import endpoint

if TYPE_CHECKING:
    from pymirror.engine import ComparedPair
    from pymirror.snapshot import Snapshot


class Comparator:
    """Compares pairs as the core hands them over. Not thread-safe: one caller (the
    control plane's trio loop) feeds it and reads its store."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self._settings: dict[tuple[str, str, int], Settings] = {}
        self._for: object = None

    def _lookup(self, snapshot: Snapshot | None, key: tuple[str, str, int]) -> Settings:
        # Settings come from the snapshot the pair was captured under, by names, so a
        # reload in between only matters if it changed the mirror's compare settings.
        if snapshot is not self._for:
            self._for, self._settings = snapshot, {}
            for vh in snapshot["virtual_hosts"] if snapshot is not None else []:
                for route in vh["routes"]:
                    for i, m in enumerate(route.get("mirrors", [])):
                        self._settings[(vh["name"], route["name"], i)] = Settings.from_snapshot(
                            m.get("compare")
                        )
        return self._settings.get(key) or Settings()

    def feed(
        self, pairs: Iterable[ComparedPair | dict[str, Any]], snapshot: Snapshot | None
    ) -> int:
        """Compares every pair and records it; returns how many there were."""
        n = 0
        for pair in pairs:
            vs, route = pair["virtual_service"], pair["route"]
            settings = self._lookup(snapshot, (vs, route, pair["mirror"]))
            outcome = compare(pair, settings)
            key = (vs, route, endpoint(pair["method"], pair["path"]))
            self.store.add(key, pair, outcome, settings)  # type: ignore[arg-type]
            n += 1
        return n
