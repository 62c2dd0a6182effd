"""Constant-rate open-loop load, for latency percentiles without coordinated omission.

A closed-loop client (wrk) sends the next request only after the previous answer: when
the server stalls, the client stalls with it and the stall shows up as one slow request
instead of the hundreds a real user population would have suffered. This generator works
as wrk2 does: request i has an intended send time `t0 + i / rate`, fixed before the run,
and its latency is measured from that intended time to the end of its response. A
request that has to wait (for a free connection, for a stalled server) is charged the
wait. It runs on asyncio over a pool of pre-opened keep-alive connections; a due request
goes to whichever connection is idle, or queues until one is. The schedule is kept by a
thread of its own that sleeps until each send time (asyncio's timers wake on whole
milliseconds under epoll, a sleeping thread within tens of microseconds) and hands the
request to the event loop.

Honest below the knee, which is where it is used: the rate is fixed per scenario under
every peer's closed-loop throughput, so queueing means the peer stalled (as nginx does
with a slow mirror: shown, not hidden). The generator's own lateness (send time minus
intended time: the machine's timer and scheduling jitter, and any wait for a connection)
is measured as `lag` and reported; the direct client -> backend row shows the floor the
machine and the generator add to every peer alike.

Requests still unanswered `grace` seconds after the last was due are counted apart
(`unfinished`), charged their latency so far. A request whose keep-alive connection
was closed by the server before any answer byte (the race every HTTP client has with
an idle timeout or a reload) is retried once on a new connection, counted in
`retries`; the retry's time is charged to the request."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    intended: float
    """Intended send time, seconds from the start of the schedule."""
    latency: float
    """Seconds from the intended send time to the end of the response."""
    status: int
    """Response status; 0: the connection failed; -1: unanswered at the end."""


@dataclass
class OpenLoopResult:
    rate: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    retries: int = 0

    @property
    def errors(self) -> int:
        """Requests answered with another status than 200, or whose connection failed."""
        return sum(1 for s in self.samples if s.status not in (200, -1))

    @property
    def unfinished(self) -> int:
        return sum(1 for s in self.samples if s.status == -1)

    def percentile_ms(self, q: float, since: float = 0.0, until: float = float("inf")) -> float:
        """Nearest-rank percentile of latency (all requests, failed ones included)."""
        values = sorted(s.latency for s in self.samples if since <= s.intended < until)
        if not values:
            return float("nan")
        rank = min(len(values) - 1, max(0, int(q / 100 * len(values) + 0.5) - 1))
        return values[rank] * 1e3

    def lag_ms(self, q: float) -> float:
        values = sorted(self.lag)
        return values[min(len(values) - 1, int(q / 100 * len(values)))] * 1e3 if values else 0.0


def _parse(buf: bytearray) -> tuple[int, int, bool] | None:
    """(status, bytes consumed, close) once a whole response is in `buf`."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            close = value == "close"
    pos = end + 4
    if not chunked:
        return (status, pos + length, close) if len(buf) >= pos + length else None
    while True:  # chunked: size line, data, CRLF; a zero size ends it (no trailers here)
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return (status, pos + 2, close) if len(buf) >= pos + 2 else None
        pos += size + 2
        if len(buf) < pos:
            return None


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.open = False
        self.used = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.open = transport, True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        done = _parse(self.buf)
        if done is None or self.waiter is None or self.waiter.done():
            return
        status, consumed, close = done
        del self.buf[:consumed]
        if close:
            self.close()
        self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("closed before the response"))

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    async def request(self, payload: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.buf.clear()
        self.used = True
        self.transport.write(payload)
        return await self.waiter


def request_bytes(method: str = "GET", body: bytes = b"", host: str = "reviews") -> bytes:
    head = f"{method} / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pymirror-bench\r\n"
    if body or method != "GET":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class _Run:
    def __init__(self, address: str, payload: bytes, result: OpenLoopResult) -> None:
        host, port = address.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.payload = payload
        self.result = result
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.done: set[int] = set()
        self.t0 = 0.0
        self.connections: list[_Connection] = []

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self.connections.append(conn)
        return conn

    async def exchange(self, conn: _Connection | None) -> tuple[int, _Connection | None]:
        reused = conn is not None and conn.open and conn.used
        try:
            if conn is None or not conn.open:
                conn = await self.connect()
            return await conn.request(self.payload), conn
        except (OSError, ValueError):
            if not reused:  # a fresh connection failed: that is an error
                return 0, None
        self.result.retries += 1  # the keep-alive race: once more on a new connection
        try:
            conn = await self.connect()
            return await conn.request(self.payload), conn
        except (OSError, ValueError):
            return 0, None

    async def worker(self, conn: _Connection | None) -> None:
        loop = asyncio.get_running_loop()
        while (index := await self.queue.get()) is not None:
            intended = index / self.result.rate
            self.result.lag.append(loop.time() - self.t0 - intended)
            status, conn = await self.exchange(conn)
            latency = loop.time() - self.t0 - intended
            self.done.add(index)
            self.result.samples.append(Sample(intended, latency, status))


def _schedule(
    run: _Run, loop: asyncio.AbstractEventLoop, total: int, stop: threading.Event
) -> None:
    """The clock, on a thread of its own: asyncio's timers wake on whole milliseconds
    (epoll), a sleeping thread within tens of microseconds. Each due request is handed
    to the event loop, where an idle connection's worker takes it."""
    rate = run.result.rate
    for i in range(total):
        delay = run.t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            return
        loop.call_soon_threadsafe(run.queue.put_nowait, i)


async def _open_loop(
    address: str,
    payload: bytes,
    rate: float,
    seconds: float,
    connections: int,
    grace: float,
    events: Sequence[tuple[float, Callable[[], None]]],
) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    assert loop.time() - time.monotonic() < 1e-3, "asyncio's clock is time.monotonic"
    result = OpenLoopResult(rate, seconds)
    run = _Run(address, payload, result)
    pool = await asyncio.gather(*(run.connect() for _ in range(connections)))
    workers = [asyncio.create_task(run.worker(conn)) for conn in pool]
    total = int(rate * seconds)
    stop = threading.Event()
    run.t0 = loop.time() + 0.05
    for at, action in events:
        loop.call_at(run.t0 + at, action)
    clock = threading.Thread(target=_schedule, args=(run, loop, total, stop), daemon=True)
    clock.start()
    try:
        await asyncio.to_thread(clock.join, seconds + 1)
        await asyncio.sleep(0)  # let the last hand-over land in the queue
        for _ in workers:
            run.queue.put_nowait(None)
        await asyncio.wait(workers, timeout=grace)
    finally:
        stop.set()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for conn in run.connections:
            conn.close()
        await asyncio.to_thread(clock.join, 2)
    # Anything not answered by now: an error, charged its latency so far.
    end = loop.time() - run.t0
    for i in sorted(set(range(total)) - run.done):
        result.samples.append(Sample(i / rate, end - i / rate, -1))
    return result


def open_loop(
    address: str,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
    payload: bytes | None = None,
    grace: float = 3.0,
    events: Sequence[tuple[float, Callable[[], None]]] = (),
) -> OpenLoopResult:
    """Send `rate` requests per second for `seconds` over `connections` connections;
    `events` are (seconds from start, action) to run during the load."""
    gc.collect()
    gc.disable()  # no collector pauses inside the measurement
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # the clock thread gets the GIL within 0.1 ms
    try:
        return asyncio.run(
            _open_loop(
                address, payload or request_bytes(), rate, seconds, connections, grace, events
            )
        )
    finally:
        sys.setswitchinterval(switch)
        gc.enable()


def timer_jitter_ms(samples: int = 1000) -> tuple[float, float]:
    """How late a thread sleeping 1 ms at a time wakes on this machine, idle (p99,
    p99.9, ms): the floor under any latency measured here."""
    late = []
    start = time.monotonic()
    for i in range(1, samples + 1):
        delay = start + i / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        late.append(time.monotonic() - start - i / 1000)
    late.sort()
    return late[int(samples * 0.99)] * 1e3, late[int(samples * 0.999)] * 1e3
