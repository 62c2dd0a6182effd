"""Reading YAML sources into plain data while remembering where every value came from.

PyYAML's composer gives us nodes with start marks; we build plain Python values from them
ourselves so each value (and each mapping key) can be mapped back to ``file:line:col``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from .errors import ConfigError, Path, Problem

# The C loader is ~10x faster; the pure one gives the same nodes and marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_EXTENSIONS = (".yaml", ".yml")

#: Deeper than any real configuration (an Istio resource nests about a dozen levels), and
#: far from Python's recursion limit, so hostile nesting is an error, not a RecursionError.
MAX_DEPTH = 64
#: Values one document may build, counting every expansion of an alias: an alias chain
#: ("billion laughs") that multiplies a few hundred bytes into millions of values is
#: refused instead of eating memory and time.
MAX_VALUES = 200_000

#: What `load_config` accepts: a file or folder path, or YAML text.
Source = str | os.PathLike[str]


@dataclass(frozen=True)
class Loc:
    """Where a node starts: 1-based line and column, and its path inside its own document."""

    file: str
    line: int
    column: int
    path: Path


@dataclass
class Document:
    """One YAML document as plain data, with the start of every value and key in it."""

    file: str
    data: Any
    root: Loc
    #: Its place among the non-empty documents of its stream, from 0.
    index: int = 0
    #: Start of the value at each path.
    values: dict[Path, Loc] = field(default_factory=dict)
    #: Start of the mapping key that names each path's value.
    keys: dict[Path, Loc] = field(default_factory=dict)


def read_sources(*sources: Source) -> list[Document]:
    """Read every source, in order; a folder contributes its ``*.yaml``/``*.yml`` files, sorted.

    Raises `ConfigError` listing every unreadable file and YAML error found.
    """
    problems: list[Problem] = []
    documents: list[Document] = []
    if not sources:
        raise ConfigError([Problem("<config>", None, None, (), "no configuration given")])
    for source in sources:
        for name, text, problem in _texts(source):
            if problem is not None:
                problems.append(problem)
                continue
            try:
                docs = parse(text, name)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            if not docs:
                problems.append(
                    Problem(
                        name,
                        None,
                        None,
                        (),
                        "file is empty; expected a mapping with "
                        "`listeners`, `services` and `virtualServices`",
                    )
                )
            documents.extend(docs)
    if problems:
        raise ConfigError(problems)
    return documents


#: The source that means standard input (`pymirror check -`, `kubectl ... | pymirror run -`).
STDIN = "-"


def _texts(source: Source) -> list[tuple[str, str, Problem | None]]:
    """The (name, text, problem) of each file a source stands for; `-`: standard input."""
    if source == STDIN:
        return [("<stdin>", sys.stdin.read(), None)]
    if isinstance(source, str) and ("\n" in source or not os.path.exists(source)):
        if "\n" not in source and source.strip().endswith(_EXTENSIONS):
            return [(source, "", Problem(source, None, None, (), "no such file or folder"))]
        return [("<string>", source, None)]
    path = FsPath(source)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            # Dot-files are editor swap and backup files, never configuration.
            if p.suffix in _EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not files:
            return [
                (
                    str(path),
                    "",
                    Problem(str(path), None, None, (), "folder holds no *.yaml or *.yml file"),
                )
            ]
        return [_read(p) for p in files]
    return [_read(path)]


def _read(path: FsPath) -> tuple[str, str, Problem | None]:
    try:
        return str(path), path.read_text(encoding="utf-8-sig"), None
    except FileNotFoundError:
        return str(path), "", Problem(str(path), None, None, (), "no such file or folder")
    except (OSError, UnicodeDecodeError) as exc:
        return str(path), "", Problem(str(path), None, None, (), f"cannot read: {exc}")


def parse(text: str, file: str) -> list[Document]:
    """Parse a YAML stream into its non-empty documents."""
    loader = _Loader(text)
    try:
        _check_depth(text, file)
        documents: list[Document] = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = _Builder(loader, file).document(node, len(documents))
            if doc.data is not None:
                documents.append(doc)
        return documents
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError([Problem(file, line, column, (), f"invalid YAML: {reason}")]) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML forbids (NUL, other controls): the reader gives an offset only.
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        reason = f"invalid YAML: character U+{code:04X} is not allowed"
        raise ConfigError([Problem(file, line, column, (), reason)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, None, (), f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def _check_depth(text: str, file: str) -> None:
    """Refuses nesting past `MAX_DEPTH` from the event stream, before anything recurses:
    libyaml's parser is iterative, but composing nodes (in C) and building values recurse,
    and thousands of levels would overflow the stack."""
    events = _Loader(text)
    try:
        depth = 0
        while events.check_event():
            event = events.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
                    message = f"nested deeper than {MAX_DEPTH} levels"
                    raise ConfigError([Problem(file, line, column, (), message)])
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
    finally:
        events.dispose()


class _TooBig(Exception):
    """Stops building a document that is nested too deep or expands too far."""


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.problems: list[Problem] = []
        self.stack: set[int] = set()
        self.built = 0

    def loc(self, node: yaml.Node, path: Path) -> Loc:
        mark = node.start_mark
        return Loc(self.file, mark.line + 1, mark.column + 1, path)

    def document(self, node: yaml.Node, index: int) -> Document:
        doc = Document(self.file, None, self.loc(node, ()), index)
        # Too big is already a problem; building further would only repeat it.
        with contextlib.suppress(_TooBig):
            doc.data = self.build(node, (), doc)
        if self.problems:
            raise ConfigError(self.problems)
        return doc

    def problem(self, node: yaml.Node, path: Path, message: str) -> None:
        loc = self.loc(node, path)
        self.problems.append(Problem(self.file, loc.line, loc.column, path, message))

    def build(self, node: yaml.Node, path: Path, doc: Document) -> Any:
        self.built += 1
        if self.built > MAX_VALUES:
            self.problem(
                node,
                path,
                f"the document expands to more than {MAX_VALUES:,} values "
                "(aliases referring to aliases?)",
            )
            raise _TooBig
        doc.values[path] = self.loc(node, path)
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node)
            except yaml.constructor.ConstructorError as exc:
                self.problem(node, path, f"cannot read this value: {exc.problem}")
                return None
        if id(node) in self.stack:
            self.problem(node, path, "an alias refers to a node that contains it")
            return None
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i), doc) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, path, doc)
        finally:
            self.stack.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path, doc: Document) -> dict[str, Any]:
        # Duplicates are looked for among the keys written here, before `<<` merges, whose
        # keys are meant to be overridden.
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            first = seen.setdefault(key_node.value, key_node)
            if first is not key_node:
                self.problem(
                    key_node,
                    (*path, key_node.value),
                    f"duplicate key `{key_node.value}` (first at line "
                    f"{first.start_mark.line + 1}, column {first.start_mark.column + 1})",
                )
        try:
            self.loader.flatten_mapping(node)
        except yaml.constructor.ConstructorError as exc:
            self.problem(node, path, f"invalid merge key: {exc.problem}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "mapping keys must be plain text")
                continue
            # Keys are names: taken as written, so `on:` or `200:` stay text, not bool or int.
            key: str = key_node.value
            doc.keys[(*path, key)] = self.loc(key_node, (*path, key))
            result[key] = self.build(value_node, (*path, key), doc)
        return result
