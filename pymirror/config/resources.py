"""Kubernetes-style resources: Istio's VirtualService, DestinationRule, ServiceEntry and
Gateway (networking.istio.io v1alpha3, v1beta1, v1) and pymirror's MirrorProxy, each
checked on its own so one broken resource does not hide the others' findings.

Errors name the resource's own paths (`spec.http[0].mirrorPercentage.value`). Other kinds
(Service, Deployment, ...) are skipped with one warning each; a Kubernetes Service still
tells reference checks that its host exists, as in Istio's analyzer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel, to_snake

from .base import is_dns_label
from .destination_rule import DestinationRuleSpec
from .errors import Path, Problem
from .gateway import GatewaySpec
from .hosts import Declaration, scopes_of
from .istio import MIRROR_EXTENSIONS, VirtualService
from .merge import Origin, describe_value
from .service_entry import ServiceEntrySpec
from .source import Document, Loc
from .validate import problems_from

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
PYMIRROR_API = "pymirror.dev/v1alpha1"
DEFAULT_NAMESPACE = "default"
_SERVED = ("VirtualService", "DestinationRule", "ServiceEntry", "Gateway")
_TOP = ("apiVersion", "kind", "metadata", "spec", "status")
#: What a MirrorProxy spec holds: the routes format's keys outside Istio's resources.
PROXY_KEYS = (
    "listeners",
    "admin",
    "upstream",
    "mirrorDefaults",
    "mirrorPolicies",
    "tcpMirrors",
    "limits",
)
#: The MirrorProxy lists whose entries name a `virtualService`.
_NAMING_KEYS = ("mirrorPolicies", "tcpMirrors")
#: pymirror's fields on a mirror, which a VirtualService resource leaves to a MirrorProxy.
_MIRROR_EXTENSIONS = {
    name: camel for camel in MIRROR_EXTENSIONS for name in (camel, to_snake(camel))
}
_EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
M = TypeVar("M", bound=BaseModel)


@dataclass
class Resource:
    """One resource document: its identity and where its values were written."""

    doc: Document
    kind: str
    name: str
    namespace: str
    spec: Any

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def loc(self, path: Path, *, at_key: bool = False) -> tuple[Loc, Path]:
        """Where ``path`` (below the document) was written, or its nearest written parent;
        and the path left unwritten."""
        if at_key and path in self.doc.keys:
            return self.doc.keys[path], ()
        for depth in range(len(path), 0, -1):
            if (loc := self.doc.values.get(path[:depth])) is not None:
                return loc, path[depth:]
        return self.doc.root, path

    def problem(
        self,
        path: Path,
        message: str,
        *,
        at_key: bool = False,
        severity: Literal["error", "warning"] = "error",
        code: str = "",
    ) -> Problem:
        """A problem at ``path`` below the document (such as ``("spec", "http", 0)``)."""
        loc, rest = self.loc(path, at_key=at_key)
        return Problem(
            loc.file,
            loc.line,
            loc.column,
            (*loc.path, *rest),
            message,
            severity,
            code,
            self.subject,
        )

    def origin(self, renames: dict[Path, Path] | None = None) -> Origin:
        """An `Origin` for the spec validated on its own: paths below `spec`, plus
        ``renames`` (a model path -> the document path it was written at)."""
        values = {p[1:]: loc for p, loc in self.doc.values.items() if p[:1] == ("spec",) and p[1:]}
        keys = {p[1:]: loc for p, loc in self.doc.keys.items() if p[:1] == ("spec",) and p[1:]}
        for target, written in (renames or {}).items():
            if written in self.doc.values:
                values[target] = self.doc.values[written]
            if written in self.doc.keys:
                keys[target] = self.doc.keys[written]
        root = self.doc.values.get(("spec",), self.doc.root)
        return Origin(values, keys, (root,))


@dataclass
class Resources:
    """What the resource documents hold, each part validated."""

    virtual_services: list[tuple[Resource, VirtualService, dict[str, Any]]] = field(
        default_factory=list
    )
    #: Every VirtualService resource, valid or not: reference checks read them as written.
    written_virtual_services: list[Resource] = field(default_factory=list)
    rules: list[tuple[Resource, DestinationRuleSpec]] = field(default_factory=list)
    entries: list[tuple[Resource, ServiceEntrySpec]] = field(default_factory=list)
    gateways: list[tuple[Resource, GatewaySpec]] = field(default_factory=list)
    #: Hosts that Kubernetes Services declare (for reference checks only).
    kube_services: list[Declaration] = field(default_factory=list)
    #: MirrorProxy specs, as routes-format documents for `merge_mappings`.
    proxies: list[Document] = field(default_factory=list)
    #: The MirrorProxy resources as written, in the order of `proxies`.
    written_proxies: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def expand_lists(documents: Iterable[Document]) -> list[Document]:
    """`kubectl get vs,dr,se -o yaml` prints one `kind: List` (`apiVersion: v1`) whose
    `items` are the resources: each becomes a document of its own, its positions those it
    was written at."""
    out: list[Document] = []
    for doc in documents:
        data = doc.data
        if not (
            isinstance(data, dict)
            and data.get("kind") == "List"
            and data.get("apiVersion", "v1") == "v1"
            and isinstance(data.get("items"), list)
        ):
            out.append(doc)
            continue
        for i, item in enumerate(data["items"]):
            prefix: Path = ("items", i)
            n = len(prefix)
            values = {p[n:]: loc for p, loc in doc.values.items() if p[:n] == prefix}
            keys = {p[n:]: loc for p, loc in doc.keys.items() if p[:n] == prefix}
            # Not first in its stream: an item that is no resource is refused as such.
            item_doc = Document(doc.file, item, doc.values.get(prefix, doc.root), 1 + i)
            item_doc.values, item_doc.keys = values, keys
            out.append(item_doc)
    return out


def is_resource(doc: Document) -> bool:
    return isinstance(doc.data, dict) and ("apiVersion" in doc.data or "kind" in doc.data)


def read_resources(documents: Iterable[Document]) -> Resources:
    """Validate every resource document; problems are collected, broken ones left out."""
    out = Resources()
    for doc in documents:
        resource = _identify(doc, out.problems)
        if resource is not None:
            _read(resource, out)
    return out


def _identify(doc: Document, problems: list[Problem]) -> Resource | None:
    data: dict[str, Any] = doc.data
    bad = Resource(doc, str(data.get("kind", "resource")), "?", DEFAULT_NAMESPACE, None)
    for key in ("apiVersion", "kind"):
        if not isinstance(data.get(key), str):
            problems.append(_needs(bad, (key,), data.get(key), "text, such as `VirtualService`"))
            return None
    # Other groups' kinds (a ConfigMap's `data`, a Deployment's) are skipped whole: only
    # the resources read here are held to their top-level fields.
    group = data["apiVersion"].rpartition("/")[0]
    for key in data if group == ISTIO_GROUP or data["apiVersion"] == PYMIRROR_API else ():
        if key not in _TOP:
            allowed = ", ".join(f"`{k}`" for k in _TOP)
            problems.append(
                bad.problem((key,), f"unknown field `{key}`; expected {allowed}", at_key=True)
            )
            return None
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        where: Path = ("metadata", "name") if isinstance(meta, dict) else ("metadata",)
        problems.append(bad.problem(where, "a resource needs `metadata.name`"))
        return None
    namespace = meta.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not is_dns_label(namespace):
        problems.append(
            bad.problem(("metadata", "namespace"), f"not a valid namespace: {namespace!r}")
        )
        return None
    return Resource(doc, data["kind"], meta["name"], namespace, data.get("spec"))


def _needs(resource: Resource, path: Path, value: object, what: str) -> Problem:
    return resource.problem(path, f"expected {what}, got {describe_value(value)}")


def _read(resource: Resource, out: Resources) -> None:
    api: str = resource.doc.data["apiVersion"]
    group, _, version = api.rpartition("/")
    kind = resource.kind
    if group == ISTIO_GROUP and kind in _SERVED:
        if version not in ISTIO_VERSIONS:
            versions = ", ".join(f"{ISTIO_GROUP}/{v}" for v in ISTIO_VERSIONS)
            out.problems.append(
                resource.problem(
                    ("apiVersion",), f"`{api}` is not read by pymirror: use {versions}"
                )
            )
            return
    elif api.startswith("pymirror.dev/"):
        if (api, kind) != (PYMIRROR_API, "MirrorProxy"):
            out.problems.append(
                resource.problem(
                    ("kind",),
                    f"pymirror's resource is `apiVersion: {PYMIRROR_API}`, `kind: MirrorProxy`",
                )
            )
            return
    else:
        if (api, kind) == ("v1", "Service"):
            out.kube_services.extend(_kube_service(resource))
        out.problems.append(_skipped(resource, api))
        return
    if not isinstance(resource.spec, dict):
        out.problems.append(_needs(resource, ("spec",), resource.spec, "a mapping"))
        return
    if kind == "VirtualService":
        _virtual_service(resource, out)
    elif kind == "DestinationRule":
        if (spec := _validate(resource, DestinationRuleSpec, resource.spec, out)) is not None:
            out.rules.append((resource, spec))
    elif kind == "ServiceEntry":
        if (entry := _validate(resource, ServiceEntrySpec, resource.spec, out)) is not None:
            out.entries.append((resource, entry))
    elif kind == "Gateway":
        if (gateway := _validate(resource, GatewaySpec, resource.spec, out)) is not None:
            out.gateways.append((resource, gateway))
    else:
        _proxy(resource, out)


def _skipped(resource: Resource, api: str) -> Problem:
    why = (
        "pymirror does not read Kubernetes Services: a destination host it names is resolved "
        "by DNS, unless a ServiceEntry declares its endpoints"
        if (api, resource.kind) == ("v1", "Service")
        else "pymirror reads VirtualService, DestinationRule, ServiceEntry and Gateway "
        f"({ISTIO_GROUP}) and MirrorProxy"
    )
    return resource.problem(
        ("kind",), f"`{resource.kind}` skipped: {why}", severity="warning", code="skipped"
    )


def _kube_service(resource: Resource) -> list[Declaration]:
    spec = resource.spec if isinstance(resource.spec, dict) else {}
    ports = tuple(
        p["port"]
        for p in spec.get("ports") or ()
        if isinstance(p, dict) and isinstance(p.get("port"), int)
    )
    meta = resource.doc.data.get("metadata") or {}
    annotation = (meta.get("annotations") or {}).get(_EXPORT_TO_ANNOTATION)
    export_to = [e.strip() for e in annotation.split(",")] if isinstance(annotation, str) else []
    return [
        Declaration(
            "Service",
            f"{resource.namespace}/{resource.name}",
            resource.namespace,
            resource.name,
            ports,
            scopes_of(export_to, resource.namespace),
        )
    ]


def _validate(
    resource: Resource,
    model: type[M],
    data: dict[str, Any],
    out: Resources,
    renames: dict[Path, Path] | None = None,
) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for p in problems_from(exc, resource.origin(renames), model):
            out.problems.append(
                Problem(p.file, p.line, p.column, p.path, p.message, subject=resource.subject)
            )
        return None


def _virtual_service(resource: Resource, out: Resources) -> None:
    out.written_virtual_services.append(resource)
    for key in ("name", "namespace"):
        if key in resource.spec:
            out.problems.append(
                resource.problem(
                    ("spec", key), f"unknown field `{key}` (it belongs in `metadata`)", at_key=True
                )
            )
            return
    if (found := _mirror_extension(resource)) is not None:
        out.problems.append(found)
        return
    entry = {"name": resource.name, "namespace": resource.namespace, **resource.spec}
    renames: dict[Path, Path] = {("name",): ("metadata", "name")}
    renames[("namespace",)] = ("metadata", "namespace")
    vs = _validate(resource, VirtualService, entry, out, renames)
    if vs is not None:
        out.virtual_services.append((resource, vs, entry))


def _mirror_extension(resource: Resource) -> Problem | None:
    """pymirror's mirror fields are not Istio's: a VirtualService resource stays one that
    Istio would accept, and a MirrorProxy's `mirrorPolicies` carries them."""
    http = resource.spec.get("http")
    for i, route in enumerate(http if isinstance(http, list) else ()):
        if not isinstance(route, dict):
            continue
        mirrors = route.get("mirrors")
        places: list[tuple[Path, object]] = [(("mirror",), route.get("mirror"))]
        places += [
            (("mirrors", j), m) for j, m in enumerate(mirrors if isinstance(mirrors, list) else ())
        ]
        for where, mirror in places:
            for key in mirror if isinstance(mirror, dict) else ():
                if key in _MIRROR_EXTENSIONS:
                    return resource.problem(
                        ("spec", "http", i, *where, key),
                        f"`{key}` is a pymirror extension, not an Istio field: keep the "
                        "VirtualService as Istio reads it and set it in a MirrorProxy's "
                        f"`mirrorPolicies` (`virtualService: {resource.namespace}/"
                        f"{resource.name}`, `{_MIRROR_EXTENSIONS[key]}: ...`)",
                        at_key=True,
                    )
    return None


