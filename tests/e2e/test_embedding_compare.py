"""Embedded comparison: `pymirror.serve` compares the mirror's answers as `pymirror run`
does, with no call to `compare_pending`, over real sockets and real v1 / v2 backends."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import trio
from conftest import seed_config
from support.client import Client
from support.load import fetch

import pymirror
from pymirror.compare.report import document

pytestmark = pytest.mark.e2e

COMPARED = """
        mirror:
          host: reviews
          subset: v2
          compare: {percentage: {value: 100}}"""

#: Requests sent through the proxy; each is copied to v2 and compared.
N = 20


def compared(doc: dict[str, Any]) -> int:
    return sum(e["compared"] for e in doc["endpoints"])


def test_serve_fills_the_report_without_compare_pending(backend) -> None:
    # v1 answers "v1", v2 answers "v2": every pair differs in its body.
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None, route_extra=COMPARED)

    async def main() -> tuple[dict[str, Any], dict[str, Any], pymirror.Proxy]:
        async with pymirror.serve(config) as proxy, trio.open_nursery() as nursery:
            admin = pymirror.Admin(proxy)
            admin_address = await nursery.start(admin.serve, "127.0.0.1:0")

            def send() -> list[int]:
                with Client(proxy.addresses[0]) as client:
                    return [client.request("GET", f"/items/{i}").status for i in range(N)]

            assert await trio.to_thread.run_sync(send) == [200] * N
            # Bounded wait: the comparator runs on its own, every 20 ms while pairs come.
            doc = document(proxy.comparator.store, proxy.stats())
            with trio.move_on_after(15):
                while compared(doc) < N:
                    await trio.sleep(0.02)
                    doc = document(proxy.comparator.store, proxy.stats())
            assert compared(doc) == N, doc
            # The same document at the embedded admin endpoint.
            status, body = await trio.to_thread.run_sync(fetch, admin_address, "/compare")
            assert status == 200
            served = json.loads(body)
            nursery.cancel_scope.cancel()
        return doc, served, proxy

    doc, served, proxy = trio.run(main)
    [endpoint] = doc["endpoints"]
    assert endpoint["endpoint"] == "GET /items/{id}"
    assert endpoint["results"] == {"body_mismatch": N}
    assert endpoint["statuses"] == [{"primary": 200, "mirror": 200, "count": N}]
    [sampling] = doc["sampling"]
    assert sampling["sampled"] == sampling["queued"] == N
    assert compared(served) == N
    # After the block the proxy is closed and its report is still there to read.
    assert not proxy.running
    assert compared(document(proxy.comparator.store)) == N


def test_an_error_in_the_serve_block_propagates_as_it_is(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None, route_extra=COMPARED)
    addresses: list[str] = []

    async def main() -> None:
        async with pymirror.serve(config) as proxy:
            addresses.extend(proxy.addresses)
            raise KeyError("from the block")

    # Not wrapped in an ExceptionGroup by the comparator's nursery.
    with pytest.raises(KeyError, match="from the block"):
        trio.run(main)
    [address] = addresses
    with pytest.raises(OSError):  # and the proxy was closed
        socket.create_connection(tuple(address.rsplit(":", 1)), timeout=1).close()  # type: ignore[arg-type]
