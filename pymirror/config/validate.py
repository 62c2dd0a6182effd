"""Turning validation failures into located, readable problems, and checks across objects.

Pydantic checks each object on its own; `check_references` then checks what spans
objects (destinations name declared subsets, names are unique, listeners make sense).
Both report paths as written in YAML (camelCase), which `Origin` maps to file:line:col.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from .errors import ConfigError, Path, Problem
from .hosts import domains, host_matches
from .merge import Origin, describe_value
from .model import Config, Destination, Listener, VirtualService
from .types import split_host_port


class Issue(NamedTuple):
    """A problem before it is given a place in a file: at ``path`` of the model (at its key
    when ``at_key``)."""

    path: Path
    message: str
    at_key: bool = False
    severity: Literal["error", "warning"] = "error"
    code: str = ""


def vs_subject(vs: VirtualService) -> str:
    """How reports name a virtual service: `VirtualService default/reviews`."""
    return (
        f"VirtualService {vs.namespace}/{vs.name}" if vs.namespace else f"VirtualService {vs.name}"
    )


def vs_label(vs: VirtualService) -> str:
    """`namespace/name`, or `name` for a virtual service without a namespace."""
    return f"{vs.namespace}/{vs.name}" if vs.namespace else vs.name


def problems_from(
    exc: ValidationError, origin: Origin, root: type[BaseModel] = Config
) -> list[Problem]:
    """One `Problem` per pydantic error of validating ``root``, placed with ``origin``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Path = tuple(err["loc"])
        ctx: dict[str, Any] = err.get("ctx") or {}
        at_key = False
        if loc and loc[-1] == "[key]":  # a mapping key failed, not its value
            loc, at_key = loc[:-1], True
        if err["type"] == "extra_forbidden":
            message, at_key = _unknown_field(root, loc), True
        elif err["type"] == "pymirror":  # raised by a model check, see `model.problem`
            loc, message, at_key = (*loc, *ctx["where"]), ctx["message"], ctx["at_key"]
        elif err["type"] == "missing":
            message = f"missing required field `{loc[-1]}`"
        else:
            message = _message(err["type"], err["msg"], err.get("input"), ctx)
        problems.append(origin.problem(loc, message, at_key=at_key))
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))


def _message(kind: str, msg: str, value: Any, ctx: dict[str, Any]) -> str:
    got = describe_value(value)
    if kind == "string_type":
        hint = f'; quote it: "{value}"' if isinstance(value, int | float | bool) else ""
        return f"expected text, got {got}{hint}"
    expected = {
        "int_type": "a whole number",
        "float_type": "a number",
        "bool_type": "`true` or `false`",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
    }
    if kind in expected:
        return f"expected {expected[kind]}, got {got}"
    bounds = {
        "greater_than_equal": ">=",
        "less_than_equal": "<=",
        "greater_than": ">",
        "less_than": "<",
    }
    if kind in bounds:
        bound = ctx[{">=": "ge", "<=": "le", ">": "gt", "<": "lt"}[bounds[kind]]]
        # Integers as they are (a byte bound reads 16777216, not 1.67772e+07).
        shown = str(bound) if isinstance(bound, int) else f"{bound:g}"
        return f"must be {bounds[kind]} {shown} (got {value})"
    if kind == "too_short":
        need = ctx.get("min_length", 1)
        return "must not be empty" if need == 1 else f"needs at least {need} entries"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx['pattern']} (got {value!r})"
    if kind == "finite_number":
        return f"must be a finite number (got {value})"
    if kind == "value_error":
        return str(ctx["error"])
    return msg


