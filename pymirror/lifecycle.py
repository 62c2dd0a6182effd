"""Lifecycle under trio: start, signals (reload on SIGHUP, drain on SIGINT/SIGTERM, and
a second SIGINT/SIGTERM cuts the drain short), and the async embedding API. Blocking
core calls run in worker threads."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from pymirror.admin import DEFAULT_ADDRESS, Admin
from pymirror.config import Config, ConfigError, Source, load_config
from pymirror.config.source import STDIN
from pymirror.engine import ServerOptions
from pymirror.errors import PymirrorError
from pymirror.proxy import ConfigSource, Proxy, as_config
from pymirror.resolve import describe
from pymirror.tls_files import DEFAULT_POLL_SECONDS, fingerprint, tls_files

log = logging.getLogger("pymirror")

#: Seconds in-flight requests get to finish on shutdown, unless told otherwise.
DEFAULT_DRAIN_SECONDS = 10.0
#: How often compared pairs are drained from the core: small batches often, so diffing
#: takes the CPU in slices of a millisecond or two, not bursts that users' p99 would see.
COMPARE_INTERVAL = 0.02
#: Pairs compared per second at most. Diffing runs in this process, beside the data
#: plane, at about 70 us of CPU per pair: 1,000 a second is about 7% of one core. Past the
#: cap, pairs wait in the core's bounded queue and, once it is full, are skipped there and
#: counted (`queue_full`), so comparing can never take the users' CPU under a flood.
COMPARE_MAX_PER_SECOND = 1000
#: The longest wait between drains while no pair arrives (the queue holds 4096 pairs,
#: so nothing is lost at up to about 4,000 compared requests a second meanwhile).
COMPARE_IDLE_INTERVAL = 1.0


async def compare_forever(
    proxy: Proxy,
    interval: float = COMPARE_INTERVAL,
    max_per_second: int = COMPARE_MAX_PER_SECOND,
) -> None:
    """Drains and compares the core's compared pairs in batches, off the request path,
    at most `max_per_second` a second, until cancelled. While nothing arrives the wait
    doubles up to `COMPARE_IDLE_INTERVAL`, so a proxy that compares nothing does not
    wake Python 50 times a second; the first pair brings the pace back."""
    batch = max(1, round(max_per_second * interval))
    wait = interval
    while True:
        drained = 0
        with contextlib.suppress(PymirrorError):  # closed meanwhile
            drained = proxy.compare_pending(batch)
        wait = interval if drained else min(wait * 2, COMPARE_IDLE_INTERVAL)
        await trio.sleep(wait)


@asynccontextmanager
async def serve(
    config: ConfigSource,
    *,
    listen: Sequence[str] | None = None,
    options: ServerOptions | None = None,
    drain: float = DEFAULT_DRAIN_SECONDS,
    compare_max_per_second: int = COMPARE_MAX_PER_SECOND,
) -> AsyncIterator[Proxy]:
    """`async with serve(config) as proxy:` runs the proxy for the block's duration,
    then drains it (shielded from cancellation, bounded by `drain` seconds).

    Pairs are compared as under `pymirror run`: `compare_forever` runs beside the block,
    into `proxy.comparator.store`; once the proxy is closed, the pairs still queued in
    the core are compared before `async with` returns. An exception raised in the block
    propagates as it is."""
    proxy = Proxy(await trio.to_thread.run_sync(as_config, config), listen=listen, options=options)
    await trio.to_thread.run_sync(proxy.start)
    raised: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(compare_forever, proxy, COMPARE_INTERVAL, compare_max_per_second)
            try:
                yield proxy
            except BaseException as exc:
                # Re-raised below, as it is: raised here, it would leave the nursery
                # wrapped in an ExceptionGroup.
                raised = exc
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(proxy.close, drain)
    compare_queued(proxy)
    if raised is not None:
        raise raised


def compare_queued(proxy: Proxy, batch: int = 1024) -> int:
    """Compares the pairs still queued in a closed proxy's core (4096 at most, and no
    user left to take CPU from); returns how many."""
    total = 0
    with contextlib.suppress(PymirrorError):
        while True:
            drained = proxy.compare_pending(batch)
            total += drained
            if drained < batch:  # the queue is empty
                break
    return total


async def serve_forever(
    config: ConfigSource,
    *,
    listen: Sequence[str] | None = None,
    options: ServerOptions | None = None,
    drain: float = DEFAULT_DRAIN_SECONDS,
    compare_max_per_second: int = COMPARE_MAX_PER_SECOND,
    task_status: trio.TaskStatus[Proxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """For `proxy = await nursery.start(serve_forever, config)`: reports the running
    `Proxy` once its listeners are bound, serves (and compares, as `serve` does) until
    cancelled, then drains."""
    async with serve(
        config,
        listen=listen,
        options=options,
        drain=drain,
        compare_max_per_second=compare_max_per_second,
    ) as proxy:
        task_status.started(proxy)
        await trio.sleep_forever()


@dataclass
class Supervisor:
    """What `pymirror run` does: serve, reload on SIGHUP, drain on SIGINT/SIGTERM, and
    serve the admin endpoint beside the proxy."""

    sources: Sequence[Source]
    listen: Sequence[str] | None = None
    options: ServerOptions | None = None
    drain: float = DEFAULT_DRAIN_SECONDS
    admin: str | None = None
    """The admin address; None: the configuration's `admin.address`, else the default."""
    compare_max_per_second: int = COMPARE_MAX_PER_SECOND
    """Compared pairs diffed per second at most (see `COMPARE_MAX_PER_SECOND`)."""
    tls_poll: float = DEFAULT_POLL_SECONDS
    """Seconds between looks at the TLS files (see `pymirror.tls_files`); 0: never."""
    admin_token: str | None = None
    """The token runtime control asks for (see `pymirror.control`); None: none."""
    admin_tls: tuple[str, str] | None = None
    """Certificate chain and key files: the admin endpoint serves TLS."""
    shutdown_delay: float = 0.0
    """Seconds between SIGTERM (or SIGINT) and the drain: `/readyz` is 503 at once while
    the listeners keep serving, so that an orchestrator stops sending traffic before it
    is refused (Kubernetes keeps routing to a terminating pod for a few seconds)."""
    reloads: dict[str, int] = field(
        # last_ok, last_at: the gauges of the last reload (start counts as one that took).
        default_factory=lambda: {
            "success": 0,
            "failure": 0,
            "last_ok": 1,
            "last_at": int(time.time()),
        }
    )

    async def run(self) -> int:
        # Open the receiver first: a signal during start-up is not lost.
        with trio.open_signal_receiver(
            signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1
        ) as signals:
            config = await trio.to_thread.run_sync(lambda: load_config(*self.sources))
            proxy = Proxy(config, listen=self.listen, options=self.options)
            await trio.to_thread.run_sync(proxy.start)
            admin = Admin(
                proxy,
                reloads=self.reloads,
                reload=lambda: self._reload(proxy, "POST /runtime/reload"),
                token=self.admin_token,
                tls=self.admin_tls,
            )
            try:
                # Bound before the nursery opens, so a bad address is a plain ListenError.
                address = admin.bind(self._admin_address(config))
            except PymirrorError:
                await trio.to_thread.run_sync(proxy.close, 0.0)
                raise
            async with trio.open_nursery() as nursery:
                await nursery.start(admin.serve)
                nursery.start_soon(
                    compare_forever, proxy, COMPARE_INTERVAL, self.compare_max_per_second
                )
                if self.tls_poll > 0:
                    nursery.start_soon(self._watch_tls_files, proxy)
                self._announce(proxy)
                log.info("admin listening on %s", address)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await self._reload(proxy, "SIGHUP")
                        continue
                    if signum == signal.SIGUSR1:
                        # logrotate's postrotate: a new file at the same path.
                        proxy.reopen_access_log()
                        log.info("SIGUSR1: access log reopened")
                        continue
                    log.info("%s: draining (up to %.1fs)", signal.Signals(signum).name, self.drain)
                    break
                # /readyz answers 503 from here on, so orchestrators send traffic elsewhere.
                admin.draining = True
                if self.shutdown_delay > 0:
                    await _serve_while_deregistered(signals, self.shutdown_delay)
                cut = trio.Event()
                nursery.start_soon(_cut_on_second_signal, signals, proxy, cut)
                drained = await trio.to_thread.run_sync(proxy.close, self.drain)
                nursery.cancel_scope.cancel()
        if drained:
            log.info("stopped: every in-flight request completed")
        elif cut.is_set():
            log.warning("stopped: drain cut short, the connections still open were closed")
        else:
            log.warning(
                "stopped: drain deadline of %.1fs passed with requests in flight", self.drain
            )
        return 0

    def _admin_address(self, config: Config) -> str:
        if self.admin is not None:
            return self.admin
        return config.admin.address if config.admin is not None else DEFAULT_ADDRESS

    def _announce(self, proxy: Proxy) -> None:
        for line in describe(proxy.config, listen=self.listen):
            log.info("%s", line)
        for address in proxy.addresses:
            log.info("listening on %s", address)
        log.info("config version %s", proxy.version)

    async def _watch_tls_files(self, proxy: Proxy) -> None:
        """Reloads when the content of a TLS file the running configuration reads changes
        (a rotated certificate); a change that does not load is reported once, and the
        running pair stays until the files change again."""
        seen = await trio.to_thread.run_sync(fingerprint, tls_files(proxy.config))
        while True:
            await trio.sleep(self.tls_poll)
            paths = tls_files(proxy.config)
            now = await trio.to_thread.run_sync(fingerprint, paths)
            if now != seen:
                seen = now
                await self._reload(proxy, f"TLS files changed ({', '.join(paths)})")

    async def _reload(self, proxy: Proxy, reason: str) -> tuple[bool, str]:
        """Reloads the configuration; answers whether it took effect, and what happened."""
        log.info("%s: reloading %s", reason, ", ".join(str(s) for s in self.sources))
        admin_before = self._admin_address(proxy.config)
        try:
            if STDIN in self.sources:
                # Read once and gone: the running configuration is resolved again, which
                # reads its TLS files again.
                log.warning(
                    "the configuration came from standard input, which cannot be read "
                    "again: keeping it, reading its TLS files again"
                )
                config = proxy.config
            else:
                config = await trio.to_thread.run_sync(lambda: load_config(*self.sources))
            await trio.to_thread.run_sync(proxy.reload, config)
        # OSError: a TLS file that vanished between its check and its read (a rotation).
        except (ConfigError, PymirrorError, OSError) as exc:
            self.reloads["failure"] += 1
            self.reloads["last_ok"] = 0
            message = f"reload refused, still serving version {proxy.version}:\n{exc}"
            log.error("%s", message)
            return False, message
        self.reloads["success"] += 1
        self.reloads["last_ok"], self.reloads["last_at"] = 1, int(time.time())
        message = f"reloaded: now serving config version {proxy.version}"
        log.info("%s", message)
        if self._admin_address(config) != admin_before:
            log.warning("the admin address changed; it takes effect on restart")
        return True, message


