"""gRPC through pymirror with real grpcio clients and servers: the client speaks HTTP/2
with prior knowledge (h2c), the destination's port says GRPC so pymirror speaks HTTP/2
upstream, and every call is copied to v2. Users get v1's answers, statuses and trailers;
v2 receives each call with the same messages; a slow or dead v2 changes nothing."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import grpc
import pytest
from conftest import settle
from support.grpc_peer import GrpcPeer, method
from support.h2_mirror import HostileH2Mirror

from pymirror import Proxy, ServerOptions, metrics
from pymirror.compare.report import document

pytestmark = pytest.mark.e2e

HOST = "reviews"


class Listening(Protocol):
    port: int


def grpc_config(
    v1: Listening, v2: Listening, *, mirror: float = 100.0, extra: str = "", guard: str = ""
) -> str:
    """The seed layout with a gRPC service port: its protocol makes the upstream HTTP/2."""
    return f"""
listeners:
  - address: 127.0.0.1:0
    host: {HOST}
services:
  {HOST}:
    ports: [{{number: 9090, name: grpc-api, protocol: GRPC}}]
    endpoints:
      - {{address: 127.0.0.1, ports: {{grpc-api: {v1.port}}}, labels: {{version: v1}}}}
      - {{address: 127.0.0.1, ports: {{grpc-api: {v2.port}}}, labels: {{version: v2}}}}
    subsets:
      v1: {{version: v1}}
      v2: {{version: v2}}
virtualServices:
  - name: {HOST}
    hosts: [{HOST}]
    http:
      - route:
          - destination: {{host: {HOST}, subset: v1}}
        mirror: {{host: {HOST}, subset: v2{guard}}}
        mirrorPercentage: {{value: {mirror}}}{extra}
