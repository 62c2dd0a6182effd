"""Loading pymirror configuration: YAML with positions -> merged mapping -> typed model.

Two forms compile to the same `Config`: the routes format (`routes.yaml`: one mapping per
file) and Kubernetes-style resources (Istio's VirtualService, DestinationRule,
ServiceEntry and pymirror's MirrorProxy, in multi-document streams). Every error names the
file, line and column it comes from (see `ConfigError`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import ValidationError

from .errors import ConfigError, Problem
from .findings import config_warnings, resource_warnings
from .merge import merge_mappings
from .model import Config
from .protocols import tcp_listener_in
from .references import check_references
from .resources import expand_lists, is_resource, read_resources
from .services import Compiled, compile_resources
from .source import Document, Source, read_sources
from .validate import locate, problems_from

__all__ = ["Config", "ConfigError", "Loaded", "Problem", "Source", "load", "load_config"]

log = logging.getLogger("pymirror.config")


@dataclass
class Loaded:
    """A configuration as far as it loads, and every problem found on the way."""

    config: Config | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def _has_tcp_listener(documents: list[Document]) -> bool:
    """Whether any listener serves tcp (then `tcp` routes are served): written `protocol:
    tcp`, or none written on a port that the services (the routes format's, or compiled
    from ServiceEntries) declare TCP-family."""
    return tcp_listener_in(d.data for d in documents)


def load(*sources: Source, strict: bool = True) -> Loaded:
    """Load a configuration and report every problem, errors and warnings, without raising.

    ``strict`` is what `run` needs: a reference that may point into a file not given (a
    subset no DestinationRule here defines, a delegate not here) is an error; `check`
    passes False and gets a warning. ``config`` is None when an error leaves no model.
    """
    try:
        documents = expand_lists(read_sources(*sources))
    except ConfigError as exc:
        return Loaded(None, exc.problems)
    mappings = [d for d in documents if not is_resource(d)]
    resources = read_resources(d for d in documents if is_resource(d))
    compiled = compile_resources(resources, _declared_services(mappings))
    merged = [*mappings, *resources.proxies]
    if compiled.document is not None:
        merged.append(compiled.document)
    config, failures = _model(merged, compiled)
    # The one reference check of this load, kept on the config for resolution.
    references = check_references(
        config, compiled.catalog, strict=strict, tcp_served=_has_tcp_listener(merged)
    )
    problems = [
        *resources.problems,
        *compiled.catalog.problems,
        *references.written,
        *resource_warnings(resources),
    ]
    if config is None:
        return Loaded(None, _sorted([*problems, *failures]))
    config._references = references
    problems += [*references.model, *locate(config, config_warnings(config))]
    problems = _sorted(problems)
    config._warnings = tuple(p for p in problems if p.severity == "warning")
    return Loaded(config, problems)


def _model(merged: list[Document], compiled: Compiled) -> tuple[Config | None, list[Problem]]:
    """The model of the merged mappings, with where each value was written; else None and
    why not."""
    try:
        data, origin = merge_mappings(merged)
        config = Config.model_validate(data)
    except ConfigError as exc:
        return None, exc.problems
    except ValidationError as exc:
        return None, problems_from(exc, origin)
    config._origin = origin
    own_count = len(config.virtual_services) - len(compiled.sources)
    config._sources = (None,) * own_count + tuple(compiled.sources)
    for key, subject in compiled.service_sources.items():
        config.services[key]._source = subject
    for key, subject in compiled.rule_sources.items():
        config.services[key]._rule_source = subject
    return config, []


def load_config(*sources: Source) -> Config:
    """Load and validate a configuration from files, folders or YAML text, for serving.

    Each source is a path (``str`` or `os.PathLike`) to a file, or to a folder whose
    ``*.yaml``/``*.yml`` files are read in name order; a ``str`` holding a newline, or
    naming no existing path, is YAML text itself (reported as ``<string>``). All sources
    make one configuration: `listeners` and `virtualServices` are concatenated, `services`
    united, other keys set once; resources join them.

    Listeners are not required here (``--listen`` may supply them); `build_snapshot` is.
    Raises `ConfigError` listing every error found, each with file:line:col; warnings (what
    is accepted but not served) are logged and kept in `Config.warnings`.
    """
    loaded = load(*sources, strict=True)
    if loaded.errors or loaded.config is None:
        raise ConfigError(loaded.errors)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.config


def _declared_services(documents: list[Document]) -> set[str]:
    """The `services` the routes-format mappings declare."""
    return {
        str(name)
        for doc in documents
        if isinstance(doc.data, dict) and isinstance(doc.data.get("services"), dict)
        for name in doc.data["services"]
    }


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))