#: The signals that stop pymirror (SIGHUP reloads, SIGUSR1 reopens the access log).
_STOPPING = (signal.SIGINT, signal.SIGTERM)


async def _serve_while_deregistered(signals: AsyncIterator[int], delay: float) -> None:
    """Keeps serving for ``delay`` seconds with `/readyz` at 503, so that load balancers
    and Kubernetes endpoints stop sending traffic before the listeners close. A second
    SIGINT or SIGTERM ends the wait (and a third cuts the drain, as always)."""
    log.info("serving %.1fs more with /readyz at 503 before draining (--shutdown-delay)", delay)
    with trio.move_on_after(delay):
        async for signum in signals:
            if signum in _STOPPING:
                log.warning("%s again: draining now", signal.Signals(signum).name)
                return


async def _cut_on_second_signal(signals: AsyncIterator[int], proxy: Proxy, cut: trio.Event) -> None:
    """While draining, a second SIGINT or SIGTERM (Ctrl-C twice, an impatient supervisor)
    ends the drain at once; SIGHUP is ignored, there is nothing left to reload."""
    async for signum in signals:
        if signum not in _STOPPING:
            continue
        log.warning(
            "%s again: cutting the drain, closing open connections", signal.Signals(signum).name
        )
        cut.set()
        proxy.cut_drain()
        return
