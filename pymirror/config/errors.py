"""Configuration errors: every problem names its file, line, column and field."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pymirror.errors import PymirrorError

#: A position inside a document: mapping keys and list indexes, outermost first.
Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def render_path(path: Path) -> str:
    """Render ``("virtualServices", 0, "http")`` as ``virtualServices[0].http``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            # Keys such as `reviews.default.svc` or `end user` would read ambiguously dotted.
            out += f"[{part!r}]"
    return out


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration.

    ``line`` and ``column`` are 1-based; they are ``None`` when the problem has no place in
    a file (a missing file, a ``--listen`` flag, a config built in code). A ``warning`` is
    something served differently from Istio, or not at all, that does not stop pymirror.
    """

    file: str
    line: int | None
    column: int | None
    path: Path
    message: str
    severity: Literal["error", "warning"] = "error"
    #: A stable name for the kind of problem (`unknown-host`, `unknown-subset`, ...), so
    #: tools can tell findings apart without parsing messages. Empty for schema errors.
    code: str = ""
    #: The resource the problem belongs to: `VirtualService default/reviews` (empty when
    #: it belongs to none, or is not known).
    subject: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        if self.severity == "warning":
            where += ": warning"
        field = render_path(self.path)
        return f"{where}: {field}: {self.message}" if field else f"{where}: {self.message}"


class ConfigError(PymirrorError):
    """The configuration is invalid; ``problems`` lists every reason found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
