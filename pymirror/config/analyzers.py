"""Istio's analyzers of VirtualService resources as written: do the destination hosts,
ports and subsets they name exist (Istio's DestinationHost and DestinationRule analyzers).

One half of the reference check (`pymirror.config.references`). They read each resource
as written, so a resource with a schema error still has its references checked. A host
nobody declares is a warning (pymirror resolves it by DNS); a subset that no rule in the
files given defines, or whose endpoints no ServiceEntry gives, is an error for `run` and a
warning for `check` (it may live in a file not given).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from .errors import Path, Problem
from .resources import Resource, tcp_mirror_entries
from .services import Catalog

#: Codes of the findings about references (what Istio's analyzers call
#: ReferencedResourceNotFound and VirtualServiceDestinationPortSelectorRequired).
HOST_CODES = frozenset({"unknown-host", "unknown-port", "port-required"})
SUBSET_CODES = frozenset({"unknown-subset", "no-destination-rule"})


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in labels.items()) + "}"


def analyze(catalog: Catalog, *, strict: bool, tcp_served: bool = False) -> list[Problem]:
    """Findings for every destination of every VirtualService resource, and of every
    MirrorProxy's `tcpMirrors`. ``tcp_served``: a listener is `protocol: tcp`, so findings
    in `tcp` routes can stop a run."""
    return [
        problem
        for r in catalog.resources.written_virtual_services
        for path, dest, served in _destinations(r.spec, tcp_served)
        for problem in _Destination(catalog, r, path, dest, served, strict).check()
    ] + list(_tcp_mirrors(catalog, strict=strict, tcp_served=tcp_served))


def _tcp_mirrors(catalog: Catalog, *, strict: bool, tcp_served: bool) -> Iterator[Problem]:
    """A `tcpMirrors` mirror is checked as if its virtual service wrote it on a tcp route
    (that resource's namespace and `exportTo`), and reported where it was written."""
    resources = catalog.resources
    by_name = {f"{r.namespace}/{r.name}": r for r in resources.written_virtual_services}
    for proxy in resources.written_proxies:
        for path, ref, mirror in tcp_mirror_entries(proxy):
            if (vs := by_name.get(ref)) is not None:
                at: Path = ("spec", *path)
                yield from _Destination(
                    catalog, vs, at, mirror, tcp_served, strict, written_in=proxy
                ).check()


def _destinations(spec: Any, tcp_served: bool) -> Iterator[tuple[Path, dict[str, Any], bool]]:
    """(path, destination, served) of each destination written, skipping malformed ones."""
    if not isinstance(spec, dict):
        return
    for kind in ("http", "tcp", "tls"):
        routes = spec.get(kind)
        for i, route in enumerate(routes if isinstance(routes, list) else ()):
            if not isinstance(route, dict):
                continue
            at: Path = ("spec", kind, i)
            found: list[tuple[Path, Any]] = []
            if isinstance(route.get("route"), list):
                found += [
                    ((*at, "route", j, "destination"), d.get("destination"))
                    for j, d in enumerate(route["route"])
                    if isinstance(d, dict)
                ]
            if kind in ("http", "tcp"):
                found.append(((*at, "mirror"), route.get("mirror")))
            if kind == "http" and isinstance(route.get("mirrors"), list):
                found += [
                    ((*at, "mirrors", j, "destination"), m.get("destination"))
                    for j, m in enumerate(route["mirrors"])
                    if isinstance(m, dict)
                ]
            for path, dest in found:
                if isinstance(dest, dict) and isinstance(dest.get("host"), str):
                    yield path, dest, kind == "http" or (kind == "tcp" and tcp_served)


class _Destination:
    def __init__(
        self,
        catalog: Catalog,
        r: Resource,
        path: Path,
        dest: dict[str, Any],
        served: bool,
        strict: bool,
        written_in: Resource | None = None,
    ) -> None:
        self.catalog, self.r, self.path, self.served, self.strict = (
            catalog,
            r,
            path,
            served,
            strict,
        )
        self.host: str = dest["host"]
        subset = dest.get("subset")
        self.subset = subset if isinstance(subset, str) else None
        # Where the destination was written, when not in ``r`` (a MirrorProxy's).
        self.written_in = written_in or r
        port = dest.get("port")
        number = port.get("number") if isinstance(port, dict) else None
        self.port = number if isinstance(number, int) else None
        spec = r.spec if isinstance(r.spec, dict) else {}
        export_to = spec.get("exportTo", spec.get("export_to"))
        self.export_to = (
            [e for e in export_to if isinstance(e, str)] if isinstance(export_to, list) else []
        )

    def finding(
        self, field: str, message: str, code: str, severity: Literal["error", "warning"]
    ) -> Problem:
        if not self.served:
            # Routes not served (tls; tcp without a tcp listener): findings cannot stop a run.
            severity, message = "warning", f"{message} (in a route not served)"
        path = (*self.path, field) if field else self.path
        return self.written_in.problem(path, message, severity=severity, code=code)

    def check(self) -> Iterator[Problem]:
        if self.host in self.catalog.routes_services:
            return
        yield from self.check_host()
        if self.subset is not None:
            yield from self.check_subset()

    def check_host(self) -> Iterator[Problem]:
        ns = self.r.namespace
        decl = self.catalog.host(self.host, ns, self.export_to)
        if decl is None:
            seen = f"namespace `{ns}`"
            if self.export_to:
                seen = "this virtual service (exportTo: " + ", ".join(self.export_to) + ")"
            dns = ""
            if self.served and self.subset is None:
                dns = f"; pymirror resolves it by DNS ({self.host}:{self.port or 80})"
            yield self.finding(
                "host",
                f"host `{self.host}` is declared by no ServiceEntry or Service visible from "
                f"{seen}{dns}",
                "unknown-host",
                "warning",
            )
            return
        ports = ", ".join(str(p) for p in decl.ports)
        if self.port is not None and decl.ports and self.port not in decl.ports:
            yield self.finding(
                "port",
                f"{decl.kind} {decl.name} gives `{decl.host}` no port {self.port} "
                f"(its ports: {ports})",
                "unknown-port",
                "error",
            )
        elif self.port is None and len(decl.ports) > 1:
            yield self.finding(
                "",
                f"`{decl.host}` has several ports ({ports}): set `port.number`",
                "port-required",
                "error",
            )

    def check_subset(self) -> Iterator[Problem]:
        ns = self.r.namespace
        rule = self.catalog.rule(self.host, ns)
        maybe_elsewhere: Literal["error", "warning"] = "error" if self.strict else "warning"
        if rule is None:
            yield self.finding(
                "subset",
                f"no DestinationRule for host `{self.host}` in the files given defines "
                f"subset `{self.subset}`",
                "no-destination-rule",
                maybe_elsewhere,
            )
            return
        r, spec = rule
        subset = spec.subset(self.subset or "")
        if subset is None:
            known = ", ".join(f"`{s.name}`" for s in spec.subsets) or "none"
            yield self.finding(
                "subset",
                f"DestinationRule {r.namespace}/{r.name} (host `{spec.host}`) has no subset "
                f"`{self.subset}` (its subsets: {known})",
                "unknown-subset",
                "error",
            )
            return
        if not self.served:
            return
        decl = self.catalog.host(self.host, ns, self.export_to)
        if decl is None or decl.kind != "ServiceEntry":
            yield self.finding(
                "subset",
                f"subset `{subset.name}` needs endpoints labelled {_labels(subset.labels)}, and "
                f"no ServiceEntry in the files given declares endpoints for `{self.host}` "
                "(pymirror does not read Kubernetes endpoints)",
                "no-endpoints",
                maybe_elsewhere,
            )
            return
        _, entry, _ = decl.payload
        wanted = subset.labels.items()
        endpoints = [e.labels for e in entry.endpoints] or [{}]  # DNS: the host, unlabelled
        if not any(wanted <= labels.items() for labels in endpoints):
            yield self.finding(
                "subset",
                f"subset `{subset.name}` selects no endpoint: no endpoint of ServiceEntry "
                f"{decl.name} has the labels {_labels(subset.labels)}",
                "empty-subset",
                "error",
            )