def _proxy(resource: Resource, out: Resources) -> None:
    spec: dict[str, Any] = resource.spec
    for key in spec:
        if to_camel(key) not in PROXY_KEYS:
            allowed = ", ".join(f"`{k}`" for k in PROXY_KEYS)
            out.problems.append(
                resource.problem(
                    ("spec", key),
                    f"unknown field `{key}`; a MirrorProxy holds {allowed} (routes and services "
                    "are VirtualService, DestinationRule and ServiceEntry resources)",
                    at_key=True,
                )
            )
            return
    for camel in _NAMING_KEYS:
        key = written_key(spec, camel)
        if isinstance(entries := spec.get(key), list):
            # A bare virtual service name is one of the MirrorProxy's own namespace.
            spec = {**spec, key: [_qualified(p, resource.namespace) for p in entries]}
    out.written_proxies.append(resource)
    origin = resource.origin()
    doc = Document(resource.doc.file, spec, origin.roots[0], 0, dict(origin.values))
    doc.keys = dict(origin.keys)
    out.proxies.append(doc)


def written_key(raw: dict[str, Any], camel: str) -> str:
    """The key a field was written under: Istio's camelCase, or protobuf's snake_case."""
    return camel if camel in raw else to_snake(camel)


def _qualified(policy: object, namespace: str) -> object:
    if not isinstance(policy, dict):
        return policy
    key = written_key(policy, "virtualService")
    name = policy.get(key)
    if isinstance(name, str) and name:
        return {**policy, key: qualify(name, namespace)}
    return policy