def _unknown_field(root: type[BaseModel], loc: Path) -> str:
    field = str(loc[-1])
    model = model_at(root, loc[:-1])
    if model is None:
        return f"unknown field `{field}`"
    unsupported: frozenset[str] = getattr(model, "unsupported", frozenset())
    if field in unsupported or to_camel(field) in unsupported:
        return f"`{field}` is valid Istio but not supported by pymirror yet"
    names = [f.alias or name for name, f in model.model_fields.items()]
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(field.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown field `{field}`; did you mean `{by_lower[close[0]]}`?"
    return f"unknown field `{field}`; expected one of " + ", ".join(f"`{n}`" for n in names)


def model_at(root: type[BaseModel], loc: Path) -> type[BaseModel] | None:
    """The model class that validates the object at ``loc`` (model fields by alias or name)."""
    tp: Any = root
    for part in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            found = [f for name, f in fields.items() if part in (name, f.alias)]
            if not found:
                return None
            tp = found[0].annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


# === checks across objects ===


def locate(config: Config, issues: list[Issue]) -> list[Problem]:
    origin: Origin = config._origin or Origin()
    located = []
    for issue in issues:
        p = origin.problem(issue.path, issue.message, at_key=issue.at_key)
        located.append(
            Problem(
                p.file,
                p.line,
                p.column,
                p.path,
                p.message,
                issue.severity,
                issue.code,
                subject_of(config, issue.path),
            )
        )
    return located


def subject_of(config: Config, path: Path) -> str:
    """The object a model path belongs to, as reports name it."""
    if len(path) > 1 and path[0] == "virtualServices" and isinstance(path[1], int):
        return vs_subject(config.virtual_services[path[1]])
    if len(path) > 1 and path[0] == "services" and path[1] in config.services:
        return config.services[str(path[1])]._source or f"service {path[1]}"
    return ""


def raise_for(config: Config, issues: list[Issue]) -> None:
    if errors := [i for i in issues if i.severity == "error"]:
        raise ConfigError(locate(config, errors))


def check_references(
    config: Config, *, need_listener: bool = True, strict: bool = True
) -> list[Issue]:
    """What no single object can check; no error when the config is consistent.

    ``strict`` (what `run` needs) makes a reference that may point into a file not given
    (a missing delegate) an error; `check` reports it as a warning.
    """
    return list(_Checker(config, strict).run(need_listener=need_listener))


class _Checker:
    def __init__(self, config: Config, strict: bool = True) -> None:
        self.config = config
        self.strict = strict
        self.origin: Origin = config._origin or Origin()

    def where(self, path: Path) -> str:
        p = self.origin.problem(path, "")
        return f"{p.file}:{p.line}:{p.column}" if p.line else p.file

    def run(self, *, need_listener: bool) -> Iterator[Issue]:
        yield from self.services()
        yield from self.virtual_services()
        yield from self.delegates()
        yield from self.mirror_policies()
        yield from self.tcp_mirrors()
        yield from self.listeners(need_listener)

    def services(self) -> Iterator[Issue]:
        for name, service in self.config.services.items():
            if service._source is not None:
                continue  # a resource's: `references` checks it as Istio's analyzer does
            for subset in service.subsets:
                if not service.select(subset):
                    labels = ", ".join(f"{k}: {v}" for k, v in service.subsets[subset].items())
                    yield Issue(
                        ("services", name, "subsets", subset),
                        f"subset `{subset}` of service `{name}` selects no endpoint: none "
                        f"has all the labels {{{labels}}}",
                        True,
                    )

    def virtual_services(self) -> Iterator[Issue]:
        names: dict[tuple[str | None, str], Path] = {}
        hosts: dict[str, Path] = {}
        for i, vs in enumerate(self.config.virtual_services):
            here: Path = ("virtualServices", i)
            name = (vs.namespace, vs.name)
            if name in names:
                yield Issue(
                    (*here, "name"),
                    f"virtual service `{vs.name}` is already defined at {self.where(names[name])}",
                )
            names.setdefault(name, (*here, "name"))
            # Only HTTP routes are served: tcp- or tls-only hosts claim no request host.
            for j, host in enumerate(vs.hosts if vs.serves_http else ()):
                for domain in domains(host, vs.namespace):
                    if domain.lower() in hosts:
                        yield Issue(
                            (*here, "hosts", j),
                            f"host `{domain}` is already served by the "
                            f"virtual service at {self.where(hosts[domain.lower()])}",
                        )
                        break
                for domain in domains(host, vs.namespace):
                    hosts.setdefault(domain.lower(), (*here, "hosts", j))
            resource = self.config.source(i) is not None
            found = [
                (("http", j, *path), dest)
                for j, route in enumerate(vs.http)
                for path, dest in route.destinations()
            ]
            for j, tcp in enumerate(vs.tcp if self.tcp_served else ()):
                found += [
                    (("tcp", j, "route", k, "destination"), d.destination)
                    for k, d in enumerate(tcp.route)
                ]
                if tcp.mirror is not None:
                    found.append((("tcp", j, "mirror"), tcp.mirror))
            for path, dest in found:
                # A resource's destinations are checked as Istio's analyzer does
                # (`references`), unless they name a native service.
                if not resource or self.native(dest.host):
                    yield from self.destination((*here, *path), dest)

    @property
    def tcp_served(self) -> bool:
        """`tcp` routes are served only where a listener is tcp."""
        return any(
            self.config.listener_protocol(lst.address, lst.protocol) == "tcp"
            for lst in self.config.listeners
        )

    def native(self, host: str) -> bool:
        service = self.config.services.get(host)
        return service is not None and service._source is None

    def delegates(self) -> Iterator[Issue]:
        """`delegate` names a virtual service without hosts; every such one is named."""
        vss = self.config.virtual_services
        by_name = {(vs.namespace, vs.name): i for i, vs in enumerate(vss)}
        used: set[int] = set()
        for i, vs in enumerate(vss):
            for j, route in enumerate(vs.http):
                if route.delegate is None:
                    continue
                at: Path = ("virtualServices", i, "http", j, "delegate")
                namespace = route.delegate.namespace or vs.namespace
                target = by_name.get((namespace, route.delegate.name))
                if target is None:
                    where = f" in namespace `{namespace}`" if namespace else ""
                    yield Issue(
                        (*at, "name"),
                        f"no virtual service `{route.delegate.name}`{where} in the files given: "
                        "this entry serves nothing",
                        severity="error" if self.strict else "warning",
                        code="unknown-delegate",
                    )
                elif vss[target].hosts:
                    yield Issue(
                        (*at, "name"),
                        f"virtual service `{route.delegate.name}` has `hosts`, so it is not a "
                        "delegate (a delegate has none)",
                        code="not-a-delegate",
                    )
                else:
                    used.add(target)
        for i, vs in enumerate(vss):
            if vs.is_delegate and i not in used:
                yield Issue(
                    ("virtualServices", i, "name"),
                    "not served: a virtual service without `hosts` is a delegate, and no "
                    "`delegate` names it",
                    severity="warning",
                    code="unused-delegate",
                )

    def mirror_policies(self) -> Iterator[Issue]:
        """Each of `mirrorPolicies` names one virtual service (and route) that exists."""
        vss = self.config.virtual_services
        seen: dict[tuple[int, str | None], Path] = {}
        for i, policy in enumerate(self.config.mirror_policies):
            here: Path = ("mirrorPolicies", i)
            found, issue = self.named(here, policy.virtual_service)
            if issue is not None:
                yield issue
                continue
            vs = vss[found]
            index = policy.route_index(vs)
            if policy.route is not None and index is None:
                routes = ", ".join(f"`{r.name or j}`" for j, r in enumerate(vs.http)) or "none"
                yield Issue(
                    (*here, "route"),
                    f"virtual service `{vs_label(vs)}` has no http route `{policy.route}` "
                    f"(its routes: {routes})",
                    code="unknown-route",
                )
                continue
            key = (found, policy.route)
            if key in seen:
                yield Issue(
                    here,
                    f"`{vs_label(vs)}`"
                    + (f" route `{policy.route}`" if policy.route is not None else "")
                    + f" already has a mirror policy at {self.where(seen[key])}",
                    code="duplicate-mirror-policy",
                )
                continue
            seen[key] = (*here, "virtualService")
            routes_ = [vs.http[index]] if index is not None else vs.http
            if not any(r.mirror_policies for r in routes_):
                yield Issue(
                    here,
                    "applies to no mirror: "
                    + (f"route `{policy.route}`" if policy.route is not None else "no route")
                    + f" of `{vs_label(vs)}` has `mirror` or `mirrors`",
                    severity="warning",
                    code="policy-without-mirror",
                )

    def named(self, here: Path, ref: str) -> tuple[int, Issue | None]:
        """The index of the one virtual service that ``ref`` (the `virtualService` of the
        entry at ``here``) names; else why not."""
        vss = self.config.virtual_services
        matched = [k for k, vs in enumerate(vss) if vs.is_named(ref)]
        if not matched:
            known = ", ".join(f"`{vs_label(vs)}`" for vs in vss) or "none"
            return -1, Issue(
                (*here, "virtualService"),
                f"no virtual service `{ref}` in the files given (known: {known})",
                severity="error" if self.strict else "warning",
                code="unknown-virtual-service",
            )
        if len(matched) > 1:
            names = ", ".join(f"`{vs_label(vss[k])}`" for k in matched)
            return -1, Issue(
                (*here, "virtualService"),
                f"`{ref}` names several virtual services ({names}): write `namespace/name`",
                code="ambiguous-virtual-service",
            )
        return matched[0], None

    def tcp_mirrors(self) -> Iterator[Issue]:
        """Each of `tcpMirrors` names a virtual service with tcp routes (and one of them),
        gives no tcp route a second mirror, and names a mirror destination that resolves."""
        vss = self.config.virtual_services
        # Where each tcp route (virtual service, route) got a mirror from `tcpMirrors`.
        given: dict[tuple[int, int], Path] = {}
        for i, policy in enumerate(self.config.tcp_mirrors):
            here: Path = ("tcpMirrors", i)
            found, issue = self.named(here, policy.virtual_service)
            if issue is not None:
                yield issue
                continue
            vs = vss[found]
            if not vs.tcp:
                yield Issue(
                    (*here, "virtualService"),
                    f"virtual service `{vs_label(vs)}` has no tcp routes to mirror",
                    code="no-tcp-route",
                )
                continue
            if not policy.route_indexes(vs):
                yield Issue(
                    (*here, "route"),
                    f"virtual service `{vs_label(vs)}` has no tcp route {policy.route} (its "
                    f"tcp routes: 0 to {len(vs.tcp) - 1})",
                    code="unknown-route",
                )
                continue
            for j in policy.route_indexes(vs):
                route: Path = ("virtualServices", found, "tcp", j)
                if vs.tcp[j].mirror is not None:
                    other = f"its own `mirror` at {self.where((*route, 'mirror'))}"
                elif (found, j) in given:
                    other = f"the `tcpMirrors` entry at {self.where(given[(found, j)])}"
                else:
                    given[(found, j)] = (*here, "virtualService")
                    continue
                yield Issue(
                    here,
                    f"tcp route {j} of `{vs_label(vs)}` already has a mirror, from {other}: "
                    "declare it in one place",
                    code="duplicate-tcp-mirror",
                )
            # As a mirror written on the route: a resource's is checked by `references`.
            resource = self.config.source(found) is not None
            if self.tcp_served and (not resource or self.native(policy.mirror.host)):
                yield from self.destination((*here, "mirror"), policy.mirror)

    def destination(self, path: Path, dest: Destination) -> Iterator[Issue]:
        service = self.config.services.get(dest.host)
        if service is not None and service.endpoints:
            if dest.port is not None and not service.ports:
                yield Issue(
                    (*path, "port"),
                    f"`port` only applies to hosts resolved by DNS; the "
                    f"endpoints of service `{dest.host}` carry their own ports",
                    True,
                )
            elif service.ports and service.port(dest.port.number if dest.port else None) is None:
                ports = ", ".join(str(p.number) for p in service.ports)
                yield Issue(
                    (*path, "port") if dest.port else path,
                    f"service `{dest.host}` has no port {dest.port.number} (its ports: {ports})"
                    if dest.port
                    else f"service `{dest.host}` has several ports ({ports}): set `port.number`",
                    code="unknown-port" if dest.port else "port-required",
                )
            if dest.subset is not None and dest.subset not in service.subsets:
                known = ", ".join(f"`{s}`" for s in service.subsets) or "none"
                yield Issue(
                    (*path, "subset"),
                    f"service `{dest.host}` has no subset `{dest.subset}` (its subsets: {known})",
                    code="unknown-subset",
                )
        elif dest.subset is not None:
            why = (
                "declares no endpoints"
                if service is not None
                else "is not declared under `services`"
            )
            yield Issue(
                (*path, "subset"),
                f"`{dest.host}` {why}, so it is resolved by DNS and has no subset `{dest.subset}`",
                code="unknown-subset",
            )

    def listeners(self, need_listener: bool) -> Iterator[Issue]:
        config = self.config
        if need_listener and not config.listeners:
            yield Issue(
                ("listeners",),
                "no listener: add `listeners: [{address: 0.0.0.0:8080}]` or pass `--listen`",
                True,
            )
        bound: dict[str, Path] = {}
        if config.admin is not None and split_host_port(config.admin.address)[1] != 0:
            bound[config.admin.address] = ("admin", "address")
        for i, listener in enumerate(config.listeners):
            here: Path = ("listeners", i)
            if split_host_port(listener.address)[1] != 0:
                if listener.address in bound:
                    yield Issue(
                        (*here, "address"),
                        f"`{listener.address}` is already used at "
                        f"{self.where(bound[listener.address])}",
                    )
                bound.setdefault(listener.address, (*here, "address"))
            if listener.protocol is None:
                yield from self.listener_protocol(here, listener)
            host = listener.host
            if host is None or host in config.services:
                continue
            if not any(
                host_matches(d, host)
                for vs in config.virtual_services
                for p in vs.hosts
                for d in domains(p, vs.namespace)
            ):
                yield Issue(
                    (*here, "host"),
                    f"no virtual service serves host `{host}` and no "
                    "service has that name, so requests for it could go nowhere",
                )

    def listener_protocol(self, here: Path, listener: Listener) -> Iterator[Issue]:
        """A listener that takes its protocol from the service ports: they agree, and a
        `tcp` one has no `host`."""
        port = split_host_port(listener.address)[1]
        if conflict := protocol_conflict(self.config, port):
            yield Issue((*here, "address"), conflict, code="protocol-conflict")
        elif listener.host is not None and self.config.listener_protocol(listener.address) == "tcp":
            yield Issue(
                (*here, "host"),
                f"this listener is tcp ({port_origin(self.config, port)}), with no requests "
                "to route by host: remove `host`, or write `protocol: http`",
                True,
            )


def _declaration(config: Config, name: str, index: int) -> str:
    """`ServiceEntry default/redis port `tcp-redis` (TCP) at file:line:col`."""
    service = config.services[name]
    port = service.ports[index]
    origin: Origin = config._origin or Origin()
    p = origin.problem(("services", name, "ports", index, "protocol"), "")
    where = f"{p.file}:{p.line}:{p.column}" if p.line else p.file
    label = f" `{port.name}`" if port.name else ""
    return f"{service._source or f'service `{name}`'} port{label} ({port.protocol}) at {where}"


def port_origin(config: Config, port: int) -> str:
    """Why a listener on ``port`` that writes no `protocol` is tcp: the first declaration."""
    name, index, _ = config.port_protocols(port)[0]
    return f"port {port} is declared by {_declaration(config, name, index)}"


def protocol_conflict(config: Config, port: int) -> str | None:
    """Why a listener on ``port`` needs its `protocol` written: service ports with that
    number declare a TCP-family and an HTTP-family protocol. None when they agree."""
    found = config.port_protocols(port) if port else []
    tcp = next(((n, i) for n, i, f in found if f == "tcp"), None)
    http = next(((n, i) for n, i, f in found if f == "http"), None)
    if tcp is None or http is None:
        return None
    return (
        f"port {port} is declared by {_declaration(config, *tcp)} and by "
        f"{_declaration(config, *http)}: write this listener's `protocol` (`tcp` or `http`)"
    )
