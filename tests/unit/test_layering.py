"""pymirror's parts import each other in one direction only, and no modules import each
other in a circle: read from the source (every import, in functions and `TYPE_CHECKING`
blocks too), so an edge against the layers fails here before it becomes a tangle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pymirror"

#: pymirror's parts (a top-level module or subpackage; `pymirror` is the package's own
#: `__init__`, the public API), lowest first, each with the parts it may import. DESIGN.md's
#: layout read from the contract up: the extension, the defaults and the Snapshot are
#: leaves; config builds the model and knows nothing of the Snapshot or the core; resolve
#: turns the model into a Snapshot and knows nothing of the core; engine wraps the
#: extension; compare, metrics and top read what the core hands over, never the config;
#: then the embedding API, the admin endpoint, the commands and the public surface.
#: A part may import only parts listed above it.
LAYERS: list[tuple[str, set[str]]] = [
    ("_native", set()),  # the compiled data plane (its stub, `_native.pyi`)
    ("errors", set()),  # the one exception tree
    ("logs", set()),  # log formats
    ("defaults", set()),  # the core's defaults, shared by config and resolve
    ("snapshot", set()),  # the contract with the core
    ("config", {"errors", "defaults"}),
    ("resolve", {"errors", "defaults", "snapshot", "config"}),
    ("tls_files", {"config"}),  # what TLS files a config reads, and their fingerprint
    ("runtime", {"snapshot", "resolve"}),  # operators' overrides on a running proxy
    ("engine", {"_native", "errors", "snapshot"}),
    ("compare", {"snapshot", "engine"}),
    ("istio_metrics", {"engine"}),  # Istio's request metrics, from the core's outcomes
    ("metrics", {"snapshot", "engine", "istio_metrics"}),
    ("top", {"engine"}),
    ("proxy", {"errors", "snapshot", "config", "resolve", "runtime", "engine", "compare"}),
    ("control", {"errors", "runtime", "compare", "proxy"}),  # runtime control's rules
    (
        "admin",
        {"errors", "snapshot", "config", "resolve", "runtime", "engine", "compare"}
        | {"metrics", "proxy", "control"},
    ),
    ("check", {"errors", "snapshot", "config", "resolve", "engine"}),
    (
        "lifecycle",
        {"errors", "config", "resolve", "tls_files", "engine", "compare", "proxy", "admin"},
    ),
    ("demo", {"errors", "config", "engine", "compare", "proxy"}),
    ("pymirror", {"_native", "errors", "config", "engine", "proxy", "admin", "lifecycle"}),
    (
        "cli",
        {
            "errors",
            "logs",
            "config",
            "engine",
            "compare",
            "top",
            "admin",
            "control",
            "check",
            "lifecycle",
            "tls_files",
            "demo",
            "pymirror",
        },
    ),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    found["pymirror._native"] = PACKAGE / "_native.pyi"
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """The pymirror modules ``name`` imports, with the line of each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            # `from package import module` imports the module; `from module import name`
            # imports the module that defines the name.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for target in targets:
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                yield target, node.lineno


EDGES = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _part(module: str) -> str:
    """`pymirror.config.model` -> `config`; the package's `__init__` -> `pymirror`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated last), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for successor in sorted(graph.get(node, ())):
            if found := visit(successor, [*path, node]):
                return found
        done.add(node)
        return None

    for node in sorted(graph):
        if found := visit(node, []):
            return found
    return None


def test_every_part_is_placed_once_and_imports_only_parts_below_it() -> None:
    names = [name for name, _ in LAYERS]
    assert len(names) == len(set(names))
    assert {_part(m) for m in MODULES} == set(names), "place each new part in LAYERS"
    for i, (name, allowed) in enumerate(LAYERS):
        above = allowed - set(names[:i])
        assert not above, f"{name} may import only parts listed above it, not {above}"


def test_imports_follow_the_layers() -> None:
    allowed = dict(LAYERS)
    wrong = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target}"
        for module, edges in EDGES.items()
        for target, line in edges
        if _part(target) != _part(module) and _part(target) not in allowed[_part(module)]
    ]
    assert not wrong, "imports against the layers (see LAYERS):\n" + "\n".join(wrong)


def test_no_import_cycle_between_parts() -> None:
    graph: dict[str, set[str]] = {}
    for module, edges in EDGES.items():
        graph.setdefault(_part(module), set()).update(
            _part(t) for t, _ in edges if _part(t) != _part(module)
        )
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_import_cycle_between_modules() -> None:
    graph = {module: {t for t, _ in edges} for module, edges in EDGES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[str] | None
) -> None:
    assert _cycle(graph) == expected


def test_the_import_reader_sees_relative_lazy_and_type_checking_imports() -> None:
    edges = {module: {t for t, _ in found} for module, found in EDGES.items()}
    # `from .. import defaults` (relative, a module imported by name from its package)
    assert "pymirror.defaults" in edges["pymirror.config.model"]
    # `from .engine import validate` inside a function
    assert "pymirror.engine" in edges["pymirror.check"]
    # `from pymirror.engine import ComparedPair` under `if TYPE_CHECKING:`
    assert "pymirror.engine" in edges["pymirror.compare.comparator"]
    # `from pymirror import __version__`: a name of the package's own `__init__`
    assert "pymirror" in edges["pymirror.cli"]
