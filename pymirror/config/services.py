"""ServiceEntries and DestinationRules compiled into the routes format's `services`, and
the resources' VirtualServices into its `virtualServices` entries: one model for both forms.

A destination host is looked up as Istio does (its namespace qualifies a short name;
`exportTo` decides what it sees) and rewritten to the service key it refers to. Keys are
the hosts as written (`reviews`) unless two namespaces write the same one, then the full
name (`reviews.default.svc.cluster.local`).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from .destination_rule import DestinationRuleSpec
from .errors import Path, Problem
from .gateway import gateway_listeners
from .hosts import Declaration, Registry, fqdn, host_matches
from .resources import Resource, Resources, entry_declarations, tcp_mirror_entries, written_key
from .service_entry import ServiceEntrySpec
from .source import Document, Loc

Rule = tuple[Resource, DestinationRuleSpec]


def _where(loc: Loc) -> str:
    return f"{loc.file}:{loc.line}:{loc.column}"


@dataclass
class Catalog:
    """The hosts the resources declare and the rules for them, as destinations see them."""

    resources: Resources
    # The services the routes format declares: destinations naming them are served by them.
    routes_services: Collection[str] = ()
    registry: Registry = field(default_factory=Registry)
    rules: dict[str, Rule] = field(default_factory=dict)
    wildcard_rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        entries = entry_declarations(self.resources.entries)
        seen: dict[str, Declaration] = {}
        for decl in entries:
            first = seen.setdefault(decl.fqdn, decl)
            if first is not decl and not decl.wildcard:
                r, _, i = decl.payload
                at = _where(first.payload[0].loc(("spec", "hosts", first.payload[2]))[0])
                self.problems.append(
                    r.problem(
                        ("spec", "hosts", i),
                        f"host `{decl.host}` is already declared by ServiceEntry "
                        f"{first.name} at {at}",
                    )
                )
        self.registry.add(d for d in entries if seen[d.fqdn] is d or d.wildcard)
        self.registry.add(self.resources.kube_services)
        for r, rule in self.resources.rules:
            if rule.host.startswith("*"):
                self.wildcard_rules.append((r, rule))
                continue
            name = fqdn(rule.host, r.namespace)
            if name in self.rules:
                other = self.rules[name][0]
                self.problems.append(
                    r.problem(
                        ("spec", "host"),
                        f"host `{rule.host}` already has DestinationRule {other.namespace}/"
                        f"{other.name} (at {_where(other.loc(('spec', 'host'))[0])}); "
                        "pymirror takes one rule per host",
                    )
                )
                continue
            self.rules[name] = (r, rule)
        self._labels = self._choose_labels()

    def _choose_labels(self) -> dict[str, str]:
        written: dict[str, str] = {}
        for decl in self.registry.declarations:
            if decl.kind == "ServiceEntry" and not decl.wildcard:
                written.setdefault(decl.fqdn, decl.host)
        for name, (_, rule) in self.rules.items():
            written.setdefault(name, rule.host)
        uses = Counter(written.values())
        return {
            name: label if uses[label] == 1 and label not in self.routes_services else name
            for name, label in written.items()
        }

    def host(self, host: str, namespace: str, export_to: list[str]) -> Declaration | None:
        """The ServiceEntry (or Kubernetes Service) a destination host refers to."""
        return self.registry.lookup(host, namespace, export_to)

    def rule(self, host: str, namespace: str) -> Rule | None:
        """The DestinationRule for a destination host (exact name first, then wildcards)."""
        name = fqdn(host, namespace)
        if name in self.rules:
            return self.rules[name]
        matching = [(r, s) for r, s in self.wildcard_rules if host_matches(s.host, name)]
        return max(matching, key=lambda rule: len(rule[1].host), default=None)

    def key(self, name: str) -> str:
        return self._labels.get(name, name)


@dataclass
class Compiled:
    """The resources as one routes-format document, ready for `merge_mappings`."""

    document: Document | None
    #: `VirtualService ns/name` of each virtual service entry, in order.
    sources: list[str]
    catalog: Catalog
    #: The resource each service was compiled from (`ServiceEntry ns/name`), by key.
    service_sources: dict[str, str] = field(default_factory=dict)
    #: The DestinationRule of each service that has one (`DestinationRule ns/name`), by key.
    rule_sources: dict[str, str] = field(default_factory=dict)


class _Compiler:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.services: dict[str, dict[str, Any]] = {}
        self.ruled: set[str] = set()
        self.sources: dict[str, str] = {}
        self.rule_sources: dict[str, str] = {}
        self.values: dict[Path, Loc] = {}
        self.keys: dict[Path, Loc] = {}

    def copy(self, r: Resource, written: Path, target: Path) -> None:
        """Record that the values under ``target`` were written under ``written`` in ``r``."""
        n = len(written)
        for source, dest in ((r.doc.values, self.values), (r.doc.keys, self.keys)):
            for path, loc in source.items():
                if path[:n] == written:
                    dest.setdefault((*target, *path[n:]), loc)

    def entry_service(self, decl: Declaration, key: str, host: str) -> None:
        r, spec, i = decl.payload
        assert isinstance(spec, ServiceEntrySpec)
        raw: dict[str, Any] = r.spec
        service: dict[str, Any] = {}
        if raw.get("ports"):
            service["ports"] = copy.deepcopy(raw["ports"])
            self.copy(r, ("spec", "ports"), ("services", key, "ports"))
        if raw.get("endpoints"):
            service["endpoints"] = [
                {k: v for k, v in e.items() if k in ("address", "labels", "weight", "ports")}
                for e in copy.deepcopy(raw["endpoints"])
            ]
            self.copy(r, ("spec", "endpoints"), ("services", key, "endpoints"))
        elif spec.ports and spec.resolution != "STATIC":
            # DNS (or NONE): the host itself is the one endpoint, resolved at connect time.
            service["endpoints"] = [{"address": host}]
            self.copy(r, ("spec", "hosts", i), ("services", key, "endpoints", 0, "address"))
        self.add(key, service, r, ("spec", "hosts", i))

    def rule_parts(self, key: str, rule: Rule) -> None:
        r, spec = rule
        self.sources.setdefault(key, r.subject)
        self.rule_sources[key] = r.subject
        service = self.services.setdefault(key, {})
        if ("services", key) not in self.values:
            self.copy(r, ("spec", "host"), ("services", key))
            self.keys.setdefault(("services", key), r.doc.values[("spec", "host")])
        raw: dict[str, Any] = r.spec
        if spec.subsets:
            service["subsets"] = {s.name: dict(s.labels) for s in spec.subsets}
            policies = {}
            for j, (s, raw_subset) in enumerate(zip(spec.subsets, raw["subsets"], strict=True)):
                at = ("services", key, "subsets", s.name)
                self.copy(r, ("spec", "subsets", j, "labels"), at)
                self.values.setdefault(at, r.doc.values[("spec", "subsets", j)])
                self.keys.setdefault(at, r.doc.values[("spec", "subsets", j, "name")])
                if s.traffic_policy is not None:
                    written = written_key(raw_subset, "trafficPolicy")
                    policies[s.name] = copy.deepcopy(raw_subset[written])
                    self.copy(
                        r,
                        ("spec", "subsets", j, written),
                        ("services", key, "subsetPolicies", s.name),
                    )
            if policies:
                service["subsetPolicies"] = policies
        if spec.traffic_policy is not None:
            written = written_key(raw, "trafficPolicy")
            service["trafficPolicy"] = copy.deepcopy(raw[written])
            self.copy(r, ("spec", written), ("services", key, "trafficPolicy"))

    def add(self, key: str, service: dict[str, Any], r: Resource, at: Path) -> None:
        self.sources.setdefault(key, r.subject)
        self.services.setdefault(key, {}).update(service)
        self.copy(r, at, ("services", key))
        if at in r.doc.values:
            self.keys.setdefault(("services", key), r.doc.values[at])

    def target(self, host: str, namespace: str, export_to: list[str]) -> str | None:
        """The service key a destination host is served by, or None: resolved by DNS."""
        catalog = self.catalog
        if host in catalog.routes_services:
            return host
        decl = catalog.host(host, namespace, export_to)
        key: str | None = None
        if decl is not None and decl.kind == "ServiceEntry":
            key = catalog.key(decl.fqdn) if not decl.wildcard else host
            if key not in self.services:
                self.entry_service(decl, key, decl.host if not decl.wildcard else host)
        rule = catalog.rule(host, namespace)
        if rule is not None:
            key = key or catalog.key(fqdn(host, namespace))
            if key not in self.ruled:
                self.ruled.add(key)
                self.rule_parts(key, rule)
        return key


def compile_resources(resources: Resources, routes_services: Collection[str]) -> Compiled:
    """Every served resource as routes-format data (with where each value was written)."""
    catalog = Catalog(resources, routes_services)
    compiler = _Compiler(catalog)
    # Every declared host becomes a service, used or not, so `check` shows it.
    for decl in catalog.registry.declarations:
        if decl.kind == "ServiceEntry" and not decl.wildcard:
            compiler.target(decl.host, decl.namespace, [])
    for r, rule in catalog.rules.values():
        compiler.target(rule.host, r.namespace, [])
    entries: list[dict[str, Any]] = []
    sources: list[str] = []
    for k, (r, vs, entry) in enumerate(resources.virtual_services):
        entry = copy.deepcopy(entry)
        for dest in _destinations(entry):
            key = compiler.target(dest["host"], vs.namespace or "", list(vs.export_to))
            if key is not None and key != dest["host"]:
                dest["host"] = key
        compiler.copy(r, ("spec",), ("virtualServices", k))
        for field_, written in (
            ("name", ("metadata", "name")),
            ("namespace", ("metadata", "namespace")),
        ):
            compiler.copy(r, written, ("virtualServices", k, field_))
        entries.append(entry)
        sources.append(r.subject)
    _tcp_mirror_hosts(resources, compiler)
    data: dict[str, Any] = {}
    if listeners := _gateway_listeners(resources, compiler):
        data["listeners"] = listeners
    if entries:
        data["virtualServices"] = entries
    if compiler.services:
        data["services"] = compiler.services
    if not data:
        return Compiled(None, sources, catalog)
    first = _first_resource(resources)
    doc = Document(first.doc.file, data, first.doc.root, 0, compiler.values)
    doc.keys = compiler.keys
    return Compiled(doc, sources, catalog, compiler.sources, compiler.rule_sources)


def _tcp_mirror_hosts(resources: Resources, compiler: _Compiler) -> None:
    """A MirrorProxy's `tcpMirrors` host is looked up as if its virtual service wrote it
    (its namespace, its `exportTo`), and rewritten to the service key, as theirs are."""
    by_name = {f"{r.namespace}/{r.name}": vs for r, vs, _ in resources.virtual_services}
    for proxy, doc in zip(resources.written_proxies, resources.proxies, strict=True):
        doc.data = copy.deepcopy(doc.data)  # the resource's spec stays as written
        for (key, i, _), ref, mirror in tcp_mirror_entries(proxy):
            if (vs := by_name.get(ref)) is None:
                continue  # validation names the missing virtual service
            target = compiler.target(mirror["host"], vs.namespace or "", list(vs.export_to))
            if target is not None:
                doc.data[key][i]["mirror"]["host"] = target


def _gateway_listeners(resources: Resources, compiler: _Compiler) -> list[dict[str, Any]]:
    """Each Gateway's servers as listeners, placed where their servers were written."""
    listeners: list[dict[str, Any]] = []
    for r, gateway in resources.gateways:
        for indexes, listener in gateway_listeners(f"{r.namespace}/{r.name}", gateway):
            server: Path = ("spec", "servers", indexes[0])
            here: Path = ("listeners", len(listeners))
            compiler.copy(r, server, here)
            compiler.copy(r, (*server, "port"), (*here, "address"))
            listeners.append(listener)
    return listeners


def _first_resource(resources: Resources) -> Resource:
    found = [
        *(r for r, _, _ in resources.virtual_services),
        *(r for r, _ in resources.rules),
        *(r for r, _ in resources.entries),
        *(r for r, _ in resources.gateways),
    ]
    return found[0]


def _destinations(entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every destination mapping of a (validated) virtual service entry, for rewriting."""
    for kind in ("http", "tcp", "tls"):
        for route in entry.get(kind) or ():
            yield from (d["destination"] for d in route.get("route") or ())
            if kind in ("http", "tcp"):
                yield from [route["mirror"]] if route.get("mirror") else []
                yield from (m["destination"] for m in route.get("mirrors") or ())
