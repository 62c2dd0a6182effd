"""Host names as Istio reads them: wildcard patterns, namespace-qualified short names,
and which declared service a destination host refers to from a given namespace."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Kubernetes' default cluster domain: `reviews` in `default` is
#: `reviews.default.svc.cluster.local`.
CLUSTER_DOMAIN = "svc.cluster.local"
#: What `exportTo` says for "every namespace" and "this namespace".
EVERYWHERE, HERE = "*", "."


def host_matches(pattern: str, host: str) -> bool:
    """Whether a virtual service host pattern (`reviews`, `*.example.com`, `*`) covers ``host``."""
    pattern, host = pattern.lower(), host.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern.rstrip(".") == host


def hosts_overlap(a: str, b: str) -> bool:
    """Whether two host patterns can both claim one request host (Istio's `Matches`)."""
    a, b = a.lower(), b.lower()
    if a == b or "*" in (a, b):
        return True
    if a.startswith("*.") and b.startswith("*."):
        return a.endswith(b[1:]) or b.endswith(a[1:])
    return (a.startswith("*.") and host_matches(a, b)) or (
        b.startswith("*.") and host_matches(b, a)
    )


def is_short(host: str) -> bool:
    """A short name (`reviews`): no dot, no wildcard; Istio qualifies it by namespace."""
    return "." not in host and not host.startswith("*")


def fqdn(host: str, namespace: str) -> str:
    """``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``; others as written."""
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}".lower() if is_short(host) else host.lower()


def domains(host: str, namespace: str | None) -> list[str]:
    """The request hosts a virtual service host serves: a short name in a namespace also
    answers to the names Kubernetes' DNS gives it there, as Istio's sidecars do."""
    if namespace is None or not is_short(host):
        return [host]
    return [host, f"{host}.{namespace}", f"{host}.{namespace}.svc", fqdn(host, namespace)]


def scopes_of(export_to: Sequence[str], namespace: str) -> frozenset[str]:
    """The namespaces (or `*`) a resource with this `exportTo` is visible from."""
    if not export_to:
        return frozenset({EVERYWHERE})
    return frozenset(namespace if e == HERE else e for e in export_to)


@dataclass(frozen=True)
class Declaration:
    """A host declared by a ServiceEntry, a Kubernetes Service or a service of the routes format."""

    kind: str
    #: `namespace/name` of the declaring resource.
    name: str
    namespace: str
    #: The host as written.
    host: str
    ports: tuple[int, ...]
    scopes: frozenset[str]
    #: What the declaring loader needs to serve it (a ServiceEntry spec, ...).
    payload: Any = None

    @property
    def fqdn(self) -> str:
        return fqdn(self.host, self.namespace)

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*")


@dataclass
class Registry:
    """Declared hosts, looked up the way Istio's analyzer does (with `exportTo`)."""

    declarations: list[Declaration] = field(default_factory=list)

    def add(self, declarations: Iterable[Declaration]) -> None:
        self.declarations.extend(declarations)

    def lookup(
        self, host: str, namespace: str, export_to: Sequence[str] = ()
    ) -> Declaration | None:
        """The declaration a destination ``host`` written in ``namespace`` refers to."""
        wanted = fqdn(host, namespace)
        exact = [d for d in self.declarations if not d.wildcard and d.fqdn == wanted]
        for d in exact:
            if EVERYWHERE in d.scopes:
                return d
        # A virtual service sees what is exported to the namespaces it is exported to.
        seen_from = [namespace if e == HERE else e for e in export_to] or [namespace]
        for d in exact:
            if d.scopes & set(seen_from):
                return d
        bare = host.lstrip("*").lower()
        for d in self.declarations:
            visible = EVERYWHERE in d.scopes or namespace in d.scopes
            if d.wildcard and visible and bare.endswith(d.host.lstrip("*").lower()):
                return d
        return None
