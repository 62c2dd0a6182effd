"""A destination's traffic policy, merged from its layers as Istio's
MergeSubsetTrafficPolicy merges them: the service's (DestinationRule) policy, its
`portLevelSettings` entry for the destination's port, the subset's policy, the subset's
entry for the port. A policy's parts replace the layers' below part by part; a port
entry replaces `loadBalancer`, `connectionPool`, `outlierDetection` and `tls` whole, the
ones it leaves out included ("default values will be applied to fields omitted in
port-level traffic policies"). Each part remembers where it was written, so that what it
decides can say so."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Path
from .traffic import PORT_PARTS, TrafficPolicy


@dataclass(frozen=True)
class Layered:
    """A policy merged so far, and where each of its parts was written (the path of the
    policy, or `portLevelSettings` entry, that set it, below the service)."""

    policy: TrafficPolicy | None = None
    sources: dict[str, Path] = field(default_factory=dict)

    def over(self, policy: TrafficPolicy | None, at: Path, port: int | None) -> Layered:
        """This with ``policy`` (written at ``at``) and its entry for ``port`` on top."""
        if policy is None:
            return self
        merged = policy if self.policy is None else self.policy.under(policy)
        sources = {**self.sources, **dict.fromkeys(policy.model_fields_set, at)}
        if (found := policy.port_entry(port)) is not None:
            index, entry = found
            merged = merged.model_copy(update={p: getattr(entry, p) for p in PORT_PARTS})
            sources.update(dict.fromkeys(PORT_PARTS, (*at, "portLevelSettings", index)))
        return Layered(merged, sources)
