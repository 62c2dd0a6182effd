"""The embedding API: `Proxy` as a context manager, reload, stats; the trio forms."""

from __future__ import annotations

import socket

import pytest
import trio
from conftest import seed_config
from support.client import Client

import pymirror
from pymirror import ListenError, Proxy, ReloadError

pytestmark = pytest.mark.e2e


def test_proxy_reload_swaps_config_and_keeps_counting(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(pymirror.load_config(seed_config(v1.address, v2.address))) as proxy:
        before = proxy.version
        with Client(proxy.addresses[0]) as client:
            client.request("GET", "/a")
            v2.wait_for(1)
            proxy.reload(seed_config(v1.address, v2.address, mirror="mirrorPercentage: {value: 0}"))
            assert proxy.version != before
            client.request("GET", "/b")  # the same keep-alive connection, new table
        [dest] = proxy.stats()["destinations"]
    assert dest["responses"] == {"200": 2}
    assert [s.path for s in v2.seen] == ["/a"]


def test_reload_refuses_listener_changes_and_keeps_serving(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        with pytest.raises(ReloadError, match="listeners cannot change"):
            proxy.reload(seed_config(v1.address, v2.address, listen="127.0.0.1:1"))
        with Client(proxy.addresses[0]) as client:
            assert client.request("GET", "/").status == 200


def test_busy_address_is_a_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ListenError, match=f"cannot listen on {address}"):
            Proxy(seed_config("127.0.0.1:9", "127.0.0.1:9", listen=address)).start()


def test_listen_override_and_closed_proxy(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    proxy = Proxy(seed_config(v1.address, v2.address, listen="127.0.0.1:1"), listen=["127.0.0.1:0"])
    with proxy:
        assert proxy.addresses[0] != "127.0.0.1:1"
    assert proxy.close() is True
    with pytest.raises(pymirror.EngineError):
        proxy.stats()


def test_trio_nursery_start_reports_the_proxy(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            proxy = await nursery.start(pymirror.serve_forever, seed_config(v1.address, v2.address))

            def get() -> int:
                with Client(proxy.addresses[0]) as client:
                    return client.request("GET", "/").status

            status = await trio.to_thread.run_sync(get)
            nursery.cancel_scope.cancel()
        return status

    assert trio.run(main) == 200
    assert len(v2.wait_for(1)) == 1


def test_trio_async_with_serve(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")

    async def main() -> list[str]:
        async with pymirror.serve(seed_config(v1.address, v2.address)) as proxy:
            return proxy.addresses

    [address] = trio.run(main)
    with pytest.raises(OSError):
        socket.create_connection(tuple(address.rsplit(":", 1)), timeout=1).close()  # type: ignore[arg-type]
