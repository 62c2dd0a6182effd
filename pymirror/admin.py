"""The admin endpoint: `/metrics`, `/healthz`, `/readyz`, `/config`, `/stats`, `/compare`,
`/report`.

A small ASGI app served under trio by hypercorn's trio worker: no HTTP parsing of our
own. It runs in the control plane's trio loop, beside the signal handling; the data
plane is only touched by one bulk stats read per `/metrics` or `/stats` request.

    admin = Admin(proxy)
    address = await nursery.start(admin.serve, "127.0.0.1:0")   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client.exposition import choose_encoder

from pymirror import control, metrics
from pymirror.compare import html, report
from pymirror.config import Config
from pymirror.config.types import split_host_port
from pymirror.errors import EngineError, ListenError
from pymirror.proxy import Proxy
from pymirror.resolve import describe

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

__all__ = ["DEFAULT_ADDRESS", "Admin", "config_checksum", "source_files"]

#: Where the admin endpoint listens unless the configuration or `--admin` says otherwise.
DEFAULT_ADDRESS = "127.0.0.1:9901"

log = logging.getLogger("pymirror.admin")
# hypercorn's own log lines ("Running on ... (CTRL + C to quit)") repeat what we log;
# its warnings and errors still come through, formatted as ours.
_http_log = logging.getLogger("pymirror.admin.http")
_http_log.setLevel(logging.WARNING)

_ROUTES = (
    "/metrics",
    "/healthz",
    "/readyz",
    "/config",
    "/stats",
    "/compare",
    "/report",
    "/runtime",
)
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


class Admin:
    """What the admin endpoint serves, for one proxy.

    ``reloads`` is read at every scrape (the Supervisor's live counts). Set ``draining``
    before closing the proxy, so `/readyz` answers 503 while in-flight requests finish.
    """

    def __init__(
        self,
        proxy: Proxy | None = None,
        *,
        reloads: Mapping[str, int] | None = None,
        reload: control.Reload | None = None,
        token: str | None = None,
        tls: tuple[str, str] | None = None,
    ):
        """`reload` is what `POST /runtime/reload` runs; `token` guards runtime control
        (see `pymirror.control`); `tls` is a certificate chain and key file to serve TLS."""
        self.proxy = proxy
        self._reload = reload
        self._token = token
        self._tls = tls
        self._loopback = True
        self.reloads: Mapping[str, int] = (
            reloads if reloads is not None else {"success": 0, "failure": 0}
        )
        self.draining = False
        self._registry = metrics.registry(self.scrape)
        # What is read off the running configuration for every scrape, made once per
        # configuration (the object changes only on reload): checksum and versions.
        self._derived: tuple[Config, str, dict[tuple[str, str], str]] | None = None
        self._bound: tuple[socket.socket, str] | None = None

    @property
    def ready(self) -> bool:
        """Listeners bound, a configuration applied, and not draining."""
        return not self.draining and self.proxy is not None and self.proxy.running

    def scrape(self) -> metrics.Scrape:
        """One bulk read of the core, with what the control plane knows beside it."""
        proxy = self.proxy
        if proxy is None:
            return metrics.Scrape(None, reloads=self.reloads)
        config, snapshot = proxy.config, proxy.snapshot
        try:
            stats = proxy.stats()
        except EngineError:  # not started, or closed after a drain
            return metrics.Scrape(None, reloads=self.reloads)
        return metrics.Scrape(
            stats,
            snapshot,
            self.reloads,
            self._derived_of(config)[0],
            compare=proxy.comparator.store.counts(),
            versions=self._derived_of(config)[1],
        )

    def _derived_of(self, config: Config) -> tuple[str, dict[tuple[str, str], str]]:
        """The configuration's checksum, and (host, subset) -> the `version` label the
        subset selects by, where it does (Istio's `destination_version`)."""
        if self._derived is None or self._derived[0] is not config:
            versions = {
                (host, subset): labels["version"]
                for host, service in config.services.items()
                for subset, labels in service.subsets.items()
                if "version" in labels
            }
            self._derived = (config, config_checksum(config), versions)
        return self._derived[1], self._derived[2]

    def bind(self, address: str = DEFAULT_ADDRESS) -> str:
        """Binds `address` now and returns the bound `host:port` (port 0 resolved), for
        a caller that wants a bad address to fail before anything else starts. Raises
        `ListenError`. A non-loopback address is bound but logged as a warning: the
        endpoint has no authentication."""
        if self._bound is not None:
            raise ListenError(f"admin endpoint: already bound to {self._bound[1]}")
        self._bound = _bind(address)
        self._loopback = _is_loopback(split_host_port(address)[0])
        if not self._loopback:
            log.warning(
                "admin endpoint on %s is reachable from other hosts and has no "
                "authentication; prefer a loopback address such as 127.0.0.1",
                self._bound[1],
            )
        return self._bound[1]

    async def serve(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serves until cancelled; reports the bound `host:port` once it accepts.

        Binds `address` first unless `bind` already did (then `address` is not used).
        """
        # Imported here: hypercorn costs a third of a second to import, which `pymirror
        # check` and embedders without an admin endpoint need not pay.
        import hypercorn.config
        import hypercorn.trio

        if self._bound is None:
            self.bind(address)
        assert self._bound is not None
        (sock, bound), self._bound = self._bound, None
        config = hypercorn.config.Config()
        # We bound the socket ourselves, so a bad address fails with a plain error and
        # port 0 is known before hypercorn starts; hypercorn takes the descriptor over.
        config.bind = [f"fd://{sock.detach()}"]
        if self._tls is not None:
            config.certfile, config.keyfile = self._tls
        config.accesslog = None
        config.errorlog = _http_log
        config.graceful_timeout = 1.0
        async with trio.open_nursery() as nursery:
            await nursery.start(hypercorn.trio.serve, self.app, config)
            task_status.started(bound)

    # === the ASGI app ===

    async def app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            # Nothing to set up or tear down: acknowledge startup, then wait for shutdown.
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return  # websockets: hypercorn closes the connection
        if scope["path"] in control.PATHS:
            status, doc, headers = await self._control(scope, receive)
            content_type, body = _JSON, _dumps(doc)
        else:
            status, content_type, body, headers = self._answer(scope)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
                "trailers": False,
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b"" if scope["method"] == "HEAD" else body,
                "more_body": False,
            }
        )

    async def _control(self, scope: HTTPScope, receive: ASGIReceiveCallable) -> control.Answer:
        access = control.Access(self._loopback, scope["scheme"] == "https", self._token)
        refused = control.refusal(scope["method"], dict(scope["headers"]), access)
        if refused is not None:
            return refused
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")  # type: ignore[operator]
            if len(body) > control.MAX_BODY:
                return 413, {"error": f"the body is over {control.MAX_BODY} bytes"}, []
            if not event.get("more_body", False):
                break
        if self.proxy is None or not self.proxy.running:
            return 503, {"error": "the proxy is not running"}, []
        return await control.handle(scope["path"], body, self.proxy, self._reload)

    def _answer(self, scope: HTTPScope) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        path = scope["path"]
        if path not in (*_ROUTES, "/"):
            return 404, _TEXT, f"not found; try {', '.join(_ROUTES)}\n".encode(), []
        if scope["method"] not in ("GET", "HEAD"):
            return 405, _TEXT, b"method not allowed\n", [(b"allow", b"GET, HEAD")]
        if path == "/metrics":
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            # Prometheus asks for OpenMetrics, a browser or curl for the classic text.
            encoder, content_type = choose_encoder(accept)
            return 200, content_type.encode(), encoder(self._registry), []
        if path == "/healthz":
            return 200, _TEXT, b"ok\n", []
        if path == "/runtime":
            return 200, _JSON, _dumps(control.state(self.proxy)), []
        if path == "/readyz":
            if self.ready:
                return 200, _TEXT, b"ready\n", []
            return 503, _TEXT, (b"draining\n" if self.draining else b"not serving\n"), []
        if path == "/stats":
            scrape = self.scrape()
            if scrape.stats is None:
                return _not_running()
            return 200, _JSON, _dumps(scrape.stats), []
        if path == "/compare":
            proxy = self.proxy
            scrape = self.scrape()
            if proxy is None or scrape.stats is None:
                return _not_running()
            return 200, _JSON, _dumps(report.document(proxy.comparator.store, scrape.stats)), []
        if path == "/report":
            proxy = self.proxy
            scrape = self.scrape()
            if proxy is None or scrape.stats is None:
                return _not_running()
            doc = report.document(proxy.comparator.store, scrape.stats)
            return 200, _HTML, html.render_html(doc).encode(), []
        if path == "/config":
            proxy = self.proxy
            if proxy is None or proxy.snapshot is None:
                return _not_running()
            return 200, _JSON, _dumps(self._config(proxy)), []
        return 200, _TEXT, "\n".join(["pymirror admin", *_ROUTES, ""]).encode(), []

    def _config(self, proxy: Proxy) -> dict[str, Any]:
        config = proxy.config
        return {
            "version": proxy.version,
            "checksum": self._derived_of(config)[0],
            "sources": source_files(config),
            "listeners": proxy.addresses,  # as bound: port 0 resolved
            "routes": describe(config, listen=proxy.listen),
            "snapshot": redacted(proxy.snapshot),
        }


def redacted(value: Any) -> Any:
    """``value`` (a snapshot) with the PEM text it carries replaced by its size: private
    keys never leave the process (the admin endpoint may be reachable from the cluster,
    for probes), and the file names beside them say what was loaded."""
    if isinstance(value, dict):
        return {
            k: f"(PEM, {len(v)} bytes)"
            if k.endswith("_pem") and isinstance(v, str)
            else redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _is_pem(key: str, value: object) -> bool:
    return key.endswith("_pem") and isinstance(value, str)


def config_checksum(config: Config) -> str:
    """A checksum of the configuration as written (after parsing; comments and layout do
    not count). Unlike the snapshot version it ignores `--listen` and how names resolve,
    so replicas given the same files report the same checksum."""
    data = config.model_dump(mode="json", by_alias=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def source_files(config: Config) -> list[str]:
    """The files the configuration was read from, in order (`<string>` for YAML text)."""
    origin = config._origin
    seen: dict[str, None] = {}
    for root in origin.roots if origin is not None else ():
        seen.setdefault(str(root.file), None)
    return list(seen)


def _not_running() -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    return 503, _JSON, _dumps({"error": "the proxy is not running"}), []


def _dumps(value: object) -> bytes:
    return json.dumps(value, indent=1).encode() + b"\n"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _bind(address: str) -> tuple[socket.socket, str]:
    """A bound TCP socket for `host:port` and its actual `host:port` (port 0 resolved)."""
    try:
        host, port = split_host_port(address)
        family, type_, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, type_, proto)
        try:
            # As every server does: a restart must not wait for old connections' TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
    except (OSError, ValueError) as exc:
        raise ListenError(f"admin endpoint: cannot listen on {address}: {exc}") from None
    name = sock.getsockname()
    bound = f"[{name[0]}]:{name[1]}" if family == socket.AF_INET6 else f"{name[0]}:{name[1]}"
    return sock, bound
