"""Turning validation failures into located, readable problems.

Pydantic checks each object on its own; `pymirror.config.references` then checks what
spans objects. Both report paths as written in YAML (camelCase), which `Origin` maps to
file:line:col (`locate`).
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from .errors import Path, Problem
from .merge import Origin, describe_value
from .model import Config, VirtualService


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


# === placing issues ===


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


def position(config: Config, path: Path) -> str:
    """`file:line:col` of the value at model path ``path`` (the file alone when unknown)."""
    origin: Origin = config._origin or Origin()
    p = origin.problem(path, "")
    return f"{p.file}:{p.line}:{p.column}" if p.line else p.file
