"""pymirror extension: tcp mirrors declared apart from the virtual service.

Istio's TCPRoute has no mirror, so a VirtualService resource that writes one is refused
by Istio. A MirrorProxy's `tcpMirrors` (or the routes format's) names the virtual
service and tcp route instead, and the route is served as if it wrote the mirror.
"""

from __future__ import annotations

from pydantic import Field

from .base import _Model
from .istio import TCPRoute, VirtualService
from .matches import Destination, Percent


class TcpMirrorPolicy(_Model):
    """pymirror extension: a mirror for the tcp routes of one virtual service, which keep
    Istio's fields (a MirrorProxy resource's `tcpMirrors`)."""

    virtual_service: str = Field(min_length=1)
    """The virtual service whose tcp routes get the mirror: `namespace/name`, or `name` (in
    a MirrorProxy: the MirrorProxy's namespace; in the routes format: any namespace)."""
    route: int | None = Field(default=None, ge=0)
    """The index of the tcp route in the virtual service's `tcp` list. Default: every one."""
    mirror: Destination
    """Where the client's bytes of sampled connections are also sent, as a tcp route's
    `mirror`."""
    mirror_percentage: Percent | None = None
    """Share of connections mirrored. Default: 100%."""

    def route_indexes(self, vs: VirtualService) -> list[int]:
        """The indexes in `vs.tcp` of the routes this applies to (none when out of range)."""
        if self.route is None:
            return list(range(len(vs.tcp)))
        return [self.route] if self.route < len(vs.tcp) else []

    @property
    def mirror_rate(self) -> float:
        """The percentage of connections mirrored."""
        return self.mirror_percentage.value if self.mirror_percentage is not None else 100.0


def effective_mirror(
    route: TCPRoute, policies: list[TcpMirrorPolicy]
) -> tuple[Destination, float] | None:
    """A tcp route's mirror and percentage: written on it, else from the first of
    ``policies`` (those selecting it; validation refuses a second)."""
    if route.mirror is not None:
        return route.mirror, route.mirror_rate
    if policies:
        return policies[0].mirror, policies[0].mirror_rate
    return None
