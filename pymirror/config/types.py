"""Scalar types of the configuration: durations, byte sizes, host names and addresses.

Each is an ``Annotated`` type whose validator raises `ValueError` with a message written
for the person editing the YAML file.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

# === durations ===

# Go's time.ParseDuration syntax (what Istio users write): `10s`, `0.5s`, `500ms`, `1m30s`.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MS = timedelta(milliseconds=1)


def parse_duration(value: Any) -> Any:
    """``"1m30s"`` -> ``timedelta(seconds=90)``; at least 1ms, whole milliseconds (as Istio)."""
    if isinstance(value, timedelta):
        duration = value
    elif (
        isinstance(value, str)
        and (parts := _DURATION_PART.findall(value.strip()))
        and ("".join(n + u for n, u in parts) == value.strip())
    ):
        duration = timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a duration such as `10s`, `0.5s`, `500ms` or `1m`")
    else:
        bare = isinstance(value, int | float) or re.fullmatch(r"\s*[\d.]+\s*", value)
        raise ValueError(
            f"expected a duration such as `10s`, `0.5s`, `500ms` or `1m` (got {value!r}"
            + ("; a bare number needs a unit)" if bare else ")")
        )
    if duration < _MS:
        raise ValueError(f"must be at least 1ms (got {format_duration(duration)})")
    if duration % _MS:
        raise ValueError(f"must be a whole number of milliseconds (got {value!r})")
    return duration


def format_duration(duration: timedelta) -> str:
    """``timedelta(seconds=90)`` -> ``"90s"``; sub-second values in ms (``"500ms"``)."""
    ms = duration // _MS
    return f"{ms // 1000}s" if ms % 1000 == 0 and ms else f"{ms}ms"


def duration_ms(duration: timedelta) -> int:
    return duration // _MS


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]

# === byte sizes ===

_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}


def parse_byte_size(value: Any) -> Any:
    """``"512KiB"`` -> ``524288``; integers pass through (bytes)."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError(
                f"expected a number of bytes or a size such as `4MiB` or `512KiB` (got {value!r})"
            )
        return int(match[1]) * _SIZE_UNITS[match[2]]
    return value


ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]

# === host names and addresses ===

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_hostname(value: str) -> str:
    """A DNS name (``reviews``, ``reviews.default.svc.cluster.local``) or an IP address."""
    if not value or len(value) > 253 or not (_HOSTNAME.fullmatch(value) or is_ip(value)):
        raise ValueError(
            f"expected a host name such as `reviews` or `api.example.com` (got {value!r})"
        )
    return value


def check_destination_host(value: str) -> str:
    """A destination host: a name to look up in `services` or by DNS; no wildcard."""
    if "*" in value:
        raise ValueError(
            f"wildcard destination hosts ({value!r}) are valid Istio but not "
            "supported by pymirror yet"
        )
    return check_hostname(value)


def check_host_pattern(value: str) -> str:
    """A virtual service host: a name, ``*.suffix``, or ``*``."""
    if value == "*":
        return value
    if value.startswith("*."):
        check_hostname(value[2:])
        return value
    if "*" in value:
        raise ValueError(
            f"a wildcard must be the whole host or its first label, as in "
            f"`*.example.com` (got {value!r})"
        )
    return check_hostname(value)


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:80"`` -> ``("127.0.0.1", 80)``; IPv6 hosts in brackets: ``[::1]:80``."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not is_ip(host):
            raise ValueError(f"expected an IPv6 address inside the brackets (got {value!r})")
    elif ":" in host:
        raise ValueError(f"write IPv6 addresses in brackets, as in `[::1]:8080` (got {value!r})")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected `host:port`, such as `127.0.0.1:8080` (got {value!r})")
    if int(port) > 65535:
        raise ValueError(f"port must be <= 65535 (got {port})")
    return host, int(port)


def check_listen_address(value: str) -> str:
    """``ip:port`` to bind; port 0 asks the system for a free one."""
    host, _ = split_host_port(value)
    if not is_ip(host):
        raise ValueError(
            f"expected an IP address and port to listen on, such as "
            f"`0.0.0.0:8080` or `127.0.0.1:8080` (got {value!r})"
        )
    return value


def check_authority(value: str) -> str:
    """``host:port`` to connect to; the host is a DNS name or an IP address."""
    host, port = split_host_port(value)
    check_hostname(host)
    if port == 0:
        raise ValueError(f"port must be between 1 and 65535 (got {value!r})")
    return value


def check_bind_authority(value: str) -> str:
    """``host:port`` to bind; port 0 asks the system for a free one."""
    check_hostname(split_host_port(value)[0])
    return value


HostName = Annotated[str, AfterValidator(check_hostname)]
DestinationHost = Annotated[str, AfterValidator(check_destination_host)]
HostPattern = Annotated[str, AfterValidator(check_host_pattern)]
ListenAddress = Annotated[str, AfterValidator(check_listen_address)]
BindAuthority = Annotated[str, AfterValidator(check_bind_authority)]
Authority = Annotated[str, AfterValidator(check_authority)]
