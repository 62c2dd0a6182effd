"""Merging routes-format documents (`routes.yaml`) into one mapping, keeping every value's origin.

Several files (or a folder) make one configuration: `listeners`, `virtualServices`,
`mirrorPolicies` and `tcpMirrors` lists are concatenated in file order, `services`
mappings are united (a service is declared once), and every other top-level key may be
set by one file only. Resources arrive here already compiled to this form
(`pymirror.config.services`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, Path, Problem
from .source import Document, Loc

_LISTS = ("listeners", "virtualServices", "mirrorPolicies", "tcpMirrors")
_MAPS = ("services",)
_TOP_KEYS = "`listeners`, `services` and `virtualServices`"


@dataclass(frozen=True)
class Origin:
    """Where each value of a merged configuration was written (paths as in the model)."""

    values: Mapping[Path, Loc] = field(default_factory=dict)
    keys: Mapping[Path, Loc] = field(default_factory=dict)
    roots: Sequence[Loc] = ()

    def problem(self, path: Path, message: str, *, at_key: bool = False) -> Problem:
        """A `Problem` at ``path``: at its key when asked and known, else at its value.

        A path that was never written (a missing field) is placed at its nearest written
        parent, but keeps its full name.
        """
        loc = self.keys.get(path) if at_key else None
        depth = len(path)
        while loc is None and depth > 0:
            loc = self.values.get(path[:depth])
            if loc is None:
                depth -= 1
        if loc is None:
            if not self.roots:
                return Problem("<config>", None, None, path, message)
            loc, depth = self.roots[0], 0
        return Problem(loc.file, loc.line, loc.column, (*loc.path, *path[depth:]), message)


def merge_mappings(documents: Sequence[Document]) -> tuple[dict[str, Any], Origin]:
    """Merge routes-format documents; raises `ConfigError` on shape errors and conflicts."""
    merged: dict[str, Any] = {}
    values: dict[Path, Loc] = {}
    keys: dict[Path, Loc] = {}
    problems: list[Problem] = []

    def at(doc: Document, path: Path, message: str, *, key: bool = True) -> None:
        loc = (doc.keys if key else doc.values).get(path, doc.root)
        problems.append(Problem(loc.file, loc.line, loc.column, path, message))

    for doc in documents:
        data = doc.data
        if doc.index > 0:
            at(
                doc,
                (),
                "a native config file holds one mapping; in a multi-document stream every "
                "document is a resource with `apiVersion` and `kind`",
                key=False,
            )
            continue
        if not isinstance(data, dict):
            at(
                doc,
                (),
                f"expected a mapping with {_TOP_KEYS} at the top of the file, "
                f"got {describe_value(data)}",
                key=False,
            )
            continue
        # How each top-level key's paths shift in the merged result.
        offsets: dict[str, int] = {}
        for name, value in data.items():
            here = merged.get(name)
            if name not in merged:
                merged[name] = list(value) if isinstance(value, list) else value
                offsets[name] = 0
            elif name in _LISTS and isinstance(value, list) and isinstance(here, list):
                offsets[name] = len(here)
                here.extend(value)
            elif name in _MAPS and isinstance(value, dict) and isinstance(here, dict):
                offsets[name] = 0
                merged[name] = here = dict(here)
                for item, body in value.items():
                    if item in here:
                        first = keys[(name, item)]
                        at(
                            doc,
                            (name, item),
                            f"`{item}` is already declared at "
                            f"{first.file}:{first.line}:{first.column}",
                        )
                    else:
                        here[item] = body
            else:
                first = keys[(name,)]
                at(
                    doc,
                    (name,),
                    f"`{name}` is already set at "
                    f"{first.file}:{first.line}:{first.column}; set it in one file only",
                )
        for source, target in ((doc.values, values), (doc.keys, keys)):
            for path, loc in source.items():
                if not path or path[0] not in offsets:
                    continue
                if len(path) > 1 and isinstance(path[1], int) and path[0] in _LISTS:
                    path = (path[0], path[1] + offsets[path[0]], *path[2:])
                target.setdefault(path, loc)
    if problems:
        raise ConfigError(problems)
    return merged, Origin(values, keys, tuple(doc.root for doc in documents))


def describe_value(value: object) -> str:
    """How a YAML reader would name a value: ``a list``, ``the number 5``, ``text 'x'``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({value})"