"""


@pytest.fixture
def peers() -> Iterator[tuple[GrpcPeer, GrpcPeer]]:
    v1, v2 = GrpcPeer("v1"), GrpcPeer("v2")
    try:
        yield v1, v2
    finally:
        v1.stop()
        v2.stop()


def channel(address: str) -> grpc.Channel:
    # The authority routes the call, as Host does; no proxy from the environment.
    options = [("grpc.default_authority", HOST), ("grpc.enable_http_proxy", 0)]
    return grpc.insecure_channel(address, options=options)


def test_unary_call_is_answered_by_v1_and_copied_to_v2(peers) -> None:
    v1, v2 = peers
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        call = ch.unary_unary(method("Unary"))
        answer, state = call.with_call(b"hello", timeout=10)
        assert answer == b"v1:hello"
        assert state.code() == grpc.StatusCode.OK
        [copy] = v2.wait_for(1)
        [primary] = v1.calls
    assert (copy.method, copy.requests) == ("Unary", [b"hello"])
    assert copy.metadata["x-request-id"] == primary.metadata["x-request-id"]


def test_server_streaming_answers_arrive_in_order(peers) -> None:
    v1, v2 = peers
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        answers = list(ch.unary_stream(method("ServerStream"))(b"r", timeout=10))
        [copy] = v2.wait_for(1)
    assert answers == [b"v1:0:r", b"v1:1:r", b"v1:2:r"]
    assert copy.requests == [b"r"]


def test_client_streaming_copies_every_message(peers) -> None:
    v1, v2 = peers
    sent = [b"a", b"bb", b"c" * 70_000]  # the last one spans several HTTP/2 DATA frames
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        answer = ch.stream_unary(method("ClientStream"))(iter(sent), timeout=10)
        [copy] = v2.wait_for(1)
    assert answer == b"v1:" + b"|".join(sent)
    assert copy.requests == sent
    assert v1.calls[0].requests == sent


def test_bidirectional_stream_is_answered_as_it_goes(peers) -> None:
    v1, v2 = peers
    sent = [f"m{i}".encode() for i in range(20)]
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        answers = list(ch.stream_stream(method("Bidi"))(iter(sent), timeout=10))
        [copy] = v2.wait_for(1)
    assert answers == [b"v1:" + m for m in sent]
    assert copy.requests == sent


def test_status_details_and_trailers_reach_the_user(peers) -> None:
    v1, v2 = peers
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        with pytest.raises(grpc.RpcError) as failed:
            ch.unary_unary(method("Fail"))(b"x", timeout=10)
        v2.wait_for(1)
    error = failed.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such review"
    assert ("x-trailer", "t-v1") in tuple(error.trailing_metadata())


def test_the_deadline_ends_the_call_and_goes_upstream_less_the_time_spent(peers) -> None:
    v1, v2 = peers
    # 300 ms of the client's 800 ms are spent in the proxy (a fault delay) before the
    # call goes upstream: v1 must be told what is left, not the 800 ms the client set.
    delay = "\n        fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}"
    with Proxy(grpc_config(v1, v2, extra=delay)) as proxy, channel(proxy.addresses[0]) as ch:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            ch.unary_unary(method("Slow"))(b"x", timeout=0.8, metadata=(("x-delay-ms", "3000"),))
        elapsed = time.monotonic() - started
        [primary] = v1.wait_for(1)
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 2.5  # not the 3 s v1 sleeps
    assert primary.time_remaining is not None
    assert 0.1 < primary.time_remaining < 0.6, primary.time_remaining


def test_a_slow_mirror_changes_nothing_for_users(peers) -> None:
    v1, _ = peers
    slow = GrpcPeer("v2", delay=3.0)
    try:
        with Proxy(grpc_config(v1, slow)) as proxy, channel(proxy.addresses[0]) as ch:
            call = ch.unary_unary(method("Unary"))
            answers = [call(f"u{i}".encode(), timeout=10) for i in range(20)]
            # Every user call is done while v2 still sleeps on the first copy.
            assert slow.calls == []
        assert answers == [f"v1:u{i}".encode() for i in range(20)]
    finally:
        slow.stop()


def test_a_dead_mirror_changes_nothing_for_users(peers) -> None:
    v1, v2 = peers
    v2.stop()
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        call = ch.unary_unary(method("Unary"))
        answers = [call(f"u{i}".encode(), timeout=10) for i in range(10)]
    assert answers == [f"v1:u{i}".encode() for i in range(10)]


def test_access_log_has_protocol_and_grpc_status_on_both_hops(peers, tmp_path: Path) -> None:
    v1, v2 = peers
    log = tmp_path / "access.log"
    proxy = Proxy(grpc_config(v1, v2), options=ServerOptions(access_log=str(log)))
    with proxy, channel(proxy.addresses[0]) as ch:
        ch.unary_unary(method("Unary"))(b"ok", timeout=10)
        with pytest.raises(grpc.RpcError):
            ch.unary_unary(method("Fail"))(b"x", timeout=10)
        v2.wait_for(2)
        settle(proxy)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    by = {(line["hop"], line["path"]): line for line in lines}
    ok, failed = method("Unary"), method("Fail")
    for hop in ("primary", "mirror"):
        assert by[(hop, ok)]["protocol"] == "HTTP/2"
        assert by[(hop, ok)]["grpc_status"] == 0
        assert by[(hop, failed)]["grpc_status"] == 5  # NOT_FOUND, from the trailers
        assert by[(hop, failed)]["status"] == 200


def test_no_endpoint_is_a_grpc_unavailable_not_an_http_503(peers) -> None:
    v1, v2 = peers
    # v1's subset selects nothing reachable: its only endpoint refuses connections.
    v1.stop()
    with (
        Proxy(grpc_config(v1, v2, mirror=0.0)) as proxy,
        channel(proxy.addresses[0]) as ch,
        pytest.raises(grpc.RpcError) as failed,
    ):
        ch.unary_unary(method("Unary"))(b"x", timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream" in (failed.value.details() or "")


def test_http1_client_gets_grpc_trailers_as_chunked_trailers(peers) -> None:
    """An HTTP/1.1 client that says `TE: trailers` to a gRPC (HTTP/2) upstream: the
    message and its grpc-status arrive, the status as a chunked trailer field."""
    v1, v2 = peers
    message = b"hello"
    framed = b"\x00" + len(message).to_bytes(4, "big") + message  # gRPC length prefix
    with Proxy(grpc_config(v1, v2)) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST {method('Unary')} HTTP/1.1\r\nHost: {HOST}\r\n"
                "Content-Type: application/grpc\r\nTE: trailers\r\nConnection: TE\r\n"
                f"Content-Length: {len(framed)}\r\n\r\n".encode()
                + framed
            )
            raw = b""
            while not raw.endswith(b"\r\n\r\n") or b"0\r\n" not in raw:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
        v2.wait_for(1)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    answer = b"v1:hello"
    assert b"\x00" + len(answer).to_bytes(4, "big") + answer in body
    last_chunk = body[body.rindex(b"\r\n0\r\n") :]
    assert b"grpc-status: 0" in last_chunk.lower(), body


def test_a_mirror_that_resets_every_stream_changes_nothing_for_users(peers) -> None:
    v1, _ = peers
    hostile = HostileH2Mirror("reset")
    n = 20
    try:
        with Proxy(grpc_config(v1, hostile)) as proxy, channel(proxy.addresses[0]) as ch:
            call = ch.unary_unary(method("Unary"))
            answers = [call(f"u{i}".encode(), timeout=10) for i in range(n)]
            mirror = settle(proxy)
    finally:
        hostile.stop()
    assert answers == [f"v1:u{i}".encode() for i in range(n)]
    assert hostile.resets == n
    assert (mirror["failed"], mirror["answered"]) == (n, 0)
    assert mirror["failures"]["reset"] == n


def test_a_mirror_that_never_reads_holds_no_user_stream(peers) -> None:
    """Client-streaming calls of 1 MiB each while the mirror reads nothing: HTTP/2 flow
    control stops the copies, their bounded buffers fill, and they are cut and counted;
    the users' streams run at their own pace."""
    v1, _ = peers
    stalled = HostileH2Mirror("stall")
    messages = [bytes([i]) * 64 * 1024 for i in range(16)]  # 1 MiB per call
    budget = "\nmirrorDefaults: {maxBodyBytes: 256KiB, timeout: 3s}"
    try:
        config = grpc_config(v1, stalled) + budget
        with Proxy(config) as proxy, channel(proxy.addresses[0]) as ch:
            call = ch.stream_unary(method("ClientStream"))
            started = time.monotonic()
            answers = [call(iter(messages), timeout=10) for _ in range(3)]
            elapsed = time.monotonic() - started
            # Copies are counted when they end: at their timeout, stalled as they are.
            mirror = settle(proxy)
    finally:
        stalled.stop()
    assert answers == [b"v1:" + b"|".join(messages)] * 3
    # Inside the copies' 3 s timeout: no user waited for a copy.
    assert elapsed < 3, elapsed
    assert mirror["dropped"]["body_buffer"] == 3, mirror


