"""What every configuration model shares: strict, frozen pydantic models with Istio's
camelCase names, and the scalar types used across them."""

from __future__ import annotations

import re
import warnings
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

U32_MAX = 2**32 - 1
#: Istio's int32 fields, and HTTP/2's 31-bit window sizes and stream counts.
I32_MAX = 2**31 - 1
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 header field name
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
# Python's `re` accepts these, RE2 (Istio's and the core's engine) does not.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]")


def problem(message: str, *where: str | int, at_key: bool = False) -> PydanticCustomError:
    """An error from a model check, placed at ``where`` below the model (at its key if asked)."""
    return PydanticCustomError(
        "pymirror", "{message}", {"message": message, "where": where, "at_key": at_key}
    )


def check_regex(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid RE2 expression, or None when it is."""
    if found := _NOT_RE2.search(pattern):
        return (
            f"`{found[0]}` (lookaround or back-reference) is not RE2 syntax, which Istio and "
            "pymirror use"
        )
    try:
        # `[[:alpha:]]` is RE2 and only a FutureWarning to Python: not an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"not a valid HTTP header name: {value!r}")
    return value


def _lower_header_name(value: str) -> str:
    _header_name(value)
    if value.lower() != value:
        # Istio's rule: matches compare names as HTTP/2 sends them, lower case.
        raise ValueError(f"header names in matches must be lower case: write {value.lower()!r}")
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _subset_name(value: str) -> str:
    if not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            "a subset name is a DNS label: lower-case letters, digits and `-`, "
            f"at most 63 (got {value!r})"
        )
    return value


def _host_suffix(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]*", value):
        raise ValueError(f"may hold only letters, digits, `-` and `.` (got {value!r})")
    return value


def _grpc_method(value: str) -> str:
    # gRPC's path: /package.Service/Method (PROTOCOL-HTTP2.md); a service alone ends
    # with its slash.
    if not re.fullmatch(r"/[A-Za-z_][A-Za-z0-9_.]*/([A-Za-z_][A-Za-z0-9_]*)?", value):
        raise ValueError(
            "a gRPC method is `/package.Service/Method`, or `/package.Service/` for all of "
            f"a service's (got {value!r})"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]
GrpcMethod = Annotated[str, AfterValidator(_grpc_method)]
SubsetName = Annotated[str, AfterValidator(_subset_name)]
HostSuffix = Annotated[str, AfterValidator(_host_suffix)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
LowerHeaderName = Annotated[str, AfterValidator(_lower_header_name)]
Labels = dict[Name, str]


def is_dns_label(value: str) -> bool:
    return bool(_DNS1123_LABEL.fullmatch(value))


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        # YAML already typed each value; `"20"` for a number is a mistake, not a number.
        strict=True,
        use_attribute_docstrings=True,
    )
    #: Istio fields of this object that pymirror does not serve yet (rejected by name).
    unsupported: ClassVar[frozenset[str]] = frozenset()
