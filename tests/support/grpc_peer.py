"""A real gRPC server (grpcio) standing in for a gRPC `reviews` v1 / v2: four call shapes
on raw bytes (no generated code), each call recorded with its messages and metadata.

Methods of `/demo.Echo/`:
- `Unary`: answers `NAME:` + the request.
- `ServerStream`: three answers, `NAME:0:req`, `NAME:1:req`, `NAME:2:req`.
- `ClientStream`: one answer, `NAME:` + the requests joined by `|`.
- `Bidi`: echoes each request as `NAME:` + request, as it comes.
- `Fail`: aborts with NOT_FOUND, details `no such review`, trailing metadata
  `x-trailer: t-NAME`.
- `Slow`: waits `x-delay-ms` (metadata) before answering like `Unary`.
- `StreamThenFail`: one answer, then INTERNAL `broke midway` (in the trailers).
- `Flaky`: aborts with UNAVAILABLE `flaky` times in all (a constructor argument), then
  answers like `Unary`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

SERVICE = "demo.Echo"


@dataclass
class Call:
    """One call as the server saw it."""

    method: str
    requests: list[bytes] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    #: The deadline the server was given, in seconds from when the call arrived.
    time_remaining: float | None = None


class GrpcPeer:
    """A grpcio server on a free loopback port; `stop()` ends it."""

    def __init__(self, name: str, *, delay: float = 0.0, flaky: int = 0) -> None:
        self.name = name
        self.delay = delay
        self.flaky = flaky
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((self._handlers(),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self.port = port
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Call]:
        """The calls, once at least `count` have arrived and ended (fails past `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{self.name}: {len(self.calls)} of {count} calls arrived"
                self._changed.wait(left)
            return list(self.calls)

    # === handlers ===

    def _record(self, method: str, context: grpc.ServicerContext, requests: list[bytes]) -> None:
        call = Call(
            method=method,
            requests=requests,
            metadata={k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
            time_remaining=context.time_remaining(),
        )
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _tag(self, data: bytes) -> bytes:
        return f"{self.name}:".encode() + data

    def _pause(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._pause()
        self._record("Unary", context, [request])
        return self._tag(request)

    def _server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._pause()
        self._record("ServerStream", context, [request])
        for i in range(3):
            yield self._tag(f"{i}:".encode() + request)

    def _client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = list(requests)
        self._pause()
        self._record("ClientStream", context, received)
        return self._tag(b"|".join(received))

    def _bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        received = []
        for request in requests:
            received.append(request)
            yield self._tag(request)
        self._record("Bidi", context, received)

    def _fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("Fail", context, [request])
        context.set_trailing_metadata((("x-trailer", f"t-{self.name}"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such review")
        raise AssertionError("abort returns no answer")

    def _slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        self._record("Slow", context, [request])
        time.sleep(int(str(metadata.get("x-delay-ms", "0"))) / 1000)
        return self._tag(request)

    def _stream_then_fail(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record("StreamThenFail", context, [request])
        yield self._tag(request)
        context.abort(grpc.StatusCode.INTERNAL, "broke midway")

    def _flaky(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("Flaky", context, [request])
        with self._lock:
            failing = self.flaky > 0
            self.flaky -= 1
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return self._tag(request)

    def _handlers(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, Any] = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
            "Flaky": grpc.unary_unary_rpc_method_handler(self._flaky),
            "StreamThenFail": grpc.unary_stream_rpc_method_handler(self._stream_then_fail),
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


def method(name: str) -> str:
    """The full method path of one of the peer's methods."""
    return f"/{SERVICE}/{name}"