RETRIES = "\n        retries: {attempts: 3, retryOn: unavailable}"


def test_a_unary_call_is_retried_with_its_body_on_unavailable(peers) -> None:
    _, v2 = peers
    flaky = GrpcPeer("v1", flaky=2)
    try:
        with (
            Proxy(grpc_config(flaky, v2, extra=RETRIES)) as proxy,
            channel(proxy.addresses[0]) as ch,
        ):
            answer = ch.unary_unary(method("Flaky"))(b"payload", timeout=10)
            [copy] = v2.wait_for(1)
        assert answer == b"v1:payload"
        # Two failures, then the third try: each with the whole body again.
        assert [c.requests for c in flaky.calls] == [[b"payload"]] * 3
        assert copy.requests == [b"payload"]  # the copy is not retried
    finally:
        flaky.stop()


def test_a_body_over_the_retry_buffer_is_streamed_and_not_retried(peers) -> None:
    _, v2 = peers
    flaky = GrpcPeer("v1", flaky=2)
    small = "\nupstream: {retryBufferSize: 1KiB}"
    big = b"x" * 10_000
    try:
        config = grpc_config(flaky, v2, extra=RETRIES) + small
        with (
            Proxy(config) as proxy,
            channel(proxy.addresses[0]) as ch,
            pytest.raises(grpc.RpcError) as failed,
        ):
            ch.unary_unary(method("Flaky"))(big, timeout=10)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [c.requests for c in flaky.calls] == [[big]]
    finally:
        flaky.stop()


