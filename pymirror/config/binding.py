"""Which listeners serve which virtual services. Without Istio Gateways, every listener
serves every virtual service (a VirtualService's `gateways` has nothing to name). With
them, as in Istio: a gateway's listeners serve the virtual services whose `gateways`
name it (`namespace/name`, or `name` in the virtual service's namespace); the other
listeners serve those without `gateways`, or with `mesh` among them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .istio import VirtualService

if TYPE_CHECKING:
    from .model import Config

#: The group of the listeners that are no gateway's (Istio's reserved `mesh`).
MESH = "mesh"


def gateway_names(config: Config) -> frozenset[str]:
    """The gateways (`namespace/name`) the listeners belong to."""
    return frozenset(lst.gateway.name for lst in config.listeners if lst.gateway is not None)


def qualified(vs: VirtualService, gateway: str) -> str:
    """A gateway named in ``vs``'s `gateways`, as `namespace/name`."""
    return gateway if "/" in gateway else f"{vs.namespace or 'default'}/{gateway}"


def named_gateways(vs: VirtualService) -> list[str]:
    """The gateways ``vs`` names, qualified (`mesh` left out)."""
    return [qualified(vs, g) for g in vs.gateways if g != MESH]


def groups(vs: VirtualService, defined: frozenset[str]) -> list[str]:
    """The listener groups (`mesh`, or a gateway's name) that serve ``vs``."""
    if not defined:
        return [MESH]
    found = [MESH] if not vs.gateways or MESH in vs.gateways else []
    return found + [g for g in dict.fromkeys(named_gateways(vs)) if g in defined]
