"""A plain keep-alive HTTP/1.1 client over one real socket (http.client)."""

from __future__ import annotations

import http.client
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """One persistent connection to `address` (`ip:port`)."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        host, port = address.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        host: str = "reviews",
        headers: dict[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        chunked: bool = False,
    ) -> Reply:
        all_headers = {"Host": host, **(headers or {})}
        self._conn.request(method, path, body=body, headers=all_headers, encode_chunked=chunked)
        response = self._conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
