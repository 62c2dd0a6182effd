"""Turning validation failures into located, readable problems, and checks across objects.

Pydantic checks each object on its own; `check_references` then checks what spans
objects (destinations name declared subsets, names are unique, listeners make sense).
Both report paths as written in YAML (camelCase), which `Origin` maps to file:line:col.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from .errors import ConfigError, Path, Problem
from .merge import Origin, describe_value
from .model import Config, Destination, host_matches
from .types import split_host_port

#: (path, message, at_key): a problem before it is given a place in a file.
Issue = tuple[Path, str, bool]


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
        return f"must be {bounds[kind]} {bound:g} (got {value})"
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
    return [origin.problem(path, message, at_key=at_key) for path, message, at_key in issues]


def raise_for(config: Config, issues: list[Issue]) -> None:
    if issues:
        raise ConfigError(locate(config, issues))


def check_references(config: Config, *, need_listener: bool = True) -> list[Issue]:
    """What no single object can check; empty when the config is consistent."""
    return list(_Checker(config).run(need_listener=need_listener))


class _Checker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.origin: Origin = config._origin or Origin()

    def where(self, path: Path) -> str:
        p = self.origin.problem(path, "")
        return f"{p.file}:{p.line}:{p.column}" if p.line else p.file

    def run(self, *, need_listener: bool) -> Iterator[Issue]:
        yield from self.services()
        yield from self.virtual_services()
        yield from self.listeners(need_listener)

    def services(self) -> Iterator[Issue]:
        for name, service in self.config.services.items():
            for subset in service.subsets:
                if not service.select(subset):
                    labels = ", ".join(f"{k}: {v}" for k, v in service.subsets[subset].items())
                    yield (
                        ("services", name, "subsets", subset),
                        f"subset `{subset}` of service `{name}` selects no endpoint: none "
                        f"has all the labels {{{labels}}}",
                        True,
                    )

    def virtual_services(self) -> Iterator[Issue]:
        names: dict[str, Path] = {}
        hosts: dict[str, Path] = {}
        for i, vs in enumerate(self.config.virtual_services):
            here: Path = ("virtualServices", i)
            if vs.name in names:
                yield (
                    (*here, "name"),
                    f"virtual service `{vs.name}` is already defined at "
                    f"{self.where(names[vs.name])}",
                    False,
                )
            names.setdefault(vs.name, (*here, "name"))
            for j, host in enumerate(vs.hosts):
                if host.lower() in hosts:
                    yield (
                        (*here, "hosts", j),
                        f"host `{host}` is already served by the "
                        f"virtual service at {self.where(hosts[host.lower()])}",
                        False,
                    )
                hosts.setdefault(host.lower(), (*here, "hosts", j))
            for j, route in enumerate(vs.http):
                at: Path = (*here, "http", j)
                for k, dest in enumerate(route.route):
                    yield from self.destination((*at, "route", k, "destination"), dest.destination)
                if route.mirror is not None:
                    yield from self.destination((*at, "mirror"), route.mirror)
                for k, mirror in enumerate(route.mirrors):
                    yield from self.destination(
                        (*at, "mirrors", k, "destination"), mirror.destination
                    )

    def destination(self, path: Path, dest: Destination) -> Iterator[Issue]:
        service = self.config.services.get(dest.host)
        if service is not None and service.endpoints:
            if dest.port is not None:
                yield (
                    (*path, "port"),
                    f"`port` only applies to hosts resolved by DNS; the "
                    f"endpoints of service `{dest.host}` carry their own ports",
                    True,
                )
            if dest.subset is not None and dest.subset not in service.subsets:
                known = ", ".join(f"`{s}`" for s in service.subsets) or "none"
                yield (
                    (*path, "subset"),
                    f"service `{dest.host}` has no subset `{dest.subset}` (its subsets: {known})",
                    False,
                )
        elif dest.subset is not None:
            why = (
                "declares no endpoints"
                if service is not None
                else "is not declared under `services`"
            )
            yield (
                (*path, "subset"),
                f"`{dest.host}` {why}, so it is resolved by DNS and has no subset `{dest.subset}`",
                False,
            )

    def listeners(self, need_listener: bool) -> Iterator[Issue]:
        config = self.config
        if need_listener and not config.listeners:
            yield (
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
                    yield (
                        (*here, "address"),
                        f"`{listener.address}` is already used at "
                        f"{self.where(bound[listener.address])}",
                        False,
                    )
                bound.setdefault(listener.address, (*here, "address"))
            host = listener.host
            if host is None or host in config.services:
                continue
            if not any(host_matches(p, host) for vs in config.virtual_services for p in vs.hosts):
                yield (
                    (*here, "host"),
                    f"no virtual service serves host `{host}` and no "
                    "service has that name, so requests for it could go nowhere",
                    False,
                )
