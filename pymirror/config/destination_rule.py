"""Istio's DestinationRule spec: subsets (by labels) and traffic policies of a host."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from .base import Labels, SubsetName, _Model, problem
from .traffic import TrafficPolicy
from .types import HostPattern


class Subset(_Model):
    """Istio Subset: the endpoints of a host that carry all of these labels."""

    name: SubsetName
    """The name destinations use (`subset: v1`)."""
    labels: Labels = Field(default_factory=dict)
    """Endpoint labels selected (a ServiceEntry endpoint's `labels`). Empty: every one."""
    traffic_policy: TrafficPolicy | None = None
    """Overrides the rule's policy for this subset, part by part."""


class DestinationRuleSpec(_Model):
    """Istio DestinationRule `spec`."""

    host: HostPattern
    """The service the rule applies to: a short name (qualified by the rule's namespace),
    a full name, or a `*.suffix` pattern."""
    subsets: list[Subset] = Field(default_factory=list)
    """Named subsets of the host's endpoints."""
    traffic_policy: TrafficPolicy | None = None
    """Load balancing and request limits for every subset."""
    export_to: list[str] = Field(default_factory=list)
    """Accepted as written (a DestinationRule applies wherever its host is used here)."""
    workload_selector: dict[str, Any] | None = None
    """Accepted, not applicable outside a mesh (reported)."""

    @model_validator(mode="after")
    def _check(self) -> DestinationRuleSpec:
        seen: dict[str, int] = {}
        for i, subset in enumerate(self.subsets):
            if subset.name in seen:
                raise problem(
                    f"subset `{subset.name}` is already defined (subsets[{seen[subset.name]}])",
                    "subsets",
                    i,
                    "name",
                )
            seen[subset.name] = i
        return self

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)