def test_after_primary_success_waits_for_grpc_status_zero(peers) -> None:
    """A gRPC failure arrives as HTTP 200: the guard reads `grpc-status`, from the
    headers of a trailers-only answer and from the trailers of any other."""
    v1, v2 = peers
    config = grpc_config(v1, v2, guard=", afterPrimarySuccess: true")
    with Proxy(config) as proxy, channel(proxy.addresses[0]) as ch:
        assert ch.unary_unary(method("Unary"))(b"ok", timeout=10) == b"v1:ok"
        with pytest.raises(grpc.RpcError):
            ch.unary_unary(method("Fail"))(b"x", timeout=10)  # trailers-only NOT_FOUND
        with pytest.raises(grpc.RpcError):
            list(ch.unary_stream(method("StreamThenFail"))(b"y", timeout=10))  # in trailers
        assert len(list(ch.unary_stream(method("ServerStream"))(b"z", timeout=10))) == 3
        mirror = settle(proxy)
    assert sorted(c.method for c in v2.calls) == ["ServerStream", "Unary"]
    assert mirror["dropped"]["primary_failed"] == 2


def test_grpc_status_is_counted_for_primary_and_mirror(peers) -> None:
    v1, v2 = peers
    with Proxy(grpc_config(v1, v2)) as proxy, channel(proxy.addresses[0]) as ch:
        for _ in range(3):
            ch.unary_unary(method("Unary"))(b"ok", timeout=10)
        with pytest.raises(grpc.RpcError):
            ch.unary_unary(method("Fail"))(b"x", timeout=10)  # trailers-only
        with pytest.raises(grpc.RpcError):
            list(ch.unary_stream(method("StreamThenFail"))(b"y", timeout=10))  # trailers
        v2.wait_for(5)
        settle(proxy)
        stats = proxy.stats()
    [destination] = stats["destinations"]
    [mirror] = stats["mirrors"]
    assert destination["grpc_responses"] == {"0": 3, "5": 1, "13": 1}
    assert mirror["grpc_responses"] == {"0": 3, "5": 1, "13": 1}
    text = metrics.render(metrics.Scrape(stats=stats))
    assert "pymirror_grpc_requests_total{" in text
    assert re.search(r'pymirror_grpc_requests_total\{[^}]*grpc_status="0"[^}]*\} 3\.0', text)
    assert re.search(
        r'pymirror_mirror_grpc_responses_total\{[^}]*grpc_status="13"[^}]*\} 1\.0', text
    )


def test_only_idempotent_copies_the_grpc_methods_listed_safe(peers) -> None:
    """Every gRPC call is a POST: `onlyIdempotent` drops them all, except the methods
    (or whole services) the mirror lists in `grpcMethods`."""
    v1, v2 = peers
    guard = ", onlyIdempotent: true, grpcMethods: [/demo.Echo/Unary]"
    with Proxy(grpc_config(v1, v2, guard=guard)) as proxy, channel(proxy.addresses[0]) as ch:
        ch.unary_unary(method("Unary"))(b"a", timeout=10)
        list(ch.unary_stream(method("ServerStream"))(b"b", timeout=10))
        ch.unary_unary(method("Unary"))(b"c", timeout=10)
        v2.wait_for(2)
        settle(proxy)
    copied = sorted((c.method, c.requests) for c in v2.calls)
    assert copied == [("Unary", [b"a"]), ("Unary", [b"c"])]
    assert len(v1.calls) == 3


def test_a_fault_abort_with_grpc_status_answers_as_grpc(peers) -> None:
    v1, v2 = peers
    abort = "\n        fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}"
    with (
        Proxy(grpc_config(v1, v2, mirror=0.0, extra=abort)) as proxy,
        channel(proxy.addresses[0]) as ch,
        pytest.raises(grpc.RpcError) as failed,
    ):
        ch.unary_unary(method("Unary"))(b"x", timeout=10)
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failed.value.details() == "fault filter abort"
    assert v1.calls == []


