"""Routes that load and serve but cannot be what the user meant (`pymirror check`'s
warnings): a mirror whose endpoints are the primary's own (a copy doubles every sampled
request at the backend users already reach: a subset that selects the primary's
endpoints, or a mirror aimed at the primary's service), and a destination host that no
services entry declares and DNS does not resolve (a typo such as `reviewz` goes to DNS
and fails). Plain functions over the model: the DNS lookup is handed in."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..config.model import Config, Destination
from ..config.validate import Issue
from .clusters import Clusters


def misroutes(config: Config) -> list[Issue]:
    """A warning at each mirror whose endpoints include those of the route's one primary
    destination. (Beside a weighted split, copying to the canary is a plan, not a slip.)"""
    clusters = Clusters(config)

    def endpoints(dest: Destination) -> set[str]:
        return set(clusters.clusters[clusters.id(dest)]["endpoints"])

    issues = []
    for at, found in _routes(config):
        primaries = [d for path, d in found if _primary(path)]
        if len(primaries) != 1:
            continue
        served = endpoints(primaries[0])
        for path, mirror in ((p, d) for p, d in found if _mirror(p)):
            if shared := sorted(endpoints(mirror) & served):
                issues.append(
                    Issue(
                        (*at, *path),
                        f"the mirror reaches the primary's own endpoints ({', '.join(shared)}): "
                        "every copied request would arrive there twice; aim it at the new "
                        "version's endpoints",
                        severity="warning",
                        code="mirror-is-primary",
                    )
                )
    return issues


def unresolved(config: Config, lookup: Callable[[str], str | None]) -> list[Issue]:
    """A warning at each destination whose host no services entry declares and that
    ``lookup`` (a DNS resolution: None when it resolves, else why not) cannot resolve."""
    issues = []
    seen: dict[str, str | None] = {}
    for at, found in _routes(config):
        for path, dest in found:
            if dest.host in config.services:
                continue
            if dest.host not in seen:
                seen[dest.host] = lookup(dest.host)
            if (why := seen[dest.host]) is not None:
                issues.append(
                    Issue(
                        (*at, *path, "host"),
                        f"host `{dest.host}` has no services entry and does not resolve "
                        f"({why}): requests to it fail; a typo?",
                        severity="warning",
                        code="unresolved-host",
                    )
                )
    return issues


Path = tuple[str | int, ...]


def _primary(path: Path) -> bool:
    return path[0] == "route"


def _mirror(path: Path) -> bool:
    return path[0] in ("mirror", "mirrors") and "compare" not in path


def _routes(config: Config) -> Iterator[tuple[Path, list[tuple[Path, Destination]]]]:
    """Each served http route's path, and every destination it names with its path below
    the route."""
    for i, vs in enumerate(config.virtual_services):
        if vs.serves_http:
            for j, route in enumerate(vs.http):
                yield ("virtualServices", i, "http", j), route.destinations()
