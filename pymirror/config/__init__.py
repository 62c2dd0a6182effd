"""Loading pymirror configuration: YAML with positions -> merged mapping -> typed model.

Every error names the file, line and column it comes from (see `ConfigError`).
"""

from __future__ import annotations

from pydantic import ValidationError

from .errors import ConfigError, Problem
from .merge import merge_native
from .model import Config
from .source import Source, read_sources
from .validate import check_references, locate, problems_from

__all__ = ["Config", "ConfigError", "Problem", "Source", "load_config"]


def load_config(*sources: Source) -> Config:
    """Load and validate a configuration from files, folders or YAML text.

    Each source is a path (``str`` or `os.PathLike`) to a file, or to a folder whose
    ``*.yaml``/``*.yml`` files are read in name order; a ``str`` holding a newline, or
    naming no existing path, is YAML text itself (reported as ``<string>``). All sources
    make one configuration: `listeners` and `virtualServices` are concatenated, `services`
    united, other keys set once.

    Listeners are not required here (``--listen`` may supply them); `build_snapshot` is.
    Raises `ConfigError` listing every problem found, each with file:line:col.
    """
    data, origin = merge_native(read_sources(*sources))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, origin)) from None
    config._origin = origin
    if issues := check_references(config, need_listener=False):
        raise ConfigError(locate(config, issues))
    return config
