"""gRPC backends: bench/grpc_backend, a tonic server built here with cargo (once per
session), serving unary `/bench.Echo/Unary` on h2c with one thread, as the nginx
backends run one worker. It answers its name (`Reply { message: NAME }`), so v1 and v2
are told apart, and counts the calls it served; `/bench.Echo/Count` answers that count,
which is how a v2 counts the copies that reached it (`GrpcBackend.seen`). It speaks
HTTP/2 only (tonic's server refuses HTTP/1.1), so any answer from it came over HTTP/2.

The messages (bench/grpc_backend/src/main.rs) are encoded and decoded here by hand, a
field each, so that no protobuf compiler or generated code is needed on either side;
calls go through grpcio with bytes in and out."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peers.backends import Backend
from peers.process import free_port, start

CRATE = Path(__file__).resolve().parent.parent / "grpc_backend"
UNARY = "/bench.Echo/Unary"
COUNT = "/bench.Echo/Count"
#: The `:authority` of every call: the host pymirror's listener and route expect.
AUTHORITY = "reviews"


def grpc_backend_missing() -> str | None:
    """Why the gRPC backends cannot run here, or None when they can."""
    if shutil.which("cargo") is None:
        return "cargo is not installed: bench/grpc_backend (the gRPC backends) is built with it"
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio is not installed (pip install grpcio): the gRPC checks call with it"
    return None


@functools.cache
def grpc_backend_binary() -> Path:
    """The backend, built with `cargo build --release --locked` on first use (cold,
    about 30 s on 2 cores once the crates are downloaded; later, a freshness check)."""
    target = CRATE / "target"
    env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
    argv = ["cargo", "build", "--release", "--locked", "--quiet"]
    run = subprocess.run(argv, cwd=CRATE, env=env, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"building bench/grpc_backend failed:\n{run.stderr[-4000:]}")
    return target / "release" / "grpc-backend"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(message: bytes) -> dict[int, int | bytes]:
    """A protobuf message's varint (wire type 0) and length-delimited (2) fields."""
    found: dict[int, int | bytes] = {}
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            found[number], at = _read_varint(message, at)
        elif wire == 2:
            size, at = _read_varint(message, at)
            found[number], at = message[at : at + size], at + size
        else:
            raise ValueError(f"unexpected wire type {wire} in {message!r}")
    return found


def request_message(text: str) -> bytes:
    """`Request { message: text }`, serialized."""
    raw = text.encode()
    return b"\x0a" + _varint(len(raw)) + raw


def request_frame(text: str) -> bytes:
    """`Request { message: text }` as a gRPC request body: one length-prefixed message,
    uncompressed (what h2load sends with `-d`)."""
    message = request_message(text)
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _channel(address: str) -> Any:
    import grpc

    # No proxy from the environment: loopback only. `reviews`, as h2load's :authority.
    options = [("grpc.enable_http_proxy", 0), ("grpc.default_authority", AUTHORITY)]
    return grpc.insecure_channel(address, options=options)


def unary(address: str, text: str = "probe") -> tuple[str, str]:
    """One `Unary` call through `address` (grpcio): its gRPC status name (`OK`, ...)
    and the reply's message ("" when it failed)."""
    import grpc

    with _channel(address) as channel:
        try:
            reply = channel.unary_unary(UNARY)(request_message(text), timeout=10)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}", ""
    message = _fields(reply).get(1, b"")
    assert isinstance(message, bytes), f"unexpected reply {reply!r}"
    return "OK", message.decode()


@dataclass
class GrpcBackend(Backend):
    """A gRPC backend: `seen()` is the `Unary` calls it served (its `Count`), so
    `settled()` waits for copies still in flight as it does for nginx's log lines."""

    _channel: Any = field(default=None, repr=False)

    def seen(self) -> int:
        if self._channel is None:
            self._channel = _channel(self.address)
        reply = self._channel.unary_unary(COUNT)(b"", timeout=10)
        count = _fields(reply).get(1, 0)  # proto3 leaves a zero out
        assert isinstance(count, int), f"unexpected count {reply!r}"
        return count

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        super().stop()


def grpc_backend(name: str, workdir: Path) -> GrpcBackend:
    """A backend answering `name` to every `Unary` call."""
    address = f"127.0.0.1:{free_port()}"
    argv = [str(grpc_backend_binary()), address, name]
    return GrpcBackend(name, address, start(argv, address, workdir))
