"""Every regular expression a configuration holds, with its place: route matches
(`regex` of a StringMatch anywhere: uri, headers, query parameters...) and
`uriRegexRewrite.match`. The data plane's engine judges them (`check` and `Proxy` hand
its verdict in), so that one engine decides and a refusal names file, line and column."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from .actions import RegexRewrite
from .errors import Path
from .matches import StringMatch
from .model import Config
from .validate import Issue


def regexes(config: Config) -> Iterator[tuple[Path, str]]:
    """(path, pattern) of every regex in the virtual services, in order."""
    for i, vs in enumerate(config.virtual_services):
        yield from _walk(("virtualServices", i), vs)


def refused(config: Config, judge: Callable[[str], str | None]) -> list[Issue]:
    """An error at each regex ``judge`` (the data plane's engine) refuses."""
    return [
        Issue(path, f"regex {pattern!r} is refused by the data plane's engine: {why}")
        for path, pattern in regexes(config)
        if (why := judge(pattern)) is not None
    ]


def _walk(at: Path, value: Any) -> Iterator[tuple[Path, str]]:
    if isinstance(value, StringMatch):
        if value.regex is not None:
            yield (*at, "regex"), value.regex
    elif isinstance(value, RegexRewrite):
        yield (*at, "match"), value.match
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk((*at, to_camel(name)), getattr(value, name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk((*at, i), item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk((*at, key), item)