def test_a_primary_that_resets_every_stream_is_a_grpc_unavailable(peers) -> None:
    """The upstream hop, hostile: an HTTP/2 primary that answers each stream with
    RST_STREAM (exact frames). The user gets a gRPC error, not a hang or a broken
    connection, and the proxy serves the next call."""
    _, v2 = peers
    hostile = HostileH2Mirror("reset")
    try:
        with (
            Proxy(grpc_config(hostile, v2, mirror=0.0)) as proxy,
            channel(proxy.addresses[0]) as ch,
        ):
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as failed:
                    ch.unary_unary(method("Unary"))(b"x", timeout=10)
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            [destination] = proxy.stats()["destinations"]
    finally:
        hostile.stop()
    assert hostile.resets == 2
    assert destination["responses"] == {"502": 2}


def test_comparison_reads_grpc_status_message_trailers_and_messages() -> None:
    # v2 fails `Flaky` where v1 answers, tags its answers `v2:` and its Fail trailer
    # `t-v2`: each difference must show under its own field.
    v1, v2 = GrpcPeer("v1"), GrpcPeer("v2", flaky=100)
    compared = ", compare: {percentage: {value: 100}}"
    try:
        with Proxy(grpc_config(v1, v2, guard=compared)) as proxy:
            with channel(proxy.addresses[0]) as ch:
                assert ch.unary_unary(method("Unary"))(b"same", timeout=10) == b"v1:same"
                assert ch.unary_unary(method("Flaky"))(b"f", timeout=10) == b"v1:f"
                with pytest.raises(grpc.RpcError):
                    ch.unary_unary(method("Fail"))(b"x", timeout=10)
            v2.wait_for(3)
            deadline = time.monotonic() + 10
            while sum(e["compared"] for e in document(proxy.comparator.store)["endpoints"]) < 3:
                assert time.monotonic() < deadline, "the three pairs were not compared"
                proxy.compare_pending()
                time.sleep(0.02)
            doc = document(proxy.comparator.store)
    finally:
        v1.stop()
        v2.stop()
    by = {e["endpoint"]: e for e in doc["endpoints"]}

    def fields(endpoint: str) -> dict[str, dict]:
        return {f["field"]: f for f in by[f"POST /demo.Echo/{endpoint}"]["fields"]}

    def sample(endpoint: str, field: str) -> dict:
        return next(s for s in by[f"POST /demo.Echo/{endpoint}"]["samples"] if s["field"] == field)

    # Unary: same status, the one message differs by its bytes (shown as hex).
    assert set(fields("Unary")) == {"message[*]"}
    unary = sample("Unary", "message[*]")
    assert unary["path"] == "message[0]"
    assert unary["primary"] == "7 bytes: " + b"v1:same".hex(" ")
    assert unary["mirror"] == "7 bytes: " + b"v2:same".hex(" ")
    assert by["POST /demo.Echo/Unary"]["results"] == {"body_mismatch": 1}
    # Flaky: HTTP 200 on both sides, but v2's grpc-status 14 is a status mismatch, and
    # its message, a message mismatch; v1's answer has a message, v2's none.
    flaky = by["POST /demo.Echo/Flaky"]
    assert flaky["results"] == {"status_mismatch": 1}
    assert {"grpc-status", "grpc-message", "message[*]"} <= set(fields("Flaky"))
    status = sample("Flaky", "grpc-status")
    assert (status["primary"], status["mirror"]) == ("0", "14")
    assert sample("Flaky", "grpc-message")["mirror"] == "not yet"
    assert flaky["statuses"] == [
        {"primary": "200 grpc-status 0", "mirror": "200 grpc-status 14", "count": 1}
    ]
    # Fail: the same status and message on both; only the trailer differs.
    assert set(fields("Fail")) == {"trailer:x-trailer"}
    trailer = sample("Fail", "trailer:x-trailer")
    assert (trailer["primary"], trailer["mirror"]) == ("t-v1", "t-v2")