def qualify(name: str, namespace: str) -> str:
    """A MirrorProxy's `virtualService`: `namespace/name`, or a name in its own namespace."""
    return name if "/" in name else f"{namespace}/{name}"


def tcp_mirror_entries(proxy: Resource) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """Each `tcpMirrors` entry of a MirrorProxy, as written, that names a virtual service
    and a mirror host: (the mirror's path below `spec`, the virtual service's
    `namespace/name`, the mirror). Malformed ones are left to validation."""
    spec = proxy.spec
    key = written_key(spec, "tcpMirrors")
    entries = spec.get(key)
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, dict):
            continue
        ref = entry.get(written_key(entry, "virtualService"))
        mirror = entry.get("mirror")
        if not isinstance(mirror, dict) or not isinstance(mirror.get("host"), str):
            continue
        if isinstance(ref, str) and ref:
            yield (key, i, "mirror"), qualify(ref, proxy.namespace), mirror


def declared_ports(spec: ServiceEntrySpec) -> tuple[int, ...]:
    return tuple(p.number for p in spec.ports)


def entry_declarations(entries: Sequence[tuple[Resource, ServiceEntrySpec]]) -> list[Declaration]:
    """One declaration per ServiceEntry host, visible where its `exportTo` says."""
    return [
        Declaration(
            "ServiceEntry",
            f"{r.namespace}/{r.name}",
            r.namespace,
            host,
            declared_ports(spec),
            scopes_of(spec.export_to, r.namespace),
            (r, spec, i),
        )
        for r, spec in entries
        for i, host in enumerate(spec.hosts)
    ]
