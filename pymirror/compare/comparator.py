"""Feeds drained pairs through `diff` into a `Store`, with each mirror's settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
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
                    mirrors = route.get("mirrors", [])
                    seconded = {
                        c["noise_for"]
                        for m in mirrors
                        if (c := m.get("compare")) and c.get("noise_for") is not None
                    }
                    for i, m in enumerate(mirrors):
                        s = Settings.from_snapshot(m.get("compare"))
                        if i in seconded:
                            s = replace(s, second_primary=True)
                        self._settings[(vh["name"], route["name"], i)] = s
        return self._settings.get(key) or Settings()

    def feed(
        self, pairs: Iterable[ComparedPair | dict[str, Any]], snapshot: Snapshot | None
    ) -> int:
        """Compares every pair and records it; returns how many there were."""
        looked = [
            (p, self._lookup(snapshot, (p["virtual_service"], p["route"], p["mirror"])))
            for p in pairs
        ]
        # The second primary's pairs first: a request's v1/v1' pair may be queued after
        # its v1/v2 pair, and the noise it shows should count when the latter is judged.
        looked.sort(key=lambda ps: ps[1].noise_for is None)
        for pair, settings in looked:
            outcome = compare(pair, settings)
            key = (pair["virtual_service"], pair["route"], endpoint(pair["method"], pair["path"]))
            if settings.noise_for is not None:
                self.store.add_noise(key, pair, outcome, settings)  # type: ignore[arg-type]
            else:
                self.store.add(key, pair, outcome, settings)  # type: ignore[arg-type]
        return len(looked)
